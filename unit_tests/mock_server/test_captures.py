"""captures: one row per capture of each order, taken from the order `orders` fetched (no request of
their own, first sync or not), buyer addresses left out unless asked for."""

from __future__ import annotations

from collections import Counter

from airbyte_cdk.models import SyncMode

from unit_tests.mock_server import response_builder as rb
from unit_tests.mock_server.config import ConfigBuilder
from unit_tests.mock_server.klarna_mock import serve_account
from unit_tests.mock_server.reader import final_state, read_streams, records_of, state_for

ALL = {"orders": SyncMode.incremental, "captures": SyncMode.incremental, "refunds": SyncMode.incremental}
CAPTURES = {"captures": SyncMode.incremental}


def _orders():
    without_key = rb.order("o4")
    del without_key["captures"]
    return [
        rb.order("o1", captures=[rb.capture("c1a", captured_amount=700), rb.capture("c1b", captured_amount=300)]),
        rb.order("o2", captures=[rb.capture("c2")]),
        rb.order("o3", captures=[]),
        without_key,
    ]


def test_one_row_per_capture_with_its_order_and_payout_date_and_each_order_requested_once(requests_mock):
    orders = _orders()
    klarna = serve_account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": rb.transactions_naming("A", "o1", "o2", "o3", "o4", "o1")}, orders)

    output = read_streams(ConfigBuilder().build(), ALL)

    rows = {r["capture_id"]: r for r in records_of(output, "captures")}
    assert sorted(rows) == ["c1a", "c1b", "c2"]
    assert {cid: r["order_id"] for cid, r in rows.items()} == {"c1a": "o1", "c1b": "o1", "c2": "o2"}
    assert {r["payout_date"] for r in rows.values()} == {"2024-02-01T06:00:00Z"}
    assert rows["c1a"]["captured_amount"] == 700 and rows["c1a"]["klarna_reference"] == orders[0]["captures"][0]["klarna_reference"]
    # orders, and the parent reads of captures and refunds: one request per order in all.
    assert Counter(klarna.order_requests()) == {"o1": 1, "o2": 1, "o3": 1, "o4": 1}
    assert klarna.urls("/captures") == []


def test_captures_alone_still_request_each_order_once(requests_mock):
    klarna = serve_account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": rb.transactions_naming("A", "o1", "o2", "o1")}, _orders())

    rows = records_of(read_streams(ConfigBuilder().build(), CAPTURES), "captures")

    assert sorted(r["capture_id"] for r in rows) == ["c1a", "c1b", "c2"]
    assert sorted(klarna.order_requests()) == ["o1", "o2"]


def test_buyer_addresses_are_left_out_by_default_and_kept_when_asked(requests_mock):
    order = rb.order("o1", captures=[rb.capture("c1")])
    serve_account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": rb.transactions_naming("A", "o1")}, [order])

    (default,) = records_of(read_streams(ConfigBuilder().build(), CAPTURES), "captures")
    (kept,) = records_of(read_streams(ConfigBuilder().with_fields(include_personal_data=True).build(), CAPTURES), "captures")

    assert "billing_address" not in default and "shipping_address" not in default
    assert default["shipping_info"] == order["captures"][0]["shipping_info"]
    assert kept["billing_address"] == order["captures"][0]["billing_address"]
    assert kept["shipping_address"] == order["captures"][0]["shipping_address"]


def test_a_gone_order_has_no_captures_one_request_and_one_warning_across_the_three_streams(requests_mock):
    klarna = serve_account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": rb.transactions_naming("A", "o2", "gone")}, _orders(), gone={"gone"})

    output = read_streams(ConfigBuilder().build(), ALL)

    assert [r["capture_id"] for r in records_of(output, "captures")] == ["c2"]
    assert not output.errors
    assert Counter(klarna.order_requests()) == {"o2": 1, "gone": 1}
    warnings = [m.log.message for m in output.logs if m.log.level.name == "WARN"]
    assert len(warnings) == 1 and "/ordermanagement/v1/orders/gone" in warnings[0]


def test_a_sync_with_state_reads_the_new_orders_captures_without_a_request_of_its_own(requests_mock):
    payouts = [rb.payout("P0", "2024-02-01T06:00:00Z"), rb.payout("P1", "2024-02-02T06:00:00Z")]
    transactions = {"P0": rb.transactions_naming("P0", "o1"), "P1": rb.transactions_naming("P1", "o2")}
    orders = _orders() + [rb.order("new", captures=[rb.capture("cn1"), rb.capture("cn2")])]
    klarna = serve_account(requests_mock, payouts, transactions, orders)
    config = ConfigBuilder().with_fields(lookback_window_days=0).build()
    first = read_streams(config, CAPTURES)
    assert sorted(r["capture_id"] for r in records_of(first, "captures")) == ["c1a", "c1b", "c2"]

    payouts.append(rb.payout("NEW", "2024-03-01T06:00:00Z"))
    transactions["NEW"] = rb.transactions_naming("NEW", "new")
    requests_mock.reset_mock()
    # With state the CDK reads a lazy child through the stream's own requester: it must not go out.
    second = read_streams(config, CAPTURES, state=state_for({"captures": final_state(first, "captures")}))

    rows = records_of(second, "captures")
    # The payout at the cursor (P1, Klarna's start_date is inclusive) comes back, but its
    # transactions were read by the first sync: its order is not read again.
    assert sorted(r["capture_id"] for r in rows) == ["cn1", "cn2"]
    assert {r["order_id"] for r in rows if r["capture_id"].startswith("cn")} == {"new"}
    assert {r["payout_date"] for r in rows if r["order_id"] == "new"} == {"2024-03-01T06:00:00Z"}
    assert sorted(klarna.order_requests()) == ["new"]
    assert klarna.urls("/captures") == []


def test_state_is_one_cursor_over_the_orders_state(requests_mock):
    serve_account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": rb.transactions_naming("A", "o1")}, _orders())

    state = final_state(read_streams(ConfigBuilder().build(), CAPTURES), "captures")

    assert state["use_global_cursor"] is True and "states" not in state
    assert state["state"] == {"payout_date": "2024-02-01T06:00:00Z"}
    # The parent state is the transactions' own (the one level the CDK reads back), not nested under
    # orders as 1.1.0-1.4.0 wrote it (NestedParentStateMigration lifts that shape).
    assert set(state["parent_state"]) == {"transactions"}
    assert state["parent_state"]["transactions"]["parent_state"] == {
        "payouts": {"payout_date": "2024-02-01T06:00:00Z", "payouts_read": {"A": "2024-02-01T06:00:00Z"}}
    }


def test_a_cut_order_answer_is_retried_and_never_replayed_from_the_cache(requests_mock):
    # The order cache must not keep an answer the error handler retries: the retry and the parent
    # reads of captures would otherwise get the same broken body again.
    klarna = serve_account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": rb.transactions_naming("A", "o1")}, [])
    good = rb.order("o1", captures=[rb.capture("c1")])
    requests_mock.get(klarna.requests.order_url("o1"), [{"status_code": 200, "text": '{"order_id": "o1", "capt'}, {"status_code": 200, "json": good}])

    output = read_streams(ConfigBuilder().build(), ALL)

    assert not output.errors
    assert [r["order_id"] for r in records_of(output, "orders")] == ["o1"]
    assert [r["capture_id"] for r in records_of(output, "captures")] == ["c1"]
    assert klarna.order_requests() == ["o1", "o1"]
