"""The warehouse is right after every sync: the emulator synced by PyAirbyte into DuckDB and into a real
PostgreSQL, with every write strategy and both forms of the connector, dbt_klarna built on it, and every
row of every staging model and mart compared with what the emulator serves, computed without dbt
(warehouse_truth.py).

Each cell of the matrix (warehouse, write strategy, form) runs the same script: an emulator of its own
(pending transactions and disputes included); sync every stream; `dbt build` (green: no model or test
fails); compare; grow the emulator (new payouts, a late one, refunds on old orders, an order Klarna no
longer returns, a new dispute, disputes that move on, pending transactions paid out and a new pending
set); sync again (merge and append: incremental, PyAirbyte keeps the state in the cache; replace: a full
refresh, `force_full_refresh=True` as PyAirbyte requires); `dbt build`; compare again. On PostgreSQL the
replace cell's second sync runs after a `dbt build`: a replace is not blocked by the package's models.

Then per warehouse, two stores in one build: the merge and the append cells synced different stores (seed,
merchant id, currencies: one currency shared, so a mart grouping by currency alone would mix them) into
two schemas; dbt is built once with `klarna_schemas: [both]` and every row is compared with the union of
both stores' truths. And two stale-row proofs on those builds: a pending row whose transaction is in a
payout fails `klarna_pending_not_in_a_payout` (DuckDB); a mart figure changed behind dbt's back fails
`klarna_marts_match_staging` (PostgreSQL).

The two warehouses run as two pipelines at once (a thread each; every step is a subprocess: the
emulator, the sync, dbt), each pipeline's steps in turn: the module fixture runs them (about 5 minutes on
2 cores), and each test reports one cell, its timings and every difference found. The rows compared, per
cell and in all, are printed by the last test (`pytest -s`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import pytest

import warehouse_truth as truth_of
from conftest import EMULATOR_PASSWORD
from klarna_emulator import DatasetSpec, KlarnaEmulator
from streaming_runner import connector_components
from warehouse import is_duckdb, query, run_dbt, run_pyairbyte_sync

pytestmark = pytest.mark.slow

# Two stores. B shares EUR with A (so the fees of both land on the same month, currency and type) and
# has currencies of its own.
STORE_A = DatasetSpec(seed=11, payouts=12, transactions_per_payout=30, pending_transactions=6, disputes=6,
                      first_payout_date="2026-02-01T00:00:00Z", merchant_id="K111111")
STORE_B = DatasetSpec(seed=23, payouts=9, transactions_per_payout=25, pending_transactions=4, disputes=4,
                      currencies=("NOK", "DKK", "EUR"), first_payout_date="2026-02-01T00:00:00Z", merchant_id="K222222")
GROWTH = {"new_payouts": 2, "late_payouts": 1, "refunds_on_old_orders": 2, "gone_orders": 1, "new_disputes": 1}
SYNC_TIMEOUT_S = 300
DBT_TIMEOUT_S = 300
DBT_THREADS = 2
EMULATOR_START_TIMEOUT_S = 60
PIPELINE_TIMEOUT_S = 3 * (2 * SYNC_TIMEOUT_S + 2 * DBT_TIMEOUT_S + 2 * EMULATOR_START_TIMEOUT_S) + 2 * DBT_TIMEOUT_S
STORES_SCHEMA = "dbt_stores"  # the two-store build's target schema, in each warehouse
PENDING_TEST = "klarna_pending_not_in_a_payout"
MARTS_TEST = "klarna_marts_match_staging"


@dataclasses.dataclass(frozen=True)
class Cell:
    warehouse: str  # duckdb, postgres
    strategy: str  # merge, append, replace
    form: str  # package, manifest-only
    store: DatasetSpec

    @property
    def name(self) -> str:
        return f"{self.warehouse}-{self.strategy}-{self.form}"

    @property
    def schema(self) -> str:  # where PyAirbyte writes the streams: source_relation
        return f"klarna_{self.strategy}"

    @property
    def target_schema(self) -> str:  # dbt's
        return f"dbt_{self.strategy}"


CELLS = (
    Cell("duckdb", "merge", "package", STORE_A),
    Cell("duckdb", "append", "manifest-only", STORE_B),
    Cell("duckdb", "replace", "package", STORE_A),
    Cell("postgres", "merge", "manifest-only", STORE_A),
    Cell("postgres", "append", "package", STORE_B),
    Cell("postgres", "replace", "manifest-only", STORE_A),
)
MULTI_STORE = {"duckdb": ("merge", "append"), "postgres": ("merge", "append")}  # the cells whose schemas it unions


@dataclasses.dataclass
class Run:
    """What one cell (or the two-store build, or a proof) did: timings, rows compared, every problem."""

    name: str
    timings: Dict[str, float] = dataclasses.field(default_factory=dict)
    rows_compared: int = 0
    problems: List[str] = dataclasses.field(default_factory=list)
    error: Optional[str] = None
    dataset: Any = None  # the cell's emulator dataset, as it ended
    facts: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def timed(self, step: str, action: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            return action()
        finally:
            self.timings[step] = round(time.monotonic() - started, 1)

    def report(self) -> str:
        steps = ", ".join(f"{step} {seconds:.0f} s" for step, seconds in self.timings.items())
        lines = [f"{self.name}: {self.rows_compared} rows compared, {sum(self.timings.values()):.0f} s ({steps})"]
        if self.error:
            lines.append(f"  error: {self.error}")
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------- helpers


def installed_connector_differs(snapshot: Path) -> List[str]:
    """The files of the installed `source-klarna` (the wheel `make install` puts into the venv) that differ from
    the session's snapshot, which the manifest-only form runs: the two forms must run the same connector."""
    distribution = importlib.metadata.distribution("airbyte-source-klarna")
    differ = []
    for name in ("manifest.yaml", "components.py"):
        installed = Path(distribution.locate_file(f"source_klarna/{name}"))
        digest = hashlib.sha256(installed.read_bytes()).hexdigest() if installed.exists() else None
        if digest != hashlib.sha256((snapshot / name).read_bytes()).hexdigest():
            differ.append(str(installed))
    return differ


