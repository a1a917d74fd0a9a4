"""Fault knobs of the emulator: latency, Klarna's rate limit and injected failures.

All knobs live in one ``FaultConfig``; it is set at start (CLI flags) and
replaced at run time (``POST /_emulator/faults``). Admin endpoints are exempt
from all of them.

Knobs (CLI flag in brackets)
----------------------------
``latency_ms`` [--latency-ms]
    added to every API response (also to faults and 429s).
``rate_limit_rps`` [--rate-limit-rps]
    L, the merchant's quota per second (Klarna's ``w=1``), a whole number;
    ``None``/0 = not enforced. See "Rate limit" below.
``rate_limit_accounting`` [--rate-limit-accounting]
    how L is counted: ``fixed`` (1-second windows, the default), ``sliding``
    (a sliding 1-second window) or ``token`` (a bucket of L tokens refilled at
    L/s). Klarna does not document which it uses.
``other_traffic_rps`` [--other-traffic-rps]
    the average requests per second of the merchant's other traffic (its
    checkout), counted against the same limit as the connector's.
``other_traffic_pattern`` [--other-traffic-pattern]
    how those requests arrive: ``steady`` (the default), ``step``, ``bursts``,
    ``poisson``. See "The merchant's other traffic" below.
``other_traffic_step_at_s`` [--other-traffic-step-at-s]
    ``step``: seconds of silence before the other traffic starts (default 10).
``other_traffic_seed`` [--other-traffic-seed]
    ``poisson``: the seed of the arrival times.
``retry_after`` [--no-retry-after turns it off]
    send ``Retry-After`` on 429s.
``error_5xx``, ``connection_reset``, ``truncated_body``, ``invalid_json``, ``slow`` [--error-5xx ...]
    fractions (0..1) of API requests that get that random fault.
``slow_seconds`` [--slow-seconds]
    how long a ``slow`` answer stalls before it is sent.
``fault_seed`` [--fault-seed]
    seed of the random faults.
``fail_requests`` [--fail-request N=FAULT, repeatable]
    ``{request number: fault name}``: that exact fault for the n-th API request.
``endpoint_faults`` [--endpoint-fault ENDPOINT=FAULT, repeatable]
    ``{endpoint: fault name}``: that fault for every request of the endpoint
    (``payouts``, ``payouts_summary``, ``payout``, ``transactions``, ``order``,
    ``disputes``: the list and the single dispute).
``disputes_enrolled`` [--disputes-not-enrolled turns it off]
    whether the merchant is onboarded on the Disputes API: off, every disputes
    request that passes the faults, Basic auth and the ``x-klarna-basic-mid``
    check gets 403 ``MERCHANT_NOT_ENROLLED``.

Fault names (``fail_requests`` and ``endpoint_faults``)
------------------------------------------------------
``error_5xx``/``error_503`` -> 503, ``error_500`` -> 500, ``connection_reset``
(TCP RST, no answer), ``truncated_body`` (half the body, then the connection
closes), ``invalid_json`` (200 with half a JSON body), ``slow`` (the answer
after ``slow_seconds``), ``rate_limit`` -> 429, ``foreign_body`` (200,
``Content-Type: text/html``, a captive-portal login page), ``no_pagination``
(200, a collection without its ``pagination`` block; other endpoints answer as
usual; the collections are ``payouts``, ``transactions`` and the disputes
list), ``null_items`` (200, the collection's list as ``null``; other endpoints
as usual), ``not_found`` -> 404 ``NOT_FOUND``, ``forbidden`` -> 403
``FORBIDDEN``, ``bad_request`` -> 400 ``BAD_REQUEST`` whose message names a
parameter (``start_date: must be a valid date-time``).

Decision per API request
------------------------
Per API request number ``n`` (1-based, counted since start or the last
``POST /_emulator/requests/reset``) the server decides, in this order:

1. ``fail_requests[n]`` if present: that exact fault, nothing else is drawn;
2. ``endpoint_faults[endpoint]`` if present: that fault;
3. the rate limit: the quota used up (per the accounting) -> 429 ``RATE_LIMITED``;
4. a random fault: one uniform number drawn from ``(fault_seed, n)`` (so a run
   is reproducible whatever the thread scheduling) is compared with the
   cumulative rates ``error_5xx, connection_reset, truncated_body,
   invalid_json, slow`` (in that order; their sum is capped at 1).

Rate limit
----------
Klarna counts its limit per merchant, over the merchant's whole traffic, and
does not say how. The emulator counts L (``rate_limit_rps``) in one of three
accountings, on its monotonic clock from the moment the knobs were set (or the
request log reset), the "epoch":

``fixed``
    1-second windows ``[epoch + k, epoch + k + 1)``: a request is admitted
    while fewer than L were counted in its window. ``X-Ratelimit-Remaining``:
    L less the window's count; ``X-Ratelimit-Reset`` and ``Retry-After``: the
    seconds until the window ends.
``sliding``
    a request at t is admitted if fewer than L were counted in ``(t - 1, t]``.
    Remaining: L less that count; Reset: the seconds until the oldest counted
    request leaves the window (one more is then admitted); Retry-After: the
    same (when forced faults overfilled the window: until enough have left).
``token``
    a bucket of L tokens, full at the epoch, refilled continuously at L per
    second up to L: a request is admitted if the bucket holds a whole token,
    and takes it. Remaining: the whole tokens left; Reset: the seconds until
    the bucket is full again (``(L - tokens) / L``); Retry-After: the seconds
    until it holds one token.

A refused request gets 429 ``RATE_LIMITED`` (``Retry-After`` unless
``retry_after`` is off) and is not counted. Counted are the connector's
requests that are not answered 429 (a forced fault from steps 1-2 counts too,
unless it is ``rate_limit``; it counts even over the limit: the window
overfills, the bucket goes into debt) and the other traffic's admitted ones.

Every API answer (200, 4xx, 5xx, 429; not connection resets, not admin
endpoints) carries ``X-Ratelimit-Limit: <L>, <L>;w=1``,
``X-Ratelimit-Remaining: <max(0, remaining)>`` and ``X-Ratelimit-Reset:
<seconds, rounded up, >= 1>`` (``Retry-After`` is rounded the same way), where
L is ``rate_limit_rps`` when set, else 200 (Klarna's production limit: the
headers are sent and the other traffic is counted against 200 even when nothing
is enforced; the connector is then never refused).

The merchant's other traffic
----------------------------
Real requests, counted exactly against the same limiter and admitted or
refused by the same rule as the connector's. Their arrival times (seconds since
the epoch) follow ``other_traffic_pattern`` at the average ``r =
other_traffic_rps``:

``steady``  the k-th at ``k / r`` (evenly spaced);
``step``    none until ``s = other_traffic_step_at_s``, then evenly spaced at
            ``r``: the k-th at ``s + k / r`` (the merchant's checkout
            stepping up from nothing to r mid-sync);
``bursts``  ``4 r`` during the first quarter of each second of the epoch,
            none in the rest: r per second, all in ``[j, j + 0.25]``;
``poisson`` exponential inter-arrival times at rate r, drawn from a generator
            seeded with ``other_traffic_seed`` (the same times per seed).

They are computed lazily: whenever the limiter is asked (an API request, the
stats), every arrival up to now is decided first, in time order, so the
outcome is that of a real interleaving at those instants (an arrival at the
same instant as one of the connector's requests goes first; under ``fixed``
one exactly on a window's end belongs to the window it ends). With ``fixed``,
``steady`` and a whole r, the k-th second's arrivals are those of the old
arithmetic model, ``floor(r * t)`` by t seconds into the window.

``stats()["rate_limit"]`` keeps its shape (``limit``, ``enforced``,
``windows``: the 1-second windows in which the connector sent a request,
``other_traffic``: ``requests`` and ``refused``, ``lowest_remaining``);
``stats()["rate_limit_sharing"]`` (``RateLimiter.sharing``) has it all:
``accounting``, ``limit``, ``enforced``, ``seconds`` (since the epoch),
``ours``: ``requests`` (API requests that met the limiter), ``refused``
(answered 429 by it), ``first_s`` and ``last_s`` (seconds since the epoch of
the first and the last, null before any), ``others``: ``pattern``, ``rps``, ``step_at_s``, ``seed``,
``requests`` and ``refused`` (in the windows in which the connector sent a
request, as ``rate_limit.other_traffic``), ``requests_all`` and ``refused_all``
(in every window since the last reset).
"""
from __future__ import annotations

