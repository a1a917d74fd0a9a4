"""Deterministic, seeded, lazily generated Klarna settlement data: the ``Dataset`` and its read API.

The data is a pure function of ``(DatasetSpec, list of growth steps)``: a test
process that builds ``Dataset(spec)`` and applies the same ``grow`` calls holds
exactly what the emulator server serves, byte for byte.

Shape
-----
* Payout ``i`` (0-based, in generation order) has
  ``payout_date = first_payout_date + i // len(currencies) days + 6 h + (i mod 3600) s``
  and ``currency_code = currencies[i % len(currencies)]``. Its transactions are
  generated on demand from ``random.Random(f"{seed}:{i}")``; late payouts added
  by ``grow`` use ``random.Random(f"{seed}:late:{m}")``.
* Every payout has exactly ``transactions_per_payout`` transaction rows, of which
  ``identical_rows_per_payout`` are byte-for-byte copies of a FEE row of the same
  payout (a duplicated fee line; they are real rows and count in the totals),
  except the ``empty_payouts`` chosen by ``DatasetSpec.is_empty_payout``: no
  rows at all, every total 0, and a payout that took a pending set in (N rows more).
* One order per distinct ``order_id``; an order belongs to exactly one payout (or to the pending set).
* Pending transactions (``pending_transactions`` N > 0): N rows in no payout yet, drawn from
  ``random.Random(f"{seed}:pending:{n}")`` for the n-th set, in the currency of the next regular payout
  and dated within a day after the newest payout_date when the set was drawn (sale and capture dates,
  hence possibly after the payout they later move into). They are served only by the unfiltered
  ``/transactions`` list, AFTER every payout's rows, and by ``?order_id=``, without the keys
  ``payment_reference`` and ``payout``. ``grow(new_payouts >= 1)`` moves the set into its first new
  payout (appended after that payout's own ``transactions_per_payout`` rows, every other byte kept, its
  totals include them) and draws set n + 1. Their orders are never purged.
* Unreconciled payouts (``unreconciled_payouts`` U): the first U payouts generated (the oldest) serve
  ``settlement_amount`` 100 above the signed sum of their rows; every other total is consistent.
* Events (events.py, disputes.py): the initial disputes and growth's refunds on old orders, gone orders
  and disputes add rows (``records.ExtraRow``) to a payout after its own rows and a pending set's (its
  totals count them; ``?order_id=`` finds them); a refunded order is served with its new refunds, a gone
  one answers 404. ``Events`` (in the views) records them all.

The sign convention of the totals is documented in ``transactions.py``; the
generators are ``transactions.plan_rows`` (rows) and ``orders.py`` (orders), the
constant tables they draw from ``catalogue.py``.

Memory
------
Payout metadata (reference, date, currency, totals) is kept for every payout;
transaction rows are never materialised for the whole dataset: a payout's rows
are generated when asked for and the serialized rows of the last 64 payouts are
kept in an LRU cache. Totals are computed from the same generator (its cheap
row-plan phase, which decides every row's type and amount).
"""
from __future__ import annotations

import base64
import bisect
import hashlib
import json
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator

from .catalogue import MERCHANT_SETTLEMENT_TYPE, REGISTRATION_CURRENCY, SETTLEMENTS_LINK_BASE, TO_EUR
from .dates import DAY, HOUR, format_datetime, parse_datetime
from .events import Events, EventsMixin
from .orders import PENDING_POS_BASE, OrderDetail, OrderIds, draw_order_details, merchant_order
from .records import ExtraRow
from .spec import DatasetSpec
from .transactions import TOTALS_BY_TYPE, TOTALS_KEYS, OrderPlan, PayoutContext, RowPlan, plan_rows, totals_of, \
    transaction_row

__all__ = [
    "DatasetSpec",
    "Dataset",
    "parse_datetime",
    "format_datetime",
    "SETTLEMENTS_LINK_BASE",
    "TOTALS_BY_TYPE",
]

