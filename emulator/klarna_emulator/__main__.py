"""``python -m klarna_emulator``: run the Klarna API emulator until SIGTERM/SIGINT.

Prints exactly one line, ``{"url": "http://127.0.0.1:PORT"}``, on stdout once
the socket listens (with ``--tls``: ``{"url": "https://127.0.0.1:PORT",
"certificate": "/tmp/.../cert.pem"}``, the self-signed certificate it serves);
logs go to stderr (quiet unless ``--verbose``). Exit code 0 on SIGTERM or
SIGINT, 2 on bad arguments or when ``--tls`` cannot make its certificate.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from .dataset import Dataset, DatasetSpec
from .events import STEP_KINDS
from .faults import ACCOUNTINGS, DEFAULT_STEP_AT_S, DETERMINISTIC_FAULTS, ENDPOINTS, TRAFFIC_PATTERNS, FaultConfig
from .server import EmulatorHTTPServer, EmulatorState
from .tls import TlsUnavailable


def _fail_request(value: str):
    n, sep, fault = value.partition("=")
    if not sep:
        n, sep, fault = value.partition(":")
    try:
        n_int = int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N=FAULT, got {value!r}") from None
    if fault not in DETERMINISTIC_FAULTS:
        raise argparse.ArgumentTypeError(f"unknown fault {fault!r}; known: {', '.join(DETERMINISTIC_FAULTS)}")
    return n_int, fault


def _endpoint_fault(value: str):
    endpoint, sep, fault = value.partition("=")
    if not sep or endpoint not in ENDPOINTS:
        raise argparse.ArgumentTypeError(f"expected ENDPOINT=FAULT with ENDPOINT in {', '.join(ENDPOINTS)}, "
                                         f"got {value!r}")
    if fault not in DETERMINISTIC_FAULTS:
        raise argparse.ArgumentTypeError(f"unknown fault {fault!r}; known: {', '.join(DETERMINISTIC_FAULTS)}")
    return endpoint, fault


def _grow_step(value: str):
    parts = value.split(":")
    try:
        if len(parts) > len(STEP_KINDS):
            raise ValueError
        counts = tuple(int(p or 0) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NEW:LATE[:REFUNDS[:GONE[:DISPUTES]]], got {value!r}") from None
    return counts if len(counts) >= 2 else counts + (0,)


def build_parser() -> argparse.ArgumentParser:
    d = DatasetSpec()
    p = argparse.ArgumentParser(prog="klarna-emulator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = a random free port (default)")
    p.add_argument("--tls", action="store_true",
                   help="serve https with a fresh self-signed certificate (made with the openssl command)")
    g = p.add_argument_group("dataset")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--payouts", type=int, default=d.payouts)
    g.add_argument("--transactions-per-payout", type=int, default=d.transactions_per_payout)
    g.add_argument("--currencies", default=",".join(d.currencies), help="comma separated, e.g. EUR,SEK,USD")
    g.add_argument("--first-payout-date", default=d.first_payout_date)
    g.add_argument("--merchant-id", default=d.merchant_id)
    g.add_argument("--identical-rows-per-payout", type=int, default=d.identical_rows_per_payout)
    g.add_argument("--purged-order-ratio", type=float, default=d.purged_order_ratio)
    g.add_argument("--empty-payouts", type=int, default=d.empty_payouts,
                   help="how many payouts have no transactions at all (every k-th, k = payouts // this)")
    g.add_argument("--pending-transactions", type=int, default=d.pending_transactions,
                   help="transactions in no payout yet (no payment_reference); a grow moves them into its first "
                        "new payout")
    g.add_argument("--unreconciled-payouts", type=int, default=d.unreconciled_payouts,
                   help="how many of the oldest payouts have settlement_amount 100 above their transactions' sum")
    g.add_argument("--disputes", type=int, default=d.disputes,
                   help="disputes (Disputes API v2) over orders of the initial payouts, in a mix of states")
    g.add_argument("--grow", type=_grow_step, action="append", default=[],
                   metavar="NEW:LATE[:REFUNDS[:GONE[:DISPUTES]]]",
                   help="apply a growth step at start (repeatable), as if POST /_emulator/grow: new and late "
                        "payouts, refunds on old orders, gone orders, new disputes")
    a = p.add_argument_group("auth")
    a.add_argument("--username", default="emulator")
    a.add_argument("--password", default="emulator-secret")
    f = p.add_argument_group("faults (fractions 0..1 unless noted)")
    f.add_argument("--latency-ms", type=float, default=0.0)
    f.add_argument("--rate-limit-rps", type=float, default=0.0,
                   help="the merchant's quota L per second (a whole number); 0 = not enforced")
    f.add_argument("--rate-limit-accounting", choices=ACCOUNTINGS, default=ACCOUNTINGS[0],
                   help="how L is counted: fixed 1-second windows (default), a sliding 1-second window, or a "
                        "bucket of L tokens refilled at L/s")
    f.add_argument("--other-traffic-rps", type=float, default=0.0,
                   help="average requests/s of the merchant's other traffic (its checkout), counted against "
                        "the same limit")
    f.add_argument("--other-traffic-pattern", choices=TRAFFIC_PATTERNS, default=TRAFFIC_PATTERNS[0],
                   help="steady (evenly spaced, default), step (none until --other-traffic-step-at-s, then "
                        "twice the average), bursts (4x the average in the first quarter of each second), "
                        "poisson (exponential inter-arrivals, seeded by --other-traffic-seed)")
    f.add_argument("--other-traffic-step-at-s", type=float, default=DEFAULT_STEP_AT_S,
                   help="step: seconds of silence before the other traffic starts")
    f.add_argument("--other-traffic-seed", type=int, default=0, help="poisson: the seed of the arrival times")
    f.add_argument("--no-retry-after", action="store_true", help="omit Retry-After on 429")
    f.add_argument("--error-5xx", type=float, default=0.0)
    f.add_argument("--connection-reset", type=float, default=0.0)
    f.add_argument("--truncated-body", type=float, default=0.0)
    f.add_argument("--invalid-json", type=float, default=0.0)
    f.add_argument("--slow", type=float, default=0.0)
    f.add_argument("--slow-seconds", type=float, default=30.0)
    f.add_argument("--fault-seed", type=int, default=0)
    f.add_argument("--fail-request", type=_fail_request, action="append", default=[], metavar="N=FAULT",
                   help=f"fail exactly the Nth API request (repeatable); FAULT in {', '.join(DETERMINISTIC_FAULTS)}")
    f.add_argument("--endpoint-fault", type=_endpoint_fault, action="append", default=[], metavar="ENDPOINT=FAULT",
                   help=f"answer every request of ENDPOINT ({', '.join(ENDPOINTS)}) with FAULT (repeatable)")
    f.add_argument("--disputes-not-enrolled", action="store_true",
                   help="the merchant is not onboarded on the Disputes API: 403 on every disputes request")
    p.add_argument("-v", "--verbose", action="store_true", help="log requests to stderr")
    p.add_argument("--exit-on-stdin-eof", action="store_true",
                   help="shut down when stdin reaches EOF (the client uses this so an emulator never "
                        "outlives the process that started it)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = DatasetSpec(
            seed=args.seed, payouts=args.payouts, transactions_per_payout=args.transactions_per_payout,
            currencies=args.currencies, first_payout_date=args.first_payout_date, merchant_id=args.merchant_id,
            identical_rows_per_payout=args.identical_rows_per_payout, purged_order_ratio=args.purged_order_ratio,
            empty_payouts=args.empty_payouts, pending_transactions=args.pending_transactions,
            unreconciled_payouts=args.unreconciled_payouts, disputes=args.disputes,
        )
        faults = FaultConfig(
            latency_ms=args.latency_ms, rate_limit_rps=args.rate_limit_rps or None,
            rate_limit_accounting=args.rate_limit_accounting, other_traffic_rps=args.other_traffic_rps,
            other_traffic_pattern=args.other_traffic_pattern, other_traffic_step_at_s=args.other_traffic_step_at_s,
            other_traffic_seed=args.other_traffic_seed,
            retry_after=not args.no_retry_after, error_5xx=args.error_5xx,
            connection_reset=args.connection_reset, truncated_body=args.truncated_body,
            invalid_json=args.invalid_json, slow=args.slow, slow_seconds=args.slow_seconds,
            fault_seed=args.fault_seed, fail_requests=dict(args.fail_request),
            endpoint_faults=dict(args.endpoint_fault), disputes_enrolled=not args.disputes_not_enrolled,
        )
    except ValueError as e:
        print(f"klarna_emulator: {e}", file=sys.stderr)
        return 2
    try:
        dataset = Dataset(spec, growth=args.grow)
    except ValueError as e:
        print(f"klarna_emulator: --grow: {e}", file=sys.stderr)
        return 2
    state = EmulatorState(dataset, args.username, args.password, faults, verbose=args.verbose)
    try:
        server = EmulatorHTTPServer((args.host, args.port), state, tls=args.tls)
    except TlsUnavailable as e:
        print(f"klarna_emulator: {e}", file=sys.stderr)
        return 2

    stopping = threading.Event()

    def on_signal(signum, _frame):
        if stopping.is_set():
            return
        stopping.set()
        state.shutdown_event.set()  # wakes sleeping "slow"/latency handlers
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if args.exit_on_stdin_eof:
        def watch_stdin():
            # os.read on the raw fd (not sys.stdin.buffer): a daemon thread blocked inside a
            # buffered reader makes interpreter shutdown abort.
            try:
                while os.read(0, 65536):  # b"" only at EOF (parent gone)
                    pass
            except OSError:
                pass
            on_signal(signal.SIGTERM, None)

        threading.Thread(target=watch_stdin, name="stdin-eof-watch", daemon=True).start()

    ready = {"url": server.url}
    if server.certificate is not None:
        ready["certificate"] = server.certificate.cert_file
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    if args.verbose:
        print(f"klarna_emulator: serving {dataset.payout_count} payouts on {server.url}", file=sys.stderr)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    return 0


def run() -> None:
    """The `klarna-emulator` console script."""
    sys.exit(main())


if __name__ == "__main__":
    run()
