"""The demo (README's first command) end to end, and its report on hand-made data.

The end-to-end tests run `python demo/run_demo.py` exactly as `make demo` does (a subprocess without
a terminal, no Klarna config: the bundled emulator), three times into one DuckDB file under tmp_path:
a first sync, a rerun, and a rerun with `--grow 3`. They compare the warehouse with the emulator's
dataset, which is a pure function of its spec and growth steps, rebuilt here in-process.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

duckdb = pytest.importorskip("duckdb", reason="the demo's extra (PyAirbyte, DuckDB) is not installed")

from connector_runner import run_in_own_session  # noqa: E402
from klarna_emulator import Dataset, DatasetSpec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo" / "run_demo.py"
sys.path.insert(0, str(REPO / "demo"))

import report  # noqa: E402  (demo/report.py)
import run_demo  # noqa: E402  (demo/run_demo.py: its defaults, no sync on import)

DEMO_TIMEOUT_S = 600  # one demo run: 30-110 s here (sync + dbt build); generous for a loaded 2-core CI machine
DBT_TIMEOUT_S = 300  # one dbt build of a hand-made warehouse: about 15 s
GROW = 3
STREAMS = ("payouts", "transactions", "payout_summaries")  # the settlement streams, checked exactly
EMULATOR_PASSWORD = "emulator-secret"  # the emulator's default, which the demo uses


def run_demo_process(db: Path, *args: str) -> Tuple[int, str, str]:
    """Run the demo in its own process group; whatever is left of the group (emulator, connector)
    is killed on the way out, also when the run times out."""
    env = {k: v for k, v in os.environ.items() if k != "KLARNA_CONFIG"}
    env["PYTHONUNBUFFERED"] = "1"
    return run_in_own_session([sys.executable, str(DEMO), "--db", str(db), *args], DEMO_TIMEOUT_S, cwd=str(db.parent), env=env)


def new_rows(stdout: str) -> Dict[str, int]:
    match = re.search(r"^New rows: (.+)$", stdout, re.MULTILINE)
    assert match, stdout
    return {name: int(n.replace(",", "")) for name, n in re.findall(r"(\w+) \+([\d,]+)", match.group(1))}


def settlement(counts: Dict[str, int]) -> Dict[str, int]:
    return {name: counts[name] for name in STREAMS}


def warehouse(db: Path) -> Dict[str, object]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {
            "all_counts": report.table_counts(con),
            "counts": report.table_counts(con, STREAMS),
            "payment_references": {r[0] for r in con.execute("SELECT payment_reference FROM payouts").fetchall()},
            "distinct_transaction_keys": con.execute("SELECT count(DISTINCT transaction_key) FROM transactions").fetchone()[0],
            "report": report.build_report(con),
        }
    finally:
        con.close()


def expected(dataset: Dataset) -> Dict[str, object]:
    payouts = dataset.payouts()
    months = {(p["currency_code"], p["payout_date"][:7]) for p in payouts}
    return {
        "counts": {
            "payouts": dataset.payout_count,
            "transactions": dataset.transaction_count(),
            "payout_summaries": len(months),  # one summary per currency and calendar month
        },
        "payment_references": {p["payment_reference"] for p in payouts},
    }


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory) -> List[Dict[str, object]]:
    """First run, rerun, rerun with --grow: each run's exit code, output and warehouse."""
    if importlib.util.find_spec("airbyte") is None:
        pytest.skip("PyAirbyte (the demo's extra) is not installed")
    db = tmp_path_factory.mktemp("demo") / "klarna.duckdb"
    runs = []
    for args in ((), (), ("--grow", str(GROW))):
        code, out, err = run_demo_process(db, *args)
        assert code == 0, f"demo {' '.join(args)} exited {code}\nstdout:\n{out}\nstderr:\n{err}"
        runs.append({"args": args, "out": out, "err": err, "db": db, **warehouse(db)})
    return runs


def base_dataset() -> Dataset:
    return Dataset(DatasetSpec(**run_demo.DEFAULT_SPEC))


