"""Every CDK internal source-klarna relies on (CDK 7.39.1), in one place, each with the test that fails
loudly when a CDK release changes it. Run these first after moving to a newer CDK (README, Development).

| what we rely on | who relies on it | guarded by |
|---|---|---|
| `HttpClient._send` re-applies the session's auth on every attempt and calls `update_from_response` of a `ResponseAwareAuthenticator` | `PacedBasicHttpAuthenticator` (pacing, failures that will not change) | `test_the_http_client_asks_the_authenticator_before_every_attempt_and_tells_it_every_answer` |
| `HttpRequester._http_client` is an `HttpClient` with `_session` (its `auth` the requester's authenticator), `_logger` and `_request_timeout`; `HttpRequester._get_url` and `_request_headers`/`_params`/`_body_json`/`_body_data`; `HttpClient.send_request` sends with the session's environment settings and the timeout, and `HttpClient._send` through `self._session.send` | `DirectOrderRequests` (orders without the client's per-request work; anything else replayed into the client) | `test_direct_order_requests.py`: `test_the_manifests_order_requester_gets_direct_requests`, `test_a_direct_request_is_the_request_the_cdks_client_sends`, `test_what_is_not_an_order_is_the_cdks_first_attempt_and_its_retry_the_second_request` |
| a CDK cursor object has `observe` and `cursor_field.cursor_field_key`, on `DefaultStream.cursor` | `cdk_patches.observe_each_cursor_value_once` | `test_the_streams_cursors_have_what_the_observe_patch_replaces` |
| a `ParentStreamConfig.stream` is a `DefaultStream`: `generate_partitions()`, each partition's `read()`, and its cursor's `observe`, `close_partition`, `ensure_at_least_one_state_emitted` | `OrderIdBatches` (reads the transactions as the CDK's SubstreamPartitionRouter does) | `test_a_parent_stream_is_read_the_way_order_id_batches_reads_it` |
| a `DeclarativePartition` keeps a test read's record limit in `_max_records_limit` (None in a sync) | `OrderIdBatches._share_key` (a Connector Builder test read counts its parent's records, so it reads them itself) | `test_a_partition_keeps_a_test_reads_record_limit_where_order_id_batches_looks_for_it` |
| the CDK keeps extra keys in a sequential cursor's state, and commits a parent state only after every earlier partition closed | `UnreadPayoutsPartitionRouter` (`payouts_read`) | `mock_server/test_transactions.py` (the list in the state), `integration_tests/test_resilience_faults.py` (a failed payout is not listed) |
| the CDK builds the order streams' parent state as `parent_state[<parent>]` before routers run | `NestedParentStateMigration` | `integration_tests/test_orders_exact.py` (a 1.1.0 state goes on) |
| the factory imports a `class_name` of `source_declarative_manifest.components.<Class>` from `sys.modules` | the manifest's names; `source_klarna/__init__.py` registers the module | `test_the_manifests_component_names_resolve_to_this_packages_classes` |
| `AirbyteEntrypoint.set_up_secret_filter` replaces the secret list with the spec's secrets | `run.KlarnaEntrypoint` (adds the Basic token back) | `test_the_entrypoint_replaces_the_secret_list_and_ours_adds_the_token_back` |
| the CDK's closing error of a read whose streams failed starts `During the sync, the following streams did not sync successfully: ` | `run.launch` (leaves it out after one error per cause) | `test_the_cdks_closing_error_starts_as_the_entrypoint_expects` |
| a 429 that outlasts every retry is reported as `API rate limit exceeded.`, the handler's message in `Rate limit retry budget exhausted. Last exception: ...` | `error_grouping` (reports the handler's message) | `test_the_cdks_rate_limit_exhaustion_message_is_the_one_error_grouping_rewords` |
"""

import inspect
import logging

import requests

from airbyte_cdk.entrypoint import AirbyteEntrypoint
from airbyte_cdk.exception_handler import generate_failed_streams_error_message
from airbyte_cdk.sources.declarative.parsers.model_to_component_factory import ModelToComponentFactory
from airbyte_cdk.sources.declarative.stream_slicers.declarative_partition_generator import DeclarativePartition
from airbyte_cdk.sources.streams.http.error_handlers import HttpStatusErrorHandler
from airbyte_cdk.sources.streams.http.http_client import HttpClient
from airbyte_cdk.utils.airbyte_secrets_utils import filter_secrets

from source_klarna import SourceKlarna, components
from source_klarna.cdk_patches import ObserveEachCursorValueOnce
from source_klarna.error_grouping import _CDK_RATE_LIMIT_INTERNAL, _CDK_RATE_LIMIT_MESSAGE
from source_klarna.run import FAILED_STREAMS, KlarnaEntrypoint
from unit_tests.mock_server import response_builder as rb
from unit_tests.mock_server.config import ConfigBuilder
from unit_tests.mock_server.klarna_mock import KlarnaMock


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


