"""OrderFetcher (each order requested once per sync, whichever of orders, captures and refunds asks
first; single-flight; answers kept until every reader has read them, spilled past a memory budget) and
OrderItemsRetriever (the records of a batch of order ids), against a local HTTP server and the
manifest's own order requester."""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import unquote
from unittest import mock

import orjson
import pytest

from airbyte_cdk.models import FailureType
from airbyte_cdk.sources.declarative.extractors import DpathExtractor, RecordSelector
from airbyte_cdk.sources.types import StreamSlice
from airbyte_cdk.sources.utils.transform import TransformConfig, TypeTransformer
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

import components
from components import ORDER_FETCHERS, OrderFetcher, OrderItemsRetriever, PerSync, SpillingAnswers
from unit_tests.manifest_parts import LocalKlarna, json_answer, order_requester
from unit_tests.mock_server import response_builder as rb

ORDERS = "/ordermanagement/v1/orders/"
WAIT = 10  # seconds: the bound of every wait in these tests


def _config(server: LocalKlarna, **fields: Any) -> Dict[str, Any]:
    return {"username": "K1_user", "password": "pw-fetcher", "base_url_override": server.url, **fields}


class Account:
    """The orders a local Klarna serves (404 NO_SUCH_ORDER for any other), the probe's empty page,
    per-order overrides (`special`: path -> list of answers, the last repeated) and gates (`hold`:
    order id -> an Event the answer waits for)."""

    def __init__(self, *orders: Dict[str, Any]) -> None:
        self.orders = {o["order_id"]: o for o in orders}
        self.special: Dict[str, List[Tuple[int, bytes]]] = {}
        self.hold: Dict[str, threading.Event] = {}
        self.asked: Dict[str, threading.Event] = {}

    def __call__(self, path: str):
        if path.startswith("/settlements/v1/payouts"):
            return json_answer(200, orjson.dumps(rb.page("payouts", [])))
        order_id = unquote(path[len(ORDERS):])
        self.asked.setdefault(order_id, threading.Event()).set()
        if order_id in self.hold:
            assert self.hold[order_id].wait(WAIT), f"{order_id} was never released"
        if order_id in self.special:
            answers = self.special[order_id]
            status, body = answers.pop(0) if len(answers) > 1 else answers[0]
            return json_answer(status, body)
        if order_id in self.orders:
            return json_answer(200, orjson.dumps(self.orders[order_id]))
        return json_answer(404, orjson.dumps(rb.no_such_order(order_id)))

    def was_asked(self, order_id: str) -> threading.Event:
        return self.asked.setdefault(order_id, threading.Event())


@pytest.fixture
def klarna():
    servers: List[LocalKlarna] = []

    def start(account: Account) -> LocalKlarna:
        servers.append(LocalKlarna(account))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _fetcher(server: LocalKlarna, threads: int = 4, **fields: Any) -> OrderFetcher:
    return OrderFetcher(order_requester(_config(server, **fields)), threads=threads)


def _ids(answers) -> List[Optional[str]]:
    return [order["order_id"] if order else None for _, order in answers]


def _in_thread(target) -> Tuple[threading.Thread, Dict[str, Any]]:
    """Runs `target` in a thread; its result (or exception) lands in the returned dict."""
    outcome: Dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = target()
        except BaseException as error:  # handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


# --------------------------------------------------------------------------- OrderFetcher


def test_three_readers_one_after_another_cost_one_request_per_order(klarna):
    server = klarna(Account(rb.order("o1"), rb.order("o2")))
    fetcher = _fetcher(server)

    for reader in ("captures", "orders", "refunds"):
        assert _ids(fetcher.answers(["o1", "o2"], reader)) == ["o1", "o2"]

    assert sorted(server.asked(ORDERS)) == [ORDERS + "o1", ORDERS + "o2"]
    assert "o1" not in fetcher._kept and "o2" not in fetcher._kept  # read by all three: nothing kept
    # A fourth read (a stream read twice in one sync) asks Klarna again rather than answer nothing.
    assert _ids(fetcher.answers(["o1"], "orders")) == ["o1"]
    assert len(server.asked(ORDERS + "o1")) == 2


