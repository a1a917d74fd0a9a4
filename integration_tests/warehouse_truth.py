"""What dbt_klarna's models must hold for one store, computed without dbt and without the warehouse:
plain Python over the emulator's `Dataset` (what Klarna serves right now) and the connector's own
transaction fingerprint.

    truth = store_truth(dataset, "klarna_a")        # {model: {key: row}}
    truth["klarna__payout_reconciliation"][("klarna_a", "ABC123")]["is_reconciled"]  # True

Every key starts with `source_relation` (the schema the store was synced into); a row is a dict of the
model's columns named in MODEL_COLUMNS (key columns included). Money is in minor units (int),
timestamps are timezone-aware UTC datetimes, a missing value is None. One function per model, each
taking the `Store` (the dataset read once) and returning {key: row}; the marts are computed from the
same Store, never from another function's output, so a mistake cannot cancel itself out.

What each model holds (dbt_klarna's contract):

* stg_klarna__payouts: every payout; its Totals as `<field>_minor` (0 when absent).
* stg_klarna__transactions: every transaction in a payout, once; keyed by the connector's
  transaction_key `<payment_reference>:<fingerprint>:<occurrence>` (components.transaction_fingerprint;
  identical rows of one payout numbered 0, 1, ...).
* stg_klarna__pending_transactions: Dataset.pending_transactions() now (`pending:<fingerprint>:<n>`).
* stg_klarna__orders / __captures / __refunds: the orders Klarna returns now among those named by the
  transactions in payouts (the connector fetches only those; a gone one has no row), their items.
* stg_klarna__disputes: Dataset.disputes() now.
* the marts klarna__payout_reconciliation, klarna__fees, klarna__order_settlement, klarna__disputes as
  the contract defines them (see each function).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter, defaultdict
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from klarna_emulator.transactions import TOTALS_BY_TYPE

Row = Dict[str, Any]
Table = Dict[Tuple[Any, ...], Row]

UTC = dt.timezone.utc

# Klarna's Totals, in the contract's order: stg_klarna__payouts has `<field>_minor` for each.
TOTALS_FIELDS = (
    "sale_amount", "fee_amount", "return_amount", "reversal_amount", "commission_amount", "tax_amount",
    "holdback_amount", "release_amount", "charge_amount", "credit_amount", "fee_refund_amount",
    "fee_correction_amount", "tax_refund_amount", "repay_amount", "settlement_amount", "deposit_amount",
    "opening_debt_balance_amount", "closing_debt_balance_amount",
)
# The 12 totals fields that are sums of transaction types (the emulator's, as Klarna documents them).
TYPE_TOTALS = TOTALS_BY_TYPE
TOWARDS_MERCHANT = ("SALE", "RELEASE", "CREDIT", "FEE_REFUND", "CORRECTION")
TOWARDS_KLARNA = ("FEE", "RETURN", "REVERSAL", "REVERSAL_MERCHANT_PROTECTION", "COMMISSION", "TAX", "HOLDBACK", "CHARGE")
FEES_CHARGED = ("FEE", "COMMISSION", "TAX", "CHARGE")
FEES_GIVEN_BACK = ("FEE_REFUND", "CORRECTION")
OPEN_INVESTIGATION = ("opened", "started", "unresolved", "replied")
LOST_INVESTIGATION = ("loss_accepted", "deadline_expired")

# model -> (key columns, value columns): what the test selects and compares, exactly.
MODEL_COLUMNS: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    "stg_klarna__payouts": (
        ("source_relation", "payment_reference"),
        ("payout_date", "currency_code", "merchant_id") + tuple(f"{f}_minor" for f in TOTALS_FIELDS),
    ),
    "stg_klarna__transactions": (
        ("source_relation", "transaction_key"),
        ("payment_reference", "payout_date", "transaction_type", "detailed_type", "currency_code", "amount_minor",
         "signed_amount_minor", "order_id", "capture_id", "refund_id", "reversal_reference"),
    ),
    "stg_klarna__pending_transactions": (
        ("source_relation", "transaction_key"),
        ("transaction_type", "detailed_type", "currency_code", "amount_minor", "signed_amount_minor", "order_id"),
    ),
    "stg_klarna__orders": (
        ("source_relation", "order_id"),
        ("status", "currency_code", "order_amount_minor", "captured_amount_minor", "refunded_amount_minor",
         "remaining_authorized_amount_minor"),
    ),
    "stg_klarna__captures": (
        ("source_relation", "capture_id"),
        ("order_id", "captured_amount_minor", "refunded_amount_minor"),
    ),
    "stg_klarna__refunds": (
        ("source_relation", "refund_id"),
        ("order_id", "refunded_amount_minor"),
    ),
    "stg_klarna__disputes": (
        ("source_relation", "dispute_krn"),
        ("order_id", "capture_id", "reason", "investigation_status", "status", "opened_at", "closed_at",
         "closing_reason", "closing_reason_detailed", "deadline_expires_at", "currency_code", "disputed_amount_minor",
         "charged_fee_minor", "chargeback_amount_minor"),
    ),
    "klarna__payout_reconciliation": (
        ("source_relation", "payment_reference"),
        ("payout_date", "currency_code", "transaction_count")
        + tuple(f"{side}_{f}_minor" for f in TYPE_TOTALS for side in ("totals", "transactions"))
        + ("totals_settlement_amount_minor", "transactions_settlement_amount_minor", "settlement_difference_minor",
           "is_reconciled", "bank_deposit_amount_minor"),
    ),
    "klarna__fees": (
        ("source_relation", "fee_month", "currency_code", "fee_type", "fee_detailed_type"),
        ("transaction_count", "gross_amount_minor", "net_fee_amount_minor", "month_sale_amount_minor"),
    ),
    "klarna__order_settlement": (
        ("source_relation", "order_id"),
        ("has_order_details", "currency_code", "captured_amount_minor", "refunded_amount_minor", "capture_count",
         "refund_count", "payout_count", "paid_out_sale_amount_minor", "paid_out_return_amount_minor",
         "paid_out_fee_amount_minor", "paid_out_net_amount_minor", "pending_transaction_count",
         "pending_sale_amount_minor", "pending_return_amount_minor", "pending_net_amount_minor",
         "outstanding_amount_minor", "settlement_status"),
    ),
}
_STG_DISPUTE_VALUES = MODEL_COLUMNS["stg_klarna__disputes"][1]
MODEL_COLUMNS["klarna__disputes"] = (
    ("source_relation", "dispute_krn"),
    _STG_DISPUTE_VALUES + ("is_open", "outcome", "settlement_transaction_count", "settled_fee_minor",
                           "settled_reversal_minor", "settled_net_amount_minor", "has_order_details", "days_to_deadline"),
)
STAGING_MODELS = tuple(name for name in MODEL_COLUMNS if name.startswith("stg_"))
MARTS = tuple(name for name in MODEL_COLUMNS if not name.startswith("stg_"))
# Compared with a tolerance (days): whole days from the build's current date, which this process
# computes a moment apart from the warehouse (a build across midnight, a warehouse in another zone).
TOLERANCES = {("klarna__disputes", "days_to_deadline"): 1}


# ------------------------------------------------------------------------------------ helpers


def instant(value: Optional[str]) -> Optional[dt.datetime]:
    """Klarna's `YYYY-MM-DDTHH:MM:SSZ` (or any ISO 8601 date-time) as an aware UTC datetime."""
    if value is None:
        return None
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    parsed = dt.datetime.fromisoformat(text)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def month_start(moment: dt.datetime) -> dt.datetime:
    return dt.datetime(moment.year, moment.month, 1, tzinfo=UTC)


