"""refunds: one row per refund of each order, taken from the order `orders` fetched, with its order_id;
no request of their own, first sync or not."""

from __future__ import annotations

from collections import Counter

from airbyte_cdk.models import SyncMode

from unit_tests.mock_server import response_builder as rb
from unit_tests.mock_server.config import ConfigBuilder
from unit_tests.mock_server.klarna_mock import serve_account
from unit_tests.mock_server.reader import final_state, read_streams, records_of, state_for

REFUNDS = {"refunds": SyncMode.incremental}
ALL = {"orders": SyncMode.full_refresh, "captures": SyncMode.full_refresh, "refunds": SyncMode.full_refresh}


def _orders():
    return [
        rb.order("o1", refunds=[rb.refund("r1a", refunded_amount=250), rb.refund("r1b", refunded_amount=50, credit_invoice=True)]),
        rb.order("o2", refunds=[]),
        rb.order("o3", refunds=None) | {"refunds": None},
    ]


def test_one_row_per_refund_with_its_order_and_payout_date(requests_mock):
    orders = _orders()
    klarna = serve_account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": rb.transactions_naming("A", "o1", "o2", "o3")}, orders)

    rows = {r["refund_id"]: r for r in records_of(read_streams(ConfigBuilder().build(), REFUNDS), "refunds")}

    assert sorted(rows) == ["r1a", "r1b"]
    assert {r["order_id"] for r in rows.values()} == {"o1"}
    assert {r["payout_date"] for r in rows.values()} == {"2024-02-01T06:00:00Z"}
    assert rows["r1a"]["refunded_amount"] == 250 and rows["r1b"]["credit_invoice"] is True
    assert rows["r1a"]["refunded_at"] == orders[0]["refunds"][0]["refunded_at"]
    assert sorted(klarna.order_requests()) == ["o1", "o2", "o3"]


def test_with_orders_and_captures_every_order_is_still_requested_once(requests_mock):
    klarna = serve_account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": rb.transactions_naming("A", "o1", "o2", "o1")}, _orders())

    output = read_streams(ConfigBuilder().build(), ALL)

    assert sorted(r["refund_id"] for r in records_of(output, "refunds")) == ["r1a", "r1b"]
    assert len(records_of(output, "orders")) == 2 and len(records_of(output, "captures")) == 2
    assert Counter(klarna.order_requests()) == {"o1": 1, "o2": 1}


def test_a_sync_with_state_reads_the_new_orders_refunds_without_a_request_of_its_own(requests_mock):
    payouts = [rb.payout("P0", "2024-02-01T06:00:00Z"), rb.payout("P1", "2024-02-02T06:00:00Z")]
    transactions = {"P0": rb.transactions_naming("P0", "o1"), "P1": rb.transactions_naming("P1", "o2")}
    orders = _orders() + [rb.order("new", refunds=[rb.refund("rn")])]
    klarna = serve_account(requests_mock, payouts, transactions, orders)
    config = ConfigBuilder().with_fields(lookback_window_days=0).build()
    first = read_streams(config, REFUNDS)

    payouts.append(rb.payout("NEW", "2024-03-01T06:00:00Z"))
    transactions["NEW"] = rb.transactions_naming("NEW", "new", "o1")
    requests_mock.reset_mock()
    second = read_streams(config, REFUNDS, state=state_for({"refunds": final_state(first, "refunds")}))

    rows = {r["refund_id"]: r for r in records_of(second, "refunds")}
    assert sorted(rows) == ["r1a", "r1b", "rn"]
    assert rows["rn"]["order_id"] == "new" and rows["r1a"]["payout_date"] == "2024-03-01T06:00:00Z"
    # P1 at the cursor comes back (Klarna's start_date is inclusive) but its transactions were read
    # by the first sync, so its order o2 is not fetched again; o1 is, named by the new payout.
    assert sorted(klarna.order_requests()) == ["new", "o1"]
    assert klarna.urls("/refunds") == []
