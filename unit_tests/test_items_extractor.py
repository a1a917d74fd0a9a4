"""KlarnaItemsExtractor: the rows of a Klarna page, as DpathExtractor would give them, faster."""

from __future__ import annotations

import orjson
import requests

from airbyte_cdk.sources.declarative.decoders import JsonDecoder
from airbyte_cdk.sources.declarative.extractors import DpathExtractor
from components import KlarnaItemsExtractor
from unit_tests.mock_server import response_builder as rb


def _response(body) -> requests.Response:
    response = requests.Response()
    response._content = orjson.dumps(body)
    response.status_code = 200
    return response


def test_gives_the_same_rows_as_the_cdks_dpath_extractor():
    page = rb.page("transactions", [rb.transaction("P1", amount=i) for i in range(25)])
    ours = KlarnaItemsExtractor(config={}, parameters={"items_field": "transactions"})
    cdk = DpathExtractor(field_path=["transactions"], config={}, parameters={}, decoder=JsonDecoder(parameters={}))

    assert list(ours.extract_records(_response(page))) == list(cdk.extract_records(_response(page)))


def test_the_field_comes_from_parameters_or_is_named():
    page = {"payouts": [{"payment_reference": "A"}], "pagination": {"count": 1}}

    assert [r["payment_reference"] for r in KlarnaItemsExtractor(config={}, parameters={"items_field": "payouts"}).extract_records(_response(page))] == ["A"]
    assert list(KlarnaItemsExtractor(config={}, parameters={}, items_field="transactions").extract_records(_response(page))) == []


def test_a_body_without_the_list_gives_no_rows():
    extractor = KlarnaItemsExtractor(config={}, parameters={"items_field": "payouts"})

    assert list(extractor.extract_records(_response([1, 2]))) == []
    assert list(extractor.extract_records(_response({"payouts": None}))) == []
