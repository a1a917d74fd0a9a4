"""Fault knobs of the emulator: latency, Klarna's rate limit and injected failures.

All knobs live in one ``FaultConfig``; it is set at start (CLI flags) and
replaced at run time (``POST /_emulator/faults``). Admin endpoints are exempt
from all of them.

Knobs (CLI flag in brackets)
----------------------------
``latency_ms`` [--latency-ms]
    added to every API response (also to faults and 429s).
``rate_limit_rps`` [--rate-limit-rps]
    the merchant's quota per fixed 1-second window (Klarna's ``w=1``), a whole
    number; ``None``/0 = not enforced. See "Rate limit" below.
``other_traffic_rps`` [--other-traffic-rps]
    requests per second of the same quota used by the merchant's other traffic
    (its checkout), spread evenly over each window.
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
    (``payouts``, ``payouts_summary``, ``payout``, ``transactions``, ``order``).

Fault names (``fail_requests`` and ``endpoint_faults``)
------------------------------------------------------
``error_5xx``/``error_503`` -> 503, ``error_500`` -> 500, ``connection_reset``
(TCP RST, no answer), ``truncated_body`` (half the body, then the connection
closes), ``invalid_json`` (200 with half a JSON body), ``slow`` (the answer
after ``slow_seconds``), ``rate_limit`` -> 429, ``foreign_body`` (200,
``Content-Type: text/html``, a captive-portal login page), ``no_pagination``
(200, a collection without its ``pagination`` block; other endpoints answer as
usual), ``null_items`` (200, the collection's list as ``null``; other endpoints
as usual), ``not_found`` -> 404 ``NOT_FOUND``, ``forbidden`` -> 403
``FORBIDDEN``, ``bad_request`` -> 400 ``BAD_REQUEST`` whose message names a
parameter (``start_date: must be a valid date-time``).

Decision per API request
------------------------
Per API request number ``n`` (1-based, counted since start or the last
``POST /_emulator/requests/reset``) the server decides, in this order:

1. ``fail_requests[n]`` if present: that exact fault, nothing else is drawn;
2. ``endpoint_faults[endpoint]`` if present: that fault;
3. the rate limit: the window's quota used up -> 429 ``RATE_LIMITED``;
4. a random fault: one uniform number drawn from ``(fault_seed, n)`` (so a run
   is reproducible whatever the thread scheduling) is compared with the
   cumulative rates ``error_5xx, connection_reset, truncated_body,
   invalid_json, slow`` (in that order; their sum is capped at 1).

Rate limit
----------
Klarna counts its limit per merchant, over the merchant's whole traffic, in
fixed 1-second windows. The emulator's windows run on its monotonic clock from
the moment the knobs were set (or the request log reset). In a window, once the
requests counted reach the quota L, every API request gets 429 (``Retry-After:
<seconds to the window's end, rounded up, >= 1>`` unless ``retry_after`` is
off) until the window ends. Counted are the connector's requests that are not
answered 429 (a forced fault from steps 1-2 counts too, unless it is
``rate_limit``) and the other traffic: at time t into a window it has used
``floor(other_traffic_rps * t)`` requests, ``floor(other_traffic_rps)`` by the
window's end; those that would exceed the quota are "refused" (they would have
got 429), counted but not used.

Every API answer (200, 4xx, 5xx, 429; not connection resets, not admin
endpoints) carries ``X-Ratelimit-Limit: <L>, <L>;w=1``,
``X-Ratelimit-Remaining: <max(0, L - used in this window)>`` and
``X-Ratelimit-Reset: <seconds until the window ends, rounded up, >= 1>``,
where L is ``rate_limit_rps`` when set, else 200 (Klarna's production limit:
the headers are sent even when nothing is enforced).
"""
from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import asdict, dataclass, field, fields

__all__ = ["FaultConfig", "FaultController", "FaultDecision", "RateLimiter", "RateLimitReading", "ENDPOINTS",
           "RANDOM_FAULTS", "DETERMINISTIC_FAULTS", "DEFAULT_RATE_LIMIT", "retry_after_header"]

#: the API endpoints, as the request log names them
ENDPOINTS = ("payouts", "payouts_summary", "payout", "transactions", "order")
#: random fault kinds, in the order of the cumulative draw
RANDOM_FAULTS = ("error_5xx", "connection_reset", "truncated_body", "invalid_json", "slow")
#: names accepted in ``fail_requests`` and ``endpoint_faults``
DETERMINISTIC_FAULTS = RANDOM_FAULTS + ("error_500", "error_503", "rate_limit", "foreign_body", "no_pagination",
                                        "null_items", "not_found", "forbidden", "bad_request")
