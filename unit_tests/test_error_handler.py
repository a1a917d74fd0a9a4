"""KlarnaErrorHandler: what the declarative filters cannot judge (or only slowly), and how a request that fails for
good ends (SyncFailures, KlarnaFailure)."""

from __future__ import annotations

import socket
import ssl
from typing import Union

import orjson
import pytest
import requests

from airbyte_cdk.models import FailureType, Level, StreamDescriptor, TraceType, Type
from airbyte_cdk.sources.streams.http.error_handlers.response_models import ErrorResolution, ResponseAction
from components import FAILURES, KlarnaErrorHandler, KlarnaFailure, KlarnaOffsetPagination, parsed_body
from unit_tests.mock_server import response_builder as rb

URL = "https://api.klarna.com/settlements/v1/payouts?size=500"


def _request(url: str = URL) -> requests.PreparedRequest:
    return requests.Request("GET", url).prepare()


def _response(status: int, body: object = None, raw: bytes = None, request: requests.PreparedRequest = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = raw if raw is not None else orjson.dumps(body)
    response.request = request or _request()
    response.url = response.request.url
    return response


def _handler(expect: str = "page", items_field: str = "payouts", config: dict = None) -> KlarnaErrorHandler:
    return KlarnaErrorHandler(config={} if config is None else config, parameters={}, expect=expect, items_field=items_field, max_retries=6)


def judge(handler: KlarnaErrorHandler, outcome) -> Union[ErrorResolution, KlarnaFailure]:
    """What the handler makes of one answer to a request the authenticator sent (it registers each attempt): its
    resolution, or the KlarnaFailure it raises when the request fails for good."""
    FAILURES.of(handler.config).sent(outcome.request)
    try:
        return handler.interpret_response(outcome)
    except KlarnaFailure as failure:
        return failure


@pytest.mark.parametrize(
    "body, raw, content_type, failure_type, reason",
    [
        (None, b'{"payouts": [', "application/json", FailureType.system_error, "was not a page of payouts (not JSON"),
        ({"payouts": [{}] * 500}, None, "application/json", FailureType.system_error, "a full page of 500 payouts without a pagination block"),
        ({"payouts": None, "pagination": {"count": 3}}, None, "application/json", FailureType.system_error, "no payouts list"),
        ([1, 2], None, "application/json", FailureType.system_error, "not a JSON object"),
        (None, b"<html>Please log in</html>", "text/html", FailureType.config_error, "answered an HTML page (Content-Type text/html)"),
        (None, b"Welcome", None, FailureType.config_error, "answered a typeless body (Content-Type none)"),
    ],
)
def test_a_2xx_that_is_not_a_page_is_retried_twice_then_fails_with_the_url_in_the_message(body, raw, content_type, failure_type, reason):
    handler, request = _handler(), _request()

    def answer():
        response = _response(200, body, raw, request)
        if content_type:
            response.headers["Content-Type"] = content_type
        return judge(handler, response)

    outcomes = [answer() for _ in range(3)]

    assert [o.response_action for o in outcomes[:2]] == [ResponseAction.RETRY, ResponseAction.RETRY]
    assert {o.failure_type for o in outcomes} == {failure_type}
    failure = outcomes[-1]
    assert isinstance(failure, KlarnaFailure)
    assert "https://api.klarna.com/settlements/v1/payouts" in failure.message
    assert reason in failure.message and "3 times in a row" in failure.message
    assert "retry" not in failure.message.split(" Klarna's ")[0].lower()


def test_a_proper_answer_ends_the_requests_count_and_the_next_request_starts_again():
    handler, first, second = _handler(), _request(), _request()
    answers = [(first, b"<html/>"), (first, b"<html/>"), (first, None), (second, b"<html/>"), (second, b"<html/>")]

    actions = [judge(handler, _response(200, rb.page("payouts", []), raw, request)).response_action for request, raw in answers]

    assert actions == [ResponseAction.RETRY, ResponseAction.RETRY, ResponseAction.SUCCESS, ResponseAction.RETRY, ResponseAction.RETRY]


def test_foreign_answers_are_counted_per_request():
    handler, one, other = _handler(), _request(), _request("https://api.klarna.com/settlements/v1/payouts?size=500&offset=500")

    first = [judge(handler, _response(200, raw=b"<html/>", request=one)).response_action for _ in range(2)]
    second = judge(handler, _response(200, raw=b"<html/>", request=other)).response_action

    assert first == [ResponseAction.RETRY, ResponseAction.RETRY] and second == ResponseAction.RETRY
    assert isinstance(judge(handler, _response(200, raw=b"<html/>", request=one)), KlarnaFailure)


@pytest.mark.parametrize(
    "body",
    [{"payouts": [{}] * 20}, {"payouts": []}, {"payouts": None, "pagination": {"count": 0}}, {"payouts": None, "pagination": {"count": 0, "total": 0}}],
)
def test_shapes_whose_meaning_is_unambiguous_are_successes(body):
    assert judge(_handler(), _response(200, body)).response_action == ResponseAction.SUCCESS


def test_a_host_that_does_not_resolve_fails_at_once_as_a_config_error_naming_the_host():
    config = {"username": "K1_user", "password": "pw", "base_url_override": "https://klarna-proxy.example.invalid"}
    handler = KlarnaErrorHandler(config=config, parameters={}, items_field="payouts")
    error = requests.exceptions.ConnectionError(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    error.request = requests.Request("GET", "https://klarna-proxy.example.invalid/settlements/v1/payouts?size=500").prepare()

    failure = judge(handler, error)

    assert isinstance(failure, KlarnaFailure) and failure.failure_type == FailureType.config_error
    assert failure.message.startswith("The host klarna-proxy.example.invalid of https://klarna-proxy.example.invalid/settlements/v1/payouts does not resolve")
    assert "check base_url_override (https://klarna-proxy.example.invalid)" in failure.message


def test_a_resolver_that_does_not_answer_is_retried():
    handler = _handler()
    error = requests.exceptions.ConnectionError(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"))
    error.request = requests.Request("GET", URL).prepare()

    assert judge(handler, error).response_action == ResponseAction.RETRY


def test_a_refused_tls_certificate_fails_at_once_naming_the_host_and_the_trust_store():
    handler = _handler()
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "self-signed certificate"
    error = requests.exceptions.SSLError(cause)
    error.request = requests.Request("GET", URL).prepare()

    failure = judge(handler, error)

    assert isinstance(failure, KlarnaFailure) and failure.failure_type == FailureType.config_error
    assert "api.klarna.com presented a TLS certificate this machine does not trust (self-signed certificate)" in failure.message
    assert "REQUESTS_CA_BUNDLE" in failure.message


def test_a_page_is_a_success_and_its_body_is_parsed_once():
    response = _response(200, rb.page("payouts", [rb.payout("A")]))

    assert judge(_handler(), response).response_action == ResponseAction.SUCCESS
    assert parsed_body(response) is parsed_body(response)


@pytest.mark.parametrize("expect, body, ok", [("list", [], True), ("list", {"a": 1}, False), ("order", {"order_id": "o1"}, True), ("order", {}, False)])
def test_summaries_answer_a_list_and_orders_an_order(expect, body, ok):
    outcome = judge(_handler(expect), _response(200, body))

    assert (getattr(outcome, "response_action", None) == ResponseAction.SUCCESS) is ok


def test_a_400_about_size_or_offset_is_a_system_error_to_report():
    failure = judge(_handler(), _response(400, rb.error("BAD_VALUE", ["size must be at most 500"], "corr-9")))

    assert isinstance(failure, KlarnaFailure)
    assert failure.failure_type == FailureType.system_error
    assert "size must be at most 500" in failure.message and "corr-9" in failure.message
    assert "report it" in failure.message


@pytest.mark.parametrize("with_request", [True, False])
def test_a_transport_failure_names_the_endpoint(with_request):
    request = requests.Request("GET", "https://api.klarna.com/settlements/v1/transactions?payment_reference=A").prepare()
    exception = requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead", request=request if with_request else None)
    handler = _handler(items_field="transactions")
    FAILURES.of(handler.config).sent(request)

    resolution = handler.interpret_response(exception)

    assert resolution.response_action == ResponseAction.RETRY
    assert "/settlements/v1/transactions" in resolution.error_message
    assert "ChunkedEncodingError" in resolution.error_message


@pytest.mark.parametrize(
    "pagination, asked, expected",
    [
        ({"count": 500, "total": 1200, "offset": 0}, None, 500),
        ({"count": 500, "total": 1200}, 500, 1000),  # no offset echo: the offset asked for counts
        ({"count": 200, "total": 1200, "offset": 1000}, 1000, None),
        ({"count": 500, "total": 1000}, 500, None),
        ({"count": 0, "total": 7}, 0, None),
        ({"count": 500}, 0, 500),  # no total: a full page asks for more
        ({"count": 499}, 0, None),
    ],
)
def test_offset_pagination_uses_the_offset_asked_for_and_klarnas_count(pagination, asked, expected):
    strategy = KlarnaOffsetPagination(config={}, parameters={}, page_size=500)
    response = _response(200, {"payouts": [], "pagination": pagination})

    assert strategy.next_page_token(response, pagination["count"], None, asked) == expected


def test_a_page_without_klarnas_count_is_refused_before_the_paginator_unless_it_is_a_short_last_page():
    strategy = KlarnaOffsetPagination(config={}, parameters={}, page_size=500)
    full = {"payouts": [{"payment_reference": str(i)} for i in range(500)], "pagination": {"total": 1200}}
    short = {"payouts": [{"payment_reference": str(i)} for i in range(3)]}
    handler, request = _handler(), _request()

    # A pagination block without a count (Klarna's one required field) is not a page: retried, then it fails.
    assert [type(judge(handler, _response(200, full, request=request))).__name__ for _ in range(3)] == ["ErrorResolution", "ErrorResolution", "KlarnaFailure"]
    # A short page without a pagination block is the last one: the paginator stops there.
    assert judge(_handler(), _response(200, short)).response_action == ResponseAction.SUCCESS
    assert strategy.next_page_token(_response(200, short), 3, None, 500) is None


def _config() -> dict:
    return {"username": "K1", "password": "pw"}  # a new object: a sync of its own (SyncFailures is per sync)


def _server_error(request: requests.PreparedRequest) -> requests.Response:
    return _response(503, rb.error("SERVICE_UNAVAILABLE", ["try later"], "corr-5"), request=request)


def test_a_request_failing_through_its_last_retry_raises_the_filters_sentence_not_the_cdks_exhausted_text():
    handler, request = _handler(config=_config()), _request()

    outcomes = [judge(handler, _server_error(request)) for _ in range(7)]

    assert [o.response_action for o in outcomes[:6]] == [ResponseAction.RETRY] * 6
    failure = outcomes[6]
    assert isinstance(failure, KlarnaFailure) and failure.failure_type == FailureType.transient_error
    assert "Exhausted" not in failure.message and "Response (headers)" not in failure.message
    assert repr(failure) == failure.message  # what the CDK's closing summary shows


def test_an_endpoint_that_answers_nothing_else_is_asked_no_more_this_sync():
    config = _config()
    handler, failing, waiting = _handler(config=config), _request(), _request("https://api.klarna.com/settlements/v1/payouts?size=500&offset=500")
    failures = FAILURES.of(config)
    judge(handler, _server_error(waiting))  # another request in flight, failing too

    for _ in range(6):
        judge(handler, _server_error(failing))
    opened = judge(handler, _server_error(failing))

    assert isinstance(opened, KlarnaFailure)
    assert "answered nothing else" in opened.message and "stopped asking it" in opened.message
    with pytest.raises(KlarnaFailure) as stopped:
        failures.stop_if_down("/settlements/v1/payouts")  # what the authenticator asks before every attempt
    assert stopped.value.cause == opened.cause and stopped.value.message == opened.message
    failures.stop_if_down("/settlements/v1/transactions")  # another endpoint is still asked


def test_a_failing_request_among_answered_ones_gets_all_its_retries_and_stops_only_itself():
    config = _config()
    handler, failing = _handler(config=config), _request()
    failures = FAILURES.of(config)

    outcomes = []
    for _ in range(7):
        outcomes.append(judge(handler, _server_error(failing)))
        judge(handler, _response(200, rb.page("payouts", []), request=_request()))  # another request answered meanwhile

    assert [o.response_action for o in outcomes[:6]] == [ResponseAction.RETRY] * 6
    assert isinstance(outcomes[6], KlarnaFailure) and "stopped asking" not in outcomes[6].message
    failures.stop_if_down("/settlements/v1/payouts")  # still asked


def test_one_error_trace_per_cause_the_others_a_warning_naming_their_stream():
    config = _config()
    failures = FAILURES.of(config)
    first, second = (KlarnaFailure("Klarna kept failing.", FailureType.transient_error, ("/ordermanagement/v1/orders", "503"), failures) for _ in range(2))
    other_cause = KlarnaFailure("Klarna refused it.", FailureType.config_error, ("/ordermanagement/v1/orders", "401"), failures)

    traced = first.as_airbyte_message(stream_descriptor=StreamDescriptor(name="orders"))
    logged = second.as_airbyte_message(stream_descriptor=StreamDescriptor(name="captures"))

    assert traced.type == Type.TRACE and traced.trace.type == TraceType.ERROR and traced.trace.error.message == "Klarna kept failing."
    assert logged.type == Type.LOG and logged.log.level == Level.WARN
    assert "captures" in logged.log.message and "Klarna kept failing." in logged.log.message
    assert other_cause.as_airbyte_message().type == Type.TRACE


def test_only_foreign_answers_in_a_row_count_towards_failing_a_request_other_failures_keep_their_retries():
    handler, request = _handler(config=_config()), _request()
    answers = [_server_error(request), _response(200, raw=b"<html/>", request=request), _response(200, raw=b"<html/>", request=request),
               _server_error(request), _response(200, raw=b"<html/>", request=request), _response(200, raw=b"<html/>", request=request)]

    outcomes = [judge(handler, answer) for answer in answers]

    assert [o.response_action for o in outcomes] == [ResponseAction.RETRY] * 6  # never three foreign answers in a row
    assert isinstance(judge(handler, _response(200, raw=b"<html/>", request=request)), KlarnaFailure)  # the seventh: the last retry
