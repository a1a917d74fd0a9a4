"""UsableState (a saved state the connector cannot use fails the sync in one config error naming the
stream, the place and the value; every state earlier versions wrote passes) and
NestedParentStateMigration (captures' and refunds' 1.1.0-1.4.0 state shape)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from airbyte_cdk.models import FailureType, SyncMode
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from components import NestedParentStateMigration, UsableState
from unit_tests.manifest_parts import cursor_datetime_formats, resolved_manifest
from unit_tests.mock_server import response_builder as rb
from unit_tests.mock_server.config import ConfigBuilder
from unit_tests.mock_server.klarna_mock import serve_account
from unit_tests.mock_server.reader import read_streams, state_for

STATES = Path(__file__).parent / "resources" / "states"
VERSIONS = sorted(path.stem[len("written_by_"):] for path in STATES.glob("written_by_*.json"))
INCREMENTAL = ["payouts", "transactions", "payout_summaries", "orders", "captures", "refunds"]


def written_by(version: str) -> list:
    return json.loads((STATES / f"written_by_{version}.json").read_text())


def stream_state(version: str, stream: str) -> dict:
    (message,) = [m for m in written_by(version) if m["stream"]["stream_descriptor"]["name"] == stream]
    return copy.deepcopy(message["stream"]["stream_state"])


def _usable(stream: str = "payouts") -> UsableState:
    return UsableState(stream=stream, parameters={}, cursor_datetime_formats=cursor_datetime_formats())


def test_every_incremental_stream_checks_its_state_with_usable_state():
    streams = {s["name"]: s for s in resolved_manifest()["streams"]}

    for name in INCREMENTAL:
        classes = [m.get("class_name", "") for m in streams[name].get("state_migrations", [])]
        assert classes[-1].endswith(".UsableState"), name


def test_there_are_states_of_earlier_versions_to_check():
    assert {"1.0.0", "1.1.0"} <= set(VERSIONS)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_state_earlier_versions_wrote_passes_unchanged(version):
    messages = written_by(version)
    assert {m["stream"]["stream_descriptor"]["name"] for m in messages} == set(INCREMENTAL)

    for message in messages:
        state = message["stream"]["stream_state"]
        before = copy.deepcopy(state)
        migration = _usable(message["stream"]["stream_descriptor"]["name"])
        assert migration.should_migrate(state) is False
        assert migration.migrate(state) == before == state


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"payout_date": "2024-01-01T06:00:00Z"},
        {"payout_date": "2024-01-01T06:00:00.123000Z"},
        {"payout_date": "2024-01-01T06:00:00+00:00"},
        {"payout_date": "2024-01-01T06:00:00.123000+00:00"},
        {"summary_month": "2024-01-01T00:00:00Z"},
        {"use_global_cursor": True, "state": {"payout_date": "2024-01-01T06:00:00Z"}, "parent_state": {"payouts": {"payout_date": "2024-01-01T06:00:00Z", "payouts_read": {}}}},
        {"states": [{"partition": {"payment_reference": "A"}, "cursor": {"payout_date": "2024-01-01T06:00:00Z"}}]},
        {"unknown_key": "whatever"},
    ],
)
def test_empty_partial_and_well_formed_states_pass(state):
    assert _usable().should_migrate(state) is False


@pytest.mark.parametrize(
    "stream, mutate, where, shown",
    [
        ("payouts", lambda s: s.update(payout_date="banana"), "payout_date", '"banana"'),
        ("payouts", lambda s: s.update(payout_date=None), "payout_date", "null"),
        ("payouts", lambda s: s.update(payout_date="2024-01-01"), "payout_date", '"2024-01-01"'),
        ("payout_summaries", lambda s: s.update(summary_month=202401), "summary_month", "202401"),
        ("transactions", lambda s: s["state"].update(payout_date="2024-13-01T00:00:00Z"), "state.payout_date", '"2024-13-01T00:00:00Z"'),
        ("transactions", lambda s: s["parent_state"]["payouts"].update(payout_date="yesterday"), "parent_state.payouts.payout_date", '"yesterday"'),
        ("orders", lambda s: s["parent_state"]["transactions"]["parent_state"]["payouts"].update(payout_date=""),
         "parent_state.transactions.parent_state.payouts.payout_date", '""'),
        ("captures", lambda s: s["state"].update(payout_date="soon"), "state.payout_date", '"soon"'),
    ],
)
def test_a_cursor_that_is_not_a_date_time_is_a_config_error_naming_the_stream_place_and_value(stream, mutate, where, shown):
    state = stream_state("1.1.0", stream)
    mutate(state)

    with pytest.raises(AirbyteTracedException) as raised:
        _usable(stream).should_migrate(state)

    assert raised.value.failure_type == FailureType.config_error
    assert raised.value.message.startswith(f"The saved state of stream {stream} cannot be used: {where} is {shown}, not a date-time.")
    assert "Reset the stream's state" in raised.value.message and "2024-01-01T00:00:00Z" in raised.value.message


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s["parent_state"]["payouts"].update(payouts_read=["ABC"]),
        lambda s: s["parent_state"]["payouts"]["payouts_read"].update(ABC="soon"),
        lambda s: s["parent_state"]["payouts"].update(payouts_read="ABC"),
    ],
)
def test_a_list_of_payouts_read_that_is_not_references_to_dates_is_a_config_error(mutate):
    state = stream_state("1.1.0", "transactions")
    mutate(state)

    with pytest.raises(AirbyteTracedException) as raised:
        _usable("transactions").should_migrate(state)

    assert raised.value.failure_type == FailureType.config_error
    assert "parent_state.payouts.payouts_read is not a list of payouts with their dates" in raised.value.message


def test_a_cursor_in_a_list_is_found_and_named_with_its_index():
    state = {"states": [{"cursor": {"payout_date": "2024-01-01T00:00:00Z"}}, {"cursor": {"payout_date": "nope"}}]}

    with pytest.raises(AirbyteTracedException) as raised:
        _usable().should_migrate(state)

    assert "states[1].cursor.payout_date is \"nope\"" in raised.value.message


def test_long_values_are_shortened_in_the_message():
    with pytest.raises(AirbyteTracedException) as raised:
        _usable().should_migrate({"payout_date": "x" * 500})

    assert "x" * 50 in raised.value.message and "x" * 100 not in raised.value.message


@pytest.mark.parametrize("stream", ["payouts", "payout_summaries", "transactions", "orders", "captures"])
def test_a_sync_from_an_unusable_state_fails_once_naming_the_stream_before_any_stream_request(requests_mock, stream):
    klarna = serve_account(requests_mock, [rb.payout("A", "2024-02-01T06:00:00Z")], {"A": rb.transactions_naming("A", "o1")}, [rb.order("o1")])
    klarna.serve_probe()
    cursor = "summary_month" if stream == "payout_summaries" else "payout_date"

    output = read_streams(ConfigBuilder().build(), {stream: SyncMode.incremental}, state=state_for({stream: {cursor: "banana"}}), expecting_exception=True)

    (error,) = [e.trace.error for e in output.errors]
    assert error.failure_type == FailureType.config_error
    assert f"The saved state of stream {stream} cannot be used: {cursor} is \"banana\", not a date-time" in error.message
    assert klarna.urls("/settlements/v1/payouts?") == [] and klarna.order_requests() == []


# --------------------------------------------------------------------------- NestedParentStateMigration

TRANSACTIONS_STATE = {
    "use_global_cursor": True,
    "state": {"payout_date": "2024-02-01T06:00:00Z"},
    "parent_state": {"payouts": {"payout_date": "2024-02-01T06:00:00Z", "payouts_read": {"A": "2024-02-01T06:00:00Z"}}},
}
# What captures' state looks like (written by 1.1.0, which read captures from a copy of orders, and by this version).
NESTED = {
    "use_global_cursor": True,
    "state": {"payout_date": "2024-02-01T06:00:00Z"},
    "lookback_window": 2,
    "parent_state": {
        "orders": {
            "use_global_cursor": True,
            "state": {"payout_date": "2024-02-01T06:00:00Z"},
            "parent_state": {"transactions": TRANSACTIONS_STATE},
        }
    },
}


def test_the_nested_state_is_lifted_for_the_cdk_and_the_rest_is_kept():
    migration = NestedParentStateMigration(nested_under="orders")

    assert migration.should_migrate(NESTED)
    migrated = migration.migrate(NESTED)

    assert migrated == {
        "use_global_cursor": True,
        "state": {"payout_date": "2024-02-01T06:00:00Z"},
        "lookback_window": 2,
        "parent_state": {"transactions": TRANSACTIONS_STATE},
    }
    assert not migration.should_migrate(migrated)


def test_states_without_the_nested_parent_are_left_alone():
    migration = NestedParentStateMigration(nested_under="orders")

    for state in ({}, {"state": {"payout_date": "x"}}, {"parent_state": {"transactions": {}}}, {"parent_state": {"orders": {"state": {}}}}):
        assert not migration.should_migrate(state)
