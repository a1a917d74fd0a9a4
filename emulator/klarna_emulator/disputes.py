"""Disputes (Klarna's Disputes API v2): the dispute record, its life, its money and its JSON, and the
query of ``GET /disputes/v2/disputes``. The dataset (dataset.py) picks the disputed orders and the payouts
the money lands in; this module decides everything else.

Life of a dispute
-----------------
A dispute is drawn with an ``outcome`` it is headed for and walks one of four paths of
``investigation_status``::

    won               opened -> replied -> closed        (closing_reason resolved, in favour of the merchant)
    lost              opened -> replied -> closed        (closing_reason resolved, in favour of the customer)
    loss_accepted     opened -> loss_accepted            (the merchant accepted the loss)
    deadline_expired  opened -> deadline_expired         (the merchant never answered Klarna's request)

Klarna's request for information is there from the opening (``requests[0]``, ``created_at = opened_at``);
the merchant's response appears with ``replied``. ``deadline_expires_at = opened_at + RESPONSE_DAYS``; a
reply or an acceptance is dated before it, an expiry exactly at it. ``status`` is ``open`` while
``investigation_status`` is ``opened`` or ``replied``, else ``closed``; ``closed_at``, ``closing_reason``
and ``closing_reason_detailed`` are null while open. ``started`` and ``unresolved`` are valid filter values
that no emulated dispute takes.

Money (rows of the settlements, each naming the dispute's KRN in ``reversal_reference``, its order and its
disputed capture): the fee, when the dispute charges one (``charged_disputes_fee``), is a FEE row
``DISPUTE_FEE`` at the opening; a won dispute gives it back at the closing (FEE_REFUND
``DISPUTE_FEE_REFUND``; a won dispute without a fee moves no money); a lost one (``lost``,
``loss_accepted``, ``deadline_expired``) takes the ``chargeback_amount`` (= ``disputed_amount``) back
with a REVERSAL row ``REVERSAL`` at the closing.
"""
from __future__ import annotations

import base64
import binascii
import json
import random
from dataclasses import dataclass, replace
from typing import NamedTuple

from .catalogue import TO_EUR
from .dates import DAY, HOUR, format_datetime
from .records import ExtraRow

__all__ = ["REASONS", "FILTER_REASONS", "INVESTIGATION_STATUSES", "SORT_KEYS", "OUTCOMES", "INITIAL_TARGETS",
           "RESPONSE_DAYS", "MERCHANT_NAME", "DEFAULT_LIMIT", "MAX_LIMIT", "Dispute", "DisputeDraws", "draw",
           "outcome_for", "krn", "fee_amount", "history", "fee_row", "closing_row", "next_transition", "advance", "dispute_dict",
           "QueryError", "DisputeQuery", "parse_query", "select_page"]

#: the reasons the emulator's disputes have (Klarna's enum without pandemic_impact)
REASONS = ("goods_not_received", "return", "incorrect_invoice", "already_paid", "faulty_goods",
           "unauthorized_purchase", "high_risk_order")
#: the reasons ``?reason=`` accepts (Klarna's enum)
FILTER_REASONS = REASONS + ("pandemic_impact",)
INVESTIGATION_STATUSES = ("opened", "started", "unresolved", "replied", "closed", "deadline_expired",
                          "loss_accepted")
