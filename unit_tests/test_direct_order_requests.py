"""DirectOrderRequests: an order's GET sent the CDK's way without the CDK's per-request machinery, and
everything but an order handed to the CDK's client as its first attempt (no second request, each answer
paced and seen by the pacer once)."""

from __future__ import annotations

import http.server
import logging
import re
import socket
import threading
from typing import Any, Dict, List
from unittest import mock

import orjson
import pytest
import requests
import requests.adapters

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


# --------------------------------------------------------------------------- over a real socket (no test double)
# requests-mock stands in for requests' Session.send, so the tests above see direct requests go through
# the session. Without one they go through OneHostAdapter: these talk to a small HTTP server on 127.0.0.1.


class _Orders(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: List[Dict[str, Any]] = []
    script: List[str] = []  # what the next requests get: "order", "503", "close" (no answer)

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).seen.append({"path": self.path, "headers": dict(self.headers.items())})
        what = type(self).script.pop(0) if type(self).script else "order"
        if what == "close":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status, body = (503, rb.error("SERVICE_UNAVAILABLE")) if what == "503" else (200, rb.order(self.path.rsplit("/", 1)[-1]))
        payload = orjson.dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def local_klarna():
    _Orders.seen, _Orders.script = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Orders)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_over_a_socket_a_direct_request_goes_through_one_host_adapter_and_equals_the_cdks(local_klarna):
    requester = order_requester(ConfigBuilder().with_fields(base_url_override=local_klarna).build())

    with mock.patch.object(components.OneHostAdapter, "send", autospec=True, side_effect=components.OneHostAdapter.send) as one_host:
        first, second = requester._fetch_one("o1"), requester._fetch_one("o2")
        through_the_cdk(requester, "o3")

    assert one_host.call_count == 2
    assert [components.parsed_body(r)["order_id"] for r in (first, second)] == ["o1", "o2"]
    direct, _, cdk_request = _Orders.seen
    assert direct["path"] == "/ordermanagement/v1/orders/o1" and cdk_request["path"] == "/ordermanagement/v1/orders/o3"
    assert direct["headers"] == cdk_request["headers"]
    assert direct["headers"]["Authorization"].startswith("Basic ")


def test_over_a_socket_a_server_error_and_a_dropped_connection_are_each_retried_once(local_klarna):
    requester = order_requester(ConfigBuilder().with_fields(base_url_override=local_klarna).build())
    _Orders.script = ["503", "order", "close", "order"]

    with mock.patch("time.sleep"):
        answers = [requester._fetch_one("o1"), requester._fetch_one("o2")]

    assert [components.parsed_body(r)["order_id"] for r in answers] == ["o1", "o2"]
    assert [seen["path"].rsplit("/", 1)[-1] for seen in _Orders.seen] == ["o1", "o1", "o2", "o2"]


def test_one_host_adapter_looks_its_pool_up_once_and_uses_the_adapters_pools(local_klarna):
    session = requests.Session()
    adapter = session.get_adapter(local_klarna)
    one_host = components.OneHostAdapter(adapter)
    kwargs = {"stream": False, "timeout": (5, 5), "verify": True, "cert": None, "proxies": {}}

    def get(order_id):
        return one_host.send(requests.Request("GET", f"{local_klarna}/ordermanagement/v1/orders/{order_id}").prepare(), **kwargs)

    with mock.patch.object(requests.adapters.HTTPAdapter, "get_connection_with_tls_context", autospec=True,
                           side_effect=requests.adapters.HTTPAdapter.get_connection_with_tls_context) as lookups:
        assert [get(o).json()["order_id"] for o in ("o1", "o2", "o3")] == ["o1", "o2", "o3"]
    assert lookups.call_count == 1
    probe = requests.Request("GET", f"{local_klarna}/ordermanagement/v1/orders/o9").prepare()
    assert adapter.get_connection_with_tls_context(probe, True, proxies={}, cert=None) is one_host._pool  # the session's own pool


def test_a_connection_closed_without_an_answer_is_the_error_requests_raises(local_klarna):
    one_host = components.OneHostAdapter(requests.Session().get_adapter(local_klarna))
    _Orders.script = ["close", "close"]
    request = requests.Request("GET", f"{local_klarna}/ordermanagement/v1/orders/o1").prepare()

    with pytest.raises(requests.ConnectionError) as direct:
        one_host.send(request, stream=False, timeout=(5, 5), verify=True, cert=None, proxies={})
    with pytest.raises(requests.ConnectionError) as through_requests:
        requests.Session().send(request, timeout=(5, 5))
    assert type(direct.value) is type(through_requests.value)


def test_only_an_adapter_that_sends_as_requests_does_is_stood_in_for():
    class Tuned(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):  # (socket options, say): sends the same way
            super().init_poolmanager(*args, **kwargs)

    class Different(requests.adapters.HTTPAdapter):
        def send(self, request, **kwargs):
            raise AssertionError("not this one")

    assert components.OneHostAdapter.can_stand_for(requests.adapters.HTTPAdapter())
    assert components.OneHostAdapter.can_stand_for(Tuned())
    assert not components.OneHostAdapter.can_stand_for(Different())
    assert not components.OneHostAdapter.can_stand_for(requests.adapters.BaseAdapter())
