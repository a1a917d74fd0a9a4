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
  rows at all, every total 0.
* One order per distinct ``order_id``; an order belongs to exactly one payout.

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
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from .catalogue import MERCHANT_SETTLEMENT_TYPE, REGISTRATION_CURRENCY, SETTLEMENTS_LINK_BASE, TO_EUR
from .dates import DAY, HOUR, format_datetime, parse_datetime
from .orders import OrderDetail, OrderIds, draw_order_details, merchant_order
from .spec import DatasetSpec
from .transactions import TOTALS_BY_TYPE, TOTALS_KEYS, OrderPlan, PayoutContext, plan_rows, totals_of, \
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
    row_count: int  #: its number of transactions
    date: str = field(init=False)  #: payout_date as served

    def __post_init__(self):
        self.date = format_datetime(self.ts)


class _Views:
    """Immutable sorted views over the payout list (swapped atomically on grow)."""

    __slots__ = ("metas", "desc", "desc_neg_ts", "desc_by_cur", "desc_neg_ts_by_cur", "asc", "asc_row_starts",
                 "row_count")

    def __init__(self, metas, currencies):
        self.metas = tuple(metas)
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
        self.row_count = start


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


class Dataset:
    """The emulator's data. Thread safe; ``grow`` may run while others read.

    Read API (expected data for tests; no HTTP involved):
    ``payouts()``, ``payout(ref)``, ``transactions()``, ``transactions_for(ref)``,
    ``orders()``, ``order(order_id)``, ``order_ids()``, ``is_purged(order_id)``,
    ``summary(start, end, currency=None)``, ``grow(new_payouts, late_payouts)``.
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
        with self._lock:
            for _ in range(int(sp.payouts)):
                self._add_regular()
            self._views = _Views(self._metas, sp.currencies)
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

    def _add_regular(self) -> PayoutMeta:
        i = self._regular
        self._regular += 1
        ts = self._first_ts + (i // self._ncur) * DAY + PAYOUT_HOUR * HOUR + (i % 3600)
        rows = 0 if self.spec.is_empty_payout(i) else self._t
        return self._append(f"{self._seed}:{i}", ts, self.spec.currencies[i % self._ncur], False, rows)

    def grow(self, new_payouts: int = 0, late_payouts: int = 0) -> list:
        """Append ``new_payouts`` payouts after the newest one (continuing the
        date sequence) and ``late_payouts`` payouts dated 1-2 days before the
        newest payout date at the time of the call (18:00 UTC + m s; fresh
        references and transactions). Returns the added payouts (dicts)."""
        new_payouts, late_payouts = int(new_payouts), int(late_payouts)
        if new_payouts < 0 or late_payouts < 0:
            raise ValueError("new_payouts and late_payouts must be >= 0")
        with self._lock:
            if self._metas:
                newest = max(m.ts for m in self._metas)
            else:
                newest = self._first_ts + PAYOUT_HOUR * HOUR
            newest_day = newest - newest % DAY
            added = [self._add_regular() for _ in range(new_payouts)]
            for _ in range(late_payouts):
                m = self._late
                self._late += 1
                ts = newest_day - (1 + m % 2) * DAY + LATE_PAYOUT_HOUR * HOUR + (m % 3600)
                added.append(self._append(f"{self._seed}:late:{m}", ts,
                                          self.spec.currencies[m % self._ncur], True, self._t))
            self._growth.append((new_payouts, late_payouts))
            self._views = _Views(self._metas, self.spec.currencies)
        return [self._payout_dict(m) for m in added]

    @property
    def growth(self) -> list:
        """The growth steps applied so far, as ``(new_payouts, late_payouts)``."""
        return list(self._growth)

    @property
    def payout_count(self) -> int:
        return len(self._views.metas)

    def transaction_count(self) -> int:
        return self._views.row_count

    # ----------------------------------------------------------------- generation

    def _payout_totals(self, meta: PayoutMeta) -> dict:
        tot = self._totals.get(meta.pos)
        if tot is None:
            rows, _orders = plan_rows(random.Random(meta.key), meta.row_count, self._dup)
            tot = self._totals[meta.pos] = totals_of(rows)
        return tot

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

    def _materialize(self, meta: PayoutMeta) -> PayoutContent:
        cached = self._content.get(meta.pos)
        if cached is not None:
            return cached
        # One generator per payout: the row plan first, then the orders' details continue its draws.
        rng = random.Random(meta.key)
        plans, order_plans = plan_rows(rng, meta.row_count, self._dup)
        details = draw_order_details(rng, order_plans, self._order_ids, meta.pos, meta.ts, meta.currency)
        context = PayoutContext(meta.ref, f"{SETTLEMENTS_LINK_BASE}/payouts/{meta.ref}", meta.currency,
                                TO_EUR.get(meta.currency, 1.0))
        built: dict = {}  # a duplicated row is one plan object, hence one dict served twice
        rows = []
        for plan in plans:
            row = built.get(id(plan))
            if row is None:
                row = built[id(plan)] = transaction_row(plan, details[plan.order_index], context)
            rows.append(row)
        content = PayoutContent(rows, order_plans, details)
        self._content.put(meta.pos, content)
        return content

    def _rows_entry(self, meta: PayoutMeta) -> SerializedRows:
        """A payout's serialized rows (LRU cached)."""
        ent = self._rows_json.get(meta.pos)
        if ent is None:
            content = self._materialize(meta)
            ent = SerializedRows([_dumps(r) for r in content.rows], content.row_order_ids)
            self._rows_json.put(meta.pos, ent)
        return ent

    # ----------------------------------------------------------------- orders

    def is_purged(self, order_id: str) -> bool:
        ratio = float(self.spec.purged_order_ratio)
        if ratio <= 0:
            return False
        h = int.from_bytes(hashlib.sha1(f"{self._seed}:purge:{order_id}".encode()).digest()[:8], "big")
        return h / 2.0 ** 64 < ratio

    def _payout_of_order(self, order_id: str) -> PayoutMeta | None:
        """The payout an order id says it belongs to (or None); the order itself may still not exist."""
        located = self._order_ids.locate(order_id)
        if located is None or located[0] >= len(self._views.metas):
            return None
        return self._views.metas[located[0]]

    def _order_json(self, meta: PayoutMeta, plan: OrderPlan, detail: OrderDetail, k: int) -> bytes:
        rng = random.Random(f"{meta.key}:order:{k}")
        return _dumps(merchant_order(plan, detail, rng, meta.currency))

    def _orders_entry(self, meta: PayoutMeta) -> dict:
        """order_id -> serialized order, for the payout's orders that are not purged (LRU cached)."""
        ent = self._orders_json.get(meta.pos)
        if ent is None:
            content = self._materialize(meta)
            ent = {}
            for k, (plan, detail) in enumerate(zip(content.order_plans, content.order_details)):
                if not self.is_purged(detail.order_id):
                    ent[detail.order_id] = self._order_json(meta, plan, detail, k)
            self._orders_json.put(meta.pos, ent)
        return ent

    def order_json(self, order_id: str):
        """Serialized MerchantOrderDto, or None (unknown or purged)."""
        meta = self._payout_of_order(order_id)
        if meta is None:
            return None
        return self._orders_entry(meta).get(order_id)

    def order(self, order_id: str):
        """The order exactly as served, or None when unknown or purged (404)."""
        b = self.order_json(order_id)
        return None if b is None else json.loads(b)

    def order_ids(self, include_purged: bool = True) -> Iterator[str]:
        """Every distinct order id, payouts in payout_date ascending order."""
        for meta in self._views.asc:
            for detail in self._materialize(meta).order_details:
                if include_purged or not self.is_purged(detail.order_id):
                    yield detail.order_id

    def orders(self) -> Iterator[dict]:
        """Every served (non purged) order, payouts in payout_date ascending order."""
        for meta in self._views.asc:
            for b in self._orders_entry(meta).values():
                yield json.loads(b)

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
        if payment_reference is None and order_id is None:
            views = self._views
            metas, total = views.asc, views.row_count
            out = []
            if offset >= total:
                return out, total
            i = bisect.bisect_right(views.asc_row_starts, offset) - 1
            j = offset - views.asc_row_starts[i]
            while len(out) < size and i < len(metas):
                if metas[i].row_count:
                    rows = self._rows_entry(metas[i]).rows
                    out.extend(rows[j:j + size - len(out)])
                i, j = i + 1, 0
            return out, total
        if order_id is not None:
            meta = self._payout_of_order(order_id)
            if meta is None:
                return [], 0
            if payment_reference is not None and meta.ref != payment_reference:
                return [], 0
            serialized = self._rows_entry(meta)
            match = [r for r, o in zip(serialized.rows, serialized.order_ids) if o == order_id]
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
        in payout_date ascending order, then generated order."""
        for meta in self._views.asc:
            for r in self._materialize(meta).rows:
                yield dict(r)

    def stats(self) -> dict:
        return {"payouts": self.payout_count, "transactions": self.transaction_count(),
                "growth": self.growth}
