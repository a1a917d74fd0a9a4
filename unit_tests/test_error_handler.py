"""KlarnaErrorHandler: what the declarative filters cannot judge (or only slowly)."""

from __future__ import annotations

import socket
import ssl

import orjson
import pytest
import requests

from airbyte_cdk.models import FailureType
from airbyte_cdk.sources.streams.http.error_handlers.response_models import ResponseAction
from components import KlarnaErrorHandler, KlarnaOffsetPagination, parsed_body
from unit_tests.mock_server import response_builder as rb

URL = "https://api.klarna.com/settlements/v1/payouts?size=500"


def _response(status: int, body: object = None, raw: bytes = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = raw if raw is not None else orjson.dumps(body)
    response.url = URL
    return response


def _handler(expect: str = "page", items_field: str = "payouts") -> KlarnaErrorHandler:
    return KlarnaErrorHandler(config={}, parameters={}, expect=expect, items_field=items_field)


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
    handler = _handler()

    def answer():
        response = _response(200, body, raw)
        if content_type:
            response.headers["Content-Type"] = content_type
        return handler.interpret_response(response)

    resolutions = [answer() for _ in range(3)]

    assert [r.response_action for r in resolutions] == [ResponseAction.RETRY, ResponseAction.RETRY, ResponseAction.FAIL]
    assert {r.failure_type for r in resolutions} == {failure_type}
    assert "https://api.klarna.com/settlements/v1/payouts" in resolutions[-1].error_message
    assert reason in resolutions[-1].error_message and "3 times in a row" in resolutions[-1].error_message
    assert "retry" not in resolutions[-1].error_message.lower()


def test_a_proper_answer_between_two_foreign_ones_starts_the_count_again():
    handler = _handler()
    foreign, page = _response(200, raw=b"<html/>"), _response(200, rb.page("payouts", []))

    actions = [handler.interpret_response(r).response_action for r in (foreign, foreign, page, foreign, foreign)]

    assert actions == [ResponseAction.RETRY, ResponseAction.RETRY, ResponseAction.SUCCESS, ResponseAction.RETRY, ResponseAction.RETRY]


def test_foreign_answers_are_counted_per_url():
    handler = _handler()
    other = _response(200, raw=b"<html/>")
    other.url = "https://api.klarna.com/settlements/v1/payouts?size=500&offset=500"

    first = [handler.interpret_response(_response(200, raw=b"<html/>")).response_action for _ in range(2)]
    second = handler.interpret_response(other).response_action

    assert first == [ResponseAction.RETRY, ResponseAction.RETRY] and second == ResponseAction.RETRY
    assert handler.interpret_response(_response(200, raw=b"<html/>")).response_action == ResponseAction.FAIL


@pytest.mark.parametrize(
    "body",
    [{"payouts": [{}] * 20}, {"payouts": []}, {"payouts": None, "pagination": {"count": 0}}, {"payouts": None, "pagination": {"count": 0, "total": 0}}],
)
def test_shapes_whose_meaning_is_unambiguous_are_successes(body):
    assert _handler().interpret_response(_response(200, body)).response_action == ResponseAction.SUCCESS


def test_a_host_that_does_not_resolve_fails_at_once_as_a_config_error_naming_the_host():
    config = {"username": "K1_user", "password": "pw", "base_url_override": "https://klarna-proxy.example.invalid"}
    handler = KlarnaErrorHandler(config=config, parameters={}, items_field="payouts")
    error = requests.exceptions.ConnectionError(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    error.request = requests.Request("GET", "https://klarna-proxy.example.invalid/settlements/v1/payouts?size=500").prepare()

    resolution = handler.interpret_response(error)

    assert resolution.response_action == ResponseAction.FAIL and resolution.failure_type == FailureType.config_error
    assert resolution.error_message.startswith("The host klarna-proxy.example.invalid of https://klarna-proxy.example.invalid/settlements/v1/payouts does not resolve")
    assert "check base_url_override (https://klarna-proxy.example.invalid)" in resolution.error_message


def test_a_resolver_that_does_not_answer_is_retried():
    handler = _handler()
    error = requests.exceptions.ConnectionError(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"))
    error.request = requests.Request("GET", URL).prepare()

    assert handler.interpret_response(error).response_action == ResponseAction.RETRY


def test_a_refused_tls_certificate_fails_at_once_naming_the_host_and_the_trust_store():
    handler = _handler()
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "self-signed certificate"
    error = requests.exceptions.SSLError(cause)
    error.request = requests.Request("GET", URL).prepare()

    resolution = handler.interpret_response(error)

    assert resolution.response_action == ResponseAction.FAIL and resolution.failure_type == FailureType.config_error
    assert "api.klarna.com presented a TLS certificate this machine does not trust (self-signed certificate)" in resolution.error_message
    assert "REQUESTS_CA_BUNDLE" in resolution.error_message


def test_a_page_is_a_success_and_its_body_is_parsed_once():
    response = _response(200, rb.page("payouts", [rb.payout("A")]))

    assert _handler().interpret_response(response).response_action == ResponseAction.SUCCESS
    assert parsed_body(response) is parsed_body(response)


@pytest.mark.parametrize("expect, body, ok", [("list", [], True), ("list", {"a": 1}, False), ("order", {"order_id": "o1"}, True), ("order", {}, False)])
def test_summaries_answer_a_list_and_orders_an_order(expect, body, ok):
    resolution = _handler(expect).interpret_response(_response(200, body))

    assert (resolution.response_action == ResponseAction.SUCCESS) is ok


def test_a_400_about_size_or_offset_is_a_system_error_to_report():
    resolution = _handler().interpret_response(_response(400, rb.error("BAD_VALUE", ["size must be at most 500"], "corr-9")))

    assert resolution.response_action == ResponseAction.FAIL
    assert resolution.failure_type == FailureType.system_error
    assert "size must be at most 500" in resolution.error_message and "corr-9" in resolution.error_message
    assert "report it" in resolution.error_message


@pytest.mark.parametrize("with_request", [True, False])
def test_a_transport_failure_names_the_endpoint(with_request):
    request = requests.Request("GET", "https://api.klarna.com/settlements/v1/transactions?payment_reference=A").prepare()
    exception = requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead", request=request if with_request else None)

    resolution = _handler(items_field="transactions").interpret_response(exception)

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


def test_offset_pagination_without_klarnas_count_counts_the_rows_on_the_page_not_those_filtered_through():
    strategy = KlarnaOffsetPagination(config={}, parameters={}, page_size=500)
    response = _response(200, {"payouts": [{"payment_reference": str(i)} for i in range(500)], "pagination": {"total": 1200}})

    # A record filter let 3 of the 500 rows through; the next page still starts 500 further on.
    assert strategy.next_page_token(response, 3, None, 500) == 1000
