"""Custom components of manifest.yaml: what the CDK's stock components cannot do, each saying why.

This one file is what Airbyte's manifest-only runtime and the Connector Builder load beside the manifest (as
`source_declarative_manifest.components`), and what the `source-klarna` package runs: it imports only the standard
library and the CDK (and what it brings: requests, orjson), uses their public APIs only, and has no `from __future__
import annotations` (the runtime exec()s its text). Sections: 1. what one sync shares (`PerSync`); 2. answers and
pages; 3. errors (`SyncFailures`, `KlarnaFailure`, `KlarnaErrorHandler`); 4. the rate limit (`RateLimitPacer`); 5.
config and auth (`config_problem`, `StartDateCheck`, `PacedBasicHttpAuthenticator`); 6. settlements; 7. orders,
captures and refunds (`OrderItemsRetriever`, `OrderFetcher`, `OneReadPerSync`); 8. states; 9. personal data."""

import hashlib
import itertools
import json
import logging
import queue
import re
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
from typing import Any, Callable, Dict, Iterable, List, Mapping, MutableMapping, Optional, Sequence, Set, Tuple, Union
from urllib.parse import parse_qs, quote, urljoin, urlparse, urlsplit

import orjson
import requests
import requests.adapters

from airbyte_cdk.models import AirbyteLogMessage, AirbyteMessage, FailureType, Level, Type
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

LOGGER = logging.getLogger("airbyte.source_klarna")

# ---------------------------------------------------------------------------------------------------- 1. Per sync

class PerSync:
    """One object per sync, for what every stream of a sync shares, made by `factory` (or the first caller's `make`).
    Components hold no reference to their source, but every component of one sync is built with the source's one
    config object, so its identity names the sync; an entry holds its config, so its id() is not reused meanwhile.
    The `capacity` most recent syncs are kept (a process runs one; tests several), an older one's object closed."""

    def __init__(self, factory: Optional[Callable[[], Any]] = None, capacity: int = 4) -> None:
        self._factory, self._capacity, self._lock = factory, capacity, threading.Lock()
        self._entries: "OrderedDict[int, Tuple[Any, Any]]" = OrderedDict()

    def of(self, config: Any, make: Optional[Callable[[], Any]] = None) -> Any:
        with self._lock:
            entry = self._entries.get(id(config))
            if entry is None or entry[0] is not config:  # a new sync
                entry = self._entries[id(config)] = (config, (make or self._factory)())  # type: ignore[misc]
                while len(self._entries) > self._capacity:
                    _, (_, dropped) = self._entries.popitem(last=False)
                    getattr(dropped, "close", lambda: None)()
            return entry[1]


def parse_datetime(value: Any, layouts: Sequence[str]) -> Optional[datetime]:
    """`value` as an aware UTC datetime in the first of `layouts` (strptime) it fits, or None. The one date parser of
    this file: each caller passes the layouts the manifest gives the value (the cursor's, the spec's start_date)."""
    for layout in layouts:
        try:
            moment = datetime.strptime(str(value), layout)
        except ValueError:
            continue
        return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    return None


# -------------------------------------------------------------------------------------------- 2. Answers and pages

_UNPARSABLE = object()
_BODIES: "weakref.WeakKeyDictionary[requests.Response, Any]" = weakref.WeakKeyDictionary()
_BODIES_LOCK = threading.Lock()


def parsed_body(response: requests.Response) -> Any:
    """The response's JSON, parsed once with orjson (`_UNPARSABLE` for a body that is not JSON), kept as long as the
    response lives. The error handler checks a page's shape before the paginator and the extractor read it, and the
    CDK's HttpResponseFilter would parse each body again with the standard library (~15 % of a transactions sync's
    CPU)."""
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
    query = parse_qs(urlsplit(str(getattr(response.request, "url", "") or response.url or "")).query)
    size = (query.get("size") or query.get("limit") or [""])[0]
    return int(size) if size.isdigit() else None


def answer_problem(body: Any, expect: str, items_field: Optional[str] = None, page_size: Optional[int] = None) -> Optional[str]:
    """Why a 2xx answer is not `expect` ("page", "list" or "order"), or None when it is. Klarna's OpenAPI makes only
    `pagination.count` required, so two shapes are read where their meaning is unambiguous: a page without a
    `pagination` block shorter than the page asked for (`page_size`) is the last, and a null list with `count` 0 is
    empty. A full page without `pagination` (more may follow) and a null list with a count are problems."""
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
    """The rows of a Klarna collection page, `{"<items_field>": [...], "pagination": {...}}`, from the body
    `parsed_body` kept. The CDK's DpathExtractor decodes the body again and finds a top-level field with `dpath.get`,
    which folds over every field of every row looking for glob matches (py-spy: 11 % of a transactions sync's CPU);
    a dict lookup gives the same list. It can go when DpathExtractor looks a plain top-level key up directly."""

    config: Config
    parameters: InitVar[Mapping[str, Any]]
    items_field: Optional[str] = None

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        self.items_field = self.items_field or parameters["items_field"]

    def extract_records(self, response: requests.Response) -> Iterable[MutableMapping[Any, Any]]:
        body = parsed_body(response)
        items = body.get(self.items_field) if isinstance(body, dict) else None
        yield from items if isinstance(items, list) else ()


@dataclass
class KlarnaOffsetPagination(PaginationStrategy):
    """Offset pages that stop on Klarna's own numbers: the next offset is the one asked for plus the page's `count`
    (never Klarna's optional `offset` echo); the last page is where offset + count reaches `total` (without it, a
    short page), or an empty one. The CDK's OffsetIncrement stops only on a short page: one more request (for an
    empty page) whenever a list's length is a multiple of 500, and no check against `total`, so a page cut short
    (a proxy) would end the stream silently."""

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
        pagination = body["pagination"] if isinstance(body, dict) and isinstance(body.get("pagination"), dict) else {}
        count = pagination.get("count")
        # Without Klarna's count the page is the last: the error handler lets only a short page without one through.
        if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
            return None
        next_offset = int(last_page_token_value or 0) + count
        total = pagination.get("total")
        if isinstance(total, int) and not isinstance(total, bool):
            return next_offset if next_offset < total else None
        return next_offset if count >= (page_size_override or self.page_size) else None

    def get_page_size(self) -> Optional[int]:
        return self.page_size


