"""The dbt_klarna package on a real sync: the demo (demo/run_demo.py, exactly as `make demo` runs it)
syncs a small emulator dataset into a DuckDB file under tmp_path and runs `dbt build` on it; these
tests then check the marts against the emulator's dataset and rerun dbt on copies of the file:

- everything reconciles: `dbt build` succeeds, one reconciliation row per payout, all reconciled;
- the emulator's `unreconciled_payouts` makes the oldest payout's settlement_amount 100 minor
  units off: `dbt build` fails, its test `klarna_payouts_reconcile` fails and its stored failing
  rows name exactly that payout;
- a `pending_transactions` table (the connector from 2.0.0 on) shows up in klarna__order_settlement.
- identical pending rows of one movement, one of them paid out since: the other two stay, and the
  pending test passes on them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Dict, Tuple

import pytest

duckdb = pytest.importorskip("duckdb", reason="the demo's extra (PyAirbyte, DuckDB) is not installed")

from connector_runner import run_in_own_session  # noqa: E402
from klarna_emulator import Dataset, DatasetSpec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo" / "run_demo.py"
sys.path.insert(0, str(REPO / "demo"))

import report  # noqa: E402  (demo/report.py)
import run_demo  # noqa: E402  (demo/run_demo.py)

pytestmark = pytest.mark.slow

DEMO_TIMEOUT_S = 600  # sync + dbt build of a small dataset: about 40 s here
DBT_TIMEOUT_S = 300
SPEC = {"seed": 7, "payouts": 6, "transactions_per_payout": 12}
RECONCILIATION_TEST = "klarna_payouts_reconcile"


def demo(db: Path, *args: str) -> Tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KLARNA_CONFIG"}
    env["PYTHONUNBUFFERED"] = "1"
    spec_args = ["--seed", str(SPEC["seed"]), "--payouts", str(SPEC["payouts"]),
                 "--transactions-per-payout", str(SPEC["transactions_per_payout"])]
    return run_in_own_session([sys.executable, str(DEMO), "--db", str(db), *spec_args, *args], DEMO_TIMEOUT_S,
                              cwd=str(db.parent), env=env)


def rows(db: Path, sql: str, params=()):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def stored_failures(db: Path, test_name: str):
    """The failing rows dbt stored for a test (store_failures: schema <target schema>_dbt_test__audit)."""
    return rows(db, f'SELECT * FROM "{report.DBT_SCHEMA}_dbt_test__audit"."{test_name}"')


def synced(tmp_path_factory, name: str, *demo_args: str) -> Dict[str, object]:
    if importlib.util.find_spec("airbyte") is None or importlib.util.find_spec("dbt") is None:
        pytest.skip("the demo's extra (PyAirbyte, dbt-duckdb) is not installed")
    db = tmp_path_factory.mktemp(name) / "klarna.duckdb"
    code, out, err = demo(db, *demo_args)
    return {"db": db, "code": code, "out": out, "err": err}


@pytest.fixture(scope="module")
def reconciled(tmp_path_factory):
    return synced(tmp_path_factory, "dbt-ok")


@pytest.fixture(scope="module")
def unreconciled(tmp_path_factory):
    # The emulator's own flag: its oldest payout's totals.settlement_amount is 100 minor units too high.
    return synced(tmp_path_factory, "dbt-bad", "--unreconciled-payouts", "1")


def test_dbt_build_succeeds_on_a_synced_emulator(reconciled):
    run = reconciled
    assert run["code"] == 0, f"stdout:\n{run['out']}\nstderr:\n{run['err']}"
    assert "dbt build succeeded" in run["out"], run["out"]
    dataset = Dataset(DatasetSpec(**SPEC))
    db = run["db"]

    # dbt once more, on the file the demo left: every model and test passes, none skipped
    outcome = run_demo.run_dbt(db, timeout=DBT_TIMEOUT_S, echo=False)
    assert outcome.ok, outcome.output[-3000:]
    assert outcome.failed == []
    assert outcome.counts.get("success", 0) >= 9  # 6 staging views + 3 marts (pending_transactions off with 1.4.0)
    assert outcome.counts.get("pass", 0) >= 20

    recon = rows(db, f"SELECT payment_reference, is_reconciled, settlement_difference_minor, transaction_count, "
                     f"bank_deposit_amount_minor FROM {report.RECONCILIATION}")
    payouts = {p["payment_reference"]: p for p in dataset.payouts()}
    assert {r[0] for r in recon} == set(payouts)
    assert all(r[1] and r[2] == 0 for r in recon)
    assert sum(r[3] for r in recon) == dataset.transaction_count()
    # the deposit to match against the bank is each payout's settlement amount, as Klarna sends it
    assert {r[0]: r[4] for r in recon} == {ref: p["totals"]["settlement_amount"] for ref, p in payouts.items()}

    # fees: net fees per currency equal the payouts' fee-like totals
    fees = dict(rows(db, f"SELECT currency_code, sum(net_fee_amount_minor) FROM {report.FEES} GROUP BY 1"))
    expected_fees: Dict[str, int] = {}
    for p in payouts.values():
        t = p["totals"]
        net = t["fee_amount"] + t["commission_amount"] + t["tax_amount"] + t["charge_amount"] - t["fee_refund_amount"] - t["fee_correction_amount"]
        expected_fees[p["currency_code"]] = expected_fees.get(p["currency_code"], 0) + net
    assert fees == {c: n for c, n in expected_fees.items() if n or c in fees}

    # orders: one row each, the money either paid out or accounted for
    orders = rows(db, f"SELECT order_id, payout_count, payment_references, outstanding_amount_minor, settlement_status "
                      f"FROM {report.ORDER_SETTLEMENT}")
    assert len(orders) == rows(db, "SELECT count(DISTINCT order_id) FROM main.orders")[0][0] > 0
    for order_id, payout_count, references, outstanding, status in orders:
        assert payout_count >= 1 and all(ref in payouts for ref in references.split(", ")), order_id
        assert status in ("paid_out", "awaiting_settlement", "over_settled", "not_captured")  # never no_order_details here


def test_reconciliation_test_fails_naming_the_unreconciled_payout(unreconciled):
    run = unreconciled
    spec = DatasetSpec(**SPEC, unreconciled_payouts=1)
    bad = Dataset(spec).unreconciled_payment_references()
    assert len(bad) == 1
    db = run["db"]

    # the demo: dbt build fails on the reconciliation test; the text report lists the payout
    assert run["code"] == 1, f"stdout:\n{run['out']}\nstderr:\n{run['err']}"
    assert "dbt build FAILED" in run["out"]
    assert f"FAIL: {RECONCILIATION_TEST}" in run["out"], run["out"]
    assert f"MISMATCH: 1 of {SPEC['payouts']} payouts do not reconcile" in run["out"]
    assert bad[0] in run["out"]

    outcome = run_demo.run_dbt(db, timeout=DBT_TIMEOUT_S, echo=False)
    assert not outcome.ok
    assert [(name, status) for name, status, _ in outcome.failed] == [(RECONCILIATION_TEST, "fail")], outcome.failed
    failing = stored_failures(db, RECONCILIATION_TEST)
    assert [r[1] for r in failing] == bad  # payment_reference, after source_relation
    by_column = dict(zip(("source_relation", "payment_reference", "payout_date", "currency_code", "mismatched_fields"), failing[0]))
    assert by_column["source_relation"] == "main"  # PyAirbyte's DuckDB schema, the demo's one store
    assert by_column["mismatched_fields"] == "settlement_amount"
    assert failing[0][-1] == 100  # settlement_difference_minor: the emulator's offset
    assert rows(db, f"SELECT count(*) FROM {report.RECONCILIATION} WHERE is_reconciled")[0][0] == SPEC["payouts"] - 1


def test_pending_transactions_show_in_order_settlement(reconciled, tmp_path):
    """The connector from 2.0.0 on syncs pending_transactions (transactions not in a payout yet): with
    the table there, the demo turns klarna__using_pending_transactions on and the order's pending
    capture shows as pending, not outstanding."""
    db = tmp_path / "pending.duckdb"
    shutil.copy(reconciled["db"], db)
    con = duckdb.connect(str(db))
    try:
        if not report.table_exists(con, "pending_transactions"):  # no pending transaction at all: PyAirbyte wrote no table
            con.execute("CREATE TABLE main.pending_transactions AS SELECT *, CAST(NULL AS VARCHAR) AS pending_as_of FROM main.transactions WHERE false")
        columns = [r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' AND table_name = 'pending_transactions'"
        ).fetchall()]
        pending_before = con.execute("SELECT count(*) FROM main.pending_transactions").fetchone()[0]
        order_id, currency = con.execute(
            "SELECT order_id, purchase_currency FROM main.orders WHERE status = 'CAPTURED' AND order_id NOT IN "
            "(SELECT order_id FROM main.pending_transactions WHERE order_id IS NOT NULL) ORDER BY order_id LIMIT 1"
        ).fetchone()
        # a new capture of 500 minor units, not yet paid out: the order's captured amount grows and
        # one SALE row waits in pending_transactions (the transaction's columns, no payout)
        con.execute("UPDATE main.orders SET captured_amount = captured_amount + 500 WHERE order_id = ?", [order_id])
        # in the stream's latest listing (every row of one sync carries that sync's pending_as_of)
        listed = "coalesce((SELECT max(pending_as_of) FROM main.pending_transactions), '2099-01-01T00:00:00Z')"
        replaced = {"transaction_key": "'pending-1'", "amount": "500", "payment_reference": "NULL", "payout_date": "NULL", "pending_as_of": listed}
        select = ", ".join(f"{replaced.get(c, c)} AS {c}" for c in columns)
        con.execute(
            f"INSERT INTO main.pending_transactions BY NAME SELECT {select} FROM main.transactions "
            "WHERE order_id = ? AND type = 'SALE' LIMIT 1",
            [order_id],
        )
    finally:
        con.close()
    assert run_demo.dbt_vars(db)["klarna__using_pending_transactions"] is True

    outcome = run_demo.run_dbt(db, timeout=DBT_TIMEOUT_S, echo=False)
    assert outcome.ok, outcome.output[-3000:]
    assert outcome.counts.get("success", 0) >= 10  # stg_klarna__pending_transactions too
    row = rows(db, f"SELECT pending_transaction_count, pending_sale_amount_minor, outstanding_amount_minor, settlement_status, "
                   f"currency_code FROM {report.ORDER_SETTLEMENT} WHERE order_id = ?", [order_id])[0]
    assert row == (1, 500, 0, "pending_payout", currency)
    assert rows(db, f"SELECT count(*) FROM {report.DBT_SCHEMA}.stg_klarna__pending_transactions")[0][0] == pending_before + 1

    # the same file with the var off: the pending capture is outstanding instead
    off = run_demo.run_dbt(db, extra_vars={"klarna__using_pending_transactions": False}, timeout=DBT_TIMEOUT_S, echo=False)
    assert off.ok, off.output[-3000:]
    row = rows(db, f"SELECT pending_transaction_count, outstanding_amount_minor, settlement_status FROM {report.ORDER_SETTLEMENT} "
                   "WHERE order_id = ?", [order_id])[0]
    assert row == (0, 500, "awaiting_settlement")


def test_identical_pending_rows_stay_but_for_the_ones_paid_out_and_the_pending_test_agrees(reconciled, tmp_path):
    """Three identical pending rows of one money movement, listed before the sync that read its paid-out
    transaction: stg_klarna__pending_transactions keeps the two not yet paid out (the n-th pending row needs n
    paid transactions), and klarna_pending_not_in_a_payout, which judges each kept row by the model's own
    movement_occurrence, passes on that right answer."""
    db = tmp_path / "identical.duckdb"
    shutil.copy(reconciled["db"], db)
    con = duckdb.connect(str(db))
    try:
        if not report.table_exists(con, "pending_transactions"):
            con.execute("CREATE TABLE main.pending_transactions AS SELECT *, CAST(NULL AS VARCHAR) AS pending_as_of FROM main.transactions WHERE false")
        con.execute("DELETE FROM main.pending_transactions")  # the latest listing is the one made here
        columns = [r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' AND table_name = 'pending_transactions'"
        ).fetchall()]
        paid_key = con.execute("SELECT transaction_key FROM main.transactions WHERE type = 'SALE' ORDER BY transaction_key LIMIT 1").fetchone()[0]
        for copy in range(3):
            replaced = {"transaction_key": f"'pending:identical:{copy}'", "_airbyte_raw_id": f"'identical-{copy}'",
                        "payment_reference": "NULL", "payout": "NULL", "payout_date": "NULL",
                        "pending_as_of": "'2000-01-01T00:00:00Z'"}  # listed before any transaction was extracted
            select = ", ".join(f"{replaced.get(c, c)} AS {c}" for c in columns)
            con.execute(f"INSERT INTO main.pending_transactions BY NAME SELECT {select} FROM main.transactions "
                        "WHERE transaction_key = ?", [paid_key])
    finally:
        con.close()

    outcome = run_demo.run_dbt(db, timeout=DBT_TIMEOUT_S, echo=False)
    assert outcome.ok, outcome.output[-3000:]
    movement = f"(SELECT movement_key FROM {report.DBT_SCHEMA}.stg_klarna__transactions WHERE transaction_key = ?)"
    paid = rows(db, f"SELECT count(*) FROM {report.DBT_SCHEMA}.stg_klarna__transactions WHERE movement_key = {movement}", [paid_key])[0][0]
    assert paid == 1, f"the dataset has {paid} paid rows of that movement: pick another"
    kept = rows(db, f"SELECT transaction_key, movement_occurrence FROM {report.DBT_SCHEMA}.stg_klarna__pending_transactions "
                    "ORDER BY transaction_key")
    assert kept == [("pending:identical:1", 2), ("pending:identical:2", 3)]
    assert not [name for name, _status, _message in outcome.failed], outcome.failed
