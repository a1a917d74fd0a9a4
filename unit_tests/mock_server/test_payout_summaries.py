"""payout_summaries: one request per calendar month (the running month to date), full date-times,
the last month re-read."""

from __future__ import annotations

import datetime as dt

import pendulum

from airbyte_cdk.models import FailureType, SyncMode

from unit_tests.mock_server import response_builder as rb
from unit_tests.mock_server.config import ConfigBuilder
from unit_tests.mock_server.klarna_mock import KlarnaMock
from unit_tests.mock_server.reader import final_state, read_streams, records_of, state_for

STREAMS = {"payout_summaries": SyncMode.incremental}


def _month_start(months_ago: int) -> dt.datetime:
    """00:00:00 UTC on the first day of the month `months_ago` before the running one."""
    return pendulum.now("UTC").start_of("month").subtract(months=months_ago)


def _iso(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


# Mid-month: the summaries still start on the 1st of that month.
START = _iso(_month_start(3) + dt.timedelta(days=14, hours=5))


def _echo_summary(query):
    return [rb.summary("EUR", query["start_date"], query["end_date"]), rb.summary("SEK", query["start_date"], query["end_date"])]


def test_one_summary_per_currency_and_calendar_month_including_the_running_one(requests_mock):
    klarna = KlarnaMock(requests_mock)
    klarna.serve_probe()
    klarna.serve_summaries(_echo_summary)

    output = read_streams(ConfigBuilder().with_start_date(START).build(), STREAMS)

    rows = records_of(output, "payout_summaries")
    eur = sorted((r["summary_month"], r["summary_payout_date_start"], r["summary_payout_date_end"]) for r in rows if r["summary_settlement_currency"] == "EUR")
    assert [month for month, _, _ in eur] == [_iso(_month_start(ago)) for ago in (3, 2, 1, 0)]
    assert all(start == month for month, start, _ in eur)
    # Full months end one second before the next begins.
    assert [end for _, _, end in eur[:3]] == [_iso(_month_start(ago - 1) - dt.timedelta(seconds=1)) for ago in (3, 2, 1)]
    # The running month is summarised to date: its window ends when the sync started.
    assert eur[3][2] <= _iso(dt.datetime.now(dt.timezone.utc))
    keys = [(r["summary_settlement_currency"], r["summary_month"]) for r in rows]
    assert len(keys) == len(set(keys)) == 8


def test_the_month_key_does_not_depend_on_klarnas_echo_of_the_window(requests_mock):
    klarna = KlarnaMock(requests_mock)
    klarna.serve_probe()
    # A Klarna that answers with the first payout's date instead of the start asked for.
    klarna.serve_summaries(lambda query: [rb.summary("EUR", query["start_date"][:8] + "03T06:00:00Z", query["end_date"])])

    rows = records_of(read_streams(ConfigBuilder().with_start_date(START).build(), STREAMS), "payout_summaries")

    assert sorted(r["summary_month"] for r in rows) == [_iso(_month_start(ago)) for ago in (3, 2, 1, 0)]


def test_the_next_sync_rereads_the_last_month_and_the_one_before(requests_mock):
    klarna = KlarnaMock(requests_mock)
    klarna.serve_probe()
    klarna.serve_summaries(_echo_summary)
    config = ConfigBuilder().with_start_date(START).build()
    first = read_streams(config, STREAMS)
    state = final_state(first, "payout_summaries")
    assert state == {"summary_month": _iso(_month_start(0))}

    requests_mock.reset_mock()
    second = read_streams(config, STREAMS, state=state_for({"payout_summaries": state}))

    months = sorted({r["summary_month"] for r in records_of(second, "payout_summaries")})
    assert months == [_iso(_month_start(1)), _iso(_month_start(0))]


def test_a_404_on_the_summary_is_a_config_error_naming_the_url_and_correlation_id(requests_mock):
    klarna = KlarnaMock(requests_mock)
    klarna.serve_probe()
    requests_mock.get(klarna.requests.summary_url(), status_code=404, json=rb.error("NOT_FOUND", correlation_id="corr-404"))

    output = read_streams(ConfigBuilder().with_start_date(_iso(_month_start(3))).build(), STREAMS, expecting_exception=True)

    errors = [e.trace.error for e in output.errors if e.trace.error.stream_descriptor]
    assert errors and {e.failure_type for e in errors} == {FailureType.config_error}
    (message,) = {e.message for e in errors}
    assert "https://api.klarna.com/settlements/v1/payouts/summary answered HTTP 404 (correlation_id corr-404)" in message
    assert "Check platform, region and base_url_override" in message
    assert records_of(output, "payout_summaries") == []