def test_first_run_lands_every_row_and_reconciles(demo_runs):
    run = demo_runs[0]
    want = expected(base_dataset())
    assert run["counts"] == want["counts"]
    assert run["counts"]["payout_summaries"] > 0
    assert run["payment_references"] == want["payment_references"]
    assert run["distinct_transaction_keys"] == want["counts"]["transactions"]
    assert settlement(new_rows(run["out"])) == want["counts"]
    assert new_rows(run["out"]) == run["all_counts"]  # every stream the connector has, each table new
    assert "Sync: first run" in run["out"]
    # dbt_klarna built after the sync, the report read its marts, the HTML page sits next to the file
    assert re.search(r"^dbt build succeeded in [\d.]+ s: pass \d+, success \d+$", run["out"], re.MULTILINE), run["out"]
    html_page = report.html_path_for(run["db"])
    assert f"Charts: {html_page}" in run["out"]
    page = html_page.read_text()
    assert page.count("<svg") >= 3 and "All payouts reconcile" in page and "<script" not in page

    result = run["report"]
    assert result.reconciles, result.mismatches
    assert result.payouts == want["counts"]["payouts"]
    assert f"OK: all {want['counts']['payouts']:,} payouts reconcile" in run["out"]
    # per currency: every payout counted once, in major units with its currency
    assert sum(row[1] for row in result.per_currency) == want["counts"]["payouts"]
    for currency, *_ in result.per_currency:
        assert re.search(rf"^  {currency} +\d+ +[\d,]+\.\d\d {currency}", run["out"], re.MULTILINE), run["out"]


def test_rerun_is_incremental_and_finds_nothing_new(demo_runs):
    first, rerun = demo_runs[0], demo_runs[1]
    assert "Sync: incremental" in rerun["out"]
    assert new_rows(rerun["out"]) == {name: 0 for name in first["all_counts"]}  # every stream
    assert rerun["all_counts"] == first["all_counts"]
    # incremental: the connector re-read only its lookback window, not the whole history
    records_read = int(re.search(r"read ([\d,]+) records from Klarna", rerun["out"]).group(1).replace(",", ""))
    assert 0 < records_read < sum(first["all_counts"].values())
    assert rerun["report"].reconciles


def test_growth_is_synced_incrementally_with_exactly_the_new_rows(demo_runs):
    before, grown = demo_runs[1], demo_runs[2]
    dataset = base_dataset()
    dataset.grow(new_payouts=GROW, late_payouts=run_demo.GROW_LATE_PAYOUTS)
    want = expected(dataset)

    assert "Sync: incremental" in grown["out"]
    assert grown["counts"] == want["counts"]
    assert grown["payment_references"] == want["payment_references"]
    reported = new_rows(grown["out"])
    assert reported == {name: n - before["all_counts"].get(name, 0) for name, n in grown["all_counts"].items()}
    assert settlement(reported) == {name: want["counts"][name] - before["counts"][name] for name in STREAMS}
    assert new_rows(grown["out"])["payouts"] == GROW + run_demo.GROW_LATE_PAYOUTS  # the late payout too
    assert new_rows(grown["out"])["transactions"] == (GROW + 1) * run_demo.DEFAULT_SPEC["transactions_per_payout"]
    assert grown["report"].reconciles, grown["report"].mismatches

    # the growth is kept next to the DuckDB file, so the next run's emulator serves the same data
    sidecar = json.loads(run_demo.emulator_state_path(grown["db"]).read_text())
    assert sidecar["growth"] == [[GROW, run_demo.GROW_LATE_PAYOUTS]]
    assert {k: sidecar["spec"][k] for k in run_demo.DEFAULT_SPEC} == run_demo.DEFAULT_SPEC


def test_demo_never_prints_the_password(demo_runs):
    for run in demo_runs:
        assert EMULATOR_PASSWORD not in run["out"] + run["err"]


# ------------------------------------------------------------------------ report on hand-made data


