"""Orders: the details every row of an order repeats (drawn right after the payout's row plan), order
ids that encode where their order lives, and Klarna's ``MerchantOrderDto`` for an order. The records it
makes and reads (``OrderDetail``, ``OrderPlan``) live in ``records.py``, re-exported here.

An order id is a random-looking UUID whose last 48 bits are a bijective mix of ``(payout position,
order index)``, so ``GET /orders/{id}`` finds its payout without an index over all orders.
"""
from __future__ import annotations

import hashlib
import random

from .catalogue import (CARRIERS, CITIES, CODE_ALPHABET, COUNTRIES_BY_CURRENCY, DIAL_CODES, DISPUTE_CATEGORIES,
                        EU_NEIGHBOURS, FAMILY_NAMES, GIVEN_NAMES, GOODS_VAT_RATE, LOCALES, PAYMENT_METHODS, PRODUCTS,
                        STREETS, US_REGIONS)
from .dates import DAY, HOUR, format_datetime
from .records import CaptureEvent, OrderDetail, OrderPlan, RefundEvent

__all__ = ["MAX_ORDERS_PER_PAYOUT", "PENDING_POS_BASE", "CaptureEvent", "RefundEvent", "OrderDetail", "OrderPlan",
           "OrderIds", "draw_order_details", "merchant_order"]

MAX_ORDERS_PER_PAYOUT = 1 << 16
#: order ids of pending transactions encode position ``PENDING_POS_BASE + n`` for the n-th pending set
#: (payouts take the positions below it, see ``spec.MAX_PAYOUTS``)
PENDING_POS_BASE = 1 << 31
_MASK48 = (1 << 48) - 1
_MIX = 0x9E3779B97F4B  # odd 48-bit multiplier (bijective mixing of order ids)
_MIX_INV = pow(_MIX, -1, 1 << 48)


def uuid4(rng: random.Random) -> str:
    h = "%032x" % rng.getrandbits(128)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def code(rng: random.Random, n: int) -> str:
    bits = rng.getrandbits(5 * n)
    return "".join(CODE_ALPHABET[(bits >> (5 * i)) & 31] for i in range(n))


class OrderIds:
    """Order ids of one seed: ``make`` draws one for (payout position, order index), ``locate`` inverts it."""

    def __init__(self, seed):
        self._mask = int.from_bytes(hashlib.sha1(f"{seed}:order-mask".encode()).digest()[:6], "big")

    def make(self, rng: random.Random, payout_pos: int, order_index: int) -> str:
        h = "%020x" % rng.getrandbits(80)
        tail = (((payout_pos << 16) | order_index) * _MIX & _MASK48) ^ self._mask
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{tail:012x}"

    def locate(self, order_id) -> tuple | None:
        """-> (payout position, order index) the id would have, or None when it cannot be one of ours."""
        if not isinstance(order_id, str) or len(order_id) != 36:
            return None
        try:
            tail = int(order_id[24:], 16)
        except ValueError:
            return None
        v = ((tail ^ self._mask) * _MIX_INV) & _MASK48
        return v >> 16, v & 0xFFFF


