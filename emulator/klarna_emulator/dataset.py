"""Deterministic, seeded, lazily generated Klarna settlement data.

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
  payout (a duplicated fee line; they are real rows and count in the totals).
* One order per distinct ``order_id``; an order belongs to exactly one payout.

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

Memory
------
Payout metadata (reference, date, currency, totals) is kept for every payout;
transaction rows are never materialised for the whole dataset: a payout's rows
are generated when asked for and the serialized rows of the last 64 payouts are
kept in an LRU cache. Totals are computed from the same generator (its cheap
"skeleton" phase, which decides every row's type and amount).
"""
from __future__ import annotations

import base64
import bisect
import calendar
import datetime as _dt
import hashlib
import json
import math
import random
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Iterator

__all__ = [
    "DatasetSpec",
    "Dataset",
    "parse_datetime",
    "format_datetime",
    "SETTLEMENTS_LINK_BASE",
    "TOTALS_BY_TYPE",
]

#: Base of the ``payout`` / ``transactions`` links inside the data. It is fixed
#: (like the real API, which always links to its own host) so the data does not
#: depend on the emulator's random port. Pagination ``next``/``prev`` links do
#: point at the emulator.
SETTLEMENTS_LINK_BASE = "https://api.klarna.com/settlements/v1"
REGISTRATION_CURRENCY = "EUR"
MERCHANT_SETTLEMENT_TYPE = "NET"
FEE_VAT_RATE = 1900  # German merchant: 19.00 % VAT on Klarna fees

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
_POSITIVE = ("sale_amount", "release_amount", "credit_amount", "fee_refund_amount", "fee_correction_amount")
_NEGATIVE = ("fee_amount", "return_amount", "reversal_amount", "commission_amount", "tax_amount",
             "holdback_amount", "charge_amount")
_TOTALS_KEYS = (  # key order as in the OpenAPI Totals schema
    "commission_amount", "repay_amount", "sale_amount", "holdback_amount", "tax_amount",
    "settlement_amount", "fee_correction_amount", "reversal_amount", "release_amount",
    "return_amount", "fee_amount", "charge_amount", "credit_amount", "fee_refund_amount",
    "tax_refund_amount", "deposit_amount", "opening_debt_balance_amount",
    "closing_debt_balance_amount",
)
_TYPE_TO_TOTAL = {t: k for k, ts in TOTALS_BY_TYPE.items() for t in ts}

_MAX_ORDERS_PER_PAYOUT = 1 << 16
_MAX_PAYOUTS = 1 << 32
_MASK48 = (1 << 48) - 1
_MIX = 0x9E3779B97F4B  # odd 48-bit multiplier (bijective mixing of order ids)
_MIX_INV = pow(_MIX, -1, 1 << 48)