AIRBYTE_COLUMNS = ("_airbyte_raw_id", "_airbyte_extracted_at", "_airbyte_meta")
RAW_COLUMNS = {  # the columns of each stream table the dbt_klarna staging models read
    "payouts": ("totals", "payment_reference", "payout_date", "currency_code", "currency_code_of_registration_country",
                "merchant_settlement_type", "merchant_id"),
    "transactions": ("transaction_key", "payment_reference", "payout_date", "type", "detailed_type", "currency_code", "amount",
                     "vat_amount", "vat_rate", "tax_in_currency_of_registration_country", "currency_code_of_registration_country",
                     "sale_date", "capture_date", "order_id", "short_order_id", "capture_id", "refund_id", "merchant_reference1",
                     "merchant_reference2", "merchant_capture_reference", "merchant_refund_reference", "reversal_reference",
                     "purchase_country", "shipping_country", "initial_payment_method_type", "initial_number_of_installments",
                     "klarna_comment"),
    "payout_summaries": ("summary_settlement_currency", "summary_month", "summary_payout_date_start", "summary_payout_date_end",
                         *(f"summary_total_{f}_amount" for f in ("sale", "fee", "return", "reversal", "commission", "tax",
                                                                  "holdback", "release", "repay", "fee_correction", "settlement"))),
    "orders": ("order_id", "status", "fraud_status", "purchase_currency", "purchase_country", "locale", "klarna_reference",
               "merchant_reference1", "merchant_reference2", "created_at", "expires_at", "payout_date", "order_amount",
               "original_order_amount", "captured_amount", "refunded_amount", "remaining_authorized_amount", "_ab_cdc_deleted_at"),
    "captures": ("capture_id", "order_id", "captured_at", "payout_date", "reference", "klarna_reference", "description",
                 "captured_amount", "refunded_amount"),
    "refunds": ("refund_id", "order_id", "refunded_at", "payout_date", "reference", "description", "credit_invoice",
                "refunded_amount"),
}


def raw_type(column: str) -> str:
    if column in ("totals", "_airbyte_meta"):
        return "JSON"
    if column == "credit_invoice":
        return "BOOLEAN"
    if column.endswith(("amount", "vat_rate", "installments")) or column == "tax_in_currency_of_registration_country":
        return "BIGINT"
    if column.endswith(("_date", "_at", "_month", "_start", "_end")):
        return "TIMESTAMP"
    return "VARCHAR"


def make_warehouse(path: Path, payouts, transactions) -> None:
    """Tables shaped like PyAirbyte's (schema `main`, `totals` a JSON column, Airbyte's columns), then
    the dbt_klarna models built on them, as the demo does after a sync."""
    con = duckdb.connect(str(path))
    try:
        for table, columns in RAW_COLUMNS.items():
            ddl = ", ".join(f"{c} {raw_type(c)}" for c in (*columns, *AIRBYTE_COLUMNS))
            con.execute(f"CREATE TABLE main.{table} ({ddl})")
        for ref, date, currency, totals in payouts:
            con.execute(
                "INSERT INTO payouts (totals, payment_reference, payout_date, currency_code, _airbyte_raw_id) VALUES (?, ?, ?, ?, ?)",
                [json.dumps(totals), ref, date, currency, f"raw-{ref}"],
            )
        for n, (ref, kind, amount) in enumerate(transactions):
            con.execute(
                "INSERT INTO transactions (amount, type, payment_reference, transaction_key, _airbyte_raw_id) VALUES (?, ?, ?, ?, ?)",
                [amount, kind, ref, f"{ref}:{n}", f"raw-{ref}:{n}"],
            )
    finally:
        con.close()
    return run_demo.run_dbt(path, timeout=DBT_TIMEOUT_S, echo=False)


def totals(**amounts) -> dict:
    fields = {name: 0 for name in report.TOTALS_BY_TYPE}
    fields.update(amounts)
    fields["settlement_amount"] = amounts.get(
        "settlement_amount",
        sum(fields[f] for f in report.TOWARDS_MERCHANT) - sum(fields[f] for f in report.TOWARDS_KLARNA),
    )
    return fields


