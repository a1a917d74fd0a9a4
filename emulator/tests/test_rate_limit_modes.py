"""The emulator's three accountings of the merchant's rate limit and the four patterns of its other traffic.

Everything runs on an injected clock (no sleeps): the limiter's answers for each accounting, the arrival
times of each pattern, how refusals are counted, and a brute-force reference (every request of both
parties decided one by one, in time order) that the limiter's batched arithmetic must match exactly.
"""
from __future__ import annotations

import contextlib
import math
import random
import threading

import pytest
import requests

from klarna_emulator import Dataset, DatasetSpec, FaultConfig, KlarnaEmulator
from klarna_emulator.__main__ import build_parser
from klarna_emulator.faults import ACCOUNTINGS, TRAFFIC_PATTERNS, FaultController, RateLimiter, other_traffic
from klarna_emulator.server import EmulatorHTTPServer, EmulatorState

PAYOUTS = "/settlements/v1/payouts"
EPOCH = 1000.0


class FakeClock:
    def __init__(self, now=EPOCH):
        self.now = now

    def __call__(self):
        return self.now

    def at(self, seconds_since_epoch):
        self.now = EPOCH + seconds_since_epoch
        return self


def limiter(limit, accounting, others=0.0, pattern="steady", **kw):
    clock = FakeClock()
    return RateLimiter(limit, others, clock=clock, accounting=accounting, pattern=pattern, **kw), clock


# --------------------------------------------------------------------------- each accounting's rule

def test_fixed_windows_admit_l_per_window_and_reset_at_its_end():
    rl, clock = limiter(3, "fixed")
    clock.at(0.9)
    readings = [rl.admit() for _ in range(4)]
    assert [r.allowed for r in readings] == [True, True, True, False]
    assert [r.remaining for r in readings] == [2, 1, 0, 0]
    assert readings[-1].seconds_to_reset == pytest.approx(0.1) == readings[-1].retry_after_seconds
    clock.at(1.0)  # a new window, although the three are 0.1 s old
    r = rl.admit()
    assert r.allowed and r.remaining == 2 and r.seconds_to_reset == pytest.approx(1.0)
    assert r.headers() == (("X-Ratelimit-Limit", "3, 3;w=1"), ("X-Ratelimit-Remaining", "2"),
                           ("X-Ratelimit-Reset", "1"))


def test_sliding_window_admits_while_fewer_than_l_in_the_last_second():
    rl, clock = limiter(3, "sliding")
    for t in (0.0, 0.2, 0.4):
        assert clock.at(t) and rl.admit().allowed
    refused = clock.at(0.5) and rl.admit()
    assert not refused.allowed and refused.remaining == 0
    # the oldest (t = 0) leaves the window at t = 1: then one more is admitted
    assert refused.seconds_to_reset == pytest.approx(0.5) == refused.retry_after_seconds
    assert not (clock.at(0.999) and rl.admit().allowed)
    r = clock.at(1.0) and rl.admit()
    assert r.allowed and r.remaining == 0 and r.seconds_to_reset == pytest.approx(0.2)
    r = clock.at(1.25) and rl.admit()  # t = 0.2 left at 1.2
    assert r.allowed and r.remaining == 0
    r = clock.at(3.0) and rl.admit()  # all gone
    assert r.allowed and r.remaining == 2 and r.seconds_to_reset == pytest.approx(1.0)


def test_sliding_and_fixed_differ_across_a_window_boundary():
    outcomes = {}
    for accounting in ACCOUNTINGS:
        rl, clock = limiter(3, accounting)
        clock.at(0.9)
        first = [rl.admit().allowed for _ in range(3)]
        clock.at(1.1)
        outcomes[accounting] = first + [rl.admit().allowed for _ in range(3)]
    assert outcomes["fixed"] == [True] * 6  # a fresh window at t = 1
    assert outcomes["sliding"] == [True] * 3 + [False] * 3  # the three of t = 0.9 are still in the window
    # the bucket, empty at 0.9, has refilled 0.2 s x 3/s = 0.6 tokens: not a whole one
    assert outcomes["token"] == [True] * 3 + [False] * 3


