"""The connector, in both forms, reads on from the states earlier versions wrote, and refuses a state it
cannot use with one config error naming the stream before any stream reads, without a traceback; a state
file that is not a list of state messages ends as the stock runtime ends it."""

import copy
import json
import time
from pathlib import Path

import pytest

from conftest import EMULATOR_PASSWORD
from connector_runner import configured_catalog, run_connector
from klarna_emulator import DatasetSpec

STATES = Path(__file__).resolve().parents[1] / "unit_tests" / "resources" / "states"
# The data the states in unit_tests/resources/states were written against (see the README there).
SPEC = DatasetSpec(seed=61, payouts=12, transactions_per_payout=30, first_payout_date="2026-09-01T00:00:00Z", purged_order_ratio=0.1)
START_DATE = "2026-08-01T00:00:00Z"
STREAMS = ["payouts", "transactions", "payout_summaries", "orders", "captures", "refunds"]


def written_by(version: str) -> list:
    return json.loads((STATES / f"written_by_{version}.json").read_text())


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_a_sync_goes_on_from_the_state_an_earlier_version_wrote(make_emulator, version, form):
    emulator = make_emulator(SPEC)
    emulator.grow(new_payouts=3)
    state = written_by(version)

    run = run_connector("read", emulator.config(start_date=START_DATE), configured_catalog(STREAMS), state, form=form)

    assert run.exit_code == 0, run.everything[-3000:]
    assert not run.errors()
    cursor = next(m for m in state if m["stream"]["stream_descriptor"]["name"] == "payouts")["stream"]["stream_state"]["payout_date"]
    payouts = {p["payment_reference"]: p for p in run.records("payouts")}
    expected = {p["payment_reference"]: p for p in emulator.dataset.payouts() if p["payout_date"] >= cursor}
    # The new payouts and the lookback window's; every transaction of the new ones, once.
    assert set(expected) <= set(payouts)
    new = {ref for ref, p in payouts.items() if p["payout_date"] > cursor}
    assert len(new) == 3
    keys = [t["transaction_key"] for t in run.records("transactions")]
    assert len(keys) == len(set(keys))
    assert {t["payment_reference"] for t in run.records("transactions")} >= new
    assert {m["state"]["stream"]["stream_descriptor"]["name"] for m in run.of_type("STATE")} == set(STREAMS)
    assert EMULATOR_PASSWORD not in run.everything


def _corrupted(change) -> list:
    state = copy.deepcopy(written_by("1.1.0"))
    change({m["stream"]["stream_descriptor"]["name"]: m["stream"]["stream_state"] for m in state})
    return state


@pytest.mark.parametrize(
    "state, words",
    [
        # A cursor that is not a date-time, at the top or inside a parent's state (UsableState).
        (_corrupted(lambda s: s["payouts"].update(payout_date="last tuesday")), "The saved state of stream payouts cannot be used: payout_date is \"last tuesday\", not a date-time"),
        (
            _corrupted(lambda s: s["transactions"]["parent_state"]["payouts"].update(payouts_read=[1, 2])),
            "The saved state of stream transactions cannot be used: parent_state.payouts.payouts_read is not a list of payouts with their dates",
        ),
    ],
    ids=["cursor-not-a-date", "payouts-read-not-a-mapping"],
)
def test_a_state_it_cannot_use_is_one_config_error_before_any_stream_reads(emulator, form, state, words):
    started = time.monotonic()
    run = run_connector("read", emulator.config(), configured_catalog(STREAMS), state, timeout=60, form=form)

    assert run.exit_code == 1
    errors = run.errors()
    assert len(errors) == 1 and errors[0]["failure_type"] == "config_error", errors
    assert words in errors[0]["message"] and "Reset the stream's state" in errors[0]["message"], errors[0]["message"]
    assert "Traceback" not in run.stderr and "Something went wrong" not in run.everything
    assert not run.of_type("RECORD")
    # At most the credentials probe's one request (GET payouts?size=1): no stream read.
    assert [(r["path"], r["query"]) for r in emulator.requests()] in ([], [("/settlements/v1/payouts", {"size": "1"})])
    assert time.monotonic() - started < 30


def test_a_state_file_that_is_not_a_list_of_state_messages_ends_as_the_stock_runtime_ends_it(emulator, form):
    """What the stock runtime does with it, in both forms (the package launches the same runtime path):
    its "Error starting the sync" trace, before any request."""
    run = run_connector("read", emulator.config(), configured_catalog(STREAMS), {"payouts": {"payout_date": "2026-09-01T00:00:00Z"}}, timeout=60, form=form)

    assert run.exit_code == 1
    (error,) = run.errors()
    assert error["message"].startswith("Error starting the sync. This could be due to an invalid configuration or catalog.")
    assert "Schema validation failed" in error["message"]
    assert not run.of_type("RECORD")
    assert emulator.stats()["total"] == 0
    assert EMULATOR_PASSWORD not in run.everything


def test_the_state_of_a_stream_it_does_not_have_is_ignored(emulator, form):
    """A state message for a stream source-klarna has no longer (or never had): the CDK reads on, as
    the stock runtime does; the streams of the catalog sync from the start."""
    state = [{"type": "STREAM", "stream": {"stream_descriptor": {"name": "charges"}, "stream_state": {}}}]

    run = run_connector("read", emulator.config(), configured_catalog(["payouts"]), state, timeout=60, form=form)

    assert run.exit_code == 0 and not run.errors(), run.everything[-3000:]
    assert sorted(p["payment_reference"] for p in run.records("payouts")) == sorted(p["payment_reference"] for p in emulator.dataset.payouts())
    assert {m["stream"]["stream_descriptor"]["name"] for m in run.state_messages()} == {"payouts"}
