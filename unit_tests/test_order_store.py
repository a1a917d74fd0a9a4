"""The order store behind orders, captures and refunds: each order fetched once per sync by whichever
stream asks first, kept until all three have read it, spilled to disk past a memory budget; and the
batch requester and the read-ahead limit that use it."""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional

import orjson
import pytest
import requests

from airbyte_cdk.sources.declarative.requesters.error_handlers import DefaultErrorHandler, HttpResponseFilter
from airbyte_cdk.sources.declarative.requesters.http_requester import HttpRequester
from airbyte_cdk.sources.types import StreamSlice
from source_klarna.components import (
    ORDER_STORES,
    BatchesAhead,
    OrderBatchRequester,
    OrderStore,
    PerSync,
    SpillingAnswers,
)
from unit_tests.mock_server import response_builder as rb

ORDERS_URL = "https://api.klarna.com/ordermanagement/v1/orders/"


def _answer(status: int, body: Any) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = orjson.dumps(body)
    response.url = ORDERS_URL + str(body.get("order_id") if isinstance(body, dict) else "x")
    return response


class CountingFetch:
    """fetch(order_id) answering each order from `orders` (404 NO_SUCH_ORDER otherwise), counting calls."""

    def __init__(self, *orders: Dict[str, Any]) -> None:
        self.orders = {o["order_id"]: o for o in orders}
        self.calls: List[str] = []

    def __call__(self, order_id: str) -> requests.Response:
        self.calls.append(order_id)
        if order_id in self.orders:
            return _answer(200, self.orders[order_id])
        return _answer(404, rb.no_such_order(order_id))


def _ids(answers) -> List[Optional[str]]:
    return [order["order_id"] if order else None for _, order in answers]


# --------------------------------------------------------------------------- OrderStore


def test_each_order_is_fetched_once_for_the_three_readers_and_then_dropped():
    store, fetch = OrderStore(), CountingFetch(rb.order("o1"), rb.order("o2"))

    for reader in ("captures", "orders", "refunds"):
        assert _ids(store.answers(["o1", "o2"], reader, fetch)) == ["o1", "o2"]

    assert fetch.calls == ["o1", "o2"]
    assert "o1" not in store.kept and "o2" not in store.kept  # read by all three: nothing left
    # A fourth read (a stream read twice in one sync) asks Klarna again rather than answer nothing.
    assert _ids(store.answers(["o1"], "orders", fetch)) == ["o1"]
    assert fetch.calls == ["o1", "o2", "o1"]


def test_an_order_klarna_no_longer_returns_is_kept_as_gone_and_not_asked_for_again():
    store, fetch = OrderStore(), CountingFetch()

    assert [order for _, order in store.answers(["gone"], "orders", fetch)] == [None]
    assert [order for _, order in store.answers(["gone"], "captures", fetch)] == [None]

    assert fetch.calls == ["gone"]


def test_an_answer_that_is_not_an_order_is_not_kept_and_the_next_reader_asks_again():
    store = OrderStore()
    calls: List[str] = []

    def not_found_without_code(order_id: str) -> requests.Response:
        calls.append(order_id)
        return _answer(404, rb.error("NOT_FOUND"))

    store_reads = [list(store.answers(["o1"], reader, not_found_without_code)) for reader in ("orders", "captures")]

    assert store_reads == [[("o1", None)], [("o1", None)]]
    assert calls == ["o1", "o1"]


def test_a_failed_fetch_is_forgotten_so_the_next_reader_fetches_the_order():
    store, fetch = OrderStore(), CountingFetch(rb.order("o1"))

    def failing(order_id: str) -> requests.Response:
        raise requests.ConnectionError("reset")

    with pytest.raises(requests.ConnectionError):
        list(store.answers(["o1"], "orders", failing))
    assert _ids(store.answers(["o1"], "captures", fetch)) == ["o1"]
    assert fetch.calls == ["o1"]


