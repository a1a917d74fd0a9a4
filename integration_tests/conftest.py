"""End-to-end fixtures: the emulator as a real server process, the connector as a real executable."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from connector_runner import FORMS, assert_manifest_only_form_ready, use_connector_files
from postgres_server import postgres  # noqa: F401  (session fixture: a real PostgreSQL server, postgres_server.py)
from klarna_emulator import DatasetSpec, KlarnaEmulator

# A distinctive password: every end-to-end test can assert it leaks into no output.
EMULATOR_PASSWORD = "Emu-pw_7f3K!q-never-print-me"
# Small enough for seconds per sync, large enough for several 500-row pages in one payout,
# several currencies and several 90-day windows.
STANDARD_SPEC = DatasetSpec(seed=7, payouts=45, transactions_per_payout=620, first_payout_date="2026-02-01T00:00:00Z")


@pytest.fixture
def emulator() -> Iterator[KlarnaEmulator]:
    with KlarnaEmulator(spec=STANDARD_SPEC, password=EMULATOR_PASSWORD) as server:
        yield server


@pytest.fixture
def make_emulator():
    """Start an emulator with other data or knobs; every one started is stopped at teardown."""
    started = []

    def start(spec: DatasetSpec = STANDARD_SPEC, **knobs) -> KlarnaEmulator:
        server = KlarnaEmulator(spec=spec, password=EMULATOR_PASSWORD, **knobs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture(scope="session", autouse=True)
def manifest_only_build(tmp_path_factory) -> Path:
    """The manifest-only form of the root's files as they are when the session starts, written by
    scripts/manifest_only.py (what `make manifest-only` writes into build/manifest-only/) into a
    directory of the session's own: both forms run these two files all session long, whatever the
    root's files become meanwhile (connector_runner.use_connector_files)."""
    from scripts import manifest_only

    out = tmp_path_factory.mktemp("manifest-only")
    assert manifest_only.main(out=out) == 0, "the root's files are not in manifest-only form (see stderr)"
    use_connector_files(out)
    return out


@pytest.fixture(params=FORMS)
def form(request) -> str:
    """The connector's form, "package" or "manifest-only" (connector_runner): a test that takes it
    runs against both, with the same assertions, on the same two files."""
    if request.param == "manifest-only":
        assert_manifest_only_form_ready()
    return request.param