def test_token_bucket_holds_l_and_refills_at_l_per_second():
    rl, clock = limiter(4, "token")
    readings = [rl.admit() for _ in range(5)]
    assert [r.allowed for r in readings] == [True] * 4 + [False]
    assert [r.remaining for r in readings] == [3, 2, 1, 0, 0]
    empty = readings[-1]
    assert empty.seconds_to_reset == pytest.approx(1.0)  # 4 tokens missing at 4/s: full again in 1 s
    assert empty.retry_after_seconds == pytest.approx(0.25)  # one token in 0.25 s
    assert not (clock.at(0.2) and rl.admit().allowed)
    r = clock.at(0.25) and rl.admit()
    assert r.allowed and r.remaining == 0 and r.seconds_to_reset == pytest.approx(1.0)
    r = clock.at(0.75) and rl.admit()  # 2 tokens refilled, one taken
    assert r.allowed and r.remaining == 1 and r.seconds_to_reset == pytest.approx(0.75)
    r = clock.at(10.0) and rl.admit()  # full (never more than L), one taken
    assert r.allowed and r.remaining == 3 and r.seconds_to_reset == pytest.approx(0.25)
    assert r.headers()[1:] == (("X-Ratelimit-Remaining", "3"), ("X-Ratelimit-Reset", "1"))


@pytest.mark.parametrize("accounting", ACCOUNTINGS)
def test_a_429_consumes_nothing_and_forced_faults_count_even_over_the_limit(accounting):
    clock = FakeClock()
    controller = FaultController(FaultConfig(rate_limit_rps=2, rate_limit_accounting=accounting,
                                             fail_requests={3: "error_500", 4: "rate_limit"}), clock=clock)
    decisions = [controller.decide(n, "payouts") for n in range(1, 6)]
    assert [d.fault for d in decisions] == [None, None, "error_500", "rate_limit", "rate_limit"]
    assert controller.limiter._used == 3  # the forced 500 counted over the limit, the 429s did not
    sharing = controller.limiter.sharing()
    assert sharing["accounting"] == accounting
    # the forced 429 is not the limiter's refusal
    assert sharing["ours"] == {"requests": 5, "refused": 1, "first_s": 0.0, "last_s": 0.0}
    # the overfilled quota: two of the three counted must go before one more is admitted
    if accounting == "sliding":
        assert decisions[-1].rate.retry_after_seconds == pytest.approx(1.0)
        assert not (clock.at(0.5) and controller.decide(6, "payouts").rate.allowed)
    if accounting == "token":  # one token in debt: a whole token is back after two tokens' time
        assert decisions[-1].rate.retry_after_seconds == pytest.approx(1.0)
        assert not (clock.at(0.99) and controller.decide(6, "payouts").rate.allowed)
        assert clock.at(1.0) and controller.decide(7, "payouts").rate.allowed


@pytest.mark.parametrize("accounting, refused", [("fixed", 99), ("sliding", 99), ("token", 25)])
def test_not_enforced_admits_the_connector_but_counts_it_against_200_for_the_others(accounting, refused):
    if True:
        rl, clock = limiter(None, accounting, others=100)
        clock.at(0.001)
        assert all(rl.admit().allowed for _ in range(250))
        clock.at(0.999)
        stats = rl.stats()
        assert stats["enforced"] is False and stats["limit"] == 200
        # the connector alone spent the 200 (and 50 more): the others' requests so far were refused, with
        # the bucket until it is out of debt (-50 tokens + 200/s: at t = 0.256)
        assert stats["other_traffic"]["requests"] == 99 and stats["other_traffic"]["refused"] == refused


# --------------------------------------------------------------------------- the patterns' arrivals

def test_steady_arrivals_are_evenly_spaced_at_the_average():
    tr = other_traffic("steady", 20)
    assert [tr.count(t) for t in (0.0, 0.04, 0.05, 0.5, 1.0, 10.0)] == [0, 0, 1, 10, 20, 200]
    assert [tr.time_of(k) for k in (1, 2, 20)] == pytest.approx([0.05, 0.1, 1.0])