def test_a_reader_that_meets_an_order_being_fetched_takes_the_others_first_then_waits_for_it():
    store = OrderStore()
    started, release = threading.Event(), threading.Event()
    slow_calls: List[str] = []

    def slow(order_id: str) -> requests.Response:
        slow_calls.append(order_id)
        started.set()
        assert release.wait(10)
        return _answer(200, rb.order(order_id))

    first = threading.Thread(target=lambda: list(store.answers(["o1"], "orders", slow)))
    first.start()
    assert started.wait(10)
    fetch = CountingFetch(rb.order("o1"), rb.order("o2"), rb.order("o3"))
    seen: List[str] = []

    def second_reader() -> None:
        for order_id, _ in store.answers(["o1", "o2", "o3"], "captures", fetch):
            seen.append(order_id)
            if order_id == "o3":
                release.set()  # o1 is still being fetched by the other reader: it comes last

    second = threading.Thread(target=second_reader)
    second.start()
    second.join(10)
    first.join(10)

    assert not first.is_alive() and not second.is_alive()
    assert seen == ["o2", "o3", "o1"]
    assert slow_calls == ["o1"] and fetch.calls == ["o2", "o3"]  # o1 requested once in all


def test_prefetch_fetches_an_order_once_for_the_readers_to_come():
    store, fetch = OrderStore(), CountingFetch(rb.order("o1"))

    assert store.prefetch("o1", fetch) is True
    assert store.prefetch("o1", fetch) is False  # kept already
    for reader in ("orders", "captures", "refunds"):
        assert _ids(store.answers(["o1"], reader, fetch)) == ["o1"]

    assert fetch.calls == ["o1"]
    assert "o1" not in store.kept


# --------------------------------------------------------------------------- SpillingAnswers


def test_answers_past_the_memory_budget_spill_to_the_database_and_come_back_intact():
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


# --------------------------------------------------------------------------- BatchesAhead


def test_a_generator_waits_at_the_limit_until_a_batch_is_read_and_prefetches_meanwhile():
    ahead = BatchesAhead(limit=2, patience_s=10)
    ahead.wait_to_make("orders")
    ahead.wait_to_make("orders")
    ahead.reading("orders")
    prefetched: List[int] = []

    def prefetch() -> bool:
        prefetched.append(1)
        if len(prefetched) == 3:
            ahead.read("orders")  # a reader finishes a batch while the generator prefetches
        return len(prefetched) <= 3

    made = threading.Thread(target=lambda: ahead.wait_to_make("orders", prefetch))
    made.start()
    made.join(10)

    assert not made.is_alive()
    assert len(prefetched) == 3
    ahead.wait_to_make("captures")  # each stream counts its own batches


def test_a_generator_does_not_wait_while_no_batch_of_its_stream_is_being_read():
    ahead = BatchesAhead(limit=1, patience_s=10)

    for _ in range(5):  # one worker: the batches are read only once the generator is done
        ahead.wait_to_make("orders")


def test_a_generator_whose_reads_stall_stops_waiting_for_the_rest_of_the_sync():
    ahead = BatchesAhead(limit=1, patience_s=0.05)
    ahead.wait_to_make("orders")
    ahead.reading("orders")

    ahead.wait_to_make("orders")  # returns after patience_s instead of blocking forever
    ahead.wait_to_make("orders")  # and does not wait again


# --------------------------------------------------------------------------- PerSync


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


# --------------------------------------------------------------------------- OrderBatchRequester


def _order_requester(config: Dict[str, Any], path: str = "/ordermanagement/v1/orders/{{ stream_slice.order_id }}") -> HttpRequester:
    """The manifest's order requester in short: a 404 skips the order."""
    gone = HttpResponseFilter(config=config, parameters={}, action="IGNORE", http_codes={404})
    handler = DefaultErrorHandler(config=config, parameters={}, response_filters=[gone])
    return HttpRequester(name="orders", url_base="https://api.klarna.com", path=path, config=config, parameters={}, error_handler=handler)


def _batch_requester(config: Dict[str, Any], items_field: str) -> OrderBatchRequester:
    return OrderBatchRequester(requester=_order_requester(config), config=config, items_field=items_field)


