"""Interruptions: the connector is SIGKILLed at seeded points of a read and restarted with the last
STATE it emitted per stream, as the platform does. Across the runs the records cover every row of the
emulator, and a row emitted again only repeats its key with the same content.

Only records a destination has committed count towards coverage: those emitted before the last STATE
of their stream in a killed run (anything later may be lost with the process), and everything of the
run that finally completes.

The kill-and-resume chains are independent (each has its own emulator): they run side by side in one
module fixture, and each test checks one chain.
"""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional

import pytest

from conftest import EMULATOR_PASSWORD
from connector_runner import configured_catalog
from klarna_emulator import DatasetSpec, KlarnaEmulator
from streaming_runner import (
    SETTLEMENT_STREAMS,
    StreamedRun,
    assert_clean_run,
    assert_payouts_exact,
    assert_summaries_match,
    assert_transactions_exact,
    first_of_month,
    result_of,
    scenario_results,
    stream_connector,
    union_by_key,
)

# 9 payouts of 200 transactions (about 1,900 messages a run), early in the month before last;
# start_date the 1st of the month before that: two payout windows, three summary windows.
INTERRUPT_SPEC = DatasetSpec(seed=31, payouts=9, transactions_per_payout=200, first_payout_date=first_of_month(2, day=3))
START_DATE = first_of_month(3)
CATALOG = configured_catalog(SETTLEMENT_STREAMS, "incremental")
MESSAGES_PER_RUN = 9 * 200 + 9 + 100

KillPoint = Callable[[Dict[str, Any], List[Dict[str, Any]]], bool]


def after_messages(n: int) -> KillPoint:
    return lambda message, so_far: len(so_far) >= n


def _after_nth(kind: str, stream: str, n: int) -> KillPoint:
    seen = [0]

    def kill(message, so_far):
        if message.get("type") != kind:
            return False
        name = message["state"]["stream"]["stream_descriptor"]["name"] if kind == "STATE" else message["record"]["stream"]
        if name == stream:
            seen[0] += 1
        return seen[0] >= n

    return kill


def after_state(stream: str, k: int = 1) -> KillPoint:
    return _after_nth("STATE", stream, k)


def after_records(stream: str, n: int) -> KillPoint:
    return _after_nth("RECORD", stream, n)


def _merge_state(saved: Optional[List[Dict[str, Any]]], run: StreamedRun) -> Optional[List[Dict[str, Any]]]:
    """What the platform keeps: per stream, the last STATE it received, or the one it had before."""
    by_stream = {s["stream"]["stream_descriptor"]["name"]: s for s in saved or []}
    by_stream.update({s["stream"]["stream_descriptor"]["name"]: s for s in run.final_state()})
    return list(by_stream.values()) or None


def _kill_and_resume(config, kill_points: List[KillPoint], state=None) -> List[StreamedRun]:
    """One run per kill point (each resumed from the state saved so far), then a run to the end."""
    runs: List[StreamedRun] = []
    for kill_when in kill_points + [None]:
        run = stream_connector("read", config, CATALOG, state, kill_when=kill_when, timeout=90)
        runs.append(run)
        assert_clean_run(run, config)
        if run.killed:
            assert run.exit_code == -9, f"expected a SIGKILL exit, got {run.exit_code}"
            state = _merge_state(state, run)
            continue
        assert run.exit_code == 0 and not run.errors(), [e["message"] for e in run.errors()]
        break
    assert not runs[-1].killed
    return runs


def _committed(runs: List[StreamedRun], stream: str) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    for run in runs:
        rows += run.committed_records(stream) if run.killed else run.records(stream)
    return rows