# --------------------------------------------------------------------------- dates

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_datetime(value) -> float:
    """Klarna query-date semantics -> POSIX seconds (UTC).

    ``2024-01-23`` means ``2024-01-23T00:00:00Z``; ``Z`` and numeric offsets such
    as ``+00:00`` are accepted (converted to UTC); a value without an offset is
    taken as UTC. Raises ``ValueError`` for anything unparseable. Also accepts
    ``datetime``/``date`` objects and numbers (already POSIX seconds).
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, _dt.datetime):
        d = value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
        return d.timestamp()
    if isinstance(value, _dt.date):
        return float(calendar.timegm(value.timetuple()))
    if not isinstance(value, str):
        raise ValueError(f"not a date-time: {value!r}")
    s = value.strip()
    if not s or " " in s:
        raise ValueError(f"not an ISO 8601 date-time: {value!r}")
    if _DATE_ONLY.match(s):
        d = _dt.datetime.strptime(s, "%Y-%m-%d").replace(tzinfo=_dt.timezone.utc)
        return d.timestamp()
    if "T" not in s and "t" not in s:
        raise ValueError(f"not an ISO 8601 date-time: {value!r}")
    if s[-1] in "zZ":
        s = s[:-1] + "+00:00"
    try:
        d = _dt.datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date-time: {value!r}") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return d.timestamp()


def format_datetime(ts: float) -> str:
    """POSIX seconds -> ``YYYY-MM-DDTHH:MM:SSZ`` (seconds truncated)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.floor(ts)))


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class DatasetSpec:
    seed: int = 1
    payouts: int = 50
    transactions_per_payout: int = 40
    currencies: tuple = ("EUR", "SEK", "USD")
    first_payout_date: str = "2024-01-01T00:00:00Z"
    merchant_id: str = "K123456"
    identical_rows_per_payout: int = 2
    purged_order_ratio: float = 0.0

    def __post_init__(self):
        cur = self.currencies
        if isinstance(cur, str):
            cur = tuple(c.strip() for c in cur.split(",") if c.strip())
        cur = tuple(str(c).upper() for c in cur)
        object.__setattr__(self, "currencies", cur)
        if not cur or any(not re.fullmatch(r"[A-Z]{3}", c) for c in cur) or len(set(cur)) != len(cur):
            raise ValueError(f"currencies must be distinct ISO 4217 codes, got {cur!r}")
        if not (0 <= int(self.payouts) < _MAX_PAYOUTS):
            raise ValueError("payouts must be >= 0")
        if not (0 <= int(self.transactions_per_payout) < _MAX_ORDERS_PER_PAYOUT):
            raise ValueError("transactions_per_payout must be in [0, 65535]")
        if int(self.identical_rows_per_payout) < 0:
            raise ValueError("identical_rows_per_payout must be >= 0")
        if not (0.0 <= float(self.purged_order_ratio) <= 1.0):
            raise ValueError("purged_order_ratio must be in [0, 1]")
        parse_datetime(self.first_payout_date)  # validates

    def to_cli_args(self) -> list:
        """The ``python -m klarna_emulator`` flags describing this spec."""
        return [
            "--seed", str(self.seed),
            "--payouts", str(self.payouts),
            "--transactions-per-payout", str(self.transactions_per_payout),
            "--currencies", ",".join(self.currencies),
            "--first-payout-date", self.first_payout_date,
            "--merchant-id", self.merchant_id,
            "--identical-rows-per-payout", str(self.identical_rows_per_payout),
            "--purged-order-ratio", repr(float(self.purged_order_ratio)),
        ]


# --------------------------------------------------------------------------- static tables

_COUNTRIES = {
    "EUR": ("DE", "DE", "DE", "NL", "AT", "FI", "FR"),
    "SEK": ("SE",), "USD": ("US",), "GBP": ("GB",), "NOK": ("NO",), "DKK": ("DK",),
    "CHF": ("CH",), "AUD": ("AU",), "PLN": ("PL",), "CAD": ("CA",), "NZD": ("NZ",),
}
_EU_NEIGHBOURS = ("DE", "NL", "AT", "BE", "FR", "DK", "PL")
_LOCALES = {"DE": "de-DE", "NL": "nl-NL", "AT": "de-AT", "FI": "fi-FI", "FR": "fr-FR", "SE": "sv-SE",
            "US": "en-US", "GB": "en-GB", "NO": "nb-NO", "DK": "da-DK", "CH": "de-CH", "AU": "en-AU",
            "PL": "pl-PL", "CA": "en-CA", "NZ": "en-NZ", "BE": "nl-BE"}
_GOODS_VAT = {"DE": 1900, "NL": 2100, "AT": 2000, "FI": 2400, "FR": 2000, "SE": 2500, "US": 0, "GB": 2000,
              "NO": 2500, "DK": 2500, "CH": 810, "AU": 1000, "PL": 2300, "CA": 500, "NZ": 1500, "BE": 2100}
_TO_EUR = {"EUR": 1.0, "SEK": 0.087, "USD": 0.92, "GBP": 1.17, "NOK": 0.086, "DKK": 0.134, "CHF": 1.04,
           "AUD": 0.61, "PLN": 0.23, "CAD": 0.68, "NZD": 0.56}
# (transaction value, order-management TYPE, description, installment choices)
_PAYMENT_METHODS = (
    ("invoice", "INVOICE", "Pay later in 30 days", ()),
    ("invoice", "INVOICE", "Pay later in 30 days", ()),
    ("invoice", "INVOICE", "Pay later in 30 days", ()),
    ("fixed_amount", "FIXED_AMOUNT", "Slice it (Fixed Payments)", (6, 12, 24)),
    ("pay_later_in_parts", "PAY_LATER_IN_PARTS", "Pay in 3 interest-free instalments", (3,)),
    ("pay_later_in_parts", "PAY_LATER_IN_PARTS", "Pay in 3 interest-free instalments", (3,)),
    ("direct_debit", "DIRECT_DEBIT", "Direct debit", ()),
    ("card", "CARD", "Pay now with card", ()),
    ("card", "CARD", "Pay now with card", ()),
    ("pay_in_x", "PAY_IN_X", "Pay in 4", (4,)),
)
_GIVEN = ("Anna", "Erik", "Maria", "Lars", "Sofia", "Jonas", "Emma", "Lukas", "Klara", "Noah", "Olivia",
          "Liam", "Hanna", "Felix", "Julia", "Oskar", "Mia", "Leon", "Ella", "Paul")
