#!/usr/bin/env python3
"""Speed and memory figures of source-klarna 2.0.0 in both its forms (a report, not a test).

The two forms, side by side in one run (--runtime both, the default; or one of them alone):
  source-klarna  the installed package's console script (the `source-klarna` next to sys.executable)
  manifest-only  build/manifest-only's manifest.yaml + components.py on Airbyte's stock
                 `source-declarative-manifest` from .venv-manifest-only (bench/manifest_only_connector.py)
against Airbyte's published connector (the 0.2.16 manifest on the same CDK, scenario `baseline`).

Each scenario starts the Klarna emulator (the `klarna_emulator` package, emulator/) as a subprocess with a
chosen size and latency, runs `<form> read` as a child process per form, parses its stdout as it
streams, and prints per run: wall time, CPU time (user+sys of the connector process), records and
records/s, requests made and 429s received (the emulator's request log), and the connector's peak RSS
(ru_maxrss from os.wait4). A final summary table lists each target with the figure per form and whether
it is met; the exit code is 0 unless --strict is given and a target is not met.

Scenarios (--scenarios, comma separated; default full,cpu,orders,baseline):
  full         settlements: PAYOUTS x TPP (200 x 250) at --latency-ms (150), each form at --concurrency-levels
  cpu          CPU-bound: --cpu-payouts x TPP (400 x 250 = 100,000 transactions) at 0 ms latency
  baseline     Airbyte's published connector 0.2.16 (its manifest, fetched at run time) in the `full`
               and `cpu` setups, for the ratios against it
  orders       orders + captures + refunds at 12,000 orders, 0 ms, concurrency 30, max_requests_per_second 200
               (bench/orders_bench.py; --orders-100k adds 100,000 orders for the peak RSS)
  incremental  a full sync, then 1 % more payouts (at least one), then an incremental sync (opt-in)
  million      1,000,000 transactions (--million-payouts 4000 x TPP) at 0 ms, default concurrency (opt-in)

Run: `make bench` or `python bench/bench.py [--scenarios ...] [--orders-100k] [--json out.json]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

import baseline as baseline_mod  # noqa: E402
import orders_bench  # noqa: E402
from runner import ReadResult, run_json_command, run_read  # noqa: E402

ALL_SCENARIOS = ("full", "incremental", "cpu", "million", "baseline", "orders")
DEFAULT_SCENARIOS = "full,cpu,orders,baseline"


def connector_file(name: str) -> Path:
    """The connector's manifest.yaml or components.py as the package runs them (source_klarna.run), else the checkout's."""
    try:
        from source_klarna.run import connector_file as packaged

        return packaged(name)
    except Exception:  # the bench can also run where the package is not importable
        return REPO / name


def connector_default_concurrency(fallback: int = 12) -> int:
    """The `concurrency` default of the manifest the bench's interpreter has installed (the spec's)."""
    try:
        import yaml

        spec = yaml.safe_load(connector_file("manifest.yaml").read_text())["spec"]["connection_specification"]
        return int(spec["properties"]["concurrency"]["default"])
    except Exception:
        return fallback


CONNECTOR_DEFAULT_CONCURRENCY = connector_default_concurrency()
# The settlements streams (pending_transactions, a snapshot of what is not paid out yet, is left out).
STREAMS = ("payouts", "transactions", "payout_summaries")
SHORT = {"payouts": "p", "transactions": "t", "payout_summaries": "s"}
# The two forms of the connector: the package's console script, and manifest.yaml + components.py of
# build/manifest-only on Airbyte's stock source-declarative-manifest (bench/manifest_only_connector.py).
FORMS = ("source-klarna", "manifest-only")
BASELINE = "baseline 0.2.16"
MANIFEST_ONLY_BUILD = REPO / "build" / "manifest-only"


def form_command(form: str) -> List[str]:
    if form == "manifest-only":
        return [sys.executable, str(HERE / "manifest_only_connector.py")]
    return [script("source-klarna")]


def stale_files(forms: List[str]) -> List[str]:
    """Where what a form of `forms` runs differs from the checkout's manifest.yaml / components.py."""
    notes = []
    for name in ("manifest.yaml", "components.py"):
        checkout = REPO / name
        for form, path in (("source-klarna", connector_file(name)), ("manifest-only", MANIFEST_ONLY_BUILD / name)):
            if form not in forms or path.resolve() == checkout.resolve() or not checkout.exists():
                continue
            if not path.exists():
                notes.append(f"{form}: {path} is missing")
            elif path.read_bytes() != checkout.read_bytes():
                fix = "`make install`" if form == "source-klarna" else "`python -m scripts.manifest_only`"
                notes.append(f"{form} runs a {name} that differs from the checkout's ({path}; {fix} refreshes it)")
    return notes


# --------------------------------------------------------------------------------------- helpers


def script(name: str) -> str:
    """A console script installed next to the running interpreter (the venv's bin/)."""
    candidate = Path(sys.executable).parent / name
    if not candidate.exists():
        raise SystemExit(f"{candidate} does not exist: install the connector into this interpreter's environment")
    return str(candidate)


def anchored_first_payout_date(payouts: int, growth: int, currencies: int = 3, days_before_today: int = 2) -> str:
    """A first payout date such that the newest payout (after growth) is `days_before_today` days old.

    A real account's payouts run up to today; a fixed 2024 date would make every date-windowed
    stream (payout windows, monthly summaries) read empty windows up to now on every sync.
    """
    days = math.ceil((payouts + growth) / currencies)
    first = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=days + days_before_today)
    return f"{first.isoformat()}T00:00:00Z"