def execute(warehouse: Any, sql: str) -> None:
    """A statement that writes (query() opens DuckDB read only)."""
    if is_duckdb(warehouse):
        import duckdb

        connection = duckdb.connect(str(warehouse))
        try:
            connection.execute(sql)
        finally:
            connection.close()
    else:
        query(warehouse, sql)


def literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def columns_of(warehouse: Any, schema: str, table: str) -> List[str]:
    placeholder = "?" if is_duckdb(warehouse) else "%s"
    rows = query(warehouse, f"SELECT column_name FROM information_schema.columns WHERE table_schema = {placeholder} "
                            f"AND table_name = {placeholder} ORDER BY ordinal_position", [schema, table])
    return [row[0] for row in rows]


def model_rows(warehouse: Any, schema: str, model: str) -> List[Dict[str, Any]]:
    keys, values = truth_of.MODEL_COLUMNS[model]
    columns = keys + values
    sql = f'SELECT {", ".join(f"{c}" for c in columns)} FROM "{schema}"."{model}"'
    return [dict(zip(columns, row)) for row in query(warehouse, sql)]


def compare_models(warehouse: Any, schema: str, expected: Mapping[str, truth_of.Table], run: Run, phase: str) -> None:
    """Every model's rows against the truth; problems go to the run, prefixed with the phase."""
    for model in truth_of.MODEL_COLUMNS:
        try:
            rows = model_rows(warehouse, schema, model)
        except Exception as error:  # noqa: BLE001 - a missing model or column is a finding, the others still count
            run.problems.append(f"[{phase}] {model}: cannot read {schema}.{model}: {type(error).__name__}: {str(error).strip()[:400]}")
            continue
        run.rows_compared += len(expected[model])
        run.problems += [f"[{phase}] {problem}" for problem in truth_of.compare(model, expected[model], rows)]


