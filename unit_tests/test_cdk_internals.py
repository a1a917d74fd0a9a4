"""The public CDK behaviour source-klarna relies on (CDK 7.39.1), in one place, each with the test that
fails loudly when a CDK release changes it. Run these first after moving to a newer CDK.

| what we rely on | who relies on it |
|---|---|
| `GroupingPartitionRouter` drops an order id seen in an earlier batch, groups `extra_fields` into lists in the partition's order, and takes the parent's state as each batch is made | `order_batches` (orders, captures, refunds; OrderItemsRetriever zips ids and payout dates) |
| `RemoveFields` with a `condition` empties the whole record | why `RemoveFieldsUnlessConfigured` exists |
| `DpathExtractor` on a top-level key gives the rows `KlarnaItemsExtractor` gives | `items_extractor` (the faster lookup is the same rows) |
| `HttpRequester.get_url_base`/`get_path`, `authenticator`, `error_handler`; `DefaultErrorHandler.interpret_response`, `backoff_time(response, attempt_count=)`, `max_retries` | `OrderFetcher` (its own session, the requester's URL, auth and judgement) |
| the reference resolver resolves a string value `"#/definitions/..."` | the authenticator's `probe_url_base`, `rejected_message`, `not_found_message` |
| `StateMigration.should_migrate` is called with the stream's saved state | `UsableState`, `NestedParentStateMigration` |
| the factory passes `requester`, `record_selector` and `partition_router` to a `CustomRetriever` | `OrderItemsRetriever` (the manifest's `order_answers`) |
| the factory imports `source_declarative_manifest.components.<Class>` from `sys.modules` | every class name of the manifest |
| `HttpClient` signs every attempt through the authenticator and tells a `ResponseAwareAuthenticator` every answer | `PacedBasicHttpAuthenticator` (pacing) |
"""

from __future__ import annotations

import copy
from dataclasses import InitVar, dataclass
import inspect
import logging
from typing import Any, ClassVar, Dict, Iterable, List, Mapping, Optional

import orjson
import requests

from airbyte_cdk.models import SyncMode
from airbyte_cdk.sources.declarative.extractors import DpathExtractor
from airbyte_cdk.sources.declarative.parsers.manifest_reference_resolver import ManifestReferenceResolver
from airbyte_cdk.sources.declarative.parsers.model_to_component_factory import ModelToComponentFactory
from airbyte_cdk.sources.declarative.partition_routers import GroupingPartitionRouter
from airbyte_cdk.sources.declarative.partition_routers.partition_router import PartitionRouter
from airbyte_cdk.sources.declarative.requesters.error_handlers import DefaultErrorHandler, HttpResponseFilter
from airbyte_cdk.sources.declarative.requesters.http_requester import HttpRequester
from airbyte_cdk.sources.declarative.transformations import RemoveFields
from airbyte_cdk.sources.streams.http.error_handlers import HttpStatusErrorHandler
from airbyte_cdk.sources.streams.http.error_handlers.response_models import ResponseAction
from airbyte_cdk.sources.streams.http.http_client import HttpClient
from airbyte_cdk.sources.types import Config, StreamSlice

import components
from unit_tests.manifest_parts import order_requester, resolved_manifest, stream
from unit_tests.mock_server import response_builder as rb
from unit_tests.mock_server.config import ConfigBuilder
from unit_tests.mock_server.klarna_mock import serve_account
from unit_tests.mock_server.reader import read_streams, state_for


# --------------------------------------------------------------------------- GroupingPartitionRouter


class Transactions(PartitionRouter):
    """A parent router yielding one slice per transaction (order id, payout date), its state moving on
    with every slice: {"read": <slices so far>}."""

    def __init__(self, rows: List[tuple]) -> None:
        self._rows, self._read = rows, 0

    def stream_slices(self) -> Iterable[StreamSlice]:
        for order_id, payout_date in self._rows:
            self._read += 1
            yield StreamSlice(partition={"order_id": order_id, "parent_slice": {}}, cursor_slice={}, extra_fields={"payout_date": payout_date})

    def get_stream_state(self) -> Optional[Mapping[str, Any]]:
        return {"transactions": {"read": self._read}}

    def get_request_params(self, **kwargs: Any) -> Mapping[str, Any]:
        return {}

    get_request_headers = get_request_body_data = get_request_body_json = get_request_params