def test_three_readers_at_once_wait_for_the_one_request_under_way(klarna):
    account = Account(rb.order("o1"), rb.order("x1"), rb.order("x2"))
    account.hold["o1"] = threading.Event()
    server = klarna(account)
    fetcher = _fetcher(server)

    first, first_out = _in_thread(lambda: _ids(fetcher.answers(["o1"], "orders")))
    assert account.was_asked("o1").wait(WAIT)
    # Each later reader claims o1 (under way: it waits for it) before it asks for its own order, so
    # once x1 and x2 are asked for, all three wait on the one request for o1.
    second, second_out = _in_thread(lambda: _ids(fetcher.answers(["o1", "x1"], "captures")))
    third, third_out = _in_thread(lambda: _ids(fetcher.answers(["o1", "x2"], "refunds")))
    assert account.was_asked("x1").wait(WAIT) and account.was_asked("x2").wait(WAIT)
    account.hold["o1"].set()
    for thread in (first, second, third):
        thread.join(WAIT)

    assert first_out == {"result": ["o1"]}
    assert second_out == {"result": ["o1", "x1"]} and third_out == {"result": ["o1", "x2"]}
    assert server.asked(ORDERS + "o1") == [ORDERS + "o1"]


def test_a_failed_fetch_fails_every_reader_waiting_on_it_and_the_next_reader_asks_again(klarna):
    account = Account(rb.order("o1"), rb.order("x1"))
    account.special["o1"] = [(400, orjson.dumps(rb.error("BAD_VALUE", ["no"], "corr-400"))), (200, orjson.dumps(rb.order("o1")))]
    account.hold["o1"] = threading.Event()
    server = klarna(account)
    fetcher = _fetcher(server)

    first, first_out = _in_thread(lambda: _ids(fetcher.answers(["o1"], "orders")))
    assert account.was_asked("o1").wait(WAIT)
    second, second_out = _in_thread(lambda: _ids(fetcher.answers(["o1", "x1"], "captures")))
    assert account.was_asked("x1").wait(WAIT)
    # x1 answered while o1's request is out: Order Management answers, so o1's failure stops only o1 (SyncFailures).
    assert _ids(fetcher.answers(["x1"], "refunds")) == ["x1"]
    account.hold["o1"].set()
    first.join(WAIT)
    second.join(WAIT)

    for outcome in (first_out, second_out):
        assert isinstance(outcome.get("error"), AirbyteTracedException), outcome
        assert outcome["error"].failure_type == FailureType.config_error
        assert "corr-400" in outcome["error"].message
    assert first_out["error"] is second_out["error"]  # the one failure, handed to both
    # Forgotten: the next reader asks again, and gets the order.
    assert _ids(fetcher.answers(["o1"], "refunds")) == ["o1"]
    assert len(server.asked(ORDERS + "o1")) == 2