def test_the_http_client_asks_the_authenticator_before_every_attempt_and_tells_it_every_answer(requests_mock):
    requests_mock.get("https://api.klarna.com/x", [{"status_code": 503}, {"status_code": 200, "json": {}}])
    config = {"username": "K1_user", "password": "pw"}
    authenticator = CountingAuthenticator(username="u", password="p", config=config, parameters={})
    client = HttpClient(
        name="probe", logger=logging.getLogger("test"), authenticator=authenticator,
        error_handler=HttpStatusErrorHandler(logger=logging.getLogger("test"), max_retries=2),
    )
    client._backoff_time = lambda *args, **kwargs: 0  # no wait between the attempts (a test-only shortcut)

    client.send_request("GET", "https://api.klarna.com/x", request_kwargs={})

    assert authenticator.signed == 2
    assert authenticator.answers == [503, 200]


def test_the_streams_cursors_have_what_the_observe_patch_replaces():
    config = ConfigBuilder().build()
    streams = {stream.name: stream for stream in SourceKlarna(config=config).streams(config)}

    for name in ("payouts", "transactions", "payout_summaries", "orders"):
        cursor = streams[name].cursor
        assert isinstance(cursor.observe, ObserveEachCursorValueOnce), name
        assert isinstance(cursor.cursor_field.cursor_field_key, str), name


def test_a_parent_stream_is_read_the_way_order_id_batches_reads_it(requests_mock):
    klarna = KlarnaMock(requests_mock)
    klarna.serve_payouts([rb.payout("A", "2024-02-01T06:00:00Z")])
    klarna.serve_transactions({"A": [rb.transaction("A", order_id="o1")]})
    config = ConfigBuilder().build()
    transactions = {stream.name: stream for stream in SourceKlarna(config=config).streams(config)}["transactions"]

    partitions = list(transactions.generate_partitions())
    records = [record for partition in partitions for record in partition.read()]
    for method in ("observe", "close_partition", "ensure_at_least_one_state_emitted"):
        assert callable(getattr(transactions.cursor, method)), method

    assert [record.data["order_id"] for record in records] == ["o1"]
    assert records[0].associated_slice.extra_fields.get("payout_date") == "2024-02-01T06:00:00Z"


def test_a_partition_keeps_a_test_reads_record_limit_where_order_id_batches_looks_for_it(requests_mock):
    klarna = KlarnaMock(requests_mock)
    klarna.serve_payouts([rb.payout("A", "2024-02-01T06:00:00Z")])
    config = ConfigBuilder().build()
    transactions = {stream.name: stream for stream in SourceKlarna(config=config).streams(config)}["transactions"]

    (partition,) = transactions.generate_partitions()

    assert partition._max_records_limit is None
    assert "self._max_records_limit = max_records_limit" in inspect.getsource(DeclarativePartition.__init__)


def test_the_manifests_component_names_resolve_to_this_packages_classes():
    resolve = ModelToComponentFactory._get_class_from_fully_qualified_class_name

    assert resolve("source_declarative_manifest.components.KlarnaErrorHandler") is components.KlarnaErrorHandler
    assert resolve("source_declarative_manifest.components.OrderBatchRequester") is components.OrderBatchRequester


def test_the_entrypoint_replaces_the_secret_list_and_ours_adds_the_token_back():
    config = {"username": "K1_user", "password": "pw-secret"}
    token = "SzFfdXNlcjpwdy1zZWNyZXQ="  # base64("K1_user:pw-secret")
    spec = {"properties": {"password": {"type": "string", "airbyte_secret": True}}}

    AirbyteEntrypoint.set_up_secret_filter(config, spec)
    assert filter_secrets(f"pw-secret {token}") == f"**** {token}"  # the CDK masks the password alone
    KlarnaEntrypoint.set_up_secret_filter(config, spec)
    assert filter_secrets(f"pw-secret {token}") == "**** ****"


def test_the_cdks_closing_error_starts_as_the_entrypoint_expects():
    message = generate_failed_streams_error_message({"payouts": [ValueError("x")]})

    assert message.startswith(FAILED_STREAMS)


def test_the_cdks_rate_limit_exhaustion_message_is_the_one_error_grouping_rewords():
    source = inspect.getsource(HttpClient._send_with_retry)

    assert f'message="{_CDK_RATE_LIMIT_MESSAGE}"' in source
    assert f'internal_message=f"{_CDK_RATE_LIMIT_INTERNAL}' in source


def test_a_request_the_authenticator_signs_carries_basic_auth():
    """(The pacing authenticator stays a Basic authenticator for every CDK code path that asks it.)"""
    authenticator = components.PacedBasicHttpAuthenticator(username="u", password="p", config={"username": "u", "password": "p"}, parameters={})

    signed = authenticator(requests.Request("GET", "https://api.klarna.com/x").prepare())

    assert authenticator.get_auth_header() == {"Authorization": "Basic dTpw"} == {"Authorization": signed.headers["Authorization"]}
