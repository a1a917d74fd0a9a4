"""The installed executable speaks the Airbyte protocol: spec, check, discover."""

from __future__ import annotations

import json
import subprocess
import sys

from connector_runner import EXECUTABLE, run_connector
from conftest import EMULATOR_PASSWORD


def test_the_executable_runs_the_installed_package_with_its_manifest():
    # `make test` installs the wheel: manifest.yaml and components.py must ship inside the package
    # (the end-to-end tests run the checkout's, connector_runner; this is the installed one on its own).
    code = "import source_klarna.run as r; print(r.connector_file('manifest.yaml')); print(r.connector_file('components.py'))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/", timeout=60)
    manifest, components = found.stdout.split()

    assert manifest.endswith("site-packages/source_klarna/manifest.yaml"), manifest
    assert components.endswith("site-packages/source_klarna/components.py"), components
    assert EXECUTABLE.exists()


def test_spec_lists_every_config_field_and_hides_the_password():
    run = run_connector("spec")

    assert run.exit_code == 0
    spec = run.of_type("SPEC")[0]["spec"]["connectionSpecification"]
    assert set(spec["properties"]) == {
        "platform", "region", "playground", "username", "password", "start_date",
        "lookback_window_days", "concurrency", "max_requests_per_second", "rate_limit_reserve_percent",
        "base_url_override", "include_personal_data", "merchant_id",
    }
    assert spec["properties"]["platform"]["enum"] == ["klarna", "kustom"]
    assert spec["properties"]["rate_limit_reserve_percent"]["default"] == 20
    assert spec["properties"]["include_personal_data"]["default"] is False
    assert spec["properties"]["password"]["airbyte_secret"] is True
    assert spec["properties"]["region"]["enum"] == ["eu", "na", "oc"]


def test_check_succeeds_against_the_emulator(emulator):
    run = run_connector("check", emulator.config())

    assert run.exit_code == 0
    assert run.connection_status()["status"] == "SUCCEEDED"


def test_check_with_a_wrong_password_fails_with_a_sentence_and_no_traceback(emulator):
    run = run_connector("check", emulator.config(password="wrong-password-123"))

    assert run.exit_code == 0
    status = run.connection_status()
    assert status["status"] == "FAILED"
    assert "rejected the API credentials for the eu production environment" in status["message"]
    # The CDK's check logs the failure with its stack trace (an ERROR log message, in both forms); no
    # bare traceback on stderr, none elsewhere.
    assert "Traceback" not in run.stderr
    assert not [m for m in run.messages if "Traceback" in json.dumps(m) and not (m.get("type") == "LOG" and m["log"]["level"] == "ERROR")]
    assert "wrong-password-123" not in run.everything


def test_check_with_a_bad_start_date_says_what_to_change(emulator):
    run = run_connector("check", emulator.config(start_date="21/11/2026"))

    assert run.connection_status()["status"] == "FAILED"
    assert "write it as YYYY-MM-DDTHH:MM:SSZ" in run.connection_status()["message"]


def test_discover_lists_the_streams_with_keys_and_cursors(emulator):
    run = run_connector("discover", emulator.config())

    assert run.exit_code == 0
    streams = {s["name"]: s for s in run.of_type("CATALOG")[0]["catalog"]["streams"]}
    assert set(streams) == {"payouts", "transactions", "payout_summaries", "orders", "captures", "refunds", "pending_transactions", "disputes"}
    assert streams["disputes"]["source_defined_primary_key"] == [["dispute_krn"]]
    assert streams["disputes"]["supported_sync_modes"] == ["full_refresh"]
    assert streams["payouts"]["source_defined_primary_key"] == [["payment_reference"]]
    assert streams["transactions"]["source_defined_primary_key"] == [["transaction_key"]]
    assert streams["payouts"]["default_cursor_field"] == ["payout_date"]
    assert streams["transactions"]["default_cursor_field"] == ["payout_date"]
    assert streams["orders"]["source_defined_primary_key"] == [["order_id"]]
    assert streams["captures"]["source_defined_primary_key"] == [["capture_id"]]
    assert streams["refunds"]["source_defined_primary_key"] == [["refund_id"]]
    assert all(streams[name]["default_cursor_field"] == ["payout_date"] for name in ("orders", "captures", "refunds"))
    assert all("incremental" in s["supported_sync_modes"] for name, s in streams.items() if name not in ("pending_transactions", "disputes"))
    # Transactions in no payout yet: no payout_date to be incremental on.
    assert streams["pending_transactions"]["supported_sync_modes"] == ["full_refresh"]
    assert streams["pending_transactions"]["source_defined_primary_key"] == [["transaction_key"]]
    assert EMULATOR_PASSWORD not in run.everything


def test_discover_with_plain_http_to_a_remote_host_is_refused_as_a_config_error(emulator):
    run = run_connector("discover", emulator.config(base_url_override="http://klarna.example.com"))

    assert run.exit_code == 1
    (error,) = run.errors()
    assert error["failure_type"] == "config_error"
    assert "plain http" in error["message"]