SORT_KEYS = ("opened_at", "-opened_at", "deadline_expires_at", "-deadline_expires_at")
OUTCOMES = ("won", "lost", "loss_accepted", "deadline_expired")
#: the states the initial disputes are drawn in, in turn (dispute n takes ``INITIAL_TARGETS[n % 6]``)
INITIAL_TARGETS = ("opened", "won", "replied", "loss_accepted", "lost", "deadline_expired")
#: what Klarna gives the merchant to answer (Klarna: 7 to 21 days)
RESPONSE_DAYS = 7
MERCHANT_NAME = "Emulator Shop"
REGION = "EU"
DEFAULT_LIMIT = 250
MAX_LIMIT = 250
#: the dispute fee, in EUR (converted with catalogue.TO_EUR and rounded to whole units of the currency)
FEE_EUR = 15
_KRN_BASE = 300_000_000_000_000  #: dispute numbers (the row plan's own reversal references use 263...)
_CLOSED = {"closed", "loss_accepted", "deadline_expired"}
#: outcome -> (closing_reason, closing_reason_detailed)
_CLOSING = {
    "won": ("resolved", "resolved_in_favour_of_merchant"),
    "lost": ("resolved", "resolved_in_favour_of_customer"),
    "loss_accepted": ("loss_accepted", "merchant_accepted_loss"),
    "deadline_expired": ("deadline_expired", "merchant_did_not_reply_to_dispute_request"),
}
#: reason -> (Klarna's comment, requested_fields, optional_requested_fields, the merchant's answer)
_REQUESTS = {
    "goods_not_received": ("The customer states that the goods were not received.",
                           ("shipping_carrier", "tracking_number", "shipping_date"), ("proof_of_delivery",),
                           "Shipped on time; the tracking shows the parcel delivered."),
    "return": ("The customer states that the goods were returned without a refund.",
               ("return_tracking_number", "refund_date"), ("return_policy",),
               "The return has not reached our warehouse."),
    "incorrect_invoice": ("The customer states that the invoiced amount is wrong.", ("invoice",),
                          ("order_confirmation",), "The invoice matches the order confirmation."),
    "already_paid": ("The customer states that the purchase was already paid.", ("payment_details",),
                     ("invoice",), "No other payment for this order was received."),
    "faulty_goods": ("The customer states that the goods are faulty.", ("product_description", "return_policy"),
                     ("photos",), "The item was tested before shipping; we offer a repair."),
    "unauthorized_purchase": ("The customer states that they did not make this purchase.",
                              ("billing_address", "shipping_address", "ip_address"), ("proof_of_delivery",),
                              "Delivered to the customer's registered address."),
    "high_risk_order": ("The order was flagged as a high-risk purchase.", ("proof_of_delivery",),
                        ("customer_communication",), "The customer confirmed the order by phone."),
}


@dataclass(frozen=True, slots=True)
class Dispute:
    """One dispute as it stands (replaced, never changed, when it moves on)."""

    n: int  #: its number: 0.. for the initial ones, then in the order growth opens them
    krn: str  #: dispute_krn, and reversal_reference of its settlement rows
    reason: str
    outcome: str  #: where it is headed (OUTCOMES)
    currency: str
    order_id: str
    order_pos: int  #: position of the order's payout
    order_index: int  #: index of the order in that payout
    capture_index: int
    capture_id: str
    disputed_amount: int
    fee: int | None  #: charged_disputes_fee (None: none)
    line_reference: str
    disputed_quantity: int
    order: tuple  #: (key, value) pairs of its ``order`` object
    opened_ts: int
    deadline_ts: int
    state: str = "opened"  #: investigation_status
    replied_ts: int | None = None
    closed_ts: int | None = None
    payouts: tuple = ()  #: payment references of the payouts holding its settlement rows, oldest first

    @property
    def is_open(self) -> bool:
        return self.state not in _CLOSED


class DisputeDraws(NamedTuple):
    """What a dispute draws from its own generator ``{seed}:dispute:{n}``, always the same numbers in the same
    order (the dataset's choices of payout and order use ``u_payout``/``u_order``)."""

    reason: str
    u_outcome: float
    fee: bool
    open_s: int  #: initial disputes: seconds after the order's payout (1 to 11 h)
    reply_s: int  #: seconds from the opening to the reply or the acceptance (2 to 20 h)
    close_s: int  #: seconds from the reply to the closing (6 to 30 h)
    u_payout: float
    u_order: float
    u_capture: float
    u_line: float
    u_quantity: float
    number: int  #: the KRN's number


def draw(seed, n: int) -> DisputeDraws:
    rng = random.Random(f"{seed}:dispute:{n}")
    rand = rng.random
    return DisputeDraws(
        reason=REASONS[int(rand() * len(REASONS))], u_outcome=rand(), fee=rand() < 0.75,
        open_s=HOUR + int(rand() * 10 * HOUR), reply_s=2 * HOUR + int(rand() * 18 * HOUR),
        close_s=6 * HOUR + int(rand() * 24 * HOUR), u_payout=rand(), u_order=rand(), u_capture=rand(),
        u_line=rand(), u_quantity=rand(), number=_KRN_BASE + (rng.getrandbits(24) << 20) + (n & 0xFFFFF),
    )


def outcome_for(target: str, u: float) -> str:
    """The outcome of a dispute drawn in state ``target``: the target itself when it is an outcome, else one
    whose path passes through it."""
    if target in OUTCOMES:
        return target
    pool = ("won", "lost") if target == "replied" else OUTCOMES
    return pool[int(u * len(pool))]


def krn(reason: str, number: int) -> str:
    return f"krn:klarna:eu1:dispute:{reason}:{number}"


def fee_amount(currency: str) -> int:
    """FEE_EUR in the currency's minor units (whole units)."""
    return max(1, int(round(FEE_EUR / TO_EUR.get(currency, 1.0)))) * 100