import bisect
import hashlib
import math
import random
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields

__all__ = ["FaultConfig", "FaultController", "FaultDecision", "RateLimiter", "RateLimitReading", "ENDPOINTS",
           "RANDOM_FAULTS", "DETERMINISTIC_FAULTS", "DEFAULT_RATE_LIMIT", "ACCOUNTINGS", "TRAFFIC_PATTERNS",
           "other_traffic", "retry_after_header"]

#: the API endpoints, as the request log names them
ENDPOINTS = ("payouts", "payouts_summary", "payout", "transactions", "order", "disputes")
#: random fault kinds, in the order of the cumulative draw
RANDOM_FAULTS = ("error_5xx", "connection_reset", "truncated_body", "invalid_json", "slow")
#: names accepted in ``fail_requests`` and ``endpoint_faults``
DETERMINISTIC_FAULTS = RANDOM_FAULTS + ("error_500", "error_503", "rate_limit", "foreign_body", "no_pagination",
                                        "null_items", "not_found", "forbidden", "bad_request")
#: Klarna's production limit: the X-Ratelimit-Limit sent when no limit is enforced
DEFAULT_RATE_LIMIT = 200
WINDOW_SECONDS = 1.0
#: how the limit is counted (``rate_limit_accounting``); the first is the default
ACCOUNTINGS = ("fixed", "sliding", "token")
#: how the merchant's other traffic arrives (``other_traffic_pattern``); the first is the default
TRAFFIC_PATTERNS = ("steady", "step", "bursts", "poisson")
#: ``step``: seconds before the other traffic starts
DEFAULT_STEP_AT_S = 10.0
#: tolerance of the window arithmetic: clock differences carry float noise (1000.4 - 1000 < 0.4)
_EPSILON = 1e-9


