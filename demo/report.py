"""The demo's report: reads the dbt_klarna marts that `dbt build` wrote into the DuckDB file.

The sync lands each stream as a table of schema `main` (PyAirbyte's DuckDB cache); the demo then runs
the dbt_klarna package, whose models land in schema `dbt_klarna` (DBT_SCHEMA) of the same file:

- `klarna__payout_reconciliation`: per payout, its totals against its transactions summed by type
  (integers in minor units, `_minor`), `is_reconciled`, `bank_deposit_amount`;
- `klarna__fees`: what Klarna charged per payout month, currency and fee type;
- `klarna__order_settlement`: per order, captured, refunded, paid out (in which payouts), pending
  and outstanding.

Sign convention (the emulator's; Klarna's settlement API documents amounts in minor units and the
type as the direction): every transaction `amount` is a positive integer and its `type` says which
way the money goes. A payout's totals are sums of amounts by type (`TOTALS_BY_TYPE`), and

    settlement_amount = sale + release + credit + fee_refund + fee_correction
                        - fee - return - reversal - commission - tax - holdback - charge

The package applies it (dbt_klarna/macros/klarna_settlement_convention.sql); the table here names the
fields the report lists. Every query function takes an open duckdb connection and returns plain rows;
`format_report` renders them as text and `write_html` as a page with inline SVG charts.
Usage: `python demo/report.py [klarna.duckdb]`.
"""

from __future__ import annotations

import html
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import duckdb

# payout totals field -> transaction types summed into it (as dbt_klarna's klarna_totals_by_type()).
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
CHECKED_FIELDS = tuple(TOTALS_BY_TYPE) + ("settlement_amount",)

DBT_SCHEMA = "dbt_klarna"  # where the demo's `dbt build` puts the dbt_klarna models
RECONCILIATION = f"{DBT_SCHEMA}.klarna__payout_reconciliation"
FEES = f"{DBT_SCHEMA}.klarna__fees"
ORDER_SETTLEMENT = f"{DBT_SCHEMA}.klarna__order_settlement"

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


def table_exists(con: duckdb.DuckDBPyConnection, table: str, schema: str = "main") -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, table],
    ).fetchone()
    return bool(row and row[0])


def _model_exists(con: duckdb.DuckDBPyConnection, qualified: str) -> bool:
    schema, name = qualified.split(".")
    return table_exists(con, name, schema)


def stream_tables(con: duckdb.DuckDBPyConnection) -> List[str]:
    """The synced streams' tables: the settlement ones first, then any other (PyAirbyte's own
    `_airbyte_*` tables and the demo's `_klarna_*` table left out; dbt's models are in DBT_SCHEMA)."""
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


def marts_built(con: duckdb.DuckDBPyConnection) -> bool:
    return all(_model_exists(con, m) for m in (RECONCILIATION, FEES, ORDER_SETTLEMENT))


def payouts_per_currency(con: duckdb.DuckDBPyConnection) -> List[Tuple[str, int, int, int, int, int, int]]:
    """(currency, payouts, sales, fees, returns, other, net settlement) in minor units, per currency,
    from the payouts' totals. `other` is everything else that moved the settlement (reversals,
    commission, tax, holdback, release, charges, credits, fee refunds and corrections), so
    sales - fees - returns + other = net."""
    if not _model_exists(con, RECONCILIATION):
        return []
    return con.execute(
        f"""
        SELECT coalesce(currency_code, '???') AS currency,
               count(*),
               sum(totals_sale_amount_minor),
               sum(totals_fee_amount_minor),
               sum(totals_return_amount_minor),
               sum(totals_settlement_amount_minor
                   - (totals_sale_amount_minor - totals_fee_amount_minor - totals_return_amount_minor)),
               sum(totals_settlement_amount_minor)
        FROM {RECONCILIATION}
        GROUP BY 1
        ORDER BY 1
        """
    ).fetchall()