def dbt_vars(schemas: Sequence[str]) -> Dict[str, Any]:
    return {"klarna_schemas": list(schemas)}


def build(adapter: str, warehouse: Any, target_schema: str, schemas: Sequence[str], run: Run, phase: str) -> None:
    outcome = run.timed(f"{phase} dbt build", lambda: run_dbt(adapter, warehouse, target_schema=target_schema,
                                                               vars=dbt_vars(schemas), timeout=DBT_TIMEOUT_S,
                                                               threads=DBT_THREADS))
    run.facts[f"{phase} dbt counts"] = outcome.counts
    if not outcome.ok or outcome.failed:
        failed = "; ".join(f"{name} {status}: {message.strip()[:600]}" for name, status, message in outcome.failed)
        run.problems.append(f"[{phase}] dbt build failed (exit {outcome.returncode}): {failed or outcome.output[-1500:]}")


def sync(cell: Cell, emulator: KlarnaEmulator, warehouse: Any, manifest: Path, run: Run, phase: str) -> None:
    def once() -> Dict[str, Any]:
        return run_pyairbyte_sync(
            emulator.config(), warehouse, form=cell.form, manifest_path=manifest, schema=cell.schema,
            write_strategy=cell.strategy, force_full_refresh=cell.strategy == "replace", timeout=SYNC_TIMEOUT_S,
        )

    result = run.timed(f"{phase} sync", once)
    assert not result["secret_in_output"], f"{cell.name}: a password showed in the {phase} sync's output"
    run.facts[f"{phase} records read"] = result["streams"]
    run.facts[f"{phase} rows in the cache"] = result["cached_rows"]


def check_growth(emulator: KlarnaEmulator, run: Run) -> None:
    """The growth step did what the script says: refunds on old orders, a gone order, a dispute opened and
    others moved on, the pending set paid out and a new one listed."""
    dataset = emulator.dataset
    events = dataset.step_events()[-1]
    seen = {"refunded orders": len(events["refunded_orders"]), "gone orders": len(events["gone_orders"]),
            "opened disputes": len(events["opened_disputes"]), "moved disputes": len(events["moved_disputes"]),
            "pending rows": len(dataset.pending_transactions())}
    run.facts["growth"] = seen
    wanted = {"refunded orders": GROWTH["refunds_on_old_orders"], "gone orders": GROWTH["gone_orders"],
              "opened disputes": GROWTH["new_disputes"]}
    if any(seen[k] != v for k, v in wanted.items()) or not seen["moved disputes"] or not seen["pending rows"]:
        run.problems.append(f"the growth step is not the script's: {seen}")


def run_cell(cell: Cell, warehouse: Any, manifest: Path, fingerprint: Callable) -> Run:
    run = Run(cell.name)
    adapter = cell.warehouse
    try:
        emulator = KlarnaEmulator(spec=cell.store, password=EMULATOR_PASSWORD, start_timeout=EMULATOR_START_TIMEOUT_S)
        with emulator:
            for phase in ("first", "grown"):
                if phase == "grown":
                    emulator.grow(**GROWTH)
                    check_growth(emulator, run)
                sync(cell, emulator, warehouse, manifest, run, phase)
                build(adapter, warehouse, cell.target_schema, [cell.schema], run, phase)
                expected = truth_of.store_truth(emulator.dataset, cell.schema, fingerprint)
                run.timed(f"{phase} compare", lambda: compare_models(warehouse, cell.target_schema, expected, run, phase))
        run.dataset = emulator.dataset
    except Exception as error:  # noqa: BLE001 - recorded; the cell's test fails with it
        run.error = f"{type(error).__name__}: {error}\n{traceback.format_exc()[-2500:]}"
    return run