def _fault_name(value, where: str) -> str:
    if value not in DETERMINISTIC_FAULTS:
        raise ValueError(f"unknown fault {value!r} in {where}; known: {', '.join(DETERMINISTIC_FAULTS)}")
    return value


@dataclass
class FaultConfig:
    latency_ms: float = 0.0
    rate_limit_rps: int | None = None
    rate_limit_accounting: str = "fixed"
    other_traffic_rps: float = 0.0
    other_traffic_pattern: str = "steady"
    other_traffic_step_at_s: float = DEFAULT_STEP_AT_S
    other_traffic_seed: int = 0
    retry_after: bool = True
    error_5xx: float = 0.0
    connection_reset: float = 0.0
    truncated_body: float = 0.0
    invalid_json: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 30.0
    fault_seed: int = 0
    fail_requests: dict = field(default_factory=dict)
    endpoint_faults: dict = field(default_factory=dict)
    disputes_enrolled: bool = True

    def __post_init__(self):
        self.latency_ms = float(self.latency_ms or 0)
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        rps = self.rate_limit_rps
        if rps in (None, 0, 0.0, "", False):
            self.rate_limit_rps = None
        else:
            quota = float(rps)
            if quota < 1 or quota != int(quota):
                raise ValueError(f"rate_limit_rps is a quota of requests per 1-second window: a whole number "
                                 f">= 1 (or 0/None for off), got {rps!r}")
            self.rate_limit_rps = int(quota)
        self.other_traffic_rps = float(self.other_traffic_rps or 0)
        if self.other_traffic_rps < 0:
            raise ValueError("other_traffic_rps must be >= 0")
        if self.rate_limit_accounting not in ACCOUNTINGS:
            raise ValueError(f"unknown rate_limit_accounting {self.rate_limit_accounting!r}; "
                             f"known: {', '.join(ACCOUNTINGS)}")
        if self.other_traffic_pattern not in TRAFFIC_PATTERNS:
            raise ValueError(f"unknown other_traffic_pattern {self.other_traffic_pattern!r}; "
                             f"known: {', '.join(TRAFFIC_PATTERNS)}")
        self.other_traffic_step_at_s = float(self.other_traffic_step_at_s)
        if not 0 <= self.other_traffic_step_at_s < 1e9:
            raise ValueError("other_traffic_step_at_s must be >= 0 seconds")
        self.other_traffic_seed = int(self.other_traffic_seed)
        self.retry_after = bool(self.retry_after)
        for name in RANDOM_FAULTS:
            v = float(getattr(self, name) or 0)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1], got {v}")
            setattr(self, name, v)
        self.slow_seconds = float(self.slow_seconds)
        if self.slow_seconds < 0:
            raise ValueError("slow_seconds must be >= 0")
        self.fault_seed = int(self.fault_seed)
        by_number = {}
        for k, v in dict(self.fail_requests or {}).items():
            n = int(k)
            if n < 1:
                raise ValueError("fail_requests keys are 1-based request numbers")
            by_number[n] = _fault_name(v, "fail_requests")
        self.fail_requests = by_number
        by_endpoint = {}
        for endpoint, v in dict(self.endpoint_faults or {}).items():
            if endpoint not in ENDPOINTS:
                raise ValueError(f"unknown endpoint {endpoint!r} in endpoint_faults; known: {', '.join(ENDPOINTS)}")
            by_endpoint[endpoint] = _fault_name(v, "endpoint_faults")
        self.endpoint_faults = by_endpoint
        self.disputes_enrolled = bool(self.disputes_enrolled)

    @classmethod
    def from_dict(cls, data: dict | None) -> "FaultConfig":
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault knobs: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fail_requests"] = {str(k): v for k, v in sorted(self.fail_requests.items())}
        d["endpoint_faults"] = dict(sorted(self.endpoint_faults.items()))
        return d

    @property
    def rate_limit(self) -> int:
        """L: the enforced quota, or Klarna's production limit when none is enforced."""
        return self.rate_limit_rps or DEFAULT_RATE_LIMIT

    def draw(self, n: int):
        """The random fault for request ``n`` (or None). Pure function of (fault_seed, n)."""
        if not any(getattr(self, name) for name in RANDOM_FAULTS):
            return None
        h = hashlib.blake2b(f"{self.fault_seed}:{n}".encode(), digest_size=16).digest()
        u = int.from_bytes(h[:8], "big") / 2.0 ** 64
        acc = 0.0
        for name in RANDOM_FAULTS:
            acc += getattr(self, name)
            if u < acc:
                if name == "error_5xx":
                    return "error_503" if h[8] & 1 else "error_500"
                return name
        return None


