"""Custom components of manifest.yaml: what the CDK's stock components cannot do, each saying why.

This one file is what Airbyte's manifest-only runtime and the Connector Builder load beside the manifest (as
`source_declarative_manifest.components`), and what the `source-klarna` package runs: it imports only the standard
library and the CDK (and what it brings: requests, orjson), uses their public APIs only, and has no `from __future__
import annotations` (the runtime exec()s its text).

Answers and pages: `parsed_body`, `KlarnaItemsExtractor`, `KlarnaOffsetPagination`. Errors: `KlarnaErrorHandler`.
Requests: `PacedBasicHttpAuthenticator` (Basic auth paced by `RateLimitPacer`, the token masked, config mistakes and a
failing first request in one sentence). Transactions: `TransactionKeyAndPayout`, `UnreadPayoutsPartitionRouter`.
Payouts: `EachKeyOncePerSync`. Orders, captures and refunds: `OrderItemsRetriever` over the sync's `OrderFetcher`.
States: `UsableState`, `NestedParentStateMigration`. Personal data: `RemoveFieldsUnlessConfigured`. What the streams
of one sync share is kept per sync (`PerSync`)."""

import datetime as dt
import hashlib
import itertools
import json
import logging
import queue
import socket
import ssl
import sys
import tempfile
import threading
import time
import weakref
import zlib
from collections import OrderedDict
from dataclasses import InitVar, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, Generic, Iterable, List, Mapping, MutableMapping, Optional, Sequence, Set, Tuple, TypeVar, Union
from urllib.parse import parse_qs, quote, urljoin, urlparse, urlsplit

import orjson
import requests
import requests.adapters

from airbyte_cdk.models import FailureType
from airbyte_cdk.sources.declarative.auth.token import BasicHttpAuthenticator
from airbyte_cdk.sources.declarative.extractors.record_extractor import RecordExtractor
from airbyte_cdk.sources.declarative.extractors.record_filter import RecordFilter
from airbyte_cdk.sources.declarative.interpolation.interpolated_string import InterpolatedString
from airbyte_cdk.sources.declarative.migrations.state_migration import StateMigration
from airbyte_cdk.sources.declarative.partition_routers.partition_router import PartitionRouter
from airbyte_cdk.sources.declarative.requesters.error_handlers import DefaultErrorHandler
from airbyte_cdk.sources.declarative.requesters.paginators.strategies.pagination_strategy import PaginationStrategy
from airbyte_cdk.sources.declarative.retrievers.retriever import Retriever
from airbyte_cdk.sources.declarative.transformations import RecordTransformation
from airbyte_cdk.sources.declarative.validators.validation_strategy import ValidationStrategy
from airbyte_cdk.sources.streams.core import StreamData
from airbyte_cdk.sources.streams.http.error_handlers.response_models import ErrorResolution, ResponseAction
from airbyte_cdk.sources.types import Config, StreamSlice, StreamState
from airbyte_cdk.utils.airbyte_secrets_utils import add_to_secrets
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

# How long a thread may hold the GIL before CPython makes it hand over (default 5 ms). The CDK's workers are CPU-bound
# between requests (decoding pages, building records): at 5 ms eight workers on two cores spent more time handing the
# GIL around than working (a 100k-row read took twice the CPU at concurrency 8 as at 1). At 50 ms the handovers left
# are those of threads waiting on the network, so I/O concurrency is untouched (bench/). Set on import: every runtime.
sys.setswitchinterval(0.05)

PerSyncObject = TypeVar("PerSyncObject")


class PerSync(Generic[PerSyncObject]):
    """One object per sync, for what every stream of a sync shares (the rate-limit pacer, what failed, the order
    store), made by `factory` (or the `make` of the first caller) on first use.

    Components hold no reference to their source, but every component of one sync is built with the source's one
    config object, so its identity names the sync. An entry holds its config, so the id() it is keyed by cannot be
    reused while the entry lives. A process runs one sync (tests run several, one after another): the `capacity` most
    recent syncs are kept, an older one's object is closed."""

    def __init__(self, factory: Optional[Callable[[], PerSyncObject]] = None, capacity: int = 4) -> None:
        self._factory = factory
        self._capacity = capacity
        self._entries: "OrderedDict[int, Tuple[Any, PerSyncObject]]" = OrderedDict()
        self._lock = threading.Lock()

    def of(self, config: Any, make: Optional[Callable[[], PerSyncObject]] = None) -> PerSyncObject:
        with self._lock:
            entry = self._entries.get(id(config))
            if entry is None or entry[0] is not config:
                entry = self._entries[id(config)] = (config, (make or self._factory)())  # type: ignore[misc]
                while len(self._entries) > self._capacity:
                    _, (_, dropped) = self._entries.popitem(last=False)
                    getattr(dropped, "close", lambda: None)()
            return entry[1]


_UNPARSABLE = object()
_BODIES: "weakref.WeakKeyDictionary[requests.Response, Any]" = weakref.WeakKeyDictionary()
_BODIES_LOCK = threading.Lock()


def parsed_body(response: requests.Response) -> Any:
    """The response's JSON, parsed once with orjson (`_UNPARSABLE` for a body that is not JSON).

    The error handler checks a page's shape before the paginator and the extractor read it; each used to parse the
    body again (the CDK's HttpResponseFilter with the standard library's json, ~15 % of a transactions sync's CPU
    time). Kept in a weak map, so a body lives as long as its response."""
    with _BODIES_LOCK:
        body = _BODIES.get(response)
    if body is None:
        try:
            body = orjson.loads(response.content)
        except (orjson.JSONDecodeError, TypeError):
            body = _UNPARSABLE
        with _BODIES_LOCK:
            _BODIES[response] = body
    return body


EXPECTED_ANSWERS = {"page": "a page of {items}", "list": "a list of payout summaries", "order": "an order"}


def _requested_page_size(response: requests.Response) -> Optional[int]:
    size = parse_qs(urlsplit(str(getattr(response.request, "url", "") or response.url or "")).query).get("size", [""])[0]
    return int(size) if size.isdigit() else None


def answer_problem(body: Any, expect: str, items_field: Optional[str] = None, page_size: Optional[int] = None) -> Optional[str]:
    """Why a 2xx answer is not `expect` ("page", "list" or "order"), or None when it is.

    Klarna's OpenAPI makes only `pagination.count` required, so two shapes are read where their meaning is
    unambiguous: a page without a `pagination` block whose list is shorter than the page asked for (`page_size`) is
    the last page, and a null list with `pagination.count` 0 is an empty page. A full page without `pagination` (more
    may follow) and a null list with a count are problems."""
    if body is _UNPARSABLE:
        return "not JSON: cut short, or not Klarna's"
    if expect == "list":
        return None if isinstance(body, list) else "not a JSON list"
    if not isinstance(body, dict):
        return "not a JSON object"
    if expect == "order":
        return None if body.get("order_id") else "no order_id"
    items, pagination = body.get(items_field), body.get("pagination")
    if pagination is None and isinstance(items, list):
        if page_size is not None and len(items) < page_size:
            return None
        return f"a full page of {len(items)} {items_field} without a pagination block, so whether more follow is unknown"
    if not isinstance(pagination, dict) or not isinstance(pagination.get("count"), int):
        return "no pagination block with a count"
    if items is None and pagination["count"] == 0 and pagination.get("total") in (None, 0):
        return None
    if not isinstance(items, list):
        return f"no {items_field} list"
    return None


