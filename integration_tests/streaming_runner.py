"""Helpers of the resilience tests (test_resilience_*.py): a streaming connector runner that can
SIGKILL the connector at a chosen message, in either form of the connector (connector_runner) and on
the shipped manifest or a patched one; an intercepting proxy between the connector and the emulator;
and the secret-leak check.

Every wait here is bounded: a run has a hard timeout (a watchdog SIGKILLs the connector's process
group), the proxy's upstream calls time out, and every process or server started is stopped.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple
from urllib.parse import parse_qsl, quote, urlsplit

import pendulum
import yaml

from connector_runner import ConnectorRun, connector_command, connector_file, protocol_arguments


def shipped_manifest() -> Dict[str, Any]:
    """The manifest both forms run (connector_runner.connector_file: the session's copy of the root's)."""
    return yaml.safe_load(connector_file("manifest.yaml").read_text())


def connector_components() -> Any:
    """components.py, as both forms run it, imported under a name of the tests' own (not the runtime's
    `source_declarative_manifest.components`, which the Connector Builder tests register and remove)."""
    import importlib.util
    import sys

    name = "klarna_connector_components_under_test"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, connector_file("components.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def fast_backoff_manifest(factor: float = 0.01) -> Dict[str, Any]:
    """The shipped manifest with the exponential backoff shrunk, so that exhausting all retries
    takes seconds (the CDK still sleeps 1 s + backoff per retry) instead of about two minutes."""
    manifest = shipped_manifest()
    patched = 0
    for strategy in manifest["definitions"]["backoff_strategies"]:
        if strategy["type"] == "ExponentialBackoffStrategy":
            strategy["factor"] = factor
            patched += 1
    assert patched, "the manifest has no ExponentialBackoffStrategy in definitions.backoff_strategies any more"
    return manifest


@dataclass
class StreamedRun(ConnectorRun):
    killed: bool = False
    elapsed: float = 0.0

    def committed_records(self, stream: str) -> List[Dict[str, Any]]:
        """The records of `stream` emitted before that stream's last STATE message: what a
        destination has committed when the run dies (later records may be lost)."""
        last_state = None
        for index, message in enumerate(self.messages):
            if message.get("type") == "STATE" and message["state"]["stream"]["stream_descriptor"]["name"] == stream:
                last_state = index
        if last_state is None:
            return []
        return [
            m["record"]["data"]
            for m in self.messages[:last_state]
            if m.get("type") == "RECORD" and m["record"]["stream"] == stream
        ]


def stream_connector(
    verb: str,
    config: Optional[Mapping[str, Any]] = None,
    catalog: Optional[Mapping[str, Any]] = None,
    state: Optional[List[Mapping[str, Any]]] = None,
    *,
    timeout: float = 120,
    extra_args: Iterable[str] = (),
    kill_when: Optional[Callable[[Dict[str, Any], List[Dict[str, Any]]], bool]] = None,
    manifest: Optional[Mapping[str, Any]] = None,
    env: Optional[Mapping[str, str]] = None,
    form: str = "package",
) -> StreamedRun:
    """Run the connector, parsing stdout line by line as it arrives.

    `kill_when(message, messages_so_far)` is asked after every message; when it answers True the
    connector's process group gets SIGKILL at once and the run ends with the messages read up to
    and including that one (whatever the dead process had buffered is treated as lost).
    `manifest` runs the connector on that manifest instead of the shipped one; `form` is the
    connector's form, "package" or "manifest-only" (connector_runner).
    """
    with tempfile.TemporaryDirectory(prefix="source-klarna-resilience-") as tmp:
        manifest_file = None
        if manifest is not None:
            manifest_file = Path(tmp) / "patched-manifest.yaml"
            manifest_file.write_text(yaml.safe_dump(dict(manifest), sort_keys=False))
        command, environment = connector_command(form, verb, [*protocol_arguments(tmp, config, catalog, state), *extra_args], manifest_file)
        started = time.monotonic()
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env={**environment, **(env or {})},
            cwd=tmp,
            start_new_session=True,
        )
        timed_out = threading.Event()

        def kill_group() -> None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        def on_timeout() -> None:
            timed_out.set()
            kill_group()

        watchdog = threading.Timer(timeout, on_timeout)
        watchdog.daemon = True
        watchdog.start()
        stderr_chunks: List[str] = []
        stderr_reader = threading.Thread(target=lambda: stderr_chunks.append(process.stderr.read()), daemon=True)
        stderr_reader.start()
        lines: List[str] = []
        messages: List[Dict[str, Any]] = []
        killed = False
        try:
            for line in process.stdout:
                line = line.rstrip("\n")
                lines.append(line)
                try:
                    message = json.loads(line)
                except json.JSONDecodeError:
                    message = {"type": "NOT_JSON", "line": line}
                messages.append(message)
                if kill_when is not None and kill_when(message, messages):
                    kill_group()
                    killed = True
                    break
        finally:
            watchdog.cancel()
            if killed or timed_out.is_set():
                kill_group()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail
                kill_group()
                process.wait(timeout=30)
            process.stdout.close()
            stderr_reader.join(timeout=30)
            process.stderr.close()
        stderr = "".join(stderr_chunks)
        if timed_out.is_set():
            raise AssertionError(
                f"{' '.join(command[-8:])} did not finish within {timeout}s (a hang); "
                f"last output: {lines[-5:]} {stderr[-2000:]}"
            )
    return StreamedRun(
        command=command,
        exit_code=process.returncode,
        stdout_lines=lines,
        stderr=stderr,
        messages=messages,
        killed=killed,
        elapsed=time.monotonic() - started,
    )


def secret_forms(config: Mapping[str, Any]) -> List[str]:
    """Every way the password could show up in output: as is, JSON-escaped, URL-quoted, and inside
    the Basic token (base64 of username:password, and of the password alone)."""
    password, username = config["password"], config.get("username", "")
    forms = {
        password,
        json.dumps(password)[1:-1],
        quote(password, safe=""),
        base64.b64encode(f"{username}:{password}".encode()).decode(),
        base64.b64encode(password.encode()).decode(),
    }
    return sorted(f for f in forms if f)


def assert_no_secret(run: ConnectorRun, config: Mapping[str, Any]) -> None:
    text = run.everything
    leaked = [form for form in secret_forms(config) if form in text]
    assert not leaked, f"the password leaked into the connector's output as {leaked!r}"


# --------------------------------------------------------------------------- intercepting proxy

Response = Tuple[int, Dict[str, str], bytes]


class InterceptingProxy:
    """A plain HTTP proxy between the connector (base_url_override = proxy.url) and the emulator.

    `on_request(path, query)` runs before a request is forwarded: it may act (grow the emulator's
    data at an exact point of a sync), return a replacement path-with-query to forward instead, or
    return a whole `(status, headers, body)` answer. `on_response(path, query, status, body)` may
    return a replacement `(status, body)`. Requests are logged in `seen` as (path, query).
    """

    def __init__(
        self,
        upstream: str,
        on_request: Optional[Callable[[str, Dict[str, str]], Any]] = None,
        on_response: Optional[Callable[[str, Dict[str, str], int, bytes], Optional[Tuple[int, bytes]]]] = None,
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.on_request, self.on_response = on_request, on_response
        self.seen: List[Tuple[str, Dict[str, str]]] = []
        self.hook_errors: List[BaseException] = []
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "InterceptingProxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 60

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the base class's name
                split = urlsplit(self.path)
                query = dict(parse_qsl(split.query, keep_blank_values=True))
                with proxy._lock:
                    proxy.seen.append((split.path, query))
                forward = self.path
                answer: Optional[Response] = None
                try:
                    if proxy.on_request is not None:
                        result = proxy.on_request(split.path, query)
                        if isinstance(result, str):
                            forward = result
                        elif isinstance(result, tuple):
                            answer = result
                    if answer is None:
                        answer = proxy._forward(forward, self.headers)
                        if proxy.on_response is not None:
                            replaced = proxy.on_response(split.path, query, answer[0], answer[2])
                            if replaced is not None:
                                answer = (replaced[0], answer[1], replaced[1])
                except BaseException as error:  # a broken hook must fail the test, not hang it
                    proxy.hook_errors.append(error)
                    answer = (599, {"Content-Type": "application/json"}, b'{"error_code":"PROXY_HOOK_FAILED"}')
                status, headers, body = answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def _forward(self, path: str, headers: Mapping[str, str]) -> Response:
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            sent = {name: headers[name] for name in ("Authorization", "Accept", "User-Agent") if headers.get(name)}
            connection.request("GET", path, headers=sent)
            response = connection.getresponse()
            body = response.read()
            kept = {
                name: response.headers[name]
                for name in ("Content-Type", "Retry-After", "Klarna-Correlation-Id", "WWW-Authenticate")
                if response.headers.get(name)
            }
            return response.status, kept, body
        finally:
            connection.close()

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


# --------------------------------------------------------------------------- exactness checks

SETTLEMENT_STREAMS = ("payouts", "transactions", "payout_summaries")
# The Settlements API paths the fault and moving-data tests intercept and name in their assertions.
PAYOUTS_PATH = "/settlements/v1/payouts"
TRANSACTIONS_PATH = "/settlements/v1/transactions"
SUMMARY_PATH = "/settlements/v1/payouts/summary"


def days_ago(days: float) -> str:
    """Midnight UTC `days` days ago, as Klarna writes date-times: test data stays inside the few
    recent date windows whatever day the tests run on."""
    moment = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days)
    return moment.strftime("%Y-%m-%dT00:00:00Z")


def first_of_month(months_back: int, day: int = 1) -> str:
    """`day` of the month `months_back` months before the running one, 00:00:00 UTC."""
    month = pendulum.now("UTC").start_of("month").subtract(months=months_back)
    return month.replace(day=day).strftime("%Y-%m-%dT00:00:00Z")


def row_content(row: Mapping[str, Any], drop: Iterable[str] = ("transaction_key", "payout_date")) -> str:
    dropped = set(drop)
    return json.dumps({k: v for k, v in row.items() if k not in dropped}, sort_keys=True)


def union_by_key(rows: Iterable[Mapping[str, Any]], key: str) -> Dict[Any, Mapping[str, Any]]:
    """Rows by primary key, as a deduplicating destination keeps them; a key seen again must come
    with the very same record (re-emitted rows repeat keys, they never change them)."""
    union: Dict[Any, Mapping[str, Any]] = {}
    changed = []
    for row in rows:
        previous = union.get(row[key])
        if previous is not None and previous != row:
            changed.append(row[key])
        union[row[key]] = row
    assert not changed, f"{len(changed)} {key}s came back with other content, e.g. {changed[:3]}"
    return union


def assert_payouts_exact(emulator, rows: List[Mapping[str, Any]], repeats_allowed: bool = False, expected=None) -> None:
    expected = emulator.dataset.payouts() if expected is None else expected
    if not repeats_allowed:
        counts = Counter(row["payment_reference"] for row in rows)
        doubled = [ref for ref, n in counts.items() if n > 1]
        assert not doubled, f"payouts emitted more than once: {doubled[:5]}"
    got = union_by_key(rows, "payment_reference")
    want = {payout["payment_reference"]: payout for payout in expected}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not missing and not extra, f"payouts missing: {missing[:5]} ({len(missing)}), unexpected: {extra[:5]} ({len(extra)})"
    assert got == want, "payouts differ from the emulator's"


def assert_transactions_exact(emulator, rows: List[Mapping[str, Any]], repeats_allowed: bool = False, payout_refs=None) -> None:
    """The transactions equal the emulator's rows (of `payout_refs`, default all payouts) as a
    multiset of contents, with unique keys (or, with `repeats_allowed`, keys that only repeat)."""
    if not repeats_allowed:
        counts = Counter(row["transaction_key"] for row in rows)
        doubled = [key for key, n in counts.items() if n > 1]
        assert not doubled, f"{len(doubled)} transaction keys emitted more than once, e.g. {doubled[:3]}"
    got = list(union_by_key(rows, "transaction_key").values())
    payouts = {payout["payment_reference"]: payout for payout in emulator.dataset.payouts()}
    refs = list(payouts) if payout_refs is None else list(payout_refs)
    expected = Counter(row_content(row) for ref in refs for row in emulator.dataset.transactions_for(ref))
    actual = Counter(row_content(row) for row in got)
    missing, extra = expected - actual, actual - expected
    missing_refs = sorted({json.loads(c)["payment_reference"] for c in missing})
    assert not missing and not extra, (
        f"transactions: {sum(missing.values())} missing (payouts {missing_refs[:5]}), {sum(extra.values())} unexpected"
    )
    wrong_dates = [row["transaction_key"] for row in got if row.get("payout_date") != payouts[row["payment_reference"]]["payout_date"]]
    assert not wrong_dates, f"transactions with another payout_date than their payout's: {wrong_dates[:3]}"


def assert_summaries_match(emulator, rows: List[Mapping[str, Any]], repeats_allowed: bool = False) -> None:
    """Each payout summary equals the emulator's summary of its window and currency, once per key."""
    if not repeats_allowed:
        counts = Counter((row["summary_settlement_currency"], row["summary_month"]) for row in rows)
        assert max(counts.values(), default=1) == 1, f"summaries emitted twice: {[k for k, n in counts.items() if n > 1][:3]}"
    for row in rows:
        expected = emulator.dataset.summary(row["summary_payout_date_start"], row["summary_payout_date_end"], row["summary_settlement_currency"])
        assert row["summary_month"] == row["summary_payout_date_start"], row  # the emulator echoes the window
        klarnas = {k: v for k, v in row.items() if k != "summary_month"}
        assert [klarnas] == expected, f"summary differs from the emulator's: {row}"