def reconciliation_mismatches(con: duckdb.DuckDBPyConnection) -> List[Tuple[str, str, Any, str, int, int]]:
    """Every (payment_reference, currency, payout_date, field, payout total, transactions sum) where
    the mart says the payout does not reconcile; empty when all reconcile."""
    if not _model_exists(con, RECONCILIATION):
        return []
    columns = ", ".join(f"totals_{f}_minor, transactions_{f}_minor" for f in CHECKED_FIELDS)
    rows = con.execute(
        f"""
        SELECT payment_reference, currency_code, payout_date, {columns}
        FROM {RECONCILIATION}
        WHERE NOT is_reconciled
        ORDER BY payout_date, payment_reference
        """
    ).fetchall()
    out = []
    for ref, currency, payout_date, *values in rows:
        for i, name in enumerate(CHECKED_FIELDS):
            total, summed = values[2 * i], values[2 * i + 1]
            if total != summed:
                out.append((ref, currency, payout_date, name, total, summed))
    return out


def transaction_anomalies(con: duckdb.DuckDBPyConnection) -> Dict[str, int]:
    """Rows the sign convention cannot place: negative amounts, unknown types, and transactions
    whose payout is not in the payouts table (dbt's staging views)."""
    none = {"negative_amount": 0, "unknown_type": 0, "without_payout": 0}
    tx, payouts = f"{DBT_SCHEMA}.stg_klarna__transactions", f"{DBT_SCHEMA}.stg_klarna__payouts"
    if not (_model_exists(con, tx) and _model_exists(con, payouts)):
        return none
    row = con.execute(
        f"""
        SELECT count(*) FILTER (WHERE t.amount_minor < 0),
               count(*) FILTER (WHERE t.totals_field IS NULL),
               count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM {payouts} p WHERE p.payment_reference = t.payment_reference))
        FROM {tx} t
        """
    ).fetchone()
    return {"negative_amount": row[0], "unknown_type": row[1], "without_payout": row[2]}


def payouts_by_month(con: duckdb.DuckDBPyConnection) -> List[Tuple[str, Any, int, int, int, int]]:
    """(currency, month, payouts, sales, bank deposits = settlement, unreconciled payouts), minor units."""
    if not _model_exists(con, RECONCILIATION):
        return []
    return con.execute(
        f"""
        SELECT currency_code, payout_month, count(*), sum(totals_sale_amount_minor), sum(bank_deposit_amount_minor),
               count(*) FILTER (WHERE NOT is_reconciled)
        FROM {RECONCILIATION}
        GROUP BY 1, 2
        ORDER BY 1, 2
        """
    ).fetchall()


def fees_by_type(con: duckdb.DuckDBPyConnection) -> List[Tuple[str, str, int, int, Optional[float]]]:
    """(currency, fee type, transactions, net fees in minor units, share of the currency's sales)."""
    if not _model_exists(con, FEES):
        return []
    return con.execute(
        f"""
        WITH sales AS (
            SELECT currency_code, sum(month_sale_amount_minor) AS sales
            FROM (SELECT DISTINCT currency_code, fee_month, month_sale_amount_minor FROM {FEES})
            GROUP BY 1
        )
        SELECT f.currency_code, f.fee_type, sum(f.transaction_count), sum(f.net_fee_amount_minor),
               sum(f.net_fee_amount_minor) / nullif(any_value(s.sales), 0)
        FROM {FEES} f LEFT JOIN sales s USING (currency_code)
        GROUP BY 1, 2
        ORDER BY 1, 4 DESC
        """
    ).fetchall()


def order_settlement(con: duckdb.DuckDBPyConnection) -> List[Tuple[str, str, int, int, int, int, int]]:
    """(currency, settlement status, orders, net captured, paid out sales net of returns, pending, outstanding)."""
    if not _model_exists(con, ORDER_SETTLEMENT):
        return []
    return con.execute(
        f"""
        SELECT coalesce(currency_code, '???'), settlement_status, count(*), sum(net_captured_amount_minor),
               sum(paid_out_sale_amount_minor - paid_out_return_amount_minor),
               sum(pending_sale_amount_minor - pending_return_amount_minor), sum(outstanding_amount_minor)
        FROM {ORDER_SETTLEMENT}
        GROUP BY 1, 2
        ORDER BY 1, 2
        """
    ).fetchall()