def run_stores(warehouse_name: str, warehouse: Any, cells: Mapping[str, Run], fingerprint: Callable) -> Run:
    """dbt built once over the two stores' schemas; every row against the union of both truths."""
    run = Run(f"{warehouse_name}-two-stores")
    try:
        parts = [next(c for c in CELLS if c.warehouse == warehouse_name and c.strategy == s) for s in MULTI_STORE[warehouse_name]]
        missing = [c.name for c in parts if cells[c.name].dataset is None]
        assert not missing, f"the cells {missing} did not finish: nothing to build on"
        schemas = [c.schema for c in parts]
        build(warehouse_name, warehouse, STORES_SCHEMA, schemas, run, "two stores")
        expected = truth_of.union(*(truth_of.store_truth(cells[c.name].dataset, c.schema, fingerprint) for c in parts))
        run.timed("two stores compare", lambda: compare_models(warehouse, STORES_SCHEMA, expected, run, "two stores"))
        for model in truth_of.MARTS:
            stores = {key[0] for key in expected[model]}
            assert stores == set(schemas), f"{model}: the truth has rows of {stores}, not of both stores"
        run.facts["schemas"] = schemas
    except Exception as error:  # noqa: BLE001
        run.error = f"{type(error).__name__}: {error}\n{traceback.format_exc()[-2500:]}"
    return run


def stored_failures(warehouse: Any, target_schema: str, test: str, columns: Sequence[str]) -> List[Tuple[Any, ...]]:
    return query(warehouse, f'SELECT {", ".join(columns)} FROM "{target_schema}_dbt_test__audit"."{test}"')


def dbt_test_failures(warehouse_name: str, warehouse: Any, stores: Run, run: Run) -> Dict[str, str]:
    """`dbt test` on the two-store build (timed into `run`): {test name: status} of every test that did not pass."""
    outcome = run.timed("dbt test", lambda: run_dbt(warehouse_name, warehouse, target_schema=STORES_SCHEMA,
                                                      vars=dbt_vars(stores.facts["schemas"]), command=("test",),
                                                      timeout=DBT_TIMEOUT_S, threads=DBT_THREADS))
    return {name: status for name, status, _message in outcome.failed}