def retry_after_header(seconds: float) -> str:
    """Whole seconds, rounded up, at least 1."""
    return str(max(1, int(math.ceil(seconds))))


@dataclass(frozen=True)
class RateLimitReading:
    """The rate-limit state one API request met (after it was counted, when it was)."""

    allowed: bool  #: False: the quota was used up, the answer is 429
    limit: int
    remaining: int
    seconds_to_reset: float  #: X-Ratelimit-Reset before rounding (see the module docstring per accounting)
    #: seconds until a request would be admitted again (a 429's Retry-After); None: ``seconds_to_reset``
    seconds_to_retry: float | None = None

    @property
    def retry_after_seconds(self) -> float:
        return self.seconds_to_reset if self.seconds_to_retry is None else self.seconds_to_retry

    def headers(self) -> tuple:
        reset = retry_after_header(self.seconds_to_reset)
        return (("X-Ratelimit-Limit", f"{self.limit}, {self.limit};w=1"),
                ("X-Ratelimit-Remaining", str(self.remaining)),
                ("X-Ratelimit-Reset", reset))


# ---------------------------------------------------------------------------------------------------------
# The merchant's other traffic: a sequence of arrival times, in seconds since the limiter's epoch.
# ``count(t)`` is how many arrived in (0, t]; ``time_of(k)`` is the time of the k-th (1-based). Callers only
# move forward (``forget(k)``: arrivals 1..k will not be asked for again).

