"""The demo's reconciliation report: plain SQL over the DuckDB file PyAirbyte wrote.

Tables (as PyAirbyte's DuckDB cache lands them, schema `main`): `payouts` (one row per payout; the
nested `totals` object is a JSON column), `transactions` (one row per transaction, `amount` in minor
units, `type`, and the `payment_reference` of its payout) and `payout_summaries`.

Sign convention assumed (the emulator's; Klarna's settlement API documents amounts in minor units
and the type as the direction): every transaction `amount` is a positive integer and its `type` says
which way the money goes. A payout's totals are sums of amounts by type (`TOTALS_BY_TYPE`), and

    settlement_amount = sale + release + credit + fee_refund + fee_correction
                        - fee - return - reversal - commission - tax - holdback - charge

Every function takes an open duckdb connection and returns plain rows; `format_report` renders them.
Usage: `python demo/report.py [klarna.duckdb]`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import duckdb

# payout totals field -> transaction types summed into it. Written out here, not imported from the
# emulator whose generator uses the same table: the report is an independent check of the data it
# reads (the emulator's, or a merchant's), so a mistake in one table shows up as payouts that do not reconcile.
TOTALS_BY_TYPE: Dict[str, Tuple[str, ...]] = {
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
# Money towards the merchant (+) and towards Klarna (-) in settlement_amount.
TOWARDS_MERCHANT = ("sale_amount", "release_amount", "credit_amount", "fee_refund_amount", "fee_correction_amount")
TOWARDS_KLARNA = (
    "fee_amount",
    "return_amount",
    "reversal_amount",
    "commission_amount",
    "tax_amount",
    "holdback_amount",
    "charge_amount",
)
KNOWN_TYPES = tuple(t for types in TOTALS_BY_TYPE.values() for t in types)
SETTLEMENT_FORMULA = (
    "settlement = " + " + ".join(f.replace("_amount", "") for f in TOWARDS_MERCHANT)
    + " - " + " - ".join(f.replace("_amount", "") for f in TOWARDS_KLARNA)
)

# ISO 4217 minor-unit exponents that are not 2.
_EXPONENT_0 = {
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV",
    "XAF", "XOF", "XPF",
}
_EXPONENT_3 = {"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"}
_EXPONENT_4 = {"CLF", "UYW"}

STREAMS = ("payouts", "transactions", "payout_summaries")


def minor_unit_exponent(currency: Optional[str]) -> int:
    code = (currency or "").upper()
    if code in _EXPONENT_0:
        return 0
    if code in _EXPONENT_3:
        return 3
    if code in _EXPONENT_4:
        return 4
    return 2


def format_money(minor: Optional[int], currency: Optional[str]) -> str:
    """Minor units -> major units with the currency, e.g. 123456 EUR -> '1,234.56 EUR'."""
    if minor is None:
        return f"- {currency or ''}".rstrip()
    exponent = minor_unit_exponent(currency)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(int(minor)), 10**exponent)
    text = f"{whole:,}" + (f".{frac:0{exponent}d}" if exponent else "")
    return f"{sign}{text} {currency or '???'}"


# ----------------------------------------------------------------------------------------- queries


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?",
        [table],
    ).fetchone()
    return bool(row and row[0])


def stream_tables(con: duckdb.DuckDBPyConnection) -> List[str]:
    """The synced streams' tables: the settlement ones first, then any other (PyAirbyte's own
    `_airbyte_*` tables and the demo's `_klarna_*` table left out)."""
    names = [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY table_name"
        ).fetchall()
        if not r[0].startswith("_")
    ]
    return list(STREAMS) + [n for n in names if n not in STREAMS]


def table_counts(con: duckdb.DuckDBPyConnection, tables: Optional[Sequence[str]] = None) -> Dict[str, int]:
    """Row count of each table (0 for a table not created yet); by default every stream table."""
    counts = {}
    for table in stream_tables(con) if tables is None else tables:
        counts[table] = con.execute(f'SELECT count(*) FROM main."{table}"').fetchone()[0] if table_exists(con, table) else 0
    return counts


def _total(field: str) -> str:
    """A payout totals field from the JSON column, in minor units (absent -> 0)."""
    return f"coalesce(CAST(json_extract(p.totals, '$.{field}') AS BIGINT), 0)"


