"""Every way Klarna can refuse or fail, and what the user is told.

The authenticator sends one request before any stream reads (the credentials probe, GET
/settlements/v1/payouts?size=1): an answer every request would get (401/403, an HTML page) fails the
sync there, once; anything else is left to the streams. Tests of what the streams do with an answer
serve the probe apart (KlarnaMock.serve_probe) and count the streams' requests without it."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import pytest
from airbyte_cdk.models import FailureType, SyncMode
from unit_tests.mock_server import response_builder as rb
from unit_tests.mock_server.config import PASSWORD, ConfigBuilder
from unit_tests.mock_server.klarna_mock import KlarnaMock, stream_requests
from unit_tests.mock_server.request_builder import KlarnaRequestBuilder
from unit_tests.mock_server.reader import check_connection, everything_printed, read_streams, records_of

PAYOUTS = {"payouts": SyncMode.full_refresh}
# A start date inside one 90-day window, so one window's requests are counted.
RECENT = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _first_error(output):
    assert output.errors, "expected an error trace"
    return output.errors[0].trace.error


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_credentials_are_a_config_error_naming_region_and_environment(requests_mock, status):
    requests_mock.get(KlarnaMock(requests_mock).requests.payouts_url(), status_code=status, json=rb.error("UNAUTHORIZED", ["Bad credentials"]))

    output = read_streams(ConfigBuilder().build(), PAYOUTS, expecting_exception=True)

    error = _first_error(output)
    assert error.failure_type == FailureType.config_error
    assert "rejected the API credentials for the eu production environment" in error.message
    assert "playground" in error.message
    assert records_of(output, "payouts") == []
    # Once, from the probe: not once per payout window.
    assert len(output.errors) == 1 and len(requests_mock.request_history) == 1


def test_rejected_credentials_met_by_a_stream_are_a_config_error_too(requests_mock):
    klarna = KlarnaMock(requests_mock)
    requests_mock.get(klarna.requests.payouts_url(), status_code=401, json=rb.error("UNAUTHORIZED"))
    klarna.serve_probe()  # the probe passes: the key is revoked between it and the first page

    error = _first_error(read_streams(ConfigBuilder().with_start_date(RECENT).build(), PAYOUTS, expecting_exception=True))

    assert error.failure_type == FailureType.config_error
    assert "rejected the API credentials for the eu production environment" in error.message


def test_check_reports_rejected_playground_credentials_as_a_failed_status_not_a_traceback(requests_mock, tmp_path):
    requests_mock.get(KlarnaRequestBuilder.for_region("na", True).payouts_url(), status_code=401, json=rb.error("UNAUTHORIZED"))
    config = ConfigBuilder().with_region("na").with_playground().build()

    output = check_connection(config, tmp_path)

    status = output.connection_status_messages[-1].connectionStatus
    assert status.status.name == "FAILED"
    assert "Traceback" not in status.message
    assert "na playground environment" in status.message
    assert PASSWORD not in everything_printed(output)
    assert len(requests_mock.request_history) == 1  # the probe, and no stream after it


@pytest.mark.parametrize("playground, environment", [(False, "production"), (True, "playground")])
def test_rejected_kustom_credentials_name_kustom_its_environment_and_the_kustom_portal(requests_mock, tmp_path, playground, environment):
    requests_mock.get(KlarnaRequestBuilder.for_region("eu", playground, "kustom").payouts_url(), status_code=401, json=rb.error("UNAUTHORIZED"))
    config = ConfigBuilder().with_fields(platform="kustom").with_playground(playground).build()

    output = check_connection(config, tmp_path)

    status = output.connection_status_messages[-1].connectionStatus
    assert status.status.name == "FAILED"
    assert f"Kustom rejected the API credentials for its {environment} environment (platform kustom, HTTP 401/403 from https://api" in status.message
    assert "kustom.co/settlements/v1/payouts" in status.message
    assert "Kustom Portal" in status.message and "platform is klarna" in status.message
    assert PASSWORD not in everything_printed(output)


def test_check_succeeds_with_good_credentials(requests_mock, tmp_path):
    KlarnaMock(requests_mock).serve_payouts([rb.payout("A", "2024-02-01T06:00:00Z")])
    config = ConfigBuilder().build()

    output = check_connection(config, tmp_path)

    assert output.connection_status_messages[-1].connectionStatus.status.name == "SUCCEEDED"


def test_bad_request_surfaces_klarnas_messages_and_correlation_id(requests_mock):
    requests_mock.get(
        KlarnaMock(requests_mock).requests.payouts_url(),
        status_code=400,
        json=rb.error("BAD_VALUE", ["start_date must be before end_date", "end_date is in the future"], "corr-400-abc"),
    )

    error = _first_error(read_streams(ConfigBuilder().build(), PAYOUTS, expecting_exception=True))

    assert error.failure_type == FailureType.config_error
    assert "start_date must be before end_date; end_date is in the future" in error.message
    assert "corr-400-abc" in error.message
    assert "/settlements/v1/payouts" in error.message


def test_server_errors_are_retried_and_the_sync_completes(requests_mock):
    payouts = [rb.payout("A", RECENT)]
    answers = [
        {"status_code": 503, "json": rb.error("SERVICE_UNAVAILABLE")},
        {"status_code": 500, "json": rb.error("INTERNAL")},
        {"status_code": 200, "json": rb.page("payouts", payouts)},
    ]
    klarna = KlarnaMock(requests_mock)
    requests_mock.get(klarna.requests.payouts_url(), answers)
    klarna.serve_probe()

    output = read_streams(ConfigBuilder().with_start_date(RECENT).build(), PAYOUTS)

    assert [r["payment_reference"] for r in records_of(output, "payouts")] == ["A"]
    assert not output.errors


def test_server_errors_past_the_retry_budget_fail_naming_endpoint_and_correlation_id(requests_mock):
    klarna = KlarnaMock(requests_mock)
    requests_mock.get(klarna.requests.payouts_url(), status_code=503, json=rb.error("DOWN", ["down"], "corr-503-xyz"))

    output = read_streams(ConfigBuilder().with_start_date(RECENT).build(), PAYOUTS, expecting_exception=True)

    error = _first_error(output)
    assert error.failure_type == FailureType.transient_error
    assert "https://api.klarna.com/settlements/v1/payouts" in error.message
    assert "corr-503-xyz" in error.message
    # One request and six retries, not an endless loop (a 5xx probe is left to the stream's retries).
    assert len(stream_requests(requests_mock)) == 7 and len(klarna.probes()) == 1


def test_rate_limit_waits_as_long_as_retry_after_says(requests_mock):
    payouts = [rb.payout("A", RECENT)]
    klarna = KlarnaMock(requests_mock)
    requests_mock.get(
        klarna.requests.payouts_url(),
        [
            {"status_code": 429, "json": rb.error("RATE_LIMITED"), "headers": {"Retry-After": "7"}},
            {"status_code": 200, "json": rb.page("payouts", payouts)},
        ],
    )
    klarna.serve_probe()
    sleep = mock.MagicMock()

    output = read_streams(ConfigBuilder().with_start_date(RECENT).build(), PAYOUTS, sleep=sleep)

    assert [r["payment_reference"] for r in records_of(output, "payouts")] == ["A"]
    # The CDK adds a second of margin to Klarna's Retry-After.
    assert any(7 <= call.args[0] <= 8 for call in sleep.call_args_list)


def test_rate_limit_without_retry_after_backs_off_exponentially(requests_mock):
    requests_mock.get(KlarnaMock(requests_mock).requests.payouts_url(), status_code=429, json=rb.error("RATE_LIMITED", correlation_id="corr-429"))
    sleep = mock.MagicMock()

    output = read_streams(ConfigBuilder().with_start_date(RECENT).build(), PAYOUTS, sleep=sleep, expecting_exception=True)

    waits = [call.args[0] for call in sleep.call_args_list if call.args[0] >= 2]
    assert waits == sorted(waits) and len(waits) >= 3 and waits[0] < waits[-1]
    assert any("corr-429" in e.trace.error.message for e in output.errors)


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    "body, failure_type, words",
    [
        pytest.param({"text": '{"payouts": [{"payment_reference": "A"', "headers": JSON}, FailureType.system_error,
                     "was not a page of payouts (not JSON: cut short, or not Klarna's), 3 times in a row", id="truncated-json"),
        pytest.param({"text": "<html>Bad gateway</html>", "headers": {"Content-Type": "text/html; charset=utf-8"}}, FailureType.config_error,
                     "answered an HTML page (Content-Type text/html), not a page of payouts, 3 times in a row", id="html-to-a-stream"),
        pytest.param({"json": {"payouts": None, "pagination": {"count": 0, "total": 5, "offset": 0}}}, FailureType.system_error,
                     "was not a page of payouts (no payouts list), 3 times in a row", id="null-list-with-a-total"),
        pytest.param({"json": {"payouts": [rb.payout(str(n)) for n in range(500)]}}, FailureType.system_error,
                     "a full page of 500 payouts without a pagination block", id="full-page-without-pagination"),
    ],
)
def test_an_answer_that_is_not_a_page_is_asked_three_times_then_fails_instead_of_ending_the_stream(requests_mock, body, failure_type, words):
    klarna = KlarnaMock(requests_mock)
    requests_mock.get(klarna.requests.payouts_url(), status_code=200, **body)
    klarna.serve_probe()

    output = read_streams(ConfigBuilder().with_start_date(RECENT).build(), PAYOUTS, expecting_exception=True)

    error = _first_error(output)
    assert error.failure_type == failure_type
    assert words in error.message
    assert "retry" not in error.message.lower()  # the answer will not change
    assert records_of(output, "payouts") == []
    assert len(stream_requests(requests_mock)) == 3


def test_an_html_page_instead_of_klarna_fails_once_at_the_probe_without_retries(requests_mock):
    requests_mock.get(KlarnaMock(requests_mock).requests.payouts_url(), text="<html>Please log in</html>", headers={"Content-Type": "text/html"})

    output = read_streams(ConfigBuilder().with_start_date(RECENT).build(), PAYOUTS, expecting_exception=True)

    error = _first_error(output)
    assert error.failure_type == FailureType.config_error
    assert "https://api.klarna.com/settlements/v1/payouts answered an HTML page (Content-Type text/html), not a page of payouts, once" in error.message
    assert len(output.errors) == 1 and len(requests_mock.request_history) == 1


@pytest.mark.parametrize(
    "page",
    [
        pytest.param({"payouts": [rb.payout("A", RECENT)]}, id="short-page-without-pagination"),
        pytest.param({"payouts": None, "pagination": {"count": 0, "total": 0, "offset": 0}}, id="null-list-of-an-empty-page"),
        pytest.param({"payouts": None, "pagination": {"count": 0}}, id="null-list-with-a-zero-count"),
    ],
)
def test_shapes_whose_meaning_is_unambiguous_are_read(requests_mock, page):
    klarna = KlarnaMock(requests_mock)
    requests_mock.get(klarna.requests.payouts_url(), json=page)
    klarna.serve_probe()

    output = read_streams(ConfigBuilder().with_start_date(RECENT).build(), PAYOUTS)

    assert not output.errors
    assert [r["payment_reference"] for r in records_of(output, "payouts")] == [p["payment_reference"] for p in page["payouts"] or []]
    assert len(stream_requests(requests_mock)) == 1


def test_an_answer_with_unknown_fields_is_kept_whole(requests_mock):
    payout = rb.payout("A", RECENT, brand_new_field={"x": 1})
    page = rb.page("payouts", [payout])
    page["pagination"]["brand_new"] = True
    requests_mock.get(KlarnaMock(requests_mock).requests.payouts_url(), json=page)

    output = read_streams(ConfigBuilder().with_start_date(RECENT).build(), PAYOUTS)

    assert records_of(output, "payouts")[0]["brand_new_field"] == {"x": 1}


def test_the_password_appears_nowhere_in_the_output_of_a_failing_sync(requests_mock):
    requests_mock.get(KlarnaMock(requests_mock).requests.payouts_url(), status_code=401, json=rb.error("UNAUTHORIZED", [f"echo {PASSWORD}"]))

    output = read_streams(ConfigBuilder().build(), PAYOUTS, expecting_exception=True)

    assert output.errors
    assert PASSWORD not in everything_printed(output)
