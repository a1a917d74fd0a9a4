"""``KlarnaEmulator``: run the emulator as a subprocess and drive it.

    with KlarnaEmulator(DatasetSpec(payouts=10), latency_ms=5) as emu:
        config = emu.config()            # connector config pointing at the emulator
        emu.grow(new_payouts=2, late_payouts=1)
        expected = emu.dataset.payouts() # in-process mirror of what the server serves

Standard library only (urllib for the admin endpoints).
"""
from __future__ import annotations

import atexit
import json
import os
import queue
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request

from .dataset import Dataset, DatasetSpec
from .dates import format_datetime, parse_datetime
from .faults import FaultConfig

__all__ = ["KlarnaEmulator", "EmulatorStartError"]

_KNOB_FLAGS = {
    "latency_ms": "--latency-ms",
    "rate_limit_rps": "--rate-limit-rps",
    "rate_limit_accounting": "--rate-limit-accounting",
    "other_traffic_rps": "--other-traffic-rps",
    "other_traffic_pattern": "--other-traffic-pattern",
    "other_traffic_step_at_s": "--other-traffic-step-at-s",
    "other_traffic_seed": "--other-traffic-seed",
    "error_5xx": "--error-5xx",
    "connection_reset": "--connection-reset",
    "truncated_body": "--truncated-body",
    "invalid_json": "--invalid-json",
    "slow": "--slow",
    "slow_seconds": "--slow-seconds",
    "fault_seed": "--fault-seed",
}


class EmulatorStartError(RuntimeError):
    pass