def test_step_arrivals_start_at_step_at_at_the_rate():
    tr = other_traffic("step", 20, step_at_s=5)
    assert tr.count(5.0) == 0 and tr.count(5.5) == 10 and tr.count(6.0) == 20
    assert tr.count(10.0) == 100 == 20 * 5  # five seconds at the rate after the step
    assert tr.time_of(1) == pytest.approx(5.05)


def test_burst_arrivals_are_four_times_the_average_in_each_seconds_first_quarter():
    tr = other_traffic("bursts", 20)
    quarters = [tr.count((q + 1) / 4) - tr.count(q / 4) for q in range(12)]
    assert quarters == [20, 0, 0, 0] * 3
    assert tr.count(0.125) == 10  # at 80/s
    assert tr.time_of(21) == pytest.approx(1.0125) and tr.time_of(20) == pytest.approx(0.25)
    assert tr.count(100.0) == 2000


def test_poisson_arrivals_are_random_at_the_average_and_the_same_per_seed():
    tr = other_traffic("poisson", 20, seed=7)
    n = tr.count(100.0)
    assert abs(n - 2000) < 4 * math.sqrt(2000), n  # mean 2000, sd 45
    times = [tr.time_of(k) for k in range(1, n + 1)]
    gaps = [b - a for a, b in zip([0.0] + times, times)]
    assert all(g > 0 for g in gaps)
    # exponential: about e^-1 of the gaps are longer than the mean gap
    assert 0.33 < sum(g > 1 / 20 for g in gaps) / len(gaps) < 0.41
    again = other_traffic("poisson", 20, seed=7)
    assert [again.time_of(k) for k in range(1, 50)] == times[:49]
    assert other_traffic("poisson", 20, seed=8).time_of(1) != times[0]


def test_no_rate_or_an_unknown_pattern():
    assert other_traffic("bursts", 0).count(100) == 0
    with pytest.raises(ValueError, match="other_traffic_pattern"):
        other_traffic("waves", 10)
    with pytest.raises(ValueError, match="rate_limit_accounting"):
        FaultConfig(rate_limit_accounting="leaky")
    with pytest.raises(ValueError, match="other_traffic_pattern"):
        FaultConfig(other_traffic_pattern="waves")
    with pytest.raises(ValueError, match="other_traffic_step_at_s"):
        FaultConfig(other_traffic_step_at_s=-1)


# --------------------------------------------------------------------------- refusals, counted

@pytest.mark.parametrize("accounting, admitted", [("fixed", 400), ("sliding", 400), ("token", 439)])
def test_the_others_alone_over_the_limit_are_refused_and_counted(accounting, admitted):
    # 60/s against 40: fixed and sliding admit 40 a second; the bucket its 40 tokens plus 40/s, but for
    # the third of a token refilled since the last arrival that took one
    rl, clock = limiter(40, accounting, others=60)
    clock.at(10.0)
    sharing = rl.sharing()
    others = sharing["others"]
    assert others["requests_all"] == 600
    assert others["requests_all"] - others["refused_all"] == admitted
    # the connector sent nothing: none of it is in the statistics of the connector's windows
    assert others["requests"] == others["refused"] == 0 == rl.stats()["windows"]
    clock.at(10.8)  # the others have used the quota up again: the connector's request is refused
    assert not rl.admit().allowed
    assert rl.sharing()["ours"] == {"requests": 1, "refused": 1, "first_s": pytest.approx(10.8),
                                    "last_s": pytest.approx(10.8)}


def test_the_others_are_counted_in_the_windows_the_connector_is_active_in():
    rl, clock = limiter(10, "fixed", others=5)
    clock.at(2.5)
    rl.admit()  # window 2: the others' arrivals in (2, 2.5] so far
    clock.at(5.0)
    stats = rl.stats()
    # (2, 3]: 5 arrivals; the windows (3, 4] and (4, 5] saw no request of the connector
    assert stats["other_traffic"] == {"requests": 5, "refused": 0} and stats["windows"] == 1
    assert rl.sharing()["others"]["requests_all"] == 25
    clock.at(5.5)
    rl.admit()  # window 5: the arrivals of (5, 5.5] are counted, those decided before too
    clock.at(5.9)
    assert rl.stats()["other_traffic"]["requests"] == 5 + 4
    rl.reset()
    assert rl.sharing()["others"]["requests_all"] == 0 and rl.stats()["other_traffic"]["requests"] == 0