def test_an_order_klarna_no_longer_returns_is_none_with_a_warning_and_asked_for_once(klarna, caplog):
    server = klarna(Account())
    fetcher = _fetcher(server)

    with caplog.at_level(logging.WARNING):
        answers = [list(fetcher.answers(["gone"], reader)) for reader in ("orders", "captures", "refunds")]

    assert answers == [[("gone", None)]] * 3
    assert server.asked(ORDERS) == [ORDERS + "gone"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"Klarna no longer returns the order at {server.url}{ORDERS}gone (HTTP 404 NO_SUCH_ORDER" in warnings[0]


def test_a_server_error_is_retried_through_the_handlers_backoff_and_then_succeeds(klarna):
    account = Account(rb.order("o1"))
    account.special["o1"] = [(503, orjson.dumps(rb.error("DOWN"))), (500, orjson.dumps(rb.error("DOWN"))), (200, orjson.dumps(rb.order("o1")))]
    server = klarna(account)
    fetcher = _fetcher(server)

    with mock.patch.object(components.time, "sleep") as slept:
        assert _ids(fetcher.answers(["o1"], "orders")) == ["o1"]

    assert len(server.asked(ORDERS + "o1")) == 3
    # The manifest's backoff (no Retry-After: exponential, factor 1): a wait per retry, growing.
    waits = [call.args[0] for call in slept.call_args_list]
    assert len(waits) == 2 and 0 < waits[0] < waits[1]


def test_server_errors_past_the_handlers_retries_fail_naming_the_url(klarna):
    account = Account()
    account.special["o1"] = [(503, orjson.dumps(rb.error("DOWN", correlation_id="corr-503")))]
    server = klarna(account)
    fetcher = _fetcher(server)

    with mock.patch.object(components.time, "sleep"), pytest.raises(AirbyteTracedException) as raised:
        list(fetcher.answers(["o1"], "orders"))

    assert len(server.asked(ORDERS + "o1")) == 7  # the request and the manifest's six retries
    assert raised.value.failure_type == FailureType.transient_error
    assert f"{server.url}{ORDERS}o1" in raised.value.message and "corr-503" in raised.value.message


def test_rejected_credentials_on_an_order_fail_with_the_config_error_sentence(klarna):
    account = Account()
    account.special["o1"] = [(401, orjson.dumps(rb.error("UNAUTHORIZED")))]
    server = klarna(account)
    fetcher = _fetcher(server)

    with pytest.raises(AirbyteTracedException) as raised:
        list(fetcher.answers(["o1"], "orders"))

    assert raised.value.failure_type == FailureType.config_error
    assert raised.value.message.startswith(f"Klarna rejected the API credentials for the eu production environment (HTTP 401/403 from {server.url}{ORDERS}o1)")
    assert len(server.asked(ORDERS + "o1")) == 1  # no retry: the answer will not change


def test_the_order_id_is_url_quoted_into_the_path(klarna):
    odd = "a/b c?d#e%"
    server = klarna(Account(rb.order(odd)))

    answers = list(_fetcher(server).answers([odd], "orders"))

    # One path segment: a slash, a space, "?", "#" and "%" in an id cannot change the request.
    assert server.asked(ORDERS) == [ORDERS + "a%2Fb%20c%3Fd%23e%25"]
    assert _ids(answers) == [odd]


def test_requests_carry_basic_auth_and_go_through_the_syncs_pacer(klarna):
    seen: List[Optional[str]] = []
    server = klarna(Account(rb.order("o1")))
    config = _config(server)
    requester = order_requester(config)
    with mock.patch.object(requester.authenticator.pacer, "wait_turn", wraps=requester.authenticator.pacer.wait_turn) as waited:
        fetcher = OrderFetcher(requester, threads=2)
        original = fetcher._requests_session.send

        def recording_send(request, **kwargs):
            response = original(request, **kwargs)
            seen.append(response.request.headers.get("Authorization"))
            return response

        fetcher._requests_session.send = recording_send
        assert _ids(fetcher.answers(["o1"], "orders")) == ["o1"]

    assert seen == ["Basic SzFfdXNlcjpwdy1mZXRjaGVy"]  # base64("K1_user:pw-fetcher")
    assert waited.call_count == 1


def test_one_fetcher_per_sync_config():
    made: List[object] = []
    config, other = {}, {}

    first = ORDER_FETCHERS.of(config, lambda: made.append(object()) or made[-1])
    again = ORDER_FETCHERS.of(config, lambda: made.append(object()) or made[-1])
    another = ORDER_FETCHERS.of(other, lambda: made.append(object()) or made[-1])

    assert first is again is made[0] and another is made[1] and len(made) == 2


# --------------------------------------------------------------------------- SpillingAnswers


def test_answers_past_the_memory_budget_spill_to_a_file_and_come_back_intact():
    answers = SpillingAnswers(memory_bytes=5000)
    bodies = {f"o{i}": orjson.dumps(rb.order(f"o{i}")) for i in range(6)}  # ~4 KB each
    for order_id, body in bodies.items():
        answers.put(order_id, 200, body, readers=1)

    assert answers.spilled == 5  # all but the newest
    assert all(order_id in answers for order_id in bodies)
    for order_id, body in bodies.items():
        assert answers.take(order_id, 2, every_reader=3) == (200, body)
    assert not any(order_id in answers for order_id in bodies)  # read by every reader: dropped
    answers.close()


def test_an_answer_stays_until_every_reader_has_read_it():
    answers = SpillingAnswers()
    answers.put("o1", 200, b"{}", readers=1)

    assert answers.take("o1", 2, every_reader=7) == (200, b"{}")
    assert "o1" in answers
    assert answers.take("o1", 4, every_reader=7) == (200, b"{}")
    assert "o1" not in answers
    assert answers.take("o1", 4, every_reader=7) is None


def test_one_object_per_sync_config_and_the_oldest_sync_is_closed_past_capacity():
    closed: List[Any] = []

    class Thing:
        def close(self) -> None:
            closed.append(self)

    per_sync = PerSync(Thing, capacity=2)
    first, second, third = {}, {}, {}
    a = per_sync.of(first)

    assert per_sync.of(first) is a and per_sync.of(second) is not a
    per_sync.of(third)
    assert closed == [a]


# --------------------------------------------------------------------------- OrderItemsRetriever


def _selector(config: Dict[str, Any]) -> RecordSelector:
    return RecordSelector(
        extractor=DpathExtractor(field_path=[], config=config, parameters={}),
        config=config,
        parameters={},
        schema_normalization=TypeTransformer(TransformConfig.NoTransform),
        record_filter=None,
        transformations=[],
    )


def _batch(*order_ids: str) -> StreamSlice:
    return StreamSlice(
        partition={"order_id": list(order_ids)},
        cursor_slice={},
        extra_fields={"payout_date": [f"2024-02-0{i + 1}T06:00:00Z" for i in range(len(order_ids))]},
    )


def _retriever(config: Dict[str, Any], items_field: str) -> OrderItemsRetriever:
    return OrderItemsRetriever(requester=order_requester(config), record_selector=_selector(config), config=config, parameters={}, items_field=items_field, threads=2)


def test_a_batch_of_orders_gives_each_order_with_its_payout_date_and_a_deletion_record_for_a_gone_one(klarna):
    server = klarna(Account(rb.order("o1"), rb.order("o2")))
    config = _config(server)

    records = list(_retriever(config, "orders").read_records({}, _batch("o1", "gone", "o2")))

    assert [(r["order_id"], r["payout_date"]) for r in records] == [("o1", "2024-02-01T06:00:00Z"), ("gone", "2024-02-02T06:00:00Z"), ("o2", "2024-02-03T06:00:00Z")]
    assert [r.get("_ab_cdc_deleted_at") is not None for r in records] == [False, True, False]
    assert set(records[1]) == {"order_id", "payout_date", "_ab_cdc_deleted_at"}  # Klarna's fields: none left
    # captures and refunds of a gone order: none (their ids are unknown)
    assert [r["order_id"] for r in _retriever(config, "captures").read_records({}, _batch("gone"))] == []


def test_captures_and_refunds_are_the_embedded_items_with_their_order_id_and_payout_date(klarna):
    orders = [
        rb.order("o1", captures=[rb.capture("c1"), rb.capture("c2")], refunds=[rb.refund("r1")]),
        rb.order("o2", captures=[], refunds=None) | {"refunds": None},
    ]
    server = klarna(Account(*orders))
    config = _config(server)

    captures = list(_retriever(config, "captures").read_records({}, _batch("o1", "o2")))
    refunds = list(_retriever(config, "refunds").read_records({}, _batch("o1", "o2")))
    order_rows = list(_retriever(config, "orders").read_records({}, _batch("o1", "o2")))

    assert [(c["capture_id"], c["order_id"], c["payout_date"]) for c in captures] == [
        ("c1", "o1", "2024-02-01T06:00:00Z"),
        ("c2", "o1", "2024-02-01T06:00:00Z"),
    ]
    assert [(r["refund_id"], r["order_id"], r["payout_date"]) for r in refunds] == [("r1", "o1", "2024-02-01T06:00:00Z")]
    assert [r["order_id"] for r in order_rows] == ["o1", "o2"]
    assert sorted(server.asked(ORDERS)) == [ORDERS + "o1", ORDERS + "o2"]  # one request per order for the three


def test_a_slice_with_one_order_id_and_no_slice_at_all(klarna):
    server = klarna(Account(rb.order("o1")))
    config = _config(server)
    retriever = _retriever(config, "orders")

    single = StreamSlice(partition={"order_id": "o1"}, cursor_slice={}, extra_fields={"payout_date": "2024-02-01T06:00:00Z"})

    assert [(r["order_id"], r["payout_date"]) for r in retriever.read_records({}, single)] == [("o1", "2024-02-01T06:00:00Z")]
    assert list(retriever.read_records({}, None)) == []


@pytest.mark.parametrize("include_personal_data, kept", [(False, False), (True, True)])
def test_the_factory_built_stream_removes_personal_data_through_its_transformations(klarna, include_personal_data, kept):
    from unit_tests.manifest_parts import stream

    order = rb.order("o1", captures=[rb.capture("c1")])
    payout = rb.payout("A", "2024-02-01T06:00:00Z")
    transactions = rb.transactions_naming("A", "o1")

    def answer(path: str):
        if path.startswith("/settlements/v1/payouts"):
            rows = [payout] if "start_date" in path else []
            return json_answer(200, orjson.dumps(rb.page("payouts", rows)))
        if path.startswith("/settlements/v1/transactions"):
            return json_answer(200, orjson.dumps(rb.page("transactions", transactions)))
        return json_answer(200, orjson.dumps(order))

    server = LocalKlarna(answer)
    try:
        config = {**_config(server), "start_date": "2024-01-01T00:00:00Z", "include_personal_data": include_personal_data}
        for name, personal in (("orders", ("billing_address", "shipping_address", "customer")), ("captures", ("billing_address", "shipping_address"))):
            built = stream(name, config)
            records = [record.data for partition in built.generate_partitions() for record in partition.read()]
            assert len(records) == 1, name
            for field_name in personal:
                assert (field_name in records[0]) is kept, (name, field_name)
            assert records[0]["payout_date"] == "2024-02-01T06:00:00Z"
    finally:
        server.close()
