"""HTTP/1.1 (or, with ``tls``, HTTPS) server with Klarna Settlements + Order Management semantics.

Endpoints (Basic auth required; the names in brackets are those of the request log and of
``endpoint_faults``):

* ``GET /settlements/v1/payouts`` (start_date, end_date, currency_code, size, offset) [payouts]
* ``GET /settlements/v1/payouts/summary`` (start_date, end_date required; currency_code) [payouts_summary]
* ``GET /settlements/v1/payouts/{payment_reference}`` [payout]
* ``GET /settlements/v1/transactions`` (payment_reference, order_id, size, offset) [transactions]
* ``GET /ordermanagement/v1/orders/{order_id}`` [order]
* ``GET /disputes/v2/disputes`` (limit, next_page, sort_by, merchant_id, order_id, investigation_status, reason,
  merchant_references1, merchant_references2; repeatable) and ``GET /disputes/v2/disputes/{dispute_krn}``
  [disputes]: also need the header ``x-klarna-basic-mid`` naming the merchant and ``disputes_enrolled``

Admin endpoints (no auth, no faults, no rate limit, no rate-limit headers, not logged):
``GET /_emulator/health``, ``GET /_emulator/spec``, ``POST /_emulator/grow``,
``GET|POST /_emulator/faults``, ``GET /_emulator/requests``,
``POST /_emulator/requests/reset``, ``GET /_emulator/stats``.

Every 4xx/5xx body is Klarna's ErrorResponse ``{"error_code", "error_messages",
"correlation_id"}``; every response has a ``Klarna-Correlation-Id`` header and
a ``Content-Length``; every API answer has the ``X-Ratelimit-Limit``,
``X-Ratelimit-Remaining`` and ``X-Ratelimit-Reset`` headers (see faults.py for
the rate limit and the faults).
"""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import re
import socket
import ssl
import struct
import sys
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from .dataset import Dataset
from .dates import parse_datetime
from .disputes import MAX_LIMIT, QueryError, parse_query
from .events import STEP_KINDS
from .faults import ENDPOINTS, FaultConfig, FaultController, RateLimitReading, retry_after_header
from .tls import SelfSignedCertificate

__all__ = ["EmulatorState", "EmulatorHTTPServer", "start_server", "DEFAULT_SIZE", "MAX_SIZE"]

DEFAULT_SIZE = 20
MAX_SIZE = 500
REQUEST_LOG_LIMIT = 200_000

_SIZE_RE = re.compile(r"^[0-9]+$")
_OFFSET_RE = re.compile(r"^-?[0-9]+$")
_CURRENCY_RE = re.compile(r"^[A-Za-z]{3}$")

_ROUTES = (
    ("payouts", re.compile(r"^/settlements/v1/payouts$")),
    ("payouts_summary", re.compile(r"^/settlements/v1/payouts/summary$")),
    ("payout", re.compile(r"^/settlements/v1/payouts/([^/]+)$")),
    ("transactions", re.compile(r"^/settlements/v1/transactions$")),
    ("order", re.compile(r"^/ordermanagement/v1/orders/([^/]+)$")),
    ("disputes", re.compile(r"^/disputes/v2/disputes$")),
    ("disputes", re.compile(r"^/disputes/v2/disputes/([^/]+)$")),
)
#: the names endpoint_faults and the request log use
assert tuple(dict.fromkeys(name for name, _ in _ROUTES)) == ENDPOINTS
#: the header naming the merchant on every disputes request (Basic-auth merchants)
MID_HEADER = "x-klarna-basic-mid"