def signed(transaction_type: str, amount: int) -> int:
    if transaction_type in TOWARDS_MERCHANT:
        return amount
    if transaction_type in TOWARDS_KLARNA:
        return -amount
    return 0


def fee_sign(transaction_type: str) -> int:
    """+1 for what Klarna charged, -1 for what it gave back, 0 for anything else."""
    return 1 if transaction_type in FEES_CHARGED else -1 if transaction_type in FEES_GIVEN_BACK else 0


def dispute_match_key(reference: Optional[str]) -> Optional[str]:
    """A dispute KRN as both sides match it: lower case, '-' read as '_'."""
    return None if reference is None else reference.lower().replace("-", "_")


# ------------------------------------------------------------------------- the store, read once


@dataclasses.dataclass
class Store:
    """One store's data as Klarna serves it now, in the shape the model functions read."""

    source_relation: str
    payouts: List[Row]  # as served
    paid: List[Row]  # every transaction in a payout, plus transaction_key and payout_date (the connector's)
    pending: List[Row]  # every pending transaction, plus transaction_key
    orders: Dict[str, Row]  # order_id -> order, for the orders Klarna returns among those the paid rows name
    disputes: List[Row]  # as served
    today: dt.date  # the build's current date (UTC), for days_to_deadline


def keyed_rows(rows: Iterable[Row], prefix: str, fingerprint: Callable[[Mapping[str, Any]], str]) -> List[Row]:
    """The rows with their transaction_key: `<prefix>:<fingerprint>:<occurrence>`, identical rows numbered
    0, 1, ... in the order Klarna lists them (the connector's TransactionKeyAndPayout)."""
    seen: Counter = Counter()
    keyed = []
    for row in rows:
        fp = fingerprint(row)
        keyed.append({**row, "transaction_key": f"{prefix}:{fp}:{seen[fp]}"})
        seen[fp] += 1
    return keyed