def test_grouping_dedups_across_batches_groups_extra_fields_and_snapshots_the_parent_state_per_batch():
    rows = [("o1", "d1"), ("o2", "d2"), ("o1", "d3"), ("o3", "d4"), ("o2", "d5"), ("o4", "d6"), ("o5", "d7")]
    router = GroupingPartitionRouter(group_size=2, underlying_partition_router=Transactions(rows), config={}, deduplicate=True)

    batches, states = [], []
    for batch in router.stream_slices():
        batches.append((batch.partition["order_id"], batch.extra_fields["payout_date"]))
        states.append(router.get_stream_state())

    # o1 and o2 again in later batches are dropped; each id keeps the payout date it came with first.
    assert batches == [(["o1", "o2"], ["d1", "d2"]), (["o3", "o4"], ["d4", "d6"]), (["o5"], ["d7"])]
    # The parent state each batch carries is the one from when the batch was made.
    assert states == [{"transactions": {"read": 2}}, {"transactions": {"read": 6}}, {"transactions": {"read": 7}}]


# --------------------------------------------------------------------------- RemoveFields' condition


def test_remove_fields_with_a_condition_empties_the_whole_record():
    record = {"order_id": "o1", "billing_address": {"city": "x"}, "order_amount": 100}

    RemoveFields(field_pointers=[["billing_address"]], condition="{{ not config.get('include_personal_data') }}", parameters={}).transform(
        record, config={}
    )

    # Not just billing_address: RemoveFieldsUnlessConfigured exists because of this.
    assert record.get("order_id") is None and record.get("order_amount") is None


def test_remove_fields_without_a_condition_removes_the_field_only():
    record = {"order_id": "o1", "billing_address": {"city": "x"}}

    RemoveFields(field_pointers=[["billing_address"]], parameters={}).transform(record, config={})

    assert record == {"order_id": "o1"}


# --------------------------------------------------------------------------- extractors


def _page(body: Any) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response._content = orjson.dumps(body)
    return response


def test_dpath_extractor_and_klarna_items_extractor_give_the_same_rows():
    body = rb.page("transactions", [rb.transaction("A") for _ in range(3)])

    stock = list(DpathExtractor(field_path=["transactions"], config={}, parameters={}).extract_records(_page(body)))
    ours = list(components.KlarnaItemsExtractor(config={}, parameters={"items_field": "transactions"}).extract_records(_page(body)))

    assert stock == ours == body["transactions"]


# --------------------------------------------------------------------------- what OrderFetcher calls


def test_the_requester_and_error_handler_have_what_order_fetcher_calls(requests_mock):
    requests_mock.get("https://api.klarna.com/settlements/v1/payouts?size=1", json=rb.page("payouts", []))
    requester = order_requester(ConfigBuilder().build())

    assert isinstance(requester, HttpRequester)
    assert requester.get_url_base(stream_state=None, stream_slice=None, next_page_token=None).rstrip("/") == "https://api.klarna.com"
    path = requester.get_path(stream_state=None, stream_slice=StreamSlice(partition={"order_id": "ORDERID"}, cursor_slice={}), next_page_token=None)
    assert path.endswith("ordermanagement/v1/orders/ORDERID")
    assert isinstance(requester.authenticator, components.PacedBasicHttpAuthenticator)
    handler = requester.error_handler
    assert isinstance(handler, DefaultErrorHandler) and handler.max_retries == 6
    assert "attempt_count" in inspect.signature(handler.backoff_time).parameters
    gone = requests.Response()
    gone.status_code, gone._content, gone.url = 404, orjson.dumps(rb.no_such_order("o1")), "https://api.klarna.com/ordermanagement/v1/orders/o1"
    assert handler.interpret_response(gone).response_action == ResponseAction.IGNORE
    assert handler.interpret_response(requests.exceptions.ConnectionError("reset")).response_action == ResponseAction.RETRY
    throttled = requests.Response()
    throttled.status_code, throttled._content, throttled.headers["Retry-After"] = 429, b"{}", "7"
    assert handler.backoff_time(throttled, attempt_count=1) == 7


# --------------------------------------------------------------------------- references and migrations


def test_the_reference_resolver_resolves_a_string_that_is_a_reference():
    manifest = {"definitions": {"url_base": "https://x", "messages": {"rejected": "no"}}, "auth": {"probe": "#/definitions/url_base", "message": "#/definitions/messages/rejected"}}

    resolved = ManifestReferenceResolver().preprocess_manifest(copy.deepcopy(manifest))

    assert resolved["auth"] == {"probe": "https://x", "message": "no"}