# ------------------------------------------------------------------------------------------------------ 3. Errors

def klarna_api(url: str) -> str:
    """The endpoint a URL names (/settlements/v1/transactions, /ordermanagement/v1/orders ...): what a failure stops."""
    found = re.search(r"/(settlements|ordermanagement|disputes)/v\d+/[a-z_]+(/summary)?", urlsplit(url).path)
    return found.group(0) if found else urlsplit(url).path or url


class KlarnaFailure(AirbyteTracedException):
    """A request that failed for good, or one not sent because its API is down: reported once per cause (the API and
    what failed). The CDK's concurrent reader makes an error trace of every partition's exception and its closing
    summary repeats each one's repr (an outage met by 199 partitions: 199 traces, each with the CDK's HttpClient
    text, the request and every response header). So the first of a cause renders as the error trace, the others
    as a warning naming their stream, and the repr is the sentence. The partitions still fail: their state is not
    committed, and the next sync reads what they did not."""

    def __init__(self, message: str, failure_type: FailureType, cause: Tuple[str, str], failures: "SyncFailures") -> None:
        super().__init__(internal_message=message, message=message, failure_type=failure_type)
        self.cause, self._failures = cause, failures

    def as_airbyte_message(self, stream_descriptor: Any = None) -> AirbyteMessage:
        if self._failures.first_report(self.cause):
            return super().as_airbyte_message(stream_descriptor=stream_descriptor)
        stream = getattr(stream_descriptor, "name", None) or "of this sync"
        text = f"Stream {stream} stopped too, for the reason already reported: {self.message}"
        return AirbyteMessage(type=Type.LOG, log=AirbyteLogMessage(level=Level.WARN, message=text))

    def __repr__(self) -> str:
        return str(self.message)


class SyncFailures:
    """One sync's failures: each request's attempts, when each API last answered, the APIs it stopped asking, the
    causes reported. An API is down when a request failed for good (through its last retry, or a FAIL) and nothing
    of it answered since that request was sent: the authenticator then sends it nothing more, instead of every
    partition retrying in full on the merchant's shared limit (an Order Management outage kept a sync asking for
    hours). A failing request among answered ones gets all its retries. The CDK's HttpClient retries per request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: "weakref.WeakKeyDictionary[Any, List[float]]" = weakref.WeakKeyDictionary()  # request -> [answers, sent at, foreign in a row]
        self._answered: Dict[str, float] = {}  # api -> monotonic time of its last answer that was not a failure
        self._down, self._reported = {}, set()  # api -> the KlarnaFailure that stopped it; the causes reported

    def sent(self, request: Any) -> None:  # its first attempt, or a retry
        with self._lock:
            self._attempts.setdefault(request, [0, time.monotonic(), 0])

    def answer(self, request: Any, url: str, foreign: bool) -> Tuple[Any, int, int]:
        """The request an answer belongs to, as sent, the answer's number for it (1 for its first), and how many of its
        answers in a row were not Klarna's (`foreign`): `request` itself (requests' adapters hand back the one sent),
        else the one in flight to `url` (an adapter may wrap it, as requests-mock does); None for neither (a body cut
        short carries no request: its retries are the CDK's, each partition reporting its own)."""
        with self._lock:
            if request is None or request not in self._attempts:
                request = next((sent for sent in list(self._attempts.keys()) if str(sent.url) == url), None) if url else None
            if request is None:
                return None, 1, int(foreign)
            entry = self._attempts[request]
            entry[0], entry[2] = entry[0] + 1, entry[2] + 1 if foreign else 0
            return request, int(entry[0]), int(entry[2])

    def answered(self, api: str, request: Any) -> None:
        with self._lock:
            self._answered[api] = time.monotonic()
            if request is not None:
                self._attempts.pop(request, None)

    def give_up(self, api: str, request: Any, message: str, failure_type: FailureType, kind: str) -> KlarnaFailure:
        with self._lock:
            since = self._attempts.pop(request, [0, time.monotonic()])[1] if request is not None else time.monotonic()
            if api in self._down:
                return KlarnaFailure(str(self._down[api].message), self._down[api].failure_type, self._down[api].cause, self)
            if self._answered.get(api, float("-inf")) < since:
                message = (f"{message} Klarna's {api} endpoint answered nothing else for {time.monotonic() - since:.0f} s, so this sync "
                           "stopped asking it: what was read before is saved with its state, and the next sync goes on from there.")
                self._down[api] = KlarnaFailure(message, failure_type, (api, kind), self)
                return self._down[api]
            return KlarnaFailure(message, failure_type, (api, kind), self)

    def stop_if_down(self, api: str) -> None:
        with self._lock:
            down = self._down.get(api)
        if down is not None:
            raise KlarnaFailure(str(down.message), down.failure_type, down.cause, self)

    def first_report(self, cause: Any) -> bool:
        with self._lock:
            first = cause not in self._reported
            self._reported.add(cause)
            return first


FAILURES: PerSync = PerSync(SyncFailures)


# getaddrinfo's answers for a name that does not exist (EAI_AGAIN, a resolver that did not answer, is left to retries).
_UNKNOWN_NAME_ERRNOS = tuple(getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, name))


