"""TransactionKeyAndPayout: the key of Klarna's id-less transactions."""

from __future__ import annotations

import copy
import threading

from airbyte_cdk.sources.types import StreamSlice
from hypothesis import given, settings
from hypothesis import strategies as st

from components import (
    TRANSACTION_KEY_FIELDS,
    OccurrenceCounter,
    TransactionKeyAndPayout,
    transaction_fingerprint,
)
from unit_tests.mock_server import response_builder as rb
from unit_tests.keying import keyed, payout_slice




def test_adds_payout_date_and_payment_reference_from_the_partition():
    row = rb.transaction("P1")
    del row["payment_reference"]

    (record,) = keyed([row])

    assert record["payout_date"] == "2024-02-01T06:00:00Z"
    assert record["payment_reference"] == "P1"
    assert record["transaction_key"].startswith("P1:")


def test_identical_rows_are_numbered_by_occurrence():
    fee = rb.transaction("P1", type="FEE", amount=99)
    records = keyed([fee, copy.deepcopy(fee), rb.transaction("P1"), copy.deepcopy(fee)])

    suffixes = [r["transaction_key"].rsplit(":", 1)[1] for r in records]
    assert suffixes == ["0", "1", "0", "2"]
    assert len({r["transaction_key"] for r in records}) == 4


def test_a_second_read_of_the_same_payout_repeats_the_keys():
    fee = rb.transaction("P1", type="FEE", amount=99)
    rows = [fee, copy.deepcopy(fee)]
    transformation = TransactionKeyAndPayout(parameters={})

    first = [r["transaction_key"] for r in keyed(rows, payout_slice(), transformation)]
    # A new partition object for the same payout (a re-read in the same sync) starts counting anew.
    second = [r["transaction_key"] for r in keyed(rows, payout_slice(), transformation)]

    assert first == second


def test_a_field_klarna_adds_later_does_not_change_the_key():
    row = rb.transaction("P1")
    with_new_field = dict(row, field_klarna_added_in_2027="x")

    assert transaction_fingerprint(row) == transaction_fingerprint(with_new_field)


def test_every_openapi_transaction_field_enters_the_key():
    from scripts.openapi_schemas import SETTLEMENTS_OPENAPI, load_components

    assert set(TRANSACTION_KEY_FIELDS) == set(load_components(SETTLEMENTS_OPENAPI)["Transaction"]["properties"])
    for name in TRANSACTION_KEY_FIELDS:
        row = rb.transaction("P1")
        changed = dict(row, **{name: "changed-value"})
        assert transaction_fingerprint(row) != transaction_fingerprint(changed), name


def test_absent_and_null_fields_hash_alike():
    row = rb.transaction("P1")
    without = {k: v for k, v in row.items() if k != "klarna_comment"}

    assert transaction_fingerprint(dict(row, klarna_comment=None)) == transaction_fingerprint(without)


def test_counter_keeps_concurrent_partitions_apart():
    counter = OccurrenceCounter(capacity=64)
    slices = [payout_slice(f"P{i}") for i in range(8)]
    results = {i: [] for i in range(8)}

    def work(i):
        for _ in range(200):
            results[i].append(counter.next_occurrence(slices[i], "same"))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)

    assert all(results[i] == list(range(200)) for i in range(8))


def test_counter_keeps_partitions_apart_when_one_thread_alternates_between_them():
    counter = OccurrenceCounter(capacity=64)
    a, b = payout_slice("A"), payout_slice("B")

    seen = [counter.next_occurrence(p, "same") for p in (a, a, b, a, b, b, a)]

    assert seen == [0, 1, 0, 2, 1, 2, 3]


def test_counter_memory_is_bounded():
    counter = OccurrenceCounter(capacity=16)
    for i in range(1000):
        counter.next_occurrence(payout_slice(f"P{i}"), "x")

    assert len(counter._counts) == 16


row_strategy = st.fixed_dictionaries(
    {
        "amount": st.integers(min_value=0, max_value=10**9),
        "type": st.sampled_from(["SALE", "FEE", "RETURN", "REVERSAL"]),
        "order_id": st.sampled_from(["o1", "o2", "o3"]),
        "capture_id": st.sampled_from(["", "c1", "c2"]),
    }
)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(row_strategy, max_size=40), seed=st.randoms())
def test_keys_are_unique_within_a_payout_and_independent_of_row_order(rows, seed):
    keys = [r["transaction_key"] for r in keyed(rows)]
    shuffled = list(rows)
    seed.shuffle(shuffled)
    shuffled_keys = [r["transaction_key"] for r in keyed(shuffled)]

    assert len(set(keys)) == len(rows)
    assert set(keys) == set(shuffled_keys)


def test_a_transaction_not_yet_in_a_payout_is_keyed_pending():
    # pending_transactions: the unfiltered list, no payout partition and no payment_reference.
    row = rb.transaction("ignored", amount=7)
    row.pop("payment_reference")
    unpartitioned = StreamSlice(partition={}, cursor_slice={})

    first, second = keyed([row, row], stream_slice=unpartitioned)

    assert first["transaction_key"].startswith("pending:") and first["transaction_key"].endswith(":0")
    assert second["transaction_key"] == first["transaction_key"][:-1] + "1"
    assert "payment_reference" not in first and "payout_date" not in first