#: Klarna's production limit: the X-Ratelimit-Limit sent when no limit is enforced
DEFAULT_RATE_LIMIT = 200
WINDOW_SECONDS = 1.0
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
    other_traffic_rps: float = 0.0
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

    allowed: bool  #: False: the window's quota was used up, the answer is 429
    limit: int
    remaining: int
    seconds_to_reset: float  #: until the window ends, in (0, 1]

    def headers(self) -> tuple:
        reset = retry_after_header(self.seconds_to_reset)
        return (("X-Ratelimit-Limit", f"{self.limit}, {self.limit};w=1"),
                ("X-Ratelimit-Remaining", str(self.remaining)),
                ("X-Ratelimit-Reset", reset))


class RateLimiter:
    """Klarna's per-merchant quota in fixed 1-second windows, shared with the merchant's other traffic.

    Windows are ``[epoch + k, epoch + k + 1)`` on ``clock`` (monotonic seconds), ``epoch`` being the
    moment of ``configure`` or ``reset``. The other traffic is simulated arithmetically whenever the
    limiter is asked (no threads): by ``t`` seconds into a window it has sent ``floor(rps * t)`` requests.
    Statistics cover the windows in which the connector sent at least one API request.
    """

    def __init__(self, limit: int | None = None, other_traffic_rps: float = 0.0, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self.configure(limit, other_traffic_rps)
        self.reset()

    def configure(self, limit: int | None, other_traffic_rps: float = 0.0):
        """New knobs: they apply from a fresh window starting now; the statistics are kept."""
        with self._lock:
            self.enforced = limit is not None
            self.limit = int(limit) if limit is not None else DEFAULT_RATE_LIMIT
            self.other_traffic_rps = float(other_traffic_rps or 0)
            self._start_windows()

    def reset(self):
        """Statistics back to zero and a fresh window starting now."""
        with self._lock:
            self.windows = 0
            self.other_requests = 0
            self.other_refused = 0
            self.lowest_remaining = None
            self._start_windows()

    def _start_windows(self):
        self._epoch = self._clock()
        self._window = None  # index of the open window; None: none open
        self._counted = 0  # the connector's requests counted in the open window
        self._other_sent = 0  # the other traffic's requests so far in the open window (used or refused)
        self._other_used = 0

    @property
    def _used(self) -> int:
        return self._counted + self._other_used

    def _other_traffic_until(self, elapsed_in_window: float):
        due = math.floor(self.other_traffic_rps * max(0.0, elapsed_in_window) + _EPSILON)
        new = due - self._other_sent
        if new <= 0:
            return
        used = min(new, max(0, self.limit - self._used))
        self._other_sent += new
        self._other_used += used
        self.other_requests += new
        self.other_refused += new - used

    def _advance(self, now: float, open_window: bool):
        """Bring the other traffic up to ``now``; close the open window if ``now`` is past it."""
        since_epoch = max(0.0, now - self._epoch)
        index = math.floor(since_epoch / WINDOW_SECONDS + _EPSILON)
        if self._window is not None and index != self._window:
            self._other_traffic_until(WINDOW_SECONDS)  # the rest of the window that ended
            self._window = None
        if self._window is None:
            if not open_window:
                return None
            self._window = index
            self.windows += 1
            self._counted = self._other_sent = self._other_used = 0
        self._other_traffic_until(since_epoch - index * WINDOW_SECONDS)
        return min(WINDOW_SECONDS, (index + 1) * WINDOW_SECONDS - since_epoch)

    def admit(self, enforce: bool = True, consume: bool = True) -> RateLimitReading:
        """One API request of the connector. With ``enforce`` (and a limit enforced), a request that finds
        the quota used up is refused (429) and not counted; otherwise it is counted when ``consume``."""
        with self._lock:
            to_reset = self._advance(self._clock(), open_window=True)
            allowed = not (enforce and self.enforced and self._used >= self.limit)
            if allowed and consume:
                self._counted += 1
            return RateLimitReading(allowed, self.limit, max(0, self.limit - self._used), to_reset)

    def saw_remaining(self, remaining: int):
        """An answer carrying ``X-Ratelimit-Remaining: remaining`` is being sent."""
        with self._lock:
            if self.lowest_remaining is None or remaining < self.lowest_remaining:
                self.lowest_remaining = remaining

    def stats(self) -> dict:
        with self._lock:
            self._advance(self._clock(), open_window=False)
            return {"limit": self.limit, "enforced": self.enforced, "windows": self.windows,
                    "other_traffic": {"requests": self.other_requests, "refused": self.other_refused},
                    "lowest_remaining": self.lowest_remaining}


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
            self.limiter.configure(config.rate_limit_rps, config.other_traffic_rps)

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