def deterministic_transport_failure(exception: BaseException, url: str, config: Mapping[str, Any]) -> Optional[str]:
    """The sentence for a failure to reach Klarna that no retry changes (a host that does not resolve, a TLS
    certificate this machine refuses), or None for one a retry may cure."""
    host = urlsplit(url).hostname or url
    override = config.get("base_url_override") if isinstance(config, Mapping) else None
    cause: Optional[BaseException] = exception
    for _ in range(10):  # down the chain of causes, through requests' and urllib3's wrappers (`reason`, `args[0]`)
        if cause is None:
            return None
        if isinstance(cause, socket.gaierror) and cause.errno in _UNKNOWN_NAME_ERRNOS:
            where = f"check base_url_override ({override})" if override else (
                "check this machine's DNS and network path to Klarna (platform and region pick the host)")
            return f"The host {host} of {url} does not resolve ({cause.strerror}): {where}."
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (f"{host} presented a TLS certificate this machine does not trust ({cause.verify_message or cause}) for {url}. If a proxy between "
                    f"this machine and {host} inspects TLS, add its CA certificate to the trust store (REQUESTS_CA_BUNDLE); "
                    "otherwise check base_url_override.")
        wrapped = getattr(cause, "reason", None)
        if not isinstance(wrapped, BaseException):
            wrapped = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None
        cause = cause.__cause__ or cause.__context__ or wrapped
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
    - A 2xx that is not what the endpoint answers (`expect`: a page of `parameters.items_field`, the summaries'
      list, an order; `answer_problem`) is retried, and fails naming the URL on the request's third answer in a
      row: stopping would be a silent partial sync, and six backoffs for an answer that will not change (a proxy's
      HTML page) only delay the error. Not JSON at all is a config error; JSON of another shape one to report.
    - A 400 about the page size or offset is the connector's fault: a system error asking to report it, not the
      config error "check start_date" other 400s get.
    - A host that does not resolve and a TLS certificate this machine refuses fail at once, as config errors naming
      the host and the fix; a reset, a cut body or a timeout keeps its retries, worded with the URL.
    - A request that fails for good (a FAIL, or a failure on its last retry) raises a KlarnaFailure with the
      filter's sentence, which may stop its API for the sync (SyncFailures). Handed a FAIL, the CDK's HttpClient
      would log the response's headers and put them into its exception; at the last retry it would raise
      "Exhausted available request attempts" with the request in its text.
    - An IGNORE outside Order Management (a Disputes API the merchant is not enrolled in) warns once per sync."""

    expect: str = "page"
    items_field: Optional[str] = None

    FOREIGN_ANSWERS_BEFORE_FAILING = 3

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        super().__post_init__(parameters or {})
        self._items_field = self.items_field or (parameters or {}).get("items_field")

    def interpret_response(self, response_or_exception: Optional[Union[requests.Response, Exception]]) -> ErrorResolution:
        failures = FAILURES.of(self.config)
        sent = getattr(response_or_exception, "request", None)
        url = str(getattr(sent, "url", None) or getattr(response_or_exception, "url", None) or "")
        api = klarna_api(url) if url else klarna_api(self._served_path())
        is_2xx = isinstance(response_or_exception, requests.Response) and 200 <= response_or_exception.status_code < 300
        problem = answer_problem(parsed_body(response_or_exception), self.expect, self._items_field, _requested_page_size(response_or_exception)) if is_2xx else None
        request, attempt, foreign = failures.answer(sent, url, problem is not None)
        resolution = self._resolution(response_or_exception, problem, foreign)
        action = resolution.response_action
        if action in (ResponseAction.SUCCESS, ResponseAction.IGNORE):
            failures.answered(api, request)
            if action == ResponseAction.IGNORE and self.expect != "order" and failures.first_report((api, "ignored")):
                LOGGER.warning(resolution.error_message)
            return resolution
        if action == ResponseAction.FAIL or (request is not None and attempt > int(self.max_retries or 0)):
            kind = str(getattr(response_or_exception, "status_code", None) or type(response_or_exception).__name__)
            message = resolution.error_message or f"Klarna did not answer {url.split('?', 1)[0]} properly through every retry."
            raise failures.give_up(api, request, message, resolution.failure_type or FailureType.system_error, kind)
        return resolution

    def _resolution(self, response_or_exception: Any, problem: Optional[str], foreign: int) -> ErrorResolution:
        if isinstance(response_or_exception, requests.RequestException):
            return self._transport_failure(response_or_exception)
        if isinstance(response_or_exception, requests.Response):
            response = response_or_exception
            url = str(response.url or "").split("?", 1)[0]
            if problem:
                return self._foreign_answer(response, url, problem, foreign)
            body = parsed_body(response)  # a 400 about the page size or offset, which only the connector chooses
            reasons = "; ".join(str(m) for m in body.get("error_messages") or []) if isinstance(body, dict) else ""
            if response.status_code == 400 and ("size" in reasons.lower() or "offset" in reasons.lower()):
                return ErrorResolution(ResponseAction.FAIL, FailureType.system_error,
                    f"Klarna refused the page size or offset the connector asked {url} for (HTTP 400): {reasons} "
                    f"(correlation_id {body.get('correlation_id')}). No setting fixes this: report it "
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

    def _served_path(self) -> str:  # the endpoint, for a failure that carries no request (a body cut short)
        page = "/disputes/v2/disputes" if self._items_field == "disputes" else f"/settlements/v1/{self._items_field}"
        return {"page": page, "list": "/settlements/v1/payouts/summary"}.get(self.expect, "/ordermanagement/v1/orders/{order_id}")

    def _transport_failure(self, exception: requests.RequestException) -> ErrorResolution:
        full_url = str(getattr(getattr(exception, "request", None), "url", "") or "")
        url = full_url.split("?", 1)[0] or self._served_path()
        deterministic = deterministic_transport_failure(exception, url, self.config) if full_url else None
        if deterministic:
            return ErrorResolution(ResponseAction.FAIL, FailureType.config_error, deterministic)
        resolution = super().interpret_response(exception)
        return ErrorResolution(resolution.response_action, resolution.failure_type or FailureType.transient_error,
                               f"Klarna did not answer {url} ({type(exception).__name__}: {exception}) through every retry. "
                               "Check the network path to Klarna (proxy, firewall) and retry the sync later.")


# -------------------------------------------------------------------------------------------------- 4. Rate limit

RATE_LIMIT_HEADER, REMAINING_HEADER, RESET_HEADER = "X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset"


def _header_number(response: requests.Response, name: str) -> Optional[float]:
    """The leading number of a rate-limit header (`200, 200;w=1` -> 200), or None."""
    try:
        return float(str(response.headers[name]).split(",", 1)[0].split(";", 1)[0].strip())
    except (KeyError, ValueError):
        return None


def _window_seconds(response: requests.Response) -> Optional[float]:
    """The `w=` parameter of X-Ratelimit-Limit (the window Klarna counts in), or None."""
    found = re.search(r"(?:^|[;,])\s*w=([0-9]*\.?[0-9]+)", str(response.headers.get(RATE_LIMIT_HEADER) or ""))
    return float(found.group(1)) if found and float(found.group(1)) > 0 else None


class RateLimitPacer:
    """Spends a Klarna merchant's rate limit politely: at most `cap` requests/s, and no more than the merchant's other
    traffic leaves, less a reserve, however Klarna counts. Klarna counts per merchant (its checkout shares the
    limit) and, once over it, answers every request of the merchant 429: 429s are not how to find the limit. Its
    counting is not documented, but every answer says what is left: `X-Ratelimit-Remaining` (R) of
    `X-Ratelimit-Limit: 200, 200;w=1` (L per w s); the merchant is safe while R stays above T = L x reserve. So the
    rate follows the lowest R of each period of w s (m): up by half of m - T per w, down by half of what was missing
    (at m = T, the cap with no other traffic: L - T or max_requests_per_second; else what the others leave). An
    answer more than one request below T cuts it by a third; one at T/2 or less, or a 429, holds every request until
    the limit resets (Retry-After, else X-Ratelimit-Reset). The first answer with R (the probe's; before it, L/20)
    starts it at a tenth of R - T (a fixed window's first answer cannot show the others yet), and the first period
    adds all it left unused above T. A floor of 1 % of L keeps a sync moving; answers without the headers run it at
    its cap. Requests are spaced 1/rate apart. Thread safe: one pacer serves every stream of a sync. Why not the
    manifest's `api_budget` (HTTPAPIBudget): it reads `ratelimit_remaining_header`, but takes the reset header for
    an epoch (Klarna's is seconds to the reset), its FixedWindow can only lower its count and its MovingWindow acts
    only at 0 remaining, and it keeps no reserve for the merchant's checkout."""

    SLOW_START_SHARE, FIRST_SHARE, FIRST_GAIN, FLOOR_SHARE, GAIN, CUT, NAP = 0.05, 0.1, 1.0, 0.01, 0.5, 2 / 3, 0.25

    def __init__(self, assumed_limit: float, reserve: float, cap: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self._limit = float(assumed_limit)
        self._reserve = min(max(float(reserve), 0.0), 0.9)
        self._explicit_cap = float(cap) if cap else None
        self._window = 1.0
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._next_send, self._last_sent, self._hold_until = 0.0, -1.0, 0.0
        self._period_start: Optional[float] = None
        self._lowest: Optional[float] = None  # the lowest Remaining of the current period
        self._cut_in_period, self._seen_headers, self._periods = False, False, 0
        self._generation = 0  # turns handed out before the rate changed are of an older generation
        self.rate = min(self.cap, self._limit * self.SLOW_START_SHARE / self._window)  # requests per second, now

    @property
    def cap(self) -> float:  # the limit less the reserve, or the config's max_requests_per_second if lower
        reserved = self._limit * (1 - self._reserve) / self._window
        return min(self._explicit_cap, reserved) if self._explicit_cap else reserved

    def wait_turn(self) -> None:
        """Blocks until this request may go out. A turn handed out before the rate changed (a hold, a cut, a rise) is
        asked for again: the threads already waiting for theirs would otherwise go out at the old pace. Waits in
        naps of at most NAP seconds to notice."""
        while True:
            with self._lock:
                now = self._clock()
                slot = max(now, self._next_send, self._hold_until)
                self._next_send = slot + 1.0 / self.rate
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

    def observe(self, response: requests.Response) -> None:  # learns from one answer (any status): its headers, a 429's wait
        headers = (RATE_LIMIT_HEADER, REMAINING_HEADER, RESET_HEADER, "Retry-After")
        limit, remaining, reset, retry_after = (_header_number(response, name) for name in headers)
        window = _window_seconds(response)
        with self._lock:
            now = self._clock()
            if (limit and limit > 0 and limit != self._limit) or (window and window != self._window):
                self._limit, self._window = (limit if limit and limit > 0 else self._limit), (window or self._window)
            until_reset = max(reset if reset is not None else self._window, 0.0)
            if response.status_code == 429:
                self._hold(now, now + (max(retry_after, 0.0) if retry_after is not None else until_reset))
            if remaining is None:
                self._set_rate(now, min(self.rate, self.cap) if self._seen_headers else self.cap)
                return
            target = self._limit * self._reserve
            if not self._seen_headers:  # the first answer that says what is left: start there
                self._seen_headers = True
                self._set_rate(now, self.FIRST_SHARE * (remaining - target) / self._window)
            if remaining <= target / 2:
                self._hold(now, now + until_reset)
            # One request of slack: a window boundary between two turns spaced at the cap lets one more in.
            if remaining < target - 1 and not self._cut_in_period:
                self._cut_in_period = True
                self._set_rate(now, self.rate * self.CUT)
            self._lowest = remaining if self._lowest is None else min(self._lowest, remaining)
            if self._period_start is None:
                self._period_start = now
            elif now - self._period_start >= self._window:
                gain = self.FIRST_GAIN if self._periods == 0 else self.GAIN
                self._set_rate(now, self.rate + gain * (self._lowest - target) / self._window)
                self._period_start, self._lowest, self._cut_in_period = now, None, False
                self._periods += 1

    def _set_rate(self, now: float, rate: float) -> None:
        rate = min(self.cap, max(rate, max(1.0, self._limit * self.FLOOR_SHARE) / self._window))
        if rate != self.rate:
            self.rate = rate
            self._requeue(now)

    def _hold(self, now: float, until: float) -> None:  # nothing goes out before `until`
        if until > self._hold_until:
            self._hold_until = until
            self._requeue(now)

    def _requeue(self, now: float) -> None:  # the turns handed out so far, again: spaced at the rate from the last taken
        self._generation += 1
        self._next_send = max(now, self._last_sent + 1.0 / self.rate)


RATE_LIMIT_PACERS: PerSync = PerSync()

# How long a thread may hold the GIL (CPython: 5 ms). The CDK's reader threads are CPU-bound between requests: at 5 ms
# they spend half the CPU handing the GIL around (100,000 transactions, concurrency 12: 25.5 s of CPU, 13.2 s at 50 ms;
# bench/). It is the process's: set when a sync builds its authenticator, not on import, and only ever lengthened.
SWITCH_INTERVAL = 0.05

# ---------------------------------------------------------------------------------------------- 5. Config and auth

LOCAL_HOSTS = ("localhost", "127.0.0.1")
# Kustom's API keys say which environment they are for: kco_live_api_... or kco_test_api_... .
KUSTOM_KEY_PREFIX, KUSTOM_LIVE_KEY, KUSTOM_TEST_KEY = "kco_", "kco_live_", "kco_test_"
START_DATE_LAYOUTS = ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d")  # the spec's start_date: YYYY-MM-DDTHH:mm:ssZ or YYYY-MM-DD


def config_problem(config: Mapping[str, Any]) -> Optional[str]:
    """The first problem with `config` that its spec cannot state, as a sentence, or None. What the spec states
    (required fields, types, enums, ranges) the CDK checks before any component runs, in both forms
    (`check_config_against_spec_or_exit`), the start_date the spec's StartDateCheck; these are the rest: Kustom's
    rules, a base_url_override that would send the password unencrypted or is not a URL."""
    return _platform_problem(config) or _override_problem(config.get("base_url_override"))


def start_date_problem(start_date: Any, now: Optional[datetime] = None) -> Optional[str]:
    if not start_date:
        return None
    parsed = parse_datetime(start_date, START_DATE_LAYOUTS)
    if parsed is None:
        return f"The start_date {start_date!r} is not a UTC date-time: write it as YYYY-MM-DDTHH:MM:SSZ, for example 2024-01-01T00:00:00Z."
    if parsed > (now or datetime.now(timezone.utc)):
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


def _platform_problem(config: Mapping[str, Any]) -> Optional[str]:
    """Platform mistakes: a Klarna region with Kustom, and a Kustom API key used with the wrong platform or
    environment (only the key's public prefix is ever quoted)."""
    password, region = str(config.get("password") or ""), config.get("region") or "eu"
    if (config.get("platform") or "klarna") == "klarna":
        return "The password is a Kustom API key (it starts with kco_): set platform to kustom." if password.startswith(KUSTOM_KEY_PREFIX) else None
    if region != "eu":
        return (f"region {region!r} applies to Klarna only: Kustom serves every merchant from api.kustom.co, "
                "so remove region (or set it to eu) when platform is kustom.")
    playground = bool(config.get("playground"))  # a Kustom key says which environment it is for
    if password.startswith(KUSTOM_TEST_KEY) and not playground:
        return "The password is a Kustom test API key (kco_test_...): switch playground on, or use a live key (kco_live_...) for production."
    if password.startswith(KUSTOM_LIVE_KEY) and playground:
        return "The password is a Kustom live API key (kco_live_...): switch playground off, or use a test key (kco_test_...) for the playground."
    return None


def _override_problem(override: Any) -> Optional[str]:
    if not override:
        return None
    parsed_url = urlparse(str(override))
    if parsed_url.scheme == "http" and parsed_url.hostname not in LOCAL_HOSTS:
        return (f"base_url_override {override!r} uses plain http, which would send the Klarna password unencrypted: "
                "use an https:// URL (plain http is only accepted for localhost and 127.0.0.1).")
    if parsed_url.scheme not in ("http", "https") or not parsed_url.hostname:
        return f"base_url_override {override!r} is not a URL: write it as https://host[:port], or leave it empty to use Klarna's host for the region."
    return None


@dataclass
class PacedBasicHttpAuthenticator(BasicHttpAuthenticator):
    """The manifest's HTTP Basic auth (the CDK's BasicHttpAuthenticator), with every request paced to the merchant's
    rate limit (`RateLimitPacer`) and not sent to an API this sync stopped asking (`SyncFailures`), the Basic token
    registered as a secret, the Disputes API's merchant-id header where asked, and what a user can fix reported in
    one sentence before any stream reads. Why the authenticator: it is the one component the CDK's HTTP client
    consults before every attempt (retries included) and tells about every answer (`update_from_response`, the
    ResponseAwareAuthenticator protocol), built by every stream with the sync's config before its first request.
    The CDK masks the password, not base64(username:password), which a debug log of the request headers shows.
    What a user can fix fails the sync once, before any stream: a config mistake (`config_problem`), and what one
    request shows every request would meet (`probe`: rejected credentials, a 400, a host that is not Klarna's, does
    not resolve or whose certificate is refused, an HTML page, a merchant_id of another merchant). Met by every
    partition instead, each would report it (14 errors for a wrong password on the stock runtime); the spec's
    validations cannot, the CDK hands them one value at a time."""

    assumed_limit: Union[InterpolatedString, str, int] = 200
    reserve_percent: Union[InterpolatedString, str, int] = 20
    max_requests_per_second: Union[InterpolatedString, str, int, None] = None
    probe_url_base: Optional[str] = None
    probe_timeout: Optional[List[float]] = None  # the requester's (connect, read), from the manifest
    rejected_message: str = ""
    bad_request_message: str = ""
    not_found_message: str = ""
    merchant_id_header: Optional[str] = None

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        super().__post_init__(parameters)
        self._parameters = parameters or {}
        limit, reserve, cap = (self._number(value) for value in (self.assumed_limit, self.reserve_percent, self.max_requests_per_second))
        sys.setswitchinterval(max(sys.getswitchinterval(), SWITCH_INTERVAL))
        self.pacer = RATE_LIMIT_PACERS.of(self.config, lambda: RateLimitPacer(
            assumed_limit=limit or 200, reserve=(20 if reserve is None else reserve) / 100, cap=cap))
        self._failures = FAILURES.of(self.config)
        # The username and password do not change within a sync: the CDK's BasicHttpAuthenticator
        # renders both through Jinja twice per request (about 5 % of an order's CPU); once is enough.
        self._token, self._token_registered = super().token, False
        problem, self._merchant_id = PROBES.of(self.config, self._first_problem) if self.config else (None, None)
        if problem:
            raise AirbyteTracedException(message=problem, internal_message=problem, failure_type=FailureType.config_error)

    def _number(self, value: Any) -> Optional[float]:
        """A setting as a number; None when it evaluates to nothing (no explicit cap)."""
        text = "" if value is None else str(InterpolatedString.create(str(value), parameters=self._parameters).eval(self.config))
        return float(text) if text.strip() not in ("", "None") else None

    def _first_problem(self) -> Tuple[Optional[str], Optional[str]]:
        problem = config_problem(self.config)
        return (problem, None) if problem or not self.probe_url_base else self.probe()

    def probe(self) -> Tuple[Optional[str], Optional[str]]:
        """One request to Klarna's payouts list: (the sentence for an answer every request would get, or None for an
        answer that is fine or one a retry may cure, left to the streams' error handler; the payout's merchant id)."""
        url = str(InterpolatedString.create(self.probe_url_base, parameters=self._parameters).eval(self.config)).rstrip("/") + "/settlements/v1/payouts"
        try:
            response = requests.get(url, params={"size": 1}, auth=self, timeout=tuple(self.probe_timeout or ()) or None)
        except requests.RequestException as error:
            return deterministic_transport_failure(error, url, self.config), None
        self.update_from_response(response.request, response)
        body = parsed_body(response)
        message = {400: self.bad_request_message, 401: self.rejected_message, 403: self.rejected_message,
                   404: self.not_found_message}.get(response.status_code)
        if message:
            return " ".join(str(InterpolatedString.create(message, parameters=self._parameters).eval(
                self.config, request_url=url, response=body if isinstance(body, dict) else {})).split()), None
        if response.ok and body is _UNPARSABLE:
            return foreign_page_message(response, url, EXPECTED_ANSWERS["page"].format(items="payouts"), "once"), None
        payouts = body.get("payouts") if isinstance(body, dict) else None
        found = str(payouts[0].get("merchant_id") or "") if payouts and isinstance(payouts[0], dict) else ""
        configured = str(self.config.get("merchant_id") or "")
        if configured and found and configured != found:
            return (f"merchant_id {configured} is not the merchant of these API credentials: Klarna's payouts for them "
                    f"name {found}. Correct merchant_id, or leave it empty to use {found}."), None
        return None, found or None

    @property
    def token(self) -> str:
        return self._token

    def __call__(self, request: requests.PreparedRequest) -> Any:
        if not self._token_registered:
            # Registered on first use, after the entrypoint has set up its secret list (which it replaces with the
            # spec's secrets once it has the config).
            add_to_secrets(self._token.split(" ", 1)[-1])
            self._token_registered = True
        self._failures.stop_if_down(klarna_api(str(request.url)))
        self._failures.sent(request)
        merchant_id = self.merchant_id_header and (self.config.get("merchant_id") or self._merchant_id)
        if merchant_id:
            request.headers[str(self.merchant_id_header)] = str(merchant_id)
        self.pacer.wait_turn()
        return super().__call__(request)

    def update_from_response(self, request: requests.PreparedRequest, response: requests.Response) -> None:
        self.pacer.observe(response)


PROBES: PerSync = PerSync()

# ------------------------------------------------------------------------------------------------- 6. Settlements

# The fields of Klarna's Transaction schema (settlements OpenAPI), in a fixed order.
TRANSACTION_KEY_FIELDS = (
    "amount", "capture_id", "merchant_reference1", "sale_date", "type", "capture_date", "payment_reference", "order_id",
    "payout", "refund_id", "short_order_id", "merchant_reference2", "currency_code", "purchase_country", "vat_rate",
    "vat_amount", "shipping_country", "initial_payment_method_type", "initial_number_of_installments",
    "initial_payment_method_monthly_downpayments", "merchant_capture_reference", "merchant_refund_reference",
    "detailed_type", "tax_in_currency_of_registration_country", "currency_code_of_registration_country", "klarna_comment",
    "reversal_reference")


def transaction_fingerprint(record: Mapping[str, Any]) -> str:
    """A short hash of the row's Klarna fields (absent and null hash alike)."""
    values = list(map(record.get, TRANSACTION_KEY_FIELDS))
    return hashlib.sha1(orjson.dumps(values)).hexdigest()[:20]


class OccurrenceCounter:
    """How often each fingerprint was seen in each payout partition being read, per partition object (the slice the
    CDK passes with each of its pages), not per payment_reference: a payout read twice in one sync numbers its
    identical rows from 0 again, repeating the first read's keys. At most `concurrency` (<= 30) partitions are read
    at once, so the `capacity` most recent partitions' counts are exact and memory stays bounded."""

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
    yet in a payout) and `payment_reference`/`payout_date` from the payout partition. Klarna's transactions have no
    id, and a payout can hold byte-identical rows (two equal fees): the key numbers them within their payout. One
    pass without Jinja: the CDK's AddFields renders its template per record (~40 % of the per-record time)."""

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
    less the payouts the previous sync read. An incremental sync re-reads the lookback window's payouts (for payouts
    Klarna books late), and the CDK's SubstreamPartitionRouter would read their transactions again (two thirds of an
    incremental sync's requests after a day's growth); a payout's transactions never change once paid out. The list
    rides in the parent state the CDK carries: `"parent_state": {"payouts": {"payout_date": ..., "payouts_read":
    {"<payment_reference>": "<payout_date>", ...}}}`. The CDK keeps such extra keys of a sequential cursor state and
    commits each snapshot of this router's state only once every partition generated before it is closed, so a payout
    is listed only after all its transactions were emitted: skipping never loses a row. The list holds the payouts
    dated within `remember_days` of the newest seen, those the next lookback can bring back (one dropped too early is
    merely read again). A late payout is not listed, so it is read; without a list (first sync, reset) all are."""

    remember_days: Union[InterpolatedString, str, int] = 4
    cursor_datetime_formats: List[str] = field(default_factory=list)  # the payouts cursor's (the manifest's)

    READ_KEY = "payouts_read"

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        (parent_config,) = self.underlying_partition_router.parent_stream_configs
        self._parent_name = parent_config.stream.name
        self._partition_field = parent_config.partition_field.eval(self.config)
        days = InterpolatedString.create(str(self.remember_days), parameters=parameters or {}).eval(self.config)
        self._remember, self._lock = timedelta(days=float(days)), threading.Lock()
        self._read: Dict[str, str] = {}
        self._newest: Optional[datetime] = None

    def _previously_read(self) -> Mapping[str, str]:
        parent_state = (self.underlying_partition_router.get_stream_state() or {}).get(self._parent_name)
        read = parent_state.get(self.READ_KEY) if isinstance(parent_state, Mapping) else None
        return {str(ref): str(date) for ref, date in read.items()} if isinstance(read, Mapping) else {}

    def _remember_read(self, payment_reference: str, payout_date: Any) -> None:
        moment = parse_datetime(payout_date, self.cursor_datetime_formats)
        with self._lock:
            if moment is not None and self._newest is not None and moment < self._newest - self._remember:
                return  # older than any lookback window will reach back
            self._read[payment_reference] = str(payout_date)
            if moment is not None and (self._newest is None or moment > self._newest):
                self._newest = moment
                horizon = moment - self._remember
                self._read = {ref: date for ref, date in self._read.items()
                              if (parse_datetime(date, self.cursor_datetime_formats) or moment) >= horizon}

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
            state[self._parent_name] = {**(state.get(self._parent_name) or {}), self.READ_KEY: dict(self._read)}
        return state


@dataclass
class EachKeyOncePerSync(RecordFilter):
    """Lets a record through the first time its `key` is seen in this sync, drops repeats. Klarna lists a window's
    payouts newest first and pages by offset: a payout added between two pages of a window shifts the list, and the
    last payouts of page 1 come again on page 2 (nothing is skipped, the shift is towards later pages). The CDK's
    RecordFilter judges each record alone. Payouts are few (about one per currency and day): one sync's keys fit in
    memory. The payout added meanwhile arrives with the next sync (the lookback re-reads it)."""

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


# -------------------------------------------------------------------------------- 7. Orders, captures and refunds

class SpillingAnswers:
    """order_id -> [status, readers so far, body]: the most recent bodies in memory, up to `memory_bytes`, older ones
    zlib-compressed (4 KB -> 1.1 KB) into a temporary file deleted on close, the entry keeping where. So memory stays
    flat however many orders wait for a reader (a stream not selected, or one that runs after the others), and a sync
    whose three streams read side by side never writes the file. Not thread-safe: OrderFetcher's lock guards it."""

    def __init__(self, memory_bytes: int = 8 << 20) -> None:
        self._memory_bytes, self._entries = memory_bytes, {}  # order_id -> [status, readers, body or (offset, size)]
        self._in_memory: "OrderedDict[str, int]" = OrderedDict()  # order_id -> body size, oldest first
        self._memory, self._file, self.spilled = 0, None, 0  # bytes in memory, the file, bodies written to it

    def put(self, order_id: str, status: int, body: bytes, readers: int = 0) -> None:
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
        self._entries, self._in_memory, self._memory = {}, OrderedDict(), 0
        if self._file is not None:
            self._file.close()
            self._file = None


class _Pending:
    """One order's fetch, under way or done: its answer (status, body) or the exception it ended in."""

    def __init__(self) -> None:
        self.done, self.answer, self.error = threading.Event(), None, None  # error: Optional[BaseException]


class OrderFetcher:
    """Klarna's answer for each order `orders`, `captures` or `refunds` asks for in a sync: requested once, whichever
    asks first, kept until all three have read it. Why not the CDK's HttpRequester: each stream would request every
    order itself (three requests per order on the merchant's shared limit), and its send_request spends 2.6-3.3 ms of
    CPU per request (measured), more than an order's budget of 3 ms. So `concurrency` threads send them through a
    requests.Session of their own (its pool as large as the threads; the environment's proxies and CA bundle read
    once), with the order requester's authenticator (re-applied before each retry, as the CDK's client does) and
    timeouts, each answer judged by its error handler (which raises once an order fails for good) and retried with
    its backoff. Single-flight: a reader asking for an order under way waits for that fetch; a failed fetch fails
    every reader waiting on it and is asked again by the next. Answers wait for their other readers in
    SpillingAnswers. The threads are daemons: a sync that ends does not wait for fetches nobody will read."""

    READERS = {"orders": 1, "captures": 2, "refunds": 4}
    EVERY_READER = 7

    def __init__(self, requester: Any, threads: int) -> None:
        self._requester, self._handler, self._lock = requester, requester.error_handler, threading.Lock()
        self._timeout = (requester.connect_timeout_in_seconds, requester.read_timeout_in_seconds)
        self._pending: Dict[str, _Pending] = {}
        self._kept = SpillingAnswers()
        base = requester.get_url_base(stream_state=None, stream_slice=None, next_page_token=None)
        path = requester.get_path(stream_state=None, stream_slice=StreamSlice(partition={"order_id": "ORDERID"}, cursor_slice={}), next_page_token=None)
        self._prefix, self._suffix = urljoin(base.rstrip("/") + "/", path.lstrip("/")).split("ORDERID", 1)
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=threads)
        for scheme in ("https://", "http://"):  # ignore-https-check: plain http only to localhost (config_problem)
            session.mount(scheme, adapter)
        settings = session.merge_environment_settings(base, {}, None, None, None)
        session.proxies, session.verify, session.cert = settings["proxies"], settings["verify"], settings["cert"]
        session.trust_env, session.auth, self._requests_session = False, requester.authenticator, session
        self._queue: "queue.Queue[Optional[Tuple[str, _Pending]]]" = queue.Queue()
        self._threads = threads
        for number in range(threads):
            threading.Thread(target=self._work, name=f"klarna-orders-{number}", daemon=True).start()

    def close(self) -> None:  # ends the threads once the fetches queued are done, drops the answers kept
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

    def _claim(self, order_id: str) -> Optional[_Pending]:  # None if the answer is kept; else the fetch, under way or new
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
                    self._kept.put(order_id, *pending.answer)
                del self._pending[order_id]
            pending.done.set()

    def _fetch(self, order_id: str) -> Tuple[int, bytes]:
        """The order's answer: (200, body), or (404, b"") for an order Klarna no longer returns."""
        url = self._prefix + quote(order_id, safe="") + self._suffix
        session = self._requests_session
        request = session.prepare_request(requests.Request("GET", url))  # the authenticator paces it (and may stop it)
        for attempt in range(1, int(self._handler.max_retries or 0) + 2):
            if attempt > 1:
                session.auth(request)
            try:
                outcome: Any = session.send(request, timeout=self._timeout)
                self._requester.authenticator.update_from_response(request, outcome)
            except requests.RequestException as error:
                error.request = error.request or request  # a body cut short carries none: the handler counts by it
                outcome = error
            resolution = self._handler.interpret_response(outcome)  # raises once the order fails for good
            if resolution.response_action == ResponseAction.SUCCESS:
                return 200, outcome.content
            if resolution.response_action == ResponseAction.IGNORE:
                LOGGER.warning(resolution.error_message or f"Klarna no longer returns the order at {url}: skipped.")
                return 404, b""
            time.sleep(self._handler.backoff_time(outcome, attempt_count=attempt) or 2 ** attempt)
        raise AssertionError("unreachable: the error handler raises at the last retry")


