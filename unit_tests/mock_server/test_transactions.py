"""transactions: one partition per payout, every page, a stable key, payouts new since the state."""

from __future__ import annotations

import copy

from airbyte_cdk.models import SyncMode

from unit_tests.mock_server import response_builder as rb
from unit_tests.mock_server.config import ConfigBuilder
from unit_tests.mock_server.klarna_mock import KlarnaMock
from unit_tests.mock_server.reader import final_state, read_streams, records_of
from unit_tests.mock_server.request_builder import offset_of, query_of, size_of

STREAMS = {"transactions": SyncMode.incremental}
FULL = {"transactions": SyncMode.full_refresh}


def _account(requests_mock, payouts, transactions):
    klarna = KlarnaMock(requests_mock)
    klarna.serve_payouts(payouts)
    klarna.serve_transactions(transactions)
    return klarna


def _rows(ref, n, **fields):
    return [rb.transaction(ref, amount=100 + i, **fields) for i in range(n)]


def test_reads_every_page_of_every_payout_with_its_payout_fields(requests_mock):
    payouts = [rb.payout("A", "2024-02-01T06:00:00Z"), rb.payout("B", "2024-02-02T06:00:00Z")]
    transactions = {"A": _rows("A", 1203), "B": _rows("B", 3)}
    klarna = _account(requests_mock, payouts, transactions)

    output = read_streams(ConfigBuilder().build(), FULL)

    rows = records_of(output, "transactions")
    assert len(rows) == 1206
    assert {r["payment_reference"] for r in rows if r["payout_date"] == "2024-02-01T06:00:00Z"} == {"A"}
    assert {r["payment_reference"] for r in rows if r["payout_date"] == "2024-02-02T06:00:00Z"} == {"B"}
    urls_a = [u for u in klarna.urls("/transactions") if query_of(u)["payment_reference"] == "A"]
    assert sorted(offset_of(u) for u in urls_a) == [0, 500, 1000]
    assert {size_of(u) for u in klarna.urls("/transactions")} == {500}


def test_payment_reference_missing_on_a_row_is_filled_from_its_payout(requests_mock):
    row = rb.transaction("A")
    del row["payment_reference"]
    _account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": [row]})

    rows = records_of(read_streams(ConfigBuilder().build(), FULL), "transactions")

    assert rows[0]["payment_reference"] == "A"
    assert rows[0]["transaction_key"].startswith("A:")


def test_identical_rows_inside_a_payout_get_distinct_keys_and_keys_survive_a_reread(requests_mock):
    fee = rb.transaction("A", type="FEE", amount=250)
    # Three byte-identical fee rows, two of them split across a page boundary.
    rows = _rows("A", 498) + [fee, copy.deepcopy(fee), copy.deepcopy(fee)] + _rows("A", 5)
    _account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": rows})

    first = [r["transaction_key"] for r in records_of(read_streams(ConfigBuilder().build(), FULL), "transactions")]
    second = [r["transaction_key"] for r in records_of(read_streams(ConfigBuilder().build(), FULL), "transactions")]

    assert len(first) == len(set(first)) == 506
    assert first == second


def test_keys_do_not_depend_on_the_order_klarna_lists_rows_in(requests_mock):
    fee = rb.transaction("A", type="FEE", amount=250)
    rows = _rows("A", 10) + [fee, copy.deepcopy(fee)]
    transactions = {"A": rows}
    _account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], transactions)
    in_order = {r["transaction_key"] for r in records_of(read_streams(ConfigBuilder().build(), FULL), "transactions")}

    transactions["A"] = list(reversed(rows))
    reversed_order = {r["transaction_key"] for r in records_of(read_streams(ConfigBuilder().build(), FULL), "transactions")}

    assert in_order == reversed_order


def test_incremental_reads_only_the_transactions_of_payouts_new_since_the_state(requests_mock):
    payouts = [rb.payout(f"P{i}", f"2024-02-{1 + i:02d}T06:00:00Z") for i in range(5)]
    transactions = {p["payment_reference"]: _rows(p["payment_reference"], 3) for p in payouts}
    klarna = _account(requests_mock, payouts, transactions)
    config = ConfigBuilder().with_fields(lookback_window_days=0).build()
    first = read_streams(config, STREAMS)
    assert len(records_of(first, "transactions")) == 15

    new = rb.payout("NEW", "2024-03-01T06:00:00Z")
    payouts.append(new)
    transactions["NEW"] = _rows("NEW", 4)
    requests_mock.reset_mock()
    second = read_streams(config, STREAMS, state=_state(first))

    # Klarna's start_date is inclusive, so the payouts list brings back the payout at the cursor (P4),
    # but the state lists it as read: only the new payout's transactions are requested.
    rows = records_of(second, "transactions")
    assert sorted(r["payment_reference"] for r in rows) == ["NEW"] * 4
    assert {query_of(u)["payment_reference"] for u in klarna.urls("/transactions")} == {"NEW"}
    # The first payouts window starts at the cursor, so P4 was in the list the second sync read.
    assert "2024-02-05T06:00:00Z" in {query_of(u)["start_date"] for u in klarna.urls("/payouts")}


