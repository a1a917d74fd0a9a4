"""The plain records the generators hand each other: what the row plan decided about an order
(``OrderPlan``, made by ``transactions.plan_rows``) and what an order's rows and its MerchantOrderDto
share (``OrderDetail``, made by ``orders.draw_order_details``).

Both ``transactions.py`` and ``orders.py`` import this module and neither imports the other, so there
is no import circle; this module imports nothing of the package but ``catalogue.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .catalogue import PaymentMethod

__all__ = ["OrderPlan", "CaptureEvent", "RefundEvent", "OrderDetail"]


@dataclass(slots=True)
class OrderPlan:
    """What the row plan decided about one order (amounts in minor units)."""

    authorized: int
    captures: list  #: captured amounts, one per capture
    refunds: list  #: refunded amounts, one per refund (RETURN row)
    released: bool  #: the authorized rest was released (the order is CLOSED, not PART_CAPTURED)


class CaptureEvent(NamedTuple):
    capture_id: str
    ts: int
    merchant_reference: str | None  #: the merchant's capture reference (CAP-...), when it sent one


class RefundEvent(NamedTuple):
    refund_id: str
    ts: int
    merchant_reference: str | None  #: the merchant's refund reference (RET-...), when it sent one


@dataclass(frozen=True, slots=True)
class OrderDetail:
    """What an order's transaction rows and its MerchantOrderDto share."""

    order_id: str
    short_id: str  #: klarna_reference / short_order_id
    merchant_reference1: str
    merchant_reference2: str | None
    purchase_country: str
    shipping_country: str
    payment_method: PaymentMethod
    installments: int | None
    sale_ts: int
    sale_date: str
    captures: tuple  #: CaptureEvent per captured amount of the plan
    refunds: tuple  #: RefundEvent per refunded amount of the plan
    last_capture_ts: int  #: capture_date of the order's rows that are neither SALE, FEE nor RETURN
    dispute_reference: str  #: reversal_reference of its REVERSAL rows