_FAMILY = ("Andersson", "Schmidt", "Johansson", "Mueller", "de Vries", "Virtanen", "Martin", "Smith",
           "Joyce", "Nilsson", "Weber", "Jansen", "Korhonen", "Bernard", "Johnson", "Larsen", "Berg")
_STREETS = ("Main Street", "Hauptstrasse", "Storgatan", "Kerkstraat", "Mannerheimintie", "Rue de Rivoli",
            "Sveavagen", "Bahnhofstrasse", "Oak Avenue", "Drottninggatan", "Lindenallee")
_CITIES = {"DE": ("Berlin", "Hamburg", "Munich", "Cologne"), "NL": ("Amsterdam", "Utrecht", "Rotterdam"),
           "AT": ("Vienna", "Graz"), "FI": ("Helsinki", "Espoo"), "FR": ("Paris", "Lyon"),
           "SE": ("Stockholm", "Gothenburg", "Malmo", "Uppsala"), "US": ("Knoxville", "Columbus", "Austin"),
           "GB": ("London", "Leeds"), "NO": ("Oslo", "Bergen"), "DK": ("Copenhagen", "Aarhus"),
           "BE": ("Brussels", "Ghent"), "PL": ("Warsaw", "Krakow")}
_DIAL = {"DE": "49", "NL": "31", "AT": "43", "FI": "358", "FR": "33", "SE": "46", "US": "1", "GB": "44",
         "NO": "47", "DK": "45", "CH": "41", "AU": "61", "PL": "48", "CA": "1", "NZ": "64", "BE": "32"}
_US_REGIONS = ("TN", "OH", "TX", "CA", "NY", "WA")
_PRODUCTS = (("Wireless Headphones", "headphones"), ("Running Shoes", "shoes"), ("Denim Jacket", "jacket"),
             ("Coffee Grinder", "grinder"), ("Desk Lamp", "lamp"), ("Yoga Mat", "yoga-mat"),
             ("Backpack", "backpack"), ("Sunglasses", "sunglasses"), ("Water Bottle", "bottle"),
             ("Smart Watch", "watch"), ("Wool Sweater", "sweater"), ("Board Game", "board-game"))
_CARRIERS = (("DHL Paket", "Home"), ("PostNord", "PickUpPoint"), ("UPS Standard", "Home"),
             ("DPD Classic", "Home"), ("Bring", "PickUpPoint"), ("USPS Priority", "Postal"))
_DISPUTE_CATEGORIES = ("goods_not_received", "faulty_goods", "return", "unauthorized_purchase",
                       "incorrect_invoice")

# misc (non sale) transaction kinds: (type, weight, detailed types)
_MISC = (
    ("RETURN", 30, ("PURCHASE_RETURN",)),
    ("FEE_REFUND", 7, ("PURCHASE_FEE_PERCENTAGE_REFUND", "FEE_REFUND", "DISPUTE_FEE_REFUND")),
    ("REVERSAL", 6, ("REVERSAL",)),
    ("REVERSAL_MERCHANT_PROTECTION", 2, ("REVERSAL",)),
    ("COMMISSION", 7, ("PURCHASE_COMMISSION_PERCENTAGE", "COMMISSION")),
    ("TAX", 5, (None,)),
    ("HOLDBACK", 7, ("ROLLING_RESERVE",)),
    ("RELEASE", 7, ("ROLLING_RESERVE",)),
    ("CHARGE", 6, ("FRAUD_POLICY_CHARGE", "DISPUTE_FEE", "EXTRA_INVOICE_FEE")),
    ("CREDIT", 6, ("FRAUD_POLICY_CREDIT_NET", "CREDITED_CORRECTION", "MANUAL_ENTRY")),
    ("CORRECTION", 7, ("FIXED_FEE_CORRECTION", "PERCENTAGE_FEE_CORRECTION", "CORRECTION")),
    ("FEE", 6, ("RETURN_FEE", "LATE_RETURN_FEE", "SERVICING_FEE", "EXTEND_DUE_DATE_FEE")),
)
_MISC_CUM = []
_acc = 0
for _t, _w, _d in _MISC:
    _acc += _w
    _MISC_CUM.append(_acc)
