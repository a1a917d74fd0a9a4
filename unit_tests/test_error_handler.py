"""KlarnaErrorHandler: what the declarative filters cannot judge (or only slowly)."""

from __future__ import annotations

import orjson
import pytest
import requests

from airbyte_cdk.models import FailureType
from airbyte_cdk.sources.streams.http.error_handlers.response_models import ResponseAction
from source_klarna.components import KlarnaErrorHandler, KlarnaOffsetPagination, parsed_body
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
    "body, raw, reason",
    [
        (None, b'{"payouts": [', "not JSON"),
        ({"payouts": []}, None, "no pagination block"),
        ({"payouts": None, "pagination": {"count": 0}}, None, "no payouts list"),
        ([1, 2], None, "not a JSON object"),
    ],
)
def test_a_2xx_that_is_not_a_page_is_retried_with_the_url_in_the_message(body, raw, reason):
    resolution = _handler().interpret_response(_response(200, body, raw))

    assert resolution.response_action == ResponseAction.RETRY
    assert resolution.failure_type == FailureType.system_error
    assert "https://api.klarna.com/settlements/v1/payouts was not a page of payouts" in resolution.error_message
    assert reason in resolution.error_message


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
