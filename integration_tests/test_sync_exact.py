"""Whole syncs against the emulator equal the emulator's data: nothing missing, nothing doubled. Each
test runs in both forms of the connector (the `form` fixture: the package's `source-klarna` and the
stock `source-declarative-manifest` on the two files), with the same assertions."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

from airbyte_cdk.sources.declarative.interpolation import InterpolatedString
from connector_runner import configured_catalog, connector_file, run_connector
from conftest import EMULATOR_PASSWORD
from klarna_emulator import DatasetSpec
from streaming_runner import assert_payouts_exact, assert_transactions_exact, secret_forms

STREAMS = ("payouts", "transactions", "payout_summaries")


def _keys(rows, key):
    return Counter(row[key] for row in rows)


# Kustom (formerly Klarna Checkout) serves the same API on its own hosts: the emulator stands in for both.
@pytest.mark.parametrize("platform", ["klarna", "kustom"])
def test_full_refresh_equals_the_emulators_data(emulator, platform, form):
    run = run_connector("read", emulator.config(platform=platform), configured_catalog(STREAMS, "full_refresh"), form=form)

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


def test_transaction_keys_are_stable_across_syncs(emulator, form):
    catalog = configured_catalog(["transactions"], "full_refresh")
    first = run_connector("read", emulator.config(), catalog, form=form)
    second = run_connector("read", emulator.config(concurrency=3), catalog, form=form)

    assert first.records("transactions")
    assert _keys(first.records("transactions"), "transaction_key") == _keys(second.records("transactions"), "transaction_key")


def test_payout_summaries_add_up_to_the_payouts_of_each_month(emulator, form):
    run = run_connector("read", emulator.config(), configured_catalog(["payout_summaries"], "full_refresh"), form=form)

    summaries = run.records("payout_summaries")
    assert summaries
    for summary in summaries:
        expected = emulator.dataset.summary(summary["summary_payout_date_start"], summary["summary_payout_date_end"], summary["summary_settlement_currency"])
        assert summary["summary_month"] == summary["summary_payout_date_start"]
        assert [{k: v for k, v in summary.items() if k != "summary_month"}] == expected


# A few payouts and 7 transactions in no payout yet (the end of the unfiltered /transactions list).
PENDING_SPEC = DatasetSpec(seed=71, payouts=4, transactions_per_payout=25, first_payout_date="2026-10-01T00:00:00Z", pending_transactions=7)
# What a pending row and the same row once in a payout share: all but where it belongs (and when it was listed).
BELONGING = ("transaction_key", "payment_reference", "payout", "payout_date", "pending_as_of")


def _content(row):
    return repr(sorted((k, v) for k, v in row.items() if k not in BELONGING))


def test_pending_transactions_land_and_move_into_transactions_with_their_payout(make_emulator, form):
    emulator = make_emulator(PENDING_SPEC)
    catalog = configured_catalog(["transactions", "pending_transactions"], "full_refresh")

    before = run_connector("read", emulator.config(), catalog, form=form)
    assert before.exit_code == 0 and not before.errors(), before.everything[-3000:]
    pending = before.records("pending_transactions")
    served = emulator.dataset.pending_transactions()
    assert len(served) == PENDING_SPEC.pending_transactions
    assert Counter(_content(row) for row in pending) == Counter(_content(row) for row in served)
    assert all(not row.get("payment_reference") and row["transaction_key"].startswith("pending:") for row in pending)
    assert len({row["pending_as_of"] for row in pending}) == 1  # one listing: the sync's
    assert_transactions_exact(emulator, before.records("transactions"))
    keys = [row["transaction_key"] for row in before.records("transactions") + pending]
    assert len(keys) == len(set(keys)), "a key in both tables, or twice in one"

    (reference,) = emulator.grow(new_payouts=1)
    payout = emulator.dataset.payout(reference)
    after = run_connector("read", emulator.config(), catalog, form=form)

    assert after.exit_code == 0 and not after.errors(), after.everything[-3000:]
    moved = [row for row in after.records("transactions") if row["payment_reference"] == payout["payment_reference"]]
    # Every row that was pending is now in the new payout's transactions, with the payout's date...
    assert Counter(_content(row) for row in pending) <= Counter(_content(row) for row in moved)
    assert all(row["payout_date"] == payout["payout_date"] and row["transaction_key"].startswith(payout["payment_reference"] + ":") for row in moved)
    assert_transactions_exact(emulator, after.records("transactions"))
    # ...and gone from pending_transactions, which now holds the next set.
    now_pending = after.records("pending_transactions")
    assert len({row["pending_as_of"] for row in now_pending}) == 1 and now_pending[0]["pending_as_of"] >= pending[0]["pending_as_of"]
    assert Counter(_content(row) for row in now_pending) == Counter(_content(row) for row in emulator.dataset.pending_transactions())
    assert not set(map(_content, now_pending)) & set(map(_content, moved))
    union = [row["transaction_key"] for row in after.records("transactions") + now_pending]
    assert len(union) == len(set(union)), "a key in both tables, or twice in one"
    assert EMULATOR_PASSWORD not in after.everything


def test_a_config_with_region_us_is_migrated_to_na(emulator, form):
    """Airbyte's Klarna connector 0.2.x saved region "us" for Klarna's na: the connector reads with it,
    and tells the platform the migrated config (a CONTROL message, which carries the whole config, the
    password included, as Airbyte's config migrations do: the platform stores it, it is not logged)."""
    config = emulator.config(region="us")

    run = run_connector("read", config, configured_catalog(["payouts", "transactions"], "full_refresh"), form=form)

    assert run.exit_code == 0 and not run.errors(), run.everything[-3000:]
    assert_payouts_exact(emulator, run.records("payouts"))
    assert_transactions_exact(emulator, run.records("transactions"))
    controls = [m["control"] for m in run.of_type("CONTROL")]
    assert [c["type"] for c in controls] == ["CONNECTOR_CONFIG"]
    migrated = controls[0]["connectorConfig"]["config"]
    # (the stock runtime run with --manifest-path adds the manifest it was given: __injected_declarative_manifest)
    assert {k: v for k, v in migrated.items() if not k.startswith("__injected")} == {**config, "region": "na"}
    # The migrated config's host, without base_url_override: Klarna's na one.
    url_base = yaml.safe_load(connector_file("manifest.yaml").read_text())["definitions"]["url_base"]
    without_override = {k: v for k, v in migrated.items() if k != "base_url_override"}
    assert InterpolatedString.create(url_base, parameters={}).eval(without_override) == "https://api-na.klarna.com"
    # The password nowhere else.
    elsewhere = "\n".join(line for line, m in zip(run.stdout_lines, run.messages) if m.get("type") != "CONTROL") + run.stderr
    assert not [form_ for form_ in secret_forms(config) if form_ in elsewhere]


def test_a_wrong_password_with_region_us_is_reported_for_the_na_region(emulator, form):
    run = run_connector("check", emulator.config(region="us", password="Us-wrong-pw_5tB!"), form=form)

    assert run.connection_status()["status"] == "FAILED"
    assert "rejected the API credentials for the na production environment" in run.connection_status()["message"]
