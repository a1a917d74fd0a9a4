"""The warehouse test infrastructure on a real PostgreSQL server (postgres_server.py): the emulator
synced through PyAirbyte (pyairbyte_sync.py, via warehouse.run_pyairbyte_sync) into PostgreSQL by
both forms of the connector, one schema each, row for row what the emulator serves; then dbt_klarna
built on one of the schemas with dbt-postgres (warehouse.run_dbt).

The last test: PyAirbyte's `write_strategy="replace"` (rename + DROP without CASCADE) of a stream table
dbt_klarna reads goes through on PostgreSQL after dbt build, since the package's models are tables, not
views that would keep PostgreSQL from dropping it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict

import pytest

from conftest import EMULATOR_PASSWORD
from connector_runner import connector_file
from klarna_emulator import Dataset, DatasetSpec, KlarnaEmulator
from warehouse import DBT_PROJECT, query, run_dbt, run_pyairbyte_sync, table_counts


pytestmark = pytest.mark.slow

SPEC = DatasetSpec(seed=3, payouts=6, transactions_per_payout=10, pending_transactions=3)
SCHEMAS = {"package": "klarna_package", "manifest-only": "klarna_manifest_only"}
DBT_SCHEMA = "dbt_klarna"
STREAMS = ("payouts", "transactions", "payout_summaries", "orders", "captures", "refunds", "pending_transactions")
SYNC_TIMEOUT_S = 300
DBT_TIMEOUT_S = 600
TIMINGS: Dict[str, float] = {}  # printed by the last test (-s, or in its failure message)


def expected_rows(dataset: Dataset) -> Dict[str, int]:
    """Rows of each stream a full sync of `dataset` lands: the payouts, their transactions, one summary
    per currency and month with payouts, the orders those transactions name (pending transactions'
    orders are not read: no payout names them) with their captures and refunds, the pending rows."""
    payouts = dataset.payouts()
    settled = [row for payout in payouts for row in dataset.transactions_for(payout["payment_reference"])]
    pending = dataset.pending_transactions()
    assert len(settled) + len(pending) == dataset.transaction_count()
    orders = [dataset.order(order_id) for order_id in sorted({row["order_id"] for row in settled})]
    orders = [order for order in orders if order is not None]  # purged ones (none in SPEC)
    return {
        "payouts": len(payouts),
        "transactions": len(settled),
        "payout_summaries": len({(p["currency_code"], p["payout_date"][:7]) for p in payouts}),
        "orders": len(orders),
        "captures": sum(len(order["captures"]) for order in orders),
        "refunds": sum(len(order["refunds"]) for order in orders),
        "pending_transactions": len(pending),
    }


@pytest.fixture(scope="module")
def klarna():
    with KlarnaEmulator(spec=SPEC, password=EMULATOR_PASSWORD, start_timeout=60) as server:
        yield server


@pytest.fixture(scope="module")
def synced(postgres, klarna):
    """Both forms synced into PostgreSQL, schema SCHEMAS[form] each: {form: pyairbyte_sync's result}."""
    results = {}
    for form, schema in SCHEMAS.items():
        started = time.monotonic()
        results[form] = run_pyairbyte_sync(
            klarna.config(), postgres, form=form, manifest_path=connector_file("manifest.yaml"), schema=schema,
            timeout=SYNC_TIMEOUT_S,
        )
        TIMINGS[f"sync {form} -> postgres"] = time.monotonic() - started
    return results


@pytest.fixture(scope="module")
def dbt_built(synced, postgres):
    """dbt build of dbt_klarna with dbt-postgres on the package form's schema."""
    outcome = run_dbt(
        "postgres", postgres, DBT_PROJECT, target_schema=DBT_SCHEMA,
        vars={"klarna_schema": SCHEMAS["package"], "klarna__using_pending_transactions": True}, timeout=DBT_TIMEOUT_S,
    )
    TIMINGS["dbt build (postgres)"] = outcome.seconds
    return outcome


def test_postgres_server_is_real_loopback_and_password_protected(postgres):
    import psycopg2

    TIMINGS["postgres server start"] = postgres.start_seconds
    version, user, database = query(postgres, "SELECT current_setting('server_version_num')::int, current_user, current_database()")[0]
    assert version >= 130000 and (user, database) == (postgres.user, postgres.database)
    assert query(postgres, "SELECT current_setting('listen_addresses')") == [("127.0.0.1",)]
    # the unix socket in the server's own directory (only its user and root can enter it), not /var/run
    assert (Path(postgres.directory) / "run" / f".s.PGSQL.{postgres.port}").is_socket()
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(**{**postgres.connect_kwargs(), "password": "wrong"}, connect_timeout=10).close()
    # the superuser does not log in over TCP without its password either
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(**{**postgres.connect_kwargs(), "user": "postgres", "password": ""}, connect_timeout=10).close()
    assert "password" not in repr(postgres) and postgres.password not in repr(postgres)


def test_both_forms_sync_the_emulator_exactly_into_postgres(synced, postgres, klarna):
    expected = expected_rows(klarna.dataset)
    assert all(expected[name] > 0 for name in STREAMS if name != "refunds"), expected
    for form, result in synced.items():
        assert result["ok"] and result["cache"] == "postgres" and result["schema"] == SCHEMAS[form], result
        assert not result["secret_in_output"], f"{form}: a password showed in the sync's output"
        assert EMULATOR_PASSWORD not in str(result) and postgres.password not in str(result)
        # records read and rows landed, per stream (streams the connector may add later are not counted here)
        assert {name: result["streams"].get(name, 0) for name in STREAMS} == expected, form
        assert {name: result["cached_rows"].get(name) for name in STREAMS} == expected, form
        assert table_counts(postgres, SCHEMAS[form], STREAMS) == expected, form  # our own count(*)
    # both forms landed the same keys
    for table, key in (("payouts", "payment_reference"), ("transactions", "transaction_key"), ("pending_transactions", "transaction_key")):
        keys = [sorted(r[0] for r in query(postgres, f'SELECT {key} FROM "{schema}"."{table}"')) for schema in SCHEMAS.values()]
        assert keys[0] == keys[1], table
    assert sorted(r[0] for r in query(postgres, f'SELECT payment_reference FROM "{SCHEMAS["package"]}".payouts')) == sorted(
        p["payment_reference"] for p in klarna.dataset.payouts()
    )


def test_dbt_build_of_dbt_klarna_on_postgres(dbt_built, postgres, klarna):
    outcome = dbt_built
    assert outcome.ok, outcome.output[-4000:]
    assert outcome.failed == []
    # 7 staging views (pending_transactions on) + 3 marts; the schema tests and klarna_payouts_reconcile
    assert outcome.counts.get("success", 0) >= 10 and outcome.counts.get("pass", 0) >= 20, outcome.counts
    reconciliation = query(postgres, f"SELECT payment_reference, is_reconciled FROM {DBT_SCHEMA}.klarna__payout_reconciliation")
    assert sorted(reconciliation) == sorted((p["payment_reference"], True) for p in klarna.dataset.payouts())
    assert query(postgres, f"SELECT count(*) FROM {DBT_SCHEMA}.stg_klarna__pending_transactions") == [(len(klarna.dataset.pending_transactions()),)]


def test_a_replace_of_a_table_dbt_reads_succeeds_on_postgres_after_dbt_build(dbt_built, postgres, klarna):
    """dbt_klarna builds every model as a table (dbt_project.yml), so no view holds a source table: PyAirbyte's
    replace (rename the old table away, rename the new one in, DROP the old one without CASCADE) goes through
    on PostgreSQL after dbt build. Before (staging views) it failed with DependentObjectsStillExist on
    stg_klarna__pending_transactions. test_warehouse.py's replace cells do this for every stream."""
    assert dbt_built.ok, dbt_built.output[-3000:]
    schema = SCHEMAS["package"]
    before = query(postgres, f'SELECT transaction_key FROM "{schema}".pending_transactions ORDER BY 1')
    started = time.monotonic()
    result = run_pyairbyte_sync(
        klarna.config(), postgres, form="manifest-only", manifest_path=connector_file("manifest.yaml"), schema=schema,
        write_strategy="replace", force_full_refresh=True, streams=["pending_transactions"], timeout=SYNC_TIMEOUT_S,
    )
    TIMINGS["replace pending_transactions (postgres)"] = time.monotonic() - started
    timings = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in TIMINGS.items())
    print(f"\nwarehouse timings: {timings}")
    assert result["streams"] == {"pending_transactions": len(before)}
    assert query(postgres, f'SELECT transaction_key FROM "{schema}".pending_transactions ORDER BY 1') == before
    assert query(postgres, "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s AND table_name LIKE %s",
                 [schema, "%deleteme%"]) == [(0,)]