def test_refusals_of_the_others_caused_by_the_connector():
    # the connector spends 35 of 40 at the start of each second; the others' 20 a second get the 5 left
    for accounting in ("fixed", "sliding"):
        rl, clock = limiter(40, accounting, others=20)
        for second in range(5):
            clock.at(second + 0.001)
            assert sum(rl.admit().allowed for _ in range(35)) == 35
        clock.at(4.999)
        stats = rl.stats()
        assert stats["other_traffic"]["requests"] == 99  # 20 a window, less the one exactly at t = 5
        assert stats["other_traffic"]["refused"] == 99 - 5 * 5, accounting


# --------------------------------------------------------------------------- the reference

def _reference(limit, accounting, others_times, ours_times, enforced=True):
    """Every request decided one at a time, in time order (the others' first on a tie)."""
    events = sorted([(t, 0) for t in others_times] + [(t, 1) for t in ours_times])
    fixed_window, fixed_used = None, 0
    recent = []
    tokens, at = float(limit), 0.0
    ours, others_refused = [], 0
    eps = 1e-9
    for t, mine in events:
        if accounting == "fixed":
            w = math.floor(t + eps) if mine else math.ceil(t - eps) - 1
            if w != fixed_window:
                fixed_window, fixed_used = w, 0
            over = fixed_used >= limit
        elif accounting == "sliding":
            recent = [s for s in recent if s > t - 1 + eps]
            over = len(recent) >= limit
        else:
            tokens, at = min(float(limit), tokens + (t - at) * limit), t
            over = tokens < 1 - eps
        allowed = not over or (mine and not enforced)
        if allowed:
            if accounting == "fixed":
                fixed_used += 1
            elif accounting == "sliding":
                recent.append(t)
            else:
                tokens -= 1
        if mine:
            ours.append(allowed)
        elif not allowed:
            others_refused += 1
    return ours, others_refused


@pytest.mark.parametrize("pattern", TRAFFIC_PATTERNS)
@pytest.mark.parametrize("accounting", ACCOUNTINGS)
def test_the_limiter_decides_exactly_as_one_request_at_a_time(accounting, pattern):
    rng = random.Random(f"{accounting}-{pattern}")
    limit, rps, seconds = 25, 30.0, 6.0
    ours_times = sorted(rng.uniform(0, seconds) for _ in range(150))
    # a burst of the connector's to fill the quota at once, and some requests at the same instant
    ours_times = sorted(ours_times + [2.0] * 30 + [4.5] * 10)
    rl, clock = limiter(limit, accounting, others=rps, pattern=pattern, step_at_s=2.5, seed=3)
    ours = []
    for t in ours_times:
        clock.at(t)
        ours.append(rl.admit().allowed)
    clock.at(seconds)
    sharing = rl.sharing()
    arrivals = other_traffic(pattern, rps, step_at_s=2.5, seed=3)
    others_times = [arrivals.time_of(k) for k in range(1, arrivals.count(seconds) + 1)]
    expected_ours, expected_refused = _reference(limit, accounting, others_times, ours_times)
    assert ours == expected_ours
    assert sharing["others"]["requests_all"] == len(others_times)
    assert sharing["others"]["refused_all"] == expected_refused
    assert sharing["ours"] == {"requests": len(ours), "refused": ours.count(False),
                               "first_s": pytest.approx(ours_times[0]), "last_s": pytest.approx(ours_times[-1])}
    assert 0 < expected_refused < len(others_times) and 0 < ours.count(False) < len(ours)  # a contest


@pytest.mark.parametrize("accounting", ACCOUNTINGS)
def test_high_rates_are_counted_arithmetically(accounting):
    rl, clock = limiter(50, accounting, others=1_000_000)
    clock.at(30.0)
    others = rl.sharing()["others"]
    assert others["requests_all"] == 30_000_000
    admitted = others["requests_all"] - others["refused_all"]
    # token: 50 at once, then 50/s from when the bucket emptied (50 µs in): the 1500th just after 30 s
    assert admitted == (1549 if accounting == "token" else 1500)


