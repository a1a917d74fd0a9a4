"""pending_transactions: the rows of the unfiltered transactions list that no payout names yet, every row of one
sync stamped with the same pending_as_of (when the sync started), and a value Klarna added to a list after its
OpenAPI file (detailed_type CASH_ADVANCE_PAYOUT) landing as it is."""

from __future__ import annotations

import datetime as dt

import jsonschema

from airbyte_cdk.models import SyncMode

from unit_tests.mock_server import response_builder as rb
from unit_tests.mock_server.config import ConfigBuilder
from unit_tests.mock_server.klarna_mock import KlarnaMock, discover_offline
from unit_tests.mock_server.reader import read_streams, records_of

FULL = {"pending_transactions": SyncMode.full_refresh}


def _serve(requests_mock, rows):
    klarna = KlarnaMock(requests_mock)
    klarna.serve_probe()
    klarna.serve_transactions({"": rows})  # the unfiltered list: no payment_reference asked for
    return klarna


def test_pending_rows_are_those_without_a_payout_each_stamped_with_the_syncs_pending_as_of(requests_mock):
    paid = [rb.transaction("A", amount=100 + i) for i in range(3)]
    pending = [{**rb.transaction(None, amount=7 + i), "payment_reference": None, "payout": None} for i in range(600)]
    _serve(requests_mock, paid + pending)
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)

    rows = records_of(read_streams(ConfigBuilder().build(), FULL), "pending_transactions")

    after = dt.datetime.now(dt.timezone.utc)
    assert sorted(r["amount"] for r in rows) == [7 + i for i in range(600)]  # two pages, the paid rows left out
    assert all(r["transaction_key"].startswith("pending:") for r in rows)
    (stamp,) = {r["pending_as_of"] for r in rows}  # one value for the whole sync
    assert before <= dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc) <= after


def test_a_value_klarna_added_to_a_list_lands_as_it_is_and_is_valid_for_the_schema(requests_mock):
    row = {**rb.transaction(None, type="CREDIT", detailed_type="CASH_ADVANCE_PAYOUT"), "payment_reference": None, "payout": None}
    _serve(requests_mock, [row])

    (record,) = records_of(read_streams(ConfigBuilder().build(), FULL), "pending_transactions")

    assert (record["type"], record["detailed_type"]) == ("CREDIT", "CASH_ADVANCE_PAYOUT")
    schema = next(s.json_schema for s in discover_offline(ConfigBuilder().build()).streams if s.name == "pending_transactions")
    jsonschema.validate(record, schema)