_MISC_TOTAL = _acc
_COMMENTS = {
    "HOLDBACK": "Rolling reserve 10% for order",
    "RELEASE": "Rolling reserve released",
    "CHARGE": "Charge",
    "CREDIT": "Credit",
    "CORRECTION": "Fee correction",
}
_ALNUM = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


# --------------------------------------------------------------------------- generator


def _skeleton(rng: random.Random, n_rows: int, n_identical: int):
    """Phase 1: decide every row's type, detailed type and amount.

    Returns ``(events, orders)``: ``events`` is the row list, each
    ``(type, detailed_type, amount, order_k, sub_k)`` (sub_k = capture index for
    SALE/FEE, refund index for RETURN, -1 otherwise); duplicated rows are the
    *same* tuple object. ``orders[k] = [authorized, [capture amounts],
    [refund amounts], released_remaining]``.
    """
    if n_rows <= 0:
        return [], []
    dup = n_identical
    if n_rows - dup < 2:
        dup = max(0, n_rows - 2)
    budget = n_rows - dup
    rand = rng.random
    events: list = []
    orders: list = []
    append = events.append
    while len(events) < budget:
        rem = budget - len(events)
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
            orders.append([authorized, caps, [], released])
            if rem == 1:  # only possible for a 1-row payout
                append(("SALE", "PURCHASE", amount, k, 0))
                continue
            ncap = len(caps)
            for c, camt in enumerate(caps):
                append(("SALE", "PURCHASE", camt, k, c))
                rate = 249 + int(100 * rand())
                append(("FEE", "PURCHASE_FEE_PERCENTAGE", max(1, (camt * rate + 5000) // 10000), k, c))
                if budget - len(events) - 2 * (ncap - c - 1) >= 1 and rand() < 0.15:
                    append(("FEE", "PURCHASE_FEE_FIXED", 20 + int(30 * rand()), k, c))
            continue
        k = int(rand() * len(orders))
        order = orders[k]
        captured = sum(order[1])
        x = rand() * _MISC_TOTAL
        t, _w, dtypes = _MISC[bisect.bisect_right(_MISC_CUM, x)]
        if t == "RETURN":
            avail = captured - sum(order[2])
            if avail >= 100:
                amt = avail if rand() < 0.35 else 100 + int((avail - 100) * rand())
                order[2].append(amt)
                append(("RETURN", "PURCHASE_RETURN", amt, k, len(order[2]) - 1))
                continue
            t, dtypes = "COMMISSION", ("PURCHASE_COMMISSION_PERCENTAGE", "COMMISSION")
        dt = dtypes[int(rand() * len(dtypes))]
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
        append((t, dt, amt, k, -1))
    if dup:
        fixed = [i for i, e in enumerate(events) if e[1] == "PURCHASE_FEE_FIXED"]
        for _ in range(dup):
            pool = fixed or [i for i, e in enumerate(events) if e[0] == "FEE"]
            src = pool[int(rand() * len(pool))]
            pos = src + 1 + int(rand() * (len(events) - src))
            events.insert(pos, events[src])
            if fixed:
                fixed = [i for i, e in enumerate(events) if e[1] == "PURCHASE_FEE_FIXED"]
    return events, orders


def _totals_from_events(events) -> dict:
    sums = dict.fromkeys(TOTALS_BY_TYPE, 0)
    for e in events:
        sums[_TYPE_TO_TOTAL[e[0]]] += e[2]
    return _totals(sums)


def _totals(sums: dict) -> dict:
    settlement = sum(sums[k] for k in _POSITIVE) - sum(sums[k] for k in _NEGATIVE)
    deposit = -settlement if settlement < 0 else 0
    values = dict(sums)
    values.update(repay_amount=0, tax_refund_amount=0, settlement_amount=settlement,
                  deposit_amount=deposit, opening_debt_balance_amount=0,
                  closing_debt_balance_amount=deposit)
    return {k: values[k] for k in _TOTALS_KEYS}


def _uuid4(rng: random.Random) -> str:
    h = "%032x" % rng.getrandbits(128)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _code(rng: random.Random, n: int) -> str:
    bits = rng.getrandbits(5 * n)
    return "".join(_ALNUM[(bits >> (5 * i)) & 31] for i in range(n))


class _Meta:
    """Per payout metadata (small, kept for every payout)."""

    __slots__ = ("pos", "key", "ref", "ts", "date", "currency", "late")

    def __init__(self, pos, key, ref, ts, currency, late):
        self.pos, self.key, self.ref, self.ts = pos, key, ref, ts
        self.date = format_datetime(ts)
        self.currency, self.late = currency, late


class _Views:
    """Immutable sorted views over the payout list (swapped atomically on grow)."""

    __slots__ = ("metas", "desc", "desc_neg_ts", "desc_by_cur", "desc_neg_ts_by_cur", "asc")

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


class _Materialized:
    __slots__ = ("rows", "orders", "details", "row_order_ids")

    def __init__(self, rows, orders, details):
        self.rows, self.orders, self.details = rows, orders, details
        self.row_order_ids = [r["order_id"] for r in rows]


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- dataset


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
        self._order_mask = int.from_bytes(hashlib.sha1(f"{sp.seed}:order-mask".encode()).digest()[:6], "big")
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
        self._mat = _LRU(self.MATERIALIZED_CACHE_PAYOUTS)
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

    def _append(self, key, ts, currency, late):
        meta = _Meta(len(self._metas), key, self._reference(key), ts, currency, late)
        self._metas.append(meta)
        self._refs[meta.ref] = meta
        return meta

    def _add_regular(self):
        i = self._regular
        self._regular += 1
        ts = self._first_ts + (i // self._ncur) * 86400 + 6 * 3600 + (i % 3600)
        return self._append(f"{self._seed}:{i}", ts, self.spec.currencies[i % self._ncur], False)

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
                newest = self._first_ts + 6 * 3600
            newest_day = newest - newest % 86400
            added = [self._add_regular() for _ in range(new_payouts)]
            for _ in range(late_payouts):
                m = self._late
                self._late += 1
                ts = newest_day - (1 + m % 2) * 86400 + 18 * 3600 + (m % 3600)
                added.append(self._append(f"{self._seed}:late:{m}", ts,
                                          self.spec.currencies[m % self._ncur], True))
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
        return len(self._views.metas) * self._t

    # ----------------------------------------------------------------- generation

    def _payout_totals(self, meta: _Meta) -> dict:
        tot = self._totals.get(meta.pos)
        if tot is None:
            events, _orders = _skeleton(random.Random(meta.key), self._t, self._dup)
            tot = self._totals[meta.pos] = _totals_from_events(events)
        return tot

    def _payout_dict(self, meta: _Meta) -> dict:
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

    def payout_json(self, meta: _Meta) -> bytes:
        b = self._payout_json.get(meta.pos)
        if b is None:
            b = self._payout_json[meta.pos] = _dumps(self._payout_dict(meta))
        return b

    def _order_id(self, rng: random.Random, pos: int, k: int) -> str:
        h = "%020x" % rng.getrandbits(80)
        tail = (((pos << 16) | k) * _MIX & _MASK48) ^ self._order_mask
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{tail:012x}"

    def _decode_order_id(self, order_id: str):
        if not isinstance(order_id, str) or len(order_id) != 36:
            return None
        try:
            tail = int(order_id[24:], 16)
        except ValueError:
            return None
        v = ((tail ^ self._order_mask) * _MIX_INV) & _MASK48
        return v >> 16, v & 0xFFFF

    def _materialize(self, meta: _Meta) -> _Materialized:
        cached = self._mat.get(meta.pos)
        if cached is not None:
            return cached
        rng = random.Random(meta.key)
        events, orders = _skeleton(rng, self._t, self._dup)
        rand = rng.random
        payout_ts = meta.ts
        currency = meta.currency
        countries = _COUNTRIES.get(currency, ("US",))
        details = []
        for k, (authorized, caps, refunds, _released) in enumerate(orders):
            oid = self._order_id(rng, meta.pos, k)
            pc = countries[int(rand() * len(countries))]
            sc = pc if (currency != "EUR" or rand() < 0.9) else _EU_NEIGHBOURS[int(rand() * len(_EU_NEIGHBOURS))]
            pm = _PAYMENT_METHODS[int(rand() * len(_PAYMENT_METHODS))]
            inst = pm[3][int(rand() * len(pm[3]))] if pm[3] else None
            sale_ts = payout_ts - 3 * 86400 - int(rand() * 11 * 86400)
            capture_list = []
            t = sale_ts
            for c, camt in enumerate(caps):
                t = t + 600 + int(rand() * 86400)
                capture_list.append((_uuid4(rng), t, (f"CAP-{_code(rng, 8)}" if rand() < 0.7 else None)))
            refund_list = []
            rt = t
            for r_amt in refunds:
                rt = min(rt + 3600 + int(rand() * 86400), payout_ts - 3600)
                refund_list.append((_uuid4(rng), rt, (f"RET-{_code(rng, 8)}" if rand() < 0.7 else None)))
            details.append({
                "order_id": oid,
                "short": _code(rng, 7),
                "mr1": str(10000000 + int(rand() * 90000000)),
                "mr2": (f"ERP-{int(rand() * 900000) + 100000}" if rand() < 0.8 else None),
                "pc": pc, "sc": sc, "pm": pm, "inst": inst,
                "sale_ts": sale_ts, "sale_date": format_datetime(sale_ts),
                "captures": capture_list, "refunds": refund_list,
                "last_ts": t,
                "dispute": f"krn:klarna:eu1:dispute:{_DISPUTE_CATEGORIES[int(rand() * 5)]}:"
                           f"{263000000000000 + rng.getrandbits(40)}",
            })
        ref = meta.ref
        payout_link = f"{SETTLEMENTS_LINK_BASE}/payouts/{ref}"
        to_eur = _TO_EUR.get(currency, 1.0)
        built: dict = {}
        rows = []
        for e in events:
            row = built.get(id(e))
            if row is None:
                row = built[id(e)] = self._row(e, details[e[3]], ref, payout_link, currency, to_eur)
            rows.append(row)
        mat = _Materialized(rows, orders, details)
        self._mat.put(meta.pos, mat)
        return mat

    @staticmethod
    def _row(e, d, ref, payout_link, currency, to_eur) -> dict:
        t, dt, amt, k, sub = e
        refund = None
        if t == "SALE" or t == "FEE":
            cap = d["captures"][sub if sub >= 0 else 0]
            capture_id, capture_date, mcr = cap[0], format_datetime(cap[1]), cap[2]
        elif t == "RETURN":
            refund = d["refunds"][sub]
            capture_id, capture_date, mcr = "", format_datetime(refund[1]), None
        else:
            capture_id, capture_date, mcr = "", format_datetime(d["last_ts"]), None
        r = {
            "amount": amt,
            "capture_id": capture_id,
            "merchant_reference1": d["mr1"],
            "sale_date": d["sale_date"],
            "type": t,
            "capture_date": capture_date,
            "payment_reference": ref,
            "order_id": d["order_id"],
            "payout": payout_link,
        }
        if refund is not None:
            r["refund_id"] = refund[0]
        r["short_order_id"] = d["short"]
        if d["mr2"] is not None:
            r["merchant_reference2"] = d["mr2"]
        r["currency_code"] = currency
        r["purchase_country"] = d["pc"]
        fee_like = t == "FEE" or t == "FEE_REFUND"
        if fee_like:
            vat = (amt * FEE_VAT_RATE + 5950) // (10000 + FEE_VAT_RATE)
            r["vat_rate"] = FEE_VAT_RATE
            r["vat_amount"] = vat
        r["shipping_country"] = d["sc"]
        pm, inst = d["pm"], d["inst"]
        r["initial_payment_method_type"] = pm[0]
        if inst is not None:
            r["initial_number_of_installments"] = inst
            if pm[1] == "FIXED_AMOUNT":
                r["initial_payment_method_monthly_downpayments"] = inst
        if mcr is not None:
            r["merchant_capture_reference"] = mcr
        if refund is not None and refund[2] is not None:
            r["merchant_refund_reference"] = refund[2]
        if dt is not None:
            r["detailed_type"] = dt
        if fee_like:
            r["tax_in_currency_of_registration_country"] = int(round(r["vat_amount"] * to_eur))
        r["currency_code_of_registration_country"] = REGISTRATION_CURRENCY
        comment = _COMMENTS.get(t)
        if comment is not None:
            r["klarna_comment"] = f"{comment} {d['short']} ({d['sale_date'][:10]})"
        if t == "REVERSAL" or t == "REVERSAL_MERCHANT_PROTECTION":
            r["reversal_reference"] = d["dispute"]
        return r

    def _rows_entry(self, meta: _Meta):
        """(list of serialized rows, list of order ids per row) for a payout (LRU cached)."""
        ent = self._rows_json.get(meta.pos)
        if ent is None:
            mat = self._materialize(meta)
            ent = ([_dumps(r) for r in mat.rows], mat.row_order_ids)
            self._rows_json.put(meta.pos, ent)
        return ent

    # ----------------------------------------------------------------- orders

    def is_purged(self, order_id: str) -> bool:
        ratio = float(self.spec.purged_order_ratio)
        if ratio <= 0:
            return False
        h = int.from_bytes(hashlib.sha1(f"{self._seed}:purge:{order_id}".encode()).digest()[:8], "big")
        return h / 2.0 ** 64 < ratio

    def _locate_order(self, order_id: str):
        dec = self._decode_order_id(order_id)
        if dec is None:
            return None
        pos, k = dec
        metas = self._views.metas
        if pos >= len(metas):
            return None
        meta = metas[pos]
        mat = self._materialize(meta)
        if k >= len(mat.details) or mat.details[k]["order_id"] != order_id:
            return None
        return meta, mat, k

    def _order_dict(self, meta: _Meta, mat: _Materialized, k: int) -> dict:
        authorized, caps, refunds, released = mat.orders[k]
        d = mat.details[k]
        rng = random.Random(f"{meta.key}:order:{k}")
        rand = rng.random
        currency = meta.currency
        captured = sum(caps)
        refunded = sum(refunds)
        if captured >= authorized:
            status, remaining = "CAPTURED", 0
        elif released:
            status, remaining = "CLOSED", 0
        else:
            status, remaining = "PART_CAPTURED", authorized - captured

        def address(country):
            cities = _CITIES.get(country, ("Springfield",))
            given, family = _GIVEN[int(rand() * len(_GIVEN))], _FAMILY[int(rand() * len(_FAMILY))]
            a = {
                "given_name": given,
                "family_name": family,
                "email": f"{given.lower()}.{family.lower().replace(' ', '')}@example.com",
                "street_address": f"{_STREETS[int(rand() * len(_STREETS))]} {1 + int(rand() * 120)}",
                "postal_code": (f"{10000 + int(rand() * 89999)}" if country != "SE"
                                else f"{100 + int(rand() * 880)} {10 + int(rand() * 89)}"),
                "city": cities[int(rand() * len(cities))],
                "country": country,
                "phone": f"+{_DIAL.get(country, '1')} {100000000 + int(rand() * 899999999)}",
            }
            if country == "US":
                a["region"] = _US_REGIONS[int(rand() * len(_US_REGIONS))]
            return a

        billing = address(d["pc"])
        shipping = dict(billing) if d["sc"] == d["pc"] and rand() < 0.8 else address(d["sc"])
        shipping["country"] = d["sc"]
        tax_rate = _GOODS_VAT.get(d["pc"], 0)

        # order lines summing to the authorized amount
        n_lines = 1 + int(rand() * 3) if authorized >= 300 else 1
        weights = [0.5 + rand() for _ in range(n_lines)]
        wsum = sum(weights)
        totals = [int(authorized * w / wsum) for w in weights]
        totals[-1] = authorized - sum(totals[:-1])
        lines = []
        for j, total in enumerate(totals):
            name, slug = _PRODUCTS[int(rand() * len(_PRODUCTS))]
            qty = 1 + int(rand() * 3) if total >= 3 else 1
            unit = -(-total // qty)
            discount = unit * qty - total
            tax = total - (total * 10000 + (10000 + tax_rate) // 2) // (10000 + tax_rate)
            lines.append({
                "type": "physical",
                "reference": f"SKU-{slug.upper()}-{100 + int(rand() * 900)}",
                "name": name,
                "quantity": qty,
                "quantity_unit": "pcs",
                "unit_price": unit,
                "tax_rate": tax_rate,
                "total_amount": total,
                "total_discount_amount": discount,
                "total_tax_amount": tax,
                "product_url": f"https://shop.example/products/{slug}",
                "image_url": f"https://shop.example/images/{slug}.png",
            })
        carrier, method = _CARRIERS[int(rand() * len(_CARRIERS))]

        def shipping_info():
            tn = f"{int(rand() * 10 ** 12):012d}{int(rand() * 10 ** 8):08d}"
            return [{"shipping_company": carrier, "shipping_method": method, "tracking_number": tn,
                     "tracking_uri": f"https://tracking.example/{tn}"}]

        # allocate refunds to captures greedily
        left = list(caps)
        cap_refunded = [0] * len(caps)
        for r_amt in refunds:
            rest = r_amt
            for c in range(len(left)):
                take = min(left[c], rest)
                left[c] -= take
                cap_refunded[c] += take
                rest -= take
                if rest == 0:
                    break
        captures = []
        for c, (camt, (cid, cts, cref)) in enumerate(zip(caps, d["captures"])):
            cap = {
                "capture_id": cid,
                "klarna_reference": f"{d['short']}-{c + 1}",
                "captured_amount": camt,
                "captured_at": format_datetime(cts),
                "description": (f"Shipped part {c + 1} of {len(caps)}" if len(caps) > 1 else "Order has been shipped"),
            }
            if len(caps) == 1 and camt == authorized:
                cap["order_lines"] = [dict(x) for x in lines]
            if cref is not None:
                cap["reference"] = cref
            cap["refunded_amount"] = cap_refunded[c]
            cap["billing_address"] = dict(billing)
            cap["shipping_address"] = dict(shipping)
            cap["shipping_info"] = shipping_info()
            captures.append(cap)
        refund_objs = []
        for r_amt, (rid, rts, rref) in zip(refunds, d["refunds"]):
            ro = {
                "refund_id": rid,
                "refunded_amount": r_amt,
                "refunded_at": format_datetime(rts),
                "description": "The item was returned and the order refunded.",
            }
            if rref is not None:
                ro["reference"] = rref
            refund_objs.append(ro)
        pm, inst = d["pm"], d["inst"]
        ipm = {"type": pm[1], "description": pm[2]}
        if inst is not None:
            ipm["number_of_installments"] = inst
        order = {
            "order_id": d["order_id"],
            "status": status,
            "fraud_status": "ACCEPTED",
            "order_amount": authorized,
            "original_order_amount": authorized,
            "captured_amount": captured,
            "refunded_amount": refunded,
            "remaining_authorized_amount": remaining,
            "purchase_currency": currency,
            "locale": _LOCALES.get(d["pc"], "en-US"),
            "order_lines": lines,
            "merchant_reference1": d["mr1"],
        }
        if d["mr2"] is not None:
            order["merchant_reference2"] = d["mr2"]
        order.update({
            "klarna_reference": d["short"],
            "billing_address": billing,
            "shipping_address": shipping,
            "created_at": d["sale_date"],
            "purchase_country": d["pc"],
            "expires_at": format_datetime(d["sale_ts"] + 28 * 86400),
            "captures": captures,
            "refunds": refund_objs,
            "customer": {"date_of_birth": f"{1950 + int(rand() * 55)}-{1 + int(rand() * 12):02d}-"
                                          f"{1 + int(rand() * 28):02d}"},
            "merchant_data": f'{{"channel":"{"web" if rand() < 0.7 else "app"}"}}',
            "shipping_info": shipping_info(),
            "initial_payment_method": ipm,
        })
        return order

    def _orders_entry(self, meta: _Meta) -> dict:
        ent = self._orders_json.get(meta.pos)
        if ent is None:
            mat = self._materialize(meta)
            ent = {}
            for k, d in enumerate(mat.details):
                if not self.is_purged(d["order_id"]):
                    ent[d["order_id"]] = _dumps(self._order_dict(meta, mat, k))
            self._orders_json.put(meta.pos, ent)
        return ent

    def order_json(self, order_id: str):
        """Serialized MerchantOrderDto, or None (unknown or purged)."""
        loc = self._locate_order(order_id)
        if loc is None:
            return None
        return self._orders_entry(loc[0]).get(order_id)

    def order(self, order_id: str):
        """The order exactly as served, or None when unknown or purged (404)."""
        b = self.order_json(order_id)
        return None if b is None else json.loads(b)

    def order_ids(self, include_purged: bool = True) -> Iterator[str]:
        """Every distinct order id, payouts in payout_date ascending order."""
        for meta in self._views.asc:
            for d in self._materialize(meta).details:
                if include_purged or not self.is_purged(d["order_id"]):
                    yield d["order_id"]

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
            sums = dict.fromkeys(_TOTALS_KEYS, 0)
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
            metas = self._views.asc
            t = self._t
            total = len(metas) * t
            out = []
            if t == 0 or offset >= total:
                return out, total
            i, j = divmod(offset, t)
            while len(out) < size and i < len(metas):
                rows = self._rows_entry(metas[i])[0]
                out.extend(rows[j:j + size - len(out)])
                i, j = i + 1, 0
            return out, total
        if order_id is not None:
            dec = self._decode_order_id(order_id)
            if dec is None or dec[0] >= len(self._views.metas):
                return [], 0
            meta = self._views.metas[dec[0]]
            if payment_reference is not None and meta.ref != payment_reference:
                return [], 0
            rows, oids = self._rows_entry(meta)
            match = [r for r, o in zip(rows, oids) if o == order_id]
            return match[offset:offset + size], len(match)
        meta = self._refs.get(payment_reference)
        if meta is None:
            return [], 0
        rows = self._rows_entry(meta)[0]
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