# ------------------------------------------------------------------------------------------ report


@dataclass
class Report:
    counts: Dict[str, int]
    per_currency: List[Tuple[str, int, int, int, int, int, int]]
    mismatches: List[Tuple[str, str, Any, str, int, int]]
    anomalies: Dict[str, int]
    payouts: int = 0
    non_reconciling: List[str] = field(default_factory=list)
    modeled: bool = False  # the dbt_klarna marts are in the file
    by_month: List[Tuple[str, Any, int, int, int, int]] = field(default_factory=list)
    fees: List[Tuple[str, str, int, int, Optional[float]]] = field(default_factory=list)
    orders: List[Tuple[str, str, int, int, int, int, int]] = field(default_factory=list)

    @property
    def reconciles(self) -> bool:
        return (self.modeled or self.payouts == 0) and not self.mismatches


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
        modeled=marts_built(con),
        by_month=payouts_by_month(con),
        fees=fees_by_type(con),
        orders=order_settlement(con),
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
    elif not report.modeled:
        out.append(f"  not checked: the dbt_klarna marts are not in schema `{DBT_SCHEMA}` (run `dbt build`, see above)")
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
    if report.fees:
        out.append("")
        out.append("Fees Klarna charged, by type (net of fee refunds and corrections; share of the currency's sales)")
        rows = [
            (cur, kind, f"{n:,}", format_money(net, cur), f"{rate * 100:.2f}%" if rate is not None else "-")
            for cur, kind, n, net, rate in report.fees
        ]
        out.extend("  " + line for line in _table(("currency", "fee type", "transactions", "net fees", "of sales"), rows, 2))
    if report.orders:
        out.append("")
        out.append("Orders: where the money is (captured - refunded = paid out + pending + outstanding)")
        rows = [
            (cur, status, f"{n:,}", format_money(cap, cur), format_money(paid, cur), format_money(pend, cur), format_money(outs, cur))
            for cur, status, n, cap, paid, pend, outs in report.orders
        ]
        out.extend(
            "  " + line
            for line in _table(("currency", "status", "orders", "net captured", "paid out", "pending", "outstanding"), rows, 2)
        )
    return "\n".join(out)


# -------------------------------------------------------------------------------------------- html

PALETTE = ("#2563eb", "#16a34a", "#f59e0b", "#db2777", "#7c3aed", "#0891b2", "#dc2626", "#65a30d", "#9333ea", "#ea580c")


def _major(minor: Optional[int], currency: Optional[str]) -> float:
    return (minor or 0) / 10 ** minor_unit_exponent(currency)


