"""The custom components behind orders, captures and refunds: the personal-data switch and the order
error handler's judgement of an order's answer. OrderFetcher and OrderItemsRetriever have their own
file (test_order_fetcher.py), the state migrations theirs (test_usable_state.py)."""

from __future__ import annotations

import logging
from typing import Any, Dict

import orjson
import pytest
import requests

from airbyte_cdk.sources.declarative.requesters.error_handlers import HttpResponseFilter
from airbyte_cdk.sources.streams.http.error_handlers.response_models import ResponseAction
from components import KlarnaErrorHandler, RemoveFieldsUnlessConfigured
from unit_tests.mock_server import response_builder as rb

PERSONAL = [["billing_address"], ["shipping_address"], ["customer"], ["captures", "*", "billing_address"], ["captures", "*", "shipping_address"]]


def _response(status: int, body: Any, url: str = "https://api.klarna.com/ordermanagement/v1/orders/o1") -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body if isinstance(body, bytes) else orjson.dumps(body)
    response.url = url
    return response


# --------------------------------------------------------------------------- RemoveFieldsUnlessConfigured


def test_personal_fields_are_removed_at_every_pointer_and_nothing_else():
    order = rb.order("o1", captures=[rb.capture("c1"), rb.capture("c2")])
    expected = {k: v for k, v in order.items() if k not in ("billing_address", "shipping_address", "customer")}
    expected["captures"] = [{k: v for k, v in c.items() if k not in ("billing_address", "shipping_address")} for c in order["captures"]]

    RemoveFieldsUnlessConfigured(field_pointers=PERSONAL, keep_if="include_personal_data").transform(order, config={})

    assert order == expected


def test_nothing_is_removed_when_the_flag_is_on():
    order = rb.order("o1")
    before = orjson.loads(orjson.dumps(order))

    RemoveFieldsUnlessConfigured(field_pointers=PERSONAL, keep_if="include_personal_data").transform(order, config={"include_personal_data": True})

    assert order == before


@pytest.mark.parametrize("record", [{}, {"captures": None}, {"captures": "x"}, {"captures": [None, 1, {"k": 1}]}, {"customer": None}])
def test_missing_or_odd_shaped_fields_are_no_error(record: Dict[str, Any]):
    RemoveFieldsUnlessConfigured(field_pointers=PERSONAL, keep_if="include_personal_data").transform(record, config={})

    assert "customer" not in record


# --------------------------------------------------------------------------- KlarnaErrorHandler on orders


def _handler() -> KlarnaErrorHandler:
    config: Dict[str, Any] = {}
    gone = HttpResponseFilter(config=config, parameters={}, action="IGNORE", http_codes={404}, error_message="gone: {{ request_url }}")
    return KlarnaErrorHandler(config=config, parameters={}, response_filters=[gone], expect="order")


def test_a_gone_order_is_ignored_with_the_filters_message():
    resolution = _handler().interpret_response(_response(404, rb.no_such_order("o1")))

    assert resolution.response_action == ResponseAction.IGNORE
    assert resolution.error_message == "gone: https://api.klarna.com/ordermanagement/v1/orders/o1"


def test_an_order_is_a_success_and_no_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="airbyte"):
        resolution = _handler().interpret_response(_response(200, rb.order("o1")))

    assert resolution.response_action == ResponseAction.SUCCESS
    assert not caplog.records


@pytest.mark.parametrize(
    "status, body, action",
    [
        (200, rb.order("o1"), ResponseAction.SUCCESS),
        (404, rb.no_such_order("o1"), ResponseAction.IGNORE),
        (200, {"order_id": None}, ResponseAction.RETRY),
        (200, [rb.order("o1")], ResponseAction.RETRY),
        (200, b'{"order_id": "o1", "capt', ResponseAction.RETRY),
        (200, b"<html>busy</html>", ResponseAction.RETRY),
        (503, rb.error("SERVICE_UNAVAILABLE"), ResponseAction.RETRY),
    ],
)
def test_only_an_order_is_a_success_and_a_2xx_that_is_not_one_is_asked_again(status, body, action):
    assert _handler().interpret_response(_response(status, body)).response_action == action
