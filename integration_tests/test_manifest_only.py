"""The manifest-only form on Airbyte's stock declarative runtime: build/manifest-only/ (manifest.yaml,
components.py and metadata.yaml, the root's as they are, as `make manifest-only` copies them) run by
`source-declarative-manifest` from a virtual environment that has airbyte-cdk at the pinned version and
NOT this package, against the emulator (connector_runner's "manifest-only" form).

It must read exactly the records `source-klarna` reads, whatever the order of the streams in the
catalog, request each order once per sync, and go on from a state as `source-klarna` does.
"""

import json
import subprocess
import tempfile
from collections import Counter
from typing import Any, Dict, List, Optional

import pytest

from conftest import EMULATOR_PASSWORD
from connector_runner import MANIFEST_ONLY_VENV as VENV, ROOT, ConnectorRun, configured_catalog, run_connector
from klarna_emulator import DatasetSpec
from scripts import manifest_only

STREAMS = ["payouts", "transactions", "payout_summaries", "orders", "captures", "refunds", "pending_transactions", "disputes"]
# Orders with captures and refunds, a few gone (404), two payouts' pages of transactions, 3 pending ones, disputes.
SPEC = DatasetSpec(seed=81, payouts=6, transactions_per_payout=40, first_payout_date="2026-10-01T00:00:00Z", purged_order_ratio=0.1,
                   pending_transactions=3, disputes=4)
# Values that name when a sync ran (the pending list's pending_as_of, an order's deletion time), not what Klarna holds.
WHEN_SYNCED = ("pending_as_of", "_ab_cdc_deleted_at")

def run_manifest_only(verb: str, config: Dict[str, Any], catalog: Optional[Dict[str, Any]] = None, state: Optional[List[Dict[str, Any]]] = None) -> ConnectorRun:
    return run_connector(verb, config, catalog, state, form="manifest-only")


def test_the_build_is_the_root_files_as_they_are(tmp_path):
    root = {name: (ROOT / name).read_bytes() for name in ("manifest.yaml", "components.py", "metadata.yaml")}

    assert manifest_only.main(out=tmp_path / "out") == 0

    assert {path.name: path.read_bytes() for path in (tmp_path / "out").iterdir()} == root


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda c, m: ("from __future__ import annotations\n" + c, m), "`from __future__ import annotations`"),
        (lambda c, m: ("from source_klarna.run import connector_file\n" + c, m), "must be self-contained"),
        (lambda c, m: (c, m.replace("source_declarative_manifest.components.UsableState", "source_klarna.components.UsableState", 1)), "names source_klarna.components.UsableState"),
    ],
    ids=["future-annotations", "imports-the-package", "foreign-class-name"],
)
def test_the_build_refuses_files_the_stock_runtime_cannot_run(tmp_path, change, problem, capsys):
    components, manifest = change((ROOT / "components.py").read_text(), (ROOT / "manifest.yaml").read_text())
    (tmp_path / "components.py").write_text(components)
    (tmp_path / "manifest.yaml").write_text(manifest)

    assert manifest_only.main(root=tmp_path, out=tmp_path / "out") == 1
    assert problem in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def records_by_stream(run: ConnectorRun) -> Dict[str, Counter]:
    def comparable(record):
        return {key: ("<when synced>" if key in WHEN_SYNCED else value) for key, value in record.items()}

    return {stream: Counter(json.dumps(comparable(record), sort_keys=True) for record in run.records(stream)) for stream in STREAMS}


def order_requests(emulator) -> Counter:
    return Counter(r["path"] for r in emulator.requests() if r["endpoint"] == "order")


def test_the_runtime_has_the_cdk_and_not_this_package():
    python = VENV / "bin" / "python"
    found = subprocess.run([str(python), "-c", "import importlib.util as u, airbyte_cdk; print(u.find_spec('source_klarna'))"], capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir())

    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "None"