def draw_order_details(rng: random.Random, plans: list, order_ids: OrderIds, payout_pos: int, payout_ts: int,
                       currency: str, sale_after: int | None = None) -> list:
    """One OrderDetail per OrderPlan, drawn from ``rng`` right after the payout's row plan.

    A payout's orders are sold 3 to 14 days before ``payout_ts``, captured within a day of each other and
    refunded at the latest an hour before ``payout_ts``. With ``sale_after`` (pending transactions, in no
    payout yet) an order is sold within 6 hours after ``sale_after``, captured within 6 hours of each
    other, and refunded at the latest an hour before ``payout_ts`` (pass ``sale_after + DAY``).
    """
    rand = rng.random
    step = DAY if sale_after is None else 6 * HOUR
    countries = COUNTRIES_BY_CURRENCY.get(currency, ("US",))
    details = []
    for k, plan in enumerate(plans):
        order_id = order_ids.make(rng, payout_pos, k)
        purchase_country = countries[int(rand() * len(countries))]
        shipping_country = purchase_country if (currency != "EUR" or rand() < 0.9) \
            else EU_NEIGHBOURS[int(rand() * len(EU_NEIGHBOURS))]
        method = PAYMENT_METHODS[int(rand() * len(PAYMENT_METHODS))]
        choices = method.installment_choices
        installments = choices[int(rand() * len(choices))] if choices else None
        if sale_after is None:
            sale_ts = payout_ts - 3 * DAY - int(rand() * 11 * DAY)
        else:
            sale_ts = sale_after + 60 + int(rand() * step)
        captures = []
        t = sale_ts
        for _amount in plan.captures:
            t = t + 600 + int(rand() * step)
            captures.append(CaptureEvent(uuid4(rng), t, (f"CAP-{code(rng, 8)}" if rand() < 0.7 else None)))
        refunds = []
        rt = t
        for _amount in plan.refunds:
            rt = min(rt + HOUR + int(rand() * step), payout_ts - HOUR)
            refunds.append(RefundEvent(uuid4(rng), rt, (f"RET-{code(rng, 8)}" if rand() < 0.7 else None)))
        short_id = code(rng, 7)
        merchant_reference1 = str(10000000 + int(rand() * 90000000))
        merchant_reference2 = f"ERP-{int(rand() * 900000) + 100000}" if rand() < 0.8 else None
        dispute = (f"krn:klarna:eu1:dispute:{DISPUTE_CATEGORIES[int(rand() * 5)]}:"
                   f"{263000000000000 + rng.getrandbits(40)}")
        details.append(OrderDetail(
            order_id=order_id, short_id=short_id, merchant_reference1=merchant_reference1,
            merchant_reference2=merchant_reference2, purchase_country=purchase_country,
            shipping_country=shipping_country, payment_method=method, installments=installments,
            sale_ts=sale_ts, sale_date=format_datetime(sale_ts), captures=tuple(captures), refunds=tuple(refunds),
            last_capture_ts=t, dispute_reference=dispute,
        ))
    return details


def _address(rand, country: str) -> dict:
    cities = CITIES.get(country, ("Springfield",))
    given, family = GIVEN_NAMES[int(rand() * len(GIVEN_NAMES))], FAMILY_NAMES[int(rand() * len(FAMILY_NAMES))]
    address = {
        "given_name": given,
        "family_name": family,
        "email": f"{given.lower()}.{family.lower().replace(' ', '')}@example.com",
        "street_address": f"{STREETS[int(rand() * len(STREETS))]} {1 + int(rand() * 120)}",
        "postal_code": (f"{10000 + int(rand() * 89999)}" if country != "SE"
                        else f"{100 + int(rand() * 880)} {10 + int(rand() * 89)}"),
        "city": cities[int(rand() * len(cities))],
        "country": country,
        "phone": f"+{DIAL_CODES.get(country, '1')} {100000000 + int(rand() * 899999999)}",
    }
    if country == "US":
        address["region"] = US_REGIONS[int(rand() * len(US_REGIONS))]
    return address


