"""Runs the installed `source-klarna` executable as a subprocess, the way Airbyte runs the image.

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

EXECUTABLE = Path(sys.executable).with_name("source-klarna")


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
    }
    return {
        "streams": [
            {
                "stream": {"name": name, "json_schema": {}, "supported_sync_modes": ["full_refresh", "incremental"]},
                "sync_mode": sync_mode,
                "destination_sync_mode": "append_dedup" if sync_mode == "incremental" else "overwrite",
                "cursor_field": cursor.get(name, []) if sync_mode == "incremental" else [],
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
) -> ConnectorRun:
    with tempfile.TemporaryDirectory(prefix="source-klarna-run-") as tmp:
        command = [str(EXECUTABLE), verb, *protocol_arguments(tmp, config, catalog, state), *extra_args]
        exit_code, stdout, stderr = run_in_own_session(command, timeout, env={**os.environ, **(env or {})})
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