PAYOUT_HOUR = 6  # regular payouts are dated 06:00 UTC + their index's seconds
UNRECONCILED_OFFSET = 100  # minor units added to an unreconciled payout's settlement_amount
LATE_PAYOUT_HOUR = 18  # late payouts 18:00 UTC, one or two days before the newest payout


@dataclass(slots=True)
class PayoutMeta:
    """What is kept for every payout (small); its rows and orders are generated from ``key``."""

    pos: int  #: position in generation order (encoded in its order ids)
    key: str  #: seed of its random generator
    ref: str  #: payment_reference
    ts: int  #: payout_date, POSIX seconds
    currency: str
    late: bool  #: added by grow(late_payouts=...)
    row_count: int  #: its number of transactions (a pending set it took in and its extra rows included)
    pending: "PendingSet | None" = None  #: the pending set it took in (its rows follow the payout's own)
    extra: tuple = ()  #: ExtraRow of events (events.py), after its own and the pending set's rows
    date: str = field(init=False)  #: payout_date as served

    def __post_init__(self):
        self.date = format_datetime(self.ts)


@dataclass(slots=True)
class PendingSet:
    """The n-th set of pending transactions (in no payout yet); generated from ``key`` like a payout."""

    n: int
    pos: int  #: PENDING_POS_BASE + n: the position its order ids encode
    key: str  #: seed of its random generator
    after_ts: int  #: the newest payout_date when it was drawn; its rows are dated within a day after it
    currency: str  #: that of the regular payout it will move into
    payout: PayoutMeta | None = None  #: the payout it moved into (set by grow)


class _Views:
    """Immutable sorted views over the payout list (swapped atomically on grow)."""

    __slots__ = ("metas", "desc", "desc_neg_ts", "desc_by_cur", "desc_neg_ts_by_cur", "asc", "asc_row_starts",
                 "row_count", "pending", "total_rows", "events")

    def __init__(self, metas, currencies, pending=None, pending_rows=0, events: Events | None = None):
        self.metas = tuple(metas)
        self.pending = pending  #: the current PendingSet (None without pending transactions)
        self.events = events or Events()  #: refunds on old orders, gone orders, disputes (events.py)
        desc = sorted(self.metas, key=lambda m: (-m.ts, m.ref))
        self.desc = tuple(desc)
        self.desc_neg_ts = [-m.ts for m in desc]
        self.desc_by_cur = {}
        self.desc_neg_ts_by_cur = {}
        for c in currencies:
            lst = tuple(m for m in desc if m.currency == c)
            self.desc_by_cur[c] = lst
            self.desc_neg_ts_by_cur[c] = [-m.ts for m in lst]
        self.asc = tuple(sorted(self.metas, key=lambda m: (m.ts, m.ref)))
        self.asc_row_starts = []  # offset of each payout's first row in the unfiltered /transactions listing
        start = 0
        for m in self.asc:
            self.asc_row_starts.append(start)
            start += m.row_count
        self.row_count = start  #: rows in payouts
        self.total_rows = start + (pending_rows if pending is not None else 0)  #: pending rows included


class _LRU:
    def __init__(self, maxsize):
        self.maxsize = maxsize
        self._d = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key, value):
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.maxsize:
                self._d.popitem(last=False)

    def clear(self):
        with self._lock:
            self._d.clear()

    def drop(self, key):
        with self._lock:
            self._d.pop(key, None)


@dataclass(frozen=True, slots=True)
class PayoutContent:
    """A payout's generated content: its rows (duplicates are the same dict), order plans and details."""

    rows: list
    order_plans: list  #: OrderPlan per order, by order index
    order_details: list  #: OrderDetail per order, by order index
    row_order_ids: list = field(init=False)  #: order_id of each row

    def __post_init__(self):
        object.__setattr__(self, "row_order_ids", [r["order_id"] for r in self.rows])