# --------------------------------------------------------------------------- the server and the CLI

@contextlib.contextmanager
def server_on(clock, **knobs):
    state = EmulatorState(Dataset(DatasetSpec(payouts=3, transactions_per_payout=2)), "u", "p",
                          FaultConfig(**knobs), clock=clock)
    server = EmulatorHTTPServer(("127.0.0.1", 0), state)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_token_accounting_over_http_headers_retry_after_and_stats():
    clock = FakeClock()
    with server_on(clock, rate_limit_rps=4, rate_limit_accounting="token", other_traffic_rps=2,
                   other_traffic_pattern="steady") as server, requests.Session() as s:
        s.auth = ("u", "p")
        answers = [s.get(server.url + PAYOUTS, timeout=10) for _ in range(5)]
        assert [a.status_code for a in answers] == [200] * 4 + [429]
        assert [a.headers["X-Ratelimit-Remaining"] for a in answers] == ["3", "2", "1", "0", "0"]
        assert all(a.headers["X-Ratelimit-Limit"] == "4, 4;w=1" for a in answers)
        assert answers[-1].headers["Retry-After"] == "1" and answers[-1].headers["X-Ratelimit-Reset"] == "1"
        clock.at(2.0)  # 4 of the others' arrived, at 0.5 s intervals: each found a token
        assert s.get(server.url + PAYOUTS, timeout=10).status_code == 200
        stats = s.get(server.url + "/_emulator/stats", timeout=10).json()
    assert stats["rate_limited"] == 1
    assert stats["rate_limit_sharing"]["accounting"] == "token"
    assert stats["rate_limit_sharing"]["ours"] == {"requests": 6, "refused": 1, "first_s": 0.0, "last_s": 2.0}
    assert stats["rate_limit_sharing"]["others"]["requests_all"] == 4
    assert stats["rate_limit_sharing"]["others"]["refused_all"] == 0
    assert stats["rate_limit_sharing"]["others"]["pattern"] == "steady"
    assert set(stats["rate_limit"]) == {"limit", "enforced", "windows", "other_traffic", "lowest_remaining"}


def test_the_knobs_set_at_run_time_and_their_flags():
    clock = FakeClock()
    with server_on(clock) as server:
        knobs = {"rate_limit_rps": 40, "rate_limit_accounting": "sliding", "other_traffic_rps": 20,
                 "other_traffic_pattern": "poisson", "other_traffic_seed": 4, "other_traffic_step_at_s": 3}
        answer = requests.post(server.url + "/_emulator/faults", json=knobs, timeout=10).json()
        assert {k: answer[k] for k in knobs} == knobs
        bad = requests.post(server.url + "/_emulator/faults", json={"rate_limit_accounting": "x"}, timeout=10)
        assert bad.status_code == 400
        assert server.state.faults.limiter.accounting == "sliding"
        assert server.state.faults.limiter.pattern == "poisson"
    args = build_parser().parse_args(["--rate-limit-accounting", "token", "--other-traffic-pattern", "bursts",
                                      "--other-traffic-step-at-s", "7.5", "--other-traffic-seed", "9"])
    assert (args.rate_limit_accounting, args.other_traffic_pattern) == ("token", "bursts")
    assert (args.other_traffic_step_at_s, args.other_traffic_seed) == (7.5, 9)
    defaults = build_parser().parse_args([])
    assert (defaults.rate_limit_accounting, defaults.other_traffic_pattern) == ("fixed", "steady")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--rate-limit-accounting", "leaky"])
    command = KlarnaEmulator(rate_limit_rps=40, rate_limit_accounting="token", other_traffic_rps=20,
                             other_traffic_pattern="step", other_traffic_step_at_s=4.0).command()
    joined = " ".join(command)
    assert "--rate-limit-accounting token" in joined and "--other-traffic-pattern step" in joined
    assert "--other-traffic-step-at-s 4.0" in joined and "--other-traffic-seed 0" in joined
