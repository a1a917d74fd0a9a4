"""payouts: date windows Klarna filters on, offset pages to the last one, payout_date state."""

from __future__ import annotations

import datetime as dt

import pytest
from airbyte_cdk.models import SyncMode

from unit_tests.mock_server import response_builder as rb
from unit_tests.mock_server.config import ConfigBuilder
from unit_tests.mock_server.klarna_mock import KlarnaMock
from unit_tests.mock_server.reader import final_state, read_streams, records_of, state_for
from unit_tests.mock_server.request_builder import offset_of, query_of, size_of

FULL = {"payouts": SyncMode.full_refresh}
INCREMENTAL = {"payouts": SyncMode.incremental}
WINDOW_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _parse(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, WINDOW_FORMAT).replace(tzinfo=dt.timezone.utc)


def test_full_refresh_reads_every_payout_once_in_contiguous_full_datetime_windows(requests_mock):
    payouts = [rb.payout(f"P{i:03d}", f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T06:00:{i % 60:02d}Z") for i in range(60)]
    klarna = KlarnaMock(requests_mock)
    klarna.serve_payouts(payouts)

    output = read_streams(ConfigBuilder().build(), FULL)

    assert sorted(r["payment_reference"] for r in records_of(output, "payouts")) == sorted(p["payment_reference"] for p in payouts)
    # Windows are read concurrently, so requests arrive in any order.
    windows = sorted((query_of(url) for url in klarna.urls("/payouts?")), key=lambda q: q["start_date"])
    assert windows[0]["start_date"] == "2024-01-01T00:00:00Z"
    for window in windows:
        # Full date-times: a bare date would mean 00:00:00 and drop the rest of the end day.
        assert _parse(window["start_date"]) < _parse(window["end_date"])
        assert window["size"] == "500"
    for earlier, later in zip(windows, windows[1:]):
        assert _parse(later["start_date"]) - _parse(earlier["end_date"]) == dt.timedelta(seconds=1)
    assert _parse(windows[-1]["end_date"]) >= dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)


def test_no_start_date_reads_the_whole_history_from_2015(requests_mock):
    klarna = KlarnaMock(requests_mock)
    klarna.serve_payouts([rb.payout("OLD", "2015-03-01T06:00:00Z")])

    output = read_streams(ConfigBuilder().without("start_date").build(), FULL)

    assert [r["payment_reference"] for r in records_of(output, "payouts")] == ["OLD"]
    assert min(query_of(u)["start_date"] for u in klarna.urls("/payouts?")) == "2015-01-01T00:00:00Z"


def test_a_bare_start_date_means_midnight_utc(requests_mock):
    klarna = KlarnaMock(requests_mock)
    klarna.serve_payouts([])

    read_streams(ConfigBuilder().with_start_date("2024-05-06").build(), FULL)

    assert min(query_of(u)["start_date"] for u in klarna.urls("/payouts?")) == "2024-05-06T00:00:00Z"


@pytest.mark.parametrize("count, expected_offsets", [(1201, [0, 500, 1000]), (1000, [0, 500]), (500, [0]), (0, [0])])
def test_pages_until_offset_plus_count_reaches_total(requests_mock, count, expected_offsets):
    payouts = [rb.payout(f"P{i:05d}", f"2024-01-02T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z") for i in range(count)]
    klarna = KlarnaMock(requests_mock)
    klarna.serve_payouts(payouts)

    output = read_streams(ConfigBuilder().with_start_date("2024-01-01T00:00:00Z").build(), FULL)

    assert len({r["payment_reference"] for r in records_of(output, "payouts")}) == count
    first_window = min(query_of(u)["start_date"] for u in klarna.urls("/payouts?"))
    offsets = [offset_of(u) for u in klarna.urls("/payouts?") if query_of(u)["start_date"] == first_window]
    assert offsets == expected_offsets
    assert {size_of(u) for u in klarna.urls("/payouts?")} == {500}


def test_without_total_a_short_page_is_the_last(requests_mock):
    payouts = [rb.payout(f"P{i:04d}", f"2024-01-02T00:{i // 60:02d}:{i % 60:02d}Z") for i in range(700)]

    def answer(request, context):
        query = query_of(request.url)
        rows = [p for p in payouts if query["start_date"] <= p["payout_date"] <= query["end_date"]]
        return rb.page("payouts", rows, int(query.get("offset", 0)), int(query["size"]), with_total=False)

    klarna = KlarnaMock(requests_mock)
    requests_mock.get(klarna.requests.payouts_url(), json=answer)
    klarna.serve_probe()
    output = read_streams(ConfigBuilder().build(), FULL)

    assert len(records_of(output, "payouts")) == 700


def test_incremental_state_is_the_newest_payout_date_and_next_sync_starts_a_lookback_before_it(requests_mock):
    klarna = KlarnaMock(requests_mock)
    klarna.serve_payouts([rb.payout("A", "2024-03-01T06:00:00Z"), rb.payout("B", "2024-03-05T06:00:00Z")])

    first = read_streams(ConfigBuilder().build(), INCREMENTAL)
    assert final_state(first, "payouts") == {"payout_date": "2024-03-05T06:00:00Z"}

    requests_mock.reset_mock()
    read_streams(ConfigBuilder().build(), INCREMENTAL, state=state_for({"payouts": {"payout_date": "2024-03-05T06:00:00Z"}}))
    # Default lookback: 3 days before the cursor.
    assert min(query_of(u)["start_date"] for u in klarna.urls("/payouts?")) == "2024-03-02T06:00:00Z"

    requests_mock.reset_mock()
    read_streams(
        ConfigBuilder().with_fields(lookback_window_days=0).build(),
        INCREMENTAL,
        state=state_for({"payouts": {"payout_date": "2024-03-05T06:00:00Z"}}),
    )
    assert min(query_of(u)["start_date"] for u in klarna.urls("/payouts?")) == "2024-03-05T06:00:00Z"


def test_a_payout_booked_late_arrives_on_the_next_incremental_sync(requests_mock):
    payouts = [rb.payout("A", "2024-03-01T06:00:00Z"), rb.payout("B", "2024-03-05T06:00:00Z")]
    klarna = KlarnaMock(requests_mock)
    klarna.serve_payouts(payouts)
    first = read_streams(ConfigBuilder().build(), INCREMENTAL)

    # Klarna books a payout dated two days before the saved cursor.
    payouts.append(rb.payout("LATE", "2024-03-03T06:00:00Z"))
    second = read_streams(ConfigBuilder().build(), INCREMENTAL, state=state_for({"payouts": final_state(first, "payouts")}))

    assert "LATE" in {r["payment_reference"] for r in records_of(second, "payouts")}
    assert final_state(second, "payouts") == {"payout_date": "2024-03-05T06:00:00Z"}