class _NoTraffic:
    name = "none"

    def count(self, t: float) -> int:
        return 0

    def time_of(self, k: int) -> float:  # pragma: no cover - count() is always 0
        raise IndexError(k)

    def forget(self, k: int):
        pass


class _FluidTraffic:
    """Deterministic arrivals: the k-th arrives when the cumulative rate ``fluid(t)`` reaches k."""

    def __init__(self, rps: float):
        self.rps = rps

    def count(self, t: float) -> int:
        return max(0, math.floor(self.fluid(t) + _EPSILON))

    def forget(self, k: int):
        pass


class _SteadyTraffic(_FluidTraffic):
    """Evenly spaced at the average rate: the k-th at ``k / rps``."""
    name = "steady"

    def fluid(self, t):
        return self.rps * t

    def time_of(self, k):
        return k / self.rps


class _StepTraffic(_FluidTraffic):
    """Nothing until ``step_at`` seconds, then evenly spaced at ``rps``: the k-th at ``step_at + k / rps``
    (a step up from nothing to the given rate mid-sync)."""
    name = "step"

    def __init__(self, rps, step_at):
        super().__init__(rps)
        self.step_at = step_at

    def fluid(self, t):
        return self.rps * max(0.0, t - self.step_at)

    def time_of(self, k):
        return self.step_at + k / self.rps


class _BurstTraffic(_FluidTraffic):
    """Four times the average during the first quarter of each second (of the epoch), nothing in the rest:
    ``rps`` per second, all of them in ``[j, j + 0.25]``."""
    name = "bursts"

    def fluid(self, t):
        whole = math.floor(t + _EPSILON)
        return self.rps * whole + 4 * self.rps * min(max(0.0, t - whole), 0.25)

    def time_of(self, k):
        second = math.ceil(k / self.rps - _EPSILON) - 1
        return second + (k - self.rps * second) / (4 * self.rps)


class _PoissonTraffic:
    """Exponential inter-arrival times at the average rate, drawn from ``random.Random(seed)``: the same
    arrival times for the same (rps, seed), whatever the connector does."""
    name = "poisson"

    def __init__(self, rps, seed):
        self.rps = rps
        self._rng = random.Random(f"klarna-emulator-other-traffic:{seed}")
        self._times = []  # arrivals base+1 .. base+len(_times)
        self._base = 0
        self._last = 0.0

    def _extend_past(self, t):
        while not self._times or self._times[-1] <= t:
            self._last += self._rng.expovariate(self.rps)
            self._times.append(self._last)

    def count(self, t):
        self._extend_past(t)
        return self._base + bisect.bisect_right(self._times, t)

    def time_of(self, k):
        while self._base + len(self._times) < k:
            self._extend_past(self._last)
        return self._times[k - self._base - 1]

    def forget(self, k):
        drop = min(len(self._times), k - self._base)
        if drop > 4096 or drop == len(self._times):  # amortised: drop in chunks
            del self._times[:drop]
            self._base += drop


def other_traffic(pattern: str, rps: float, step_at_s: float = DEFAULT_STEP_AT_S, seed: int = 0):
    """The arrival sequence of the merchant's other traffic (see the module docstring)."""
    if pattern not in TRAFFIC_PATTERNS:
        raise ValueError(f"unknown other_traffic_pattern {pattern!r}; known: {', '.join(TRAFFIC_PATTERNS)}")
    if not rps:
        return _NoTraffic()
    if pattern == "steady":
        return _SteadyTraffic(rps)
    if pattern == "step":
        return _StepTraffic(rps, step_at_s)
    if pattern == "bursts":
        return _BurstTraffic(rps)
    return _PoissonTraffic(rps, seed)


