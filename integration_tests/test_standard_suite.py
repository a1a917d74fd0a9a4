"""Airbyte's standard tests (`airbyte_cdk.test.standard_tests`) against the Klarna emulator.

`TestKlarnaStandardSuite` is the CDK's suite for Python sources, fed by `acceptance-test-config.yml`:
spec, check (valid and rejected credentials), discover, full-refresh read with schema validation,
and a read with an invalid catalog. The module-level tests below run what the CDK no longer runs
from that file (it rejects `expect_records` and does not collect `incremental`): the records of
the basic read against `EXPECTED_RECORDS`, two sequential full-refresh reads, and CAT's
incremental checks. Of the suite's Docker image tests, `spec` and the configs' match with the spec
run on the image `make image` builds; the ones that need the emulator or the public registry skip,
saying why (test_image.py runs check, discover and read in the image).

How the emulator reaches the suite: the CDK collects the scenarios from `acceptance-test-config.yml`
at collection time without opening the configs, and opens a scenario's config only when its test
runs (`ConnectorTestScenario.get_config_dict`). The session fixture `acceptance_emulator` (autouse,
so it runs before the first test of this module) starts the emulator on its random port and writes
the configs the YAML names into integration_tests/acceptance/generated/ (ignored by git), and
deletes them when the session ends.

The data is a pure function of `ACCEPTANCE_SPEC`, so the expected records are a file in git. To
rewrite it after a deliberate change: `PYTHONPATH=integration_tests .venv/bin/python
integration_tests/test_standard_suite.py` (then review the diff; `test_expected_records_file_
is_the_emulators_dataset` checks it against the emulator's dataset independently of the connector).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import orjson
import pytest
import yaml


def _declare_cdk_markers() -> None:
    """Declare the markers the CDK's suite uses, before importing it.

    `docker_base` applies `@pytest.mark.image_tests` when it is imported and the CDK's
    `pytest_generate_tests` may apply `requires_creds`; under `--strict-markers` (pyproject.toml)
    an undeclared marker fails collection. pyproject.toml is the right place to declare them
    (then this does nothing); until it does, they are added to the running session's config.
    """
    config = getattr(pytest.mark, "_config", None)  # the running session's config, None outside pytest
    if config is None:
        return
    declared = {line.split(":", 1)[0].split("(", 1)[0].strip() for line in config.getini("markers")}
    for name, description in (
        ("image_tests", "Airbyte standard tests that build and run the connector's Docker image"),
        ("requires_creds", "Airbyte standard test scenarios whose config lives under secrets/"),
    ):
        if name not in declared:
            config.addinivalue_line("markers", f"{name}: {description}")


_declare_cdk_markers()

from airbyte_cdk.models import (  # noqa: E402
    AirbyteMessage,
    AirbyteMessageSerializer,
    AirbyteStateMessage,
    AirbyteStateMessageSerializer,
    ConfiguredAirbyteCatalog,
    ConfiguredAirbyteCatalogSerializer,
    ConfiguredAirbyteStream,
    DestinationSyncMode,
    SyncMode,
)
from airbyte_cdk.test import entrypoint_wrapper  # noqa: E402
from airbyte_cdk.test.standard_tests import ConnectorTestScenario, SourceTestSuiteBase  # noqa: E402
from docker_image import IMAGE, require_image  # noqa: E402
from klarna_emulator import Dataset, DatasetSpec, KlarnaEmulator  # noqa: E402
from source_klarna import SourceKlarna  # noqa: E402

# The CDK's parametrization of `scenario` (one per config of acceptance-test-config.yml), as in the
# test file `airbyte-cdk connector test` generates.
pytest_plugins = ["airbyte_cdk.test.standard_tests.pytest_hooks"]

# The discovered catalog's advisory problems fail the tests instead of being printed as warnings.
pytestmark = pytest.mark.filterwarnings("error::airbyte_cdk.test.standard_tests.DiscoveredCatalogWarning")

ROOT = Path(__file__).resolve().parent.parent
ACCEPTANCE_TEST_CONFIG = ROOT / "acceptance-test-config.yml"
ACCEPTANCE_DIR = ROOT / "integration_tests" / "acceptance"
GENERATED_DIR = ACCEPTANCE_DIR / "generated"

# 6 payouts (2 days x 3 currencies, all in March 2026) of 5 transactions each, 2 of which are
# byte-identical copies of a fee row: small, and it exercises the transaction key's occurrence count.
# Seed 1 has returns (so refunds), which every stream needs: the basic read requires records from each;
# two disputes, so that the disputes stream has records too.
ACCEPTANCE_SPEC = DatasetSpec(seed=1, payouts=6, transactions_per_payout=5, first_payout_date="2026-03-02T00:00:00Z", disputes=2)
# The emulator's password: every test of this module can check it leaks into no output.
PASSWORD = "Acc-pw_4Zq!r8-never-print-me"
WRONG_PASSWORD = "Wrong-pw_J7x!m2-never-print-me"

# The records each succeeding `basic_read` config must return, exactly (CAT's `expect_records`,
# which the CDK's standard tests no longer accept in acceptance-test-config.yml).
EXPECTED_RECORDS = {
    "integration_tests/acceptance/generated/config.json": ACCEPTANCE_DIR / "expected_records.jsonl",
}
STREAMS = ("payouts", "transactions", "payout_summaries")


def acceptance_configs(emulator: KlarnaEmulator) -> Dict[str, Dict[str, Any]]:
    """The configs acceptance-test-config.yml names, by file name in GENERATED_DIR.

    `start_date` is the day before the first payout (2026-03-01T00:00:00Z), a first of the month.
    """
    return {
        "config.json": emulator.config(),
        "invalid_password_config.json": emulator.config(password=WRONG_PASSWORD),
        "invalid_username_config.json": emulator.config(username="not-a-klarna-api-user"),
    }


def write_configs(emulator: KlarnaEmulator, directory: Path = GENERATED_DIR) -> Dict[Path, str]:
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, config in acceptance_configs(emulator).items():
        path, text = directory / name, json.dumps(config, indent=2) + "\n"
        partial = directory / f".{name}.{os.getpid()}.partial"
        partial.write_text(text)
        os.replace(partial, path)  # a reader never sees half a file
        written[path] = text
    return written


@pytest.fixture(scope="session", autouse=True)
def acceptance_emulator() -> Iterator[KlarnaEmulator]:
    with KlarnaEmulator(spec=ACCEPTANCE_SPEC, password=PASSWORD) as emulator:
        written = write_configs(emulator)
        try:
            yield emulator
        finally:
            # They point at a port that is about to close. A file another session rewrote since
            # (a concurrent run in the same checkout) is its own, and stays.
            for path, text in written.items():
                with contextlib.suppress(OSError):
                    if path.read_text() == text:
                        path.unlink()
            with contextlib.suppress(OSError):
                GENERATED_DIR.rmdir()  # only if empty


class TestKlarnaStandardSuite(SourceTestSuiteBase):
    """The CDK's source suite, on the connector class the package ships (`source_klarna.SourceKlarna`).

    The CDK picks this base for `language:python` sources (`create_connector_test_suite`);
    `DeclarativeSourceTestSuite` is the manifest-only one: it looks for a `components.py` next to the
    manifest, which this repository keeps in `source_klarna/`, and would not test the class we ship.
    """

    connector = SourceKlarna
    connector_name = "source-klarna"  # the checkout's folder need not be named after the connector

    @classmethod
    def get_connector_root_dir(cls) -> Path:
        return ROOT

    @classmethod
    def create_connector(cls, scenario: Optional[ConnectorTestScenario]) -> SourceKlarna:
        """As `source_klarna.run` builds it: with the config (the manifest's concurrency and API
        budget are read from it when the source is built)."""
        config = scenario.get_config_dict(connector_root=ROOT, empty_if_missing=True) if scenario else {}
        return SourceKlarna(config=config or None)

    # The CDK's Docker image tests, on the image `make image` built (docker_image.IMAGE, or the
    # suite's own --connector-image option): those that need no network run. The CDK marks each
    # `skipif(no docker CLI)`; the overrides below drop that mark, so that docker_image decides
    # between a skip that says why and, under SOURCE_KLARNA_REQUIRE_IMAGE_TESTS=1, a failure.

    @pytest.fixture
    def connector_image_override(self, request: pytest.FixtureRequest) -> str:
        return require_image(request.config.getoption("--connector-image") or IMAGE)

    @pytest.mark.image_tests
    def test_docker_image_build_and_spec(self, connector_image_override: str, connector_base_image_override: Optional[str]) -> None:
        super().test_docker_image_build_and_spec(connector_image_override, connector_base_image_override)

    @pytest.mark.image_tests
    def test_docker_image_build_and_config_matches_spec(
        self, scenario: ConnectorTestScenario, connector_image_override: str, connector_base_image_override: Optional[str]
    ) -> None:
        super().test_docker_image_build_and_config_matches_spec(scenario, connector_image_override, connector_base_image_override)

    # The others cannot reach the emulator: each reported once as skipped, instead of once per scenario.
    _NO_NETWORK = (
        "the CDK's `docker run` passes no `--network`, so in its container 127.0.0.1 is the container's own, "
        "not the host's where the emulator listens; test_image.py runs {verb} in the image with `--network host`"
    )

    @pytest.mark.skip(reason="needs the public connector registry (connectors.airbyte.com) for the published spec; tests reach only 127.0.0.1")
    @pytest.mark.image_tests
    def test_docker_image_spec_backward_compatibility(self) -> None: ...

    @pytest.mark.skip(reason=_NO_NETWORK.format(verb="check (valid and rejected credentials)"))
    @pytest.mark.image_tests
    def test_docker_image_build_and_check(self) -> None: ...

    @pytest.mark.skip(reason=_NO_NETWORK.format(verb="discover"))
    @pytest.mark.image_tests
    def test_docker_image_build_and_discover(self) -> None: ...

    @pytest.mark.skip(reason=_NO_NETWORK.format(verb="read"))
    @pytest.mark.image_tests
    def test_docker_image_build_and_read(self) -> None: ...


# --------------------------------------------------------------------------------------------------
# What CAT checked from acceptance-test-config.yml and the CDK's suite does not.


def _entries(section: str) -> List[Dict[str, Any]]:
    tests = yaml.safe_load(ACCEPTANCE_TEST_CONFIG.read_text())["acceptance_tests"].get(section, {}).get("tests", [])
    return [entry for entry in tests if entry.get("status", "succeed") == "succeed"]


def _params(section: str) -> List[Any]:
    return [pytest.param(entry, id=Path(entry["config_path"]).stem) for entry in _entries(section)]


def _load_config(entry: Mapping[str, Any]) -> Dict[str, Any]:
    return json.loads((ROOT / entry["config_path"]).read_text())


def _load_catalog(entry: Mapping[str, Any]) -> ConfiguredAirbyteCatalog:
    """The entry's configured catalog; without one, every discovered stream in full refresh, as the
    CDK's `test_basic_read` reads."""
    if entry.get("configured_catalog_path"):
        return ConfiguredAirbyteCatalogSerializer.load(json.loads((ROOT / entry["configured_catalog_path"]).read_text()))
    return _full_refresh_catalog(_load_config(entry))