def _short(value: float) -> str:
    a = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.0f}" if a >= 10 else f"{value:.2f}"


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def svg_grouped_bars(title: str, categories: Sequence[str], series: Sequence[Tuple[str, str, Sequence[float]]],
                     unit: str = "", width: int = 640, height: int = 260) -> str:
    """A vertical grouped bar chart: one group per category, one bar per series (name, colour, values)."""
    left, right, top, bottom = 64, 12, 28, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for _, _, vs in series for v in vs] or [0.0]
    high, low = max(0.0, max(values)), min(0.0, min(values))
    span = (high - low) or 1.0
    y = lambda v: top + (high - v) / span * plot_h  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{_esc(title)}">',
             f'<text x="{left}" y="16" class="t">{_esc(title)}</text>']
    for i in range(5):
        v = low + span * i / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="g"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" class="a" text-anchor="end">{_short(v)}</text>')
    n = max(1, len(categories))
    group_w = plot_w / n
    bar_w = min(36.0, max(1.0, group_w * 0.8 / max(1, len(series))))
    step = max(1, n // 12)
    for ci, category in enumerate(categories):
        x0 = left + ci * group_w + (group_w - bar_w * len(series)) / 2
        for si, (name, colour, vs) in enumerate(series):
            v = vs[ci]
            y1, y2 = sorted((y(v), y(0)))
            parts.append(f'<rect x="{x0 + si * bar_w:.1f}" y="{y1:.1f}" width="{bar_w - 1:.1f}" height="{max(0.5, y2 - y1):.1f}" '
                         f'fill="{colour}"><title>{_esc(category)} {_esc(name)}: {v:,.2f} {_esc(unit)}</title></rect>')
        if ci % step == 0:
            parts.append(f'<text x="{x0 + bar_w * len(series) / 2:.1f}" y="{height - bottom + 16}" class="a" text-anchor="middle">{_esc(category)}</text>')
    lx = left
    for name, colour, _ in series:
        parts.append(f'<rect x="{lx}" y="{height - 16}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{lx + 14}" y="{height - 7}" class="a">{_esc(name)}</text>')
        lx += 24 + 7 * len(name)
    parts.append("</svg>")
    return "".join(parts)


def svg_horizontal_bars(title: str, rows: Sequence[Tuple[str, float, str, str]], width: int = 640) -> str:
    """Horizontal bars: (label, value, colour, shown text) per row."""
    left, right, top, bar_h = 190, 250, 28, 22
    height = top + bar_h * max(1, len(rows)) + 8
    high = max([abs(v) for _, v, _, _ in rows] or [1.0]) or 1.0
    plot_w = width - left - right
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{_esc(title)}">',
             f'<text x="8" y="16" class="t">{_esc(title)}</text>']
    for i, (label, value, colour, shown) in enumerate(rows):
        yy = top + i * bar_h
        w = abs(value) / high * plot_w
        faded = ' opacity="0.55"' if value < 0 else ""
        parts.append(f'<text x="{left - 8}" y="{yy + 15}" class="a" text-anchor="end">{_esc(label)}</text>'
                     f'<rect x="{left}" y="{yy + 3}" width="{max(0.5, w):.1f}" height="{bar_h - 6}" fill="{colour}"'
                     f'{faded}><title>{_esc(label)}: {_esc(shown)}</title></rect>'
                     f'<text x="{left + w + 6:.1f}" y="{yy + 15}" class="a">{_esc(shown)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def html_path_for(db_path: Any) -> Path:
    """The HTML report next to the DuckDB file: klarna.duckdb -> klarna.report.html."""
    path = Path(db_path)
    return path.with_name(path.stem + ".report.html")


def format_html(report: Report) -> str:
    currencies = sorted({row[0] for row in report.by_month} | {row[0] for row in report.fees})
    sections: List[str] = []

    # payouts and bank deposits over time, one chart per currency
    charts = []
    for cur in currencies:
        rows = [r for r in report.by_month if r[0] == cur]
        months = [str(r[1])[:7] for r in rows]
        charts.append(svg_grouped_bars(
            f"{cur}: sales and bank deposits per payout month ({sum(r[2] for r in rows):,} payouts)",
            months,
            [("sales", PALETTE[0], [_major(r[3], cur) for r in rows]),
             ("bank deposits (settlement)", PALETTE[1], [_major(r[4], cur) for r in rows])],
            unit=cur,
        ))
    sections.append("<h2>Payouts and deposits over time</h2>" + ("".join(charts) or "<p>No payouts synced.</p>"))

    # fees by type, per currency
    charts = []
    for cur in currencies:
        rows = [r for r in report.fees if r[0] == cur]
        charts.append(svg_horizontal_bars(
            f"{cur}: fees by type (net; refunds and corrections negative)",
            [(kind, _major(net, cur), PALETTE[i % len(PALETTE)],
              format_money(net, cur) + (f" ({rate * 100:.2f}% of sales)" if rate is not None else ""))
             for i, (_, kind, _n, net, rate) in enumerate(rows)],
            width=760,
        ))
    sections.append("<h2>Fees by type</h2>" + ("".join(charts) or "<p>No fees.</p>"))

    # reconciliation status per currency
    status_rows = []
    for cur, n, *_ in report.per_currency:
        bad = len({m[0] for m in report.mismatches if m[1] == cur})
        status_rows.append((f"{cur} reconciled", float(n - bad), PALETTE[1], f"{n - bad:,} of {n:,}"))
        status_rows.append((f"{cur} not reconciled", float(bad), PALETTE[6], f"{bad:,}"))
    verdict = (
        "<p class='ok'>All payouts reconcile: every totals field equals its transactions.</p>" if report.reconciles and report.payouts
        else "<p>Nothing to reconcile.</p>" if not report.payouts
        else f"<p class='bad'>{len(report.non_reconciling):,} of {report.payouts:,} payouts do not reconcile.</p>"
    )
    mismatch_table = ""
    if report.mismatches:
        body = "".join(
            f"<tr><td>{_esc(ref)}</td><td>{_esc(str(d)[:10])}</td><td>{_esc(fld)}</td><td class='n'>{_esc(format_money(t, cur))}</td>"
            f"<td class='n'>{_esc(format_money(x, cur))}</td><td class='n'>{_esc(format_money((t or 0) - (x or 0), cur))}</td></tr>"
            for ref, cur, d, fld, t, x in report.mismatches[:200]
        )
        mismatch_table = ("<table><tr><th>payment_reference</th><th>payout date</th><th>field</th><th>payout total</th>"
                          f"<th>transactions</th><th>difference</th></tr>{body}</table>")
    sections.append("<h2>Reconciliation status</h2>" + verdict
                    + (svg_horizontal_bars("Payouts by reconciliation status", status_rows) if status_rows else "") + mismatch_table)

    # orders
    if report.orders:
        body = "".join(
            f"<tr><td>{_esc(cur)}</td><td>{_esc(st)}</td><td class='n'>{n:,}</td><td class='n'>{_esc(format_money(c, cur))}</td>"
            f"<td class='n'>{_esc(format_money(p, cur))}</td><td class='n'>{_esc(format_money(pe, cur))}</td>"
            f"<td class='n'>{_esc(format_money(o, cur))}</td></tr>"
            for cur, st, n, c, p, pe, o in report.orders
        )
        sections.append("<h2>Orders: where the money is</h2><table><tr><th>currency</th><th>status</th><th>orders</th>"
                        "<th>net captured</th><th>paid out</th><th>pending</th><th>outstanding</th></tr>" + body + "</table>")

    counts = ", ".join(f"{name} {n:,}" for name, n in report.counts.items())
    style = (
        "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#111;max-width:1100px}"
        "h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}"
        "svg{display:block;margin:8px 0 16px}.t{font-size:13px;font-weight:600}.a{font-size:11px;fill:#444}"
        ".g{stroke:#e5e7eb}table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}"
        ".n{text-align:right;font-variant-numeric:tabular-nums}.ok{color:#15803d;font-weight:600}.bad{color:#b91c1c;font-weight:600}"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Klarna settlements report</title>"
        f"<style>{style}</style></head><body><h1>Klarna settlements report</h1>"
        f"<p>Warehouse rows: {_esc(counts)}. Amounts in major units of each currency; models from dbt_klarna.</p>"
        + "".join(sections) + "</body></html>\n"
    )


def write_html(report: Report, path: Any) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(format_html(report), encoding="utf-8")
    tmp.replace(path)
    return path


def print_report(con: duckdb.DuckDBPyConnection, file=None) -> Report:
    report = build_report(con)
    print(format_report(report), file=file or sys.stdout)
    return report


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "klarna.duckdb"
    result = report_for_db(path)
    print(format_report(result))
    print(f"Charts: {write_html(result, html_path_for(path))}")