def read_store(dataset: Any, source_relation: str, fingerprint: Callable[[Mapping[str, Any]], str],
               today: Optional[dt.date] = None) -> Store:
    payouts = dataset.payouts()
    paid: List[Row] = []
    for payout in payouts:
        rows = keyed_rows(dataset.transactions_for(payout["payment_reference"]), payout["payment_reference"], fingerprint)
        paid += [{**row, "payout_date": payout["payout_date"]} for row in rows]
    pending = keyed_rows(dataset.pending_transactions(), "pending", fingerprint)
    orders = {}
    for order_id in sorted({row["order_id"] for row in paid}):
        order = dataset.order(order_id)
        if order is not None:
            orders[order_id] = order
    return Store(source_relation, payouts, paid, pending, orders, dataset.disputes(),
                 today or dt.datetime.now(UTC).date())


# ------------------------------------------------------------------------------------ staging


def stg_payouts(store: Store) -> Table:
    table = {}
    for payout in store.payouts:
        totals = payout.get("totals") or {}
        row = {
            "source_relation": store.source_relation,
            "payment_reference": payout["payment_reference"],
            "payout_date": instant(payout["payout_date"]),
            "currency_code": payout["currency_code"],
            "merchant_id": payout["merchant_id"],
        }
        row.update({f"{f}_minor": int(totals.get(f) or 0) for f in TOTALS_FIELDS})
        table[(store.source_relation, payout["payment_reference"])] = row
    return table


def _transaction_values(row: Row) -> Row:
    return {
        "transaction_type": row["type"],
        "detailed_type": row.get("detailed_type"),
        "currency_code": row["currency_code"],
        "amount_minor": row["amount"],
        "signed_amount_minor": signed(row["type"], row["amount"]),
        "order_id": row.get("order_id"),
    }


def stg_transactions(store: Store) -> Table:
    table = {}
    for row in store.paid:
        table[(store.source_relation, row["transaction_key"])] = {
            "source_relation": store.source_relation,
            "transaction_key": row["transaction_key"],
            "payment_reference": row["payment_reference"],
            "payout_date": instant(row["payout_date"]),
            **_transaction_values(row),
            "capture_id": row.get("capture_id"),
            "refund_id": row.get("refund_id"),
            "reversal_reference": row.get("reversal_reference"),
        }
    return table


def stg_pending_transactions(store: Store) -> Table:
    return {
        (store.source_relation, row["transaction_key"]): {
            "source_relation": store.source_relation, "transaction_key": row["transaction_key"], **_transaction_values(row),
        }
        for row in store.pending
    }


def stg_orders(store: Store) -> Table:
    table = {}
    for order_id, order in store.orders.items():
        table[(store.source_relation, order_id)] = {
            "source_relation": store.source_relation,
            "order_id": order_id,
            "status": order.get("status"),
            "currency_code": (order.get("purchase_currency") or "").upper() or None,
            "order_amount_minor": order.get("order_amount") or 0,
            "captured_amount_minor": order.get("captured_amount") or 0,
            "refunded_amount_minor": order.get("refunded_amount") or 0,
            "remaining_authorized_amount_minor": order.get("remaining_authorized_amount") or 0,
        }
    return table


def stg_captures(store: Store) -> Table:
    table = {}
    for order_id, order in store.orders.items():
        for capture in order.get("captures") or []:
            table[(store.source_relation, capture["capture_id"])] = {
                "source_relation": store.source_relation,
                "capture_id": capture["capture_id"],
                "order_id": order_id,
                "captured_amount_minor": capture.get("captured_amount") or 0,
                "refunded_amount_minor": capture.get("refunded_amount") or 0,
            }
    return table