def settlement_by_currency(rows: Iterable[Mapping[str, Any]], amount: Callable[[Mapping[str, Any]], int], currency: str) -> Dict[str, int]:
    totals: Dict[str, int] = {}
    for row in rows:
        totals[row[currency]] = totals.get(row[currency], 0) + amount(row)
    return totals


def assert_clean_run(run: ConnectorRun, config: Mapping[str, Any]) -> None:
    """Protocol only on stdout, no bare traceback on stderr, no secret anywhere."""
    not_protocol = [m["line"][:200] for m in run.messages if m.get("type") == "NOT_JSON" and m["line"].strip()]
    assert not not_protocol, f"stdout lines that are not Airbyte messages: {not_protocol[:3]}"
    assert "Traceback" not in run.stderr, f"a bare traceback on stderr: {run.stderr[-2000:]}"
    assert_no_secret(run, config)


def run_concurrently(jobs: Mapping[str, Callable[[], Any]], workers: int = 8) -> Dict[str, Any]:
    """Runs independent scenarios (each mostly waiting on backoff sleeps) side by side; returns each
    one's result or the exception it raised."""
    from concurrent.futures import ThreadPoolExecutor

    results: Dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        for name, future in futures.items():
            try:
                results[name] = future.result(timeout=900)
            except BaseException as error:  # reported by the test that reads it
                results[name] = error
    return results


