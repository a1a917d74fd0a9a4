"""orders, captures and refunds on Airbyte's stock declarative runtime: the manifest read by the CDK's own
source class, without SourceKlarna (which only registers components.py), with the streams in any
catalog order. Each order the transactions name is requested once, and the records are the same."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any, Dict, List, Mapping
from unittest import mock

import pytest

from airbyte_cdk.models import SyncMode
from airbyte_cdk.sources.declarative.parsers.custom_code_compiler import SDM_COMPONENTS_MODULE_NAME
from airbyte_cdk.sources.declarative.yaml_declarative_source import YamlDeclarativeSource
from airbyte_cdk.test.entrypoint_wrapper import EntrypointOutput, read

import components
from source_klarna.run import connector_file
from unit_tests.mock_server import response_builder as rb
from unit_tests.mock_server.config import ConfigBuilder
from unit_tests.mock_server.klarna_mock import serve_account
from unit_tests.mock_server.reader import catalog, final_state, records_of, state_for

ITEMS = ("orders", "captures", "refunds")


def _read_without_source_klarna(config: Dict[str, Any], streams: Mapping[str, SyncMode], state: Any = None) -> EntrypointOutput:
    """What `source-declarative-manifest --components-path components.py` does: the
    components registered under the runtime's module name, the manifest read by the CDK's source."""
    configured = catalog(streams)
    with mock.patch.dict(sys.modules, {SDM_COMPONENTS_MODULE_NAME: components}), mock.patch("time.sleep"):
        source = YamlDeclarativeSource(path_to_yaml=str(connector_file("manifest.yaml")), catalog=configured, config=config, state=state)
        return read(source, config, configured, state)


def _account(requests_mock):
    payouts = [rb.payout("A", "2024-02-01T06:00:00Z"), rb.payout("B", "2024-02-02T06:00:00Z")]
    # 30 orders, some named twice and across payouts, one gone: more than one batch per stream.
    a_orders = [f"a{i}" for i in range(18)]
    b_orders = [f"b{i}" for i in range(12)] + ["a3", "a7"]
    transactions = {"A": rb.transactions_naming("A", *a_orders, "a1", "gone"), "B": rb.transactions_naming("B", *b_orders)}
    orders = [
        rb.order(o, captures=[rb.capture(f"c-{o}-{k}") for k in range(i % 3)], refunds=[rb.refund(f"r-{o}")] if i % 4 == 0 else [])
        for i, o in enumerate(a_orders + b_orders[:12])
    ]
    klarna = serve_account(requests_mock, payouts, transactions, orders, gone={"gone"})
    named = set(a_orders) | set(b_orders) | {"gone"}
    return klarna, named, payouts, transactions


def _ids(output: EntrypointOutput) -> Dict[str, List[str]]:
    keys = {"orders": "order_id", "captures": "capture_id", "refunds": "refund_id"}
    return {stream: sorted(r[keys[stream]] for r in records_of(output, stream)) for stream in ITEMS}


@pytest.mark.parametrize(
    "stream_order",
    [
        ("captures", "refunds", "orders"),
        ("captures", "orders", "payouts", "refunds", "transactions"),  # alphabetical, as a UI lists them
        ("refunds", "captures"),
    ],
)
def test_each_order_is_requested_once_whatever_the_catalogs_stream_order(requests_mock, stream_order):
    klarna, named, _, _ = _account(requests_mock)

    output = _read_without_source_klarna(ConfigBuilder().build(), {name: SyncMode.incremental for name in stream_order})

    assert not output.errors
    assert Counter(klarna.order_requests()) == Counter(named)
    ids = _ids(output)
    for stream in ITEMS:
        if stream in stream_order:
            assert ids[stream], stream
    if "captures" in stream_order:
        assert ids["captures"] == sorted(f"c-{o}-{k}" for i, o in enumerate([f"a{i}" for i in range(18)] + [f"b{i}" for i in range(12)]) for k in range(i % 3))
    if "orders" in stream_order:
        assert ids["orders"] == sorted(named)  # "gone" as a deletion record
        deleted = [r["order_id"] for r in records_of(output, "orders") if r.get("_ab_cdc_deleted_at")]
        assert deleted == ["gone"]


def test_the_stock_runtime_reads_the_same_records_and_state_as_source_klarna(requests_mock):
    from unit_tests.mock_server.reader import read_streams

    _account(requests_mock)
    streams = {name: SyncMode.incremental for name in ("captures", "orders", "refunds")}
    config = ConfigBuilder().build()

    stock = _read_without_source_klarna(config, streams)
    ours = read_streams(config, streams)

    assert _ids(stock) == _ids(ours)
    for stream in ITEMS:
        assert final_state(stock, stream) == final_state(ours, stream)


def test_an_incremental_sync_on_the_stock_runtime_requests_only_the_new_payouts_orders(requests_mock):
    klarna, _, payouts, transactions = _account(requests_mock)
    streams = {name: SyncMode.incremental for name in ("refunds", "captures", "orders")}
    config = ConfigBuilder().with_fields(lookback_window_days=0).build()
    first = _read_without_source_klarna(config, streams)
    # The three streams start from the same (no) state: one read of each payout's transactions for all.
    assert _transactions_read(klarna) == Counter({"A": 1, "B": 1})

    requests_mock.get(klarna.requests.order_url("new"), json=rb.order("new", captures=[rb.capture("c-new")], refunds=[rb.refund("r-new")]))
    payouts.append(rb.payout("C", "2024-03-01T06:00:00Z"))
    transactions["C"] = rb.transactions_naming("C", "new", "a0")
    requests_mock.reset_mock()
    second = _read_without_source_klarna(config, streams, state_for({s: final_state(first, s) for s in ITEMS}))

    assert not second.errors
    assert _transactions_read(klarna) == Counter({"C": 1})
    assert sorted(klarna.order_requests()) == ["a0", "new"]
    assert _ids(second)["captures"] == ["c-new"] and _ids(second)["refunds"] == ["r-a0", "r-new"]


@pytest.mark.parametrize("concurrency", [1, 2])
def test_with_one_or_two_workers_the_streams_run_one_after_another_and_still_request_each_order_once(requests_mock, concurrency):
    klarna, named, _, _ = _account(requests_mock)

    output = _read_without_source_klarna(
        ConfigBuilder().with_fields(concurrency=concurrency).build(), {name: SyncMode.incremental for name in ("captures", "refunds", "orders")}
    )

    assert not output.errors
    assert Counter(klarna.order_requests()) == Counter(named)
    assert _transactions_read(klarna) == Counter({"A": 1, "B": 1})  # one read for the three, even one after another
    assert _ids(output)["orders"] == sorted(named)  # "gone" as a deletion record


def _transactions_read(klarna) -> Counter:
    from urllib.parse import parse_qs, urlsplit

    return Counter(parse_qs(urlsplit(url).query)["payment_reference"][0] for url in klarna.urls("/settlements/v1/transactions"))


@pytest.mark.parametrize("runtime", ["source-klarna", "stock"])
def test_each_order_stream_reads_the_transactions_its_own_state_asks_for_and_its_state_moves_on(requests_mock, runtime):
    from unit_tests.mock_server.reader import read_streams

    sync = read_streams if runtime == "source-klarna" else _read_without_source_klarna
    klarna, _, payouts, transactions = _account(requests_mock)
    config = ConfigBuilder().with_fields(lookback_window_days=0).build()
    first = sync(config, {"orders": SyncMode.incremental})
    assert _transactions_read(klarna) == Counter({"A": 1, "B": 1})

    requests_mock.get(klarna.requests.order_url("new"), json=rb.order("new", captures=[rb.capture("c-new")], refunds=[rb.refund("r-new")]))
    payouts.append(rb.payout("C", "2024-03-01T06:00:00Z"))
    transactions["C"] = rb.transactions_naming("C", "new", "a0")
    requests_mock.reset_mock()
    # orders goes on from its state (payout C only); captures and refunds start afresh (A, B and C).
    second = sync(config, {name: SyncMode.incremental for name in ITEMS}, state_for({"orders": final_state(first, "orders")}))

    assert not second.errors
    # orders reads its parents from its own state: the new payout C. captures and refunds start from the
    # same (no) state, so they share one read (OneReadPerSync): A, B and C once. Orders are still
    # requested once each (OrderFetcher).
    assert _transactions_read(klarna) == Counter({"A": 1, "B": 1, "C": 2})
    assert sorted(klarna.order_requests()) == sorted(set(klarna.order_requests()))
    ids = _ids(second)
    assert ids["orders"] == ["a0", "new"]
    assert "c-new" in ids["captures"] and "c-a2-1" in ids["captures"]
    assert ids["refunds"] == sorted(["r-new"] + [f"r-{o}" for i, o in enumerate([f"a{i}" for i in range(18)] + [f"b{i}" for i in range(12)]) if i % 4 == 0])
    # Each stream's own state moved on to payout C, whichever stream read C's transactions.
    for stream in ITEMS:
        state = final_state(second, stream)
        transactions_state = state["parent_state"]["transactions"]
        assert transactions_state["state"] == {"payout_date": "2024-03-01T06:00:00Z"}, stream
        assert transactions_state["parent_state"]["payouts"]["payouts_read"] == {"C": "2024-03-01T06:00:00Z"}, stream