def _sum_of(types: Sequence[str]) -> str:
    listed = ", ".join(f"'{t}'" for t in types)
    return f"coalesce(sum(t.amount) FILTER (WHERE t.type IN ({listed})), 0)"


def payouts_per_currency(con: duckdb.DuckDBPyConnection) -> List[Tuple[str, int, int, int, int, int, int]]:
    """(currency, payouts, sales, fees, returns, other, net settlement) in minor units, per currency.

    `other` is everything else that moved the settlement (reversals, commission, tax, holdback,
    release, charges, credits, fee refunds and corrections), so sales - fees - returns + other = net.
    """
    if not table_exists(con, "payouts"):
        return []
    return con.execute(
        f"""
        SELECT currency,
               count(*)                     AS payouts,
               sum(sale)                    AS sales,
               sum(fee)                     AS fees,
               sum(ret)                     AS returns,
               sum(net - (sale - fee - ret)) AS other,
               sum(net)                     AS net_settlement
        FROM (
            SELECT coalesce(p.currency_code, '???')   AS currency,
                   {_total('sale_amount')}            AS sale,
                   {_total('fee_amount')}             AS fee,
                   {_total('return_amount')}          AS ret,
                   {_total('settlement_amount')}      AS net
            FROM main.payouts p
        )
        GROUP BY currency
        ORDER BY currency
        """
    ).fetchall()


def _payout_vs_transactions_sql() -> str:
    """One row per payout and checked field: (payment_reference, currency, payout_date, field, payout
    total, transactions summed per the sign convention). Fields: every TOTALS_BY_TYPE key and
    settlement_amount."""
    per_type = ",\n               ".join(f"{_sum_of(types)} AS {name}" for name, types in TOTALS_BY_TYPE.items())
    signed = " + ".join(f"coalesce(x.{f}, 0)" for f in TOWARDS_MERCHANT) + " - " + " - ".join(
        f"coalesce(x.{f}, 0)" for f in TOWARDS_KLARNA
    )
    checks = [f"('{name}', {_total(name)}, coalesce(x.{name}, 0))" for name in TOTALS_BY_TYPE]
    checks.append(f"('settlement_amount', {_total('settlement_amount')}, {signed})")
    values = ",\n                ".join(checks)
    return f"""
        WITH x AS (
            SELECT t.payment_reference,
               {per_type}
            FROM main.transactions t
            GROUP BY t.payment_reference
        ),
        checks AS (
            SELECT p.payment_reference, p.currency_code, p.payout_date,
                   unnest([
                {values}
                   ]) AS c
            FROM main.payouts p
            LEFT JOIN x ON x.payment_reference = p.payment_reference
        )
        SELECT payment_reference, currency_code, payout_date, c[1] AS field, c[2] AS payout_total,
               c[3] AS transactions_sum
        FROM checks
    """


def reconciliation_mismatches(con: duckdb.DuckDBPyConnection) -> List[Tuple[str, str, Any, str, int, int]]:
    """Every (payment_reference, currency, payout_date, field, payout total, transactions sum) where
    the payout's total differs from its transactions summed by type; empty when all reconcile."""
    if not table_exists(con, "payouts") or not table_exists(con, "transactions"):
        return []
    return con.execute(
        f"""
        SELECT * FROM ({_payout_vs_transactions_sql()})
        WHERE payout_total IS DISTINCT FROM transactions_sum
        ORDER BY payout_date, payment_reference, field
        """
    ).fetchall()


def transaction_anomalies(con: duckdb.DuckDBPyConnection) -> Dict[str, int]:
    """Rows the sign convention cannot place: negative amounts, unknown types, and transactions
    whose payout is not in the payouts table."""
    if not table_exists(con, "transactions"):
        return {"negative_amount": 0, "unknown_type": 0, "without_payout": 0}
    known = ", ".join(f"'{t}'" for t in KNOWN_TYPES)
    has_payouts = table_exists(con, "payouts")
    without_payout = (
        "count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM main.payouts p WHERE p.payment_reference = t.payment_reference))"
        if has_payouts
        else "count(*)"
    )
    row = con.execute(
        f"""
        SELECT count(*) FILTER (WHERE t.amount < 0),
               count(*) FILTER (WHERE t.type IS NULL OR t.type NOT IN ({known})),
               {without_payout}
        FROM main.transactions t
        """
    ).fetchone()
    return {"negative_amount": row[0], "unknown_type": row[1], "without_payout": row[2]}


