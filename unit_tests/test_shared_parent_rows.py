"""SharedParentRows: a payout's transactions are read once for `orders`, `captures` and `refunds`, each of
which still observes and closes the payout in its own cursor; a read under way is waited for, a failed one
is done again by the next stream, and what is kept stays bounded."""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional

import pytest

from airbyte_cdk.sources.types import Record, StreamSlice
from source_klarna.components import SHARED_PARENT_ROWS, OrderIdBatches, SharedParentRows
from unit_tests.test_order_batches import FakeCursor
from unit_tests.test_order_batches import _batches as order_id_batches

STREAMS = ("orders", "captures", "refunds")
JOIN_S = 10.0


class CountedPartition:
    """A payout's transactions, counting its reads; `read_hook` runs before the rows are given."""

    def __init__(self, payment_reference: str, payout_date: str, order_ids: List[Optional[str]], reads: Dict[str, int]) -> None:
        self.payment_reference = payment_reference
        self._slice = StreamSlice(
            partition={"payment_reference": payment_reference, "parent_slice": {}},
            cursor_slice={"start_time": "2015-01-01T00:00:00Z"},
            extra_fields={"payout_date": payout_date},
        )
        self._order_ids = order_ids
        self._reads = reads
        self.read_hook = lambda: None

    def to_slice(self) -> StreamSlice:
        return self._slice

    def read(self):
        self._reads[self.payment_reference] = self._reads.get(self.payment_reference, 0) + 1
        self.read_hook()
        for order_id in self._order_ids:
            yield Record(data={"order_id": order_id}, stream_name="transactions", associated_slice=self._slice)


class Transactions:
    """One stream's parent: its own partitions (the same payouts) and its own cursor."""

    name = "transactions"

    def __init__(self, partitions: List[CountedPartition]) -> None:
        self.partitions = partitions
        self.cursor = FakeCursor()

    def generate_partitions(self):
        yield from self.partitions


PAYOUTS = {"A": ("2024-02-01T06:00:00Z", ["a1", "a2", "a1", None, "a3"]), "B": ("2024-02-02T06:00:00Z", ["a2", "b1"])}


def _parents(reads: Dict[str, int]) -> Dict[str, Transactions]:
    return {stream: Transactions([CountedPartition(ref, date, ids, reads) for ref, (date, ids) in PAYOUTS.items()]) for stream in STREAMS}


def _router(stream: Optional[str], parent: Transactions, config: Dict[str, Any]) -> OrderIdBatches:
    return order_id_batches(parent, batch_size=2, config=config, items_field=stream)


def _batches(router: OrderIdBatches) -> List[Any]:
    return [(s.partition["order_id"], s.extra_fields["payout_date"]) for s in router.stream_slices()]


EXPECTED_BATCHES = [
    (["a1", "a2"], ["2024-02-01T06:00:00Z"] * 2),
    (["a3", "b1"], ["2024-02-01T06:00:00Z", "2024-02-02T06:00:00Z"]),
]


def test_the_three_streams_read_each_payouts_transactions_once_and_each_closes_it_in_its_own_cursor():
    config: Dict[str, Any] = {}
    reads: Dict[str, int] = {}
    parents = _parents(reads)

    batches = {stream: _batches(_router(stream, parents[stream], config)) for stream in STREAMS}

    assert reads == {"A": 1, "B": 1}
    assert all(found == EXPECTED_BATCHES for found in batches.values()), batches
    for stream in STREAMS:
        cursor = parents[stream].cursor
        assert cursor.observed == ["2024-02-01T06:00:00Z", "2024-02-02T06:00:00Z"], stream
        assert cursor.closed == ["A", "B"] and cursor.ensured == 1, stream
    # Taken by all three: nothing is kept.
    assert not SHARED_PARENT_ROWS.of(config)._entries


def test_each_sync_reads_for_itself():
    reads: Dict[str, int] = {}
    for _ in range(2):
        config: Dict[str, Any] = {}  # a sync's components share its one config object
        parents = _parents(reads)
        _batches(_router("orders", parents["orders"], config))
        _batches(_router("captures", parents["captures"], config))

    assert reads == {"A": 2, "B": 2}