def test_check_and_discover_answer_as_source_klarna_does(make_emulator):
    emulator = make_emulator(SPEC)
    config = emulator.config()

    check = run_manifest_only("check", config)
    wrong = run_manifest_only("check", emulator.config(password=EMULATOR_PASSWORD + "-wrong"))
    discovered = run_manifest_only("discover", config)

    assert check.connection_status()["status"] == "SUCCEEDED", check.everything[-2000:]
    assert wrong.connection_status()["status"] == "FAILED"
    assert "Klarna rejected the API credentials" in wrong.connection_status()["message"]
    assert EMULATOR_PASSWORD not in wrong.everything
    ours = run_connector("discover", config).of_type("CATALOG")[0]["catalog"]
    assert discovered.of_type("CATALOG")[0]["catalog"] == ours
    assert {stream["name"] for stream in ours["streams"]} == set(STREAMS)


@pytest.mark.parametrize("order", ["manifest", "alphabetical", "reversed"])
def test_a_full_sync_reads_exactly_what_source_klarna_reads_whatever_the_catalog_order(make_emulator, order):
    emulator = make_emulator(SPEC)
    streams = {"manifest": STREAMS, "alphabetical": sorted(STREAMS), "reversed": STREAMS[::-1]}[order]
    catalog = configured_catalog(streams, "full_refresh")

    ours = run_connector("read", emulator.config(), configured_catalog(STREAMS, "full_refresh"))
    emulator.reset_requests()
    theirs = run_manifest_only("read", emulator.config(), catalog)

    assert theirs.exit_code == 0, theirs.everything[-3000:]
    assert not [e for e in theirs.errors()], theirs.errors()
    assert records_by_stream(theirs) == records_by_stream(ours)
    assert all(records_by_stream(theirs)[stream] for stream in STREAMS)
    requested = order_requests(emulator)
    assert requested and set(requested.values()) == {1}, "an order was requested more than once"
    assert EMULATOR_PASSWORD not in theirs.everything


def test_an_incremental_sync_from_a_state_reads_what_source_klarna_reads(make_emulator):
    emulator = make_emulator(SPEC)
    catalog = configured_catalog(STREAMS)
    first = run_connector("read", emulator.config(), catalog)
    assert first.exit_code == 0, first.everything[-3000:]
    emulator.grow(new_payouts=3, late_payouts=1)
    state = first.final_state()

    ours = run_connector("read", emulator.config(), catalog, state)
    emulator.reset_requests()
    theirs = run_manifest_only("read", emulator.config(), configured_catalog(sorted(STREAMS)), state)

    assert theirs.exit_code == 0, theirs.everything[-3000:]
    assert records_by_stream(theirs) == records_by_stream(ours)
    assert records_by_stream(theirs)["transactions"], "the new payouts' transactions"
    requested = order_requests(emulator)
    assert requested and set(requested.values()) == {1}
    assert theirs.comparable_states() == ours.comparable_states()


@pytest.mark.parametrize(
    "change, words",
    [
        ({"start_date": "2099-01-01T00:00:00Z"}, "lies in the future: set it to today or earlier"),
        ({"platform": "kustom", "region": "na"}, "region 'na' applies to Klarna only"),
        ({"platform": "kustom", "password": "kco_test_api_secret"}, "switch playground on"),
    ],
)
def test_config_mistakes_are_answered_in_words_on_the_runtime_too(emulator, change, words):
    config = emulator.config(**change)

    check = run_manifest_only("check", config)
    read = run_manifest_only("read", config, configured_catalog(["payouts"], "full_refresh"))

    assert check.connection_status()["status"] == "FAILED" and words in check.connection_status()["message"]
    assert read.exit_code == 1
    assert [e["failure_type"] for e in read.errors()] == ["config_error"] and words in read.errors()[0]["message"]
    assert emulator.stats()["total"] == 0
    assert "kco_test_api_secret" not in check.everything + read.everything