def stg_refunds(store: Store) -> Table:
    table = {}
    for order_id, order in store.orders.items():
        for refund in order.get("refunds") or []:
            table[(store.source_relation, refund["refund_id"])] = {
                "source_relation": store.source_relation,
                "refund_id": refund["refund_id"],
                "order_id": order_id,
                "refunded_amount_minor": refund.get("refunded_amount") or 0,
            }
    return table


def stg_disputes(store: Store) -> Table:
    table = {}
    for dispute in store.disputes:
        fee = dispute.get("charged_disputes_fee") or {}
        chargeback = dispute.get("chargeback_amount") or {}
        table[(store.source_relation, dispute["dispute_krn"])] = {
            "source_relation": store.source_relation,
            "dispute_krn": dispute["dispute_krn"],
            "order_id": (dispute.get("order") or {}).get("order_id"),
            "capture_id": dispute.get("capture_id"),
            "reason": dispute.get("reason"),
            "investigation_status": dispute.get("investigation_status"),
            "status": dispute.get("status"),
            "opened_at": instant(dispute.get("opened_at")),
            "closed_at": instant(dispute.get("closed_at")),
            "closing_reason": dispute.get("closing_reason"),
            "closing_reason_detailed": dispute.get("closing_reason_detailed"),
            "deadline_expires_at": instant(dispute.get("deadline_expires_at")),
            "currency_code": (dispute.get("disputed_amount") or {}).get("currency"),
            "disputed_amount_minor": (dispute.get("disputed_amount") or {}).get("amount") or 0,
            "charged_fee_minor": fee.get("amount") or 0,
            "chargeback_amount_minor": chargeback.get("amount") or 0,
        }
    return table


# -------------------------------------------------------------------------------------- marts


def payout_reconciliation(store: Store) -> Table:
    """Per payout: its totals against the sums of its transactions by type, and the settlement amount
    against their signed sum (difference = totals - transactions)."""
    by_payout: Dict[str, List[Row]] = defaultdict(list)
    for row in store.paid:
        by_payout[row["payment_reference"]].append(row)
    table = {}
    for payout in store.payouts:
        reference, totals = payout["payment_reference"], payout.get("totals") or {}
        rows = by_payout.get(reference, [])
        row: Row = {
            "source_relation": store.source_relation,
            "payment_reference": reference,
            "payout_date": instant(payout["payout_date"]),
            "currency_code": payout["currency_code"],
            "transaction_count": len(rows),
        }
        reconciled = True
        for field, types in TYPE_TOTALS.items():
            total = int(totals.get(field) or 0)
            summed = sum(r["amount"] for r in rows if r["type"] in types)
            row[f"totals_{field}_minor"], row[f"transactions_{field}_minor"] = total, summed
            reconciled &= total == summed
        settlement = int(totals.get("settlement_amount") or 0)
        signed_sum = sum(signed(r["type"], r["amount"]) for r in rows)
        row.update(
            totals_settlement_amount_minor=settlement,
            transactions_settlement_amount_minor=signed_sum,
            settlement_difference_minor=settlement - signed_sum,
            is_reconciled=reconciled and settlement == signed_sum,
            bank_deposit_amount_minor=settlement,
        )
        table[(store.source_relation, reference)] = row
    return table


def fees(store: Store) -> Table:
    """Per UTC month of the payout date, currency, type and detailed type: what Klarna charged (FEE,
    COMMISSION, TAX, CHARGE) and gave back (FEE_REFUND, CORRECTION), with that month's sales."""
    sales: Counter = Counter()
    for row in store.paid:
        if row["type"] == "SALE":
            sales[(month_start(instant(row["payout_date"])), row["currency_code"])] += row["amount"]
    table: Table = {}
    for row in store.paid:
        sign = fee_sign(row["type"])
        if not sign:
            continue
        month = month_start(instant(row["payout_date"]))
        detailed = row.get("detailed_type") or row["type"]
        key = (store.source_relation, month, row["currency_code"], row["type"], detailed)
        entry = table.setdefault(key, {
            "source_relation": store.source_relation, "fee_month": month, "currency_code": row["currency_code"],
            "fee_type": row["type"], "fee_detailed_type": detailed, "transaction_count": 0, "gross_amount_minor": 0,
            "net_fee_amount_minor": 0, "month_sale_amount_minor": sales[(month, row["currency_code"])],
        })
        entry["transaction_count"] += 1
        entry["gross_amount_minor"] += row["amount"]
        entry["net_fee_amount_minor"] += sign * row["amount"]
    return table