def test_a_stream_that_comes_while_another_reads_the_payout_waits_for_that_read():
    class Share(SharedParentRows):
        waiting = threading.Event()

        def _take(self, key, reader):
            got = super()._take(key, reader)
            if isinstance(got, threading.Event):
                self.waiting.set()
            return got

    config: Dict[str, Any] = {}
    SHARED_PARENT_ROWS.of(config, Share)
    reads: Dict[str, int] = {}
    parents = _parents(reads)
    in_read, results = threading.Event(), {}

    def orders_read_waits_for_captures_to_wait():
        in_read.set()
        assert Share.waiting.wait(JOIN_S)

    parents["orders"].partitions[0].read_hook = orders_read_waits_for_captures_to_wait
    threads = {stream: threading.Thread(target=lambda s=stream: results.__setitem__(s, _batches(_router(s, parents[s], config)))) for stream in ("orders", "captures")}
    threads["orders"].start()
    assert in_read.wait(JOIN_S)
    threads["captures"].start()
    for thread in threads.values():
        thread.join(JOIN_S)
        assert not thread.is_alive()

    assert Share.waiting.is_set()
    assert results == {"orders": EXPECTED_BATCHES, "captures": EXPECTED_BATCHES}
    assert reads == {"A": 1, "B": 1}


def test_a_read_that_fails_fails_its_stream_and_the_next_stream_reads_the_payout_itself():
    config: Dict[str, Any] = {}
    reads: Dict[str, int] = {}
    parents = _parents(reads)

    def fail():
        raise ConnectionError("transactions of A: connection reset")

    parents["orders"].partitions[0].read_hook = fail
    with pytest.raises(ConnectionError, match="transactions of A"):
        _batches(_router("orders", parents["orders"], config))

    assert _batches(_router("captures", parents["captures"], config)) == EXPECTED_BATCHES
    assert reads == {"A": 2, "B": 1}
    assert parents["orders"].cursor.closed == [] and parents["captures"].cursor.closed == ["A", "B"]


def test_beyond_its_capacity_the_oldest_payouts_rows_go_and_a_late_stream_reads_them_again():
    config: Dict[str, Any] = {}
    share = SHARED_PARENT_ROWS.of(config, lambda: SharedParentRows(capacity_rows=2))
    reads: Dict[str, int] = {}
    parents = _parents(reads)

    _batches(_router("orders", parents["orders"], config))
    assert share._rows <= 2 and len(share._entries) == 1  # A's three rows went when B's two came
    assert _batches(_router("captures", parents["captures"], config)) == EXPECTED_BATCHES

    # A was read again; keeping it again pushed B out before captures got there, so B was too.
    assert reads == {"A": 2, "B": 2}
    assert share._rows <= 2


def test_a_connector_builder_test_read_and_a_stream_that_is_none_of_the_three_read_for_themselves():
    config: Dict[str, Any] = {}
    reads: Dict[str, int] = {}
    parents = _parents(reads)
    for partition in parents["captures"].partitions:
        partition._max_records_limit = 5  # what the CDK's DeclarativePartition holds in a test read

    _batches(_router("orders", parents["orders"], config))
    _batches(_router("captures", parents["captures"], config))
    other = _router(None, parents["refunds"], config)  # a stream that is none of the three
    assert _batches(other) == EXPECTED_BATCHES

    assert reads == {"A": 3, "B": 3}


def test_the_manifests_transactions_cursor_adds_no_request_option_so_a_payouts_rows_do_not_depend_on_a_streams_state():
    # SharedParentRows keys a payout's rows by its partition, not its cursor slice (which differs with
    # each stream's state): only right while the transactions' cursor puts nothing into the request.
    from source_klarna import SourceKlarna
    from unit_tests.mock_server.config import ConfigBuilder

    config = ConfigBuilder().build()
    orders = {stream.name: stream for stream in SourceKlarna(config=config).streams(config)}["orders"]
    batches = orders._stream_partition_generator._stream_slicer._partition_router  # under the orders' cursor
    assert isinstance(batches, OrderIdBatches)
    retriever = batches._parent._stream_partition_generator._partition_factory._retriever
    partition = {"payment_reference": "A", "parent_slice": {}}
    early = StreamSlice(partition=partition, cursor_slice={"start_time": "2015-01-01T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"})
    late = StreamSlice(partition=partition, cursor_slice={"start_time": "2025-12-01T00:00:00Z", "end_time": "2026-02-01T00:00:00Z"})

    options = [
        (
            dict(retriever._request_params(stream_slice=s)), retriever._request_headers(stream_slice=s),
            retriever._request_body_json(stream_slice=s), retriever._request_body_data(stream_slice=s),
            retriever.requester.get_path(stream_slice=s, stream_state=None, next_page_token=None),
        )
        for s in (early, late)
    ]
    assert options[0] == options[1]
    assert options[0][0] == {"payment_reference": "A", "size": 500}