def one_percent(payouts: int) -> int:
    return max(1, math.ceil(payouts / 100))


def fmt_s(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def fmt_int(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:,.0f}"


# ------------------------------------------------------------------------------------- emulator


class Emulator:
    """The emulator subprocess of one scenario, with what the bench needs from it."""

    def __init__(self, payouts: int, transactions_per_payout: int, latency_ms: int, rate_limit_rps: int,
                 first_payout_date: str, seed: int = 1) -> None:
        from klarna_emulator import DatasetSpec, KlarnaEmulator

        self.spec = DatasetSpec(seed=seed, payouts=payouts, transactions_per_payout=transactions_per_payout,
                                first_payout_date=first_payout_date)
        self._emulator = KlarnaEmulator(spec=self.spec, latency_ms=latency_ms,
                                        rate_limit_rps=rate_limit_rps or None, start_timeout=120.0)
        self.latency_ms = latency_ms

    def __enter__(self) -> "Emulator":
        self._emulator.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._emulator.__exit__(*exc)

    @property
    def url(self) -> str:
        return self._emulator.url

    def config(self, **overrides: Any) -> Dict[str, Any]:
        return self._emulator.config(**overrides)

    def grow(self, new_payouts: int) -> List[str]:
        """Adds payouts after the newest one; returns their payment references."""
        return self._emulator.grow(new_payouts=new_payouts)

    def reset_requests(self) -> None:
        self._emulator.reset_requests()

    def request_counts(self) -> Tuple[int, int, Dict[str, int]]:
        """(API requests, 429s, requests per endpoint) since the last reset, from /_emulator/stats."""
        time.sleep(0.05)  # the server logs a request just after answering it
        stats = self._emulator.stats()
        by_endpoint = {str(k): int(v) for k, v in (stats.get("by_endpoint") or {}).items()}
        return int(stats.get("total", sum(by_endpoint.values()))), int(stats.get("rate_limited", 0)), by_endpoint

    def cpu_seconds(self) -> Optional[float]:
        """user+sys CPU time the emulator process has used so far (Linux /proc), None elsewhere."""
        pid = getattr(self._emulator, "pid", None)
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError, TypeError):
            return None

    def expected_counts(self) -> Dict[str, int]:
        """Rows a full sync from the config's start_date must deliver, from the emulator's own mirror."""
        dataset = self._emulator.dataset
        payouts = dataset.payouts()
        months = {(p.get("currency_code"), str(p.get("payout_date"))[:7]) for p in payouts}
        return {
            "payouts": len(payouts),
            "transactions": dataset.transaction_count(),
            "payout_summaries": len(months),
        }


# ------------------------------------------------------------------------------------- catalogs


def configured_catalog(discovered: Dict[str, Any], incremental: bool,
                       only: Optional[List[str]] = None) -> Dict[str, Any]:
    """Every discovered stream (or those named in `only`), incremental + append_dedup where supported."""
    streams = []
    for stream in discovered["streams"]:
        if only and stream["name"] not in only:
            continue
        supports_incremental = "incremental" in (stream.get("supported_sync_modes") or [])
        if incremental and supports_incremental:
            streams.append({
                "stream": stream,
                "sync_mode": "incremental",
                "destination_sync_mode": "append_dedup",
                "cursor_field": stream.get("default_cursor_field") or [],
                "primary_key": stream.get("source_defined_primary_key") or [],
            })
        else:
            streams.append({
                "stream": stream,
                "sync_mode": "full_refresh",
                "destination_sync_mode": "overwrite",
                "primary_key": stream.get("source_defined_primary_key") or [],
            })
    return {"streams": streams}


def discover(command: List[str], config: Dict[str, Any], workdir: Path) -> Dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "discover_config.json"
    path.write_text(json.dumps(config))
    for message in run_json_command([*command, "discover", "--config", str(path)]):
        if message.get("type") == "CATALOG":
            return message["catalog"]
    raise RuntimeError(f"{' '.join(command)} discover printed no catalog")


# ------------------------------------------------------------------------------------- one run


@dataclass
class Run:
    scenario: str
    label: str
    connector: str  # a form ("source-klarna", "manifest-only") or "baseline 0.2.16"
    concurrency: Optional[int]
    latency_ms: int
    payouts: int
    transactions_per_payout: int
    result: ReadResult
    requests: int
    too_many: int
    requests_by_path: Dict[str, int]
    emulator_cpu_s: Optional[float] = None
    bench_cpu_s: Optional[float] = None
    load_before: Optional[float] = None
    repeats_wall_s: List[float] = field(default_factory=list)
    expected: Dict[str, int] = field(default_factory=dict)
    expected_exact: bool = True  # False: `expected` are lower bounds (an incremental sync)
    problems: List[str] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        return not self.problems

    def as_dict(self) -> Dict[str, Any]:
        r = self.result
        return {
            "scenario": self.scenario, "label": self.label, "connector": self.connector,
            "concurrency": self.concurrency, "latency_ms": self.latency_ms, "payouts": self.payouts,
            "transactions_per_payout": self.transactions_per_payout, "exit_code": r.exit_code,
            "wall_s": round(r.wall_s, 3), "cpu_s": round(r.cpu_s, 3), "user_s": round(r.user_s, 3),
            "sys_s": round(r.sys_s, 3), "records": r.records, "total_records": r.total_records,
            "records_per_s": round(r.records_per_s, 1),
            "steady_records_per_s": None if r.steady_records_per_s is None else round(r.steady_records_per_s, 1),
            "first_record_s": None if r.first_record_s is None else round(r.first_record_s, 3),
            "requests": self.requests, "http_429": self.too_many, "requests_by_path": self.requests_by_path,
            "peak_rss_mb": round(r.peak_rss_mb, 1), "state_messages": r.state_messages,
            "rss_mb_at_10pct_records": _round(r.rss_at_fraction(0.1)),
            "rss_mb_at_50pct_records": _round(r.rss_at_fraction(0.5)),
            "rss_samples": [(round(t, 2), n, round(m, 1)) for t, n, m in r.rss_samples],
            "emulator_cpu_s": _round(self.emulator_cpu_s, 2), "bench_cpu_s": _round(self.bench_cpu_s, 2),
            "load_avg_1m_before": self.load_before, "repeats_wall_s": [round(w, 3) for w in self.repeats_wall_s],
            "expected": self.expected, "expected_exact": self.expected_exact, "problems": self.problems,
            "errors": r.errors,
        }


