"""OrderIdBatches (the order ids the transactions name, each once, in batches, with the parent state
each batch may commit) and NestedParentStateMigration (captures' and refunds' state shape)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from airbyte_cdk.sources.declarative.partition_routers.substream_partition_router import ParentStreamConfig, SubstreamPartitionRouter
from airbyte_cdk.sources.streams.concurrent.cursor import CursorField
from airbyte_cdk.sources.types import Record, StreamSlice
from source_klarna.components import NestedParentStateMigration, OrderIdBatches


class FakeCursor:
    """The parent's cursor: records what it observes and which partitions were closed (its state)."""

    cursor_field = CursorField("payout_date")

    def __init__(self) -> None:
        self.observed: List[Any] = []
        self.closed: List[str] = []
        self.ensured = 0

    @property
    def state(self) -> Dict[str, Any]:
        return {"payouts_read": list(self.closed)}

    def observe(self, record: Record) -> None:
        self.observed.append(record.data["payout_date"])

    def close_partition(self, partition: "FakePartition") -> None:
        self.closed.append(partition.payment_reference)

    def ensure_at_least_one_state_emitted(self) -> None:
        self.ensured += 1


class FakePartition:
    def __init__(self, payment_reference: str, payout_date: str, order_ids: List[Optional[str]]) -> None:
        self.payment_reference = payment_reference
        self.slice = StreamSlice(partition={"payment_reference": payment_reference}, cursor_slice={}, extra_fields={"payout_date": payout_date})
        self.rows = [{"order_id": order_id, "amount": 1} for order_id in order_ids]

    def read(self):
        for row in self.rows:
            yield Record(data=dict(row), stream_name="transactions", associated_slice=self.slice)


class FakeTransactions:
    name = "transactions"

    def __init__(self, *partitions: FakePartition) -> None:
        self.partitions = partitions
        self.cursor = FakeCursor()

    def generate_partitions(self):
        yield from self.partitions


def _batches(
    parent: Any, batch_size: int = 3, nest_state_under: Optional[str] = None, config: Optional[Dict[str, Any]] = None,
    items_field: Optional[str] = None,
) -> OrderIdBatches:
    """OrderIdBatches over `parent`, for the stream `items_field` (None: no stream of the three)."""
    config = {} if config is None else config
    parent_config = ParentStreamConfig(
        stream=parent,
        parent_key="order_id",
        partition_field="order_id",
        config=config,
        parameters={},
        extra_fields=[["payout_date"]],
        incremental_dependency=True,
    )
    router = SubstreamPartitionRouter(parent_stream_configs=[parent_config], config=config, parameters={})
    parameters = {"items_field": items_field} if items_field else {}
    return OrderIdBatches(underlying_partition_router=router, config=config, parameters=parameters, batch_size=batch_size, nest_state_under=nest_state_under)


def test_each_order_once_in_batches_with_the_payout_date_of_the_payout_that_named_it_first():
    parent = FakeTransactions(
        FakePartition("A", "2024-02-01T06:00:00Z", ["o1", "o2", "o1", None, "o3", "o4"]),
        FakePartition("B", "2024-02-02T06:00:00Z", ["o2", "o5"]),
    )

    slices = list(_batches(parent).stream_slices())

    assert [s.partition["order_id"] for s in slices] == [["o1", "o2", "o3"], ["o4", "o5"]]
    assert [s.extra_fields["payout_date"] for s in slices] == [
        ["2024-02-01T06:00:00Z"] * 3,
        ["2024-02-01T06:00:00Z", "2024-02-02T06:00:00Z"],
    ]
    # The parent's cursor sees each payout's date once per payout (the rows carry it from their payout),
    # and every payout partition is closed, then the end of the parent's read is announced once.
    assert parent.cursor.observed == ["2024-02-01T06:00:00Z", "2024-02-02T06:00:00Z"]
    assert parent.cursor.closed == ["A", "B"] and parent.cursor.ensured == 1


def test_a_batch_carries_the_parent_state_from_when_it_was_made_so_a_payout_counts_as_read_only_after_its_last_order():
    parent = FakeTransactions(
        FakePartition("A", "2024-02-01T06:00:00Z", ["a1", "a2", "a3", "a4"]),
        FakePartition("B", "2024-02-02T06:00:00Z", ["b1", "b2"]),
    )
    router = _batches(parent, batch_size=3)

    states = []
    for batch in router.stream_slices():
        states.append((batch.partition["order_id"], router.get_stream_state()))

    assert states == [
        # made while A's rows were still being read: A is not read yet
        (["a1", "a2", "a3"], {"transactions": {"payouts_read": []}}),
        # a4 (A's last order) travels with B's orders: the batch that holds it carries A as read
        (["a4", "b1", "b2"], {"transactions": {"payouts_read": ["A"]}}),
    ]
    assert router.get_stream_state() == {"transactions": {"payouts_read": ["A", "B"]}}


def test_the_parent_state_can_be_presented_under_another_parent_name():
    parent = FakeTransactions(FakePartition("A", "2024-02-01T06:00:00Z", ["o1"]))
    router = _batches(parent, nest_state_under="orders")

    list(router.stream_slices())

    assert router.get_stream_state() == {"orders": {"use_global_cursor": True, "parent_state": {"transactions": {"payouts_read": ["A"]}}}}


def test_no_transactions_make_no_batch_and_still_close_the_parents_read():
    parent = FakeTransactions(FakePartition("A", "2024-02-01T06:00:00Z", []))

    assert list(_batches(parent).stream_slices()) == []
    assert parent.cursor.closed == ["A"] and parent.cursor.ensured == 1


# --------------------------------------------------------------------------- NestedParentStateMigration

TRANSACTIONS_STATE = {
    "use_global_cursor": True,
    "state": {"payout_date": "2024-02-01T06:00:00Z"},
    "parent_state": {"payouts": {"payout_date": "2024-02-01T06:00:00Z", "payouts_read": {"A": "2024-02-01T06:00:00Z"}}},
}
# What captures' state looks like (written by 1.1.0, which read captures from a copy of orders, and by this version).
NESTED = {
    "use_global_cursor": True,
    "state": {"payout_date": "2024-02-01T06:00:00Z"},
    "lookback_window": 2,
    "parent_state": {
        "orders": {
            "use_global_cursor": True,
            "state": {"payout_date": "2024-02-01T06:00:00Z"},
            "parent_state": {"transactions": TRANSACTIONS_STATE},
        }
    },
}


def test_the_nested_state_is_lifted_for_the_cdk_and_the_rest_is_kept():
    migration = NestedParentStateMigration(nested_under="orders")

    assert migration.should_migrate(NESTED)
    migrated = migration.migrate(NESTED)

    assert migrated == {
        "use_global_cursor": True,
        "state": {"payout_date": "2024-02-01T06:00:00Z"},
        "lookback_window": 2,
        "parent_state": {"transactions": TRANSACTIONS_STATE},
    }
    assert not migration.should_migrate(migrated)


def test_states_without_the_nested_parent_are_left_alone():
    migration = NestedParentStateMigration(nested_under="orders")

    for state in ({}, {"state": {"payout_date": "x"}}, {"parent_state": {"transactions": {}}}, {"parent_state": {"orders": {"state": {}}}}):
        assert not migration.should_migrate(state)
