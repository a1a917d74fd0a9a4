"""The manifest in Airbyte's Connector Builder: `test_read` of each stream against the emulator.

Each test sends the request the Builder sends to `airbyte_cdk.connector_builder` — `read` with a
config holding the connector config plus `__injected_declarative_manifest` (manifest.yaml),
`__command: test_read` and optionally `__test_read_config` (limits), and a one-stream catalog — through
`connector_builder.main.handle_request`, and checks the answer the Builder would show: its slices,
pages (request URLs), records, state and logs, and that the password appears nowhere.

The Builder loads two files, as Airbyte's does: manifest.yaml and components.py (sent as
`__injected_components_py`, registered by the CDK as `source_declarative_manifest.components`, the
module the manifest's `class_name`s name). It treats them as untrusted: a manifest with a custom
component is refused unless `AIRBYTE_ENABLE_UNSAFE_CODE=true`, for every stream. The last tests run
with `source_klarna` made unimportable, as in a Builder that has only the CDK.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from airbyte_cdk.connector_builder.main import handle_request
from airbyte_cdk.sources.declarative.parsers.custom_code_compiler import AirbyteCustomCodeNotPermittedError
from airbyte_cdk.utils.airbyte_secrets_utils import update_secrets
from klarna_emulator import Dataset, DatasetSpec, KlarnaEmulator

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "manifest.yaml"
COMPONENTS_PY = ROOT / "components.py"
# The data of the standard suite (test_standard_suite.ACCEPTANCE_SPEC), so its expected records hold
# the transaction keys the Builder must compute too.
SPEC = DatasetSpec(seed=1, payouts=6, transactions_per_payout=5, first_payout_date="2026-03-02T00:00:00Z", disputes=2)
EXPECTED_RECORDS = ROOT / "integration_tests" / "acceptance" / "expected_records.jsonl"
PASSWORD = "Bldr-pw_8Kd!v3-never-print-me"
USERNAME = "builder-user"
START_DATE = "2026-03-01T00:00:00Z"  # emulator.config(): the day before the first payout
COMPONENT = "source_declarative_manifest.components.TransactionKeyAndPayout"
STREAMS = ("payouts", "transactions", "payout_summaries")
DATETIME = "%Y-%m-%dT%H:%M:%SZ"


@pytest.fixture(scope="module")
def emulator():
    with KlarnaEmulator(spec=SPEC, username=USERNAME, password=PASSWORD) as server:
        yield server


@pytest.fixture
def dataset() -> Dataset:
    return Dataset(SPEC)


@pytest.fixture
def unsafe_code_allowed(monkeypatch):
    """What an Airbyte instance that runs custom components sets (the Builder's manifests are untrusted)."""
    monkeypatch.setenv("AIRBYTE_ENABLE_UNSAFE_CODE", "true")


@pytest.fixture(autouse=True)
def pasted_components_are_removed_afterwards():
    """The CDK registers pasted components.py text under two module names for the whole process."""
    registered = ("components", "source_declarative_manifest.components")
    before = {name: sys.modules.get(name) for name in registered}
    yield
    for name, module in before.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


@pytest.fixture
def only_the_cdk(monkeypatch):
    """A Builder that has the CDK but not our package: `source_klarna` cannot be imported."""
    for name in ("source_klarna", "source_klarna.run"):
        monkeypatch.setitem(sys.modules, name, None)  # `import` now raises ModuleNotFoundError


class BuilderCall:
    def __init__(self, raw: str, printed: str) -> None:
        self.raw = raw  # what the Builder backend prints and the UI shows
        self.printed = printed  # anything else the process wrote meanwhile
        self.message = json.loads(raw)

    @property
    def stream_read(self) -> Dict[str, Any]:
        assert self.message["type"] == "RECORD", self.message.get("trace", {}).get("error", {}).get("message", self.raw)[-2000:]
        return self.message["record"]["data"]

    @property
    def error(self) -> str:
        assert self.message["type"] == "TRACE", self.raw[:2000]
        return self.message["trace"]["error"]["message"]

    @property
    def everything(self) -> str:
        return self.raw + self.printed


def builder_request(
    tmp_path: Path,
    capsys,
    emulator: KlarnaEmulator,
    stream: str,
    *,
    command: str = "test_read",
    manifest: Optional[Dict[str, Any]] = None,
    limits: Optional[Dict[str, int]] = None,
) -> BuilderCall:
    config = {
        **emulator.config(),
        "__injected_declarative_manifest": manifest if manifest is not None else yaml.safe_load(MANIFEST.read_text()),
        "__command": command,
    }
    if limits is not None:
        config["__test_read_config"] = limits
    components_py = COMPONENTS_PY.read_text()
    config["__injected_components_py"] = components_py
    config["__injected_components_py_checksums"] = {"md5": hashlib.md5(components_py.encode()).hexdigest()}
    # The catalog the Builder sends (manifest_server.command_processor.utils.build_catalog).
    catalog = {
        "streams": [
            {
                "stream": {"name": stream, "json_schema": {}, "supported_sync_modes": ["full_refresh", "incremental"]},
                "sync_mode": "incremental",
                "destination_sync_mode": "overwrite",
            }
        ]
    }
    config_path, catalog_path = tmp_path / f"{stream}-config.json", tmp_path / f"{stream}-catalog.json"
    config_path.write_text(json.dumps(config))
    catalog_path.write_text(json.dumps(catalog))
    # Each Builder request runs in a fresh process: no secret of an earlier read is registered (the
    # CDK's registry is process-global, and would otherwise mask what this request leaks).
    update_secrets([])
    capsys.readouterr()
    raw = handle_request(["read", "--config", str(config_path), "--catalog", str(catalog_path)])
    captured = capsys.readouterr()
    return BuilderCall(raw, captured.out + captured.err)


def pages(stream_read: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [page for slice_ in stream_read["slices"] for page in slice_["pages"]]


def request_of(page: Dict[str, Any]) -> Tuple[str, Dict[str, str]]:
    url = urlparse(page["request"]["url"])
    query = parse_qs(url.query, keep_blank_values=True)
    assert all(len(values) == 1 for values in query.values()), page["request"]["url"]
    return url.path, {name: values[0] for name, values in query.items()}


def parse(value: str) -> datetime:
    return datetime.strptime(value, DATETIME).replace(tzinfo=timezone.utc)


def slice_state(slice_: Dict[str, Any]) -> Dict[str, Any]:
    return slice_["state"][-1]["stream"]["stream_state"]


def assert_clean(call: BuilderCall) -> None:
    assert PASSWORD not in call.everything, "the password appears in the Builder's answer or output"
    logs = call.stream_read["logs"]
    assert not [log for log in logs if log["level"] in ("ERROR", "FATAL")], logs


def expected_transaction_keys() -> Dict[str, List[str]]:
    keys: Dict[str, List[str]] = {}
    for line in EXPECTED_RECORDS.read_text().splitlines():
        row = json.loads(line)
        if row["stream"] == "transactions":
            keys.setdefault(row["data"]["payment_reference"], []).append(row["data"]["transaction_key"])
    return {reference: sorted(found) for reference, found in keys.items()}


# --------------------------------------------------------------------------------------------------


def test_resolve_manifest_lists_the_three_streams(tmp_path, capsys, emulator, unsafe_code_allowed):
    call = builder_request(tmp_path, capsys, emulator, "payouts", command="resolve_manifest")

    assert call.message["type"] == "RECORD", call.raw[:2000]
    manifest = call.message["record"]["data"]["manifest"]
    streams = {stream["name"]: stream for stream in manifest["streams"]}
    assert set(STREAMS) <= set(streams)
    assert [t["class_name"] for t in streams["transactions"]["transformations"]] == [COMPONENT]
    assert PASSWORD not in call.everything


def test_payouts_are_read_in_90_day_windows_from_the_start_date(tmp_path, capsys, emulator, dataset, unsafe_code_allowed):
    call = builder_request(tmp_path, capsys, emulator, "payouts")
    stream_read = call.stream_read
    assert_clean(call)

    slices = stream_read["slices"]
    # Windows of 90 days from start_date up to now, each its own slice of one page (all 6 payouts
    # fit a 500-row page); the Builder stops after 5 slices.
    assert slices and slices[0]["slice_descriptor"] == {"start_time": START_DATE, "end_time": "2026-05-29T23:59:59Z"}
    for previous, current in zip(slices, slices[1:]):
        assert parse(current["slice_descriptor"]["start_time"]) == parse(previous["slice_descriptor"]["end_time"]) + timedelta(seconds=1)
    assert stream_read["test_read_limit_reached"] == (len(slices) >= 5)
    if not stream_read["test_read_limit_reached"]:
        assert abs(parse(slices[-1]["slice_descriptor"]["end_time"]) - datetime.now(timezone.utc)) < timedelta(minutes=10)
    for slice_ in slices:
        window = slice_["slice_descriptor"]
        assert parse(window["end_time"]) - parse(window["start_time"]) < timedelta(days=90)
        assert len(slice_["pages"]) == 1
        page = slice_["pages"][0]
        assert page["response"]["status"] == 200
        assert request_of(page) == (
            "/settlements/v1/payouts",
            {"size": "500", "start_date": window["start_time"], "end_date": window["end_time"]},
        )

    records = [record for page in pages(stream_read) for record in page["records"]]
    assert len(slices[0]["pages"][0]["records"]) == len(records) == 6
    assert sorted(records, key=lambda p: p["payment_reference"]) == sorted(dataset.payouts(), key=lambda p: p["payment_reference"])
    assert slice_state(slices[0]) == {"payout_date": "2026-03-03T06:00:05Z"}
    assert stream_read["inferred_datetime_formats"]["payout_date"] == DATETIME
    assert "payment_reference" in stream_read["inferred_schema"]["properties"]
    assert stream_read["auxiliary_requests"] == []


def _instant(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def test_transactions_are_read_per_payout_with_their_keys(tmp_path, capsys, emulator, dataset, unsafe_code_allowed):
    call = builder_request(tmp_path, capsys, emulator, "transactions", limits={"max_slices": 10})
    stream_read = call.stream_read
    assert_clean(call)

    # One slice per payout, each one request for that payout's transactions.
    slices = stream_read["slices"]
    assert len(slices) == 6 and not stream_read["test_read_limit_reached"]
    payout_dates = {p["payment_reference"]: p["payout_date"] for p in dataset.payouts()}
    keys = expected_transaction_keys()
    seen = []
    for slice_ in slices:
        assert len(slice_["pages"]) == 1
        page = slice_["pages"][0]
        path, query = request_of(page)
        reference = query.get("payment_reference")
        assert (path, query) == ("/settlements/v1/transactions", {"size": "500", "payment_reference": reference})
        # The slice descriptor is not checked: for the first slice the Builder (CDK 7.39.1) shows the
        # last partition logged before the first request, as the parent's partitions are all
        # generated first.
        records = page["records"]
        assert len(records) == len(dataset.transactions_for(reference))
        assert {r["payment_reference"] for r in records} == {reference}
        assert {r["payout_date"] for r in records} == {payout_dates[reference]}
        # The same keys as a sync computes (identical rows numbered 0, 1, ...).
        assert sorted(r["transaction_key"] for r in records) == keys[reference]
        seen.append(reference)
    assert sorted(seen) == sorted(payout_dates)

    # The parent's requests are shown as auxiliary requests: the payouts' 90-day windows.
    parent_requests = [request_of(aux) for aux in stream_read["auxiliary_requests"]]
    assert parent_requests and all(path == "/settlements/v1/payouts" for path, _ in parent_requests)
    assert parent_requests[0][1] == {"size": "500", "start_date": START_DATE, "end_date": "2026-05-29T23:59:59Z"}

    final = slice_state(slices[-1])
    # One global cursor (not one per payout), the payouts cursor it depends on, and the payouts whose
    # transactions were read that the next sync's lookback (3 days, remembered 4) can bring back.
    newest = max(_instant(d) for d in payout_dates.values())
    remembered = {ref: d for ref, d in payout_dates.items() if _instant(d) >= newest - timedelta(days=4)}
    assert final["parent_state"] == {"payouts": {"payout_date": "2026-03-03T06:00:05Z", "payouts_read": remembered}}
    assert remembered
    assert final["state"] == {"payout_date": "2026-03-03T06:00:05Z"}
    assert "states" not in final


def rows_of_the_payouts_read(stream_read: dict, dataset: Dataset) -> Tuple[int, int]:
    """(records the Builder shows, the rows the emulator holds for the payouts those records are of)."""
    records = [r for page in pages(stream_read) for r in page["records"]]
    references = {r["payment_reference"] for r in records}
    return len(records), sum(len(dataset.transactions_for(reference)) for reference in references)


def test_transactions_stop_at_the_builders_slice_limit(tmp_path, capsys, emulator, dataset, unsafe_code_allowed):
    call = builder_request(tmp_path, capsys, emulator, "transactions")  # default limits: 5 slices
    stream_read = call.stream_read
    assert_clean(call)

    assert len(stream_read["slices"]) == 5 and stream_read["test_read_limit_reached"]
    shown, held = rows_of_the_payouts_read(stream_read, dataset)
    assert shown == held >= 5 * SPEC.transactions_per_payout


def test_payout_summaries_are_read_per_calendar_month(tmp_path, capsys, emulator, dataset, unsafe_code_allowed):
    call = builder_request(tmp_path, capsys, emulator, "payout_summaries")
    stream_read = call.stream_read
    assert_clean(call)

    slices = stream_read["slices"]
    months = [(s["slice_descriptor"]["start_time"], s["slice_descriptor"]["end_time"]) for s in slices]
    assert months[:3] == [
        ("2026-03-01T00:00:00Z", "2026-03-31T23:59:59Z"),
        ("2026-04-01T00:00:00Z", "2026-04-30T23:59:59Z"),
        ("2026-05-01T00:00:00Z", "2026-05-31T23:59:59Z"),
    ]
    assert len(slices) == 5 and stream_read["test_read_limit_reached"]  # March to July: the Builder's 5-slice limit
    for slice_, (start, end) in zip(slices, months):
        assert len(slice_["pages"]) == 1
        # No paginator: the summary endpoint takes the dates only.
        assert request_of(slice_["pages"][0]) == ("/settlements/v1/payouts/summary", {"start_date": start, "end_date": end})

    march = slices[0]["pages"][0]["records"]
    expected = [s for currency in SPEC.currencies for s in dataset.summary(*months[0], currency)]
    assert all(s["summary_month"] == "2026-03-01T00:00:00Z" for s in march)
    march = [{k: v for k, v in s.items() if k != "summary_month"} for s in march]
    assert sorted(march, key=lambda s: s["summary_settlement_currency"]) == sorted(expected, key=lambda s: s["summary_settlement_currency"])
    assert all(not slice_["pages"][0]["records"] for slice_ in slices[1:])
    assert slice_state(slices[-1]) == {"summary_month": "2026-03-01T00:00:00Z"}


# --------------------------------------------------------------------------------------------------
# The custom component in the Builder.


@pytest.mark.parametrize("stream", STREAMS)
def test_without_unsafe_code_the_builder_refuses_the_manifest_for_every_stream(tmp_path, capsys, emulator, stream, monkeypatch):
    monkeypatch.delenv("AIRBYTE_ENABLE_UNSAFE_CODE", raising=False)

    with pytest.raises(AirbyteCustomCodeNotPermittedError, match="Custom connector code is not permitted.*AIRBYTE_ENABLE_UNSAFE_CODE") as refused:
        builder_request(tmp_path, capsys, emulator, stream)

    printed = capsys.readouterr()
    assert PASSWORD not in str(refused.value) + printed.out + printed.err


def test_the_builders_pages_do_not_show_the_basic_auth_token(tmp_path, capsys, emulator, unsafe_code_allowed):
    """The Builder shows every request's headers; the authenticator registers the Basic token as a
    secret (the CDK itself masks only the password), so it shows as ****."""
    call = builder_request(tmp_path, capsys, emulator, "payouts")

    token = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    assert token not in call.everything


def test_a_builder_without_the_package_runs_the_pasted_components_py(tmp_path, capsys, emulator, dataset, unsafe_code_allowed, only_the_cdk):
    call = builder_request(tmp_path, capsys, emulator, "transactions")

    assert len(call.stream_read["slices"]) == 5
    shown, held = rows_of_the_payouts_read(call.stream_read, dataset)
    assert shown == held >= 5 * SPEC.transactions_per_payout


def test_a_builder_without_the_package_computes_the_same_keys(tmp_path, capsys, emulator, unsafe_code_allowed, only_the_cdk):
    """manifest.yaml and components.py as they are in the repository, pasted into a Builder that has only
    the CDK: the transaction keys equal the ones source-klarna computes."""
    call = builder_request(tmp_path, capsys, emulator, "transactions", limits={"max_slices": 10})
    assert_clean(call)

    keys = expected_transaction_keys()
    found: Dict[str, List[str]] = {}
    for page in pages(call.stream_read):
        for record in page["records"]:
            found.setdefault(record["payment_reference"], []).append(record["transaction_key"])
    assert {reference: sorted(k) for reference, k in found.items()} == keys


@pytest.mark.parametrize("stream", ["orders", "captures", "refunds"])
def test_a_builder_without_the_package_test_reads_the_order_streams(tmp_path, capsys, emulator, dataset, stream, unsafe_code_allowed, only_the_cdk):
    call = builder_request(tmp_path, capsys, emulator, stream, limits={"max_records": 1000, "max_slices": 1000})

    assert_clean(call)
    records = [record for page in pages(call.stream_read) for record in page["records"]]
    named = {t["order_id"] for t in dataset.transactions()}
    if stream == "orders":
        expected = {o for o in named if not dataset.is_purged(o)}
        assert {r["order_id"] for r in records} == expected
    else:
        expected = {item[f"{stream[:-1]}_id"] for o in named if not dataset.is_purged(o) for item in dataset.order(o)[stream]}
        assert {r[f"{stream[:-1]}_id"] for r in records} == expected and expected
    assert all(r["payout_date"] for r in records)