def _round(value: Optional[float], digits: int = 1) -> Optional[float]:
    return None if value is None else round(value, digits)


def check_counts(run: Run) -> None:
    r = run.result
    if r.exit_code != 0:
        run.problems.append(f"exit code {r.exit_code}")
    if r.errors:
        run.problems.append(f"{len(r.errors)} error message(s): {r.errors[0][:200]}")
    for stream, expected in run.expected.items():
        got = r.records.get(stream, 0)
        if run.expected_exact and got != expected:
            run.problems.append(f"{stream}: {got} records, the emulator holds {expected}")
        if not run.expected_exact and got < expected:
            run.problems.append(f"{stream}: {got} records, at least {expected} expected")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        # What is measured: the installed `source-klarna` and/or the manifest-only form on the stock runtime.
        self.forms: Dict[str, List[str]] = {form: form_command(form) for form in args.forms}
        self.connector = next(iter(self.forms.values()))
        self.runs: List[Run] = []
        self.notes: List[str] = []
        self.workroot = Path(tempfile.mkdtemp(prefix="klarna-bench-"))
        self._catalogs: Dict[str, Dict[str, Any]] = {}
        self._baseline_manifest: Optional[Dict[str, Any]] = None
        self._baseline_reason: Optional[str] = None
        self._run_no = 0
        self.profile_text: Optional[str] = None
        self.orders = orders_bench.OrdersScenario(self)
        self.load_at_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        self.notes.extend(stale_files(list(self.forms)))

    # -- infrastructure

    def emulator(self, payouts: int, latency_ms: int, growth: int = 0, rate_limit_rps: Optional[int] = None) -> Emulator:
        first = self.args.first_payout_date or anchored_first_payout_date(payouts, growth)
        limit = self.args.rate_limit_rps if rate_limit_rps is None else rate_limit_rps
        return Emulator(payouts, self.args.transactions_per_payout, latency_ms, limit, first, seed=self.args.seed)

    def catalog(self, emulator: Emulator, form: Optional[str] = None) -> Dict[str, Any]:
        """The discovered catalog of a form (each form discovers its own, once)."""
        form = form or next(iter(self.forms))
        if form not in self._catalogs:
            self._catalogs[form] = discover(self.forms[form], emulator.config(), self.workroot / f"discover-{form}")
        return self._catalogs[form]

    def catalog_of(self, emulator: Emulator, streams: Optional[List[str]], form: Optional[str] = None) -> Dict[str, Any]:
        """The configured catalog (incremental, append_dedup) of `streams` (None: all), from discover."""
        return configured_catalog(self.catalog(emulator, form), incremental=True, only=streams)

    def config(self, emulator: Emulator, concurrency: Optional[int]) -> Dict[str, Any]:
        overrides: Dict[str, Any] = {}
        if concurrency is not None:
            overrides["concurrency"] = concurrency
        if self.args.lookback_days is not None:
            overrides["lookback_window_days"] = self.args.lookback_days
        return emulator.config(**overrides)

    def wait_for_quiet(self) -> None:
        """On a shared machine: wait (up to --max-wait s) until the 1-min load average is <= --wait-for-load."""
        limit = self.args.wait_for_load
        if limit is None or not hasattr(os, "getloadavg"):
            return
        deadline = time.monotonic() + self.args.max_wait
        while os.getloadavg()[0] > limit and time.monotonic() < deadline:
            time.sleep(5)

    def expected_for(self, emulator: Emulator) -> Dict[str, int]:
        expected = emulator.expected_counts()
        return {name: count for name, count in expected.items() if not self.args.streams or name in self.args.streams}

    def workdir(self) -> Path:
        self._run_no += 1
        return self.workroot / f"run{self._run_no:02d}"

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def measure(self, scenario: str, label: str, emulator: Emulator, payouts: int, concurrency: Optional[int],
                config: Dict[str, Any], catalog: Dict[str, Any], command: List[str], connector: str,
                state: Optional[List[Dict[str, Any]]] = None) -> Run:
        """One measured read (or --repeat reads, keeping the one with the median wall time)."""
        attempts: List[Run] = []
        for attempt in range(max(1, self.args.repeat)):
            self.log(f"  {scenario:<11} {label:<26}" + (f" (#{attempt + 1})" if self.args.repeat > 1 else ""))
            self.wait_for_quiet()
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            emulator.reset_requests()
            emulator_cpu = emulator.cpu_seconds()
            own_cpu = resource.getrusage(resource.RUSAGE_SELF)
            result = run_read(command, config, catalog, state, workdir=self.workdir(), timeout_s=self.args.timeout)
            own_cpu_after = resource.getrusage(resource.RUSAGE_SELF)
            emulator_cpu_after = emulator.cpu_seconds()
            requests, too_many, by_path = emulator.request_counts()
            run = Run(scenario, label, connector, concurrency, emulator.latency_ms, payouts,
                      self.args.transactions_per_payout, result, requests, too_many, by_path)
            run.load_before = None if load is None else round(load, 2)
            if emulator_cpu is not None and emulator_cpu_after is not None:
                run.emulator_cpu_s = emulator_cpu_after - emulator_cpu
            run.bench_cpu_s = (own_cpu_after.ru_utime + own_cpu_after.ru_stime) - (own_cpu.ru_utime + own_cpu.ru_stime)
            self.log(f"    {result.wall_s:.1f} s wall, {result.cpu_s:.1f} s CPU, {result.total_records:,} records, "
                     f"{requests} requests, {too_many} x 429, {result.peak_rss_mb:.0f} MB"
                     + (f", exit {result.exit_code}" if result.exit_code else "")
                     + (f", load {load:.1f}" if load is not None else ""))
            attempts.append(run)
        attempts.sort(key=lambda r: r.result.wall_s)
        chosen = attempts[(len(attempts) - 1) // 2]
        chosen.repeats_wall_s = [r.result.wall_s for r in attempts]
        self.runs.append(chosen)
        return chosen

    def ours(self, form: str, scenario: str, label: str, emulator: Emulator, payouts: int, concurrency: int,
             state: Optional[List[Dict[str, Any]]] = None) -> Run:
        """One measured read of a form of the connector (label: prefixed with the form)."""
        return self.measure(scenario, f"{form} {label}", emulator, payouts, concurrency, self.config(emulator, concurrency),
                            self.catalog_of(emulator, self.args.streams, form), self.forms[form], form, state)

    # -- the baseline

    def baseline_manifest(self) -> Optional[Dict[str, Any]]:
        if self._baseline_manifest is None and self._baseline_reason is None:
            manifest, reason = baseline_mod.fetch_manifest(Path(self.args.cache_dir))
            self._baseline_manifest, self._baseline_reason = manifest, (reason or None)
            if reason:
                self.notes.append(f"baseline skipped: {reason}")
                self.log(f"  baseline skipped: {reason}")
        return self._baseline_manifest

    def baseline(self, scenario: str, emulator: Emulator, payouts: int) -> Optional[Run]:
        manifest = self.baseline_manifest()
        if manifest is None:
            return None
        try:
            pointed = baseline_mod.point_at(manifest, emulator.url)
        except ValueError as error:
            self.notes.append(f"baseline skipped: {error}")
            return None
        ours = emulator.config()
        config = {"__injected_declarative_manifest": pointed, "username": ours["username"],
                  "password": ours["password"], "region": "eu", "playground": False}
        command = [script("source-declarative-manifest")]
        try:
            discovered = discover(command, config, self.workroot / "discover-baseline")
        except (RuntimeError, OSError) as error:
            self.notes.append(f"baseline skipped: discover failed: {str(error)[:300]}")
            return None
        catalog = configured_catalog(discovered, incremental=False)
        run = self.measure(scenario, f"{BASELINE} @{emulator.latency_ms}ms", emulator, payouts, None, config,
                           catalog, command, BASELINE)
        expected = emulator.expected_counts()
        run.expected = {name: expected[name] for name in baseline_mod.stream_names(manifest) if name in expected}
        check_counts(run)
        return run

    # -- scenarios

    def scenario_full(self, with_ours: bool, with_baseline: bool) -> None:
        a = self.args
        self._levels_then_baseline("full", a.payouts, a.latency_ms, with_ours, with_baseline)

    def scenario_cpu(self, with_ours: bool, with_baseline: bool) -> None:
        self._levels_then_baseline("cpu", self.args.cpu_payouts, 0, with_ours, with_baseline)

    def _levels_then_baseline(self, scenario: str, payouts: int, latency_ms: int, with_ours: bool, with_baseline: bool) -> None:
        """One emulator: each form at every --concurrency-levels level, then the baseline."""
        a = self.args
        self.log(f"{scenario}: {payouts} payouts x {a.transactions_per_payout} transactions, {latency_ms} ms latency")
        with self.emulator(payouts, latency_ms) as emulator:
            expected = self.expected_for(emulator)
            if with_ours:
                for level in a.concurrency_levels:
                    for form in self.forms:
                        run = self.ours(form, scenario, f"c={level} @{latency_ms}ms", emulator, payouts, level)
                        run.expected = expected
                        check_counts(run)
            if with_baseline:
                self.baseline(scenario, emulator, payouts)

    def scenario_incremental(self) -> None:
        for form in self.forms:
            self._incremental(form)

    def _incremental(self, form: str) -> None:
        """A full sync, 1 % growth, an incremental sync from the full sync's state (an emulator per form:
        the growth changes its data)."""
        a = self.args
        growth = one_percent(a.payouts)
        level = a.default_concurrency
        self.log(f"incremental ({form}): {a.payouts} payouts x {a.transactions_per_payout}, {a.latency_ms} ms, "
                 f"then +{growth} payouts")
        with self.emulator(a.payouts, a.latency_ms, growth=growth) as emulator:
            expected = self.expected_for(emulator)
            full = self.ours(form, "incremental", f"full c={level} @{a.latency_ms}ms", emulator, a.payouts, level)
            full.expected = expected
            check_counts(full)
            if not full.result.final_states:
                full.problems.append("no STATE message: the incremental sync starts without state")
            added = emulator.grow(growth)
            # The state as a platform stores it: the last state message of each stream, without its stats.
            state = [{k: v for k, v in message.items() if k not in ("sourceStats", "destinationStats")}
                     for message in full.result.final_states]
            incr = self.ours(form, "incremental", f"incremental +{growth} c={level}", emulator, a.payouts + growth, level,
                             state=state)
            incr.expected_exact = False
            incr.expected = {"payouts": len(added), "transactions": len(added) * a.transactions_per_payout}
            check_counts(incr)

    def scenario_million(self) -> None:
        a = self.args
        level = a.default_concurrency
        self.log(f"million: {a.million_payouts} payouts x {a.transactions_per_payout} transactions, "
                 f"{a.million_latency_ms} ms latency")
        with self.emulator(a.million_payouts, a.million_latency_ms) as emulator:
            expected = self.expected_for(emulator)
            for form in self.forms:
                run = self.ours(form, "million", f"{a.million_payouts * a.transactions_per_payout:,} tx c={level} "
                                                 f"@{a.million_latency_ms}ms", emulator, a.million_payouts, level)
                run.expected = expected
                check_counts(run)

    def scenario_profile(self) -> None:
        """One read more under py-spy (not part of the figures: sampling slows it down): the cpu setup
        (--profile-scenario cpu, with the baseline's read of the same data when the baseline scenario is on)
        or the orders setup (--profile-scenario orders: --order-sizes' largest at the first latency)."""
        import profile_read

        a = self.args
        form = a.profile_form
        command_of_form = self.forms.get(form) or form_command(form)
        out_dir = Path(a.profile_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        if profile_read.py_spy() is None:
            self.notes.append("profile skipped: py-spy is not installed (.venv/bin/pip install py-spy)")
            return
        profiles = []
        if a.profile_scenario == "orders":
            size = max(a.order_sizes)
            latency = a.order_latencies[0]
            level = a.orders_concurrency
            payouts = math.ceil(size / orders_bench.orders_per_payout(a.transactions_per_payout, a.seed))
            setup = f"{size:,} orders at {latency} ms, concurrency {level}, max_requests_per_second {a.orders_rps}"
            emulator_cm = self.emulator(payouts, latency)
        else:
            level = a.profile_concurrency or a.default_concurrency
            setup = f"{a.cpu_payouts} x {a.transactions_per_payout} at 0 ms, concurrency {level}"
            emulator_cm = self.emulator(a.cpu_payouts, 0)
        raw = out_dir / f"profile-{form}-{a.profile_scenario}-c{level}-{stamp}.txt"
        self.log(f"profile: py-spy over a read by {form} of {setup}")
        with emulator_cm as emulator:
            if a.profile_scenario == "orders":
                config = emulator.config(concurrency=level, max_requests_per_second=a.orders_rps)
                catalog = self.catalog_of(emulator, list(orders_bench.ORDER_STREAMS), form)
            else:
                config = self.config(emulator, level)
                catalog = self.catalog_of(emulator, a.streams, form)
            command = profile_read.wrap(command_of_form, raw, rate=a.profile_rate, gil=a.profile_gil)
            result = run_read(command, config, catalog, None, workdir=self.workdir(), timeout_s=a.timeout)
            if result.exit_code != 0 or not raw.exists():
                self.notes.append(f"profile failed (exit {result.exit_code}): {' | '.join(result.errors)[:400]}")
                return
            profiles.append((f"{form} c={level}", raw))
            manifest = self.baseline_manifest() if ("baseline" in a.scenarios and a.profile_scenario == "cpu") else None
            if manifest is not None:
                base_raw = out_dir / f"profile-baseline-{stamp}.txt"
                ours = emulator.config()
                base_config = {"__injected_declarative_manifest": baseline_mod.point_at(manifest, emulator.url),
                               "username": ours["username"], "password": ours["password"], "region": "eu",
                               "playground": False}
                base_command = [script("source-declarative-manifest")]
                try:
                    base_catalog = configured_catalog(
                        discover(base_command, base_config, self.workroot / "discover-baseline"), incremental=False)
                    self.log(f"profile: the same read by the {BASELINE}")
                    base_result = run_read(profile_read.wrap(base_command, base_raw, rate=a.profile_rate,
                                                             gil=a.profile_gil),
                                           base_config, base_catalog, None, workdir=self.workdir(), timeout_s=a.timeout)
                    if base_result.exit_code == 0 and base_raw.exists():
                        profiles.append((BASELINE, base_raw))
                except (RuntimeError, OSError) as error:
                    self.notes.append(f"baseline profile skipped: {str(error)[:200]}")
        mode = "samples of the thread holding the GIL" if a.profile_gil else "samples of non-idle threads"
        self.profile_text = (
            f"py-spy profile of `read` by {form} ({setup}; {mode}, {a.profile_rate} Hz; "
            f"the read took {result.wall_s:.1f} s, {result.cpu_s:.1f} s CPU ({result.user_s:.1f} user + {result.sys_s:.1f} sys) "
            f"under the profiler); raw stacks: "
            + ", ".join(str(path) for _, path in profiles) + "\n\n"
            + profile_read.components_table(profiles, rate=a.profile_rate) + f"\n\n{form}: "
            + profile_read.summarise(raw, top=a.profile_top))

    def run_all(self) -> None:
        s = self.args.scenarios
        if "full" in s or "baseline" in s:
            self.scenario_full("full" in s, "baseline" in s)
        if "incremental" in s:
            self.scenario_incremental()
        if "cpu" in s or "baseline" in s:
            self.scenario_cpu("cpu" in s, "baseline" in s)
        if "million" in s:
            self.scenario_million()
        if "orders" in s:
            self.orders.run()
        if self.args.profile:
            self.scenario_profile()

    # -- report

    def find(self, scenario: str, connector: str = "source-klarna", concurrency: Optional[int] = None,
             label_prefix: str = "") -> Optional[Run]:
        for run in self.runs:
            if run.scenario == scenario and run.connector == connector \
                    and run.label.startswith(f"{connector} {label_prefix}".rstrip()) \
                    and (concurrency is None or run.concurrency == concurrency):
                return run
        return None

    def table(self) -> str:
        header = ("run", "records p/t/s", "wall s", "1st rec s", "CPU s", "rec/s", "steady rec/s", "requests", "429s",
                  "RSS@10% MB", "peak RSS MB", "emu CPU s", "load", "counts")
        rows = []
        for run in self.runs:
            r = run.result
            records = "/".join(str(r.records.get(name, 0)) for name in STREAMS if name in r.records or
                               name in run.expected)
            rows.append((
                f"{run.scenario}: {run.label}",
                records,
                f"{r.wall_s:.1f}",
                fmt_s(r.first_record_s),
                f"{r.cpu_s:.1f}",
                fmt_int(r.records_per_s),
                fmt_int(r.steady_records_per_s),
                str(run.requests),
                str(run.too_many),
                fmt_int(r.rss_at_fraction(0.1)),
                f"{r.peak_rss_mb:.0f}",
                fmt_s(run.emulator_cpu_s),
                fmt_s(run.load_before),
                ("ok" if run.correct else "WRONG") if r.exit_code == 0 else f"exit {r.exit_code}",
            ))
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(str(cell).ljust(widths[i]) if i == 0 else str(cell).rjust(widths[i])
                           for i, cell in enumerate(row)) for row in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def targets(self, form: str) -> List[Tuple[str, Optional[bool], str]]:
        """(target, met: True/False/None for not run, figure) of one form; the same target names for every form."""
        out = self.settlement_targets(form) + self.orders.targets(form)
        runs = [run for run in self.runs if run.connector == form]
        orders = [run for run in self.orders.runs if run.form == form]
        if runs or orders:
            total_429 = sum(run.too_many for run in runs + orders)
            total_requests = sum(run.requests for run in runs + orders)
            out.append(("zero 429s in every run", total_429 == 0,
                        f"{total_429} in {total_requests:,} requests, {len(runs) + len(orders)} runs"))
            small = [(run.result.peak_rss_mb, f"{run.scenario}: {run.label}") for run in runs if run.scenario != "million"]
            small += [(run.result.peak_rss_mb, run.label) for run in orders if run.size < 100_000]
            if small:
                peak, where = max(small)
                out.append(("peak RSS < 250 MB in every other run", peak < 250, f"max {peak:.0f} MB ({where})"))
            wrong = [f"{run.scenario}: {run.label}: {', '.join(run.problems)}" for run in runs if not run.correct]
            wrong += [f"{run.label}: {', '.join(run.problems)}" for run in orders if run.problems]
            out.append(("record counts equal the emulator's data, every run exits 0", not wrong,
                        "all runs" if not wrong else "; ".join(wrong)[:400]))
        return out

    def settlement_targets(self, form: str) -> List[Tuple[str, Optional[bool], str]]:
        a = self.args
        out: List[Tuple[str, Optional[bool], str]] = []
        default = a.default_concurrency
        lat = a.latency_ms
        size = f"{a.payouts} payouts x {a.transactions_per_payout} tx"
        skipped = "baseline not run" + (f": {self._baseline_reason}" if self._baseline_reason else " (scenario baseline)")

        full_d = self.find("full", form, concurrency=default)
        base_full = self.find("full", BASELINE)
        name = (f"(a) settlements {size} @{lat} ms, c={default}: wall >= 3x faster than {BASELINE}"
                + (f" ({base_full.result.wall_s:.1f} s)" if base_full else ""))
        if full_d and base_full:
            ratio = base_full.result.wall_s / full_d.result.wall_s
            out.append((name, ratio >= 3 and full_d.correct,
                        f"{full_d.result.wall_s:.1f} s, {ratio:.2f}x"))
        elif full_d:
            out.append((name, None, f"{full_d.result.wall_s:.1f} s; {skipped}"))
        else:
            out.append((name, None, "not run (scenario full)"))

        cpu_d = self.find("cpu", form, concurrency=default)
        base_cpu = self.find("cpu", BASELINE)
        rows = a.cpu_payouts * a.transactions_per_payout
        name = (f"(b) CPU-bound {rows:,} tx @0 ms, c={default}: records/s >= 0.9x {BASELINE}"
                + (f" ({base_cpu.result.records_per_s:,.0f}/s, steady {fmt_int(base_cpu.result.steady_records_per_s)})"
                   if base_cpu else ""))
        if cpu_d and base_cpu:
            ours_rate, base_rate = cpu_d.result.records_per_s, base_cpu.result.records_per_s
            ratio = ours_rate / base_rate
            out.append((name, ratio >= 0.9 and cpu_d.correct,
                        f"{ours_rate:,.0f}/s, {ratio:.2f}x (steady {fmt_int(cpu_d.result.steady_records_per_s)})"))
        elif cpu_d:
            out.append((name, None, f"{cpu_d.result.records_per_s:,.0f}/s; {skipped}"))
        else:
            out.append((name, None, "not run (scenario cpu)"))

        # Opt-in scenarios and levels: a target row only when they ran.
        full_1 = self.find("full", form, concurrency=1)
        if full_1 and full_d and default != 1:
            ratio = full_1.result.wall_s / full_d.result.wall_s
            out.append((f"settlements @{lat} ms: concurrency {default} >= 3x faster than concurrency 1", ratio >= 3,
                        f"{ratio:.2f}x ({full_1.result.wall_s:.1f} s -> {full_d.result.wall_s:.1f} s)"))
        inc_full = self.find("incremental", form, label_prefix="full")
        inc = self.find("incremental", form, label_prefix="incremental")
        if inc_full and inc and inc_full.requests:
            share = inc.requests / inc_full.requests
            out.append(("incremental sync after 1 % growth <= 5 % of the full sync's requests", share <= 0.05,
                        f"{share:.1%} ({inc.requests} of {inc_full.requests})"))
        million = self.find("million", form)
        if million:
            out.append((f"peak RSS < 250 MB at {million.payouts * million.transactions_per_payout:,} transactions",
                        million.result.peak_rss_mb < 250,
                        f"{million.result.peak_rss_mb:.0f} MB, {million.result.records_per_s:,.0f} records/s"))
        return out

    def summary(self) -> List[Tuple[str, Dict[str, Tuple[Optional[bool], str]]]]:
        """[(target, {form: (met, figure)})], in the order of the targets."""
        rows: Dict[str, Dict[str, Tuple[Optional[bool], str]]] = {}
        for form in self.forms:
            for name, passed, figure in self.targets(form):
                rows.setdefault(name, {})[form] = (passed, figure)
        return list(rows.items())

    def summary_table(self, summary: List[Tuple[str, Dict[str, Tuple[Optional[bool], str]]]]) -> str:
        header = ["target", *[cell for form in self.forms for cell in (form, "met")]]
        body = []
        for name, by_form in summary:
            row = [name]
            for form in self.forms:
                passed, figure = by_form.get(form, (None, "-"))
                row += [figure, "n/a" if passed is None else ("met" if passed else "NOT MET")]
            body.append(row)
        limit = 110  # long figures (a problem list) wrap into the lines below
        widths = [min(limit, max(len(row[i]) for row in [header, *body])) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(header)),
                 "  ".join("-" * w for w in widths)]
        for row in body:
            chunks = [[cell[j:j + widths[i]] for j in range(0, max(1, len(cell)), widths[i])] or [""]
                      for i, cell in enumerate(row)]
            for k in range(max(len(c) for c in chunks)):
                lines.append("  ".join((c[k] if k < len(c) else "").ljust(widths[i])
                                       for i, c in enumerate(chunks)).rstrip())
        return "\n".join(lines)

    def report(self) -> int:
        a = self.args
        print()
        load = " ".join(f"{x:.2f}" for x in self.load_at_start) if self.load_at_start else "-"
        print(f"source-klarna bench  {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC  "
              f"{platform.python_implementation()} {platform.python_version()}  {os.cpu_count()} CPUs  "
              f"load average at start {load}  emulator 429 limit {a.rate_limit_rps or 'off'} req/s  "
              f"forms {', '.join(self.forms)}")
        print("columns: records p/t/s = payouts/transactions/payout_summaries records; 1st rec s = seconds to the "
              "first record (process start-up + first page);\n  CPU s = user+sys of the connector process; rec/s = "
              "records / wall time (incl. start-up); steady rec/s = from the first to the last record;\n  "
              "RSS@10% = the connector's largest sampled RSS until 10 % of its records had arrived; peak RSS = "
              "ru_maxrss;\n  emu CPU s = the emulator's CPU during the run; load = 1-min load average before it; "
              "counts = record counts against the emulator's data")
        if self.runs:
            print()
            print(self.table())
        if self.orders.runs:
            print()
            print("orders: records o/c/r = orders/captures/refunds; orders/s over the whole run and from the first to the "
                  "last record; % of cap = steady orders/s / the rate the connector allows itself;\n  bare client = "
                  "requests/s of plain threaded GETs of orders from the same emulator at the same concurrency; CPU "
                  "ms/order = CPU of the connector process / orders;\n  requests/order = order requests / distinct "
                  "orders named; load = 1-min load average before the run")
            print(self.orders.table())
        for form in self.forms:
            inc_full = self.find("incremental", form, label_prefix="full")
            inc = self.find("incremental", form, label_prefix="incremental")
            if inc_full and inc:
                print()
                print(f"incremental ({form}): full sync {inc_full.requests} requests "
                      f"({', '.join(f'{k} {v}' for k, v in sorted(inc_full.requests_by_path.items()))}); "
                      f"after +{one_percent(a.payouts)} payouts {inc.requests} requests "
                      f"({', '.join(f'{k} {v}' for k, v in sorted(inc.requests_by_path.items()))}); "
                      f"ratio {inc.requests / max(1, inc_full.requests):.1%}")
        print()
        for note in self.notes:
            print(f"note: {note}")
        problems = [(run, error) for run in self.runs for error in run.result.errors[:3]]
        for run, error in problems:
            print(f"error in {run.scenario}: {run.label}: {error[:500]}")
        if self.profile_text:
            print()
            print(self.profile_text)
        summary = self.summary()
        print()
        print("summary (each target, the figure per form, met / NOT MET / n/a = not run):")
        print(self.summary_table(summary))
        failed = any(passed is False for _, by_form in summary for passed, _ in by_form.values())
        if a.json:
            payload = {
                "when": dt.datetime.now(dt.timezone.utc).isoformat(),
                "args": {k: v for k, v in vars(a).items()},
                "python": platform.python_version(), "cpus": os.cpu_count(), "load_at_start": self.load_at_start,
                "runs": [run.as_dict() for run in self.runs],
                "order_runs": [run.as_dict() for run in self.orders.runs],
                "targets": [{"target": name, "forms": {form: {"met": p, "figure": f} for form, (p, f) in by_form.items()}}
                            for name, by_form in summary],
                "notes": self.notes,
            }
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps(payload, indent=2, default=str))
            print(f"\nfigures written to {a.json}")
        return 1 if (failed and a.strict) else 0


