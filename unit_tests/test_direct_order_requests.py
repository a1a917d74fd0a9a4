"""DirectOrderRequests: an order's GET sent the CDK's way without the CDK's per-request machinery, and
everything but an order handed to the CDK's client as its first attempt (no second request, each answer
paced and seen by the pacer once)."""

from __future__ import annotations

import logging
import re
from typing import Any, Dict, List
from unittest import mock

import pytest
import requests

from airbyte_cdk.sources.declarative.requesters.error_handlers import HttpResponseFilter
from airbyte_cdk.sources.streams.http.http_client import HttpClient
from airbyte_cdk.sources.types import StreamSlice
from source_klarna import SourceKlarna, components
from unit_tests.mock_server import response_builder as rb
from unit_tests.mock_server.config import ConfigBuilder
from unit_tests.mock_server.request_builder import KlarnaRequestBuilder

ORDERS = KlarnaRequestBuilder()


def order_requester(config: Dict[str, Any]) -> components.OrderBatchRequester:
    """The orders stream's requester, as the manifest builds it."""
    stream = {s.name: s for s in SourceKlarna(config=config).streams(config)}["orders"]
    return stream._stream_partition_generator._partition_factory._retriever.requester


@pytest.fixture
def requester() -> components.OrderBatchRequester:
    return order_requester(ConfigBuilder().build())


def through_the_cdk(requester: components.OrderBatchRequester, order_id: str) -> requests.Response:
    order_slice = StreamSlice(partition={"order_id": order_id}, cursor_slice={})
    return requester.requester.send_request(stream_slice=order_slice, path=requester._path_of(order_slice))


def sent(requests_mock: Any) -> List[Any]:
    return [r for r in requests_mock.request_history if "/ordermanagement/" in r.url]


def test_the_manifests_order_requester_gets_direct_requests(requester):
    assert isinstance(requester._direct_requests(), components.DirectOrderRequests)


def test_a_direct_request_is_the_request_the_cdks_client_sends(requests_mock, requester):
    for order_id in ("o1", "o2"):
        requests_mock.get(ORDERS.order_url(order_id), json=rb.order(order_id))

    with mock.patch.object(HttpClient, "_send_with_retry", autospec=True, side_effect=HttpClient._send_with_retry) as cdk:
        requester._fetch_one("o1")
        assert cdk.call_count == 0
        through_the_cdk(requester, "o2")
        assert cdk.call_count == 1

    direct, cdk_request = sent(requests_mock)
    assert direct.url.replace("o1", "o2") == cdk_request.url
    assert direct.method == cdk_request.method == "GET"
    assert dict(direct.headers) == dict(cdk_request.headers)
    assert direct.headers["Authorization"].startswith("Basic ")
    for kwarg in ("timeout", "verify", "proxies", "cert", "stream", "allow_redirects"):
        assert getattr(direct, kwarg) == getattr(cdk_request, kwarg), kwarg


def test_an_order_is_one_request_paced_and_observed_once(requests_mock, requester):
    requests_mock.get(ORDERS.order_url("o1"), json=rb.order("o1"))
    pacer = requester.get_authenticator().pacer
    answered = pacer._answered

    with mock.patch.object(pacer, "wait_turn", wraps=pacer.wait_turn) as wait_turn:
        response = requester._fetch_one("o1")

    assert response.status_code == 200 and components.parsed_body(response)["order_id"] == "o1"
    assert len(sent(requests_mock)) == 1
    assert wait_turn.call_count == 1
    assert pacer._answered == answered + 1


@pytest.mark.parametrize(
    "first",
    [
        {"status_code": 503, "json": rb.error("SERVICE_UNAVAILABLE")},
        {"status_code": 429, "json": rb.error("TOO_MANY_REQUESTS"), "headers": {"Retry-After": "2"}},
        {"exc": requests.exceptions.ConnectionError("connection reset")},
        {"status_code": 200, "text": '{"order_id": "o1", "capt'},
    ],
    ids=["503", "429", "no answer", "cut body"],
)
def test_what_is_not_an_order_is_the_cdks_first_attempt_and_its_retry_the_second_request(requests_mock, requester, first):
    requests_mock.get(ORDERS.order_url("o1"), [first, {"status_code": 200, "json": rb.order("o1")}])
    pacer = requester.get_authenticator().pacer
    answered = pacer._answered
    sleep = mock.MagicMock()

    with mock.patch("time.sleep", sleep), mock.patch.object(pacer, "wait_turn", wraps=pacer.wait_turn) as wait_turn, \
            mock.patch.object(HttpClient, "_send_with_retry", autospec=True, side_effect=HttpClient._send_with_retry) as cdk:
        response = requester._fetch_one("o1")

    assert components.parsed_body(response)["order_id"] == "o1"
    assert len(sent(requests_mock)) == 2  # the answer replayed, not asked for again
    assert cdk.call_count == 1
    assert wait_turn.call_count == 2  # once per request sent; the replay is not paced
    assert pacer._answered == answered + (1 if "exc" in first else 2)  # each answer seen once
    assert any(call.args and call.args[0] >= 1 for call in sleep.call_args_list)  # the CDK's backoff before its retry
    assert components.replayed_url() is None