def _full_refresh_catalog(config: Mapping[str, Any]) -> ConfiguredAirbyteCatalog:
    discovered = entrypoint_wrapper.discover(SourceKlarna(config=config), config)
    assert not discovered.errors, discovered.get_formatted_error_message()
    return ConfiguredAirbyteCatalog(
        streams=[
            ConfiguredAirbyteStream(stream=stream, sync_mode=SyncMode.full_refresh, destination_sync_mode=DestinationSyncMode.overwrite)
            for stream in discovered.catalog.catalog.streams
        ]
    )


def _read(config: Mapping[str, Any], catalog: ConfiguredAirbyteCatalog, state: Optional[List[AirbyteStateMessage]] = None) -> entrypoint_wrapper.EntrypointOutput:
    source = SourceKlarna(catalog=catalog, config=config, state=state)
    output = entrypoint_wrapper.read(source, config, catalog, state)
    assert not output.errors, output.get_formatted_error_message()
    everything = "\n".join(orjson.dumps(AirbyteMessageSerializer.dump(m)).decode() for m in output.get_message_iterator())
    assert config["password"] not in everything, "the password appears in the read's output"
    return output


_FULL_REFRESH_READS: Dict[str, Tuple[ConfiguredAirbyteCatalog, entrypoint_wrapper.EntrypointOutput]] = {}


