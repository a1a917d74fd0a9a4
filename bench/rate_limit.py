#!/usr/bin/env python3
"""How the installed `source-klarna` shares a merchant's Klarna rate limit (a report, not a test).

The emulator enforces Klarna's limit (200 requests per 1-second window, `--limit`) shared with the
merchant's other traffic (`--others`, requests/s of the same quota), as Klarna counts it per merchant.
For each level of other traffic, one full sync of payouts + transactions (many small payouts, so the
sync is request-bound, not CPU-bound) at concurrency 30 prints: wall time, the connector's requests,
its requests per second over the windows it was active in, the 429s it got, the other traffic's
requests refused (the merchant's checkout would have been refused), and the lowest X-Ratelimit-Remaining
any answer carried. With no other traffic the rate should reach the connector's cap (by default the
limit less the 20 % reserve: 160/s); with 150/s of other traffic about 10/s, and nothing refused.

Run: `make bench-rate-limit` or `python bench/rate_limit.py [--others 0,150] [--payouts 1500]`.
"""

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from klarna_emulator import DatasetSpec, KlarnaEmulator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration_tests"))
from connector_runner import configured_catalog, run_connector  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--others", default="0,150", help="comma-separated requests/s of the merchant's other traffic")
    parser.add_argument("--limit", type=int, default=200, help="the merchant's quota per 1-second window")
    parser.add_argument("--payouts", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=30)
    parser.add_argument("--config", default="", help="extra config as key=value,key=value (e.g. rate_limit_reserve_percent=0)")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.config.split(",") if item)
    extra = {key: int(value) for key, value in extra.items()}
    first = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=args.payouts // 3 + 2)).strftime("%Y-%m-%dT00:00:00Z")
    spec = DatasetSpec(seed=5, payouts=args.payouts, transactions_per_payout=2, first_payout_date=first)
    print(f"{args.payouts} payouts x 2 transactions, limit {args.limit}/s per merchant, concurrency {args.concurrency}, config {extra or 'default'}")
    reserve = extra.get("rate_limit_reserve_percent", 20)
    cap = extra.get("max_requests_per_second") or args.limit * (100 - reserve) / 100
    print(f"the connector's cap: {cap:.0f} requests/s; reserve {reserve} % of the limit")
    print(f"{'other traffic/s':>15} {'wall s':>7} {'requests':>9} {'req/s active':>13} {'of cap':>7} {'429s':>5} {'others refused':>15} {'lowest Remaining':>17}")
    for others in (float(x) for x in args.others.split(",")):
        with KlarnaEmulator(spec=spec, rate_limit_rps=args.limit, other_traffic_rps=others, start_timeout=120) as emulator:
            config = emulator.config(concurrency=args.concurrency, **extra)
            started = time.monotonic()
            run = run_connector("read", config, configured_catalog(["payouts", "transactions"], "full_refresh"), timeout=3600)
            wall = time.monotonic() - started
            stats = emulator.stats()
            limit = stats["rate_limit"]
            ok = run.exit_code == 0 and len(run.records("payouts")) == args.payouts
            print(
                f"{others:>15.0f} {wall:>7.1f} {stats['total']:>9,} {stats['total'] / max(1, limit['windows']):>13.1f} "
                f"{stats['total'] / max(1, limit['windows']) / cap:>7.0%} "
                f"{stats['rate_limited']:>5} {limit['other_traffic']['refused']:>15} {str(limit['lowest_remaining']):>17}"
                + ("" if ok else "  (the sync did not deliver every payout)")
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