ORDER_FETCHERS: PerSync = PerSync()


class _Replay:
    """The slices one read produced, each with the router's state after it, and how the read ended."""

    def __init__(self) -> None:
        self.changed, self.slices, self.reading, self.done = threading.Condition(), [], False, False
        self.final: Any = None
        self.error: Optional[BaseException] = None


REPLAYS: PerSync = PerSync(dict)


@dataclass
class OneReadPerSync(WrappingPartitionRouter):
    """The slices of `underlying_partition_router` (the order-id batches), read once per sync for every stream that
    starts from the same state, each replayed with the state the router had after it. orders, captures and refunds
    each have a copy of the router, and the CDK's GroupingPartitionRouter reads its parent (the transactions, theirs
    the payouts) for each: three times the transactions' requests, and three times the CDK's work per parent record
    (a `dpath.get` per record and field, a cursor observe: 25 % of an orders sync's CPU, py-spy). The first stream to
    ask reads; the others follow its slices as they come. A stream whose saved state differs (added to the catalog
    later) reads on its own, so each reads and saves what the stock router gives it. A read that fails or stops
    early fails its followers too: none ends short."""

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        self._following, self._replayed = False, None  # replaying another stream's read; the state after its last slice

    def stream_slices(self) -> Iterable[StreamSlice]:
        self._replayed = self.underlying_partition_router.get_stream_state()
        # The state the read starts from is its parents' (a GroupingPartitionRouter has none before it reads).
        reader = getattr(self.underlying_partition_router, "underlying_partition_router", self.underlying_partition_router)
        key = json.dumps(reader.get_stream_state(), sort_keys=True, default=str)
        replay = REPLAYS.of(self.config).setdefault(key, _Replay())  # dict.setdefault is atomic: one _Replay per key
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
    """The records of one batch of order ids (a GroupingPartitionRouter slice, `{"order_id": [...]}`, `extra_fields`
    `{"payout_date": [...]}`): the orders, or their `items_field` items (captures, refunds), each with its order's
    order_id and the payout_date of the payout whose transaction named the order, through the record selector. An
    order Klarna no longer returns is, on `orders`, a deletion record (`order_id`, `payout_date`, `_ab_cdc_deleted_at`:
    Airbyte's marker, on which a deduplicated destination drops the row). Why not the CDK's SimpleRetriever: it sends
    a request per page; these streams read the same orders, once each, through the sync's OrderFetcher."""

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
            if order is None and self.items_field == "orders":
                order = {"order_id": order_id, "_ab_cdc_deleted_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
            items = [] if order is None else [order] if self.items_field == "orders" else order.get(self.items_field) or []
            for item in items:
                if isinstance(item, dict):
                    item.setdefault("order_id", order_id)
                    item["payout_date"] = payout_dates.get(order_id)
                    records.append(item)
        yield from self.record_selector.filter_and_transform(records, stream_state={}, records_schema=records_schema, stream_slice=stream_slice)


# ------------------------------------------------------------------------------------------------------ 8. States

@dataclass
class UsableState(StateMigration):
    """Fails the sync with one sentence naming the stream, the value and the fix when a saved state holds what the
    connector cannot use: a cursor (`payout_date`, `summary_month`, at any depth: the transactions' and orders' states
    carry their parents') that is not a date-time in the cursor's formats (`cursor_datetime_formats`, the manifest's),
    or a `payouts_read` list that is not a mapping of payment references to dates. Without it the CDK ends the read
    with "Something went wrong in the connector". Changes nothing: states of every earlier version pass."""

    stream: str = ""
    declarative_stream: Any = None  # the stream's model, which the CDK's factory hands a state migration
    cursor_datetime_formats: List[str] = field(default_factory=list)
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

    def _is_datetime(self, value: Any) -> bool:
        return isinstance(value, str) and parse_datetime(value, self.cursor_datetime_formats) is not None

    def _problem(self, node: Any, path: str) -> Optional[str]:
        if isinstance(node, list):
            return next(filter(None, (self._problem(item, f"{path}[{index}]") for index, item in enumerate(node))), None)
        if not isinstance(node, Mapping):
            return None
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key in ("payout_date", "summary_month") and not self._is_datetime(value):
                return f"{where} is {json.dumps(value)[:60]}, not a date-time"
            if key == UnreadPayoutsPartitionRouter.READ_KEY and not (
                isinstance(value, Mapping) and all(self._is_datetime(date) for date in value.values())
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
    """A `captures`/`refunds` state as the CDK reads it: `parent_state.orders.parent_state` (the shape 1.1.0-1.4.0
    wrote, when their parent was the orders stream) lifted to `parent_state`. The CDK gives a parent stream the child
    state's `parent_state[<parent name>]` before any router runs, so only a state migration can. It stays as long as
    states written by 1.1.0-1.4.0 may come back."""

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


# ----------------------------------------------------------------------------------------------- 9. Personal data

@dataclass
class RemoveFieldsUnlessConfigured(RecordTransformation):
    """RemoveFields, unless the config flag `keep_if` is on: how personal data stays out by default. The CDK's
    RemoveFields has a `condition`, but hands it to dpath.delete as `afilter`, and dpath 2.2 then deletes every leaf
    the filter accepts, pointed at or not: `condition: "{{ not config.include_personal_data }}"` empties the whole
    record (checked with CDK 7.39.1). Pointers are lists of keys; "*" stands for every item of a list (or value of an
    object). It can go when RemoveFields' condition selects among the pointed fields only."""

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
    if head == "*" and rest:
        for child in node if isinstance(node, list) else list(node.values()) if isinstance(node, dict) else []:
            _remove(child, rest)
    elif isinstance(node, dict) and head in node and rest:
        _remove(node[head], rest)
    elif isinstance(node, dict) and head in node:
        del node[head]
