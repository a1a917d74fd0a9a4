"""The custom components behind orders, captures and refunds, one by one."""

from __future__ import annotations

import logging
from typing import Any, Dict

import orjson
import pytest
import requests
import requests_cache

from airbyte_cdk.models import ConfiguredAirbyteCatalogSerializer
from airbyte_cdk.sources.declarative.requesters.error_handlers import HttpResponseFilter
from airbyte_cdk.sources.declarative.requesters.http_requester import HttpRequester
from airbyte_cdk.sources.streams.http.error_handlers.response_models import ResponseAction
from airbyte_cdk.sources.types import StreamSlice
from source_klarna.components import (
    EmbeddedItemsRequester,
    KlarnaErrorHandler,
    OrderRequester,
    RemoveFieldsUnlessConfigured,
    is_cacheable_order_answer,
    parents_first,
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


# --------------------------------------------------------------------------- OrderRequester and its cache


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
def test_the_cache_keeps_orders_and_no_such_order_only(status, body, cacheable):
    assert is_cacheable_order_answer(_response(status, body)) is cacheable


@pytest.fixture(autouse=True)
def _cache_directory(tmp_path, monkeypatch):
    # Where the CDK puts a cached session's sqlite file (an earlier entrypoint run may have left the
    # variable pointing at its deleted temp directory).
    monkeypatch.setenv("REQUEST_CACHE_PATH", str(tmp_path))


def _http_requester(use_cache: bool) -> HttpRequester:
    return HttpRequester(name="orders", url_base="https://api.klarna.com", path="/ordermanagement/v1/orders/o1", config={}, parameters={}, use_cache=use_cache)


def test_the_wrapped_requesters_cache_is_told_what_to_keep():
    inner = _http_requester(use_cache=True)

    OrderRequester(requester=inner, config={})

    session = inner._http_client._session
    assert isinstance(session, requests_cache.CacheMixin)
    assert session.settings.filter_fn is is_cacheable_order_answer
    assert set(session.settings.allowable_codes) == {200, 404}


def test_without_a_cache_the_wrapper_changes_nothing_and_delegates():
    inner = _http_requester(use_cache=False)

    wrapper = OrderRequester(requester=inner, config={})

    assert not isinstance(inner._http_client._session, requests_cache.CacheMixin)
    assert wrapper.get_url_base() == inner.get_url_base()
    assert wrapper.get_path(stream_state=None, stream_slice=None, next_page_token=None) == "ordermanagement/v1/orders/o1"
    assert wrapper.name == "orders" and wrapper.error_handler is inner.error_handler


def test_the_cache_serves_an_order_once_fetched_and_not_a_broken_answer(requests_mock):
    inner = _http_requester(use_cache=True)
    OrderRequester(requester=inner, config={})
    session = inner._http_client._session
    url = "https://api.klarna.com/ordermanagement/v1/orders/o1"
    requests_mock.get(url, [{"status_code": 200, "text": "{cut"}, {"status_code": 200, "json": rb.order("o1")}])

    answers = [session.get(url) for _ in range(3)]

    assert [a.from_cache for a in answers] == [False, False, True]
    assert answers[2].json()["order_id"] == "o1"
    assert requests_mock.call_count == 2


# --------------------------------------------------------------------------- EmbeddedItemsRequester


def test_the_embedded_items_are_the_answer_and_nothing_is_sent(requests_mock):
    requester = EmbeddedItemsRequester(name="captures", config={}, parameters={})
    items = _response(200, [rb.capture("c1")])
    stream_slice = StreamSlice(partition={"order_id": "o1"}, cursor_slice={}, extra_fields={"child_response": items})

    assert requester.send_request(stream_slice=stream_slice, path=None) is items
    assert requests_mock.call_count == 0


def test_a_slice_without_embedded_items_is_a_configuration_error():
    requester = EmbeddedItemsRequester(name="captures", config={}, parameters={})

    with pytest.raises(ValueError, match="lazy_read_pointer"):
        requester.send_request(stream_slice=StreamSlice(partition={"order_id": "o1"}, cursor_slice={}))


# --------------------------------------------------------------------------- parents_first


def _catalog(*names: str):
    return ConfiguredAirbyteCatalogSerializer.load(
        {
            "streams": [
                {"stream": {"name": n, "json_schema": {}, "supported_sync_modes": ["full_refresh"]}, "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}
                for n in names
            ]
        }
    )


def test_streams_are_read_in_the_manifests_order_whatever_the_catalogs():
    order = ["payouts", "transactions", "payout_summaries", "orders", "captures", "refunds"]

    result = parents_first(_catalog("captures", "refunds", "orders", "unknown", "payouts"), order)

    assert [s.stream.name for s in result.streams] == ["payouts", "orders", "captures", "refunds", "unknown"]


def test_a_catalog_already_in_order_is_returned_as_is():
    catalog = _catalog("orders", "captures")

    assert parents_first(catalog, ["orders", "captures"]) is catalog