#: faults answered with a fixed ErrorResponse: fault -> (status, error_code, message)
_CANNED_ERRORS = {
    "error_5xx": (503, "SERVICE_UNAVAILABLE", "Injected server error (emulator)."),
    "error_503": (503, "SERVICE_UNAVAILABLE", "Injected server error (emulator)."),
    "error_500": (500, "INTERNAL_SERVER_ERROR", "Injected server error (emulator)."),
    "not_found": (404, "NOT_FOUND", "The requested resource was not found."),
    "forbidden": (403, "FORBIDDEN", "Access to this resource is not allowed."),
}
#: the parameter a ``bad_request`` fault complains about, per endpoint
_BAD_PARAMETER = {
    "payouts": "start_date: must be a valid date-time",
    "payouts_summary": "start_date: must be a valid date-time",
    "payout": "payment_reference: must be a valid payment reference",
    "transactions": "payment_reference: must be a valid payment reference",
    "order": "order_id: must be a valid order id",
    "disputes": f"limit: must be an integer between 1 and {MAX_LIMIT}",
}
#: faults that change the shape of a collection (other endpoints answer as usual)
_COLLECTION_SHAPES = ("no_pagination", "null_items")
#: what a captive portal or a proxy's login page answers instead of the API
FOREIGN_BODY = (b"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Sign in to the network</title></head>\n"
                b"<body><h1>Sign in to continue</h1><p>This network requires you to sign in before you can reach "
                b"the internet.</p>\n<form method=\"post\" action=\"/login\"><input name=\"user\">"
                b"<input name=\"password\" type=\"password\"><button>Sign in</button></form></body></html>\n")


def _canned_error(fault, endpoint):
    """(status, error_code, message) of a fault answered with a fixed ErrorResponse, else None."""
    if fault == "bad_request":
        return 400, "BAD_REQUEST", _BAD_PARAMETER.get(endpoint, _BAD_PARAMETER["payouts"])
    return _CANNED_ERRORS.get(fault)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers=()):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, tuple(headers)


def error_body(code: str, messages, correlation_id: str) -> bytes:
    if isinstance(messages, str):
        messages = [messages]
    return json.dumps({"error_code": code, "error_messages": list(messages), "correlation_id": correlation_id},
                      separators=(",", ":")).encode()


class EmulatorState:
    """Everything a request handler needs: data, credentials, knobs, request log."""

    def __init__(self, dataset: Dataset, username: str, password: str, faults: FaultConfig | None = None,
                 verbose: bool = False, clock=time.monotonic):
        self.dataset = dataset
        self.username, self.password = username, password
        self.faults = FaultController(faults or FaultConfig(), clock=clock)
        self.verbose = verbose
        self.shutdown_event = threading.Event()
        self._lock = threading.Lock()
        self._n = 0
        self._log = deque(maxlen=REQUEST_LOG_LIMIT)
        self._by_status = Counter()
        self._by_endpoint = Counter()
        self._faults = Counter()
        self._rate_limited = 0

    # ---------------------------------------------------------------- auth
    def check_auth(self, header):
        if not header:
            return False
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, pw = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        return bool(sep) and hmac.compare_digest(user, self.username) and hmac.compare_digest(pw, self.password)

    # ---------------------------------------------------------------- request log
    def next_request_number(self) -> int:
        with self._lock:
            self._n += 1
            return self._n

    def record(self, n, method, path, query, status, fault, endpoint, rate: RateLimitReading | None = None):
        """Log one API request; ``rate``: the rate-limit headers its answer carries (None: no answer)."""
        if rate is not None:
            self.faults.limiter.saw_remaining(rate.remaining)
        with self._lock:
            self._log.append({"n": n, "method": method, "path": path, "query": query, "status": status,
                              "fault": fault, "endpoint": endpoint})
            if status is not None:
                self._by_status[str(status)] += 1
            if status == 429:
                self._rate_limited += 1
            if fault:
                self._faults[fault] += 1
            self._by_endpoint[endpoint] += 1

    def requests(self) -> list:
        with self._lock:
            return list(self._log)

    def reset_requests(self):
        with self._lock:
            self._n = 0
            self._log.clear()
            self._by_status.clear()
            self._by_endpoint.clear()
            self._faults.clear()
            self._rate_limited = 0
        self.faults.limiter.reset()

    def stats(self) -> dict:
        with self._lock:
            return {
                "total": sum(self._by_endpoint.values()),
                "request_number": self._n,
                "by_status": dict(sorted(self._by_status.items())),
                "rate_limited": self._rate_limited,
                "rate_limit": self.faults.limiter.stats(),
                "rate_limit_sharing": self.faults.limiter.sharing(),
                "faults": dict(sorted(self._faults.items())),
                "by_endpoint": dict(sorted(self._by_endpoint.items())),
            }


class KlarnaHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "KlarnaEmulator/1.0"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are closed after this many seconds

    # ---------------------------------------------------------------- plumbing
    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            # The TLS handshake runs here, in the connection's own thread, not in the accepting loop; a
            # client that refuses the certificate ends the connection (handle_error stays quiet).
            self.request.settimeout(self.timeout)
            self.request.do_handshake()
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        if self.server.state.verbose:
            sys.stderr.write("%s - %s\n" % (self.address_string(), format % args))

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_DELETE(self):
        self._handle("DELETE")

    def do_HEAD(self):
        self._handle("HEAD")

    def send_error(self, code, message=None, explain=None):
        """Errors raised by the HTTP parser itself (bad request line, huge headers...):
        answered with Klarna's ErrorResponse too, then the connection is closed."""
        self.close_connection = True
        cid = str(uuid.uuid4())
        reason = message or self.responses.get(code, ("Error",))[0]
        body = error_body("BAD_REQUEST" if 400 <= code < 500 else "INTERNAL_SERVER_ERROR", reason, cid)
        if not getattr(self, "command", None):
            self.command = "GET"
        self._send(code, body, cid)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True  # not supported: answer and drop the connection
            return b""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            return b""
        return self.rfile.read(length) if length > 0 else b""

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            return True
        except OSError:
            self.close_connection = True
            return False

    def _head(self, status, content_type, length, cid, extra=()):
        reason = self.responses.get(status, ("",))[0]
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Date: {self.date_time_string()}",
            f"Server: {self.server_version}",
            f"Content-Type: {content_type}",
            f"Content-Length: {length}",
            f"Klarna-Correlation-Id: {cid}",
        ]
        lines.extend(f"{k}: {v}" for k, v in extra)
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, status, body: bytes, cid, extra=(), content_type="application/json"):
        head = self._head(status, content_type, len(body), cid, extra)
        self._write(head if self.command == "HEAD" else head + body)
        if self.server.state.verbose:
            self.log_request(status, len(body))

    def _base_url(self) -> str:
        host = self.headers.get("Host")
        return f"{self.server.scheme}://{host}" if host else self.server.url

    # ---------------------------------------------------------------- dispatch
    def _handle(self, method):
        body = self._read_body()
        split = urlsplit(self.path)
        path = split.path
        if path == "/_emulator" or path.startswith("/_emulator/"):
            self._admin(method, path, body)
            return
        state: EmulatorState = self.server.state
        n = state.next_request_number()
        cid = str(uuid.uuid4())
        try:
            pairs = parse_qsl(split.query, keep_blank_values=True)
        except ValueError:
            pairs = []
        query = {}
        for k, v in pairs:
            query.setdefault(k, v)
        endpoint, match = "unknown", None
        for name, rx in _ROUTES:
            match = rx.match(path)
            if match:
                endpoint = name
                break
        decision = state.faults.decide(n, endpoint)
        config, fault, rate = decision.config, decision.fault, decision.rate
        if config.latency_ms > 0:
            state.shutdown_event.wait(config.latency_ms / 1000.0)
        rate_headers = rate.headers()

        # NB: every request is recorded BEFORE its response is written, so a client that has
        # seen the response always finds it in /_emulator/requests and /_emulator/stats.
        if fault == "rate_limit":
            extra = rate_headers
            if config.retry_after:
                extra += (("Retry-After", retry_after_header(rate.retry_after_seconds)),)
            state.record(n, method, path, query, 429, fault, endpoint, rate)
            self._send(429, error_body("RATE_LIMITED", "Too many requests, slow down.", cid), cid, extra)
            return
        if fault == "connection_reset":
            state.record(n, method, path, query, None, fault, endpoint)
            self._reset_connection()
            return
        canned = _canned_error(fault, endpoint)
        if canned is not None:
            status, code, message = canned
            state.record(n, method, path, query, status, fault, endpoint, rate)
            self._send(status, error_body(code, message, cid), cid, rate_headers)
            return
        if fault == "foreign_body":
            state.record(n, method, path, query, 200, fault, endpoint, rate)
            self._send(200, FOREIGN_BODY, cid, rate_headers, content_type="text/html")
            return

        try:
            status, payload, extra = self._api(method, endpoint, match, path, pairs, query, cid,
                                               collection_shape=fault if fault in _COLLECTION_SHAPES else None,
                                               config=config)
        except ApiError as e:
            status, payload, extra = e.status, error_body(e.code, e.message, cid), e.headers
        except Exception as e:  # pragma: no cover - a bug in the emulator must still answer
            if state.verbose:
                import traceback
                traceback.print_exc()
            status, payload, extra = 500, error_body("INTERNAL_SERVER_ERROR", f"emulator bug: {e!r}", cid), ()
        extra = tuple(extra) + rate_headers

        if fault == "slow":
            state.shutdown_event.wait(config.slow_seconds)
        if fault == "truncated_body":
            if len(payload) < 2:
                payload = payload + b" " * (2 - len(payload))
            head = self._head(status, "application/json", len(payload), cid, extra)
            state.record(n, method, path, query, status, fault, endpoint, rate)
            self._write(head + payload[: len(payload) // 2])
            self.close_connection = True
            return
        if fault == "invalid_json":
            status = 200
            payload = payload[: max(1, len(payload) // 2)]
            if payload[:1] not in (b"{", b"["):
                payload = b"{" + payload
        state.record(n, method, path, query, status, fault, endpoint, rate)
        self._send(status, payload, cid, extra)

    def _reset_connection(self):
        """Close the socket with SO_LINGER 0 so the peer gets a TCP RST and no response."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            self.rfile.close()
        except OSError:
            pass
        try:
            self.connection.close()
        except OSError:
            pass

    # ---------------------------------------------------------------- API
    def _api(self, method, endpoint, match, path, pairs, query, cid, *, config, collection_shape=None):
        state: EmulatorState = self.server.state
        if not state.check_auth(self.headers.get("Authorization")):
            raise ApiError(401, "UNAUTHORIZED", "Authentication failed: missing or invalid Basic credentials.",
                           (("WWW-Authenticate", 'Basic realm="Klarna API"'),))
        if endpoint == "unknown":
            raise ApiError(404, "NOT_FOUND", f"No resource found at {path}.")
        if method != "GET":
            raise ApiError(405, "METHOD_NOT_ALLOWED", f"Method {method} is not allowed on {path}.",
                           (("Allow", "GET"),))
        ds: Dataset = state.dataset
        if endpoint == "payouts":
            size, offset = _paging(query)
            start = _date(query, "start_date", required=False)
            end = _date(query, "end_date", required=False)
            currency = _currency(query)
            rows, total = ds.payouts_page(start, end, currency, offset, size)
            return 200, self._collection(b"payouts", rows, total, offset, size, path, pairs, collection_shape), ()
        if endpoint == "payouts_summary":
            start = _date(query, "start_date", required=True)
            end = _date(query, "end_date", required=True)
            summary = ds.summary(start, end, _currency(query))
            return 200, json.dumps(summary, separators=(",", ":")).encode(), ()
        if endpoint == "payout":
            ref = unquote(match.group(1))
            body = ds.payout_json_for(ref)
            if body is None:
                raise ApiError(404, "NOT_FOUND", f"Payout with payment_reference {ref} was not found.")
            return 200, body, ()
        if endpoint == "transactions":
            size, offset = _paging(query)
            ref = query.get("payment_reference") or None
            order_id = query.get("order_id") or None
            rows, total = ds.transactions_page(ref, order_id, offset, size)
            return 200, self._collection(b"transactions", rows, total, offset, size, path, pairs,
                                         collection_shape), ()
        if endpoint == "order":
            order_id = unquote(match.group(1))
            body = ds.order_json(order_id)
            if body is None:
                raise ApiError(404, "NO_SUCH_ORDER", f"Order with id {order_id} was not found.")
            return 200, body, ()
        if endpoint == "disputes":
            self._check_disputes_access(state, config)
            if match.lastindex:
                dispute_krn = unquote(match.group(1))
                body = ds.dispute_json(dispute_krn)
                if body is None:
                    raise ApiError(404, "NOT_FOUND", f"Dispute not found: {dispute_krn}.")
                return 200, body, ()
            try:
                dispute_query = parse_query(pairs)
            except QueryError as e:
                raise ApiError(400, "BAD_REQUEST", f"Invalid request, check query parameters: {e}") from None
            rows, total, cursor = ds.disputes_page(dispute_query)
            return 200, _disputes_collection(rows, total, dispute_query.limit, cursor, collection_shape), ()
        raise ApiError(404, "NOT_FOUND", f"No resource found at {path}.")  # pragma: no cover

    def _check_disputes_access(self, state: EmulatorState, config: FaultConfig):
        """The Disputes API's own checks after Basic auth: the merchant header, then the enrollment."""
        mid = self.headers.get(MID_HEADER)
        if mid is None or not mid.strip():
            raise ApiError(403, "FORBIDDEN", f"User not authorized to access the resource: the {MID_HEADER} "
                                             f"header is missing.")
        if mid.strip() != state.dataset.spec.merchant_id:
            raise ApiError(403, "FORBIDDEN", f"User not authorized to access the resource: {MID_HEADER} "
                                             f"{mid.strip()!r} is not the merchant of these credentials.")
        if not config.disputes_enrolled:
            raise ApiError(403, "MERCHANT_NOT_ENROLLED", "User not authorized to access the resource: the merchant "
                                                         "is not onboarded on the Disputes API.")

    def _collection(self, key: bytes, rows, total, offset, size, path, pairs, shape=None) -> bytes:
        """A PayoutCollection / TransactionCollection; ``shape`` ``no_pagination`` drops its pagination block,
        ``null_items`` serves its list as null (faults)."""
        items = b"null" if shape == "null_items" else b"[" + b",".join(rows) + b"]"
        if shape == "no_pagination":
            return b"".join((b'{"', key, b'":', items, b"}"))
        pagination = {"count": len(rows), "total": total, "offset": offset}
        kept = [(k, v) for k, v in pairs if k not in ("size", "offset")]
        base = f"{self._base_url()}{path}?"
        if offset + len(rows) < total:
            pagination["next"] = base + urlencode(kept + [("size", size), ("offset", offset + size)])
        if offset > 0:
            pagination["prev"] = base + urlencode(kept + [("size", size), ("offset", max(0, offset - size))])
        return b"".join((b'{"', key, b'":', items, b',"pagination":',
                         json.dumps(pagination, separators=(",", ":")).encode(), b"}"))

    # ---------------------------------------------------------------- admin
    def _admin(self, method, path, body):
        state: EmulatorState = self.server.state
        cid = str(uuid.uuid4())
        try:
            status, payload = self._admin_route(state, method, path, body)
        except ApiError as e:
            status, payload = e.status, error_body(e.code, e.message, cid)
        except ValueError as e:
            status, payload = 400, error_body("BAD_REQUEST", str(e), cid)
        if not isinstance(payload, bytes):
            payload = json.dumps(payload, separators=(",", ":")).encode()
        self._send(status, payload, cid)

    def _admin_route(self, state: EmulatorState, method, path, body):
        def json_body():
            if not body.strip():
                return {}
            try:
                data = json.loads(body)
            except ValueError as e:
                raise ApiError(400, "BAD_REQUEST", f"body is not JSON: {e}") from None
            if not isinstance(data, dict):
                raise ApiError(400, "BAD_REQUEST", "body must be a JSON object")
            return data

        ds: Dataset = state.dataset
        route = (method, path.rstrip("/"))
        if route == ("GET", "/_emulator/health"):
            return 200, {"status": "ok", "pid": os.getpid(), "payouts": ds.payout_count,
                         "transactions": ds.transaction_count(), "growth": ds.growth,
                         "disputes": ds.dispute_count}
        if route == ("GET", "/_emulator/spec"):
            spec = asdict(ds.spec)
            spec["currencies"] = list(spec["currencies"])
            return 200, {"spec": spec, "growth": ds.growth, "username": state.username}
        if route == ("POST", "/_emulator/grow"):
            data = json_body()
            unknown = set(data) - set(STEP_KINDS)
            if unknown:
                raise ValueError(f"unknown keys {sorted(unknown)}; known: {', '.join(STEP_KINDS)}")
            added = ds.grow(**{k: int(v) for k, v in data.items()})
            return 200, {"added": [p["payment_reference"] for p in added], "payouts": ds.payout_count,
                         "growth": ds.growth, "events": ds.step_events()[-1]}
        if route == ("GET", "/_emulator/faults"):
            return 200, state.faults.config.to_dict()
        if route == ("POST", "/_emulator/faults"):
            cfg = FaultConfig.from_dict(json_body())
            state.faults.set(cfg)
            return 200, cfg.to_dict()
        if route == ("GET", "/_emulator/requests"):
            return 200, state.requests()
        if route == ("POST", "/_emulator/requests/reset"):
            state.reset_requests()
            return 200, {"status": "ok"}
        if route == ("GET", "/_emulator/stats"):
            return 200, state.stats()
        known = {"/_emulator/health", "/_emulator/spec", "/_emulator/grow", "/_emulator/faults",
                 "/_emulator/requests", "/_emulator/requests/reset", "/_emulator/stats"}
        if route[1] in known:
            raise ApiError(405, "METHOD_NOT_ALLOWED", f"{method} not allowed on {path}")
        raise ApiError(404, "NOT_FOUND", f"unknown admin endpoint {path}")


def _disputes_collection(rows, total, limit, cursor, shape=None) -> bytes:
    """``{"disputes": [...], "pagination": {limit, count, total, next_page}}``; ``next_page`` (a one-string
    list) only when more follow. ``shape``: the collection faults, as for the other collections."""
    items = b"null" if shape == "null_items" else b"[" + b",".join(rows) + b"]"
    if shape == "no_pagination":
        return b'{"disputes":' + items + b"}"
    pagination = {"limit": limit, "count": len(rows), "total": total}
    if cursor is not None:
        pagination["next_page"] = [cursor]
    return b'{"disputes":' + items + b',"pagination":' + json.dumps(pagination, separators=(",", ":")).encode() + b"}"


# ---------------------------------------------------------------- parameter parsing

def _paging(query):
    raw_size = query.get("size")
    if raw_size is None:
        size = DEFAULT_SIZE
    else:
        if not _SIZE_RE.match(raw_size):
            raise ApiError(400, "BAD_REQUEST", f"size must be an integer between 1 and {MAX_SIZE}, got {raw_size!r}.")
        size = int(raw_size)
        if not 1 <= size <= MAX_SIZE:
            raise ApiError(400, "BAD_REQUEST", f"size must be an integer between 1 and {MAX_SIZE}, got {size}.")
    raw_offset = query.get("offset")
    if raw_offset is None:
        offset = 0
    else:
        if not _OFFSET_RE.match(raw_offset):
            raise ApiError(400, "BAD_REQUEST", f"offset must be a non-negative integer, got {raw_offset!r}.")
        offset = int(raw_offset)
        if offset < 0:
            raise ApiError(400, "BAD_REQUEST", f"offset must be a non-negative integer, got {offset}.")
    return size, offset


def _date(query, name, required):
    raw = query.get(name)
    if raw is None:
        if required:
            raise ApiError(400, "BAD_REQUEST", f"Required parameter {name} is missing.")
        return None
    try:
        return parse_datetime(raw)
    except (ValueError, OverflowError):
        raise ApiError(400, "BAD_REQUEST",
                       f"{name} must be an ISO 8601 date-time like 2020-01-23T00:00:00Z, got {raw!r}.") from None


def _currency(query):
    raw = query.get("currency_code")
    if raw is None or raw == "":
        return None
    if not _CURRENCY_RE.match(raw):
        raise ApiError(400, "BAD_REQUEST", f"currency_code must be an ISO 4217 code, got {raw!r}.")
    return raw.upper()


# ---------------------------------------------------------------- server

class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, state: EmulatorState, tls: bool = False):
        """``tls``: serve https with a fresh self-signed certificate (``certificate.cert_file``); raises
        TlsUnavailable when it cannot be made."""
        self.state = state
        self.certificate = SelfSignedCertificate(address[0]) if tls else None
        try:
            super().__init__(address, KlarnaHandler)
            if self.certificate is not None:
                self.socket = self.certificate.server_context().wrap_socket(
                    self.socket, server_side=True, do_handshake_on_connect=False)
        except BaseException:
            self._remove_certificate()
            raise

    @property
    def scheme(self) -> str:
        return "https" if self.certificate is not None else "http"

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    def server_close(self):
        super().server_close()
        self._remove_certificate()

    def _remove_certificate(self):
        if self.certificate is not None:
            self.certificate.close()

    def handle_error(self, request, client_address):
        if self.state.verbose:
            super().handle_error(request, client_address)


def start_server(dataset: Dataset, username="emulator", password="emulator-secret", faults=None,
                 host="127.0.0.1", port=0, verbose=False, tls=False):
    """Start a server in a background thread of THIS process (handy for debugging).

    Returns ``(server, thread)``; stop with ``server.state.shutdown_event.set();
    server.shutdown(); server.server_close()``.
    """
    state = EmulatorState(dataset, username, password, faults, verbose)
    server = EmulatorHTTPServer((host, port), state, tls=tls)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="klarna-emulator", daemon=True)
    thread.start()
    return server, thread