def test_a_late_payout_within_the_lookback_brings_its_transactions(requests_mock):
    payouts = [rb.payout("A", "2024-02-01T06:00:00Z"), rb.payout("B", "2024-02-10T06:00:00Z")]
    transactions = {"A": _rows("A", 2), "B": _rows("B", 2)}
    _account(requests_mock, payouts, transactions)
    first = read_streams(ConfigBuilder().build(), STREAMS)

    # Dated two days before the saved cursor: inside the default three-day lookback.
    payouts.append(rb.payout("LATE", "2024-02-08T06:00:00Z"))
    transactions["LATE"] = _rows("LATE", 3)
    second = read_streams(ConfigBuilder().build(), STREAMS, state=_state(first))

    late_rows = [r for r in records_of(second, "transactions") if r["payment_reference"] == "LATE"]
    assert len(late_rows) == 3
    assert {r["payout_date"] for r in late_rows} == {"2024-02-08T06:00:00Z"}
    # B, inside the lookback too, was read by the first sync: only the late payout is read.
    assert {r["payment_reference"] for r in records_of(second, "transactions")} == {"LATE"}


def test_state_carries_the_payouts_cursor_it_depends_on(requests_mock):
    _account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": _rows("A", 1)})

    state = final_state(read_streams(ConfigBuilder().build(), STREAMS), "transactions")

    assert state["parent_state"] == {"payouts": {"payout_date": "2024-02-01T06:00:00Z", "payouts_read": {"A": "2024-02-01T06:00:00Z"}}}
    assert state["state"] == {"payout_date": "2024-02-01T06:00:00Z"}


def test_a_state_without_the_list_of_read_payouts_reads_the_lookback_window_again(requests_mock):
    # A state written before the list existed (source-klarna 1.0.0): nothing is known to be read, so
    # every payout the lookback brings back is read again, and the next state has the list.
    payouts = [rb.payout("A", "2024-02-01T06:00:00Z"), rb.payout("B", "2024-02-09T06:00:00Z"), rb.payout("C", "2024-02-10T06:00:00Z")]
    klarna = _account(requests_mock, payouts, {p["payment_reference"]: _rows(p["payment_reference"], 2) for p in payouts})
    old_state = {
        "use_global_cursor": True,
        "state": {"payout_date": "2024-02-10T06:00:00Z"},
        "lookback_window": 1,
        "parent_state": {"payouts": {"payout_date": "2024-02-10T06:00:00Z"}},
    }
    from unit_tests.mock_server.reader import state_for

    output = read_streams(ConfigBuilder().build(), STREAMS, state=state_for({"transactions": old_state}))

    assert {query_of(u)["payment_reference"] for u in klarna.urls("/transactions")} == {"B", "C"}
    assert final_state(output, "transactions")["parent_state"]["payouts"]["payouts_read"] == {
        "C": "2024-02-10T06:00:00Z",
        "B": "2024-02-09T06:00:00Z",
    }


def test_a_payout_the_lookback_brings_back_is_read_once_across_three_syncs(requests_mock):
    payouts = [rb.payout("A", "2024-02-09T06:00:00Z")]
    transactions = {"A": _rows("A", 2)}
    klarna = _account(requests_mock, payouts, transactions)
    first = read_streams(ConfigBuilder().build(), STREAMS)
    payouts.append(rb.payout("B", "2024-02-10T06:00:00Z"))
    transactions["B"] = _rows("B", 2)
    second = read_streams(ConfigBuilder().build(), STREAMS, state=_state(first))
    third = read_streams(ConfigBuilder().build(), STREAMS, state=_state(second))

    read = [query_of(u)["payment_reference"] for u in klarna.urls("/transactions")]
    assert sorted(read) == ["A", "B"]
    assert [r["payment_reference"] for r in records_of(third, "transactions")] == []
    assert final_state(third, "transactions")["parent_state"]["payouts"]["payouts_read"] == {
        "A": "2024-02-09T06:00:00Z",
        "B": "2024-02-10T06:00:00Z",
    }


def _state(output):
    from unit_tests.mock_server.reader import state_for

    return state_for({"transactions": final_state(output, "transactions")})


def test_a_payout_with_no_transactions_yields_none_is_listed_as_read_and_is_not_asked_again(requests_mock):
    # Klarna may settle a payout with no transactions of its own (e.g. a debt carried over): its
    # transactions page is empty, with a count of 0. That is an answer, not a failure.
    payouts = [rb.payout("A", "2024-02-09T06:00:00Z"), rb.payout("EMPTY", "2024-02-10T06:00:00Z")]
    klarna = _account(requests_mock, payouts, {"A": _rows("A", 2), "EMPTY": []})
    first = read_streams(ConfigBuilder().build(), STREAMS)

    second = read_streams(ConfigBuilder().build(), STREAMS, state=_state(first))

    assert not first.errors and not second.errors
    assert {r["payment_reference"] for r in records_of(first, "transactions")} == {"A"}
    assert final_state(first, "transactions")["parent_state"]["payouts"]["payouts_read"]["EMPTY"] == "2024-02-10T06:00:00Z"
    assert sorted(query_of(u)["payment_reference"] for u in klarna.urls("/transactions")) == ["A", "EMPTY"]