def _order_lines(rand, authorized: int, tax_rate: int) -> list:
    """Order lines summing to the authorized amount."""
    n_lines = 1 + int(rand() * 3) if authorized >= 300 else 1
    weights = [0.5 + rand() for _ in range(n_lines)]
    wsum = sum(weights)
    totals = [int(authorized * w / wsum) for w in weights]
    totals[-1] = authorized - sum(totals[:-1])
    lines = []
    for total in totals:
        product = PRODUCTS[int(rand() * len(PRODUCTS))]
        qty = 1 + int(rand() * 3) if total >= 3 else 1
        unit = -(-total // qty)
        tax = total - (total * 10000 + (10000 + tax_rate) // 2) // (10000 + tax_rate)
        lines.append({
            "type": "physical",
            "reference": f"SKU-{product.slug.upper()}-{100 + int(rand() * 900)}",
            "name": product.name,
            "quantity": qty,
            "quantity_unit": "pcs",
            "unit_price": unit,
            "tax_rate": tax_rate,
            "total_amount": total,
            "total_discount_amount": unit * qty - total,
            "total_tax_amount": tax,
            "product_url": f"https://shop.example/products/{product.slug}",
            "image_url": f"https://shop.example/images/{product.slug}.png",
        })
    return lines


def _refunded_per_capture(captured: list, refunds: list) -> list:
    """Refunded amount per capture, refunds allocated to captures greedily in order."""
    left = list(captured)
    refunded = [0] * len(captured)
    for amount in refunds:
        rest = amount
        for c in range(len(left)):
            take = min(left[c], rest)
            left[c] -= take
            refunded[c] += take
            rest -= take
            if rest == 0:
                break
    return refunded


def merchant_order(plan: OrderPlan, detail: OrderDetail, rng: random.Random, currency: str) -> dict:
    """Klarna's MerchantOrderDto (key order is part of the bytes); ``rng`` is the order's own generator."""
    rand = rng.random
    authorized, caps, refunds = plan.authorized, plan.captures, plan.refunds
    captured = sum(caps)
    if captured >= authorized:
        status, remaining = "CAPTURED", 0
    elif plan.released:
        status, remaining = "CLOSED", 0
    else:
        status, remaining = "PART_CAPTURED", authorized - captured

    billing = _address(rand, detail.purchase_country)
    if detail.shipping_country == detail.purchase_country and rand() < 0.8:
        shipping = dict(billing)
    else:
        shipping = _address(rand, detail.shipping_country)
    shipping["country"] = detail.shipping_country
    lines = _order_lines(rand, authorized, GOODS_VAT_RATE.get(detail.purchase_country, 0))
    carrier = CARRIERS[int(rand() * len(CARRIERS))]

    def shipping_info():
        tracking = f"{int(rand() * 10 ** 12):012d}{int(rand() * 10 ** 8):08d}"
        return [{"shipping_company": carrier.shipping_company, "shipping_method": carrier.shipping_method,
                 "tracking_number": tracking, "tracking_uri": f"https://tracking.example/{tracking}"}]

    refunded_per_capture = _refunded_per_capture(caps, refunds)
    captures = []
    for c, (amount, event) in enumerate(zip(caps, detail.captures)):
        capture = {
            "capture_id": event.capture_id,
            "klarna_reference": f"{detail.short_id}-{c + 1}",
            "captured_amount": amount,
            "captured_at": format_datetime(event.ts),
            "description": (f"Shipped part {c + 1} of {len(caps)}" if len(caps) > 1 else "Order has been shipped"),
        }
        if len(caps) == 1 and amount == authorized:
            capture["order_lines"] = [dict(line) for line in lines]
        if event.merchant_reference is not None:
            capture["reference"] = event.merchant_reference
        capture["refunded_amount"] = refunded_per_capture[c]
        capture["billing_address"] = dict(billing)
        capture["shipping_address"] = dict(shipping)
        capture["shipping_info"] = shipping_info()
        captures.append(capture)
    refund_objects = []
    for amount, event in zip(refunds, detail.refunds):
        refund = {
            "refund_id": event.refund_id,
            "refunded_amount": amount,
            "refunded_at": format_datetime(event.ts),
            "description": "The item was returned and the order refunded.",
        }
        if event.merchant_reference is not None:
            refund["reference"] = event.merchant_reference
        refund_objects.append(refund)
    method = detail.payment_method
    initial_payment_method = {"type": method.order_type, "description": method.description}
    if detail.installments is not None:
        initial_payment_method["number_of_installments"] = detail.installments
    order = {
        "order_id": detail.order_id,
        "status": status,
        "fraud_status": "ACCEPTED",
        "order_amount": authorized,
        "original_order_amount": authorized,
        "captured_amount": captured,
        "refunded_amount": sum(refunds),
        "remaining_authorized_amount": remaining,
        "purchase_currency": currency,
        "locale": LOCALES.get(detail.purchase_country, "en-US"),
        "order_lines": lines,
        "merchant_reference1": detail.merchant_reference1,
    }
    if detail.merchant_reference2 is not None:
        order["merchant_reference2"] = detail.merchant_reference2
    order.update({
        "klarna_reference": detail.short_id,
        "billing_address": billing,
        "shipping_address": shipping,
        "created_at": detail.sale_date,
        "purchase_country": detail.purchase_country,
        "expires_at": format_datetime(detail.sale_ts + 28 * DAY),
        "captures": captures,
        "refunds": refund_objects,
        "customer": {"date_of_birth": f"{1950 + int(rand() * 55)}-{1 + int(rand() * 12):02d}-"
                                      f"{1 + int(rand() * 28):02d}"},
        "merchant_data": f'{{"channel":"{"web" if rand() < 0.7 else "app"}"}}',
        "shipping_info": shipping_info(),
        "initial_payment_method": initial_payment_method,
    })
    return order
