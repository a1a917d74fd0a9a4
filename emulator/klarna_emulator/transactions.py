"""A payout's transaction rows: the plan (every row's type, detailed type and amount), the payout's
totals, and the row as Klarna's ``Transaction`` object.

Sign convention (quoted by the connector README)
------------------------------------------------
Every transaction ``amount`` is a POSITIVE integer in minor units; the
transaction ``type`` gives the direction of the money. A payout's ``totals``
are sums of ``amount`` over its transactions, grouped by type::

    sale_amount           = sum(SALE)
    fee_amount            = sum(FEE)
    return_amount         = sum(RETURN)
    reversal_amount       = sum(REVERSAL) + sum(REVERSAL_MERCHANT_PROTECTION)
    commission_amount     = sum(COMMISSION)
    tax_amount            = sum(TAX)
    holdback_amount       = sum(HOLDBACK)
    release_amount        = sum(RELEASE)
    charge_amount         = sum(CHARGE)
    credit_amount         = sum(CREDIT)
    fee_refund_amount     = sum(FEE_REFUND)
    fee_correction_amount = sum(CORRECTION)
    tax_refund_amount     = 0
    repay_amount          = 0

    settlement_amount = sale + release + credit + fee_refund + fee_correction
                        - fee - return - reversal - commission - tax
                        - holdback - charge

i.e. money towards the merchant: SALE, RELEASE, CREDIT, FEE_REFUND, CORRECTION;
money towards Klarna: FEE, RETURN, REVERSAL(_MERCHANT_PROTECTION), COMMISSION,
TAX, HOLDBACK, CHARGE. ``settlement_amount`` is always exactly this signed sum
(it is negative only in the rare payout where deductions exceed sales); then
``deposit_amount = -settlement_amount`` and ``closing_debt_balance_amount =
deposit_amount``. Otherwise ``deposit_amount``, ``opening_debt_balance_amount``
and ``closing_debt_balance_amount`` are 0 (opening is always 0).

The one deliberate exception: the ``DatasetSpec.unreconciled_payouts`` oldest
payouts (``Dataset.unreconciled_payment_references()``) serve
``settlement_amount`` = that signed sum + 100 (every other total, deposit and
debt balances included, is still computed from the rows), so a reconciliation
of payouts against their transactions catches exactly those.
"""
from __future__ import annotations

import math
import random
from typing import NamedTuple

from .catalogue import FEE_VAT_RATE, KLARNA_COMMENTS, MISC_TOTAL_WEIGHT, REGISTRATION_CURRENCY, misc_kind_at
from .dates import format_datetime
from .records import OrderDetail, OrderPlan

__all__ = ["TOTALS_BY_TYPE", "TOTALS_KEYS", "RowPlan", "OrderPlan", "PayoutContext", "plan_rows", "totals_of",
           "transaction_row"]

#: totals field -> transaction types summed into it
TOTALS_BY_TYPE = {
    "sale_amount": ("SALE",),
    "fee_amount": ("FEE",),
    "return_amount": ("RETURN",),
    "reversal_amount": ("REVERSAL", "REVERSAL_MERCHANT_PROTECTION"),
    "commission_amount": ("COMMISSION",),
    "tax_amount": ("TAX",),
    "holdback_amount": ("HOLDBACK",),
    "release_amount": ("RELEASE",),
    "charge_amount": ("CHARGE",),
    "credit_amount": ("CREDIT",),
    "fee_refund_amount": ("FEE_REFUND",),
    "fee_correction_amount": ("CORRECTION",),
}
_TOWARDS_MERCHANT = ("sale_amount", "release_amount", "credit_amount", "fee_refund_amount", "fee_correction_amount")
_TOWARDS_KLARNA = ("fee_amount", "return_amount", "reversal_amount", "commission_amount", "tax_amount",
                   "holdback_amount", "charge_amount")
TOTALS_KEYS = (  # key order as in the OpenAPI Totals schema
    "commission_amount", "repay_amount", "sale_amount", "holdback_amount", "tax_amount",
    "settlement_amount", "fee_correction_amount", "reversal_amount", "release_amount",
    "return_amount", "fee_amount", "charge_amount", "credit_amount", "fee_refund_amount",
    "tax_refund_amount", "deposit_amount", "opening_debt_balance_amount",
    "closing_debt_balance_amount",
)
_TOTAL_OF_TYPE = {t: k for k, ts in TOTALS_BY_TYPE.items() for t in ts}
_NO_SUB_INDEX = -1


