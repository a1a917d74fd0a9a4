#!/usr/bin/env python3
"""How the installed `source-klarna` shares a merchant's Klarna rate limit (a report, not a test).

Klarna counts its limit per merchant, shared with the merchant's own (checkout) traffic, and does not say
how. The emulator counts the limit L in one of three accountings (`fixed` 1-s windows, a `sliding` 1-s
window, a `token` bucket of L refilled at L/s) and sends the merchant's other traffic as real requests
against the same limiter, in one of four patterns (`steady`, `step`: nothing for `--step-at` seconds then the
rate itself, `bursts`: 4x the average in the first quarter of each second, `poisson`).

For each accounting x pattern x level of other traffic (none, 50 % and 75 % of L) one sync of payouts,
transactions and orders prints: the connector's requests, its 429s (count and % of its requests), the
others' requests refused (count and %, in the seconds the connector was active), the connector's average
rate (requests over the span from its first to its last), that rate against the share left to it,
`L x (1 - reserve) - others' average`, and whether the records were exact. L defaults to 100 (this 2-core
machine drives the connector's 80/s cap with no other traffic; 200/s it cannot).

The connector runs as the integration tests run it (`source-klarna read` of this interpreter's
environment, integration_tests/connector_runner.py), one emulator per run of the bench, its knobs set and
its statistics reset right before each sync.

Run: `python bench/rate_limit.py [--quick] [--limit 100] [--payouts 8] [--levels 0,0.5,0.75]`.
"""

import argparse
import datetime as dt
import sys
import time
from collections import Counter
from pathlib import Path

from klarna_emulator import DatasetSpec, KlarnaEmulator
from klarna_emulator.faults import ACCOUNTINGS, TRAFFIC_PATTERNS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration_tests"))
from connector_runner import configured_catalog, run_connector  # noqa: E402
from streaming_runner import assert_payouts_exact, assert_transactions_exact  # noqa: E402

STREAMS = ("payouts", "transactions", "orders")


def exact(emulator, run) -> str:
    """"yes" when every stream's records are the emulator's, else what went wrong first."""
    if run.exit_code != 0:
        return f"no (exit {run.exit_code})"
    try:
        assert_payouts_exact(emulator, run.records("payouts"))
        assert_transactions_exact(emulator, run.records("transactions"))
        named = Counter(t["order_id"] for t in emulator.dataset.transactions())
        assert Counter(o["order_id"] for o in run.records("orders")) == Counter(set(named)), "orders differ"
    except AssertionError as e:
        return f"no ({str(e)[:40]})"
    return "yes"


def one_row(emulator, accounting, pattern, others, args, extra):
    emulator.set_faults(rate_limit_rps=args.limit, rate_limit_accounting=accounting, other_traffic_rps=others,
                        other_traffic_pattern=pattern, other_traffic_step_at_s=args.step_at,
                        other_traffic_seed=args.seed)
    emulator.reset_requests()
    started = time.monotonic()
    run = run_connector("read", emulator.config(concurrency=args.concurrency, **extra),
                        configured_catalog(STREAMS, "full_refresh"), timeout=args.timeout)
    wall = time.monotonic() - started
    stats = emulator.stats()
    sharing = stats["rate_limit_sharing"]
    ours, theirs = sharing["ours"], sharing["others"]
    span = (ours["last_s"] - ours["first_s"]) if ours["requests"] > 1 else 0.0
    rate = (ours["requests"] - 1) / span if span > 0 else float("nan")
    share = args.limit * (1 - args.reserve / 100) - others
    return {
        "accounting": accounting, "pattern": pattern if others else "-", "others": others, "wall": wall,
        "requests": ours["requests"], "429": stats["rate_limited"],
        "429%": 100 * stats["rate_limited"] / max(1, ours["requests"]),
        "refused": theirs["refused"], "refused%": 100 * theirs["refused"] / max(1, theirs["requests"]),
        "others_sent": theirs["requests"], "rate": rate, "share": share,
        "of_share": rate / share if share > 0 else float("nan"), "exact": exact(emulator, run),
    }