# ------------------------------------------------------------------------------------------ CLI


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", default=DEFAULT_SCENARIOS,
                   help=f"comma separated, from {','.join(ALL_SCENARIOS)} (default {DEFAULT_SCENARIOS})")
    p.add_argument("--runtime", choices=("both", *FORMS), default="both",
                   help="what runs: both forms side by side (default), the installed source-klarna alone, or "
                        "manifest-only alone (build/manifest-only's manifest.yaml + components.py on Airbyte's stock "
                        "source-declarative-manifest from .venv-manifest-only, bench/manifest_only_connector.py)")
    p.add_argument("--million", action="store_true", help="add the 1,000,000-transaction scenario")
    p.add_argument("--payouts", type=int, default=200)
    p.add_argument("--transactions-per-payout", type=int, default=250)
    p.add_argument("--latency-ms", type=int, default=150, help="emulator latency of full/incremental (default 150)")
    p.add_argument("--concurrency-levels", default=f"{CONNECTOR_DEFAULT_CONCURRENCY}",
                   help=f"levels of the full and cpu scenarios (default {CONNECTOR_DEFAULT_CONCURRENCY}, the connector's "
                        f"default; 1,{CONNECTOR_DEFAULT_CONCURRENCY} adds the speed-up from concurrency)")
    p.add_argument("--default-concurrency", type=int, default=CONNECTOR_DEFAULT_CONCURRENCY,
                   help=f"level of the incremental and million scenarios and of the targets (the connector's default, {CONNECTOR_DEFAULT_CONCURRENCY})")
    p.add_argument("--cpu-payouts", type=int, default=400, help="payouts of the 0 ms scenario (default 400: 100k rows)")
    p.add_argument("--million-payouts", type=int, default=4000)
    p.add_argument("--million-latency-ms", type=int, default=0)
    p.add_argument("--streams", default=",".join(STREAMS),
                   help=f"settlements streams to sync (default {','.join(STREAMS)}; 'all': every discovered stream, "
                        "pending_transactions and the orders streams too)")
    p.add_argument("--rate-limit-rps", type=int, default=200,
                   help="emulator-side limit answering 429 above it (default 200, Klarna's production limit; 0: off)")
    p.add_argument("--lookback-days", type=int, default=None,
                   help="lookback_window_days of the connector config (default: the connector's default)")
    p.add_argument("--first-payout-date", default=None,
                   help="date of the first payout (default: so the newest payout is 2 days old)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--cache-dir", default=str(HERE / "results" / "cache"),
                   help="where the baseline wheel is downloaded (default bench/results/cache)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run every measurement N times and report the run with the median wall time (default 1)")
    p.add_argument("--wait-for-load", type=float, default=None,
                   help="before each run wait until the 1-min load average is at most this (shared machines)")
    p.add_argument("--max-wait", type=float, default=300.0, help="longest wait for --wait-for-load, seconds")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds before a connector run is killed")
    p.add_argument("--profile", action="store_true",
                   help="also run one read under py-spy (--profile-scenario) and print where the CPU goes")
    p.add_argument("--profile-scenario", choices=("cpu", "orders"), default="cpu",
                   help="the read profiled: the cpu setup (default) or the orders setup (the largest --order-sizes "
                        "at the first --order-latencies)")
    p.add_argument("--profile-form", choices=FORMS, default="source-klarna", help="the form profiled (default source-klarna)")
    p.add_argument("--profile-gil", action="store_true", help="py-spy --gil: sample only the thread holding the GIL")
    p.add_argument("--profile-top", type=int, default=20)
    p.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--profile-concurrency", type=int, default=None, help="level of the profiled read (default: the default)")
    p.add_argument("--profile-dir", default=str(HERE / "results"), help="where py-spy's raw stacks go")
    p.add_argument("--keep", action="store_true", help="keep the temporary work dir (configs, catalogs, states)")
    p.add_argument("--json", default=None, help="also write every figure to this JSON file")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    orders_bench.add_arguments(p)
    args = p.parse_args(argv)
    orders_bench.parse_arguments(args)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if args.million and "million" not in scenarios:
        scenarios.append("million")
    unknown = set(scenarios) - set(ALL_SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(ALL_SCENARIOS)}")
    args.scenarios = scenarios
    args.forms = list(FORMS) if args.runtime == "both" else [args.runtime]
    args.streams = None if args.streams.strip() == "all" else [x.strip() for x in args.streams.split(",") if x.strip()]
    args.concurrency_levels = [int(level) for level in str(args.concurrency_levels).split(",") if level.strip()]
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    started = time.perf_counter()
    bench.log(f"source-klarna bench: scenarios {','.join(args.scenarios)}; forms "
              + "; ".join(f"{form}: {' '.join(command)}" for form, command in bench.forms.items())
              + f"; work dir {bench.workroot}; load average {bench.load_at_start}")
    for note in bench.notes:
        bench.log(f"note: {note}")
    try:
        bench.run_all()
    except KeyboardInterrupt:
        bench.notes.append("interrupted: partial figures")
    bench.notes.append(f"bench took {time.perf_counter() - started:.0f} s")
    code = bench.report()
    if args.keep:
        print(f"work dir kept: {bench.workroot}")
    else:
        shutil.rmtree(bench.workroot, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