class RowPlan(NamedTuple):
    """One planned transaction row. A duplicated row is the SAME object twice in the plan."""

    type: str
    detailed_type: str | None
    amount: int
    order_index: int  #: index of the order (in the payout) the row belongs to
    sub_index: int  #: capture index for SALE/FEE, refund index for RETURN, -1 otherwise


class PayoutContext(NamedTuple):
    """What every row of one payout repeats. A pending transaction (in no payout yet) has
    ``payment_reference`` and ``payout_link`` None: its row has neither key."""

    payment_reference: str | None
    payout_link: str | None
    currency: str
    to_registration_currency: float


def plan_rows(rng: random.Random, n_rows: int, n_identical: int) -> tuple:
    """Decide every row's type, detailed type and amount: ``(list of RowPlan, list of OrderPlan)``.

    ``n_identical`` rows are byte-for-byte copies of a FEE row of the same payout (fixed fees
    preferred), inserted after their original; they are capped so at least two rows are distinct.
    The sequence of draws from ``rng`` is part of the data (the order generator continues it).
    """
    if n_rows <= 0:
        return [], []
    dup = n_identical
    if n_rows - dup < 2:
        dup = max(0, n_rows - 2)
    budget = n_rows - dup
    rand = rng.random
    rows: list = []
    orders: list = []
    append = rows.append
    while len(rows) < budget:
        rem = budget - len(rows)
        if not orders or (rem >= 2 and rand() < 0.7):
            k = len(orders)
            amount = int(math.exp(7.3 + 4.6 * rand()))  # ~1,480 .. ~147,000 minor units
            if rem >= 4 and amount >= 200 and rand() < 0.2:
                first = int(amount * (0.3 + 0.4 * rand()))
                caps = [first, amount - first]
            else:
                caps = [amount]
            authorized, released = amount, False
            if rand() < 0.12:
                authorized = amount + int(amount * (0.1 + 0.2 * rand())) + 1
                released = rand() < 0.5
            orders.append(OrderPlan(authorized, caps, [], released))
            if rem == 1:  # only possible for a 1-row payout
                append(RowPlan("SALE", "PURCHASE", amount, k, 0))
                continue
            ncap = len(caps)
            for c, camt in enumerate(caps):
                append(RowPlan("SALE", "PURCHASE", camt, k, c))
                rate = 249 + int(100 * rand())
                append(RowPlan("FEE", "PURCHASE_FEE_PERCENTAGE", max(1, (camt * rate + 5000) // 10000), k, c))
                if budget - len(rows) - 2 * (ncap - c - 1) >= 1 and rand() < 0.15:
                    append(RowPlan("FEE", "PURCHASE_FEE_FIXED", 20 + int(30 * rand()), k, c))
            continue
        k = int(rand() * len(orders))
        order = orders[k]
        captured = sum(order.captures)
        kind = misc_kind_at(rand() * MISC_TOTAL_WEIGHT)
        t, detailed_types = kind.type, kind.detailed_types
        if t == "RETURN":
            avail = captured - sum(order.refunds)
            if avail >= 100:
                amt = avail if rand() < 0.35 else 100 + int((avail - 100) * rand())
                order.refunds.append(amt)
                append(RowPlan("RETURN", "PURCHASE_RETURN", amt, k, len(order.refunds) - 1))
                continue
            t, detailed_types = "COMMISSION", ("PURCHASE_COMMISSION_PERCENTAGE", "COMMISSION")
        dt = detailed_types[int(rand() * len(detailed_types))]
        if t in ("REVERSAL", "REVERSAL_MERCHANT_PROTECTION"):
            amt = max(1, int(captured * (0.2 + 0.8 * rand())))
        elif t == "COMMISSION":
            amt = max(1, int(captured * (0.005 + 0.015 * rand())))
        elif t == "HOLDBACK":
            amt = max(1, captured // 10)
        elif t == "RELEASE":
            amt = 500 + int(19500 * rand())
        elif t in ("CHARGE", "CREDIT"):
            amt = 100 + int(2400 * rand())
        elif t == "TAX":
            amt = 50 + int(1450 * rand())
        elif t == "FEE":
            amt = 50 + int(450 * rand())
        else:  # FEE_REFUND, CORRECTION
            amt = 10 + int(490 * rand())
        append(RowPlan(t, dt, amt, k, _NO_SUB_INDEX))
    if dup:
        _insert_identical_fees(rows, dup, rand)
    return rows, orders


def _insert_identical_fees(rows: list, dup: int, rand):
    fixed = [i for i, row in enumerate(rows) if row.detailed_type == "PURCHASE_FEE_FIXED"]
    for _ in range(dup):
        pool = fixed or [i for i, row in enumerate(rows) if row.type == "FEE"]
        src = pool[int(rand() * len(pool))]
        pos = src + 1 + int(rand() * (len(rows) - src))
        rows.insert(pos, rows[src])
        if fixed:
            fixed = [i for i, row in enumerate(rows) if row.detailed_type == "PURCHASE_FEE_FIXED"]


def totals_of(rows) -> dict:
    """A payout's ``totals`` object (key order of the OpenAPI Totals schema) from its row plans."""
    sums = dict.fromkeys(TOTALS_BY_TYPE, 0)
    for row in rows:
        sums[_TOTAL_OF_TYPE[row.type]] += row.amount
    settlement = sum(sums[k] for k in _TOWARDS_MERCHANT) - sum(sums[k] for k in _TOWARDS_KLARNA)
    deposit = -settlement if settlement < 0 else 0
    sums.update(repay_amount=0, tax_refund_amount=0, settlement_amount=settlement, deposit_amount=deposit,
                opening_debt_balance_amount=0, closing_debt_balance_amount=deposit)
    return {k: sums[k] for k in TOTALS_KEYS}


def transaction_row(plan: RowPlan, order: OrderDetail, payout: PayoutContext) -> dict:
    """Klarna's ``Transaction`` for one planned row of ``order`` (key order is part of the bytes)."""
    t = plan.type
    refund = None
    if t == "SALE" or t == "FEE":
        capture = order.captures[plan.sub_index if plan.sub_index >= 0 else 0]
        capture_id, capture_date, capture_reference = capture.capture_id, format_datetime(capture.ts), \
            capture.merchant_reference
    elif t == "RETURN":
        refund = order.refunds[plan.sub_index]
        capture_id, capture_date, capture_reference = "", format_datetime(refund.ts), None
    else:
        capture_id, capture_date, capture_reference = "", format_datetime(order.last_capture_ts), None
    row = {
        "amount": plan.amount,
        "capture_id": capture_id,
        "merchant_reference1": order.merchant_reference1,
        "sale_date": order.sale_date,
        "type": t,
        "capture_date": capture_date,
    }
    if payout.payment_reference is not None:
        row["payment_reference"] = payout.payment_reference
    row["order_id"] = order.order_id
    if payout.payout_link is not None:
        row["payout"] = payout.payout_link
    if refund is not None:
        row["refund_id"] = refund.refund_id
    row["short_order_id"] = order.short_id
    if order.merchant_reference2 is not None:
        row["merchant_reference2"] = order.merchant_reference2
    row["currency_code"] = payout.currency
    row["purchase_country"] = order.purchase_country
    fee_like = t == "FEE" or t == "FEE_REFUND"
    if fee_like:
        row["vat_rate"] = FEE_VAT_RATE
        row["vat_amount"] = (plan.amount * FEE_VAT_RATE + 5950) // (10000 + FEE_VAT_RATE)
    row["shipping_country"] = order.shipping_country
    method = order.payment_method
    row["initial_payment_method_type"] = method.transaction_value
    if order.installments is not None:
        row["initial_number_of_installments"] = order.installments
        if method.order_type == "FIXED_AMOUNT":
            row["initial_payment_method_monthly_downpayments"] = order.installments
    if capture_reference is not None:
        row["merchant_capture_reference"] = capture_reference
    if refund is not None and refund.merchant_reference is not None:
        row["merchant_refund_reference"] = refund.merchant_reference
    if plan.detailed_type is not None:
        row["detailed_type"] = plan.detailed_type
    if fee_like:
        row["tax_in_currency_of_registration_country"] = int(round(row["vat_amount"] * payout.to_registration_currency))
    row["currency_code_of_registration_country"] = REGISTRATION_CURRENCY
    comment = KLARNA_COMMENTS.get(t)
    if comment is not None:
        row["klarna_comment"] = f"{comment} {order.short_id} ({order.sale_date[:10]})"
    if t == "REVERSAL" or t == "REVERSAL_MERCHANT_PROTECTION":
        row["reversal_reference"] = order.dispute_reference
    return row
