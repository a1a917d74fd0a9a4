"""orders: one request per distinct order the transactions name, 404s skipped with a warning, personal data
left out unless asked for, and only the orders of newly read transactions on an incremental sync."""

from __future__ import annotations

from collections import Counter
from unittest import mock

from airbyte_cdk.models import FailureType, SyncMode

from unit_tests.mock_server import response_builder as rb
from unit_tests.mock_server.config import ConfigBuilder
from unit_tests.mock_server.klarna_mock import serve_account
from unit_tests.mock_server.reader import final_state, read_streams, records_of, state_for

STREAMS = {"orders": SyncMode.incremental}
FULL = {"orders": SyncMode.full_refresh}
PERSONAL = ("billing_address", "shipping_address", "customer")


def _warnings(output):
    return [m.log.message for m in output.logs if m.log.level.name == "WARN"]


def test_each_order_the_transactions_name_is_fetched_once_and_carries_its_payout_date(requests_mock):
    payouts = [rb.payout("A", "2024-02-01T06:00:00Z"), rb.payout("B", "2024-02-02T06:00:00Z")]
    # o2 is named three times, in both payouts.
    transactions = {"A": rb.transactions_naming("A", "o1", "o2", "o2"), "B": rb.transactions_naming("B", "o2", "o3")}
    orders = [rb.order(o) for o in ("o1", "o2", "o3", "never-named")]
    klarna = serve_account(requests_mock, payouts, transactions, orders)

    rows = records_of(read_streams(ConfigBuilder().build(), FULL), "orders")

    assert sorted(r["order_id"] for r in rows) == ["o1", "o2", "o3"]
    assert sorted(klarna.order_requests()) == ["o1", "o2", "o3"]
    dates = {r["order_id"]: r["payout_date"] for r in rows}
    assert dates["o1"] == "2024-02-01T06:00:00Z" and dates["o3"] == "2024-02-02T06:00:00Z"
    assert dates["o2"] in {"2024-02-01T06:00:00Z", "2024-02-02T06:00:00Z"}
    # Klarna's fields come through untouched, captures and refunds embedded.
    expected = {o["order_id"]: o for o in orders}
    for row in rows:
        for name in ("status", "order_amount", "captured_amount", "refunded_amount", "initial_payment_method", "order_lines"):
            assert row[name] == expected[row["order_id"]][name]
        assert [c["capture_id"] for c in row["captures"]] == [c["capture_id"] for c in expected[row["order_id"]]["captures"]]


def test_an_order_klarna_no_longer_returns_is_a_deletion_record_with_one_warning_and_the_sync_goes_on(requests_mock):
    payouts = [rb.payout("A", "2024-02-01T06:00:00Z")]
    klarna = serve_account(requests_mock, payouts, {"A": rb.transactions_naming("A", "o1", "gone", "o3", "gone")}, [rb.order("o1"), rb.order("o3")], gone={"gone"})

    output = read_streams(ConfigBuilder().build(), FULL)

    orders = {r["order_id"]: r for r in records_of(output, "orders")}
    assert sorted(orders) == ["gone", "o1", "o3"]
    # Airbyte's deletion marker, nothing of Klarna's: a deduplicated destination drops the row it had.
    assert orders["gone"]["_ab_cdc_deleted_at"] and set(orders["gone"]) == {"order_id", "payout_date", "_ab_cdc_deleted_at"}
    assert orders["o1"].get("_ab_cdc_deleted_at") is None
    assert not output.errors
    assert Counter(klarna.order_requests())["gone"] == 1  # a 404 is not retried
    (warning,) = _warnings(output)
    assert "/ordermanagement/v1/orders/gone" in warning and "404" in warning and "deleted" in warning


def test_personal_data_is_left_out_by_default(requests_mock):
    serve_account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": rb.transactions_naming("A", "o1")}, [rb.order("o1")])

    (row,) = records_of(read_streams(ConfigBuilder().build(), FULL), "orders")

    assert not set(PERSONAL) & set(row)
    for capture in row["captures"]:
        assert "billing_address" not in capture and "shipping_address" not in capture
        assert capture["capture_id"] and capture["shipping_info"]
    assert row["order_lines"] and row["initial_payment_method"] and row["merchant_reference1"]


def test_personal_data_is_kept_when_the_flag_is_on(requests_mock):
    order = rb.order("o1")
    serve_account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": rb.transactions_naming("A", "o1")}, [order])

    (row,) = records_of(read_streams(ConfigBuilder().with_fields(include_personal_data=True).build(), FULL), "orders")

    for name in PERSONAL:
        assert row[name] == order[name]
    assert row["captures"][0]["billing_address"] == order["captures"][0]["billing_address"]
    assert row["captures"][0]["shipping_address"] == order["captures"][0]["shipping_address"]