class RateLimiter:
    """Klarna's per-merchant quota, shared with the merchant's other traffic, in one of three accountings.

    Times are seconds on ``clock`` (monotonic) since ``epoch``, the moment of ``configure`` or ``reset``.
    The other traffic's arrivals are computed lazily: whenever the limiter is asked (one of our requests,
    ``stats``), every arrival up to now is admitted or refused first, in time order, by the same rule as
    ours, so the outcome is what a real interleaving at those instants gives. ``windows``: the 1-second
    windows ``[epoch + k, epoch + k + 1)`` in which the connector sent at least one API request; the other
    traffic's ``other_requests``/``other_refused`` count its arrivals in those windows only (an arrival at
    ``t`` belongs to the window ``(k, k + 1]`` holding it), ``all_other_*`` in every window.
    """

    def __init__(self, limit: int | None = None, other_traffic_rps: float = 0.0, clock=time.monotonic, *,
                 accounting: str = "fixed", pattern: str = "steady", step_at_s: float = DEFAULT_STEP_AT_S,
                 seed: int = 0):
        self._clock = clock
        self._lock = threading.Lock()
        self.configure(limit, other_traffic_rps, accounting=accounting, pattern=pattern, step_at_s=step_at_s,
                       seed=seed)
        self.reset()

    def configure(self, limit: int | None, other_traffic_rps: float = 0.0, *, accounting: str = "fixed",
                  pattern: str = "steady", step_at_s: float = DEFAULT_STEP_AT_S, seed: int = 0):
        """New knobs: they apply from a fresh start now (empty window or full bucket, the other traffic's
        pattern from its beginning); the statistics are kept."""
        if accounting not in ACCOUNTINGS:
            raise ValueError(f"unknown rate_limit_accounting {accounting!r}; known: {', '.join(ACCOUNTINGS)}")
        other_traffic(pattern, 0.0)  # validates the name
        with self._lock:
            self.enforced = limit is not None
            self.limit = int(limit) if limit is not None else DEFAULT_RATE_LIMIT
            self.other_traffic_rps = float(other_traffic_rps or 0)
            self.accounting = accounting
            self.pattern = pattern
            self.step_at_s = float(step_at_s)
            self.seed = int(seed)
            self._start()

    def reset(self):
        """Statistics back to zero and a fresh start now."""
        with self._lock:
            self.windows = 0
            self.other_requests = 0
            self.other_refused = 0
            self.our_requests = 0
            self.our_refused = 0
            self.our_first = self.our_last = None  # seconds since the epoch of the first and last
            self.all_other_requests = 0  # the other traffic's in every window, the connector's idle ones too
            self.all_other_refused = 0
            self.lowest_remaining = None
            self._start()

    def _start(self):
        self._epoch = self._clock()
        self._traffic = other_traffic(self.pattern, self.other_traffic_rps, self.step_at_s, self.seed)
        self._others_done = 0  # arrivals 1.._others_done are decided
        self._our_window = None  # the 1-s window of our last request (for ``windows``)
        # the other traffic's tallies of a window in which the connector has sent nothing yet
        self._pending_window = None
        self._pending = [0, 0]
        # fixed: the open window and what it has counted (ours and the others' admitted)
        self._window = None
        self._window_used = 0
        # sliding: the times of the requests counted in the last second, oldest first
        self._recent = deque()
        # token: the bucket at time _bucket_at
        self._tokens = float(self.limit)
        self._bucket_at = 0.0

    # ----------------------------------------------------------------- the three accountings
    @property
    def _used(self) -> int:
        """What the accounting counts as used now (fixed: in the open window; sliding: in the last second;
        token: the bucket's missing tokens, rounded up)."""
        if self.accounting == "fixed":
            return self._window_used
        if self.accounting == "sliding":
            return len(self._recent)
        return self.limit - math.floor(self._tokens + _EPSILON)

    def _fixed_window(self, t: float, closed_right: bool) -> int:
        # our request at t belongs to [k, k+1); an arrival of the other traffic exactly at k + 1 to the
        # window it ends (the k-th second's arrivals are those in (k, k + 1])
        return math.ceil(t - _EPSILON) - 1 if closed_right else math.floor(t + _EPSILON)

    def _fixed_enter(self, index: int):
        if self._window != index:
            self._window = index
            self._window_used = 0

    def _expire(self, t: float):
        recent = self._recent
        while recent and recent[0] <= t - WINDOW_SECONDS + _EPSILON:
            recent.popleft()

    def _refill(self, t: float):
        if t > self._bucket_at:
            self._tokens = min(float(self.limit), self._tokens + (t - self._bucket_at) * self.limit)
            self._bucket_at = t

    def _others_until(self, now: float):
        """Admit or refuse every arrival of the other traffic up to ``now`` (seconds since the epoch)."""
        traffic, limit = self._traffic, self.limit
        target = traffic.count(now)
        done = self._others_done
        while done < target:
            t = traffic.time_of(done + 1)
            if self.accounting == "fixed":
                index = self._fixed_window(t, closed_right=True)
                self._fixed_enter(index)
                n = min(target, traffic.count(index + 1)) - done  # the window's arrivals up to now
                n = max(1, n)
                used = min(n, max(0, limit - self._window_used))
                self._window_used += used
                refused = n - used
            elif self.accounting == "sliding":
                self._expire(t)
                if len(self._recent) < limit:
                    self._recent.append(t)
                    n, refused = 1, 0
                else:  # refused until the oldest counted request leaves the window
                    n = max(1, min(target, traffic.count(self._recent[0] + WINDOW_SECONDS - 1e-6),
                                   traffic.count(self._fixed_window(t, closed_right=True) + 1)) - done)
                    refused = n
            else:
                self._refill(t)
                if self._tokens >= 1 - _EPSILON:
                    self._tokens -= 1
                    n, refused = 1, 0
                else:  # refused until the bucket holds a whole token again
                    ready = t + (1 - self._tokens) / limit
                    n = max(1, min(target, traffic.count(ready - 1e-6),
                                   traffic.count(self._fixed_window(t, closed_right=True) + 1)) - done)
                    refused = n
            done += n
            self._tally(self._fixed_window(t, closed_right=True), n, refused)
        self._others_done = done
        traffic.forget(done)

    def _tally(self, window: int, n: int, refused: int):
        """``n`` arrivals of the other traffic in the 1-s window ``(window, window + 1]``, ``refused`` of them
        refused: counted in the statistics if the connector sends a request in that window."""
        self.all_other_requests += n
        self.all_other_refused += refused
        if window == self._our_window:
            self.other_requests += n
            self.other_refused += refused
            return
        if window != self._pending_window:
            self._pending_window, self._pending = window, [0, 0]
        self._pending[0] += n
        self._pending[1] += refused

    def _now(self) -> float:
        return max(0.0, self._clock() - self._epoch)

    def admit(self, enforce: bool = True, consume: bool = True) -> RateLimitReading:
        """One API request of the connector. With ``enforce`` (and a limit enforced), a request that finds
        the quota used up is refused (429) and not counted; otherwise it is counted when ``consume``."""
        with self._lock:
            now = self._now()
            self._others_until(now)
            index = math.floor(now / WINDOW_SECONDS + _EPSILON)
            if index != self._our_window:
                self._our_window = index
                self.windows += 1
                if self._pending_window == index:
                    self.other_requests += self._pending[0]
                    self.other_refused += self._pending[1]
                self._pending_window, self._pending = None, [0, 0]
            limit = self.limit
            if self.accounting == "fixed":
                self._fixed_enter(self._fixed_window(now, closed_right=False))
                over = self._window_used >= limit
            elif self.accounting == "sliding":
                self._expire(now)
                over = len(self._recent) >= limit
            else:
                self._refill(now)
                over = self._tokens < 1 - _EPSILON
            allowed = not (enforce and self.enforced and over)
            if allowed and consume:
                if self.accounting == "fixed":
                    self._window_used += 1
                elif self.accounting == "sliding":
                    self._recent.append(now)
                else:
                    self._tokens -= 1
            self.our_requests += 1
            if self.our_first is None:
                self.our_first = now
            self.our_last = now
            if not allowed:
                self.our_refused += 1
            return self._reading(allowed, now)

    def _reading(self, allowed: bool, now: float) -> RateLimitReading:
        limit = self.limit
        if self.accounting == "fixed":
            remaining = limit - self._window_used
            to_reset = min(WINDOW_SECONDS, (self._window + 1) * WINDOW_SECONDS - now)
            to_retry = to_reset
        elif self.accounting == "sliding":
            remaining = limit - len(self._recent)
            # when the oldest counted request leaves the window (one more may then be admitted)
            to_reset = (self._recent[0] + WINDOW_SECONDS - now) if self._recent else WINDOW_SECONDS
            # a window that forced faults overfilled admits again once enough of them have left it
            over = len(self._recent) - limit
            to_retry = (self._recent[over] + WINDOW_SECONDS - now) if over >= 0 else to_reset
        else:
            remaining = math.floor(self._tokens + _EPSILON)
            to_reset = (limit - self._tokens) / limit  # until the bucket is full again
            to_retry = max(0.0, (1 - self._tokens) / limit)  # until it holds one token
        return RateLimitReading(allowed, limit, max(0, remaining), to_reset, to_retry)

    def saw_remaining(self, remaining: int):
        """An answer carrying ``X-Ratelimit-Remaining: remaining`` is being sent."""
        with self._lock:
            if self.lowest_remaining is None or remaining < self.lowest_remaining:
                self.lowest_remaining = remaining

    def stats(self) -> dict:
        """The statistics as they have always been shaped (see ``sharing`` for the rest)."""
        with self._lock:
            self._others_until(self._now())
            return {"limit": self.limit, "enforced": self.enforced, "windows": self.windows,
                    "other_traffic": {"requests": self.other_requests, "refused": self.other_refused},
                    "lowest_remaining": self.lowest_remaining}

    def sharing(self) -> dict:
        """Who used the quota: the connector's requests and how many the limiter refused (429), the other
        traffic's and how many it refused, under which accounting and pattern, since the last reset
        (``seconds``: since the last reset or knob change)."""
        with self._lock:
            now = self._now()
            self._others_until(now)
            return {"accounting": self.accounting, "limit": self.limit, "enforced": self.enforced,
                    "seconds": round(now, 6),
                    "ours": {"requests": self.our_requests, "refused": self.our_refused,
                             "first_s": self.our_first, "last_s": self.our_last},
                    "others": {"pattern": self.pattern, "rps": self.other_traffic_rps,
                               "step_at_s": self.step_at_s, "seed": self.seed,
                               "requests": self.other_requests, "refused": self.other_refused,
                               "requests_all": self.all_other_requests, "refused_all": self.all_other_refused}}


