"""Fault knobs of the emulator: latency, rate limiting and injected failures.

All knobs live in one ``FaultConfig``; it is set at start (CLI flags) and
replaced at run time (``POST /_emulator/faults``). Admin endpoints are exempt.

Per API request number ``n`` (1-based, counted since start or the last
``POST /_emulator/requests/reset``) the server decides, in this order:

1. ``fail_requests[n]`` if present: that exact fault, nothing else is drawn
   (names: ``error_5xx``/``error_503`` -> 503, ``error_500`` -> 500,
   ``connection_reset``, ``truncated_body``, ``invalid_json``, ``slow``,
   ``rate_limit`` -> 429).
2. the token bucket (``rate_limit_rps`` tokens per second, burst =
   ``rate_limit_rps``): no token -> 429 (``Retry-After: <whole seconds>`` unless
   ``retry_after`` is False).
3. a random fault: one uniform number drawn from ``(fault_seed, n)`` (so a run
   is reproducible whatever the thread scheduling) is compared with the
   cumulative rates ``error_5xx, connection_reset, truncated_body,
   invalid_json, slow`` (in that order; their sum is capped at 1).

``latency_ms`` is added to every API response (also to faults and 429s).
"""
from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import asdict, dataclass, field, fields

__all__ = ["FaultConfig", "FaultController", "TokenBucket", "RANDOM_FAULTS", "DETERMINISTIC_FAULTS"]

#: random fault kinds, in the order of the cumulative draw
RANDOM_FAULTS = ("error_5xx", "connection_reset", "truncated_body", "invalid_json", "slow")
#: names accepted in ``fail_requests``
DETERMINISTIC_FAULTS = RANDOM_FAULTS + ("error_500", "error_503", "rate_limit")


@dataclass
class FaultConfig:
    latency_ms: float = 0.0
    rate_limit_rps: float | None = None
    retry_after: bool = True
    error_5xx: float = 0.0
    connection_reset: float = 0.0
    truncated_body: float = 0.0
    invalid_json: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 30.0
    fault_seed: int = 0
    fail_requests: dict = field(default_factory=dict)

    def __post_init__(self):
        self.latency_ms = float(self.latency_ms or 0)
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        rps = self.rate_limit_rps
        self.rate_limit_rps = None if rps in (None, 0, 0.0, "", False) else float(rps)
        if self.rate_limit_rps is not None and self.rate_limit_rps <= 0:
            raise ValueError("rate_limit_rps must be > 0 (or 0/None for off)")
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
        fr = {}
        for k, v in dict(self.fail_requests or {}).items():
            n = int(k)
            if n < 1:
                raise ValueError("fail_requests keys are 1-based request numbers")
            if v not in DETERMINISTIC_FAULTS:
                raise ValueError(f"unknown fault {v!r}; known: {', '.join(DETERMINISTIC_FAULTS)}")
            fr[n] = v
        self.fail_requests = fr

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
        return d

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


class TokenBucket:
    """Classic token bucket: ``rate`` tokens/s, capacity ``burst`` (default = rate, at least 1)."""

    def __init__(self, rate: float, burst: float | None = None, clock=time.monotonic):
        self.rate = float(rate)
        self.capacity = max(1.0, float(burst if burst is not None else rate))
        self._clock = clock
        self._tokens = self.capacity
        self._last = clock()
        self._lock = threading.Lock()

    def take(self):
        """-> (allowed, seconds until a token is available)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True, 0.0
            return False, (1.0 - self._tokens) / self.rate


class FaultController:
    """Holds the current FaultConfig and its token bucket; replaced atomically."""

    def __init__(self, config: FaultConfig | None = None):
        self._lock = threading.Lock()
        self.set(config or FaultConfig())

    def set(self, config: FaultConfig):
        bucket = TokenBucket(config.rate_limit_rps) if config.rate_limit_rps else None
        with self._lock:
            self._state = (config, bucket)

    @property
    def config(self) -> FaultConfig:
        return self._state[0]

    def decide(self, n: int):
        """-> (config, fault name or None, retry_after seconds or None when rate limited)."""
        config, bucket = self._state
        fault = config.fail_requests.get(n)
        if fault == "rate_limit":
            return config, None, 1.0
        if fault is not None:
            return config, fault, None
        if bucket is not None:
            ok, wait = bucket.take()
            if not ok:
                return config, None, wait
        return config, config.draw(n), None


def retry_after_header(seconds: float) -> str:
    return str(max(1, int(math.ceil(seconds))))
