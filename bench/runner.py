"""Run one connector `read` as a child process and measure it.

The child's stdout is parsed line by line as it arrives: RECORD messages are only counted (per
stream), the last STATE message per stream is kept for a following incremental sync, nothing else is
held. CPU time and peak RSS come from `os.wait4` on the child's pid, so they are the connector's own
figures (the emulator is a different process and never mixes in).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

try:  # The CDK brings orjson; fall back to json so the runner never depends on it.
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover
    _loads = json.loads

# The CDK serialises a record as {"type":"RECORD","record":{"stream":"<name>",...}} (dataclass field
# order), so the stream name of a record can be read without parsing the line. Anything else is parsed.
_RECORD_PREFIX = b'{"type":"RECORD","record":{"stream":"'
_PREFIX_LEN = len(_RECORD_PREFIX)


@dataclass
class ReadResult:
    command: List[str]
    exit_code: int
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_mb: float
    records: Dict[str, int]
    state_messages: int
    final_states: List[Dict[str, Any]]  # the last AirbyteStateMessage of each stream, in first-seen order
    first_record_s: Optional[float]  # seconds from start to the first record (process start-up + first page)
    last_record_s: Optional[float]
    errors: List[str] = field(default_factory=list)  # error traces / ERROR logs / stderr tail
    timed_out: bool = False
    rss_samples: List[Tuple[float, int, float]] = field(default_factory=list)  # (s since start, records, RSS MB)
    cpu_samples: List[Tuple[float, int, float]] = field(default_factory=list)  # (s since start, records, CPU s so far)

    def rss_at_fraction(self, fraction: float) -> Optional[float]:
        """Largest sampled RSS (MB) while at most `fraction` of the records had arrived."""
        total = self.total_records
        values = [rss for _, records, rss in self.rss_samples if total and records <= fraction * total]
        return max(values) if values else None

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def total_records(self) -> int:
        return sum(self.records.values())

    @property
    def records_per_s(self) -> float:
        return self.total_records / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def steady_records_per_s(self) -> Optional[float]:
        """Records per second between the first and the last record (without process start-up)."""
        if self.first_record_s is None or self.last_record_s is None:
            return None
        span = self.last_record_s - self.first_record_s
        if span <= 0 or self.total_records < 2:
            return None
        return (self.total_records - 1) / span


def _state_key(state: Dict[str, Any]) -> str:
    kind = state.get("type")
    if kind == "STREAM":
        descriptor = (state.get("stream") or {}).get("stream_descriptor") or {}
        return f"STREAM:{descriptor.get('namespace') or ''}:{descriptor.get('name')}"
    if kind == "GLOBAL":
        return "GLOBAL"
    return "LEGACY"


def run_read(
    executable: Sequence[str],
    config: Dict[str, Any],
    catalog: Dict[str, Any],
    state: Optional[List[Dict[str, Any]]] = None,
    *,
    workdir: Path,
    timeout_s: float = 1800.0,
    env: Optional[Dict[str, str]] = None,
    rss_interval_s: float = 0.5,
) -> ReadResult:
    """`<executable> read --config ... --catalog ... [--state ...]`, measured.

    Every `rss_interval_s` a thread samples the child's resident set size (/proc/<pid>/statm) with
    the number of records seen so far, to show whether memory grows with the records read.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.json"
    catalog_path = workdir / "catalog.json"
    config_path.write_text(json.dumps(config))
    catalog_path.write_text(json.dumps(catalog))
    command = [*executable, "read", "--config", str(config_path), "--catalog", str(catalog_path)]
    if state is not None:
        state_path = workdir / "state.json"
        state_path.write_text(json.dumps(state))
        command += ["--state", str(state_path)]

    records: Dict[str, int] = {}
    states: Dict[str, Dict[str, Any]] = {}
    state_messages = 0
    errors: List[str] = []
    first_record: Optional[float] = None
    last_record: Optional[float] = None

    stderr_file = tempfile.TemporaryFile(dir=workdir)
    start = time.perf_counter()
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        stdin=subprocess.DEVNULL,
        env=env,
        bufsize=1 << 16,
        start_new_session=True,
    )
    timed_out = threading.Event()

    def _watchdog() -> None:
        if not done.wait(timeout_s):
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    done = threading.Event()
    threading.Thread(target=_watchdog, daemon=True).start()
    progress = [0]
    rss_samples: List[Tuple[float, int, float]] = []
    cpu_samples: List[Tuple[float, int, float]] = []
    clock_ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    page_mb = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024) if hasattr(os, "sysconf") else 0.0

    def _sample_rss() -> None:
        statm = f"/proc/{proc.pid}/statm"
        while not done.wait(rss_interval_s):
            try:
                with open(statm) as handle:
                    resident = int(handle.read().split()[1])
            except (OSError, ValueError, IndexError):
                return
            now, records_so_far = time.perf_counter() - start, progress[0]
            rss_samples.append((now, records_so_far, resident * page_mb))
            try:
                with open(f"/proc/{proc.pid}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                cpu_samples.append((now, records_so_far, (int(fields[11]) + int(fields[12])) / clock_ticks))
            except (OSError, ValueError, IndexError):
                pass

    if rss_interval_s and os.path.exists(f"/proc/{proc.pid}/statm"):
        threading.Thread(target=_sample_rss, daemon=True).start()

    assert proc.stdout is not None
    counts_by_bytes: Dict[bytes, int] = {}
    try:
        for line in proc.stdout:
            if line.startswith(_RECORD_PREFIX):
                end = line.find(b'"', _PREFIX_LEN)
                name = line[_PREFIX_LEN:end]
                counts_by_bytes[name] = counts_by_bytes.get(name, 0) + 1
                progress[0] += 1
                if first_record is None:
                    first_record = time.perf_counter()
                else:
                    last_record = time.perf_counter()
                continue
            try:
                message = _loads(line)
            except ValueError:
                continue  # a stray print on stdout
            if not isinstance(message, dict):
                continue
            kind = message.get("type")
            if kind == "RECORD":
                name = str((message.get("record") or {}).get("stream")).encode()
                counts_by_bytes[name] = counts_by_bytes.get(name, 0) + 1
                progress[0] += 1
                now = time.perf_counter()
                if first_record is None:
                    first_record = now
                else:
                    last_record = now
            elif kind == "STATE":
                state_messages += 1
                state_message = message.get("state") or {}
                states[_state_key(state_message)] = state_message
            elif kind == "TRACE":
                trace = message.get("trace") or {}
                if trace.get("type") == "ERROR":
                    error = trace.get("error") or {}
                    errors.append(f"TRACE ERROR: {error.get('message')} | {str(error.get('internal_message'))[:300]}")
            elif kind == "LOG":
                log = message.get("log") or {}
                if log.get("level") in ("ERROR", "FATAL"):
                    errors.append(f"LOG {log.get('level')}: {str(log.get('message'))[:300]}")
    finally:
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        done.set()
        proc.returncode = os.waitstatus_to_exitcode(status)

    stderr_file.seek(0)
    stderr_tail = stderr_file.read()[-2000:].decode(errors="replace").strip()
    stderr_file.close()
    if proc.returncode != 0 and stderr_tail:
        errors.append("stderr: " + stderr_tail)
    if timed_out.is_set():
        errors.append(f"killed after the {timeout_s:.0f} s timeout")

    for name, count in counts_by_bytes.items():
        records[name.decode()] = records.get(name.decode(), 0) + count
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    rss_kb = usage.ru_maxrss / 1024 if sys.platform == "darwin" else usage.ru_maxrss
    return ReadResult(
        command=command,
        exit_code=proc.returncode,
        wall_s=wall,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        peak_rss_mb=rss_kb / 1024,
        records=records,
        state_messages=state_messages,
        final_states=list(states.values()),
        first_record_s=None if first_record is None else first_record - start,
        last_record_s=None if last_record is None else last_record - start,
        errors=errors,
        timed_out=timed_out.is_set(),
        rss_samples=rss_samples,
        cpu_samples=cpu_samples,
    )


def run_json_command(command: Sequence[str], timeout_s: float = 300.0, env: Optional[Dict[str, str]] = None) -> List[Dict[str, Any]]:
    """Run `spec`/`discover` style commands and return their parsed stdout messages."""
    completed = subprocess.run(
        list(command), capture_output=True, timeout=timeout_s, env=env, stdin=subprocess.DEVNULL
    )
    messages = []
    for line in completed.stdout.splitlines():
        try:
            message = _loads(line)
        except ValueError:
            continue
        if isinstance(message, dict):
            messages.append(message)
    if completed.returncode != 0 and not messages:
        raise RuntimeError(
            f"{' '.join(command)} exited {completed.returncode}: {completed.stderr.decode(errors='replace')[-1500:]}"
        )
    return messages