@dataclass(frozen=True)
class FaultDecision:
    config: FaultConfig  #: the knobs in force for this request
    fault: str | None  #: the fault to inject; "rate_limit" is a 429
    rate: RateLimitReading


class FaultController:
    """Holds the current FaultConfig (replaced atomically) and the merchant's rate limiter."""

    def __init__(self, config: FaultConfig | None = None, clock=time.monotonic):
        self._lock = threading.Lock()
        self.limiter = RateLimiter(clock=clock)
        self.set(config or FaultConfig())

    def set(self, config: FaultConfig):
        with self._lock:
            self._config = config
            self.limiter.configure(config.rate_limit_rps, config.other_traffic_rps,
                                   accounting=config.rate_limit_accounting, pattern=config.other_traffic_pattern,
                                   step_at_s=config.other_traffic_step_at_s, seed=config.other_traffic_seed)

    @property
    def config(self) -> FaultConfig:
        return self._config

    def decide(self, n: int, endpoint: str) -> FaultDecision:
        """The fault for API request ``n`` of ``endpoint`` (see the module docstring for the order)."""
        config = self._config
        forced = config.fail_requests.get(n) or config.endpoint_faults.get(endpoint)
        if forced is not None:
            rate = self.limiter.admit(enforce=False, consume=forced != "rate_limit")
            return FaultDecision(config, forced, rate)
        rate = self.limiter.admit()
        if not rate.allowed:
            return FaultDecision(config, "rate_limit", rate)
        return FaultDecision(config, config.draw(n), rate)