@dataclass
class KlarnaItemsExtractor(RecordExtractor):
    """The rows of a Klarna collection page, `{"<items_field>": [...], "pagination": {...}}`.

    The CDK's DpathExtractor finds a top-level field with `dpath.get`, which folds over every node of the body (every
    field of every row) to look for glob matches: py-spy put it at 11 % of a transactions sync's CPU time. A dict
    lookup gives the same list. The page's shape is vouched for before this runs (KlarnaErrorHandler,
    `answer_problem`). It can go when DpathExtractor looks a plain top-level key up directly."""

    config: Config
    parameters: InitVar[Mapping[str, Any]]
    items_field: Optional[str] = None

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        self.items_field = self.items_field or parameters["items_field"]

    def extract_records(self, response: requests.Response) -> Iterable[MutableMapping[Any, Any]]:
        body = parsed_body(response)
        items = body.get(self.items_field) if isinstance(body, dict) else None
        if isinstance(items, list):
            yield from items


def _rows_on_page(body: Any, default: int) -> int:
    """The length of the page's list of rows (its one list-valued field besides `pagination`)."""
    if isinstance(body, dict):
        lists = [value for name, value in body.items() if name != "pagination" and isinstance(value, list)]
        if len(lists) == 1:
            return len(lists[0])
    return default


@dataclass
class KlarnaOffsetPagination(PaginationStrategy):
    """Offset pages that stop on Klarna's own numbers.

    The next offset is the offset this connector asked for plus the page's `count`, never Klarna's echo of it:
    `pagination.offset` is optional in Klarna's schema, and an answer without it would otherwise ask for the same page
    forever. The last page is the one where offset + count reaches `total`, or an empty one; without a `total` (also
    optional), a short page."""

    config: Config
    parameters: InitVar[Mapping[str, Any]]
    page_size: int = 500

    @property
    def initial_token(self) -> Optional[Any]:
        return None

    def next_page_token(self, response: requests.Response, last_page_size: int, last_record: Optional[Any],
                        last_page_token_value: Optional[Any] = None, page_size_override: Optional[int] = None,
                        stream_slice: Optional[StreamSlice] = None) -> Optional[Any]:
        body = parsed_body(response)
        pagination = body.get("pagination") if isinstance(body, dict) else None
        pagination = pagination if isinstance(pagination, dict) else {}
        count = pagination.get("count")
        # Without Klarna's count, the rows on the page (`last_page_size` counts what the record filter let through).
        count = count if isinstance(count, int) and not isinstance(count, bool) else _rows_on_page(body, last_page_size)
        if count <= 0:
            return None
        next_offset = int(last_page_token_value or 0) + count
        total = pagination.get("total")
        if isinstance(total, int) and not isinstance(total, bool):
            return next_offset if next_offset < total else None
        return next_offset if count >= (page_size_override or self.page_size) else None

    def get_page_size(self) -> Optional[int]:
        return self.page_size


def _paging_refused(response: requests.Response) -> Optional[str]:
    """Klarna's reason when a 400 is about the page size or offset, which only the connector chooses."""
    if response.status_code != 400:
        return None
    body = parsed_body(response)
    if not isinstance(body, dict):
        return None
    reasons = "; ".join(str(m) for m in body.get("error_messages") or [])
    lowered = reasons.lower()
    return reasons if ("size" in lowered or "offset" in lowered) else None


def _exception_chain(exception: BaseException) -> List[BaseException]:
    """The exception and what caused it, through requests' and urllib3's wrappers."""
    chain: List[BaseException] = []
    current: Optional[BaseException] = exception
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        wrapped = getattr(current, "reason", None)
        if not isinstance(wrapped, BaseException):
            wrapped = current.args[0] if current.args and isinstance(current.args[0], BaseException) else None
        current = current.__cause__ or current.__context__ or wrapped
    return chain


# getaddrinfo's answers for a name that does not exist (EAI_AGAIN, a resolver that did not answer, is left to retries).
_UNKNOWN_NAME_ERRNOS = tuple(getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, name))


def deterministic_transport_failure(exception: BaseException, url: str, config: Mapping[str, Any]) -> Optional[str]:
    """The sentence for a failure to reach Klarna that no retry changes (a host that does not resolve, a TLS
    certificate this machine refuses), or None for one a retry may cure."""
    host = urlsplit(url).hostname or url
    override = config.get("base_url_override") if isinstance(config, Mapping) else None
    for cause in _exception_chain(exception):
        if isinstance(cause, socket.gaierror) and cause.errno in _UNKNOWN_NAME_ERRNOS:
            where = f"check base_url_override ({override})" if override else (
                "check this machine's DNS and network path to Klarna (platform and region pick the host)")
            return f"The host {host} of {url} does not resolve ({cause.strerror}): {where}."
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or str(cause)
            return (f"{host} presented a TLS certificate this machine does not trust ({reason}) for {url}. If a proxy between "
                    f"this machine and {host} inspects TLS, add its CA certificate to the trust store (REQUESTS_CA_BUNDLE); "
                    "otherwise check base_url_override.")
    return None


def foreign_page_message(response: requests.Response, url: str, what: str, times: str) -> Optional[str]:
    """The sentence for a 2xx that is not JSON and not labelled JSON (an HTML page from a proxy, a captive portal or a
    firewall), or None."""
    content_type = str(response.headers.get("Content-Type") or "").split(";", 1)[0].strip()
    if parsed_body(response) is not _UNPARSABLE or "json" in content_type.lower():
        return None
    page = "an HTML page" if "html" in content_type.lower() else f"a {content_type or 'typeless'} body"
    return (f"{url} answered {page} (Content-Type {content_type or 'none'}), not {what}, {times}: something between this "
            "machine and Klarna answers instead of Klarna (a proxy, a captive portal, a firewall's login page), or "
            f"base_url_override points elsewhere. Check base_url_override and the network path to {urlsplit(url).hostname}.")


@dataclass
class KlarnaErrorHandler(DefaultErrorHandler):
    """The manifest's DefaultErrorHandler (its filters, retries and backoff), plus what a filter can only judge slowly
    (a Jinja predicate parsing every page again) or not at all:

    - A 2xx that is not what the endpoint answers (`expect`: a page of `parameters.items_field`, the summaries' list,
      or an order; see `answer_problem`) is retried, and fails naming the URL on its third time in a row for that URL:
      stopping there would be a silent partial sync, and waiting through six backoffs for an answer that will not
      change (an HTML page from a proxy or captive portal) only delays the error. Not JSON at all is a config error
      (something other than Klarna answers); JSON of the wrong shape a system error to report.
    - A 400 about the page size or offset is the connector's fault: a system error asking to report it, instead of the
      config error "check start_date" other 400s get.
    - A host that does not resolve and a TLS certificate this machine refuses fail at once, as config errors naming
      the host and the fix, instead of being retried like a reset connection; a reset, a cut body or a timeout keeps
      the retries, worded with the URL (the CDK's names only the exception)."""

    expect: str = "page"
    items_field: Optional[str] = None

    FOREIGN_ANSWERS_BEFORE_FAILING = 3

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        super().__post_init__(parameters or {})
        self._items_field = self.items_field or (parameters or {}).get("items_field")
        self._foreign: Dict[str, int] = {}  # URL -> non-Klarna answers in a row
        self._lock = threading.Lock()

    def interpret_response(self, response_or_exception: Optional[Union[requests.Response, Exception]]) -> ErrorResolution:
        if isinstance(response_or_exception, requests.RequestException):
            return self._transport_failure(response_or_exception)
        if isinstance(response_or_exception, requests.Response):
            response = response_or_exception
            url = str(response.url or "").split("?", 1)[0]
            if 200 <= response.status_code < 300:
                problem = answer_problem(parsed_body(response), self.expect, self._items_field, _requested_page_size(response))
                with self._lock:  # counted per URL: the CDK retries a request with the same URL
                    times = self._foreign.pop(str(response.url), 0) + 1
                    if problem:
                        self._foreign[str(response.url)] = times
                if problem:
                    return self._foreign_answer(response, url, problem, times)
            reasons = _paging_refused(response)
            if reasons:
                return ErrorResolution(ResponseAction.FAIL, FailureType.system_error,
                    f"Klarna refused the page size or offset the connector asked {url} for (HTTP 400): {reasons} "
                    f"(correlation_id {parsed_body(response).get('correlation_id')}). No setting fixes this: report it "
                    "to the connector's maintainers with this correlation_id.")
        return super().interpret_response(response_or_exception)

    def _foreign_answer(self, response: requests.Response, url: str, problem: str, times: int) -> ErrorResolution:
        what = EXPECTED_ANSWERS[self.expect].format(items=self._items_field)
        page = foreign_page_message(response, url, what, f"{times} times in a row")
        message = page or (f"Klarna's answer to {url} was not {what} ({problem}), {times} times in a row. If base_url_override "
                           "is set, check that it points at Klarna's (or Kustom's) API; otherwise report it to the connector's "
                           "maintainers with this URL.")
        action = ResponseAction.RETRY if times < self.FOREIGN_ANSWERS_BEFORE_FAILING else ResponseAction.FAIL
        return ErrorResolution(action, FailureType.config_error if page else FailureType.system_error, message)

    def _transport_failure(self, exception: requests.RequestException) -> ErrorResolution:
        # A body cut short fails before requests attaches the request: then the endpoint this handler serves is named.
        full_url = str(getattr(getattr(exception, "request", None), "url", "") or "")
        served = {"page": f"/settlements/v1/{self._items_field}", "list": "/settlements/v1/payouts/summary"}
        url = full_url.split("?", 1)[0] or served.get(self.expect, "/ordermanagement/v1/orders/{order_id}")
        deterministic = deterministic_transport_failure(exception, url, self.config) if full_url else None
        if deterministic:
            return ErrorResolution(ResponseAction.FAIL, FailureType.config_error, deterministic)
        resolution = super().interpret_response(exception)
        return ErrorResolution(resolution.response_action, resolution.failure_type or FailureType.transient_error,
                               f"Klarna did not answer {url} ({type(exception).__name__}: {exception}) through every retry. "
                               "Check the network path to Klarna (proxy, firewall) and retry the sync later.")