@dataclass(frozen=True, slots=True)
class SerializedRows:
    rows: list  #: serialized rows, in served order
    order_ids: list  #: order_id of each row


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class Dataset(EventsMixin):
    """The emulator's data. Thread safe; ``grow`` may run while others read.

    Read API (expected data for tests; no HTTP involved):
    ``payouts()``, ``payout(ref)``, ``transactions()``, ``transactions_for(ref)``,
    ``pending_transactions()``, ``unreconciled_payment_references()``,
    ``orders()``, ``order(order_id)``, ``order_ids()``, ``is_purged(order_id)``, ``is_gone(order_id)``,
    ``gone_order_ids()``, ``disputes()``, ``dispute(krn)``, ``dispute_transactions(krn)``, ``step_events()``,
    ``summary(start, end, currency=None)``,
    ``grow(new_payouts, late_payouts, refunds_on_old_orders, gone_orders, new_disputes)``.
    """

    ROW_CACHE_PAYOUTS = 64
    ORDER_CACHE_PAYOUTS = 64
    MATERIALIZED_CACHE_PAYOUTS = 8

    def __init__(self, spec: DatasetSpec | None = None, growth: Iterable = ()):
        self.spec = spec or DatasetSpec()
        sp = self.spec
        self._seed = sp.seed
        self._ncur = len(sp.currencies)
        self._t = int(sp.transactions_per_payout)
        self._dup = int(sp.identical_rows_per_payout)
        self._first_ts = int(parse_datetime(sp.first_payout_date))
        self._order_ids = OrderIds(sp.seed)
        self._pending_n = int(sp.pending_transactions)
        self._sets: list = []  # every PendingSet drawn so far, by n
        self._lock = threading.RLock()
        self._metas: list = []
        self._refs: dict = {}
        self._growth: list = []
        self._regular = 0
        self._late = 0
        self._totals: dict = {}
        self._payout_json: dict = {}
        self._rows_json = _LRU(self.ROW_CACHE_PAYOUTS)
        self._orders_json = _LRU(self.ORDER_CACHE_PAYOUTS)
        self._content = _LRU(self.MATERIALIZED_CACHE_PAYOUTS)
        self._pending_draws = _LRU(self.MATERIALIZED_CACHE_PAYOUTS)
        self._amended_orders: dict = {}  # order_id -> (refunds added, serialized order with them)
        self._dispute_bytes: dict = {}  # dispute number -> (Dispute, serialized)
        self._step_log: list = []  # per growth step: what its events did (step_events)
        with self._lock:
            for _ in range(int(sp.payouts)):
                self._add_regular()
            pending = self._new_pending_set() if self._pending_n else None
            events = self._initial_disputes() if int(sp.disputes) else Events()
            self._views = _Views(self._metas, sp.currencies, pending, self._pending_n, events)
        for step in growth:
            if isinstance(step, dict):
                self.grow(**step)
            else:
                self.grow(*step)

    # ----------------------------------------------------------------- payout list

    def _reference(self, key: str) -> str:
        salt = 0
        while True:
            raw = hashlib.sha1(f"{key}:{salt}".encode()).digest()
            ref = base64.b32encode(raw).decode()[:10]
            if ref not in self._refs:
                return ref
            salt += 1

    def _append(self, key, ts, currency, late, row_count) -> PayoutMeta:
        meta = PayoutMeta(len(self._metas), key, self._reference(key), ts, currency, late, row_count)
        self._metas.append(meta)
        self._refs[meta.ref] = meta
        return meta

    def _regular_ts(self, i: int) -> int:
        return self._first_ts + (i // self._ncur) * DAY + PAYOUT_HOUR * HOUR + (i % 3600)

    def _add_regular(self) -> PayoutMeta:
        i = self._regular
        self._regular += 1
        ts = self._regular_ts(i)
        rows = 0 if self.spec.is_empty_payout(i) else self._t
        return self._append(f"{self._seed}:{i}", ts, self.spec.currencies[i % self._ncur], False, rows)

    def _newest_ts(self) -> int:
        if self._metas:
            return max(m.ts for m in self._metas)
        return self._first_ts + PAYOUT_HOUR * HOUR

    def _new_pending_set(self) -> PendingSet:
        n = len(self._sets)
        pset = PendingSet(n, PENDING_POS_BASE + n, f"{self._seed}:pending:{n}", self._newest_ts(),
                          self.spec.currencies[self._regular % self._ncur])
        self._sets.append(pset)
        return pset

    def grow(self, new_payouts: int = 0, late_payouts: int = 0, refunds_on_old_orders: int = 0,
             gone_orders: int = 0, new_disputes: int = 0) -> list:
        """Append ``new_payouts`` payouts after the newest one (continuing the
        date sequence) and ``late_payouts`` payouts dated 1-2 days before the
        newest payout date at the time of the call (18:00 UTC + m s; fresh
        references and transactions). With pending transactions and
        ``new_payouts >= 1``, the first new payout takes the pending rows in and
        a fresh pending set is drawn. ``refunds_on_old_orders``, ``gone_orders``
        and ``new_disputes`` (need ``new_payouts >= 1``) and the moves of open
        disputes are the step's events (events.py). Returns the added payouts (dicts)."""
        new_payouts, late_payouts = int(new_payouts), int(late_payouts)
        if new_payouts < 0 or late_payouts < 0:
            raise ValueError("new_payouts and late_payouts must be >= 0")
        counts = (int(refunds_on_old_orders), int(gone_orders), int(new_disputes))
        if min(counts) < 0:
            raise ValueError("refunds_on_old_orders, gone_orders and new_disputes must be >= 0")
        if any(counts) and new_payouts < 1:
            raise ValueError("refunds_on_old_orders, gone_orders and new_disputes need new_payouts >= 1: their "
                             "rows land in the step's first new payout")
        with self._lock:
            step = len(self._growth)
            events = self._views.events
            plan = None
            if any(counts):  # drawn before anything changes: too few orders leave the dataset as it was
                plan = self._plan_step(step, events, self.spec.currencies[self._regular % self._ncur],
                                       self._regular_ts(self._regular) - HOUR, *counts)
            newest = self._newest_ts()
            newest_day = newest - newest % DAY
            added = [self._add_regular() for _ in range(new_payouts)]
            new_metas = list(added)
            pending = self._views.pending
            if pending is not None and new_payouts:
                first = added[0]  # the first regular payout of this step
                assert first.currency == pending.currency
                first.pending, pending.payout = pending, first
                first.row_count += self._pending_n
            for _ in range(late_payouts):
                m = self._late
                self._late += 1
                ts = newest_day - (1 + m % 2) * DAY + LATE_PAYOUT_HOUR * HOUR + (m % 3600)
                added.append(self._append(f"{self._seed}:late:{m}", ts,
                                          self.spec.currencies[m % self._ncur], True, self._t))
            if pending is not None and new_payouts:
                pending = self._new_pending_set()
            log = {"refunded_orders": [], "gone_orders": [], "opened_disputes": [], "moved_disputes": []}
            if new_metas:
                events, log = self._apply_step(step, events, new_metas, plan)
            self._step_log.append(log)
            self._growth.append((new_payouts, late_payouts) + counts)
            self._views = _Views(self._metas, self.spec.currencies, pending, self._pending_n, events)
        return [self._payout_dict(m) for m in added]

    @property
    def growth(self) -> list:
        """The growth steps applied so far: ``(new_payouts, late_payouts)``, longer (``STEP_KINDS`` order, up
        to the last count that is not 0) when a step had events; ``Dataset(spec, growth)`` replays them."""
        out = []
        for step in self._growth:
            end = max([2] + [i + 1 for i, c in enumerate(step) if c])
            out.append(tuple(step[:end]))
        return out

    @property
    def payout_count(self) -> int:
        return len(self._views.metas)

    def transaction_count(self) -> int:
        """Rows of the unfiltered /transactions list: every payout's, then the pending ones."""
        return self._views.total_rows

    # ----------------------------------------------------------------- generation

    def _own_row_count(self, meta: PayoutMeta) -> int:
        """Rows of the payout's own plan (those of a pending set it took in and extra rows not counted)."""
        return meta.row_count - (self._pending_n if meta.pending is not None else 0) - len(meta.extra)

    def _payout_totals(self, meta: PayoutMeta) -> dict:
        tot = self._totals.get(meta.pos)
        if tot is None:
            rows, _orders = plan_rows(random.Random(meta.key), self._own_row_count(meta), self._dup)
            if meta.pending is not None:
                rows = rows + self._pending_draw(meta.pending)[0]
            if meta.extra:
                rows = rows + list(meta.extra)
            tot = totals_of(rows)
            if self.spec.is_unreconciled_payout(meta.pos):  # the first positions are the initial payouts
                tot["settlement_amount"] += UNRECONCILED_OFFSET
            self._totals[meta.pos] = tot
        return tot

    def unreconciled_payment_references(self) -> list:
        """The payouts whose settlement_amount is UNRECONCILED_OFFSET (100) above the signed sum of their
        transactions, oldest first (the first ``unreconciled_payouts`` payouts generated)."""
        return [m.ref for m in self._views.metas[:int(self.spec.unreconciled_payouts)]]

    def _payout_dict(self, meta: PayoutMeta) -> dict:
        return {
            "totals": dict(self._payout_totals(meta)),
            "payment_reference": meta.ref,
            "payout_date": meta.date,
            "currency_code": meta.currency,
            "currency_code_of_registration_country": REGISTRATION_CURRENCY,
            "merchant_settlement_type": MERCHANT_SETTLEMENT_TYPE,
            "merchant_id": self.spec.merchant_id,
            "transactions": f"{SETTLEMENTS_LINK_BASE}/transactions?payment_reference={meta.ref}",
        }

    def payout_json(self, meta: PayoutMeta) -> bytes:
        b = self._payout_json.get(meta.pos)
        if b is None:
            b = self._payout_json[meta.pos] = _dumps(self._payout_dict(meta))
        return b

    def _pending_draw(self, pset: PendingSet) -> tuple:
        """A pending set's (row plans, order plans, order details), from its own generator (LRU cached)."""
        draw = self._pending_draws.get(pset.n)
        if draw is None:
            rng = random.Random(pset.key)
            plans, order_plans = plan_rows(rng, self._pending_n, 0)
            details = draw_order_details(rng, order_plans, self._order_ids, pset.pos, pset.after_ts + DAY,
                                         pset.currency, sale_after=pset.after_ts)
            draw = (plans, order_plans, details)
            self._pending_draws.put(pset.n, draw)
        return draw

    @staticmethod
    def _build_rows(rows: list, plans: list, details: list, context: PayoutContext):
        built: dict = {}  # a duplicated row is one plan object, hence one dict served twice
        for plan in plans:
            row = built.get(id(plan))
            if row is None:
                row = built[id(plan)] = transaction_row(plan, details[plan.order_index], context)
            rows.append(row)

    def _materialize(self, src) -> PayoutContent:
        """A payout's (or a pending set's) content; ``order_plans``/``order_details`` are its own orders (a
        payout's rows end with those of the pending set it took in, whose orders stay the set's)."""
        cached = self._content.get(src.pos)
        if cached is not None:
            return cached
        rows: list = []
        if isinstance(src, PendingSet):
            plans, order_plans, details = self._pending_draw(src)
            self._build_rows(rows, plans, details, PayoutContext(None, None, src.currency,
                                                                 TO_EUR.get(src.currency, 1.0)))
        else:
            meta = src
            # One generator per payout: the row plan first, then the orders' details continue its draws.
            rng = random.Random(meta.key)
            plans, order_plans = plan_rows(rng, self._own_row_count(meta), self._dup)
            details = draw_order_details(rng, order_plans, self._order_ids, meta.pos, meta.ts, meta.currency)
            context = PayoutContext(meta.ref, f"{SETTLEMENTS_LINK_BASE}/payouts/{meta.ref}", meta.currency,
                                    TO_EUR.get(meta.currency, 1.0))
            self._build_rows(rows, plans, details, context)
            if meta.pending is not None:
                pending_plans, _pending_orders, pending_details = self._pending_draw(meta.pending)
                self._build_rows(rows, pending_plans, pending_details, context)
            rows.extend(self._extra_row(extra, context) for extra in meta.extra)
        content = PayoutContent(rows, order_plans, details)
        self._content.put(src.pos, content)
        return content

    def _extra_row(self, extra: ExtraRow, context: PayoutContext) -> dict:
        """The Transaction of an event's row: that of its order (whose payout came before) in this payout."""
        detail = self._materialize(self._metas[extra.order_pos]).order_details[extra.order_index]
        if extra.refund is not None:
            detail = replace(detail, refunds=(extra.refund,))
        plan = RowPlan(extra.type, extra.detailed_type, extra.amount, extra.order_index, extra.sub_index)
        row = transaction_row(plan, detail, context)
        if extra.reversal_reference is not None:  # a dispute's row names the disputed capture and the dispute
            capture = detail.captures[extra.capture_index]
            row["capture_id"], row["capture_date"] = capture.capture_id, format_datetime(capture.ts)
            row["reversal_reference"] = extra.reversal_reference
        return row

    def _rows_entry(self, meta) -> SerializedRows:
        """A payout's (or a pending set's) serialized rows (LRU cached)."""
        ent = self._rows_json.get(meta.pos)
        if ent is None:
            content = self._materialize(meta)
            ent = SerializedRows([_dumps(r) for r in content.rows], content.row_order_ids)
            self._rows_json.put(meta.pos, ent)
        return ent

    # ----------------------------------------------------------------- orders

    def _purged(self, order_id: str, ratio: float) -> bool:
        h = int.from_bytes(hashlib.sha1(f"{self._seed}:purge:{order_id}".encode()).digest()[:8], "big")
        return h / 2.0 ** 64 < ratio

    def is_purged(self, order_id: str) -> bool:
        """Whether the order answers 404 (``purged_order_ratio``); orders of pending sets never do."""
        ratio = float(self.spec.purged_order_ratio)
        if ratio <= 0:
            return False
        located = self._order_ids.locate(order_id)
        if located is not None and located[0] >= PENDING_POS_BASE:
            return False
        return self._purged(order_id, ratio)

    def _order_source(self, order_id: str):
        """The PayoutMeta or PendingSet an order id says it belongs to (or None); the order itself may
        still not exist."""
        located = self._order_ids.locate(order_id)
        if located is None:
            return None
        pos = located[0]
        views = self._views
        if pos >= PENDING_POS_BASE:
            n = pos - PENDING_POS_BASE
            if views.pending is None or n > views.pending.n:
                return None
            return self._sets[n]
        if pos >= len(views.metas):
            return None
        return views.metas[pos]

    def _order_json(self, src, plan: OrderPlan, detail: OrderDetail, k: int) -> bytes:
        rng = random.Random(f"{src.key}:order:{k}")
        return _dumps(merchant_order(plan, detail, rng, src.currency))

    def _orders_entry(self, src) -> dict:
        """order_id -> serialized order, for the payout's (or pending set's) orders that are not purged
        (LRU cached)."""
        ent = self._orders_json.get(src.pos)
        if ent is None:
            content = self._materialize(src)
            ratio = 0.0 if isinstance(src, PendingSet) else float(self.spec.purged_order_ratio)
            ent = {}
            for k, (plan, detail) in enumerate(zip(content.order_plans, content.order_details)):
                if ratio <= 0 or not self._purged(detail.order_id, ratio):
                    ent[detail.order_id] = self._order_json(src, plan, detail, k)
            self._orders_json.put(src.pos, ent)
        return ent

    def _order_sources(self) -> Iterator:
        """Payouts in payout_date ascending order, each followed by the pending set it took in, then the
        current pending set: the order of the unfiltered /transactions list."""
        views = self._views
        for meta in views.asc:
            yield meta
            if meta.pending is not None:
                yield meta.pending
        if views.pending is not None:
            yield views.pending

    def _amended_order_json(self, src, order_id: str, added: tuple) -> bytes:
        """The order with the refunds growth added to it (events.py): the same draws, more refunds."""
        cached = self._amended_orders.get(order_id)
        if cached is not None and cached[0] is added:
            return cached[1]
        k = self._order_ids.locate(order_id)[1]
        content = self._materialize(src)
        plan, detail = content.order_plans[k], content.order_details[k]
        plan = OrderPlan(plan.authorized, plan.captures, plan.refunds + [amount for amount, _ in added],
                         plan.released)
        detail = replace(detail, refunds=detail.refunds + tuple(event for _, event in added))
        b = self._order_json(src, plan, detail, k)
        self._amended_orders[order_id] = (added, b)
        return b

    def order_json(self, order_id: str):
        """Serialized MerchantOrderDto, or None (unknown, purged or gone)."""
        events = self._views.events
        if order_id in events.gone:
            return None
        src = self._order_source(order_id)
        if src is None:
            return None
        b = self._orders_entry(src).get(order_id)
        added = events.refunds.get(order_id)
        if b is not None and added:
            b = self._amended_order_json(src, order_id, added)
        return b

    def order(self, order_id: str):
        """The order exactly as served (refunds growth added included), or None when unknown, purged or gone
        (404)."""
        b = self.order_json(order_id)
        return None if b is None else json.loads(b)

    def order_ids(self, include_purged: bool = True) -> Iterator[str]:
        """Every distinct order id, payouts in payout_date ascending order (pending ones last); without
        ``include_purged``, only those served (neither purged nor gone)."""
        gone = self._views.events.gone
        for src in self._order_sources():
            for detail in self._materialize(src).order_details:
                if include_purged or not (self.is_purged(detail.order_id) or detail.order_id in gone):
                    yield detail.order_id

    def orders(self) -> Iterator[dict]:
        """Every served order (neither purged nor gone) as it is now (refunds growth added included),
        payouts in payout_date ascending order (pending ones last)."""
        events = self._views.events
        for src in self._order_sources():
            for order_id, b in self._orders_entry(src).items():
                if order_id in events.gone:
                    continue
                added = events.refunds.get(order_id)
                yield json.loads(self._amended_order_json(src, order_id, added) if added else b)

    # ----------------------------------------------------------------- payouts

    def _window(self, start=None, end=None, currency=None):
        """Payout metas matching the filters, in served order (payout_date desc)."""
        v = self._views
        if currency is None:
            lst, keys = v.desc, v.desc_neg_ts
        else:
            lst = v.desc_by_cur.get(currency, ())
            keys = v.desc_neg_ts_by_cur.get(currency, [])
        lo = 0 if end is None else bisect.bisect_left(keys, -end)
        hi = len(lst) if start is None else bisect.bisect_right(keys, -start)
        return lst[lo:hi] if lo < hi else ()

    @staticmethod
    def _norm_window(start, end, currency):
        s = None if start is None else parse_datetime(start)
        e = None if end is None else parse_datetime(end)
        return s, e, (None if currency is None else str(currency).upper())

    def payouts(self, start=None, end=None, currency=None) -> list:
        """Payout dicts exactly as served, in served order (payout_date descending,
        ties by payment_reference), optionally filtered like the endpoint."""
        s, e, c = self._norm_window(start, end, currency)
        return [json.loads(self.payout_json(m)) for m in self._window(s, e, c)]

    def payout(self, payment_reference: str):
        meta = self._refs.get(payment_reference)
        return None if meta is None else json.loads(self.payout_json(meta))

    def payout_json_for(self, payment_reference: str):
        """Serialized payout, or None when the reference is unknown."""
        meta = self._refs.get(payment_reference)
        return None if meta is None else self.payout_json(meta)

    def payouts_page(self, start, end, currency, offset, size):
        """-> (list of serialized payouts, total). Dates are POSIX seconds."""
        win = self._window(start, end, currency)
        return [self.payout_json(m) for m in win[offset:offset + size]], len(win)

    def summary(self, start, end, currency=None) -> list:
        """PayoutSummary list exactly as served by /payouts/summary."""
        s, e, c = self._norm_window(start, end, currency)
        by_cur: dict = {}
        for m in self._window(s, e, c):
            by_cur.setdefault(m.currency, []).append(m)
        out = []
        for cur in sorted(by_cur):
            sums = dict.fromkeys(TOTALS_KEYS, 0)
            for m in by_cur[cur]:
                for k2, val in self._payout_totals(m).items():
                    sums[k2] += val
            out.append({
                "summary_total_fee_correction_amount": sums["fee_correction_amount"],
                "summary_payout_date_start": format_datetime(s),
                "summary_total_release_amount": sums["release_amount"],
                "summary_settlement_currency": cur,
                "summary_payout_date_end": format_datetime(e),
                "summary_total_tax_amount": sums["tax_amount"],
                "summary_total_settlement_amount": sums["settlement_amount"],
                "summary_total_holdback_amount": sums["holdback_amount"],
                "summary_total_reversal_amount": sums["reversal_amount"],
                "summary_total_return_amount": sums["return_amount"],
                "summary_total_fee_amount": sums["fee_amount"],
                "summary_total_commission_amount": sums["commission_amount"],
                "summary_total_sale_amount": sums["sale_amount"],
                "summary_total_repay_amount": sums["repay_amount"],
            })
        return out

    # ----------------------------------------------------------------- transactions

    def transactions_page(self, payment_reference=None, order_id=None, offset=0, size=20):
        """-> (list of serialized rows, total) for /transactions."""
        views = self._views
        if payment_reference is None and order_id is None:
            metas, total = views.asc, views.total_rows
            out = []
            if offset >= total:
                return out, total
            if offset < views.row_count:
                i = bisect.bisect_right(views.asc_row_starts, offset) - 1
                j = offset - views.asc_row_starts[i]
                while len(out) < size and i < len(metas):
                    if metas[i].row_count:
                        rows = self._rows_entry(metas[i]).rows
                        out.extend(rows[j:j + size - len(out)])
                    i, j = i + 1, 0
            if len(out) < size and views.pending is not None:  # the pending rows come last
                j = max(0, offset - views.row_count)
                out.extend(self._rows_entry(views.pending).rows[j:j + size - len(out)])
            return out, total
        if order_id is not None:
            meta = self._order_source(order_id)
            if isinstance(meta, PendingSet):
                if meta is views.pending:  # still pending: no payment_reference matches it
                    meta = None if payment_reference is not None else meta
                else:
                    meta = meta.payout
            # its own payout (or pending set), then the payouts holding rows of its events (events.py)
            holders = [] if meta is None else [meta]
            holders += [m for m in views.events.extra_payouts.get(order_id, ()) if m is not meta]
            if payment_reference is not None:
                holders = [m for m in holders if m.ref == payment_reference]
            match = []
            for holder in holders:
                serialized = self._rows_entry(holder)
                match.extend(r for r, o in zip(serialized.rows, serialized.order_ids) if o == order_id)
            return match[offset:offset + size], len(match)
        meta = self._refs.get(payment_reference)
        if meta is None:
            return [], 0
        rows = self._rows_entry(meta).rows
        return rows[offset:offset + size], len(rows)

    def transactions_for(self, payment_reference: str) -> list:
        """All rows of one payout, exactly as served, in served order."""
        meta = self._refs.get(payment_reference)
        if meta is None:
            return []
        return [dict(r) for r in self._materialize(meta).rows]

    def transactions(self) -> Iterator[dict]:
        """Every row, exactly as served by /transactions without filters: payouts
        in payout_date ascending order, then generated order; the pending rows last."""
        views = self._views
        for meta in views.asc:
            for r in self._materialize(meta).rows:
                yield dict(r)
        if views.pending is not None:
            for r in self._materialize(views.pending).rows:
                yield dict(r)

    def pending_transactions(self) -> list:
        """The current pending rows (in no payout yet; no ``payment_reference``, no ``payout``), exactly as
        served at the end of the unfiltered /transactions list."""
        pending = self._views.pending
        return [] if pending is None else [dict(r) for r in self._materialize(pending).rows]

    def stats(self) -> dict:
        return {"payouts": self.payout_count, "transactions": self.transaction_count(),
                "growth": self.growth}