# ------------------------------------------------------------------------------------------ report


@dataclass
class Report:
    counts: Dict[str, int]
    per_currency: List[Tuple[str, int, int, int, int, int, int]]
    mismatches: List[Tuple[str, str, Any, str, int, int]]
    anomalies: Dict[str, int]
    payouts: int = 0
    non_reconciling: List[str] = field(default_factory=list)

    @property
    def reconciles(self) -> bool:
        return not self.mismatches


def build_report(con: duckdb.DuckDBPyConnection) -> Report:
    counts = table_counts(con)
    mismatches = reconciliation_mismatches(con)
    non_reconciling = list(dict.fromkeys(m[0] for m in mismatches))
    return Report(
        counts=counts,
        per_currency=payouts_per_currency(con),
        mismatches=mismatches,
        anomalies=transaction_anomalies(con),
        payouts=counts.get("payouts", 0),
        non_reconciling=non_reconciling,
    )


def report_for_db(db_path: str) -> Report:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return build_report(con)
    finally:
        con.close()


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], align_left: int = 1) -> List[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < align_left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]


def format_report(report: Report, max_listed: int = 20) -> str:
    out: List[str] = []
    c = report.counts
    out.append("Warehouse tables: " + ", ".join(f"{name} {n:,} rows" for name, n in c.items()))
    out.append("")
    out.append("Payouts per currency (major units; net = settlement_amount paid out)")
    rows = [
        (
            cur,
            f"{n:,}",
            format_money(sales, cur),
            format_money(fees, cur),
            format_money(returns, cur),
            format_money(other, cur),
            format_money(net, cur),
        )
        for cur, n, sales, fees, returns, other, net in report.per_currency
    ]
    if rows:
        out.extend("  " + line for line in _table(("currency", "payouts", "sales", "fees", "returns", "other", "net settlement"), rows))
    else:
        out.append("  (no payouts synced)")
    out.append("")
    out.append("Reconciliation: each payout's totals vs its transactions summed by type")
    out.append("  (amounts are positive, the type gives the direction; totals field = sum of its types;")
    out.append(f"   {SETTLEMENT_FORMULA})")
    if report.payouts == 0:
        out.append("  nothing to reconcile: no payouts synced")
    elif report.reconciles:
        out.append(f"  OK: all {report.payouts:,} payouts reconcile ({len(TOTALS_BY_TYPE) + 1} fields each)")
    else:
        out.append(
            f"  MISMATCH: {len(report.non_reconciling):,} of {report.payouts:,} payouts do not reconcile"
            f" ({len(report.mismatches):,} fields):"
        )
        listed = [
            (
                ref,
                str(payout_date)[:10] if payout_date is not None else "",
                fld,
                format_money(total, cur),
                format_money(tx_sum, cur),
                format_money((total or 0) - (tx_sum or 0), cur),
            )
            for ref, cur, payout_date, fld, total, tx_sum in report.mismatches[:max_listed]
        ]
        out.extend(
            "    " + line
            for line in _table(("payment_reference", "payout_date", "field", "payout total", "transactions", "difference"), listed, 3)
        )
        if len(report.mismatches) > max_listed:
            out.append(f"    ... and {len(report.mismatches) - max_listed:,} more")
    a = report.anomalies
    if a.get("negative_amount"):
        out.append(f"  note: {a['negative_amount']:,} transactions have a negative amount; the sign convention above assumes none")
    if a.get("unknown_type"):
        out.append(f"  note: {a['unknown_type']:,} transactions have a type outside the convention and are in no total")
    if a.get("without_payout"):
        out.append(f"  note: {a['without_payout']:,} transactions belong to no synced payout")
    return "\n".join(out)


def print_report(con: duckdb.DuckDBPyConnection, file=None) -> Report:
    report = build_report(con)
    print(format_report(report), file=file or sys.stdout)
    return report


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "klarna.duckdb"
    print(format_report(report_for_db(path)))
