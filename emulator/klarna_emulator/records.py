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

__all__ = ["OrderPlan", "CaptureEvent", "RefundEvent", "OrderDetail", "ExtraRow"]


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


class ExtraRow(NamedTuple):
    """A transaction row an event adds to a payout after its own rows (and a pending set's): a refund on an
    old order, the fee of a gone order, a dispute's money. ``type`` and ``amount`` count in the payout's
    totals like a row plan's; the row itself is ``transaction_row`` of the order's detail."""

    type: str
    detailed_type: str
    amount: int
    order_pos: int  #: position of the payout the order belongs to
    order_index: int  #: the order's index in that payout
    sub_index: int  #: capture index for FEE, 0 for RETURN (of ``refund``), -1 otherwise
    refund: RefundEvent | None = None  #: RETURN: the refund the row settles
    reversal_reference: str | None = None  #: a dispute's KRN: the row names it and the disputed capture
    capture_index: int = 0  #: with ``reversal_reference``: the disputed capture