# --------------------------------------------------------------------------- scenarios run side by side


def selected_scenarios(request, param: str = "scenario") -> List[str]:
    """The values of the `scenario` parameter of the tests of the requesting module that this
    session will run (so `-k` on one test runs only its scenario)."""
    names: List[str] = []
    for item in request.session.items:
        if getattr(item, "module", None) is request.module and hasattr(item, "callspec"):
            value = item.callspec.params.get(param)
            if isinstance(value, str) and value not in names:
                names.append(value)
    return names


def scenario_results(request, scenarios: Mapping[str, Callable[[], Any]], workers: int = 16, also: Iterable[str] = ()) -> Dict[str, Any]:
    """Runs the selected scenarios of a module at once (and the scenarios named in `also`): they mostly
    wait (on backoff sleeps, on the interpreter starting), so side by side they cost about as long as
    the longest one."""
    wanted = selected_scenarios(request)
    wanted += [name for name in also if name not in wanted]
    unknown = [name for name in wanted if name not in scenarios]
    assert not unknown, f"tests ask for scenarios nobody defined: {unknown}"
    return run_concurrently({name: scenarios[name] for name in wanted}, workers=workers)


def result_of(results: Mapping[str, Any], name: str) -> Any:
    result = results[name]
    if isinstance(result, BaseException):
        raise result
    return result
