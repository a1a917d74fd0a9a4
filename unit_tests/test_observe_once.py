"""ObserveEachCursorValueOnce: the CDK's cursor sees each cursor value once per slice and thread, and
ends in the same state as if it had seen every record."""

from __future__ import annotations

import threading
from typing import Any, List

from airbyte_cdk.sources.types import Record, StreamSlice
from source_klarna.cdk_patches import ObserveEachCursorValueOnce, observe_each_cursor_value_once


class RecordingCursor:
    """Keeps the greatest value per slice, as the CDK's cursors do, and every call it got."""

    def __init__(self) -> None:
        self.calls: List[Any] = []
        self.greatest: dict = {}
        self.cursor_field = type("CursorField", (), {"cursor_field_key": "payout_date"})()

    def observe(self, record: Record) -> None:
        self.calls.append(record.data.get("payout_date"))
        key = id(record.associated_slice)
        value = record.data.get("payout_date")
        if value is not None:
            self.greatest[key] = max(self.greatest.get(key, value), value)


def _records(stream_slice, dates):
    return [Record(data={"payout_date": d, "amount": i}, associated_slice=stream_slice, stream_name="transactions") for i, d in enumerate(dates)]


def test_repeats_of_a_value_in_one_slice_reach_the_cursor_once_and_the_state_is_the_same():
    payout_a = StreamSlice(partition={"payment_reference": "A"}, cursor_slice={})
    payout_b = StreamSlice(partition={"payment_reference": "B"}, cursor_slice={})
    records = _records(payout_a, ["2024-02-01T06:00:00Z"] * 500) + _records(payout_b, ["2024-02-01T06:00:00Z"] * 3 + ["2024-02-02T06:00:00Z"])
    every, once = RecordingCursor(), RecordingCursor()
    wrapped = ObserveEachCursorValueOnce(once.observe, "payout_date")

    for record in records:
        every.observe(record)
        wrapped(record)

    assert once.calls == ["2024-02-01T06:00:00Z", "2024-02-01T06:00:00Z", "2024-02-02T06:00:00Z"]
    assert once.greatest == every.greatest


def test_a_record_without_a_cursor_value_always_reaches_the_cursor():
    stream_slice = StreamSlice(partition={"payment_reference": "A"}, cursor_slice={})
    cursor = RecordingCursor()
    wrapped = ObserveEachCursorValueOnce(cursor.observe, "payout_date")

    for record in _records(stream_slice, [None, None]):
        wrapped(record)

    assert cursor.calls == [None, None]


def test_each_thread_remembers_its_own_last_value():
    stream_slice = StreamSlice(partition={"payment_reference": "A"}, cursor_slice={})
    cursor = RecordingCursor()
    wrapped = ObserveEachCursorValueOnce(cursor.observe, "payout_date")
    lock = threading.Lock()
    calls = []

    def recording(record):
        with lock:
            calls.append(threading.get_ident())

    wrapped._observe = recording
    together = threading.Barrier(4)

    def read_partition():
        records = _records(stream_slice, ["2024-02-01T06:00:00Z"] * 50)
        together.wait(timeout=10)  # all four alive at once: no thread inherits another's memory
        for record in records:
            wrapped(record)
        together.wait(timeout=10)

    threads = [threading.Thread(target=read_partition) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len(calls) == 4 and len(set(calls)) == 4


def test_installed_once_on_every_stream_cursor_with_a_cursor_field():
    cursor = RecordingCursor()
    no_field = type("FinalStateCursor", (), {"observe": lambda self, record: None})()
    streams = [type("Stream", (), {"cursor": cursor})(), type("Stream", (), {"cursor": no_field})()]

    observe_each_cursor_value_once(streams)
    observe_each_cursor_value_once(streams)

    assert isinstance(cursor.observe, ObserveEachCursorValueOnce)
    assert not isinstance(cursor.observe._observe, ObserveEachCursorValueOnce)
    assert not isinstance(no_field.observe, ObserveEachCursorValueOnce)


def test_the_shipped_source_wraps_the_cdk_cursors_of_its_incremental_streams():
    # Guards the hook against a CDK upgrade: the attribute names it relies on must still be there.
    from source_klarna.source import SourceKlarna

    config = {"username": "u", "password": "p", "start_date": "2024-01-01T00:00:00Z"}
    streams = {s.name: s for s in SourceKlarna(config=config).streams(config)}

    for name in ("payouts", "transactions", "payout_summaries", "orders", "captures", "refunds"):
        assert isinstance(streams[name].cursor.observe, ObserveEachCursorValueOnce), name
