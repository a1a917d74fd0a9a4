"""A saved state the connector cannot use is one config error naming the stream, the value and the fix;
the states earlier versions wrote pass."""

import copy
import json
from pathlib import Path

import pytest

from source_klarna.config_checks import KlarnaConfigError
from source_klarna.source import resolved_manifest, streams_and_cursor_formats
from source_klarna.state_checks import read_state_file, state_problem

STATES = Path(__file__).parent / "resources" / "states"
STREAMS, FORMATS = streams_and_cursor_formats(resolved_manifest())


def written_by(version: str) -> list:
    return json.loads((STATES / f"written_by_{version}.json").read_text())


def state_of(stream: str, stream_state) -> list:
    return [{"type": "STREAM", "stream": {"stream_descriptor": {"name": stream}, "stream_state": stream_state}}]


def problem(state) -> str:
    found = state_problem(state, STREAMS, FORMATS)
    assert found is not None
    return found


def test_the_streams_and_formats_are_the_manifests():
    assert STREAMS == ["payouts", "transactions", "payout_summaries", "orders", "captures", "refunds"]
    assert "%Y-%m-%dT%H:%M:%SZ" in FORMATS


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_states_written_by_earlier_versions_pass(version):
    state = written_by(version)

    assert {message["stream"]["stream_descriptor"]["name"] for message in state} == set(STREAMS)
    assert state_problem(state, STREAMS, FORMATS) is None


@pytest.mark.parametrize("state", [None, [], {}, state_of("payouts", None), state_of("payouts", {}), state_of("payouts", {"payout_date": "2024-01-01T06:00:00.123000+00:00"})])
def test_empty_and_partial_states_pass(state):
    assert state_problem(state, STREAMS, FORMATS) is None


def test_a_state_that_is_not_a_list_names_what_it_is_and_says_to_reset():
    found = problem({"payouts": {"payout_date": "2024-01-01T00:00:00Z"}})

    assert found.startswith("The saved state is a JSON dict, not a list of Airbyte state messages")
    assert "reset the connection's state" in found


@pytest.mark.parametrize("entry", [["payouts"], {"type": "LEGACY", "data": {}}, {"type": "STREAM", "stream": {"stream_state": {}}}])
def test_entries_that_are_not_state_messages_are_refused(entry):
    assert problem([entry]).startswith("The saved state is not a list of Airbyte state messages")


def test_a_stream_this_connector_does_not_have_is_named():
    found = problem(state_of("invoices", {"updated_at": "2024-01-01"}))

    assert "'invoices', which source-klarna does not have" in found
    assert "payouts, transactions, payout_summaries, orders, captures, refunds" in found


@pytest.mark.parametrize(
    "stream, mutate, where, shown",
    [
        ("payouts", lambda s: s.update(payout_date="banana"), "payout_date", "'banana'"),
        ("payout_summaries", lambda s: s.update(summary_month=202401), "summary_month", "202401"),
        ("transactions", lambda s: s["state"].update(payout_date="2024-13-01T00:00:00Z"), "state.payout_date", "'2024-13-01T00:00:00Z'"),
        ("transactions", lambda s: s["parent_state"]["payouts"].update(payout_date="yesterday"), "parent_state.payouts.payout_date", "'yesterday'"),
        ("orders", lambda s: s["parent_state"]["transactions"]["parent_state"]["payouts"].update(payout_date=""), "parent_state.transactions.parent_state.payouts.payout_date", "''"),
        ("transactions", lambda s: s["parent_state"]["payouts"].update(payouts_read=["ABC"]), "parent_state.payouts.payouts_read", '["ABC"]'),
        ("transactions", lambda s: s["parent_state"]["payouts"]["payouts_read"].update(ABC="soon"), "parent_state.payouts.payouts_read['ABC']", "'soon'"),
    ],
)
def test_a_bad_value_is_named_with_its_stream_and_place(stream, mutate, where, shown):
    (message,) = [copy.deepcopy(m) for m in written_by("1.1.0") if m["stream"]["stream_descriptor"]["name"] == stream]
    mutate(message["stream"]["stream_state"])

    found = problem([message])

    assert found.startswith(f"The saved state of stream {stream} has {where} = {shown}")
    assert f"reset the state of stream {stream}" in found


def test_a_stream_state_that_is_not_an_object_is_refused():
    assert problem(state_of("payouts", ["2024-01-01T00:00:00Z"])).startswith("The saved state of stream payouts is [")


def test_long_values_are_shortened_in_the_message():
    found = problem(state_of("payouts", {"payout_date": "x" * 500}))

    assert "x" * 50 in found and "x" * 100 not in found


@pytest.mark.parametrize("content, words", [("{not json", "The saved state is not JSON"), ('"a string"', "is a JSON str")])
def test_the_state_file_is_read_and_checked(tmp_path, content, words):
    path = tmp_path / "state.json"
    path.write_text(content)

    with pytest.raises(KlarnaConfigError) as raised:
        read_state_file(str(path), STREAMS, FORMATS)

    assert words in raised.value.message
    assert raised.value.failure_type.value == "config_error"


def test_an_empty_state_file_is_no_state(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("")

    assert read_state_file(str(path), STREAMS, FORMATS) == []