def test_incremental_fetches_only_the_orders_of_transactions_read_since_the_state(requests_mock):
    payouts = [rb.payout(f"P{i}", f"2024-02-{1 + i:02d}T06:00:00Z") for i in range(4)]
    transactions = {f"P{i}": rb.transactions_naming(f"P{i}", f"o{i}a", f"o{i}b") for i in range(4)}
    orders = [rb.order(f"o{i}{x}") for i in range(4) for x in "ab"] + [rb.order("new")]
    klarna = serve_account(requests_mock, payouts, transactions, orders)
    config = ConfigBuilder().with_fields(lookback_window_days=0).build()
    first = read_streams(config, STREAMS)
    assert len(records_of(first, "orders")) == 8

    payouts.append(rb.payout("NEW", "2024-03-01T06:00:00Z"))
    # A new payout naming a new order and, again, an old one (a return on o0a).
    transactions["NEW"] = rb.transactions_naming("NEW", "new", "o0a")
    requests_mock.reset_mock()
    second = read_streams(config, STREAMS, state=state_for({"orders": final_state(first, "orders")}))

    # The payout at the cursor (P3) comes back (Klarna's start_date is inclusive), but its
    # transactions were read by the first sync: neither they nor their orders are read again.
    assert sorted(klarna.order_requests()) == ["new", "o0a"]
    rows = {r["order_id"]: r for r in records_of(second, "orders")}
    assert sorted(rows) == ["new", "o0a"]
    assert rows["o0a"]["payout_date"] == "2024-03-01T06:00:00Z"


def test_state_is_one_cursor_with_the_transactions_and_payouts_state_it_depends_on(requests_mock):
    serve_account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": rb.transactions_naming("A", "o1", "o2")}, [rb.order("o1"), rb.order("o2")])

    state = final_state(read_streams(ConfigBuilder().build(), STREAMS), "orders")

    assert state["use_global_cursor"] is True and "states" not in state
    assert state["state"] == {"payout_date": "2024-02-01T06:00:00Z"}
    transactions_state = state["parent_state"]["transactions"]
    assert transactions_state["use_global_cursor"] is True and "states" not in transactions_state
    assert transactions_state["parent_state"] == {
        "payouts": {"payout_date": "2024-02-01T06:00:00Z", "payouts_read": {"A": "2024-02-01T06:00:00Z"}}
    }


def test_a_transaction_without_an_order_id_names_no_order(requests_mock):
    rows = rb.transactions_naming("A", "o1") + [rb.transaction("A", order_id=None, type="CHARGE")]
    klarna = serve_account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": rows}, [rb.order("o1")])

    output = read_streams(ConfigBuilder().build(), FULL)

    assert [r["order_id"] for r in records_of(output, "orders")] == ["o1"]
    assert klarna.order_requests() == ["o1"]


def test_an_order_answer_that_is_not_an_order_is_retried_then_fails_naming_the_url(requests_mock):
    klarna = serve_account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": rb.transactions_naming("A", "o1")}, [])
    requests_mock.get(klarna.requests.order_url("o1"), json={"unexpected": True})
    sleep = mock.MagicMock()

    output = read_streams(ConfigBuilder().build(), FULL, expecting_exception=True, sleep=sleep)

    error = output.errors[0].trace.error
    assert error.failure_type == FailureType.system_error
    assert "was not an order" in error.message and "/ordermanagement/v1/orders/o1" in error.message
    assert len(klarna.order_requests()) == 3  # the same answer three times in a row: it will not change


def test_a_server_error_on_an_order_is_retried_and_the_order_arrives(requests_mock):
    klarna = serve_account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": rb.transactions_naming("A", "o1")}, [])
    requests_mock.get(
        klarna.requests.order_url("o1"),
        [{"status_code": 503, "json": rb.error("SERVICE_UNAVAILABLE")}, {"status_code": 200, "json": rb.order("o1")}],
    )

    output = read_streams(ConfigBuilder().build(), FULL)

    assert [r["order_id"] for r in records_of(output, "orders")] == ["o1"]
    assert klarna.order_requests() == ["o1", "o1"]


def test_rejected_credentials_on_the_orders_endpoint_are_a_config_error(requests_mock):
    klarna = serve_account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": rb.transactions_naming("A", "o1")}, [])
    requests_mock.get(klarna.requests.order_url("o1"), status_code=403, json=rb.error("FORBIDDEN", ["Not allowed"]))

    output = read_streams(ConfigBuilder().build(), FULL, expecting_exception=True)

    error = output.errors[0].trace.error
    assert error.failure_type == FailureType.config_error
    assert "rejected the API credentials" in error.message