def order_settlement(store: Store) -> Table:
    """Per order with details or named by a transaction (paid or pending): where its money is."""
    paid: Dict[str, List[Row]] = defaultdict(list)
    pending: Dict[str, List[Row]] = defaultdict(list)
    for row in store.paid:
        paid[row["order_id"]].append(row)
    for row in store.pending:
        pending[row["order_id"]].append(row)
    table = {}
    for order_id in sorted(set(store.orders) | set(paid) | set(pending)):
        order = store.orders.get(order_id)
        mine, waiting = paid.get(order_id, []), pending.get(order_id, [])

        def total(rows: List[Row], transaction_type: str) -> int:
            return sum(r["amount"] for r in rows if r["type"] == transaction_type)

        row: Row = {
            "source_relation": store.source_relation,
            "order_id": order_id,
            "has_order_details": order is not None,
            "currency_code": (order["purchase_currency"].upper() if order is not None
                              else (mine or waiting)[0]["currency_code"]),
            "captured_amount_minor": None if order is None else order.get("captured_amount") or 0,
            "refunded_amount_minor": None if order is None else order.get("refunded_amount") or 0,
            "capture_count": 0 if order is None else len(order.get("captures") or []),
            "refund_count": 0 if order is None else len(order.get("refunds") or []),
            "payout_count": len({r["payment_reference"] for r in mine}),
            "paid_out_sale_amount_minor": total(mine, "SALE"),
            "paid_out_return_amount_minor": total(mine, "RETURN"),
            "paid_out_fee_amount_minor": sum(fee_sign(r["type"]) * r["amount"] for r in mine),
            "paid_out_net_amount_minor": sum(signed(r["type"], r["amount"]) for r in mine),
            "pending_transaction_count": len(waiting),
            "pending_sale_amount_minor": total(waiting, "SALE"),
            "pending_return_amount_minor": total(waiting, "RETURN"),
            "pending_net_amount_minor": sum(signed(r["type"], r["amount"]) for r in waiting),
        }
        if order is None:
            outstanding, status = None, "no_order_details"
        else:
            outstanding = ((row["captured_amount_minor"] - row["refunded_amount_minor"])
                           - (row["paid_out_sale_amount_minor"] - row["paid_out_return_amount_minor"])
                           - (row["pending_sale_amount_minor"] - row["pending_return_amount_minor"]))
            if row["captured_amount_minor"] == 0:
                status = "not_captured"
            elif outstanding > 0:
                status = "awaiting_settlement"
            elif outstanding < 0:
                status = "over_settled"
            elif row["pending_transaction_count"] > 0:
                status = "pending_payout"
            else:
                status = "paid_out"
        row["outstanding_amount_minor"], row["settlement_status"] = outstanding, status
        table[(store.source_relation, order_id)] = row
    return table


def disputes(store: Store) -> Table:
    """Per dispute: stg_klarna__disputes, its state, and the money of the paid-out transactions whose
    reversal_reference names it."""
    rows_of: Dict[str, List[Row]] = defaultdict(list)
    for row in store.paid:
        if row.get("reversal_reference"):
            rows_of[dispute_match_key(row["reversal_reference"])].append(row)
    table = {}
    for key, staged in stg_disputes(store).items():
        rows = rows_of.get(dispute_match_key(staged["dispute_krn"]), [])
        status = staged["investigation_status"]
        is_open = status in OPEN_INVESTIGATION
        if is_open:
            outcome = "open"
        elif status in LOST_INVESTIGATION or staged["chargeback_amount_minor"] > 0:
            outcome = "lost"
        else:
            outcome = "won"
        deadline = staged["deadline_expires_at"]
        table[key] = {
            **staged,
            "is_open": is_open,
            "outcome": outcome,
            "settlement_transaction_count": len(rows),
            "settled_fee_minor": (sum(r["amount"] for r in rows if r["type"] == "FEE")
                                  - sum(r["amount"] for r in rows if r["type"] == "FEE_REFUND")),
            "settled_reversal_minor": sum(r["amount"] for r in rows if r["type"] == "REVERSAL"),
            "settled_net_amount_minor": sum(signed(r["type"], r["amount"]) for r in rows),
            "has_order_details": staged["order_id"] in store.orders,
            "days_to_deadline": (deadline.date() - store.today).days if is_open and deadline is not None else None,
        }
    return table


