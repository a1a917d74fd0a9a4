"""Runs the connector as a subprocess, the way Airbyte runs the image, in either of its two forms:

* "package": the package's launcher (`source_klarna.run.run`, what the `source-klarna` executable
  calls) from the checkout, with `connector_file` pointed at the manifest.yaml and components.py the
  session runs;
* "manifest-only": Airbyte's stock runtime, `source-declarative-manifest` of a virtual environment that
  has airbyte-cdk and not this package (.venv-manifest-only), with `--manifest-path`/`--components-path`
  of those same two files and AIRBYTE_ENABLE_UNSAFE_CODE=true, as Airbyte sets it for a connector with
  a components.py.

The two files both forms run are the session's snapshot of the root's (`use_connector_files`, which
conftest calls once per session with a copy written by scripts/manifest_only.py, what `make
manifest-only` writes): the root's files change while the lead edits them, and both forms must run
the same ones for a test to assert the same of both. Without a snapshot, the root's files are run.
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
# The installed wheel's executable (test_cli.py checks what it ships).
EXECUTABLE = Path(sys.executable).with_name("source-klarna")
FORMS = ("package", "manifest-only")
MANIFEST_ONLY_BUILD = ROOT / "build" / "manifest-only"
MANIFEST_ONLY_VENV = Path(os.environ.get("SOURCE_KLARNA_MANIFEST_ONLY_VENV", ROOT / ".venv-manifest-only"))
MANIFEST_ONLY_RUNTIME = MANIFEST_ONLY_VENV / "bin" / "source-declarative-manifest"
# On the path of every run, both forms: a host under .invalid fails to resolve without a DNS query
# leaving the machine (offline_dns/sitecustomize.py), so the tests of an unknown host stay on loopback.
OFFLINE_DNS = str(Path(__file__).resolve().parent / "offline_dns")
_connector_files: Dict[str, Path] = {}


def use_connector_files(directory: Path) -> None:
    """Both forms run `directory`'s manifest.yaml and components.py from now on."""
    _connector_files["dir"] = Path(directory)


def connector_file(name: str) -> Path:
    """manifest.yaml or components.py as both forms run them: the session's snapshot, else the root's."""
    return _connector_files.get("dir", ROOT) / name


def assert_manifest_only_form_ready() -> None:
    """The manifest-only runtime exists: a missing one fails the test (it is not skipped), saying what to run."""
    assert MANIFEST_ONLY_RUNTIME.exists(), f"no {MANIFEST_ONLY_RUNTIME}: `make test` (or `make .venv-manifest-only/.installed`) makes it"


# The package's launcher with connector_file answering argv[1] for manifest.yaml and argv[2] for
# components.py (a patched manifest, or the session's snapshot), then `source-klarna`'s arguments.
PACKAGE_LAUNCHER = """
import pathlib, sys
import source_klarna.run as launcher
files = {"manifest.yaml": pathlib.Path(sys.argv.pop(1)), "components.py": pathlib.Path(sys.argv.pop(1))}
launcher.connector_file = files.__getitem__
launcher.run(sys.argv[1:])
"""


def connector_command(form: str, verb: str, arguments: List[str], manifest_file: Optional[Path] = None) -> Tuple[List[str], Dict[str, str]]:
    """(command, environment) of one run of the connector in `form`, on the session's manifest or on
    `manifest_file` (a patched copy; components.py stays the session's). Run it in a directory of its
    own (the protocol files' temporary one): nothing of the checkout is importable from there but what
    PYTHONPATH names."""
    manifest, components = str(manifest_file or connector_file("manifest.yaml")), str(connector_file("components.py"))
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if form == "package":
        # The checkout's source_klarna (the lead's launcher), and the resolver shim.
        command = [sys.executable, "-c", PACKAGE_LAUNCHER, manifest, components, verb, *arguments]
        return command, {**environment, "PYTHONPATH": os.pathsep.join([OFFLINE_DNS, str(ROOT)])}
    if form == "manifest-only":
        assert_manifest_only_form_ready()
        command = [str(MANIFEST_ONLY_RUNTIME), verb, *arguments, "--manifest-path", manifest, "--components-path", components]
        # Nothing of this repository on the path but the resolver shim (no source_klarna).
        return command, {**environment, "PYTHONPATH": OFFLINE_DNS, "AIRBYTE_ENABLE_UNSAFE_CODE": "true"}
    raise ValueError(f"unknown form {form!r}: one of {FORMS}")


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
        "disputes": [["dispute_krn"]],
    }
    # Streams with full refresh only: the platform configures them so whatever the others' mode.
    full_refresh_only = {"pending_transactions", "disputes"}

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

    def kept(self, stream: str) -> List[Dict[str, Any]]:
        """The records of `stream` that are not deletion records (`_ab_cdc_deleted_at`: an order Klarna no longer returns)."""
        return [record for record in self.records(stream) if not record.get("_ab_cdc_deleted_at")]

    def deleted(self, stream: str, key: str) -> List[Any]:
        """The keys of the deletion records of `stream`."""
        return [record[key] for record in self.records(stream) if record.get("_ab_cdc_deleted_at")]

    def state_messages(self) -> List[Dict[str, Any]]:
        return [m["state"] for m in self.of_type("STATE")]

    def final_state(self) -> List[Dict[str, Any]]:
        """The last STATE message of each stream: what the platform would persist."""
        last: Dict[str, Dict[str, Any]] = {}
        for state in self.state_messages():
            last[state["stream"]["stream_descriptor"]["name"]] = state
        return list(last.values())

    def comparable_states(self) -> Dict[str, Any]:
        """The final state of each stream, without `sourceStats` and the CDK's `lookback_window`: the first
        counts records since the last state, the second is how long the sync took in seconds. Both
        depend on timing, so they differ from one run to the next."""

        def strip(node: Any) -> Any:
            if isinstance(node, dict):
                return {key: strip(value) for key, value in node.items() if key != "lookback_window"}
            return [strip(item) for item in node] if isinstance(node, list) else node

        return {s["stream"]["stream_descriptor"]["name"]: strip(s["stream"]["stream_state"]) for s in self.final_state()}

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