def _batch(*order_ids: str) -> StreamSlice:
    return StreamSlice(
        partition={"order_id": list(order_ids)},
        cursor_slice={},
        extra_fields={"payout_date": [f"2024-02-0{i + 1}T06:00:00Z" for i in range(len(order_ids))]},
    )


def _serve(requests_mock, *orders: Dict[str, Any]) -> None:
    for order in orders:
        requests_mock.get(ORDERS_URL + order["order_id"], json=order)


def test_a_batch_page_holds_its_orders_each_with_its_payout_date_and_skips_a_gone_one(requests_mock):
    config: Dict[str, Any] = {}
    _serve(requests_mock, rb.order("o1"), rb.order("o2"))
    requests_mock.get(ORDERS_URL + "gone", status_code=404, json=rb.no_such_order("gone"))

    page = _batch_requester(config, "orders").send_request(stream_slice=_batch("o1", "gone", "o2"))

    rows = page.json()["orders"]
    assert [(r["order_id"], r["payout_date"]) for r in rows] == [("o1", "2024-02-01T06:00:00Z"), ("o2", "2024-02-03T06:00:00Z")]
    assert [r.url for r in requests_mock.request_history] == [ORDERS_URL + "o1", ORDERS_URL + "gone", ORDERS_URL + "o2"]


def test_captures_and_refunds_pages_are_the_embedded_items_with_their_order_read_from_the_store(requests_mock):
    config: Dict[str, Any] = {}
    orders = [
        rb.order("o1", captures=[rb.capture("c1"), rb.capture("c2")], refunds=[rb.refund("r1")]),
        rb.order("o2", captures=[], refunds=None) | {"refunds": None},
    ]
    _serve(requests_mock, *orders)

    captures = _batch_requester(config, "captures").send_request(stream_slice=_batch("o1", "o2")).json()["captures"]
    refunds = _batch_requester(config, "refunds").send_request(stream_slice=_batch("o1", "o2")).json()["refunds"]
    order_rows = _batch_requester(config, "orders").send_request(stream_slice=_batch("o1", "o2")).json()["orders"]

    assert [(c["capture_id"], c["order_id"], c["payout_date"]) for c in captures] == [
        ("c1", "o1", "2024-02-01T06:00:00Z"),
        ("c2", "o1", "2024-02-01T06:00:00Z"),
    ]
    assert [(r["refund_id"], r["order_id"]) for r in refunds] == [("r1", "o1")]
    assert [r["order_id"] for r in order_rows] == ["o1", "o2"]
    assert requests_mock.call_count == 2  # one request per order for the three streams
    assert not ORDER_STORES.of(config).kept.spilled


def test_the_path_is_rendered_once_and_filled_with_each_order_id(requests_mock):
    config: Dict[str, Any] = {}
    _serve(requests_mock, rb.order("o1"), rb.order("o2"))
    requester = _batch_requester(config, "orders")
    renders: List[Any] = []
    get_path = requester.requester.get_path
    requester.requester.get_path = lambda **kwargs: renders.append(kwargs["stream_slice"]) or get_path(**kwargs)

    requester.send_request(stream_slice=_batch("o1", "o2"))

    assert len(renders) == 1
    assert [r.url for r in requests_mock.request_history] == [ORDERS_URL + "o1", ORDERS_URL + "o2"]


def test_a_path_that_does_more_with_the_order_id_than_insert_it_is_rendered_for_each_order(requests_mock):
    config: Dict[str, Any] = {}
    requests_mock.get(ORDERS_URL + "O1", json=rb.order("o1"))
    inner = _order_requester(config, path="/ordermanagement/v1/orders/{{ stream_slice.order_id | upper }}")

    OrderBatchRequester(requester=inner, config=config, items_field="orders").send_request(stream_slice=_batch("o1"))

    assert [r.url for r in requests_mock.request_history] == [ORDERS_URL + "O1"]


def test_an_unknown_items_field_is_refused():
    with pytest.raises(ValueError, match="items_field"):
        _batch_requester({}, "disputes")