def test_report_lists_the_payout_that_does_not_reconcile(tmp_path):
    day = dt.datetime(2024, 3, 1, 6)
    dbt = make_warehouse(
        tmp_path / "w.duckdb",
        payouts=[
            # reconciles: every type the convention knows
            ("GOOD", day, "EUR", totals(sale_amount=10_000, fee_amount=300, return_amount=1_000, reversal_amount=700,
                                        commission_amount=50, tax_amount=57, holdback_amount=1_000, release_amount=400,
                                        charge_amount=25, credit_amount=10, fee_refund_amount=30, fee_correction_amount=5)),
            # fee_amount says 250 but the FEE rows sum to 200 (and settlement follows the wrong fee)
            ("BAD", day, "SEK", totals(sale_amount=5_000, fee_amount=250)),
            # zero-decimal currency, no transactions, zero totals: reconciles
            ("EMPTY", day, "JPY", totals()),
            ("YEN", day, "JPY", totals(sale_amount=1_500, fee_amount=45)),
        ],
        transactions=[
            ("GOOD", "SALE", 6_000), ("GOOD", "SALE", 4_000), ("GOOD", "FEE", 300), ("GOOD", "RETURN", 1_000),
            ("GOOD", "REVERSAL", 500), ("GOOD", "REVERSAL_MERCHANT_PROTECTION", 200), ("GOOD", "COMMISSION", 50),
            ("GOOD", "TAX", 57), ("GOOD", "HOLDBACK", 1_000), ("GOOD", "RELEASE", 400), ("GOOD", "CHARGE", 25),
            ("GOOD", "CREDIT", 10), ("GOOD", "FEE_REFUND", 30), ("GOOD", "CORRECTION", 5),
            ("BAD", "SALE", 5_000), ("BAD", "FEE", 120), ("BAD", "FEE", 80),
            ("YEN", "SALE", 1_500), ("YEN", "FEE", 45),
        ],
    )
    # dbt builds everything; only its reconciliation test fails, and it names BAD
    assert [(name, status) for name, status, _ in dbt.failed] == [("klarna_payouts_reconcile", "fail")], dbt.output[-3000:]
    result = report.report_for_db(str(tmp_path / "w.duckdb"))

    assert result.modeled
    assert not result.reconciles
    assert result.non_reconciling == ["BAD"]
    mismatched = {(ref, field): (total, summed) for ref, _, _, field, total, summed in result.mismatches}
    assert mismatched == {("BAD", "fee_amount"): (250, 200), ("BAD", "settlement_amount"): (4_750, 4_800)}

    per_currency = {row[0]: row[1:] for row in result.per_currency}
    good_net = 10_000 + 400 + 10 + 30 + 5 - 300 - 1_000 - 700 - 50 - 57 - 1_000 - 25
    assert per_currency["EUR"] == (1, 10_000, 300, 1_000, good_net - (10_000 - 300 - 1_000), good_net)
    assert per_currency["JPY"] == (2, 1_500, 45, 0, 0, 1_455)

    text = report.format_report(result)
    assert "MISMATCH: 1 of 4 payouts do not reconcile" in text
    assert re.search(r"BAD +2024-03-01 +fee_amount +2\.50 SEK +2\.00 SEK +0\.50 SEK", text), text
    assert "1,455 JPY" in text  # JPY has no minor unit
    assert f"{good_net // 100:,}.{good_net % 100:02d} EUR" in text


def test_report_when_everything_reconciles_and_on_an_empty_warehouse(tmp_path):
    dbt = make_warehouse(tmp_path / "ok.duckdb", [("P", dt.datetime(2024, 1, 1), "EUR", totals(sale_amount=100))], [("P", "SALE", 100)])
    assert dbt.ok and not dbt.failed, dbt.output[-3000:]
    ok = report.report_for_db(str(tmp_path / "ok.duckdb"))
    assert ok.reconciles and ok.payouts == 1
    assert "OK: all 1 payouts reconcile" in report.format_report(ok)

    duckdb.connect(str(tmp_path / "empty.duckdb")).close()
    empty = report.report_for_db(str(tmp_path / "empty.duckdb"))
    assert empty.counts == {name: 0 for name in STREAMS} and empty.reconciles
    assert "no payouts synced" in report.format_report(empty)


@pytest.mark.parametrize(
    "minor, currency, shown",
    [
        (123_456, "EUR", "1,234.56 EUR"),
        (-5, "USD", "-0.05 USD"),
        (1_500, "JPY", "1,500 JPY"),
        (1_500, "KRW", "1,500 KRW"),
        (1_234_567, "BHD", "1,234.567 BHD"),
        (7, "KWD", "0.007 KWD"),
        (0, "SEK", "0.00 SEK"),
    ],
)
def test_money_is_shown_in_major_units_per_iso_4217(minor, currency, shown):
    assert report.format_money(minor, currency) == shown


def test_emulator_state_refuses_a_different_dataset_for_the_same_file(tmp_path):
    db = tmp_path / "k.duckdb"
    spec = {**run_demo.DEFAULT_SPEC, "currencies": ["EUR"]}
    run_demo.save_emulator_state(db, spec, [[2, 1]])
    assert run_demo.load_emulator_state(db, dict(run_demo.DEFAULT_SPEC)) == (spec, [[2, 1]])
    with pytest.raises(run_demo.DemoError, match="payouts=120, not 7"):
        run_demo.load_emulator_state(db, {**run_demo.DEFAULT_SPEC, "payouts": 7})
