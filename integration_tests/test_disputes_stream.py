"""The disputes stream against the emulator's Disputes API v2, both forms of the connector, the same assertions:
every dispute exactly (pages followed by Klarna's next_page cursor, the x-klarna-basic-mid header taken from
the payouts), each dispute's latest state after disputes move on; a merchant that is not enrolled gets the
stream skipped with one warning while the sync and `check` succeed; a merchant_id of another merchant is one
config error before any request; the connector never writes to Klarna."""

from __future__ import annotations

from typing import Any, Dict

import pytest

from conftest import EMULATOR_PASSWORD
from connector_runner import FORMS, configured_catalog
from klarna_emulator import DatasetSpec, KlarnaEmulator
from streaming_runner import assert_clean_run, shipped_manifest, stream_connector

pytestmark = pytest.mark.slow

SPEC = DatasetSpec(seed=31, payouts=10, transactions_per_payout=30, disputes=7, merchant_id="K765432")
DISPUTES_PATH = "/disputes/v2/disputes"


def small_pages_manifest(size: int = 3) -> Dict[str, Any]:
    """The shipped manifest asking for `size` disputes a page, so a few disputes take several pages."""
    manifest = shipped_manifest()
    strategy = manifest["definitions"]["streams"]["disputes"]["retriever"]["paginator"]["pagination_strategy"]
    assert strategy["type"] == "CursorPagination"
    strategy["page_size"] = size
    return manifest


def _read(emulator, form, streams=("payouts", "disputes"), manifest=None, **config):
    run = stream_connector("read", emulator.config(**config), configured_catalog(streams, "full_refresh"), form=form,
                           manifest=manifest, timeout=300)
    assert_clean_run(run, emulator.config(**config))
    return run


def _without_nulls(node):
    """A record as the CDK writes it: its serializer leaves out the keys whose value is null."""
    if isinstance(node, dict):
        return {key: _without_nulls(value) for key, value in node.items() if value is not None}
    return [_without_nulls(item) for item in node] if isinstance(node, list) else node


def _by_krn(records):
    return {record["dispute_krn"]: _without_nulls(record) for record in records}


def _writes(emulator):
    return [request for request in emulator.requests() if request["method"] != "GET"]


@pytest.mark.parametrize("form", FORMS)
def test_every_dispute_exactly_page_after_page_and_each_ones_latest_state_after_they_move(form):
    with KlarnaEmulator(spec=SPEC, password=EMULATOR_PASSWORD) as emulator:
        first = _read(emulator, form, manifest=small_pages_manifest())
        assert first.exit_code == 0 and not first.errors()
        assert _by_krn(first.records("disputes")) == _by_krn(emulator.dataset.disputes())
        asked = [r for r in emulator.requests() if r["path"] == DISPUTES_PATH]
        assert len(asked) == 3 and all(r["status"] == 200 for r in asked)  # 7 disputes, 3 a page

        emulator.grow(new_payouts=1, new_disputes=1)  # open disputes move on, one more opens
        second = _read(emulator, form, manifest=small_pages_manifest())

        now = _by_krn(emulator.dataset.disputes())
        assert _by_krn(second.records("disputes")) == now and len(now) == 8
        changed = [krn for krn, d in _by_krn(first.records("disputes")).items() if now[krn] != d]
        assert changed, "no dispute moved on: the test would not show the latest state"
        assert not _writes(emulator)


@pytest.mark.parametrize("form", FORMS)
def test_a_merchant_not_enrolled_gets_the_stream_skipped_with_one_warning_and_the_sync_and_check_succeed(form):
    with KlarnaEmulator(spec=SPEC, password=EMULATOR_PASSWORD, disputes_enrolled=False) as emulator:
        run = _read(emulator, form)
        check = stream_connector("check", emulator.config(), form=form, timeout=120)
        writes = _writes(emulator)

    assert run.exit_code == 0 and not run.errors(), [e["message"][:200] for e in run.errors()]
    assert run.records("disputes") == [] and len(run.records("payouts")) == SPEC.payouts
    warnings = [m["log"]["message"] for m in run.of_type("LOG") if m["log"]["level"] == "WARN" and "disputes" in m["log"]["message"]]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("Stream disputes skipped") and "MERCHANT_NOT_ENROLLED" in warnings[0]
    assert "enroll the merchant first (docs/klarna.md, Disputes)" in warnings[0]
    assert check.connection_status()["status"] == "SUCCEEDED"
    assert not writes


@pytest.mark.parametrize("form", FORMS)
def test_a_merchant_id_of_another_merchant_is_one_config_error_before_any_stream(form):
    with KlarnaEmulator(spec=SPEC, password=EMULATOR_PASSWORD) as emulator:
        run = _read(emulator, form, merchant_id="K000001")
        asked = [r["path"] for r in emulator.requests()]

    (error,) = run.errors()
    assert error["failure_type"] == "config_error"
    assert "merchant_id K000001 is not the merchant of these API credentials" in error["message"] and "K765432" in error["message"]
    assert asked == ["/settlements/v1/payouts"]  # the probe alone