RATE_LIMIT_HEADER, REMAINING_HEADER, RESET_HEADER = "X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset"


def _header_number(response: requests.Response, name: str) -> Optional[float]:
    """The leading number of a rate-limit header (`200, 200;w=1` -> 200), or None."""
    try:
        return float(str(response.headers[name]).split(",", 1)[0].split(";", 1)[0].strip())
    except (KeyError, ValueError):
        return None


def _window_seconds(response: requests.Response) -> Optional[float]:
    """The `w=` parameter of X-Ratelimit-Limit (the window Klarna counts in), or None."""
    for part in str(response.headers.get(RATE_LIMIT_HEADER) or "").replace(",", ";").split(";"):
        name, _, value = part.strip().partition("=")
        if name == "w":
            try:
                return float(value) if float(value) > 0 else None
            except ValueError:
                return None
    return None


class RateLimitPacer:
    """Spends a Klarna merchant's rate limit politely: at most `cap` requests/s, and no more than the merchant's other
    traffic leaves, less a reserve, however Klarna counts.

    Klarna counts its limit per merchant (its checkout, captures and refunds share it); once over it, every request of
    the merchant gets 429 until the limit frees up, so 429s are not how to find the limit. How Klarna counts is not
    documented (fixed windows, a sliding window and a token bucket all fit its headers), so nothing here depends on
    it. Every answer says what is left: `X-Ratelimit-Remaining` (R) of `X-Ratelimit-Limit: 200, 200;w=1` (L per w
    seconds). Whatever the accounting, the merchant is safe while R stays above the reserve T = L x reserve, left for
    its own bursts. So the rate is a feedback loop on the lowest R of each period of w seconds (m): up by half of what
    was left unused above T (m - T, per w), down by half of what was missing. At m = T the connector takes all but the
    reserve: its cap with no other traffic (L x (1 - reserve), or max_requests_per_second if lower), else what the
    others leave. An answer more than one request below T cuts the rate by a third at once (a step or burst of the
    others' traffic does not wait for the period's end); one at T/2 or less, or a 429, holds every request until the
    limit resets (Retry-After, else X-Ratelimit-Reset). It starts at a twentieth of L (never bursting into an unknown
    share), keeps a floor of 1 % of L so a sync moves when the others leave nothing, and runs at its cap when answers
    carry no headers (a proxy that drops them). Requests are spaced 1/rate apart, never in bursts. Thread safe: one
    pacer serves every stream of a sync."""

    SLOW_START_SHARE, FLOOR_SHARE, GAIN, CUT, NAP = 0.05, 0.01, 0.5, 2 / 3, 0.25

    def __init__(self, assumed_limit: float, reserve: float, cap: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self._limit = float(assumed_limit)
        self._reserve = min(max(float(reserve), 0.0), 0.9)
        self._explicit_cap = float(cap) if cap else None
        self._window = 1.0
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._next_send = 0.0
        self._last_sent = -1.0
        self._hold_until = 0.0
        self._period_start: Optional[float] = None
        self._lowest: Optional[float] = None  # the lowest Remaining of the current period
        self._cut_in_period = False
        self._seen_headers = False
        self._generation = 0  # turns handed out before the rate changed are of an older generation
        self._rate = min(self.cap, self._limit * self.SLOW_START_SHARE / self._window)  # requests per second

    @property
    def cap(self) -> float:
        """The limit less the reserve, or the config's max_requests_per_second if lower."""
        reserved = self._limit * (1 - self._reserve) / self._window
        return min(self._explicit_cap, reserved) if self._explicit_cap else reserved

    @property
    def rate(self) -> float:
        return self._rate

    def wait_turn(self) -> None:
        """Blocks until this request may go out. A turn handed out before the rate changed (a hold, a cut, a rise) is
        asked for again: the threads already waiting for theirs would otherwise go out at the old pace. Waits in
        naps of at most NAP seconds to notice (at a twentieth of 200/s, 12 threads queue 1.2 s of turns)."""
        while True:
            with self._lock:
                now = self._clock()
                slot = max(now, self._next_send, self._hold_until)
                self._next_send = slot + 1.0 / self._rate
                generation = self._generation
            while True:
                now = self._clock()
                if slot > now:
                    self._sleep(min(slot - now, self.NAP))
                with self._lock:
                    if generation != self._generation:
                        break
                    if slot <= now:
                        self._last_sent = max(self._last_sent, slot)
                        return

    def observe(self, response: requests.Response) -> None:
        """Learns from one answer (any status): its rate-limit headers, and a 429's wait."""
        headers = (RATE_LIMIT_HEADER, REMAINING_HEADER, RESET_HEADER, "Retry-After")
        limit, remaining, reset, retry_after = (_header_number(response, name) for name in headers)
        window = _window_seconds(response)
        with self._lock:
            now = self._clock()
            if (limit and limit > 0 and limit != self._limit) or (window and window != self._window):
                self._limit, self._window = (limit if limit and limit > 0 else self._limit), (window or self._window)
                if not self._seen_headers:  # still starting: slowly, in the limit Klarna says
                    self._set_rate(now, self._limit * self.SLOW_START_SHARE / self._window)
            until_reset = max(reset if reset is not None else self._window, 0.0)
            if response.status_code == 429:
                self._hold(now, now + (max(retry_after, 0.0) if retry_after is not None else until_reset))
            if remaining is None:
                self._set_rate(now, min(self._rate, self.cap) if self._seen_headers else self.cap)
                return
            self._seen_headers = True
            target = self._limit * self._reserve
            if remaining <= target / 2:
                self._hold(now, now + until_reset)
            # One request of slack: a window boundary between two turns spaced at the cap lets one more in.
            if remaining < target - 1 and not self._cut_in_period:
                self._cut_in_period = True
                self._set_rate(now, self._rate * self.CUT)
            self._lowest = remaining if self._lowest is None else min(self._lowest, remaining)
            if self._period_start is None:
                self._period_start = now
            elif now - self._period_start >= self._window:
                self._set_rate(now, self._rate + self.GAIN * (self._lowest - target) / self._window)
                self._period_start, self._lowest, self._cut_in_period = now, None, False

    def _set_rate(self, now: float, rate: float) -> None:
        rate = min(self.cap, max(rate, max(1.0, self._limit * self.FLOOR_SHARE) / self._window))
        if rate != self._rate:
            self._rate = rate
            self._requeue(now)

    def _hold(self, now: float, until: float) -> None:
        """Nothing goes out before `until`."""
        if until > self._hold_until:
            self._hold_until = until
            self._requeue(now)

    def _requeue(self, now: float) -> None:
        """The turns handed out so far are handed out again, spaced at the current rate from the last one taken."""
        self._generation += 1
        self._next_send = max(now, self._last_sent + 1.0 / self._rate)


RATE_LIMIT_PACERS: PerSync[RateLimitPacer] = PerSync()

REGIONS, PLATFORMS, LOCAL_HOSTS = ("eu", "na", "oc"), ("klarna", "kustom"), ("localhost", "127.0.0.1")
# Kustom's API keys say which environment they are for: kco_live_api_... or kco_test_api_... .
KUSTOM_KEY_PREFIX, KUSTOM_LIVE_KEY, KUSTOM_TEST_KEY = "kco_", "kco_live_", "kco_test_"


def _parsed(value: Any, layouts: Sequence[str]) -> Optional[datetime]:
    """`value` as a UTC datetime in the first of `layouts` it fits, or None."""
    for layout in layouts:
        try:
            return datetime.strptime(str(value), layout).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    return None


def config_problem(config: Mapping[str, Any], now: Optional[dt.datetime] = None) -> Optional[str]:
    """The first problem with `config`, as a sentence, or None."""
    now = now or dt.datetime.now(dt.timezone.utc)
    for name in ("username", "password"):
        if not isinstance(config.get(name), str) or not config.get(name):
            return f"The {name} is missing: copy the API {name} from the Klarna Merchant Portal (Settings > Klarna API keys)."
    region = config.get("region") or "eu"
    if region not in REGIONS:
        return f"The region {region!r} is unknown: use one of eu, na or oc (the region of your Klarna merchant account)."
    for name in ("playground", "include_personal_data"):
        if name in config and not isinstance(config[name], bool):
            return f"{name} must be true or false."
    problem = _platform_problem(config, region)
    if problem:
        return problem
    problem = start_date_problem(config.get("start_date"), now)
    if problem:
        return problem
    limits = (("lookback_window_days", 0, 90), ("concurrency", 1, 30), ("max_requests_per_second", 1, 200),
              ("rate_limit_reserve_percent", 0, 90))
    for name, low, high in limits:
        value = config.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            return f"{name} must be a whole number from {low} to {high}; it is {value!r}."
    override = config.get("base_url_override")
    if override:
        parsed_url = urlparse(str(override))
        if parsed_url.scheme == "http" and parsed_url.hostname not in LOCAL_HOSTS:
            return (f"base_url_override {override!r} uses plain http, which would send the Klarna password unencrypted: "
                    "use an https:// URL (plain http is only accepted for localhost and 127.0.0.1).")
        if parsed_url.scheme not in ("http", "https") or not parsed_url.hostname:
            return f"base_url_override {override!r} is not a URL: write it as https://host[:port], or leave it empty to use Klarna's host for the region."
    return None


def start_date_problem(start_date: Any, now: Optional[dt.datetime] = None) -> Optional[str]:
    if not start_date:
        return None
    parsed = _parsed(start_date, ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"))
    if parsed is None:
        return f"The start_date {start_date!r} is not a UTC date-time: write it as YYYY-MM-DDTHH:MM:SSZ, for example 2024-01-01T00:00:00Z."
    if parsed > (now or dt.datetime.now(dt.timezone.utc)):
        return f"The start_date {start_date} lies in the future: set it to today or earlier, or leave it empty to sync the whole history."
    return None


@dataclass
class StartDateCheck(ValidationStrategy):
    """The start_date's problem in one sentence (`start_date_problem`), as a spec validation: the cursors parse the
    start_date while the streams are built, before the authenticator (which checks the rest of the config) is, and
    the spec's `pattern` could only answer with the regular expression."""

    config: Optional[Config] = None
    parameters: InitVar[Mapping[str, Any]] = None

    def validate(self, value: Any) -> None:
        problem = start_date_problem(value)
        if problem:
            raise AirbyteTracedException(message=problem, internal_message=problem, failure_type=FailureType.config_error)


def _platform_problem(config: Mapping[str, Any], region: str) -> Optional[str]:
    """Platform mistakes: an unknown platform, a Klarna region with Kustom, and a Kustom API key used with the wrong
    platform or environment (only the key's public prefix is ever quoted)."""
    platform = config.get("platform") or "klarna"
    if platform not in PLATFORMS:
        return f"The platform {platform!r} is unknown: use klarna, or kustom if your API credentials come from the Kustom Portal."
    password = str(config.get("password") or "")
    if platform == "klarna":
        if password.startswith(KUSTOM_KEY_PREFIX):
            return "The password is a Kustom API key (it starts with kco_): set platform to kustom."
        return None
    if region != "eu":
        return (f"region {region!r} applies to Klarna only: Kustom serves every merchant from api.kustom.co, "
                "so remove region (or set it to eu) when platform is kustom.")
    playground = bool(config.get("playground"))
    if password.startswith(KUSTOM_TEST_KEY) and not playground:
        return "The password is a Kustom test API key (kco_test_...): switch playground on, or use a live key (kco_live_...) for production."
    if password.startswith(KUSTOM_LIVE_KEY) and playground:
        return "The password is a Kustom live API key (kco_live_...): switch playground off, or use a test key (kco_test_...) for the playground."
    return None


@dataclass
class PacedBasicHttpAuthenticator(BasicHttpAuthenticator):
    """The manifest's HTTP Basic auth, with every request paced to the merchant's rate limit (`RateLimitPacer`), the
    Basic token registered as a secret, and what a user can fix reported in one sentence before any stream reads.

    Why the authenticator: it is the one component the CDK's HTTP client consults before every attempt (retries
    included) and tells about every answer (`update_from_response`, the CDK's ResponseAwareAuthenticator protocol),
    and the one every stream builds with the sync's config before its first request. The manifest's `api_budget` can
    only cap a rate; it cannot read Klarna's X-Ratelimit-Remaining. The CDK masks the password in its output, not
    base64(username:password), which a debug log of the request headers shows: registering the token masks it on every
    runtime.

    What a user can fix fails the sync once, before any stream: a config mistake (`config_problem`), and what one
    request shows will fail every request (`probe`: rejected credentials, a host that is not Klarna's API, does not
    resolve or whose certificate is refused, an HTML page instead of JSON). Met by every partition instead, each would
    report it again (14 errors for a wrong password on the stock runtime). The manifest's spec validations cannot do
    this: the CDK hands them one value at a time."""

    assumed_limit: Union[InterpolatedString, str, int] = 200
    reserve_percent: Union[InterpolatedString, str, int] = 20
    max_requests_per_second: Union[InterpolatedString, str, int, None] = None
    probe_url_base: Optional[str] = None
    rejected_message: str = ""
    not_found_message: str = ""

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        super().__post_init__(parameters)
        self._parameters = parameters or {}
        limit, reserve, cap = (self._number(value) for value in (self.assumed_limit, self.reserve_percent, self.max_requests_per_second))
        self._pacer = RATE_LIMIT_PACERS.of(self.config, lambda: RateLimitPacer(
            assumed_limit=limit or 200, reserve=(20 if reserve is None else reserve) / 100, cap=cap))
        # The username and password do not change within a sync: the CDK's BasicHttpAuthenticator
        # renders both through Jinja twice per request (about 5 % of an order's CPU); once is enough.
        self._token, self._token_registered = super().token, False
        problem = PROBES.of(self.config, self._first_problem) if self.config else None
        if problem:
            raise AirbyteTracedException(message=problem, internal_message=problem, failure_type=FailureType.config_error)

    def _number(self, value: Any) -> Optional[float]:
        """A setting as a number; None when it evaluates to nothing (no explicit cap)."""
        text = "" if value is None else str(InterpolatedString.create(str(value), parameters=self._parameters).eval(self.config))
        return float(text) if text.strip() not in ("", "None") else None

    def _first_problem(self) -> Optional[str]:
        return config_problem(self.config) or (self.probe() if self.probe_url_base else None)

    def probe(self) -> Optional[str]:
        """One request to Klarna's payouts list; the sentence for an answer every request would get, or None (an
        answer that is fine, or one a retry may cure: left to the streams' error handler)."""
        url = str(InterpolatedString.create(self.probe_url_base, parameters=self._parameters).eval(self.config)).rstrip("/") + "/settlements/v1/payouts"
        try:
            response = requests.get(url, params={"size": 1}, auth=self, timeout=(30, 120))
        except requests.RequestException as error:
            return deterministic_transport_failure(error, url, self.config)
        self.update_from_response(response.request, response)
        message = {401: self.rejected_message, 403: self.rejected_message, 404: self.not_found_message}.get(response.status_code)
        if message:
            body = parsed_body(response)
            return " ".join(str(InterpolatedString.create(message, parameters=self._parameters).eval(
                self.config, request_url=url, response=body if isinstance(body, dict) else {})).split())
        if response.ok and parsed_body(response) is _UNPARSABLE:
            return foreign_page_message(response, url, EXPECTED_ANSWERS["page"].format(items="payouts"), "once")
        return None

    @property
    def token(self) -> str:
        return self._token

    @property
    def pacer(self) -> RateLimitPacer:
        return self._pacer

    def __call__(self, request: requests.PreparedRequest) -> Any:
        if not self._token_registered:
            # Registered on first use, after the entrypoint has set up its secret list (which it replaces with the
            # spec's secrets once it has the config).
            add_to_secrets(self._token.split(" ", 1)[-1])
            self._token_registered = True
        self._pacer.wait_turn()
        return super().__call__(request)

    def update_from_response(self, request: requests.PreparedRequest, response: requests.Response) -> None:
        self._pacer.observe(response)


PROBES: "PerSync[Optional[str]]" = PerSync()


# The fields of Klarna's Transaction schema (settlements OpenAPI), in a fixed order.
TRANSACTION_KEY_FIELDS = (
    "amount", "capture_id", "merchant_reference1", "sale_date", "type", "capture_date", "payment_reference",
    "order_id", "payout", "refund_id", "short_order_id", "merchant_reference2", "currency_code", "purchase_country",
    "vat_rate", "vat_amount", "shipping_country", "initial_payment_method_type", "initial_number_of_installments",
    "initial_payment_method_monthly_downpayments", "merchant_capture_reference", "merchant_refund_reference",
    "detailed_type", "tax_in_currency_of_registration_country", "currency_code_of_registration_country",
    "klarna_comment", "reversal_reference",
)


def transaction_fingerprint(record: Mapping[str, Any]) -> str:
    """A short hash of the row's Klarna fields (absent and null hash alike)."""
    values = list(map(record.get, TRANSACTION_KEY_FIELDS))
    return hashlib.sha1(orjson.dumps(values)).hexdigest()[:20]


class OccurrenceCounter:
    """Counts how often each fingerprint was seen in each payout partition being read.

    Counts belong to one partition object (the slice the CDK passes with every page of it), not to the
    payment_reference: should the CDK read a payout twice in one sync, the second read numbers its identical rows from
    0 again and so repeats the first read's keys. One worker reads a partition's pages one after another, and at most
    `concurrency` (<= 30) partitions are read at once, so keeping the counters of the `capacity` most recent
    partitions is exact while bounding memory on accounts with millions of transactions. An entry holds its slice, so
    the id() it is keyed by cannot be reused while it lives."""

    def __init__(self, capacity: int = 512) -> None:
        self._capacity = capacity
        self._counts: "OrderedDict[int, Tuple[Any, Dict[str, int]]]" = OrderedDict()
        self._lock = threading.Lock()

    def next_occurrence(self, partition: Any, fingerprint: str) -> int:
        with self._lock:
            entry = self._counts.get(id(partition))
            if entry is None:
                entry = self._counts[id(partition)] = (partition, {})
                if len(self._counts) > self._capacity:
                    self._counts.popitem(last=False)
            occurrence = entry[1].get(fingerprint, 0)
            entry[1][fingerprint] = occurrence + 1
            return occurrence


@dataclass
class TransactionKeyAndPayout(RecordTransformation):
    """Adds `transaction_key` (`<payment_reference>:<fingerprint>:<occurrence>`, `pending:...` for a transaction not
    yet in a payout), and `payment_reference`/`payout_date` from the payout partition.

    Klarna's transactions have no id, and a payout can hold byte-identical rows (two equal fees): the key numbers them
    within their payout. One pass, without a Jinja render per record (an AddFields rendered per record cost ~40 % of
    the per-record time, measured)."""

    parameters: InitVar[Mapping[str, Any]] = None
    counter: OccurrenceCounter = field(default_factory=OccurrenceCounter)

    def transform(self, record: Dict[str, Any], config: Optional[Config] = None,
                  stream_state: Optional[StreamState] = None, stream_slice: Optional[StreamSlice] = None) -> None:
        partition, extra = (stream_slice.partition, stream_slice.extra_fields) if stream_slice is not None else ({}, {})
        payment_reference = partition.get("payment_reference") or record.get("payment_reference")
        if payment_reference and not record.get("payment_reference"):
            record["payment_reference"] = payment_reference
        if extra.get("payout_date") is not None:
            record["payout_date"] = extra["payout_date"]
        fingerprint = transaction_fingerprint(record)
        record["transaction_key"] = f"{payment_reference or 'pending'}:{fingerprint}:{self.counter.next_occurrence(stream_slice, fingerprint)}"


def _instant(payout_date: Any) -> Optional[datetime]:
    """A payout_date as an aware datetime (None if it is not a date-time)."""
    try:
        moment = datetime.fromisoformat(str(payout_date).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass
class WrappingPartitionRouter(PartitionRouter):
    """A router over another (`underlying_partition_router`), adding no request options to those it has (the CDK
    declares them abstract)."""

    underlying_partition_router: Any
    config: Config
    parameters: InitVar[Mapping[str, Any]]

    def get_request_params(self, **kwargs: Any) -> MutableMapping[str, Any]:
        return self.underlying_partition_router.get_request_params(**kwargs)

    def get_request_headers(self, **kwargs: Any) -> Mapping[str, Any]:
        return self.underlying_partition_router.get_request_headers(**kwargs)

    def get_request_body_data(self, **kwargs: Any) -> Union[Mapping[str, Any], str]:
        return self.underlying_partition_router.get_request_body_data(**kwargs)

    def get_request_body_json(self, **kwargs: Any) -> Mapping[str, Any]:
        return self.underlying_partition_router.get_request_body_json(**kwargs)


@dataclass
class UnreadPayoutsPartitionRouter(WrappingPartitionRouter):
    """One partition per payout whose transactions no earlier sync has read: the payouts router of `transactions`,
    minus the payouts the previous sync already read.

    An incremental sync re-reads the payouts of the lookback window to catch payouts Klarna books late, and a plain
    SubstreamPartitionRouter would read the transactions of each of them again (two thirds of an incremental sync's
    requests after a day's growth). A payout's transactions never change once it is paid out, so one read before is
    skipped. Which payouts were read is kept in the parent state the CDK already carries, next to the payouts cursor:

        "parent_state": {"payouts": {"payout_date": "...", "payouts_read": {"<payment_reference>": "<payout_date>", ...}}}

    The CDK keeps such extra keys of a sequential cursor state (its `legacy` part) and commits each snapshot of this
    router's state only once every partition generated before it is closed, so a payout enters the saved list only
    after all its transactions were emitted: skipping never loses a row. The list holds the payouts dated within
    `remember_days` of the newest one seen (in this sync or on the list it started from), those the next sync's
    lookback can bring back; one dropped too early is merely read again. A late payout is not on the list, so it is
    read. Without a saved list (first sync, reset, a state from an older version) every payout is read."""

    remember_days: Union[InterpolatedString, str, int] = 4

    READ_KEY = "payouts_read"

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        (parent_config,) = self.underlying_partition_router.parent_stream_configs
        self._parent_name = parent_config.stream.name
        self._partition_field = parent_config.partition_field.eval(self.config)
        days = InterpolatedString.create(str(self.remember_days), parameters=parameters or {}).eval(self.config)
        self._remember = timedelta(days=float(days))
        self._lock = threading.Lock()
        self._read: Dict[str, str] = {}
        self._newest: Optional[datetime] = None

    def _previously_read(self) -> Mapping[str, str]:
        parent_state = (self.underlying_partition_router.get_stream_state() or {}).get(self._parent_name)
        read = parent_state.get(self.READ_KEY) if isinstance(parent_state, Mapping) else None
        return {str(ref): str(date) for ref, date in read.items()} if isinstance(read, Mapping) else {}

    def _remember_read(self, payment_reference: str, payout_date: Any) -> None:
        moment = _instant(payout_date)
        with self._lock:
            if moment is not None and self._newest is not None and moment < self._newest - self._remember:
                return  # older than any lookback window will reach back
            self._read[payment_reference] = str(payout_date)
            if moment is not None and (self._newest is None or moment > self._newest):
                self._newest = moment
                horizon = moment - self._remember
                self._read = {ref: date for ref, date in self._read.items() if (_instant(date) or moment) >= horizon}

    def stream_slices(self) -> Iterable[StreamSlice]:
        # Read before the first parent page moves the parent cursor (and its state) on. The list goes on into this
        # sync's state: should the sync fail before all its payouts are read, its state still names those read before.
        previously_read = self._previously_read()
        for payment_reference, payout_date in previously_read.items():
            self._remember_read(payment_reference, payout_date)
        generated: Set[str] = set()
        for stream_slice in self.underlying_partition_router.stream_slices():
            payment_reference = stream_slice.partition.get(self._partition_field)
            payout_date = stream_slice.extra_fields.get("payout_date")
            if payment_reference in generated:
                continue  # the same payout twice in one sync (a list that moved between pages)
            generated.add(payment_reference)
            # Listed before the slice goes out: the CDK's state snapshot taken after this slice includes the payout,
            # and is committed only once this slice's partition is closed.
            self._remember_read(payment_reference, payout_date)
            if previously_read.get(payment_reference) != str(payout_date):
                yield stream_slice

    def get_stream_state(self) -> Optional[Mapping[str, StreamState]]:
        state = dict(self.underlying_partition_router.get_stream_state() or {})
        with self._lock:
            read = dict(self._read)
        parent_state = dict(state.get(self._parent_name) or {})
        parent_state[self.READ_KEY] = read
        state[self._parent_name] = parent_state
        return state



@dataclass
class EachKeyOncePerSync(RecordFilter):
    """Lets a record through the first time its `key` is seen in this sync, drops repeats.

    Klarna lists a window's payouts newest first and pages by offset: a payout added while the connector is between
    two pages of a window shifts the list, and the last payouts of page 1 come again at the top of page 2. Nothing is
    skipped (the shift is towards later pages), but the sync would emit those payouts twice. Payouts are few (about
    one per currency and day), so one sync's keys fit in memory; the filter belongs to one stream instance, shared by
    its concurrent windows. The payouts added meanwhile arrive with the next sync (the lookback re-reads them)."""

    key: str = ""

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        super().__post_init__(parameters)
        self._seen: Set[Any] = set()
        self._lock = threading.Lock()

    def filter_records(self, records: Iterable[Mapping[str, Any]], stream_state: StreamState,
                       stream_slice: Optional[StreamSlice] = None,
                       next_page_token: Optional[Mapping[str, Any]] = None) -> Iterable[Mapping[str, Any]]:
        for record in records:
            value = record.get(self.key)
            with self._lock:  # a record without the key passes: nothing to recognise it by, the schema check sees it
                first = value is None or value not in self._seen
                self._seen.add(value)
            if first:
                yield record


class SpillingAnswers:
    """order_id -> [status, readers so far, body]: the most recent bodies in memory, up to `memory_bytes`, older ones
    zlib-compressed (4 KB -> 1.1 KB) into a temporary file deleted on close, the entry keeping where. So memory stays
    flat however many orders wait for a reader (a stream not selected, or one that runs after the others), and a sync
    whose three streams read side by side never writes the file. Not thread-safe: OrderFetcher's lock guards it."""

    def __init__(self, memory_bytes: int = 8 << 20) -> None:
        self._memory_bytes = memory_bytes
        self._entries: Dict[str, List[Any]] = {}
        self._in_memory: "OrderedDict[str, int]" = OrderedDict()  # order_id -> body size, oldest first
        self._memory = 0
        self._file: Any = None
        self.spilled = 0  # bodies written to the file so far

    def put(self, order_id: str, status: int, body: bytes, readers: int) -> None:
        self._entries[order_id] = [status, readers, body]
        self._in_memory[order_id] = len(body)
        self._memory += len(body)
        while self._memory > self._memory_bytes and len(self._in_memory) > 1:
            oldest, size = self._in_memory.popitem(last=False)
            self._memory -= size
            if self._file is None:
                self._file = tempfile.TemporaryFile()
            packed = zlib.compress(self._entries[oldest][2], 1)
            self._file.seek(0, 2)
            self._entries[oldest][2] = (self._file.tell(), len(packed))
            self._file.write(packed)
            self.spilled += 1

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._entries

    def take(self, order_id: str, reader: int, every_reader: int) -> Optional[Tuple[int, bytes]]:
        """The answer (status, body), now also read by `reader`; dropped once `every_reader` has."""
        entry = self._entries.get(order_id)
        if entry is None:
            return None
        entry[1] |= reader
        body = entry[2]
        if isinstance(body, tuple):
            self._file.seek(body[0])
            body = zlib.decompress(self._file.read(body[1]))
        if entry[1] == every_reader:
            del self._entries[order_id]
            self._memory -= self._in_memory.pop(order_id, 0)
        return entry[0], body

    def close(self) -> None:
        self._entries.clear()
        self._in_memory.clear()
        self._memory = 0
        if self._file is not None:
            self._file.close()
            self._file = None


LOGGER = logging.getLogger("airbyte.source_klarna")


class _Pending:
    """One order's fetch, under way or done: its answer (status, body) or the exception it ended in."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: Optional[Tuple[int, bytes]] = None
        self.error: Optional[BaseException] = None


class OrderFetcher:
    """Klarna's answer for each order that `orders`, `captures` or `refunds` asks for in a sync, each order requested
    once whichever of the three asks first, kept until all three have read it.

    Why not the stock path: each stream would request every order itself (three requests per order against the
    merchant's shared rate limit), and the CDK's HttpRequester.send_request spends 2.6-3.3 ms of CPU per request
    (measured), more than the 3 ms an order may cost in all. So `concurrency` threads send the requests through a
    requests.Session of this fetcher's own (its pool as large as the threads: no "Connection pool is full"; the
    environment's proxies and CA bundle read once, not per request), authenticated and paced by the manifest's
    authenticator, each answer judged by the order requester's error handler and retried with its backoff, as the
    CDK's client would (its public `interpret_response`, `backoff_time` and `max_retries`).

    Single-flight: a reader asking for an order under way waits for that fetch; a failed fetch is forgotten (the next
    reader asks again) and fails every reader waiting on it. Answers wait for their other readers in SpillingAnswers,
    so memory stays flat when a stream is not selected or runs after the others. The threads are daemons: a sync that
    ends (or fails) does not wait for fetches nobody will read."""

    READERS = {"orders": 1, "captures": 2, "refunds": 4}
    EVERY_READER = 7

    def __init__(self, requester: Any, threads: int, timeout: Tuple[float, float] = (30, 120)) -> None:
        self._requester = requester
        self._handler = requester.error_handler
        self._timeout = timeout
        self._lock = threading.Lock()
        self._pending: Dict[str, _Pending] = {}
        self._kept = SpillingAnswers()
        base = requester.get_url_base(stream_state=None, stream_slice=None, next_page_token=None)
        path = requester.get_path(stream_state=None, stream_slice=StreamSlice(partition={"order_id": "ORDERID"}, cursor_slice={}), next_page_token=None)
        self._prefix, self._suffix = urljoin(base.rstrip("/") + "/", path.lstrip("/")).split("ORDERID", 1)
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=threads)
        session.mount("https://", adapter)
        session.mount("http://", adapter)  # ignore-https-check: plain http only to localhost (config_problem)
        settings = session.merge_environment_settings(base, {}, None, None, None)
        session.proxies, session.verify, session.cert = settings["proxies"], settings["verify"], settings["cert"]
        session.trust_env = False
        session.auth = requester.authenticator
        self._requests_session = session
        self._queue: "queue.Queue[Optional[Tuple[str, _Pending]]]" = queue.Queue()
        self._threads = threads
        for number in range(threads):
            threading.Thread(target=self._work, name=f"klarna-orders-{number}", daemon=True).start()

    def close(self) -> None:
        """Ends the threads once the fetches queued are done, and drops the answers kept."""
        for _ in range(self._threads):
            self._queue.put(None)
        with self._lock:
            self._kept.close()

    def answers(self, order_ids: Sequence[str], reader: str) -> Iterable[Tuple[str, Any]]:
        """(order_id, the order as a dict, or None for an order Klarna no longer returns), in order."""
        bit = self.READERS[reader]
        claims = [self._claim(order_id) for order_id in order_ids]  # every fetch under way before the first wait
        for order_id, claim in zip(order_ids, claims):
            if claim is not None:
                claim.done.wait()
                if claim.error is not None:
                    raise claim.error
            with self._lock:
                answer = self._kept.take(order_id, bit, self.EVERY_READER)
            if answer is None:  # read by this stream before: the same order twice in one sync
                answer = self._fetch(order_id)
            yield order_id, orjson.loads(answer[1]) if answer[0] == 200 else None

    def _claim(self, order_id: str) -> Optional[_Pending]:
        """None if the answer is kept; else the fetch under way, or a new one queued."""
        with self._lock:
            if order_id in self._kept:
                return None
            pending = self._pending.get(order_id)
            if pending is None:
                pending = self._pending[order_id] = _Pending()
                self._queue.put((order_id, pending))
            return pending

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            order_id, pending = item
            try:
                pending.answer = self._fetch(order_id)
            except BaseException as error:  # handed to every reader of this order
                pending.error = error
            with self._lock:
                if pending.answer is not None:
                    self._kept.put(order_id, pending.answer[0], pending.answer[1], 0)
                del self._pending[order_id]
            pending.done.set()

    def _fetch(self, order_id: str) -> Tuple[int, bytes]:
        """The order's answer: (200, body), or (404, b"") for an order Klarna no longer returns."""
        url = self._prefix + quote(order_id, safe="") + self._suffix
        for attempt in range(1, int(self._handler.max_retries or 0) + 2):
            outcome: Any
            try:
                outcome = self._requests_session.get(url, timeout=self._timeout)
                self._requester.authenticator.update_from_response(outcome.request, outcome)
            except requests.RequestException as error:
                outcome = error
            resolution = self._handler.interpret_response(outcome)
            action = resolution.response_action
            if action == ResponseAction.SUCCESS:
                return 200, outcome.content
            if action == ResponseAction.IGNORE:
                LOGGER.warning(resolution.error_message or f"Klarna no longer returns the order at {url}: skipped.")
                return 404, b""
            if action == ResponseAction.FAIL or attempt > int(self._handler.max_retries or 0):
                message = resolution.error_message or f"Klarna did not answer {url} properly through every retry."
                raise AirbyteTracedException(message=message, internal_message=message, failure_type=resolution.failure_type or FailureType.system_error)
            time.sleep(self._handler.backoff_time(outcome, attempt_count=attempt) or 2 ** attempt)
        raise AssertionError("unreachable")


ORDER_FETCHERS: "PerSync[OrderFetcher]" = PerSync()


class _Replay:
    """The slices one read produced, each with the router's state after it, and how the read ended."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.slices: List[Tuple[StreamSlice, Any]] = []
        self.reading = self.done = False
        self.final: Any = None
        self.error: Optional[BaseException] = None


REPLAYS: "PerSync[Dict[str, _Replay]]" = PerSync(dict)
_REPLAYS_LOCK = threading.Lock()


@dataclass
class OneReadPerSync(WrappingPartitionRouter):
    """The slices of `underlying_partition_router` (the order-id batches), read once per sync for every stream that
    starts from the same state, each slice replayed with the state the router had after it.

    orders, captures and refunds each have their own copy of the router, and the stock one reads its parent (the
    transactions, and theirs the payouts) for each: three times the transactions' requests, and the CDK's work per
    parent record three times over (a `dpath.get` per record and field, a cursor observe): 25 % of an orders sync's
    CPU (py-spy). The first stream to ask reads; the others follow its slices as they come. A stream whose saved
    state differs (one added to the catalog later) reads on its own, so what each reads and the state it saves are
    what the stock router gives it. A read that fails or stops early fails its followers too: none ends short."""

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        self._following = False  # this stream replays another's read
        self._replayed: Any = None  # the state after the slice replayed last

    def stream_slices(self) -> Iterable[StreamSlice]:
        self._replayed = self.underlying_partition_router.get_stream_state()
        # The state the read starts from is its parents' (a GroupingPartitionRouter has none before it reads).
        reader = getattr(self.underlying_partition_router, "underlying_partition_router", self.underlying_partition_router)
        key = json.dumps(reader.get_stream_state(), sort_keys=True, default=str)
        with _REPLAYS_LOCK:
            replay = REPLAYS.of(self.config).setdefault(key, _Replay())
        with replay.changed:
            self._following, replay.reading = replay.reading, True
        yield from (self._follow(replay) if self._following else self._read(replay))

    def _read(self, replay: _Replay) -> Iterable[StreamSlice]:
        try:
            for stream_slice in self.underlying_partition_router.stream_slices():
                with replay.changed:
                    replay.slices.append((stream_slice, self.underlying_partition_router.get_stream_state()))
                    replay.changed.notify_all()
                yield stream_slice
        except BaseException as error:
            replay.error = error if isinstance(error, Exception) else AirbyteTracedException(
                message="The sync stopped before the orders were all read.", failure_type=FailureType.system_error)
            raise
        finally:
            with replay.changed:
                replay.final, replay.done = self.underlying_partition_router.get_stream_state(), True
                replay.changed.notify_all()

    def _follow(self, replay: _Replay) -> Iterable[StreamSlice]:
        for index in itertools.count():
            with replay.changed:
                replay.changed.wait_for(lambda: index < len(replay.slices) or replay.done)
                if index >= len(replay.slices):
                    if replay.error is not None:
                        raise replay.error
                    self._replayed = replay.final
                    return
                stream_slice, self._replayed = replay.slices[index]
            yield stream_slice

    def get_stream_state(self) -> Optional[Mapping[str, StreamState]]:
        if self._following:
            return self._replayed
        return self.underlying_partition_router.get_stream_state()


@dataclass
class OrderItemsRetriever(Retriever):
    """The records of one batch of order ids (a GroupingPartitionRouter slice, `{"order_id": [...]}` with
    `extra_fields` `{"payout_date": [...]}`): the orders themselves, or the `items_field` items embedded in them
    (captures, refunds), each with its order's order_id and the payout_date of the payout whose transaction named the
    order; through the record selector (transformations, schema normalisation).

    Why custom: a SimpleRetriever sends one request per page it builds; these three streams read the same orders, once
    each, through the sync's OrderFetcher (see there)."""

    requester: Any
    record_selector: Any
    config: Config
    parameters: InitVar[Mapping[str, Any]]
    items_field: Optional[str] = None
    threads: Union[InterpolatedString, str, int] = 12

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        self.items_field = self.items_field or parameters["items_field"]
        self._threads = int(InterpolatedString.create(str(self.threads), parameters=parameters or {}).eval(self.config))

    def read_records(self, records_schema: Mapping[str, Any], stream_slice: Optional[StreamSlice] = None) -> Iterable[StreamData]:
        if stream_slice is None:
            return
        order_ids = stream_slice.partition.get("order_id") or []
        order_ids = [order_ids] if isinstance(order_ids, str) else list(order_ids)
        dates = stream_slice.extra_fields.get("payout_date") or [None] * len(order_ids)
        payout_dates = dict(zip(order_ids, dates if isinstance(dates, list) else [dates]))
        fetcher = ORDER_FETCHERS.of(self.config, lambda: OrderFetcher(self.requester, self._threads))
        records: List[Dict[str, Any]] = []
        for order_id, order in fetcher.answers(order_ids, self.items_field):
            if order is None:
                continue
            items = [order] if self.items_field == "orders" else order.get(self.items_field) or []
            for item in items:
                if isinstance(item, dict):
                    item.setdefault("order_id", order_id)
                    item["payout_date"] = payout_dates.get(order_id)
                    records.append(item)
        yield from self.record_selector.filter_and_transform(records, stream_state={}, records_schema=records_schema, stream_slice=stream_slice)


def _is_datetime(value: Any, layouts: Sequence[str]) -> bool:
    return isinstance(value, str) and _parsed(value, layouts) is not None


@dataclass
class UsableState(StateMigration):
    """Fails the sync with one sentence naming the stream, the value and the fix when a saved state holds what the
    connector cannot use: a cursor (`payout_date`, `summary_month`, at any depth: the transactions' and orders' states
    carry their parents') that is not a date-time, or a `payouts_read` list that is not a mapping of payment
    references to dates. Without it the CDK ends the read with "Something went wrong in the connector". Changes
    nothing: states of every earlier version pass."""

    stream: str = ""
    declarative_stream: Any = None  # the stream's model, which the CDK's factory hands a state migration
    cursor_datetime_formats: List[str] = field(default_factory=lambda: ["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"])
    config: Optional[Config] = None
    parameters: InitVar[Mapping[str, Any]] = None

    def should_migrate(self, stream_state: Mapping[str, Any]) -> bool:
        problem = self._problem(stream_state, "")
        if problem:
            stream = self.stream or getattr(self.declarative_stream, "name", "")
            message = (f"The saved state of stream {stream} cannot be used: {problem}. Reset the stream's state "
                       "(in Airbyte: clear its data and sync again), or correct the value to a date-time such as "
                       "2024-01-01T00:00:00Z.")
            raise AirbyteTracedException(message=message, internal_message=message, failure_type=FailureType.config_error)
        return False

    def _problem(self, node: Any, path: str) -> Optional[str]:
        if isinstance(node, list):
            return next(filter(None, (self._problem(item, f"{path}[{index}]") for index, item in enumerate(node))), None)
        if not isinstance(node, Mapping):
            return None
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key in ("payout_date", "summary_month") and not _is_datetime(value, self.cursor_datetime_formats):
                return f"{where} is {json.dumps(value)[:60]}, not a date-time"
            if key == UnreadPayoutsPartitionRouter.READ_KEY and not (
                isinstance(value, Mapping) and all(_is_datetime(date, self.cursor_datetime_formats) for date in value.values())
            ):
                return f"{where} is not a list of payouts with their dates"
            problem = None if key == UnreadPayoutsPartitionRouter.READ_KEY else self._problem(value, where)
            if problem:
                return problem
        return None

    def migrate(self, stream_state: Mapping[str, Any]) -> Mapping[str, Any]:  # never called: should_migrate says no
        return stream_state


@dataclass
class NestedParentStateMigration(StateMigration):
    """A `captures`/`refunds` state as the CDK reads it: `parent_state.orders.parent_state` (the shape both this
    version and the one before write, see OrderIdBatches) lifted to `parent_state`. The CDK gives a parent stream the
    child state's `parent_state[<parent name>]` before any router runs, so only a state migration can. It stays as
    long as states written by 1.1.0 may come back."""

    nested_under: str
    config: Optional[Config] = None
    parameters: InitVar[Mapping[str, Any]] = None

    def should_migrate(self, stream_state: Mapping[str, Any]) -> bool:
        parent_state = stream_state.get("parent_state") if isinstance(stream_state, Mapping) else None
        nested = parent_state.get(self.nested_under) if isinstance(parent_state, Mapping) else None
        return isinstance(nested, Mapping) and isinstance(nested.get("parent_state"), Mapping)

    def migrate(self, stream_state: Mapping[str, Any]) -> Mapping[str, Any]:
        migrated = dict(stream_state)
        migrated["parent_state"] = dict(stream_state["parent_state"][self.nested_under]["parent_state"])
        return migrated


@dataclass
class RemoveFieldsUnlessConfigured(RecordTransformation):
    """RemoveFields, unless the config flag `keep_if` is on: how personal data stays out by default.

    The CDK's RemoveFields has a `condition`, but it cannot gate on the config: it hands the condition to dpath.delete
    as `afilter`, and dpath 2.2 then deletes every leaf of the record the filter accepts, matched by the pointer or
    not (`selected = afilter and leaf(value) and afilter(value)`), so `condition: "{{ not config.include_personal_data
    }}"` empties the whole record. Pointers are lists of keys; "*" stands for every item of a list (or value of an
    object). It can go when RemoveFields' condition selects among the pointed fields only (the manifest then says
    `condition:` instead)."""

    field_pointers: List[List[str]]
    keep_if: str
    parameters: InitVar[Mapping[str, Any]] = None

    def transform(self, record: Dict[str, Any], config: Optional[Config] = None,
                  stream_state: Optional[StreamState] = None, stream_slice: Optional[StreamSlice] = None) -> None:
        if config and config.get(self.keep_if):
            return
        for pointer in self.field_pointers:
            _remove(record, pointer)


def _remove(node: Any, pointer: Sequence[str]) -> None:
    head, rest = pointer[0], pointer[1:]
    if head == "*":
        children = node if isinstance(node, list) else list(node.values()) if isinstance(node, dict) else []
        for child in children:
            if rest:
                _remove(child, rest)
    elif isinstance(node, dict) and head in node:
        if rest:
            _remove(node[head], rest)
        else:
            del node[head]