class KlarnaEmulator:
    """Context manager around ``python -m klarna_emulator`` (a subprocess).

    ``tls=True`` serves https with a self-signed certificate (``.certificate``, its PEM file): clients
    verifying against the default CA store refuse it.

    ``knobs`` are FaultConfig fields (latency_ms, rate_limit_rps, rate_limit_accounting,
    other_traffic_rps, other_traffic_pattern, other_traffic_step_at_s, other_traffic_seed,
    retry_after, error_5xx, connection_reset, truncated_body, invalid_json, slow,
    slow_seconds, fault_seed, fail_requests, endpoint_faults, disputes_enrolled) applied at start
    (see faults.py).
    """

    def __init__(self, spec: DatasetSpec | None = None, username: str = "emulator",
                 password: str = "emulator-secret", *, host: str = "127.0.0.1", port: int = 0,
                 start_timeout: float = 10.0, stop_timeout: float = 10.0, verbose: bool = False, tls: bool = False,
                 **knobs):
        self.spec = spec or DatasetSpec()
        self.username, self.password = username, password
        self.host, self.port = host, port
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.verbose = verbose
        self.tls = tls
        self.certificate: str | None = None  # with tls: the PEM file of the server's self-signed certificate
        self.knobs = FaultConfig.from_dict(knobs)  # validates early, in the test process
        self.dataset = Dataset(self.spec)
        self.url: str | None = None
        self.process: subprocess.Popen | None = None
        self.extra_stdout: list = []  # anything printed after the ready line (should stay empty)
        self._stderr = None
        self._reader = None

    # ------------------------------------------------------------------ lifecycle
    def command(self) -> list:
        cmd = [sys.executable, "-m", "klarna_emulator", "--host", self.host, "--port", str(self.port),
               "--username", self.username, "--password", self.password, *self.spec.to_cli_args()]
        k = self.knobs
        for name, flag in _KNOB_FLAGS.items():
            value = getattr(k, name)
            if name == "rate_limit_rps":
                value = value or 0
            cmd += [flag, repr(value) if isinstance(value, float) else str(value)]
        if not k.retry_after:
            cmd.append("--no-retry-after")
        if not k.disputes_enrolled:
            cmd.append("--disputes-not-enrolled")
        for n, fault in sorted(k.fail_requests.items()):
            cmd += ["--fail-request", f"{n}={fault}"]
        for endpoint, fault in sorted(k.endpoint_faults.items()):
            cmd += ["--endpoint-fault", f"{endpoint}={fault}"]
        if self.verbose:
            cmd.append("--verbose")
        if self.tls:
            cmd.append("--tls")
        cmd.append("--exit-on-stdin-eof")
        return cmd

    def start(self) -> "KlarnaEmulator":
        if self.process is not None:
            raise RuntimeError("already started")
        # The emulator runs with this interpreter, in whose environment the package is installed.
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._stderr = tempfile.TemporaryFile()
        # stdin is a pipe we never write to: if this process dies, the emulator sees EOF and exits.
        self.process = subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self._stderr, env=env)
        atexit.register(self.stop)
        lines: queue.Queue = queue.Queue()

        def read_stdout(stream=self.process.stdout):
            first = True
            for raw in iter(stream.readline, b""):
                if first:
                    lines.put(raw)
                    first = False
                else:
                    self.extra_stdout.append(raw.decode(errors="replace"))
            if first:
                lines.put(b"")

        self._reader = threading.Thread(target=read_stdout, name="klarna-emulator-stdout", daemon=True)
        self._reader.start()
        try:
            raw = lines.get(timeout=self.start_timeout)
        except queue.Empty:
            self._kill()
            raise EmulatorStartError(f"emulator did not print its ready line within {self.start_timeout}s; "
                                     f"stderr:\n{self.stderr_text()}") from None
        try:
            ready = json.loads(raw)
            self.url = ready["url"]
            self.certificate = ready.get("certificate")
        except (ValueError, KeyError, TypeError, AttributeError):
            self._kill()
            raise EmulatorStartError(f"bad ready line {raw!r}; exit code {self.process.returncode}; "
                                     f"stderr:\n{self.stderr_text()}") from None
        return self

    def stop(self) -> int | None:
        """SIGTERM, wait up to ``stop_timeout``, then SIGKILL. Returns the exit code."""
        p = self.process
        if p is None:
            return None
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        if self._reader is not None:
            self._reader.join(timeout=self.stop_timeout)
        for stream in (p.stdin, p.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        atexit.unregister(self.stop)
        return p.returncode

    def _kill(self):
        p = self.process
        if p is not None and p.poll() is None:
            p.kill()
            try:
                p.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass

    def stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def __enter__(self) -> "KlarnaEmulator":
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def returncode(self):
        return None if self.process is None else self.process.poll()

    @property
    def auth(self) -> tuple:
        return self.username, self.password

    # ------------------------------------------------------------------ admin API
    def _admin(self, method: str, path: str, payload=None, timeout: float = 10.0):
        if self.url is None:
            raise RuntimeError("emulator not started")
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(f"{self.url}/_emulator/{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        # The admin calls trust the emulator's own self-signed certificate (only they do: API clients
        # under test verify as usual).
        context = ssl.create_default_context(cafile=self.certificate) if self.certificate else None
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} /_emulator/{path} -> {e.code}: {e.read().decode(errors='replace')}") from None

    def health(self) -> dict:
        return self._admin("GET", "health")

    def grow(self, new_payouts: int = 0, late_payouts: int = 0, refunds_on_old_orders: int = 0,
             gone_orders: int = 0, new_disputes: int = 0) -> list:
        """Grow the server's dataset and the in-process mirror ``.dataset`` alike (the counts of
        ``Dataset.grow``). Returns the added payment references."""
        counts = {"new_payouts": new_payouts, "late_payouts": late_payouts}
        extra = {"refunds_on_old_orders": refunds_on_old_orders, "gone_orders": gone_orders,
                 "new_disputes": new_disputes}
        counts.update({k: v for k, v in extra.items() if v})
        res = self._admin("POST", "grow", counts)
        added = self.dataset.grow(**counts)
        refs = [p["payment_reference"] for p in added]
        if refs != res["added"]:  # pragma: no cover - would be a determinism bug
            raise AssertionError(f"server and mirror diverged: {res['added']} != {refs}")
        return refs

    def dispute_headers(self) -> dict:
        """The header every disputes request needs besides Basic auth (``x-klarna-basic-mid``)."""
        return {"x-klarna-basic-mid": self.spec.merchant_id}

    def set_faults(self, **knobs) -> dict:
        """Replace ALL fault settings (knobs not given go back to their defaults)."""
        FaultConfig.from_dict(knobs)
        if "fail_requests" in knobs:
            knobs["fail_requests"] = {str(k): v for k, v in knobs["fail_requests"].items()}
        return self._admin("POST", "faults", knobs)

    def faults(self) -> dict:
        return self._admin("GET", "faults")

    def requests(self) -> list:
        """The API request log: [{"n", "method", "path", "query", "status", "fault", "endpoint"}]."""
        return self._admin("GET", "requests")

    def reset_requests(self) -> None:
        """Clear the request log and stats; the request counter n restarts at 1."""
        self._admin("POST", "requests/reset", {})

    def stats(self) -> dict:
        return self._admin("GET", "stats")

    # ------------------------------------------------------------------ connector config
    def config(self, **overrides) -> dict:
        start = format_datetime(parse_datetime(self.spec.first_payout_date) - 86400)
        cfg = {
            "username": self.username,
            "password": self.password,
            "region": "eu",
            "playground": False,
            "base_url_override": self.url,
            "start_date": start,
        }
        cfg.update(overrides)
        return cfg