MODEL_FUNCTIONS: Dict[str, Callable[[Store], Table]] = {
    "stg_klarna__payouts": stg_payouts,
    "stg_klarna__transactions": stg_transactions,
    "stg_klarna__pending_transactions": stg_pending_transactions,
    "stg_klarna__orders": stg_orders,
    "stg_klarna__captures": stg_captures,
    "stg_klarna__refunds": stg_refunds,
    "stg_klarna__disputes": stg_disputes,
    "klarna__payout_reconciliation": payout_reconciliation,
    "klarna__fees": fees,
    "klarna__order_settlement": order_settlement,
    "klarna__disputes": disputes,
}
assert set(MODEL_FUNCTIONS) == set(MODEL_COLUMNS)


def store_truth(dataset: Any, source_relation: str, fingerprint: Callable[[Mapping[str, Any]], str],
                today: Optional[dt.date] = None) -> Dict[str, Table]:
    """{model: {key: row}} of one store synced into schema `source_relation`, as the dataset stands now."""
    store = read_store(dataset, source_relation, fingerprint, today)
    return {model: function(store) for model, function in MODEL_FUNCTIONS.items()}


def union(*truths: Mapping[str, Table]) -> Dict[str, Table]:
    """Several stores' truths as one (their keys start with their own source_relation: never shared)."""
    merged: Dict[str, Table] = {model: {} for model in MODEL_COLUMNS}
    for truth in truths:
        for model, table in truth.items():
            overlap = set(merged[model]) & set(table)
            assert not overlap, f"{model}: two stores share keys {sorted(overlap)[:3]}"
            merged[model].update(table)
    return merged


# --------------------------------------------------------------------------- comparing rows


def normalise(value: Any) -> Any:
    """A warehouse value as the truth writes it: integral decimals as int, timestamps as aware UTC (a
    naive one is UTC), a date as its midnight UTC."""
    import decimal

    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else value
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value


def normalise_row(row: Sequence[Any]) -> Tuple[Any, ...]:
    return tuple(normalise(value) for value in row)


def compare(model: str, expected: Table, rows: Sequence[Row], limit: int = 8) -> List[str]:
    """The differences between the truth and the model's rows (each a dict of MODEL_COLUMNS[model]): keys
    missing or extra, keys present more than once, and every column that differs. [] when equal."""
    key_columns, value_columns = MODEL_COLUMNS[model]
    problems: List[str] = []
    actual: Table = {}
    duplicates: Counter = Counter()
    for raw in rows:
        row = {column: normalise(value) for column, value in raw.items()}
        key = tuple(row[c] for c in key_columns)
        if key in actual:
            duplicates[key] += 1
        actual[key] = row
    for key, extra in sorted(duplicates.items(), key=repr)[:limit]:
        problems.append(f"{model}: key {key} appears {extra + 1} times")
    missing = sorted(set(expected) - set(actual), key=repr)
    unexpected = sorted(set(actual) - set(expected), key=repr)
    for key in missing[:limit]:
        problems.append(f"{model}: missing row {key}: expected {expected[key]}")
    for key in unexpected[:limit]:
        problems.append(f"{model}: unexpected row {key}: {actual[key]}")
    if len(missing) > limit or len(unexpected) > limit:
        problems.append(f"{model}: {len(missing)} rows missing, {len(unexpected)} unexpected in all")
    differing = 0
    for key in sorted(set(expected) & set(actual), key=repr):
        want, have = expected[key], actual[key]
        for column in value_columns:
            tolerance = TOLERANCES.get((model, column))
            if tolerance is not None and want[column] is not None and have[column] is not None:
                same = abs(have[column] - want[column]) <= tolerance
            else:
                same = have[column] == want[column] and (have[column] is None) == (want[column] is None)
            if not same:
                differing += 1
                if differing <= limit:
                    problems.append(f"{model} {key}: {column} is {have[column]!r}, expected {want[column]!r}")
    if differing > limit:
        problems.append(f"{model}: {differing} differing values in all")
    return problems