def prove_stale_pending_row(warehouse_name: str, warehouse: Any, stores: Run) -> Run:
    """A copy of a paid transaction's row (its movement_key, its store) put into the staging table of pending
    transactions, then `dbt test`: klarna_pending_not_in_a_payout fails, listing that row."""
    run = Run(f"{warehouse_name}-stale-pending-row")
    try:
        assert stores.error is None and not stores.problems, "the two-store build is not green: no proof on it"
        target, pending, paid = STORES_SCHEMA, "stg_klarna__pending_transactions", "stg_klarna__transactions"
        pending_columns, paid_columns = columns_of(warehouse, target, pending), columns_of(warehouse, target, paid)
        source_relation = stores.facts["schemas"][0]
        # The latest listing of that store; a paid transaction extracted at or after it (one of the last sync's).
        listing = f'(SELECT max(pending_as_of) FROM "{target}"."{pending}" WHERE source_relation = {literal(source_relation)})'
        chosen = query(warehouse, f'SELECT transaction_key, movement_key, order_id FROM "{target}"."{paid}" '
                                  f"WHERE source_relation = {literal(source_relation)} AND _airbyte_extracted_at >= {listing} "
                                  f"ORDER BY transaction_key LIMIT 1")
        assert chosen, f"no paid transaction of {source_relation} extracted at or after its latest pending listing"
        paid_key, movement_key, order_id = chosen[0]
        stale_key = "pending:stale-copy-of-a-paid-row:0"
        values = []
        for column in pending_columns:
            if column == "transaction_key":
                values.append(literal(stale_key))
            elif column == "pending_as_of":
                values.append(listing)
            elif column == "movement_occurrence":
                values.append("1")
            elif column in paid_columns:
                values.append(f"paid.{column}")
            else:
                values.append("NULL")
        execute(warehouse, f'INSERT INTO "{target}"."{pending}" ({", ".join(pending_columns)}) '
                           f'SELECT {", ".join(values)} FROM "{target}"."{paid}" AS paid '
                           f"WHERE paid.source_relation = {literal(source_relation)} AND paid.transaction_key = {literal(paid_key)}")
        failing = dbt_test_failures(warehouse_name, warehouse, stores, run)
        run.facts.update(failing=failing, paid_key=paid_key, order_id=order_id)
        if failing.get(PENDING_TEST) != "fail":
            run.problems.append(f"{PENDING_TEST} did not fail on a pending row whose transaction {paid_key} is in a payout: {failing}")
        listed = stored_failures(warehouse, target, PENDING_TEST, ("source_relation", "transaction_key", "movement_key"))
        if listed != [(source_relation, stale_key, movement_key)]:
            run.problems.append(f"{PENDING_TEST} listed {listed}, not exactly the stale row {(source_relation, stale_key, movement_key)}")
        # The marts were built without that row: klarna_marts_match_staging rightly sees the order's pending money
        # in staging differ from the mart. Anything else failing is a finding.
        others = {name: status for name, status in failing.items() if name not in (PENDING_TEST, MARTS_TEST)}
        if others:
            run.problems.append(f"other tests failed too: {others}")
        if MARTS_TEST in failing:
            mart_rows = stored_failures(warehouse, target, MARTS_TEST, ("model", "source_relation", "row_key", "figure"))
            expected_rows = [("klarna__order_settlement", source_relation, order_id, "pending_net_amount_minor")]
            if mart_rows != expected_rows:
                run.problems.append(f"{MARTS_TEST} listed {mart_rows}, expected at most {expected_rows}")
            run.facts["marts test"] = mart_rows
    except Exception as error:  # noqa: BLE001
        run.error = f"{type(error).__name__}: {error}\n{traceback.format_exc()[-2500:]}"
    return run


def prove_stale_mart_row(warehouse_name: str, warehouse: Any, stores: Run) -> Run:
    """One payout's transactions_settlement_amount_minor in klarna__payout_reconciliation raised by 100 behind
    dbt's back, then `dbt test`: klarna_marts_match_staging fails naming that payout, and only it fails."""
    run = Run(f"{warehouse_name}-stale-mart-row")
    try:
        assert stores.error is None and not stores.problems, "the two-store build is not green: no proof on it"
        target, mart = STORES_SCHEMA, "klarna__payout_reconciliation"
        source_relation = stores.facts["schemas"][-1]
        reference, amount = query(warehouse, f'SELECT payment_reference, transactions_settlement_amount_minor FROM "{target}"."{mart}" '
                                             f"WHERE source_relation = {literal(source_relation)} ORDER BY payment_reference LIMIT 1")[0]
        execute(warehouse, f'UPDATE "{target}"."{mart}" SET transactions_settlement_amount_minor = transactions_settlement_amount_minor + 100 '
                           f"WHERE source_relation = {literal(source_relation)} AND payment_reference = {literal(reference)}")
        failing = dbt_test_failures(warehouse_name, warehouse, stores, run)
        run.facts.update(failing=failing, payment_reference=reference)
        if failing != {MARTS_TEST: "fail"}:
            run.problems.append(f"expected {MARTS_TEST} alone to fail, got {failing}")
        listed = [truth_of.normalise_row(row) for row in stored_failures(
            warehouse, target, MARTS_TEST, ("model", "source_relation", "row_key", "figure", "mart_value", "staging_value"))]
        expected = [(mart, source_relation, reference, "transactions_settlement_amount_minor", int(amount) + 100, int(amount))]
        if listed != expected:
            run.problems.append(f"{MARTS_TEST} listed {listed}, expected {expected}")
    except Exception as error:  # noqa: BLE001
        run.error = f"{type(error).__name__}: {error}\n{traceback.format_exc()[-2500:]}"
    return run


