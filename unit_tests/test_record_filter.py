"""EachKeyOncePerSync: a payout repeated by a list that moved between two pages is emitted once."""

from __future__ import annotations

import threading

from components import EachKeyOncePerSync


def _filter() -> EachKeyOncePerSync:
    return EachKeyOncePerSync(config={}, parameters={}, key="payment_reference")


def test_repeats_across_pages_are_dropped_and_first_sightings_kept_in_order():
    once = _filter()
    page_1 = [{"payment_reference": r} for r in ("E", "D", "C")]
    # Two payouts added at the top meanwhile: page 2 starts with the last two of page 1.
    page_2 = [{"payment_reference": r} for r in ("D", "C", "B", "A")]

    first = list(once.filter_records(page_1, stream_state={}))
    second = list(once.filter_records(page_2, stream_state={}))

    assert [r["payment_reference"] for r in first] == ["E", "D", "C"]
    assert [r["payment_reference"] for r in second] == ["B", "A"]


def test_each_stream_instance_has_its_own_memory():
    # The payouts stream and the payouts read as the parent of transactions are separate instances.
    a, b = _filter(), _filter()
    list(a.filter_records([{"payment_reference": "X"}], stream_state={}))

    assert list(b.filter_records([{"payment_reference": "X"}], stream_state={})) == [{"payment_reference": "X"}]


def test_a_record_without_the_key_is_not_dropped():
    once = _filter()
    rows = [{"payout_date": "2024-01-01T00:00:00Z"}, {"payout_date": "2024-01-01T00:00:00Z"}]

    assert list(once.filter_records(rows, stream_state={})) == rows


def test_concurrent_windows_never_both_emit_one_key():
    once = _filter()
    emitted = []
    barrier = threading.Barrier(8)

    def window():
        barrier.wait(timeout=10)
        emitted.extend(r["payment_reference"] for r in once.filter_records([{"payment_reference": str(i)} for i in range(2000)], stream_state={}))

    threads = [threading.Thread(target=window) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(emitted, key=int) == [str(i) for i in range(2000)]
