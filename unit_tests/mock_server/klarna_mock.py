"""Serves Klarna collections through requests-mock with Klarna's paging and date-filter rules."""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

from unit_tests.mock_server import response_builder as rb
from unit_tests.mock_server.request_builder import KlarnaRequestBuilder, is_probe, order_id_of, query_of


def _bare_date_means_midnight(value: str) -> str:
    return value if "T" in value else f"{value}T00:00:00Z"


class KlarnaMock:
    def __init__(self, requests_mock: Any, requests: Optional[KlarnaRequestBuilder] = None) -> None:
        self._mock = requests_mock
        self.requests = requests or KlarnaRequestBuilder()

    def serve_probe(self, status_code: int = 200, **answer: Any) -> None:
        """Answers the authenticator's credentials probe apart from the payouts the streams read (an
        empty page unless told): registered after the payouts, it takes the probe's URL only."""
        if "json" not in answer and "text" not in answer:
            answer["json"] = rb.page("payouts", [])
        self._mock.get(self.requests.probe_url(), status_code=status_code, **answer)

    def serve_payouts(self, payouts: List[Dict[str, Any]], total_override: Optional[int] = None) -> None:
        def answer(request: Any, context: Any) -> Mapping[str, Any]:
            query = query_of(request.url)
            start = _bare_date_means_midnight(query.get("start_date", "0000"))
            end = _bare_date_means_midnight(query.get("end_date", "9999"))
            rows = [p for p in payouts if start <= p["payout_date"] <= end]
            rows.sort(key=lambda p: p["payout_date"], reverse=True)
            return rb.page("payouts", rows, int(query.get("offset", 0)), int(query.get("size", 20)), total_override)

        self._mock.get(self.requests.payouts_url(), json=answer)

    def serve_transactions(self, by_payment_reference: Dict[str, List[Dict[str, Any]]]) -> None:
        def answer(request: Any, context: Any) -> Mapping[str, Any]:
            query = query_of(request.url)
            rows = by_payment_reference.get(query.get("payment_reference", ""), [])
            return rb.page("transactions", rows, int(query.get("offset", 0)), int(query.get("size", 20)))

        self._mock.get(self.requests.transactions_url(), json=answer)

    def serve_summaries(self, answer: Callable[[Dict[str, str]], List[Dict[str, Any]]]) -> None:
        self._mock.get(self.requests.summary_url(), json=lambda request, context: answer(query_of(request.url)))

    def serve_orders(self, orders: List[Dict[str, Any]], gone: Iterable[str] = ()) -> None:
        """Each order at its URL; the ids in `gone` answer 404 NO_SUCH_ORDER, as Klarna does for an
        order it no longer returns."""
        by_id = {o["order_id"]: o for o in orders}
        gone = set(gone)

        def answer(request: Any, context: Any) -> Mapping[str, Any]:
            order_id = order_id_of(request.url)
            if order_id in gone or order_id not in by_id:
                context.status_code = 404
                return rb.no_such_order(order_id)
            return copy.deepcopy(by_id[order_id])

        self._mock.get(self.requests.order_url(), json=answer)

    def order_requests(self) -> List[str]:
        """The order ids requested, in request order, once per request."""
        return [order_id_of(r.url) for r in self._mock.request_history if "/ordermanagement/v1/orders/" in r.url]

    def urls(self, path_fragment: str) -> List[str]:
        """The URLs the streams requested that contain `path_fragment` (the credentials probe aside)."""
        return [url for url in stream_requests(self._mock) if path_fragment in url]

    def probes(self) -> List[str]:
        return [r.url for r in self._mock.request_history if is_probe(r.url)]


def stream_requests(requests_mock: Any) -> List[str]:
    """Every URL requested but the credentials probe's, in request order."""
    return [r.url for r in requests_mock.request_history if not is_probe(r.url)]


def serve_account(requests_mock: Any, payouts: List[Dict[str, Any]], transactions: Dict[str, List[Dict[str, Any]]], orders: List[Dict[str, Any]], gone: Any = ()) -> KlarnaMock:
    """A whole account: its payouts, their transactions and the orders those name (`gone` answer 404)."""
    klarna = KlarnaMock(requests_mock)
    klarna.serve_payouts(payouts)
    klarna.serve_transactions(transactions)
    klarna.serve_orders(orders, gone)
    return klarna


def discover_offline(config: Mapping[str, Any]) -> Any:
    """The catalog `discover` gives for `config`: building the streams sends the credentials probe,
    answered here with an empty page (no request leaves the process)."""
    import logging

    import requests_mock

    from source_klarna import SourceKlarna

    with requests_mock.Mocker() as mocker:
        KlarnaMock(mocker, KlarnaRequestBuilder(config.get("base_url_override") or KlarnaRequestBuilder().base_url)).serve_probe()
        return SourceKlarna(config=config).discover(logging.getLogger("test"), config)