def _full_refresh_read(entry: Mapping[str, Any]) -> Tuple[ConfiguredAirbyteCatalog, entrypoint_wrapper.EntrypointOutput]:
    """The entry's full-refresh read, done once per session (the emulator's data does not change)."""
    if entry["config_path"] not in _FULL_REFRESH_READS:
        catalog = _load_catalog(entry)
        _FULL_REFRESH_READS[entry["config_path"]] = catalog, _read(_load_config(entry), catalog)
    return _FULL_REFRESH_READS[entry["config_path"]]


def _canonical(data: Mapping[str, Any]) -> str:
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()


def _records_by_stream(messages: List[AirbyteMessage]) -> Dict[str, Counter]:
    found: Dict[str, Counter] = {}
    for message in messages:
        found.setdefault(message.record.stream, Counter())[_canonical(message.record.data)] += 1
    return found


def _load_expected(path: Path) -> Dict[str, Counter]:
    expected: Dict[str, Counter] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            expected.setdefault(row["stream"], Counter())[_canonical(row["data"])] += 1
    return expected


def _final_state(output: entrypoint_wrapper.EntrypointOutput) -> List[AirbyteStateMessage]:
    """The last STATE of each stream: what the platform saves and sends to the next sync."""
    last: Dict[str, AirbyteStateMessage] = {}
    for message in output.state_messages:
        last[message.state.stream.stream_descriptor.name] = message.state
    return list(last.values())


