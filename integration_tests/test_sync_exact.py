"""Whole syncs against the emulator equal the emulator's data: nothing missing, nothing doubled."""

from __future__ import annotations

from collections import Counter

import pytest

from connector_runner import configured_catalog, run_connector
from conftest import EMULATOR_PASSWORD

STREAMS = ("payouts", "transactions", "payout_summaries")


def _keys(rows, key):
    return Counter(row[key] for row in rows)


# Kustom (formerly Klarna Checkout) serves the same API on its own hosts: the emulator stands in for both.
@pytest.mark.parametrize("platform", ["klarna", "kustom"])
def test_full_refresh_equals_the_emulators_data(emulator, platform):
    run = run_connector("read", emulator.config(platform=platform), configured_catalog(STREAMS, "full_refresh"))

    assert run.exit_code == 0, run.everything[-3000:]
    assert not run.errors()
    expected_payouts = emulator.dataset.payouts()
    assert sorted(run.records("payouts"), key=lambda p: p["payment_reference"]) == sorted(expected_payouts, key=lambda p: p["payment_reference"])

    rows = run.records("transactions")
    keys = _keys(rows, "transaction_key")
    assert max(keys.values()) == 1, "duplicate transaction keys"
    expected = list(emulator.dataset.transactions())
    assert len(rows) == len(expected)
    payout_dates = {p["payment_reference"]: p["payout_date"] for p in expected_payouts}
    strip = lambda row: {k: v for k, v in row.items() if k not in ("transaction_key", "payout_date")}  # noqa: E731
    assert sorted(map(repr, map(strip, rows))) == sorted(map(repr, expected))
    assert all(row["payout_date"] == payout_dates[row["payment_reference"]] for row in rows)
    assert EMULATOR_PASSWORD not in run.everything


def test_transaction_keys_are_stable_across_syncs(emulator):
    catalog = configured_catalog(["transactions"], "full_refresh")
    first = run_connector("read", emulator.config(), catalog)
    second = run_connector("read", emulator.config(concurrency=3), catalog)

    assert _keys(first.records("transactions"), "transaction_key") == _keys(second.records("transactions"), "transaction_key")


def test_payout_summaries_add_up_to_the_payouts_of_each_month(emulator):
    run = run_connector("read", emulator.config(), configured_catalog(["payout_summaries"], "full_refresh"))

    summaries = run.records("payout_summaries")
    assert summaries
    for summary in summaries:
        expected = emulator.dataset.summary(summary["summary_payout_date_start"], summary["summary_payout_date_end"], summary["summary_settlement_currency"])
        assert summary["summary_month"] == summary["summary_payout_date_start"]
        assert [{k: v for k, v in summary.items() if k != "summary_month"}] == expected
