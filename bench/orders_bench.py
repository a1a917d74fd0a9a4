"""The `orders` scenario of bench.py: orders, captures and refunds at Klarna's rate limit.

For each latency (--order-latencies, default 0 ms) and size (--order-sizes, default 12,000 orders;
--orders-100k adds 100,000 at the first latency) it starts the emulator with enough payouts (250
transactions each, about 83 orders) and has each form of the bench sync `orders`, `captures` and
`refunds` from it in turn, at --orders-concurrency (30) with `max_requests_per_second` --orders-rps
(200; the emulator's 429 limit is 200 too, so the connector allows itself 160/s: the limit less its
20 % reserve). Per run it prints orders/s (over the whole run, and from the first to the last record)
against that cap, CPU ms per order (user+sys of the connector process / orders), order requests per
order, 429s, peak RSS and the load average before the run.

After each latency's runs, a bare client (one requests.Session per thread, --orders-concurrency
threads, nothing but GET /ordermanagement/v1/orders/{id}) fetches orders from an emulator with the
same data and latency but no 429 limit: what this machine and the emulator allow at that concurrency,
whatever the connector does.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from runner import ReadResult, run_read

ORDER_STREAMS = ("orders", "captures", "refunds")
# The connector's default rate_limit_reserve_percent: the share of Klarna's limit it leaves to the merchant.
DEFAULT_RESERVE_PERCENT = 20
# Orders per payout of 250 transactions in the emulator's data (measured on a sample by orders_per_payout()).
SAMPLE_PAYOUTS = 6


@dataclass
class OrdersRun:
    latency_ms: int
    size: int
    result: ReadResult
    named_orders: int
    expected: Dict[str, int]
    order_requests: int
    requests: int
    too_many: int
    cap_rps: float  # what the connector allows itself (allowed_rps), the target's reference
    concurrency: int
    form: str = "source-klarna"
    load_before: Optional[float] = None
    ceiling_rps: Optional[float] = None
    problems: List[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.form} {self.size:,} orders @{self.latency_ms}ms c={self.concurrency}"

    @property
    def setup(self) -> str:
        return f"{self.size:,} orders @{self.latency_ms} ms, c={self.concurrency}"

    @property
    def orders_per_s(self) -> float:
        return self.named_orders / self.result.wall_s if self.result.wall_s else 0.0

    @property
    def steady_orders_per_s(self) -> Optional[float]:
        """Orders per second from the first record to the last (process start-up left out)."""
        r = self.result
        if r.first_record_s is None or r.last_record_s is None or r.last_record_s <= r.first_record_s:
            return None
        return self.named_orders / (r.last_record_s - r.first_record_s)

    @property
    def plateau_orders_per_s(self) -> Optional[float]:
        """Orders per second over the last 75 % of the records (the pacer's slow start left out), from the
        samples taken every 0.5 s: a diagnostic beside the steady figure, not a target."""
        r = self.result
        total = r.total_records
        samples = [(t, n) for t, n, _ in r.rss_samples]
        if not total or r.last_record_s is None:
            return None
        start = next(((t, n) for t, n in samples if n >= total / 4), None)
        if start is None or r.last_record_s <= start[0]:
            return None
        return (total - start[1]) * self.named_orders / total / (r.last_record_s - start[0])

    @property
    def cpu_ms_per_order(self) -> float:
        return 1000 * self.result.cpu_s / max(1, self.named_orders)

    @property
    def steady_cpu_ms_per_order(self) -> Optional[float]:
        """CPU per order between the first and the last CPU sample taken while records flowed."""
        samples = [s for s in self.result.cpu_samples if s[1] > 0]
        total = self.result.total_records
        if len(samples) < 2 or not total:
            return None
        (_, records_a, cpu_a), (_, records_b, cpu_b) = samples[0], samples[-1]
        orders = (records_b - records_a) * self.named_orders / total
        return 1000 * (cpu_b - cpu_a) / orders if orders > 0 else None

    @property
    def requests_per_order(self) -> float:
        return self.order_requests / max(1, self.named_orders)

    def as_dict(self) -> Dict[str, Any]:
        r = self.result
        return {
            "label": self.label, "form": self.form, "load_avg_1m_before": self.load_before, "latency_ms": self.latency_ms, "size": self.size, "named_orders": self.named_orders,
            "records": r.records, "expected": self.expected, "wall_s": round(r.wall_s, 2), "cpu_s": round(r.cpu_s, 2),
            "user_s": round(r.user_s, 2), "sys_s": round(r.sys_s, 2),
            "orders_per_s": round(self.orders_per_s, 1),
            "steady_orders_per_s": _round(self.steady_orders_per_s),
            "plateau_orders_per_s": _round(self.plateau_orders_per_s), "cpu_ms_per_order": round(self.cpu_ms_per_order, 2),
            "steady_cpu_ms_per_order": _round(self.steady_cpu_ms_per_order, 2), "order_requests": self.order_requests,
            "requests": self.requests, "http_429": self.too_many, "peak_rss_mb": round(r.peak_rss_mb, 1),
            "cap_rps": self.cap_rps, "concurrency": self.concurrency, "ceiling_rps": _round(self.ceiling_rps),
            "rss_samples": [(round(t, 1), n, round(m, 1)) for t, n, m in r.rss_samples],
            "problems": self.problems, "exit_code": r.exit_code,
        }


def _round(value: Optional[float], digits: int = 1) -> Optional[float]:
    return None if value is None else round(value, digits)


def allowed_rps(max_requests_per_second: int, rate_limit_rps: Optional[int]) -> float:
    """The request rate the connector allows itself: its cap, and no more than the limit less the reserve."""
    if not rate_limit_rps:
        return float(max_requests_per_second)
    return min(float(max_requests_per_second), rate_limit_rps * (1 - DEFAULT_RESERVE_PERCENT / 100))


def orders_per_payout(transactions_per_payout: int, seed: int) -> float:
    """Distinct orders per payout in the emulator's data (its generator, on a sample of payouts)."""
    from klarna_emulator import DatasetSpec
    from klarna_emulator.dataset import Dataset

    sample = Dataset(DatasetSpec(seed=seed, payouts=SAMPLE_PAYOUTS, transactions_per_payout=transactions_per_payout))
    return sum(1 for _ in sample.order_ids()) / SAMPLE_PAYOUTS


def expected_records(dataset: Any) -> Tuple[int, Dict[str, int]]:
    """(orders the transactions name, records per stream a full sync must deliver)."""
    named = sum(1 for _ in dataset.order_ids())
    counts = {"orders": 0, "captures": 0, "refunds": 0}
    for order in dataset.orders():
        counts["orders"] += 1
        counts["captures"] += len(order.get("captures") or [])
        counts["refunds"] += len(order.get("refunds") or [])
    return named, counts


def bare_client_ceiling(url: str, auth: Tuple[str, str], order_ids: List[str], threads: int) -> float:
    """Requests per second of `threads` plain clients fetching `order_ids` (each once) from `url`."""
    import requests

    pending = iter(order_ids)
    lock = threading.Lock()
    done = [0]

    def fetch_all() -> None:
        session = requests.Session()
        session.auth = auth
        while True:
            with lock:
                order_id = next(pending, None)
            if order_id is None:
                return
            answer = session.get(f"{url}/ordermanagement/v1/orders/{order_id}", timeout=60)
            with lock:
                done[0] += 1

    started = time.perf_counter()
    workers = [threading.Thread(target=fetch_all, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(600)
    return done[0] / (time.perf_counter() - started)


class OrdersScenario:
    def __init__(self, bench: Any) -> None:
        self.bench = bench
        self.args = bench.args
        self.runs: List[OrdersRun] = []

    def run(self) -> None:
        a = self.args
        per_payout = orders_per_payout(a.transactions_per_payout, a.seed)
        for index, latency in enumerate(a.order_latencies):
            sizes = list(a.order_sizes) + ([100_000] if a.orders_100k and index == 0 else [])
            latency_runs: List[OrdersRun] = []
            for size in sizes:
                latency_runs.extend(self.measure(size, math.ceil(size / per_payout), latency))
            # The bare client after the connector's runs, on an emulator of its own (the smallest run's
            # data), so that the connector's runs meet no warmed-up emulator.
            ceiling = self.ceiling(latency, math.ceil(min(sizes) / per_payout))
            for run in latency_runs:
                run.ceiling_rps = ceiling

    def measure(self, size: int, payouts: int, latency_ms: int) -> List[OrdersRun]:
        """One emulator, a read by each form of the bench in turn (its request log reset before each)."""
        a, bench = self.args, self.bench
        bench.log(f"orders: {size:,} orders ({payouts} payouts x {a.transactions_per_payout} transactions), {latency_ms} ms")
        out = []
        with bench.emulator(payouts, latency_ms) as emulator:
            named, expected = expected_records(emulator._emulator.dataset)
            config = emulator.config(concurrency=a.orders_concurrency, max_requests_per_second=a.orders_rps)
            for form, command in bench.forms.items():
                catalog = bench.catalog_of(emulator, list(ORDER_STREAMS), form)
                bench.log(f"  orders      {form} {size:,} orders")
                bench.wait_for_quiet()
                load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
                emulator.reset_requests()
                result = run_read(command, config, catalog, None, workdir=bench.workdir(), timeout_s=a.timeout)
                requests_made, too_many, by_path = emulator.request_counts()
                run = OrdersRun(latency_ms, size, result, named, expected, by_path.get("order", 0), requests_made,
                                too_many, allowed_rps(a.orders_rps, a.rate_limit_rps), a.orders_concurrency, form=form,
                                load_before=None if load is None else round(load, 2))
                if result.exit_code != 0:
                    run.problems.append(f"exit code {result.exit_code}: {' | '.join(result.errors)[:300]}")
                for stream, count in expected.items():
                    if result.records.get(stream, 0) != count:
                        run.problems.append(f"{stream}: {result.records.get(stream, 0)} records, the emulator holds {count}")
                steady = run.steady_orders_per_s
                bench.log(f"    {result.wall_s:.1f} s wall, {result.cpu_s:.1f} s CPU, {run.orders_per_s:.0f} orders/s"
                          f" ({'-' if steady is None else f'{steady:.0f}'} steady), {run.cpu_ms_per_order:.2f} CPU ms/order, "
                          f"{run.requests_per_order:.3f} requests/order, {too_many} x 429, {result.peak_rss_mb:.0f} MB"
                          + (f", load {load:.1f}" if load is not None else ""))
                self.runs.append(run)
                out.append(run)
        return out

    def ceiling(self, latency_ms: int, payouts: int) -> Optional[float]:
        """The bare client's requests/s, from an emulator without its 429 limit: what the machine and
        the emulator allow at this concurrency (the connector's cap is the other bound)."""
        a, bench = self.args, self.bench
        with bench.emulator(payouts, latency_ms, rate_limit_rps=0) as emulator:
            order_ids = list(emulator._emulator.dataset.order_ids())[: a.orders_ceiling_requests]
            config = emulator.config()
            bench.log(f"orders: bare client, {len(order_ids)} orders, {a.orders_concurrency} threads, {latency_ms} ms")
            rate = bare_client_ceiling(emulator.url, (config["username"], config["password"]), order_ids, a.orders_concurrency)
        bench.log(f"    {rate:.0f} requests/s")
        return rate

    # -- report

    def table(self) -> str:
        header = ("run", "records o/c/r", "wall s", "orders/s", "steady orders/s", "% of cap", "last 75 % orders/s",
                  "bare client req/s",
                  "CPU s (user+sys)", "CPU ms/order", "steady CPU ms/order", "requests/order", "429s", "peak RSS MB", "load",
                  "counts")
        rows = []
        for run in self.runs:
            r = run.result
            steady = run.steady_orders_per_s
            rows.append((
                run.label,
                "/".join(str(r.records.get(name, 0)) for name in ORDER_STREAMS),
                f"{r.wall_s:.1f}",
                f"{run.orders_per_s:.0f}",
                "-" if steady is None else f"{steady:.0f}",
                "-" if steady is None else f"{100 * steady / run.cap_rps:.0f} %",
                "-" if run.plateau_orders_per_s is None else f"{run.plateau_orders_per_s:.0f}",
                "-" if run.ceiling_rps is None else f"{run.ceiling_rps:.0f}",
                f"{r.cpu_s:.1f} ({r.user_s:.1f}+{r.sys_s:.1f})",
                f"{run.cpu_ms_per_order:.2f}",
                "-" if run.steady_cpu_ms_per_order is None else f"{run.steady_cpu_ms_per_order:.2f}",
                f"{run.requests_per_order:.3f}",
                str(run.too_many),
                f"{r.peak_rss_mb:.0f}",
                "-" if run.load_before is None else f"{run.load_before:.1f}",
                "ok" if not run.problems else "WRONG",
            ))
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(str(cell).ljust(widths[i]) if i == 0 else str(cell).rjust(widths[i]) for i, cell in enumerate(row))
                 for row in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def targets(self, form: str) -> List[Tuple[str, Optional[bool], str]]:
        """(target, met, figure) of one form's runs; the same target names for every form."""
        a = self.args
        out: List[Tuple[str, Optional[bool], str]] = []
        if "orders" not in a.scenarios:
            return out
        mine = [run for run in self.runs if run.form == form]
        cap = allowed_rps(a.orders_rps, a.rate_limit_rps)
        sizes = [size for size in a.order_sizes if size < 100_000]
        for latency in a.order_latencies:
            runs = [run for run in mine if run.latency_ms == latency and run.size < 100_000]
            largest = max(runs, key=lambda run: run.size) if runs else None
            setup = largest.setup if largest else (f"{max(sizes):,} orders @{latency} ms, c={a.orders_concurrency}"
                                                   if sizes else None)
            if setup is None:
                continue
            names = (f"(c) orders {setup}: steady orders/s >= 85 % of the {cap:.0f}/s the connector allows itself",
                     f"(c) orders {setup}: CPU per order <= 3 ms (orders + captures + refunds)",
                     f"(c) orders {setup}: one request per order",
                     f"(c) orders {setup}: zero 429s")
            if largest is None:
                out.extend((name, None, "not run") for name in names)
                continue
            steady = largest.steady_orders_per_s or 0.0
            bare = "" if largest.ceiling_rps is None else f"; bare client {largest.ceiling_rps:.0f} req/s"
            out.append((names[0], steady >= 0.85 * largest.cap_rps,
                        f"{steady:.0f}/s, {100 * steady / largest.cap_rps:.0f} % ({largest.orders_per_s:.0f}/s incl. "
                        f"start-up{bare})"))
            flowing = largest.steady_cpu_ms_per_order
            out.append((names[1], largest.cpu_ms_per_order <= 3.0,
                        f"{largest.cpu_ms_per_order:.2f} ms" + ("" if flowing is None else f" ({flowing:.2f} while records flow)")))
            out.append((names[2], largest.order_requests == largest.named_orders,
                        f"{largest.requests_per_order:.3f} ({largest.order_requests}/{largest.named_orders})"))
            out.append((names[3], largest.too_many == 0, f"{largest.too_many} in {largest.requests:,} requests"))
            by_size = {run.size: run for run in runs}
            if 4000 in by_size and 12000 in by_size:
                growth = by_size[12000].result.peak_rss_mb - by_size[4000].result.peak_rss_mb
                out.append((f"@{latency} ms: peak RSS at 12,000 orders <= 15 MB more than at 4,000", growth <= 15,
                            f"{by_size[4000].result.peak_rss_mb:.0f} -> {by_size[12000].result.peak_rss_mb:.0f} MB ({growth:+.0f})"))
        name = "(d) peak RSS < 250 MB at 100,000 orders"
        big = [run for run in mine if run.size >= 100_000]
        if big:
            run = big[0]
            out.append((name, run.result.peak_rss_mb < 250 and not run.problems,
                        f"{run.result.peak_rss_mb:.0f} MB ({run.named_orders:,} orders in {run.result.wall_s:.0f} s, "
                        f"{run.steady_orders_per_s or 0:.0f}/s, {run.cpu_ms_per_order:.2f} CPU ms/order, "
                        f"{run.too_many} x 429)"))
        else:
            out.append((name, None, "not run (opt-in: --orders-100k)"))
        return out


def add_arguments(parser: Any) -> None:
    parser.add_argument("--order-sizes", default="12000", help="orders per run of the orders scenario (default 12000)")
    parser.add_argument("--order-latencies", default="0", help="emulator latencies of the orders scenario, ms (default 0)")
    parser.add_argument("--orders-100k", action="store_true", help="orders scenario: add a 100,000-order run at the first latency")
    parser.add_argument("--orders-concurrency", type=int, default=30, help="connector concurrency of the orders scenario (default 30)")
    parser.add_argument("--orders-rps", type=int, default=200,
                        help="max_requests_per_second of the orders scenario (default 200; the emulator's limit is --rate-limit-rps)")
    parser.add_argument("--orders-ceiling-requests", type=int, default=3000,
                        help="orders the bare client fetches to measure the emulator's ceiling (default 3000)")


def parse_arguments(args: Any) -> None:
    args.order_sizes = [int(size) for size in str(args.order_sizes).split(",") if size.strip()]
    args.order_latencies = [int(latency) for latency in str(args.order_latencies).split(",") if latency.strip()]
