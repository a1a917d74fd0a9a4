"""orders, captures and refunds run by Airbyte's stock runtime, as a manifest-only connector ships:
`source-declarative-manifest read --manifest-path manifest.yaml --components-path components.py`,
no SourceKlarna, the catalog in alphabetical order (captures before orders). Each order is requested once,
and the records are exactly the emulator's."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from connector_runner import ConnectorRun, configured_catalog, connector_file, protocol_arguments, run_in_own_session
from conftest import EMULATOR_PASSWORD
from test_orders_exact import SPEC, _named_order_ids, _order_requests, _without_personal_data

STOCK_RUNTIME = Path(sys.executable).with_name("source-declarative-manifest")


def _stock_read(config, catalog, state=None) -> ConnectorRun:
    with tempfile.TemporaryDirectory(prefix="source-klarna-stock-") as tmp:
        command = [
            str(STOCK_RUNTIME),
            "read",
            *protocol_arguments(tmp, config, catalog, state),
            "--manifest-path",
            str(connector_file("manifest.yaml")),
            "--components-path",
            str(connector_file("components.py")),
        ]
        # The stock runtime runs a components file only when told it may.
        exit_code, stdout, stderr = run_in_own_session(command, 300, env={**os.environ, "AIRBYTE_ENABLE_UNSAFE_CODE": "true"})
    messages = []
    for line in stdout.splitlines():
        try:
            messages.append(json.loads(line))
        except json.JSONDecodeError:
            messages.append({"type": "NOT_JSON", "line": line})
    return ConnectorRun(command=command, exit_code=exit_code, stdout_lines=stdout.splitlines(), stderr=stderr, messages=messages)


@pytest.fixture
def emulator(make_emulator):
    return make_emulator(SPEC)


def test_the_stock_runtime_with_captures_listed_first_requests_each_order_once(emulator):
    streams = sorted(["orders", "captures", "refunds", "transactions"])  # captures, orders, refunds, transactions

    run = _stock_read(emulator.config(), configured_catalog(streams))

    assert run.exit_code == 0, run.everything[-3000:]
    assert not run.errors()
    dataset = emulator.dataset
    named = _named_order_ids(dataset)
    assert _order_requests(emulator) == Counter(named)
    expected = {o: dataset.order(o) for o in named if not dataset.is_purged(o)}
    orders = {o["order_id"]: {k: v for k, v in o.items() if k != "payout_date"} for o in run.kept("orders")}
    assert orders == {o: _without_personal_data(order) for o, order in expected.items()}
    assert Counter(c["capture_id"] for c in run.records("captures")) == Counter(c["capture_id"] for o in expected.values() for c in o["captures"])
    assert Counter(r["refund_id"] for r in run.records("refunds")) == Counter(r["refund_id"] for o in expected.values() for r in o["refunds"])
    assert len(run.records("transactions")) == dataset.transaction_count()
    assert EMULATOR_PASSWORD not in run.everything


def test_the_stock_runtime_continues_from_a_state_source_klarna_wrote(emulator):
    from connector_runner import run_connector

    first = run_connector("read", emulator.config(lookback_window_days=0), configured_catalog(["orders", "captures", "refunds"]))
    assert first.exit_code == 0, first.everything[-3000:]
    added = emulator.grow(new_payouts=2, late_payouts=0)
    emulator.reset_requests()

    second = _stock_read(emulator.config(lookback_window_days=0), configured_catalog(["refunds", "captures", "orders"]), first.final_state())

    assert second.exit_code == 0, second.everything[-3000:]
    assert not second.errors()
    named_now = _named_order_ids(emulator.dataset, added)
    assert _order_requests(emulator) == Counter(named_now)
    assert {o["order_id"] for o in second.kept("orders")} == {o for o in named_now if not emulator.dataset.is_purged(o)}
