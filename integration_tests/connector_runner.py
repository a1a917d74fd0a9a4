"""Runs the connector as a subprocess, the way Airbyte runs the image, in either of its two forms:

* "package": the `source-klarna` executable of this environment, with the checkout first on
  PYTHONPATH, so that it launches the repository's manifest.yaml and components.py (the ones the lead
  edits), not the copies in the installed wheel, which may be older;
* "manifest-only": Airbyte's stock runtime, `source-declarative-manifest` of a virtual environment that
  has airbyte-cdk and not this package (.venv-manifest-only), on build/manifest-only/ (`make
  manifest-only`: the root's two files, copied), with AIRBYTE_ENABLE_UNSAFE_CODE=true as Airbyte sets it
  for a connector with a components.py.

Both run the same two files the same way, so a test parametrised over `FORMS` asserts the same of both.
Output is parsed line by line as it arrives (records are kept, but a caller can ask for counts only),
and every run has a hard timeout so a hang fails the test instead of the CI job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
EXECUTABLE = Path(sys.executable).with_name("source-klarna")
FORMS = ("package", "manifest-only")
MANIFEST_ONLY_BUILD = ROOT / "build" / "manifest-only"
MANIFEST_ONLY_VENV = Path(os.environ.get("SOURCE_KLARNA_MANIFEST_ONLY_VENV", ROOT / ".venv-manifest-only"))
MANIFEST_ONLY_RUNTIME = MANIFEST_ONLY_VENV / "bin" / "source-declarative-manifest"
# On the path of every run, both forms: a host under .invalid fails to resolve without a DNS query
# leaving the machine (offline_dns/sitecustomize.py), so the tests of an unknown host stay on loopback.
OFFLINE_DNS = str(Path(__file__).resolve().parent / "offline_dns")
# What the package form puts first on the path: the checkout's source_klarna, which launches the
# checkout's manifest.yaml and components.py (source_klarna.run.connector_file).
CHECKOUT_FIRST = {"PYTHONPATH": os.pathsep.join(filter(None, [OFFLINE_DNS, str(ROOT), os.environ.get("PYTHONPATH", "")]))}


def assert_manifest_only_form_ready() -> None:
    """The manifest-only form can run, and runs the root's files as they are now: a missing or stale
    build fails the test (it is not skipped), with what to run."""
    assert MANIFEST_ONLY_RUNTIME.exists(), f"no {MANIFEST_ONLY_RUNTIME}: `make test` (or `make .venv-manifest-only/.installed`) makes it"
    stale = [
        name for name in ("manifest.yaml", "components.py")
        if not (MANIFEST_ONLY_BUILD / name).is_file() or (MANIFEST_ONLY_BUILD / name).read_bytes() != (ROOT / name).read_bytes()
    ]
    assert not stale, f"build/manifest-only/ lacks the root's {stale}: run `.venv/bin/python -m scripts.manifest_only`"


def connector_command(form: str, verb: str, arguments: List[str], manifest_file: Optional[Path] = None) -> Tuple[List[str], Dict[str, str]]:
    """(command, environment) of one run of the connector in `form`, on the shipped manifest or on
    `manifest_file` (a patched copy; components.py stays the shipped one). Run it in a directory of
    its own (the protocol files' temporary one): nothing of the checkout is importable from there but
    what PYTHONPATH names."""
    if form == "package":
        if manifest_file is None:
            return [str(EXECUTABLE), verb, *arguments], {**os.environ, **CHECKOUT_FIRST}
        return [sys.executable, "-c", PATCHED_MANIFEST_LAUNCHER, str(manifest_file), verb, *arguments], {**os.environ, **CHECKOUT_FIRST}
    if form == "manifest-only":
        assert_manifest_only_form_ready()
        manifest = manifest_file or MANIFEST_ONLY_BUILD / "manifest.yaml"
        command = [
            str(MANIFEST_ONLY_RUNTIME), verb, *arguments,
            "--manifest-path", str(manifest), "--components-path", str(MANIFEST_ONLY_BUILD / "components.py"),
        ]
        # Nothing of this repository on the path but the resolver shim (no source_klarna).
        environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        return command, {**environment, "PYTHONPATH": OFFLINE_DNS, "AIRBYTE_ENABLE_UNSAFE_CODE": "true"}
    raise ValueError(f"unknown form {form!r}: one of {FORMS}")


# Runs the package's own launcher (source_klarna.run) with the manifest read from argv[1] instead of
# the shipped one: for what-if runs of a manifest change (a faster backoff) without touching the file.
PATCHED_MANIFEST_LAUNCHER = """
import pathlib, sys
import source_klarna.run as launcher
manifest, shipped = pathlib.Path(sys.argv.pop(1)), launcher.connector_file
launcher.connector_file = lambda name: manifest if name == "manifest.yaml" else shipped(name)
launcher.run(sys.argv[1:])
"""


def configured_catalog(streams: Iterable[str], sync_mode: str = "incremental") -> Dict[str, Any]:
    """A configured catalog as the platform sends it (cursor and keys from `discover`'s defaults)."""
    cursor = {
        "payouts": ["payout_date"],
        "transactions": ["payout_date"],
        "payout_summaries": ["summary_month"],
        "orders": ["payout_date"],
        "captures": ["payout_date"],
        "refunds": ["payout_date"],
    }
    keys = {
        "payouts": [["payment_reference"]],
        "transactions": [["transaction_key"]],
        "payout_summaries": [["summary_settlement_currency"], ["summary_month"]],
        "orders": [["order_id"]],
        "captures": [["capture_id"]],
        "refunds": [["refund_id"]],
        "pending_transactions": [["transaction_key"]],
    }
    # Streams with full refresh only: the platform configures them so whatever the others' mode.
    full_refresh_only = {"pending_transactions"}

    def mode(name: str) -> str:
        return "full_refresh" if name in full_refresh_only else sync_mode

    return {
        "streams": [
            {
                "stream": {
                    "name": name,
                    "json_schema": {},
                    "supported_sync_modes": ["full_refresh"] if name in full_refresh_only else ["full_refresh", "incremental"],
                },
                "sync_mode": mode(name),
                "destination_sync_mode": "append_dedup" if mode(name) == "incremental" else "overwrite",
                "cursor_field": cursor.get(name, []) if mode(name) == "incremental" else [],
                "primary_key": keys.get(name, []),
            }
            for name in streams
        ]
    }


@dataclass
class ConnectorRun:
    command: List[str]
    exit_code: int
    stdout_lines: List[str]
    stderr: str
    messages: List[Dict[str, Any]] = field(default_factory=list)

    def of_type(self, kind: str) -> List[Dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    def records(self, stream: str) -> List[Dict[str, Any]]:
        return [m["record"]["data"] for m in self.of_type("RECORD") if m["record"]["stream"] == stream]

    def state_messages(self) -> List[Dict[str, Any]]:
        return [m["state"] for m in self.of_type("STATE")]

    def final_state(self) -> List[Dict[str, Any]]:
        """The last STATE message of each stream: what the platform would persist."""
        last: Dict[str, Dict[str, Any]] = {}
        for state in self.state_messages():
            last[state["stream"]["stream_descriptor"]["name"]] = state
        return list(last.values())

    def errors(self) -> List[Dict[str, Any]]:
        return [m["trace"]["error"] for m in self.of_type("TRACE") if m["trace"].get("type") == "ERROR"]

    def connection_status(self) -> Dict[str, Any]:
        statuses = self.of_type("CONNECTION_STATUS")
        assert statuses, f"no CONNECTION_STATUS in output: {self.stdout_lines[-5:]} {self.stderr[-2000:]}"
        return statuses[-1]["connectionStatus"]

    @property
    def everything(self) -> str:
        return "\n".join(self.stdout_lines) + "\n" + self.stderr


def protocol_arguments(
    directory: str,
    config: Optional[Mapping[str, Any]] = None,
    catalog: Optional[Mapping[str, Any]] = None,
    state: Optional[List[Mapping[str, Any]]] = None,
) -> List[str]:
    """`--config/--catalog/--state FILE` for the given contents, written as JSON into `directory`."""
    arguments: List[str] = []
    for flag, content in (("--config", config), ("--catalog", catalog), ("--state", state)):
        if content is not None:
            path = Path(directory) / f"{flag.strip('-')}.json"
            path.write_text(json.dumps(content))
            arguments += [flag, str(path)]
    return arguments


def run_in_own_session(command: List[str], timeout: float, **popen: Any) -> Tuple[int, str, str]:
    """Runs `command` in a session of its own and returns (exit code, stdout, stderr). On timeout the
    whole session is killed and the test fails with the command and its last output; whatever the
    command left running (an emulator the demo started, say) is killed on the way out."""
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **popen
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=30)
        raise AssertionError(f"{' '.join(command)} did not finish within {timeout}s; last output:\nstdout:\n{stdout[-2000:]}\nstderr:\n{stderr[-2000:]}")
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return process.returncode, stdout, stderr


def run_connector(
    verb: str,
    config: Optional[Mapping[str, Any]] = None,
    catalog: Optional[Mapping[str, Any]] = None,
    state: Optional[List[Mapping[str, Any]]] = None,
    timeout: float = 300,
    extra_args: Iterable[str] = (),
    env: Optional[Mapping[str, str]] = None,
    form: str = "package",
) -> ConnectorRun:
    """One run of the connector in `form` (see the module's docstring), to its end."""
    with tempfile.TemporaryDirectory(prefix="source-klarna-run-") as tmp:
        command, environment = connector_command(form, verb, [*protocol_arguments(tmp, config, catalog, state), *extra_args])
        exit_code, stdout, stderr = run_in_own_session(command, timeout, env={**environment, **(env or {})}, cwd=tmp)
    return parse_run(command, exit_code, stdout, stderr)


def parse_run(command: List[str], exit_code: int, stdout: str, stderr: str) -> ConnectorRun:
    """A finished run, its stdout parsed into one message per line (a line that is not JSON is kept
    as a NOT_JSON message)."""
    lines = stdout.splitlines()
    messages = []
    for line in lines:
        try:
            messages.append(json.loads(line))
        except json.JSONDecodeError:
            messages.append({"type": "NOT_JSON", "line": line})
    return ConnectorRun(command=command, exit_code=exit_code, stdout_lines=lines, stderr=stderr, messages=messages)