def _state_cursor(stream_state: Mapping[str, Any], cursor_field: str) -> Optional[str]:
    """The cursor of a stream's state: top level (payouts, summaries) or the global `state` of a
    per-partition state (transactions)."""
    if cursor_field in stream_state:
        return stream_state[cursor_field]
    inner = stream_state.get("state")
    return inner.get(cursor_field) if isinstance(inner, Mapping) else None


def _stream_state(state: AirbyteStateMessage) -> Dict[str, Any]:
    return AirbyteStateMessageSerializer.dump(state)["stream"].get("stream_state") or {}


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)


def test_expected_records_file_is_the_emulators_dataset() -> None:
    """The expected records of the settlement streams are the emulator's data, as the connector must
    shape it: a snapshot of the connector's output would only prove that it did not change."""
    dataset = Dataset(ACCEPTANCE_SPEC)
    rows: Dict[str, List[Dict[str, Any]]] = {stream: [] for stream in STREAMS}
    for line in EXPECTED_RECORDS["integration_tests/acceptance/generated/config.json"].read_text().splitlines():
        row = json.loads(line)
        rows.setdefault(row["stream"], []).append(row["data"])

    payouts = dataset.payouts()
    assert Counter(map(_canonical, rows["payouts"])) == Counter(map(_canonical, payouts))

    # Transactions: Klarna's rows, plus the payout's date and a key the connector computes.
    payout_dates = {p["payment_reference"]: p["payout_date"] for p in payouts}
    klarna_part = [{k: v for k, v in row.items() if k not in ("transaction_key", "payout_date")} for row in rows["transactions"]]
    assert Counter(map(_canonical, klarna_part)) == Counter(map(_canonical, dataset.transactions()))
    assert all(row["payout_date"] == payout_dates[row["payment_reference"]] for row in rows["transactions"])
    by_content: Dict[str, List[str]] = {}
    for row, klarna_row in zip(rows["transactions"], klarna_part):
        reference, fingerprint, occurrence = row["transaction_key"].split(":")
        assert reference == row["payment_reference"] and len(fingerprint) == 20 and occurrence.isdigit()
        by_content.setdefault(_canonical(klarna_row), []).append(row["transaction_key"])
    # Identical rows share the hash and are numbered 0, 1, ...; different rows never share a key.
    for keys in by_content.values():
        assert len({key.rsplit(":", 1)[0] for key in keys}) == 1
        assert sorted(int(key.rsplit(":", 1)[1]) for key in keys) == list(range(len(keys)))
    assert len({row["transaction_key"] for row in rows["transactions"]}) == len(rows["transactions"])
    assert any(len(keys) > 1 for keys in by_content.values()), "the spec should include identical rows"

    # Summaries: one per currency for March 2026, the only month with payouts.
    expected_summaries = [
        summary
        for currency in ACCEPTANCE_SPEC.currencies
        for summary in dataset.summary("2026-03-01T00:00:00Z", "2026-03-31T23:59:59Z", currency)
    ]
    assert len(expected_summaries) == len(ACCEPTANCE_SPEC.currencies)
    assert all(row["summary_month"] == row["summary_payout_date_start"] for row in rows["payout_summaries"])
    klarna_summaries = [{k: v for k, v in row.items() if k != "summary_month"} for row in rows["payout_summaries"]]
    assert Counter(map(_canonical, klarna_summaries)) == Counter(map(_canonical, expected_summaries))

    # Order management (when the connector has those streams): every served order, capture and
    # refund once, each scalar field the connector keeps equal to Klarna's (it may drop and add
    # fields, and prune nested ones).
    orders = {order["order_id"]: order for order in dataset.orders()}
    for stream, key, source in (
        ("orders", "order_id", orders),
        ("captures", "capture_id", {c["capture_id"]: c for o in orders.values() for c in o.get("captures", [])}),
        ("refunds", "refund_id", {r["refund_id"]: r for o in orders.values() for r in o.get("refunds", [])}),
    ):
        if stream not in rows:
            continue
        assert sorted(row[key] for row in rows[stream]) == sorted(source), stream
        for row in rows[stream]:
            kept = {k for k in set(row) & set(source[row[key]]) if not isinstance(source[row[key]][k], (dict, list))}
            assert kept and {k: row[k] for k in kept} == {k: source[row[key]][k] for k in kept}, (stream, row[key])