def history(target: str, outcome: str, draws: DisputeDraws) -> list:
    """[(state, seconds after the opening)] of a dispute drawn in state ``target``."""
    events = [("opened", 0)]
    if target == "opened":
        return events
    if outcome in ("won", "lost"):
        events.append(("replied", draws.reply_s))
        if target != "replied":
            events.append(("closed", draws.reply_s + draws.close_s))
    elif outcome == "loss_accepted":
        events.append(("loss_accepted", draws.reply_s))
    else:
        events.append(("deadline_expired", RESPONSE_DAYS * DAY))
    return events


def fee_row(d: Dispute) -> ExtraRow | None:
    if d.fee is None:
        return None
    return ExtraRow("FEE", "DISPUTE_FEE", d.fee, d.order_pos, d.order_index, d.capture_index, None, d.krn,
                    d.capture_index)


def closing_row(d: Dispute) -> ExtraRow | None:
    """The row of the closing (None: a won dispute without a fee moves no money)."""
    if d.outcome == "won":
        if d.fee is None:
            return None
        return ExtraRow("FEE_REFUND", "DISPUTE_FEE_REFUND", d.fee, d.order_pos, d.order_index, -1, None, d.krn,
                        d.capture_index)
    return ExtraRow("REVERSAL", "REVERSAL", d.disputed_amount, d.order_pos, d.order_index, -1, None, d.krn,
                    d.capture_index)


def next_transition(d: Dispute, tau: int):
    """The move a growth step at time ``tau`` makes: ``(state, its time, its row or None)``, or None when the
    dispute is closed or waits for its deadline."""
    if d.state == "opened":
        merchant_ts = min(tau, d.deadline_ts - HOUR)  # the merchant acts before the deadline
        if d.outcome in ("won", "lost"):
            return "replied", merchant_ts, None
        if d.outcome == "loss_accepted":
            return "loss_accepted", merchant_ts, closing_row(d)
        if tau < d.deadline_ts:
            return None
        return "deadline_expired", d.deadline_ts, closing_row(d)
    if d.state == "replied":
        return "closed", tau, closing_row(d)
    return None


def advance(d: Dispute, state: str, ts: int, payout_ref: str | None = None) -> Dispute:
    """``d`` moved to ``state`` at ``ts`` (its money in the payout ``payout_ref``)."""
    payouts = d.payouts + (payout_ref,) if payout_ref is not None and payout_ref not in d.payouts else d.payouts
    if state == "replied":
        return replace(d, state=state, replied_ts=ts, payouts=payouts)
    return replace(d, state=state, closed_ts=ts, payouts=payouts)


def dispute_dict(d: Dispute, merchant_id: str) -> dict:
    """Klarna's DisputeDetails (key order is part of the bytes)."""
    def money(amount):
        return {"amount": amount, "currency": d.currency}

    closed = not d.is_open
    comment, fields, optional, answer = _REQUESTS[d.reason]
    request_id = 1_000_000 + d.n
    request = {
        "request_id": request_id,
        "created_at": format_datetime(d.opened_ts),
        "comment": comment,
        "requested_fields": list(fields),
        "optional_requested_fields": list(optional),
        "attachments": [],
        "responses": [],
    }
    if d.replied_ts is not None:
        request["responses"].append({"response_id": 2_000_000 + d.n, "created_at": format_datetime(d.replied_ts),
                                     "comment": answer, "requested_fields": list(fields), "attachments": []})
    closing = _CLOSING[d.outcome] if closed else (None, None)
    order = dict(d.order)
    order["shipping_info"] = []
    return {
        "dispute_krn": d.krn,
        "capture_id": d.capture_id,
        "reason": d.reason,
        "investigation_status": d.state,
        "status": "closed" if closed else "open",
        "opened_at": format_datetime(d.opened_ts),
        "closed_at": format_datetime(d.closed_ts) if closed else None,
        "closing_reason": closing[0],
        "closing_reason_detailed": closing[1],
        "deadline_expires_at": format_datetime(d.deadline_ts),
        "disputed_amount": money(d.disputed_amount),
        "charged_disputes_fee": None if d.fee is None else money(d.fee),
        "chargeback_amount": money(d.disputed_amount) if closed and d.outcome != "won" else None,
        "disputed_order_lines": [{"disputed_quantity": d.disputed_quantity, "reference": d.line_reference}],
        "merchant": {"merchant_id": merchant_id, "name": MERCHANT_NAME},
        "region": REGION,
        "order": order,
        "requests": [request],
    }