@dataclass
class RecordingMigration(components.StateMigration):
    config: Optional[Config] = None
    parameters: InitVar[Mapping[str, Any]] = None
    seen: ClassVar[List[Mapping[str, Any]]] = []

    def should_migrate(self, stream_state: Mapping[str, Any]) -> bool:
        RecordingMigration.seen.append(copy.deepcopy(dict(stream_state)))
        return False

    def migrate(self, stream_state: Mapping[str, Any]) -> Mapping[str, Any]:
        return stream_state


def test_a_state_migration_is_asked_about_the_streams_saved_state(requests_mock, monkeypatch):
    klarna = serve_account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {}, [])
    klarna.serve_probe()
    RecordingMigration.seen = []
    monkeypatch.setattr(components, "UsableState", RecordingMigration, raising=True)
    saved = {"payout_date": "2024-02-01T06:00:00Z"}

    read_streams(ConfigBuilder().build(), {"payouts": SyncMode.incremental}, state=state_for({"payouts": saved}))

    assert saved in RecordingMigration.seen


# --------------------------------------------------------------------------- the factory


def test_the_factory_gives_a_custom_retriever_its_requester_and_record_selector_and_slices_by_its_partition_router(requests_mock, monkeypatch):
    klarna = serve_account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": rb.transactions_naming("A", "o1", "o2", "o1")}, [rb.order("o1"), rb.order("o2")])
    klarna.serve_probe()
    built: Dict[str, Any] = {}
    original = components.OrderItemsRetriever.__post_init__

    def recording(self, parameters):
        built.update(requester=self.requester, record_selector=self.record_selector)
        original(self, parameters)

    monkeypatch.setattr(components.OrderItemsRetriever, "__post_init__", recording)

    orders = stream("orders", ConfigBuilder().build())
    partitions = list(orders.generate_partitions())

    assert isinstance(built["requester"], HttpRequester)
    assert built["requester"].get_path(stream_state=None, stream_slice=StreamSlice(partition={"order_id": "X"}, cursor_slice={}), next_page_token=None).endswith("orders/X")
    # The stream's transformations reach the custom retriever's record selector.
    assert [type(t).__name__ for t in built["record_selector"].transformations] == ["RemoveFieldsUnlessConfigured"]
    # The retriever's partition_router slices the stream: one batch of the distinct order ids.
    assert [p.to_slice().partition["order_id"] for p in partitions] == [["o1", "o2"]]
    assert [p.to_slice().extra_fields["payout_date"] for p in partitions] == [["2024-02-01T06:00:00Z"] * 2]


def test_the_manifests_component_names_resolve_to_the_registered_module():
    resolve = ModelToComponentFactory._get_class_from_fully_qualified_class_name

    assert resolve("source_declarative_manifest.components.KlarnaErrorHandler") is components.KlarnaErrorHandler
    assert resolve("source_declarative_manifest.components.OrderItemsRetriever") is components.OrderItemsRetriever


# --------------------------------------------------------------------------- the HTTP client and the authenticator


class CountingAuthenticator(components.PacedBasicHttpAuthenticator):
    def __post_init__(self, parameters):
        super().__post_init__(parameters)
        self.signed, self.answers = 0, []

    def __call__(self, request):
        self.signed += 1
        return super().__call__(request)

    def update_from_response(self, request, response):
        self.answers.append(response.status_code)
        super().update_from_response(request, response)


def test_the_http_client_signs_every_attempt_and_tells_the_authenticator_every_answer(requests_mock, monkeypatch):
    requests_mock.get("https://api.klarna.com/x", [{"status_code": 503}, {"status_code": 200, "json": {}}])
    authenticator = CountingAuthenticator(username="u", password="p", config={}, parameters={})  # no config: no probe
    client = HttpClient(
        name="probe", logger=logging.getLogger("test"), authenticator=authenticator,
        error_handler=HttpStatusErrorHandler(logger=logging.getLogger("test"), max_retries=2),
    )
    monkeypatch.setattr("time.sleep", lambda seconds: None)

    client.send_request("GET", "https://api.klarna.com/x", request_kwargs={})

    assert authenticator.signed == 2
    assert authenticator.answers == [503, 200]