@pytest.mark.parametrize("entry", _params("basic_read"))
def test_basic_read_returns_the_expected_records(entry: Dict[str, Any]) -> None:
    assert entry["config_path"] in EXPECTED_RECORDS, f"no expected records declared for {entry['config_path']}"
    _, output = _full_refresh_read(entry)

    found = _records_by_stream(output.records)
    expected = _load_expected(EXPECTED_RECORDS[entry["config_path"]])
    for stream in sorted(set(found) | set(expected)):
        missing = expected.get(stream, Counter()) - found.get(stream, Counter())
        extra = found.get(stream, Counter()) - expected.get(stream, Counter())
        assert not missing and not extra, (
            f"{stream}: {sum(missing.values())} expected records missing, {sum(extra.values())} unexpected; "
            f"first missing: {next(iter(missing), None)}; first unexpected: {next(iter(extra), None)}"
        )


@pytest.mark.parametrize("entry", _params("full_refresh"))
def test_full_refresh_sequential_reads_return_the_same_records(entry: Dict[str, Any]) -> None:
    """CAT's `TestFullRefresh.test_sequential_reads`: a re-read yields the same records, transaction
    keys included (emitted_at aside)."""
    catalog, first_read = _full_refresh_read(entry)
    first = _records_by_stream(first_read.records)
    second = _records_by_stream(_read(_load_config(entry), catalog).records)

    assert first and first == second