# ------------------------------------------------------------------------------- GET /disputes/v2/disputes

class QueryError(ValueError):
    """A query parameter the list refuses (400)."""


#: filter parameter -> (allowed values or None, what it compares)
_FILTERS = {
    "merchant_id": None,
    "order_id": None,
    "investigation_status": INVESTIGATION_STATUSES,
    "reason": FILTER_REASONS,
    "merchant_references1": None,
    "merchant_references2": None,
}


class DisputeQuery(NamedTuple):
    limit: int
    sort: tuple  #: sort_by values, in order
    filters: tuple  #: ((parameter, (values...)), ...), parameters sorted
    after: tuple | None  #: the sort key of the last dispute served (a next_page cursor), else None


def _cursor(sort, filters, limit, after) -> str:
    raw = json.dumps({"v": 1, "sort": list(sort), "filters": {k: list(v) for k, v in filters}, "limit": limit,
                      "after": list(after)}, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _uncursor(value: str) -> tuple:
    try:
        data = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        sort = tuple(data["sort"])
        filters = tuple((k, tuple(v)) for k, v in sorted(data["filters"].items()))
        limit, after = int(data["limit"]), tuple(int(x) for x in data["after"])
        if data["v"] != 1 or not set(sort) <= set(SORT_KEYS) or not set(dict(filters)) <= set(_FILTERS) or \
                len(after) != len(sort) + 1 or not 1 <= limit <= MAX_LIMIT:
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise QueryError(f"next_page: not a cursor of this list: {value!r}") from None
    return sort, filters, limit, after


def parse_query(pairs) -> DisputeQuery:
    """The list's query from the request's (name, value) pairs (repeated names repeat values); raises
    QueryError. With ``next_page`` the cursor's sort_by and filters apply (those of the request are checked,
    then ignored) and so does its limit unless the request names one."""
    values: dict = {}
    for k, v in pairs:
        values.setdefault(k, []).append(v)
    limit = None
    if "limit" in values:
        raw = values["limit"][0]
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise QueryError(f"limit: must be an integer between 1 and {MAX_LIMIT}, got {raw!r}")
        limit = int(raw)
    sort = tuple(values.get("sort_by", ())) or ("opened_at",)
    for s in sort:
        if s not in SORT_KEYS:
            raise QueryError(f"sort_by: must be one of {', '.join(SORT_KEYS)}, got {s!r}")
    filters = []
    for name, allowed in sorted(_FILTERS.items()):
        given = tuple(v for v in values.get(name, ()) if v != "")
        if allowed is not None:
            for v in given:
                if v not in allowed:
                    raise QueryError(f"{name}: must be one of {', '.join(allowed)}, got {v!r}")
        if given:
            filters.append((name, given))
    filters = tuple(filters)
    after = None
    cursors = values.get("next_page", ())
    if cursors:
        if len(cursors) != 1:
            raise QueryError("next_page: give back the one value of the previous answer's pagination.next_page")
        sort, filters, cursor_limit, after = _uncursor(cursors[0])
        limit = limit or cursor_limit
    return DisputeQuery(limit or DEFAULT_LIMIT, sort, filters, after)


def _sort_key(d: Dispute, sort) -> tuple:
    key = []
    for s in sort:
        ts = d.opened_ts if s.endswith("opened_at") else d.deadline_ts
        key.append(-ts if s.startswith("-") else ts)
    key.append(d.n)
    return tuple(key)


def _matches(d: Dispute, filters, merchant_id) -> bool:
    if not filters:  # the connector's paging asks with none: no per-dispute dicts on every page
        return True
    order = dict(d.order)
    have = {"merchant_id": merchant_id, "order_id": d.order_id, "investigation_status": d.state, "reason": d.reason,
            "merchant_references1": order.get("merchant_reference1"),
            "merchant_references2": order.get("merchant_reference2")}
    return all(have[name] in values for name, values in filters)


def select_page(disputes, query: DisputeQuery, merchant_id: str) -> tuple:
    """-> (the page's disputes, total matching the filters, next_page cursor or None)."""
    matching = sorted(((_sort_key(d, query.sort), d) for d in disputes if _matches(d, query.filters, merchant_id)),
                      key=lambda kd: kd[0])
    rest = matching if query.after is None else [kd for kd in matching if kd[0] > query.after]
    page = rest[:query.limit]
    cursor = None
    if len(rest) > len(page):
        cursor = _cursor(query.sort, query.filters, query.limit, page[-1][0])
    return [d for _, d in page], len(matching), cursor

