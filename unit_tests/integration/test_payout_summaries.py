"""payout_summaries: one request per complete calendar month, full date-times, the last month re-read."""

from __future__ import annotations

import datetime as dt

from airbyte_cdk.models import SyncMode

from unit_tests.integration import response_builder as rb
from unit_tests.integration.config import ConfigBuilder
from unit_tests.integration.klarna_mock import KlarnaMock
from unit_tests.integration.reader import final_state, read_streams, records_of, state_for

STREAMS = {"payout_summaries": SyncMode.incremental}


def _month_start(months_ago: int) -> dt.datetime:
    """00:00:00 UTC on the first day of the month `months_ago` before the running one."""
    now = dt.datetime.now(dt.timezone.utc)
    index = now.year * 12 + now.month - 1 - months_ago
    return dt.datetime(index // 12, index % 12 + 1, 1, tzinfo=dt.timezone.utc)


def _iso(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


START = _iso(_month_start(3))


def _echo_summary(query):
    return [rb.summary("EUR", query["start_date"], query["end_date"]), rb.summary("SEK", query["start_date"], query["end_date"])]


def test_one_summary_per_currency_and_complete_calendar_month(requests_mock):
    klarna = KlarnaMock(requests_mock)
    klarna.serve_summaries(_echo_summary)

    output = read_streams(ConfigBuilder().with_start_date(START).build(), STREAMS)

    windows = sorted((r["summary_payout_date_start"], r["summary_payout_date_end"]) for r in records_of(output, "payout_summaries") if r["summary_settlement_currency"] == "EUR")
    # The running month is not summarised until it ends, so every row is final.
    assert windows == [
        (_iso(_month_start(ago)), _iso(_month_start(ago - 1) - dt.timedelta(seconds=1))) for ago in (3, 2, 1)
    ]
    keys = [(r["summary_settlement_currency"], r["summary_payout_date_start"]) for r in records_of(output, "payout_summaries")]
    assert len(keys) == len(set(keys)) == 6


def test_the_next_sync_rereads_from_the_start_of_the_last_month(requests_mock):
    klarna = KlarnaMock(requests_mock)
    klarna.serve_summaries(_echo_summary)
    config = ConfigBuilder().with_start_date(START).build()
    first = read_streams(config, STREAMS)
    state = final_state(first, "payout_summaries")
    assert state == {"summary_payout_date_start": _iso(_month_start(1))}

    requests_mock.reset_mock()
    second = read_streams(config, STREAMS, state=state_for({"payout_summaries": state}))

    starts = sorted({r["summary_payout_date_start"] for r in records_of(second, "payout_summaries")})
    # One month of lookback: the last summarised month and the one before, for payouts booked late.
    assert starts == [_iso(_month_start(2)), _iso(_month_start(1))]