def pipeline(warehouse_name: str, warehouse: Any, manifest: Path, fingerprint: Callable) -> Dict[str, Run]:
    """One warehouse's cells in turn, then its two-store build and its proof."""
    runs: Dict[str, Run] = {}
    for cell in CELLS:
        if cell.warehouse == warehouse_name:
            runs[cell.name] = run_cell(cell, warehouse, manifest, fingerprint)
    stores = runs[f"{warehouse_name}-two-stores"] = run_stores(warehouse_name, warehouse, runs, fingerprint)
    proof = prove_stale_pending_row if warehouse_name == "duckdb" else prove_stale_mart_row
    runs[f"{warehouse_name}-proof"] = proof(warehouse_name, warehouse, stores)
    return runs


# ---------------------------------------------------------------------------------------- fixture


@pytest.fixture(scope="module")
def runs(postgres, manifest_only_build, tmp_path_factory) -> Dict[str, Run]:  # noqa: F811
    """Both pipelines, at once; {run name: Run}."""
    stale = installed_connector_differs(manifest_only_build)
    assert not stale, (f"the installed source-klarna is not the session's connector ({', '.join(stale)} differ from "
                       f"{manifest_only_build}): `make install` reinstalls it from the checkout")
    manifest = manifest_only_build / "manifest.yaml"
    fingerprint = connector_components().transaction_fingerprint  # the session's components.py, as both forms run it
    warehouses = {"duckdb": tmp_path_factory.mktemp("warehouse") / "klarna.duckdb", "postgres": postgres}
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(warehouses), thread_name_prefix="warehouse") as pool:
        futures = [pool.submit(pipeline, name, where, manifest, fingerprint) for name, where in warehouses.items()]
        results: Dict[str, Run] = {}
        for future in futures:  # every step of a pipeline has its own timeout: this one only bounds their sum
            results.update(future.result(timeout=PIPELINE_TIMEOUT_S))
    results["_wall"] = Run("wall clock", timings={"both pipelines": round(time.monotonic() - started, 1)})
    return results


def assert_clean(run: Run) -> None:
    assert run.error is None and not run.problems, f"\n{run.report()}\nfacts: {run.facts}"


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("cell", CELLS, ids=[c.name for c in CELLS])
def test_every_row_of_every_model_matches_the_emulator_after_each_sync(runs, cell):
    run = runs[cell.name]
    print("\n" + run.report())
    assert_clean(run)
    assert run.rows_compared > 0


@pytest.mark.parametrize("warehouse_name", ["duckdb", "postgres"])
def test_two_stores_in_one_build_stay_apart(runs, warehouse_name):
    run = runs[f"{warehouse_name}-two-stores"]
    print("\n" + run.report())
    assert_clean(run)


def test_a_pending_row_already_in_a_payout_fails_klarna_pending_not_in_a_payout(runs):
    run = runs["duckdb-proof"]
    print("\n" + run.report(), run.facts)
    assert_clean(run)


def test_a_stale_mart_figure_fails_klarna_marts_match_staging(runs):
    run = runs["postgres-proof"]
    print("\n" + run.report(), run.facts)
    assert_clean(run)


def test_rows_compared_in_all(runs):
    compared = {name: run.rows_compared for name, run in runs.items() if run.rows_compared}
    lines = [run.report().splitlines()[0] for name, run in runs.items() if not name.startswith("_")]
    print("\nwarehouse matrix:\n" + "\n".join(lines))
    print(f"rows compared in all: {sum(compared.values())}; both pipelines took {runs['_wall'].timings['both pipelines']:.0f} s")
    assert sum(compared.values()) > 0
