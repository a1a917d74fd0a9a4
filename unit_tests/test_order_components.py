"""The custom components behind orders, captures and refunds: the personal-data switch, the order
error handler and the store's admission rule. The order store, its batches and the state shape have
their own files (test_order_store.py, test_order_batches.py)."""

from __future__ import annotations

import logging
from typing import Any, Dict

import orjson
import pytest
import requests

from airbyte_cdk.sources.declarative.requesters.error_handlers import HttpResponseFilter
from airbyte_cdk.sources.streams.http.error_handlers.response_models import ResponseAction
from components import (
    KlarnaErrorHandler,
    RemoveFieldsUnlessConfigured,
    is_order_answer_to_keep,
)
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
    return KlarnaErrorHandler(config=config, parameters={}, response_filters=[gone], expect="order", warn_once_on_ignore=True)


def test_a_gone_order_is_ignored_and_warned_about_once_per_sync(caplog):
    handler, other_sync = _handler(), _handler()

    with caplog.at_level(logging.WARNING, logger="airbyte"):
        resolutions = [handler.interpret_response(_response(404, rb.no_such_order("o1"))) for _ in range(3)]
        other_sync.interpret_response(_response(404, rb.no_such_order("o1")))

    assert {r.response_action for r in resolutions} == {ResponseAction.IGNORE}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # Once for the first config (sync), once for the second.
    assert warnings == ["gone: https://api.klarna.com/ordermanagement/v1/orders/o1"] * 2


def test_components_of_one_sync_share_one_config_and_so_one_warning(caplog):
    config: Dict[str, Any] = {}
    gone = HttpResponseFilter(config=config, parameters={}, action="IGNORE", http_codes={404}, error_message="gone")
    handlers = [
        KlarnaErrorHandler(config=config, parameters={}, response_filters=[gone], expect="order", warn_once_on_ignore=True) for _ in range(3)
    ]

    with caplog.at_level(logging.WARNING, logger="airbyte"):
        for handler in handlers:
            handler.interpret_response(_response(404, rb.no_such_order("o1")))

    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_an_order_is_a_success_and_no_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="airbyte"):
        resolution = _handler().interpret_response(_response(200, rb.order("o1")))

    assert resolution.response_action == ResponseAction.SUCCESS
    assert not caplog.records


# --------------------------------------------------------------------------- what the order store keeps


@pytest.mark.parametrize(
    "status, body, cacheable",
    [
        (200, rb.order("o1"), True),
        (404, rb.no_such_order("o1"), True),
        (200, {"order_id": None}, False),
        (200, [rb.order("o1")], False),
        (200, b'{"order_id": "o1", "capt', False),
        (200, b"<html>busy</html>", False),
        (404, rb.error("NOT_FOUND"), False),
        (503, rb.error("SERVICE_UNAVAILABLE"), False),
    ],
)
def test_the_store_keeps_orders_and_no_such_order_only(status, body, cacheable):
    assert is_order_answer_to_keep(_response(status, body)) is cacheable


# --------------------------------------------------------------------------- the pages OrderBatchRequester makes


def test_a_made_page_is_parsed_already_and_its_bytes_are_its_body():
    from source_klarna.components import _answer_page, parsed_body

    records = [rb.order("o1"), rb.order("o2")]
    page = _answer_page("orders", records, "https://api.klarna.com")

    assert parsed_body(page) == {"orders": records}
    assert page._content is False  # no bytes until asked for
    assert orjson.loads(page.content) == page.json() == {"orders": records}
    assert page.status_code == 200 and page.ok
