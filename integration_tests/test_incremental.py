"""Incremental syncs against the emulator: nothing new twice, exactly the new rows after growth,
late payouts included, and only the transactions of new and late payouts requested."""

from __future__ import annotations

from collections import Counter

from connector_runner import configured_catalog, run_connector

STREAMS = ("payouts", "transactions", "payout_summaries")


def _content(row):
    return repr(sorted((k, v) for k, v in row.items() if k not in ("transaction_key", "payout_date")))


def _sync(emulator, state=None, **config):
    run = run_connector("read", emulator.config(**config), configured_catalog(STREAMS), state)
    assert run.exit_code == 0, run.everything[-3000:]
    assert not run.errors()
    return run


def test_a_second_sync_with_the_state_brings_nothing_new(emulator):
    first = _sync(emulator)
    emulator.reset_requests()
    second = _sync(emulator, first.final_state())

    # The payouts of the lookback window come back (their rows are the same), their transactions do
    # not: the state lists them as read.
    second_payouts = {p["payment_reference"]: p for p in second.records("payouts")}
    assert second_payouts
    first_payouts = {p["payment_reference"]: p for p in first.records("payouts")}
    assert all(first_payouts[ref] == row for ref, row in second_payouts.items())
    assert second.records("transactions") == []
    assert [r for r in emulator.requests() if r["path"].endswith("/transactions")] == []


def test_after_growth_exactly_the_new_and_late_payouts_arrive_and_the_union_equals_the_source(emulator):
    first = _sync(emulator)
    added = emulator.grow(new_payouts=3, late_payouts=1)
    emulator.reset_requests()
    second = _sync(emulator, first.final_state())

    second_refs = {p["payment_reference"] for p in second.records("payouts")}
    assert set(added) <= second_refs
    for ref in added:
        got = Counter(_content(r) for r in second.records("transactions") if r["payment_reference"] == ref)
        assert got == Counter(_content(r) for r in emulator.dataset.transactions_for(ref)), ref

    union = {r["transaction_key"]: r for r in first.records("transactions") + second.records("transactions")}
    assert Counter(_content(r) for r in union.values()) == Counter(_content(r) for r in emulator.dataset.transactions())
    payouts_union = {p["payment_reference"]: p for p in first.records("payouts") + second.records("payouts")}
    assert sorted(payouts_union) == sorted(p["payment_reference"] for p in emulator.dataset.payouts())

    # Transactions were requested for the new and the late payouts only, each once: not for the
    # payouts of the lookback window the first sync read, nor the history.
    requested = Counter(
        (r["query"].get("payment_reference"), r["query"].get("offset", "0")) for r in emulator.requests() if r["path"].endswith("/transactions")
    )
    # 620 rows a payout: two pages each.
    assert requested == Counter({(ref, offset): 1 for ref in added for offset in ("0", "500")})


def test_each_page_of_the_payouts_list_is_asked_once_per_stream_that_reads_it(emulator):
    # A limit BEHAVIOR.md names: payouts, transactions (its parent) and the order streams (their
    # transactions' parent, read once for all three) each ask for the payouts list on their own.
    emulator.reset_requests()
    run = run_connector("read", emulator.config(), configured_catalog(STREAMS + ("orders", "captures", "refunds")))
    assert run.exit_code == 0, run.everything[-3000:]
    pages = Counter(tuple(sorted(r["query"].items())) for r in emulator.requests()
                    if r["path"].endswith("/settlements/v1/payouts") and r["query"].get("size") != "1")
    assert pages and set(pages.values()) == {3}, pages