def test_a_gone_order_is_one_request_and_the_cdks_ignored_answer(requests_mock, requester):
    requests_mock.get(ORDERS.order_url("gone"), status_code=404, json=rb.no_such_order("gone"))

    with mock.patch.object(HttpClient, "_send_with_retry", autospec=True, side_effect=HttpClient._send_with_retry) as cdk:
        response = requester._fetch_one("gone")

    assert response.status_code == 404 and components.is_order_answer_to_keep(response)
    assert len(sent(requests_mock)) == 1 and cdk.call_count == 1


def test_rejected_credentials_fail_as_the_cdk_fails_them_after_one_request(requests_mock, requester):
    requests_mock.get(ORDERS.order_url("o1"), status_code=401, json=rb.error("UNAUTHORIZED"))

    with pytest.raises(components.AirbyteTracedException) as raised:
        requester._fetch_one("o1")

    assert "rejected the API credentials" in raised.value.message
    assert raised.value.failure_type.value == "config_error"
    assert len(sent(requests_mock)) == 1


@pytest.mark.parametrize("order_id", ["o 1", "o/1", "ö1"])
def test_an_order_id_requests_would_quote_goes_through_the_cdks_client(requests_mock, requester, order_id):
    requests_mock.get(re.compile(r".*/ordermanagement/v1/orders/.*"), json=rb.order(order_id))

    with mock.patch.object(HttpClient, "_send_with_retry", autospec=True, side_effect=HttpClient._send_with_retry) as cdk:
        requester._fetch_one(order_id)

    assert cdk.call_count == 1
    (request,) = sent(requests_mock)
    assert request.url == requests.Request("GET", f"https://api.klarna.com/ordermanagement/v1/orders/{order_id}").prepare().url


def test_with_debug_logs_every_order_goes_through_the_cdks_client(requests_mock, requester):
    requests_mock.get(ORDERS.order_url("o1"), json=rb.order("o1"))

    with mock.patch.object(HttpClient, "_send_with_retry", autospec=True, side_effect=HttpClient._send_with_retry) as cdk, \
            mock.patch.object(logging.Logger, "isEnabledFor", return_value=True):
        requester._fetch_one("o1")

    assert cdk.call_count == 1


def test_a_response_filter_that_could_act_on_a_200_turns_direct_requests_off():
    config: Dict[str, Any] = {}
    on_codes = HttpResponseFilter(config=config, parameters={}, action="RETRY", http_codes={200})
    on_predicate = HttpResponseFilter(config=config, parameters={}, action="RETRY", predicate="{{ 'x' in response }}")
    on_errors = HttpResponseFilter(config=config, parameters={}, action="RETRY", http_codes={500, 503})
    assert components._may_act_on_success(on_codes) and components._may_act_on_success(on_predicate)
    assert not components._may_act_on_success(on_errors)

    requester = order_requester(ConfigBuilder().build())
    requester.requester.error_handler.response_filters.append(on_predicate)
    assert requester._direct_requests() is None


def test_a_primed_answer_is_replayed_once_and_only_for_its_url(requests_mock):
    requests_mock.get("https://api.klarna.com/a", text="from the network")
    session = requests.Session()
    components.replay_on(session)
    components.replay_on(session)  # once is enough
    kept = requests.Response()
    kept.status_code, kept._content = 200, b"kept"

    components._REPLAYED.answer = ("https://api.klarna.com/a", kept)
    try:
        assert session.send(requests.Request("GET", "https://api.klarna.com/a").prepare()) is kept
        assert session.send(requests.Request("GET", "https://api.klarna.com/a").prepare()).text == "from the network"
    finally:
        components._REPLAYED.answer = None
    assert len(requests_mock.request_history) == 1


def test_the_primed_answer_is_dropped_when_the_cdks_client_fails(requests_mock, requester):
    requests_mock.get(ORDERS.order_url("o1"), status_code=503, json=rb.error("SERVICE_UNAVAILABLE"))
    direct = requester._direct_requests()

    def failing_client():
        assert components.replayed_url() is not None
        raise RuntimeError("the client failed")

    with pytest.raises(RuntimeError):
        direct.fetch("o1", failing_client)
    assert components.replayed_url() is None