HEADER = (f"{'accounting':>10} {'pattern':>8} {'others/s':>8} {'wall s':>6} {'requests':>8} {'429s':>5} "
          f"{'429 %':>6} {'others refused':>14} {'refused %':>9} {'req/s':>6} {'share/s':>7} {'of share':>8} exact")


def line(r) -> str:
    return (f"{r['accounting']:>10} {r['pattern']:>8} {r['others']:>8.0f} {r['wall']:>6.1f} {r['requests']:>8} "
            f"{r['429']:>5} {r['429%']:>5.1f}% {r['refused']:>6} of {r['others_sent']:<6} {r['refused%']:>8.1f}% "
            f"{r['rate']:>6.1f} {r['share']:>7.1f} {r['of_share']:>8.0%} {r['exact']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=100, help="L, the merchant's limit per second")
    parser.add_argument("--levels", default="0,0.5,0.75", help="the others' average, as fractions of L")
    parser.add_argument("--accountings", default=",".join(ACCOUNTINGS))
    parser.add_argument("--patterns", default=",".join(TRAFFIC_PATTERNS))
    parser.add_argument("--quick", action="store_true",
                        help="a subset: fixed and token, steady and bursts, the others at 50 %% of L")
    parser.add_argument("--payouts", type=int, default=8)
    parser.add_argument("--transactions-per-payout", type=int, default=10)
    parser.add_argument("--step-at", type=float, default=3.0,
                        help="step: seconds after the statistics' reset before the others start (the connector "
                             "needs about 2 s to send its first request)")
    parser.add_argument("--seed", type=int, default=0, help="poisson: the seed of the others' arrivals")
    parser.add_argument("--reserve", type=float, default=20, help="the connector's reserve, %% of L (its default)")
    parser.add_argument("--concurrency", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=600, help="per sync, seconds")
    parser.add_argument("--config", default="", help="extra connector config as key=value,key=value")
    args = parser.parse_args()
    extra = {key: int(value) for key, value in (item.split("=", 1) for item in args.config.split(",") if item)}
    if "rate_limit_reserve_percent" in extra:
        args.reserve = extra["rate_limit_reserve_percent"]
    accountings = args.accountings.split(",")
    patterns = args.patterns.split(",")
    levels = [float(x) for x in args.levels.split(",")]
    if args.quick:
        accountings, patterns, levels = ["fixed", "token"], ["steady", "bursts"], [0.5]
    first = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=args.payouts + 2)).strftime("%Y-%m-%dT00:00:00Z")
    spec = DatasetSpec(seed=5, payouts=args.payouts, transactions_per_payout=args.transactions_per_payout,
                       first_payout_date=first)
    print(f"{args.payouts} payouts x {args.transactions_per_payout} transactions ({', '.join(STREAMS)}), "
          f"L = {args.limit}/s, reserve {args.reserve:.0f} %, concurrency {args.concurrency}, "
          f"config {extra or 'default'}, step at {args.step_at:.0f} s")
    print(HEADER, flush=True)
    rows = []
    started = time.monotonic()
    with KlarnaEmulator(spec=spec, rate_limit_rps=args.limit, start_timeout=120) as emulator:
        for accounting in accountings:
            for level in levels:
                for pattern in (patterns if level else patterns[:1]):  # no others: the pattern is moot
                    rows.append(one_row(emulator, accounting, pattern, args.limit * level, args, extra))
                    print(line(rows[-1]), flush=True)
    worst = max(rows, key=lambda r: r["429%"])
    print(f"{len(rows)} syncs in {time.monotonic() - started:.0f} s; most 429s: {worst['429%']:.1f} % "
          f"({worst['accounting']}, {worst['pattern']}, {worst['others']:.0f}/s); most others refused: "
          f"{max(r['refused%'] for r in rows):.1f} %; not exact: {sum(r['exact'] != 'yes' for r in rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