def _assert_union_is_exact(emulator, runs: List[StreamedRun], earlier: List[Dict[str, Any]] = ()) -> None:
    # Every record ever emitted, committed or not, keeps the content its key had.
    for stream, key in (("payouts", "payment_reference"), ("transactions", "transaction_key")):
        union_by_key([r for run in runs for r in run.records(stream)] + [r for run in earlier for r in run.records(stream)], key)
    assert_payouts_exact(emulator, _committed(runs, "payouts") + _committed(earlier, "payouts"), repeats_allowed=True)
    assert_transactions_exact(emulator, _committed(runs, "transactions") + _committed(earlier, "transactions"), repeats_allowed=True)
    # A summary read again later (the month grew) replaces the earlier one, as in the destination.
    summaries = _committed(earlier, "payout_summaries") + _committed(runs, "payout_summaries")
    latest = {(r["summary_settlement_currency"], r["summary_month"]): r for r in summaries}
    assert latest, "no payout summary committed"
    assert_summaries_match(emulator, list(latest.values()))


def seeded_kills(seed: int):
    def scenario():
        with KlarnaEmulator(spec=INTERRUPT_SPEC, password=EMULATOR_PASSWORD) as emulator:
            rng = random.Random(seed)
            points = sorted(rng.randint(1, MESSAGES_PER_RUN) for _ in range(3))
            runs = _kill_and_resume(emulator.config(start_date=START_DATE), [after_messages(n) for n in points])
            return SimpleNamespace(emulator=emulator, runs=runs, points=points)

    return scenario


def checkpoint_kills():
    with KlarnaEmulator(spec=INTERRUPT_SPEC, password=EMULATOR_PASSWORD) as emulator:
        kill_points = [
            after_records("transactions", 1),  # before any transactions checkpoint
            after_state("transactions", 1),  # right after the first (mid-sync) transactions checkpoint
            after_state("payouts", 1),  # right after the payouts' first checkpoint
        ]
        return SimpleNamespace(emulator=emulator, runs=_kill_and_resume(emulator.config(start_date=START_DATE), kill_points))


def kills_during_an_incremental_sync():
    with KlarnaEmulator(spec=INTERRUPT_SPEC, password=EMULATOR_PASSWORD) as emulator:
        config = emulator.config(start_date=START_DATE)
        (first,) = _kill_and_resume(config, [])
        added = emulator.grow(new_payouts=3, late_payouts=2)
        rng = random.Random(3)
        # The incremental sync re-reads the lookback window and the new payouts: about 9 payouts.
        points = sorted(rng.randint(1, 9 * 200) for _ in range(2))
        runs = _kill_and_resume(config, [after_messages(n) for n in points], state=first.final_state())
        return SimpleNamespace(emulator=emulator, first=first, runs=runs, added=added)


SCENARIOS = {
    "seeded-1": seeded_kills(1),
    "checkpoints": checkpoint_kills,
    "incremental-after-growth": kills_during_an_incremental_sync,
}


@pytest.fixture(scope="module")
def results(request):
    return scenario_results(request, SCENARIOS)


@pytest.mark.parametrize("scenario", ["seeded-1"])
def test_sigkill_at_seeded_points_then_resume_from_the_last_state_covers_every_row(results, scenario):
    outcome = result_of(results, scenario)

    assert sum(run.killed for run in outcome.runs) >= 2, f"the kill points {outcome.points} were not reached"
    _assert_union_is_exact(outcome.emulator, outcome.runs)


@pytest.mark.parametrize("scenario", ["checkpoints"])
def test_sigkill_right_after_each_kind_of_checkpoint_then_resume_covers_every_row(results, scenario):
    outcome = result_of(results, scenario)

    assert [run.killed for run in outcome.runs] == [True, True, True, False]
    _assert_union_is_exact(outcome.emulator, outcome.runs)


@pytest.mark.parametrize("scenario", ["incremental-after-growth"])
def test_sigkill_during_an_incremental_sync_after_growth_still_brings_every_new_row(results, scenario):
    outcome = result_of(results, scenario)

    assert outcome.runs[0].killed
    assert set(outcome.added) <= {r["payment_reference"] for r in _committed(outcome.runs, "transactions")}
    _assert_union_is_exact(outcome.emulator, outcome.runs, earlier=[outcome.first])
