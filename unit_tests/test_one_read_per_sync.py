"""OneReadPerSync: the order-id batches read once for every order stream that starts from the same state.

The underlying router is a stand-in that counts its reads and serves fixed slices, each with the state
after it; unit_tests/mock_server/test_order_streams_any_order.py runs the real routers on both runtimes."""

import threading
from typing import Any, Dict, List, Mapping, Optional

import pytest

from airbyte_cdk.sources.types import StreamSlice
from components import OneReadPerSync


class Batches:
    """Stands in for the GroupingPartitionRouter: `count` slices, the state after each, and how often it was read."""

    def __init__(self, start: Mapping[str, Any], count: int = 4, fail_after: Optional[int] = None) -> None:
        self.state: Mapping[str, Any] = dict(start)
        self.count, self.fail_after, self.reads = count, fail_after, 0
        self.release = threading.Event()
        self.release.set()

    def stream_slices(self):
        self.reads += 1
        for number in range(self.count):
            if number == self.fail_after:
                raise RuntimeError("Klarna did not answer")
            self.state = {"transactions": {"read": number}}
            yield StreamSlice(partition={"order_id": [f"o{number}"]}, cursor_slice={})
            assert self.release.wait(10)
        self.state = {"transactions": {"read": "all"}}

    def get_stream_state(self) -> Mapping[str, Any]:
        return self.state


def router(batches: Batches, config: Dict[str, Any]) -> OneReadPerSync:
    return OneReadPerSync(underlying_partition_router=batches, config=config, parameters={})


def slices_and_states(reading: OneReadPerSync) -> List[Any]:
    seen = []
    for stream_slice in reading.stream_slices():
        seen.append((stream_slice.partition["order_id"][0], reading.get_stream_state()))
    return seen + [("end", reading.get_stream_state())]


def test_streams_that_start_from_the_same_state_share_one_read_slice_for_slice_and_state_for_state():
    config: Dict[str, Any] = {}
    first, second, third = (Batches({"transactions": {"read": None}}) for _ in range(3))

    results = [slices_and_states(router(batches, config)) for batches in (first, second, third)]

    assert [first.reads, second.reads, third.reads] == [1, 0, 0]
    assert results[0] == results[1] == results[2]
    assert results[0] == [("o0", {"transactions": {"read": 0}}), ("o1", {"transactions": {"read": 1}}),
                          ("o2", {"transactions": {"read": 2}}), ("o3", {"transactions": {"read": 3}}),
                          ("end", {"transactions": {"read": "all"}})]


def test_a_follower_waits_for_the_slices_the_read_has_not_produced_yet():
    config: Dict[str, Any] = {}
    reader_batches, follower_batches = Batches({}), Batches({})
    reader_batches.release.clear()
    reading = router(reader_batches, config).stream_slices()
    assert next(reading).partition["order_id"] == ["o0"]  # the read is under way, held after its first slice
    followed: List[Any] = []
    follower = threading.Thread(target=lambda: followed.extend(slices_and_states(router(follower_batches, config))))
    follower.start()

    follower.join(0.2)
    assert follower.is_alive()  # it has the first slice and waits for the second
    reader_batches.release.set()
    assert [s.partition["order_id"][0] for s in reading] == ["o1", "o2", "o3"]
    follower.join(10)

    assert not follower.is_alive()
    assert [name for name, _ in followed] == ["o0", "o1", "o2", "o3", "end"]
    assert follower_batches.reads == 0


def test_a_stream_whose_state_differs_reads_on_its_own():
    config: Dict[str, Any] = {}
    with_state, without = Batches({"transactions": {"state": {"payout_date": "2024-03-01T00:00:00Z"}}}), Batches({})

    slices_and_states(router(with_state, config))
    slices_and_states(router(without, config))

    assert (with_state.reads, without.reads) == (1, 1)


def test_another_sync_reads_again():
    first, second = Batches({}), Batches({})

    slices_and_states(router(first, {"sync": 1}))
    slices_and_states(router(second, {"sync": 2}))

    assert (first.reads, second.reads) == (1, 1)


def test_when_the_read_fails_every_follower_fails_too_after_the_slices_before_the_failure():
    config: Dict[str, Any] = {}
    failing, follower_batches = Batches({}, fail_after=2), Batches({})

    with pytest.raises(RuntimeError, match="did not answer"):
        slices_and_states(router(failing, config))
    follower = router(follower_batches, config)
    got = []
    with pytest.raises(RuntimeError, match="did not answer"):
        for stream_slice in follower.stream_slices():
            got.append(stream_slice.partition["order_id"][0])

    assert got == ["o0", "o1"]  # never a silent end: the follower does not finish as if the read were whole
    assert follower_batches.reads == 0


def test_a_read_abandoned_midway_fails_its_followers_instead_of_ending_them_short():
    config: Dict[str, Any] = {}
    reading = router(Batches({}), config).stream_slices()
    next(reading)
    reading.close()  # the reader's generator is dropped after one slice

    with pytest.raises(Exception, match="stopped before the orders were all read"):
        list(router(Batches({}), config).stream_slices())