@pytest.mark.parametrize("entry", _params("incremental"))
def test_incremental_two_sequential_reads(entry: Dict[str, Any]) -> None:
    """CAT's `TestIncremental.test_two_sequential_reads`: the first incremental read returns every
    record (the expected ones); the second, from the first's state, returns no record older than the
    state minus `threshold_days` and none the first did not return, and its state does not go back."""
    config, catalog = _load_config(entry), _load_catalog(entry)
    cursor_fields = {s.stream.name: s.cursor_field[0] for s in catalog.streams}
    threshold = timedelta(days=entry.get("threshold_days", 0))

    first = _read(config, catalog)
    first_records = _records_by_stream(first.records)
    if entry["config_path"] in EXPECTED_RECORDS:
        expected = _load_expected(EXPECTED_RECORDS[entry["config_path"]])
        assert first_records == {stream: expected[stream] for stream in cursor_fields if stream in expected}
    state = _final_state(first)
    assert {s.stream.stream_descriptor.name for s in state} == set(cursor_fields)

    second = _read(config, catalog, state)
    first_cursors = {
        s.stream.stream_descriptor.name: _state_cursor(_stream_state(s), cursor_fields[s.stream.stream_descriptor.name])
        for s in state
    }
    assert all(first_cursors.values()), first_cursors
    for message in second.records:
        stream, data = message.record.stream, message.record.data
        assert _parse(data[cursor_fields[stream]]) >= _parse(first_cursors[stream]) - threshold, (stream, data[cursor_fields[stream]], first_cursors[stream])
        assert first_records[stream][_canonical(data)], f"{stream}: the second read returned a record the first did not"
    for s in _final_state(second):
        name = s.stream.stream_descriptor.name
        assert _parse(_state_cursor(_stream_state(s), cursor_fields[name])) >= _parse(first_cursors[name])


@pytest.mark.parametrize("entry", [p for p in _params("incremental") if p.values[0].get("future_state")])
def test_incremental_future_state_returns_no_records(entry: Dict[str, Any], acceptance_emulator: KlarnaEmulator) -> None:
    """CAT's `TestIncremental.test_state_with_abnormally_large_values`."""
    config, catalog = _load_config(entry), _load_catalog(entry)
    raw_state = json.loads((ROOT / entry["future_state"]["future_state_path"]).read_text())
    state = [AirbyteStateMessageSerializer.load(message) for message in raw_state]
    assert {s.stream.stream_descriptor.name for s in state} == {s.stream.name for s in catalog.streams}

    output = _read(config, catalog, state)

    assert output.records == []


def test_acceptance_test_config_names_only_configs_this_module_writes(acceptance_emulator: KlarnaEmulator) -> None:
    """A config path the YAML names but this module does not write would only fail as a missing file."""
    written = {str(path.relative_to(ROOT)) for path in GENERATED_DIR.glob("*.json")}
    assert written == {f"integration_tests/acceptance/generated/{name}" for name in acceptance_configs(acceptance_emulator)}
    for section, body in yaml.safe_load(ACCEPTANCE_TEST_CONFIG.read_text())["acceptance_tests"].items():
        for entry in body.get("tests", []):
            assert entry["config_path"] in written, f"{section}: {entry['config_path']} is not written by acceptance_configs()"


# --------------------------------------------------------------------------------------------------


def write_expected_records() -> Path:
    """Rewrite the expected records from a read against a fresh emulator (see the module docstring)."""
    path = EXPECTED_RECORDS["integration_tests/acceptance/generated/config.json"]
    with KlarnaEmulator(spec=ACCEPTANCE_SPEC, password=PASSWORD) as emulator:
        config = acceptance_configs(emulator)["config.json"]
        catalog = _full_refresh_catalog(config)
        output = _read(config, catalog)
    # In catalog order, then by primary key: a stable file whatever order the threads read in.
    order = {s.stream.name: i for i, s in enumerate(catalog.streams)}
    keys = {s.stream.name: [path[0] for path in s.stream.source_defined_primary_key or []] for s in catalog.streams}
    rows = sorted(
        ((order[m.record.stream], [str(m.record.data.get(k)) for k in keys[m.record.stream]], _canonical(m.record.data)), m.record.stream, m.record.data)
        for m in output.records
    )
    path.write_text("".join(json.dumps({"stream": stream, "data": data}) + "\n" for _, stream, data in rows))
    return path


if __name__ == "__main__":
    print(f"wrote {write_expected_records()}")
