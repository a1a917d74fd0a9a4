"""orders, captures and refunds against the emulator: exactly the emulator's orders for the order ids its
transactions name (gone ones skipped with one warning each), one request per order and sync, and an
incremental sync that fetches only the orders of the transactions it reads."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from connector_runner import configured_catalog, run_connector
from conftest import EMULATOR_PASSWORD
from klarna_emulator import DatasetSpec
from streaming_runner import assert_clean_run, fast_backoff_manifest, stream_connector

STREAMS = ("orders", "captures", "refunds")
# About 400 orders over 12 payouts and 3 currencies, a twentieth of them gone (404 NO_SUCH_ORDER).
SPEC = DatasetSpec(seed=11, payouts=12, transactions_per_payout=120, first_payout_date="2026-03-01T00:00:00Z", purged_order_ratio=0.05)
PERSONAL = ("billing_address", "shipping_address", "customer")


def _without_personal_data(order):
    order = {k: v for k, v in order.items() if k not in PERSONAL}
    order["captures"] = [{k: v for k, v in c.items() if k not in ("billing_address", "shipping_address")} for c in order["captures"]]
    return order


def _sync(emulator, state=None, form="package", **config):
    run = run_connector("read", emulator.config(**config), configured_catalog(STREAMS), state, form=form)
    assert run.exit_code == 0, run.everything[-3000:]
    assert not run.errors()
    return run


def _order_requests(emulator):
    return Counter(r["path"].rsplit("/", 1)[-1] for r in emulator.requests() if r["endpoint"] == "order")


def _named_order_ids(dataset, payment_references=None):
    refs = payment_references if payment_references is not None else [p["payment_reference"] for p in dataset.payouts()]
    return {t["order_id"] for ref in refs for t in dataset.transactions_for(ref)}


@pytest.fixture
def emulator(make_emulator):
    return make_emulator(SPEC)


def _assert_exactly_the_emulators(run, dataset):
    """orders, captures and refunds of `run` are exactly the emulator's, for the orders its transactions
    name (gone ones skipped), each record once, each with the payout_date of a payout naming its order.
    Returns (the order ids named, the gone ones)."""
    named = _named_order_ids(dataset)
    gone = {o for o in named if dataset.is_purged(o)}
    assert gone and len(gone) < len(named) / 5
    expected = {o: dataset.order(o) for o in named - gone}

    orders = run.kept("orders")
    assert Counter(o["order_id"] for o in orders) == Counter(list(expected))
    assert sorted(run.deleted("orders", "order_id")) == sorted(gone)  # a deletion record each: Klarna no longer returns them
    payout_dates = {p["payment_reference"]: p["payout_date"] for p in dataset.payouts()}
    dates_naming = {}
    for transaction in dataset.transactions():
        dates_naming.setdefault(transaction["order_id"], set()).add(payout_dates[transaction["payment_reference"]])
    for order in orders:
        row = dict(order)
        payout_date = row.pop("payout_date")
        assert row == _without_personal_data(expected[order["order_id"]])
        assert payout_date in dates_naming[order["order_id"]]

    expected_captures = {c["capture_id"]: (o["order_id"], c) for o in expected.values() for c in o["captures"]}
    captures = run.records("captures")
    assert Counter(c["capture_id"] for c in captures) == Counter(list(expected_captures))
    for capture in captures:
        order_id, klarna = expected_captures[capture["capture_id"]]
        assert capture["order_id"] == order_id
        assert {k: v for k, v in capture.items() if k not in ("order_id", "payout_date")} == {
            k: v for k, v in klarna.items() if k not in ("billing_address", "shipping_address")
        }
    expected_refunds = {r["refund_id"]: (o["order_id"], r) for o in expected.values() for r in o["refunds"]}
    refunds = run.records("refunds")
    assert expected_refunds and Counter(r["refund_id"] for r in refunds) == Counter(list(expected_refunds))
    for refund in refunds:
        order_id, klarna = expected_refunds[refund["refund_id"]]
        assert refund["order_id"] == order_id
        assert {k: v for k, v in refund.items() if k not in ("order_id", "payout_date")} == klarna
    return named, gone


def test_a_full_sync_equals_the_emulators_orders_with_one_request_per_order(emulator, form):
    run = _sync(emulator, form=form)

    named, gone = _assert_exactly_the_emulators(run, emulator.dataset)

    # One request per order the transactions name, gone ones included, for all three streams (the
    # sync's OrderFetcher). The transactions are the parent of each of the three streams, read once
    # for the three (OneReadPerSync): each page once.
    assert _order_requests(emulator) == Counter(named)
    pages = Counter((r["query"].get("payment_reference"), r["query"].get("offset", "0")) for r in emulator.requests() if r["endpoint"] == "transactions")
    assert {ref for ref, _ in pages} == {p["payment_reference"] for p in emulator.dataset.payouts()}
    assert set(pages.values()) == {1}, pages
    # One warning per gone order, not one per stream that read it.
    warnings = [m["log"]["message"] for m in run.of_type("LOG") if m["log"]["level"] == "WARN"]
    warned = [w.split("/ordermanagement/v1/orders/", 1)[1].split(" ", 1)[0] for w in warnings if "/ordermanagement/v1/orders/" in w]
    assert sorted(warned) == sorted(gone)
    assert EMULATOR_PASSWORD not in run.everything


def test_with_include_personal_data_the_orders_are_exactly_the_emulators(emulator):
    run = run_connector("read", emulator.config(include_personal_data=True), configured_catalog(["orders"], "full_refresh"))

    assert run.exit_code == 0, run.everything[-3000:]
    for order in run.kept("orders"):
        row = {k: v for k, v in order.items() if k != "payout_date"}
        assert row == emulator.dataset.order(order["order_id"])
        assert row["billing_address"]["email"] and row["captures"][0]["shipping_address"]


def test_an_incremental_sync_fetches_only_the_orders_of_the_transactions_it_reads(emulator):
    first = _sync(emulator, lookback_window_days=0)
    added = emulator.grow(new_payouts=3, late_payouts=0)
    emulator.reset_requests()
    second = _sync(emulator, first.final_state(), lookback_window_days=0)

    dataset = emulator.dataset
    read_refs = {r["query"].get("payment_reference") for r in emulator.requests() if r["endpoint"] == "transactions"}
    assert read_refs == set(added)  # the payouts at the cursor come back, but were read before
    named_now = _named_order_ids(dataset, read_refs)
    assert _order_requests(emulator) == Counter(named_now)
    assert {o["order_id"] for o in second.kept("orders")} == {o for o in named_now if not dataset.is_purged(o)}
    assert set(second.deleted("orders", "order_id")) == {o for o in named_now if dataset.is_purged(o)}
    assert _named_order_ids(dataset, added) <= named_now

    # Together the two syncs hold every order, and every capture and refund, exactly as served.
    latest = {o["order_id"]: o for o in first.kept("orders") + second.kept("orders")}
    expected = {o: dataset.order(o) for o in _named_order_ids(dataset) if not dataset.is_purged(o)}
    assert sorted(latest) == sorted(expected)
    assert all({k: v for k, v in row.items() if k != "payout_date"} == _without_personal_data(expected[o]) for o, row in latest.items())
    captures = {c["capture_id"] for c in first.records("captures") + second.records("captures")}
    assert captures == {c["capture_id"] for o in expected.values() for c in o["captures"]}
    refunds = {r["refund_id"] for r in first.records("refunds") + second.records("refunds")}
    assert refunds == {r["refund_id"] for o in expected.values() for r in o["refunds"]}


# The final state of a full sync of SPEC (lookback_window_days 0) by source-klarna 1.1.0, whose captures and
# refunds were substreams of orders: what a user upgrading from it has saved.
STATE_1_1_0 = Path(__file__).with_name("states") / "orders_captures_refunds_1_1_0.json"


def test_a_state_written_by_1_1_0_continues_with_the_new_payouts_orders_only(emulator):
    saved = json.loads(STATE_1_1_0.read_text())
    added = emulator.grow(new_payouts=3, late_payouts=0)

    run = _sync(emulator, saved, lookback_window_days=0)

    dataset = emulator.dataset
    named_now = _named_order_ids(dataset, added)
    assert _order_requests(emulator) == Counter(named_now)
    served = {o: dataset.order(o) for o in named_now if not dataset.is_purged(o)}
    assert {o["order_id"] for o in run.kept("orders")} == set(served)
    assert Counter(c["capture_id"] for c in run.records("captures")) == Counter(c["capture_id"] for o in served.values() for c in o["captures"])
    assert Counter(r["refund_id"] for r in run.records("refunds")) == Counter(r["refund_id"] for o in served.values() for r in o["refunds"])
    # The new states are no longer nested under orders (captures and refunds read the transactions
    # themselves): each of the three streams keeps its transactions' and payouts' states.
    shapes = {m["stream"]["stream_descriptor"]["name"]: m["stream"]["stream_state"] for m in run.final_state()}
    for stream in STREAMS:
        assert "orders" not in shapes[stream]["parent_state"], shapes[stream]["parent_state"].keys()
        assert shapes[stream]["parent_state"]["transactions"]["parent_state"]["payouts"]["payouts_read"]


# Every kind of fault, on any request: 10 % 5xx, 3 % connections reset before an answer, 3 % bodies cut
# short, 3 % half JSON bodies, and a burst of 429s while the first orders are asked for.
# The faults are drawn per request number, the same for every run: seed 10 puts at most four faults in
# any seven consecutive requests of the first 1,500. At a sync's end one order's retries can be its only
# requests, and a longer run of faults would exhaust its seven attempts: a failure, rightly, but not the
# one tested here (a run of four at request 609 under seed 5 did, once the sync made fewer requests).
RANDOM_FAULTS = dict(error_5xx=0.10, connection_reset=0.03, truncated_body=0.03, invalid_json=0.03, fault_seed=10)
BURST_429 = {n: "rate_limit" for n in range(40, 46)}


def test_under_every_kind_of_fault_the_orders_are_exact_and_only_what_failed_is_asked_again(make_emulator):
    emulator = make_emulator(SPEC, fail_requests=BURST_429, **RANDOM_FAULTS)
    config = emulator.config(concurrency=12)
    # The shipped manifest with its exponential backoff shrunk: the same retries, seconds apart.
    run = stream_connector("read", config, configured_catalog(STREAMS), manifest=fast_backoff_manifest(), timeout=300)
    assert_clean_run(run, config)
    assert run.exit_code == 0 and not run.errors(), run.everything[-3000:]

    named, _ = _assert_exactly_the_emulators(run, emulator.dataset)

    # Each order asked for once, and once more for each of its requests that met a fault.
    order_requests = [r for r in emulator.requests() if r["endpoint"] == "order"]
    faulted = Counter(r["path"].rsplit("/", 1)[-1] for r in order_requests if r["fault"])
    assert _order_requests(emulator) == Counter(named) + faulted
    kinds = {r["fault"] for r in order_requests if r["fault"]}
    assert {"connection_reset", "truncated_body", "invalid_json", "rate_limit"} <= kinds, kinds
    assert any(kind.startswith("error_5") for kind in kinds), kinds
