"""Custom components of manifest.yaml: only what the manifest cannot say itself (or says too slowly).

This one file is what Airbyte's manifest-only runtime and the Connector Builder load beside the
manifest (as `source_declarative_manifest.components`): it imports only the standard library and the
CDK, and has no `from __future__ import annotations` (the runtime exec()s its text). It reads top-down:

Klarna's answers, parsed once
    `parsed_body`, `answer_problem`: each body is parsed once and its shape judged once.
Pages and errors
    `KlarnaItemsExtractor` (the rows of a page), `KlarnaOffsetPagination` (the next offset from
    Klarna's own numbers), `KlarnaErrorHandler` (what a filter cannot judge: an answer that is not
    Klarna's, a host that does not resolve, a refused certificate; `SyncFailures` makes a sync stop
    asking what will not change).
Requests
    `PacedBasicHttpAuthenticator`: Basic auth, paced to the merchant's shared rate limit
    (`RateLimitPacer`), with the Basic token registered as a secret and the config mistakes a user can
    fix (`config_problem`) reported in words.
Transactions
    `TransactionKeyAndPayout` (a stable primary key for Klarna's id-less transactions, and the
    payout's date), `UnreadPayoutsPartitionRouter` (payouts whose transactions an earlier sync read
    are not read again).
Payouts
    `EachKeyOncePerSync` (a payout a moving list repeats on the next page is emitted once).
Orders, captures and refunds
    `OrderIdBatches` (the order ids the transactions name, in batches; each payout's transactions
    read once for the three streams, `SharedParentRows`), `OrderBatchRequester` (their
    orders through the sync's `OrderStore`: each order requested once, whichever stream asks first;
    `DirectOrderRequests` sends each as the CDK's client would, without its per-request work),
    `NestedParentStateMigration` (states of 1.1.0), `RemoveFieldsUnlessConfigured` (personal data).

What is shared by every stream of one sync is kept per sync (`PerSync`); the two wrappers take the
request options of what they wrap (`RequestOptionsOfWrapped`). Each component says why the
manifest cannot, and each workaround for a CDK gap says when it can go.
"""

import datetime as dt
import hashlib
import logging
import re
import socket
import ssl
import threading
import time
import zlib
from collections import OrderedDict, deque
from datetime import datetime, timedelta, timezone
from dataclasses import InitVar, dataclass, field
from typing import Any, Callable, Deque, Dict, Generic, Iterable, List, Mapping, MutableMapping, Optional, Sequence, Set, Tuple, TypeVar, Union
from urllib.parse import parse_qs, urlparse, urlsplit

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
from airbyte_cdk.sources.declarative.partition_routers.substream_partition_router import SubstreamPartitionRouter
from airbyte_cdk.sources.declarative.requesters.error_handlers import DefaultErrorHandler
from airbyte_cdk.sources.declarative.requesters.http_requester import HttpRequester
from airbyte_cdk.sources.declarative.requesters.paginators.strategies.pagination_strategy import PaginationStrategy
from airbyte_cdk.sources.declarative.requesters.requester import Requester
from airbyte_cdk.sources.streams.http.error_handlers.response_models import ErrorResolution, ResponseAction
from airbyte_cdk.sources.declarative.transformations import RecordTransformation
from airbyte_cdk.sources.types import Config, Record, StreamSlice, StreamState
from airbyte_cdk.utils.airbyte_secrets_utils import add_to_secrets
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

# The fields of Klarna's Transaction schema (settlements OpenAPI), in a fixed order.


# ----------------------------------------------------------------------------- one object per sync

PerSyncObject = TypeVar("PerSyncObject")


class PerSync(Generic[PerSyncObject]):
    """One object per sync, for what every stream of a sync shares (the rate-limit pacer, what failed,
    the order store), made by `factory` (or the `make` of the first caller) on first use.

    Components hold no reference to their source, but every component of one sync is built with the
    source's one config object, so its identity names the sync. An entry holds its config, so the id()
    it is keyed by cannot be reused while the entry lives. A process runs one sync (tests run several,
    one after another): the `capacity` most recent syncs are kept, an older one's object is closed.
    """

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


# ----------------------------------------------------------------------------- a wrapped component's request options

class RequestOptionsOfWrapped:
    """The request options (params, headers, body) of the component a wrapper wraps, `_wrapped`: the
    CDK declares the four abstract on partition routers and requesters alike, and a wrapper of
    either (UnreadPayoutsPartitionRouter, OrderBatchRequester) adds none of its own. Listed first
    among the bases, so that its methods stand for the abstract ones."""

    @property
    def _wrapped(self) -> Any:
        raise NotImplementedError

    def get_request_params(self, **kwargs: Any) -> MutableMapping[str, Any]:
        return self._wrapped.get_request_params(**kwargs)

    def get_request_headers(self, **kwargs: Any) -> Mapping[str, Any]:
        return self._wrapped.get_request_headers(**kwargs)

    def get_request_body_data(self, **kwargs: Any) -> Union[Mapping[str, Any], str]:
        return self._wrapped.get_request_body_data(**kwargs)

    def get_request_body_json(self, **kwargs: Any) -> Mapping[str, Any]:
        return self._wrapped.get_request_body_json(**kwargs)


# ----------------------------------------------------------------------------- Klarna's answers, parsed once

_PARSED_BODY = "_klarna_parsed_body"

_UNPARSABLE = object()


def parsed_body(response: requests.Response) -> Any:
    """The response's JSON, parsed once with orjson and kept on the response object.

    The error handler checks a page's shape before the paginator and the extractor read it; each used
    to parse the body again (the CDK's HttpResponseFilter with the standard library's json, ~15 % of a
    transactions sync's CPU time). Returns `_UNPARSABLE` for a body that is not JSON.
    """
    body = response.__dict__.get(_PARSED_BODY)
    if body is None:
        try:
            body = orjson.loads(response.content)
        except (orjson.JSONDecodeError, TypeError):
            body = _UNPARSABLE
        response.__dict__[_PARSED_BODY] = body
    return body


EXPECTED_ANSWERS = {"page": "a page of {items}", "list": "a list of payout summaries", "order": "an order"}


def _requested_page_size(response: requests.Response) -> Optional[int]:
    query = parse_qs(urlsplit(str(getattr(response.request, "url", "") or response.url or "")).query)
    try:
        return int(query["size"][0])
    except (KeyError, IndexError, ValueError):
        return None


def answer_problem(body: Any, expect: str, items_field: Optional[str] = None, page_size: Optional[int] = None) -> Optional[str]:
    """Why a 2xx answer is not `expect` ("page", "list" or "order"), or None when it is.

    Klarna's OpenAPI makes only `pagination.count` required, so two shapes are read where their meaning
    is unambiguous: a page without a `pagination` block whose list is shorter than the page asked for
    (`page_size`) is the last page, and a null list with `pagination.count` 0 is an empty page. A full
    page without `pagination` (more may follow) and a null list with a count are problems.
    """
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


# ----------------------------------------------------------------------------- pages: their rows and the next offset

@dataclass
class KlarnaItemsExtractor(RecordExtractor):
    """The rows of a Klarna collection page, `{"<items_field>": [...], "pagination": {...}}`.

    The CDK's DpathExtractor finds a top-level field with `dpath.get`, which folds over every node of
    the body (every field of every row) to look for glob matches: py-spy put it at 11 % of a
    transactions sync's CPU time. A dict lookup gives the same list. The page's shape is vouched for
    before this runs (KlarnaErrorHandler, `answer_problem`). It can go when DpathExtractor looks a
    plain top-level key up directly.
    """

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

    The next offset is the offset this connector asked for plus the page's `count`, never Klarna's echo
    of it: `pagination.offset` is optional in Klarna's schema, and an answer without it would otherwise
    ask for the same page forever. The last page is the one where offset + count reaches `total`, or
    an empty one; without a `total` (also optional), a short page.
    """

    config: Config
    parameters: InitVar[Mapping[str, Any]]
    page_size: int = 500

    @property
    def initial_token(self) -> Optional[Any]:
        return None

    def next_page_token(
        self,
        response: requests.Response,
        last_page_size: int,
        last_record: Optional[Any],
        last_page_token_value: Optional[Any] = None,
        page_size_override: Optional[int] = None,
        stream_slice: Optional[StreamSlice] = None,
    ) -> Optional[Any]:
        body = parsed_body(response)
        pagination = body.get("pagination") if isinstance(body, dict) else None
        pagination = pagination if isinstance(pagination, dict) else {}
        count = pagination.get("count")
        # Without Klarna's count, the rows on the page (not `last_page_size`: that counts what the
        # record filter let through).
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


# ----------------------------------------------------------------------------- errors

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


# getaddrinfo's answers for a name that does not exist (EAI_AGAIN, a resolver that did not answer, is
# left to the retries).
_UNKNOWN_NAME_ERRNOS = tuple(getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, name))


def deterministic_transport_failure(exception: BaseException, url: str, config: Mapping[str, Any]) -> Optional[str]:
    """The sentence for a failure to reach Klarna that no retry changes (a host that does not resolve, a
    TLS certificate this machine refuses), or None for one a retry may cure."""
    host = urlsplit(url).hostname or url
    override = config.get("base_url_override") if isinstance(config, Mapping) else None
    for cause in _exception_chain(exception):
        if isinstance(cause, socket.gaierror) and cause.errno in _UNKNOWN_NAME_ERRNOS:
            where = (
                f"check base_url_override ({override})"
                if override
                else "check this machine's DNS and network path to Klarna (platform and region pick the host)"
            )
            return f"The host {host} of {url} does not resolve ({cause.strerror}): {where}."
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or str(cause)
            return (
                f"{host} presented a TLS certificate this machine does not trust ({reason}) for {url}. If a proxy between "
                f"this machine and {host} inspects TLS, add its CA certificate to the trust store (REQUESTS_CA_BUNDLE); "
                "otherwise check base_url_override."
            )
    return None


def endpoint_of(url: str) -> str:
    """scheme://host/path of a request, with an order's id replaced (one endpoint for every order)."""
    parts = urlsplit(url)
    path = parts.path
    if "/ordermanagement/v1/orders/" in path:
        path = path[: path.index("/ordermanagement/v1/orders/")] + "/ordermanagement/v1/orders/{order_id}"
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{path}"


class SyncFailures:
    """What one sync has learnt that asking again will not change, so it stops asking.

    An answer that will not change (a 404 or 400 from a settlements endpoint, rejected credentials, a
    host that does not resolve, a refused certificate, a non-Klarna answer that repeats) fails the
    partition that met it; every other partition of that endpoint (or, for the host's failures, of the
    host) would meet it again: one request per payout window or summary month, and for a repeating
    non-Klarna answer two backoffs each. `PacedBasicHttpAuthenticator` consults this before each
    request and fails it at once with the same error. Also counts, per URL, the non-Klarna 2xx answers
    in a row (bounded: a URL is forgotten once it answers properly)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failed: Dict[str, ErrorResolution] = {}
        self._foreign: Dict[str, int] = {}

    @staticmethod
    def _host_of(url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"

    def failure_for(self, url: str) -> Optional[ErrorResolution]:
        if not self._failed:
            return None
        with self._lock:
            return self._failed.get(self._host_of(url)) or self._failed.get(endpoint_of(url))

    def remember(self, url: str, resolution: ErrorResolution, whole_host: bool = False) -> None:
        with self._lock:
            self._failed.setdefault(self._host_of(url) if whole_host else endpoint_of(url), resolution)

    def foreign_answer(self, url: str) -> int:
        """Counts one more non-Klarna answer from `url`; returns how many came in a row."""
        with self._lock:
            count = self._foreign[url] = self._foreign.get(url, 0) + 1
            return count

    def proper_answer(self, url: str) -> None:
        if self._foreign:
            with self._lock:
                self._foreign.pop(url, None)


SYNC_FAILURES = PerSync(SyncFailures)


@dataclass
class KlarnaErrorHandler(DefaultErrorHandler):
    """The manifest's DefaultErrorHandler (its filters, retries and backoff), plus what a filter can only
    judge slowly or not at all:

    - A 2xx that is not what the endpoint answers (`expect`: a page of `parameters.items_field`, the
      summaries' list, or an order; see `answer_problem`) is retried, and fails the sync naming the URL
      on its third time in a row: stopping there would be a silent partial sync, and waiting through
      six backoffs for an answer that will not change (an HTML page from a proxy or captive portal)
      only delays the error. An answer that is not JSON at all is a config error (something other than
      Klarna answers); JSON of the wrong shape a system error to report.
    - A 400 about the page size or offset is the connector's fault, not the user's: a system error
      that asks to report it, instead of the config error "check start_date" other 400s get.
    - A host that does not resolve and a TLS certificate this machine refuses fail at once, as config
      errors naming the host and the fix, instead of being retried like a reset connection.
    - Every failure that will not change is remembered for the sync (`SyncFailures`), so the other
      partitions of that endpoint fail at once, with the same error, without a request.

    With `warn_once_on_ignore` (the order endpoint), a response the filters IGNORE (an order Klarna no
    longer returns) is logged as a warning, once per order and sync; the CDK logs it at INFO.
    """

    expect: str = "page"
    items_field: Optional[str] = None
    warn_once_on_ignore: bool = False

    FOREIGN_ANSWERS_BEFORE_FAILING = 3

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        super().__post_init__(parameters or {})
        self._items_field = self.items_field or (parameters or {}).get("items_field")

    def interpret_response(self, response_or_exception: Optional[Union[requests.Response, Exception]]) -> ErrorResolution:
        if isinstance(response_or_exception, requests.RequestException):
            return self._transport_failure(response_or_exception)
        if isinstance(response_or_exception, requests.Response):
            response = response_or_exception
            url = str(response.url or "").split("?", 1)[0]
            if 200 <= response.status_code < 300:
                problem = answer_problem(parsed_body(response), self.expect, self._items_field, _requested_page_size(response))
                if problem:
                    return self._foreign_answer(response, url, problem)
                SYNC_FAILURES.of(self.config).proper_answer(str(response.url))
            reasons = _paging_refused(response)
            if reasons:
                body = parsed_body(response)
                return self._remembered(url, ErrorResolution(
                    response_action=ResponseAction.FAIL,
                    failure_type=FailureType.system_error,
                    error_message=f"Klarna refused the page size or offset the connector asked {url} for (HTTP 400): "
                    f"{reasons} (correlation_id {body.get('correlation_id')}). No setting fixes this: report it "
                    "to the connector's maintainers with this correlation_id.",
                ))
        resolution = super().interpret_response(response_or_exception)
        if isinstance(response_or_exception, requests.Response):
            url = str(response_or_exception.url or "").split("?", 1)[0]
            if resolution.response_action == ResponseAction.FAIL:
                return self._remembered(url, resolution)
            if self.warn_once_on_ignore and resolution.response_action == ResponseAction.IGNORE and GONE_ORDERS.first_report(self.config, url):
                LOGGER.warning(resolution.error_message or f"Klarna no longer returns the order at {url} (HTTP 404): skipped.")
        return resolution

    def _remembered(self, url: str, resolution: ErrorResolution, whole_host: bool = False) -> ErrorResolution:
        SYNC_FAILURES.of(self.config).remember(url, resolution, whole_host)
        return resolution

    def _foreign_answer(self, response: requests.Response, url: str, problem: str) -> ErrorResolution:
        """A 2xx that is not Klarna's answer: retried, then a failure on its third time in a row."""
        times = SYNC_FAILURES.of(self.config).foreign_answer(str(response.url))
        what = EXPECTED_ANSWERS[self.expect].format(items=self._items_field)
        content_type = str(response.headers.get("Content-Type") or "").split(";", 1)[0].strip()
        if parsed_body(response) is _UNPARSABLE and "json" not in content_type.lower():
            page = "an HTML page" if "html" in content_type.lower() else f"a {content_type or 'typeless'} body"
            resolution = ErrorResolution(
                response_action=ResponseAction.RETRY,
                failure_type=FailureType.config_error,
                error_message=f"{url} answered {page} (Content-Type {content_type or 'none'}), not {what}, {times} times in a row: "
                "something between this machine and Klarna answers instead of Klarna (a proxy, a captive portal, a "
                f"firewall's login page), or base_url_override points elsewhere. Check base_url_override and the network "
                f"path to {urlsplit(url).hostname}.",
            )
        else:
            resolution = ErrorResolution(
                response_action=ResponseAction.RETRY,
                failure_type=FailureType.system_error,
                error_message=f"Klarna's answer to {url} was not {what} ({problem}), {times} times in a row. If base_url_override "
                "is set, check that it points at Klarna's (or Kustom's) API; otherwise report it to the connector's "
                "maintainers with this URL.",
            )
        if times < self.FOREIGN_ANSWERS_BEFORE_FAILING:
            return resolution
        return self._remembered(url, ErrorResolution(ResponseAction.FAIL, resolution.failure_type, resolution.error_message))

    def _endpoint(self) -> str:
        if self.expect == "page":
            return f"/settlements/v1/{self._items_field}"
        return {"list": "/settlements/v1/payouts/summary", "order": "/ordermanagement/v1/orders/{order_id}"}[self.expect]

    def _transport_failure(self, exception: requests.RequestException) -> ErrorResolution:
        """No answer at all. A host that does not resolve or a refused certificate fails at once (a
        config error, remembered for the whole host); a reset, a cut body or a timeout keeps the CDK's
        retries, worded with the URL: the CDK's own message names only the exception, and after the last
        retry the user would not know which of Klarna's endpoints failed."""
        request = getattr(exception, "request", None)
        full_url = str(getattr(request, "url", "") or "")
        # A body cut short fails while requests reads it, before it attaches the request: then the
        # endpoint this handler serves is named instead.
        url = full_url.split("?", 1)[0] or self._endpoint()
        deterministic = deterministic_transport_failure(exception, url, self.config)
        if deterministic and full_url:
            return self._remembered(full_url, ErrorResolution(ResponseAction.FAIL, FailureType.config_error, deterministic), whole_host=True)
        resolution = super().interpret_response(exception)
        return ErrorResolution(
            response_action=resolution.response_action,
            failure_type=resolution.failure_type or FailureType.transient_error,
            error_message=f"Klarna did not answer {url} ({type(exception).__name__}: {exception}) through every retry. "
            "Check the network path to Klarna (proxy, firewall) and retry the sync later.",
        )


# ----------------------------------------------------------------------------- requests: the merchant's rate limit, config mistakes, Basic auth

RATE_LIMIT_HEADER, REMAINING_HEADER, RESET_HEADER = "X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset"


def _header_number(response: requests.Response, name: str) -> Optional[float]:
    """The leading number of a rate-limit header (`200, 200;w=1` -> 200), or None."""
    raw = response.headers.get(name)
    if raw is None:
        return None
    head = str(raw).split(",", 1)[0].split(";", 1)[0].strip()
    try:
        return float(head)
    except ValueError:
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
    """Spends a Klarna merchant's rate limit politely: at most `cap` requests/s, and no more than the
    share of the limit the merchant's other traffic leaves, less a reserve.

    Klarna counts its limit per merchant, not per credential (the merchant's checkout, captures and
    refunds share it), and once the merchant is over it every one of its requests gets 429 until the
    window resets. So 429s are not how to find the limit. Every answer says where the merchant stands:
    `X-Ratelimit-Limit: 200, 200;w=1` (L requests per window of w seconds), `X-Ratelimit-Remaining`
    (R left in the current window) and `X-Ratelimit-Reset` (seconds to the window's end). From these:

    - the others' rate: between two answers of one window, Remaining fell by the requests of both; less
      the connector's own requests counted in between (those sent or those answered in between,
      whichever are more), over the time between, is the others' rate. A window
      begins where Remaining rises (by more than the requests in flight, which may be counted out of
      order). The highest of the estimates of the current window (once watched for a tenth of its
      length) and of the two before is used: a falling estimate is trusted late, a rising one at once,
      and one window seen only in part cannot make it burst;
    - the connector's rate is L x (1 - reserve) / w less the others' rate, within [floor, cap]: at each
      window's end the reserve is left for the merchant's own bursts, and with no other traffic the
      connector runs at its cap (whose default is L x (1 - reserve) itself). The floor (1 % of L)
      keeps a sync moving when the others leave nothing;
    - until a window has been estimated it runs at a tenth of the limit at most (slow start), so it
      never bursts into an unknown share; an answer without the headers (a proxy that drops them)
      puts it at its cap;
    - an answer with Remaining at half the reserve or less, or a 429, holds every request until the
      window resets (Retry-After, else X-Ratelimit-Reset).
    Requests are spaced evenly (1/rate apart), never sent in bursts. Thread safe: one pacer serves
    every stream of a sync.
    """

    SLOW_START_SHARE = 0.1
    FLOOR_SHARE = 0.01
    SETTLED_SHARE_OF_WINDOW = 0.1

    def __init__(
        self,
        assumed_limit: float,
        reserve: float,
        cap: Optional[float] = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._limit = float(assumed_limit)
        self._reserve = min(max(float(reserve), 0.0), 0.9)
        self._explicit_cap = float(cap) if cap else None
        self._window = 1.0
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._next_send = 0.0
        self._hold_until = 0.0
        self._slots: Deque[float] = deque()  # send times handed out and not yet reached
        self._sent = 0  # requests whose send time has come
        self._answered = 0
        # (time, Remaining, requests sent, answers read) at the current window's first answer; the latest Remaining.
        self._window_first: Optional[Tuple[float, float, int, int]] = None
        self._last_remaining: Optional[float] = None
        self._others_now: Optional[float] = None  # requests/s, this window
        self._others_before: Deque[float] = deque(maxlen=2)  # requests/s, the two windows before
        self._seen_headers = False
        self._rate = self._slow_start()  # requests per second

    @property
    def cap(self) -> float:
        return self._explicit_cap or self._limit * (1 - self._reserve)

    @property
    def rate(self) -> float:
        return self._rate

    def wait_turn(self) -> None:
        """Blocks until this request may go out."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_send, self._hold_until)
            self._next_send = slot + 1.0 / self._rate
            self._slots.append(slot)
        if slot > now:
            self._sleep(slot - now)

    def observe(self, response: requests.Response) -> None:
        """Learns from one answer (any status): its rate-limit headers, and a 429's wait."""
        limit = _header_number(response, RATE_LIMIT_HEADER)
        remaining = _header_number(response, REMAINING_HEADER)
        reset = _header_number(response, RESET_HEADER)
        retry_after = _header_number(response, "Retry-After")
        window = _window_seconds(response)
        with self._lock:
            now = self._clock()
            self._answered += 1
            if limit and limit > 0:
                self._limit = limit
            if window:
                self._window = window
            until_reset = max(reset if reset is not None else self._window, 0.0)
            if response.status_code == 429:
                self._hold_until = max(self._hold_until, now + (max(retry_after, 0.0) if retry_after is not None else until_reset))
            if remaining is None:
                self._rate = min(self._rate, self.cap) if self._seen_headers else self.cap
                return
            self._seen_headers = True
            if remaining <= self._limit * self._reserve / 2:
                self._hold_until = max(self._hold_until, now + until_reset)
            self._estimate_others(now, remaining)
            self._rate = self._share()

    def _estimate_others(self, now: float, remaining: float) -> None:
        while self._slots and self._slots[0] <= now:
            self._slots.popleft()
            self._sent += 1
        in_flight = max(0, self._sent - self._answered)
        rose = self._last_remaining is not None and remaining > self._last_remaining + in_flight + 1
        self._last_remaining = remaining
        # A new measurement starts where Remaining rose (a new window) and, since no window lasts longer
        # than w, at the latest w after the last start: an estimate never spans two windows unseen, and
        # one made of a window seen only in part is gone two windows later.
        if self._window_first is None or rose or now - self._window_first[0] >= self._window:
            if self._others_now is not None:
                self._others_before.append(self._others_now)
            self._window_first, self._others_now = (now, remaining, self._sent, self._answered), None
            return
        first_time, first_remaining, first_sent, first_answered = self._window_first
        if now - first_time < self._window * self.SETTLED_SHARE_OF_WINDOW:
            return
        # Remaining fell by the others' requests and by ours the server counted in between: at least
        # those whose send time came (a rising rate has more in flight than it has answers back) and at
        # least those answered (busy threads send late and in bunches, the server counts them as they
        # come, and the answers follow its count). Either alone took ours for the others' traffic:
        # estimates of 40 to 500 requests/s of others with none there, the sync at its floor for seconds.
        ours = max(self._sent - first_sent, self._answered - first_answered)
        self._others_now = max(0.0, (first_remaining - remaining - ours) / (now - first_time))

    def _slow_start(self) -> float:
        return min(self.cap, self._limit * self.SLOW_START_SHARE / self._window)

    def _share(self) -> float:
        estimates = list(self._others_before) + ([] if self._others_now is None else [self._others_now])
        if not estimates:
            return self._slow_start()
        share = self._limit * (1 - self._reserve) / self._window - max(estimates)
        return min(self.cap, max(share, max(1.0, self._limit * self.FLOOR_SHARE) / self._window))


RATE_LIMIT_PACERS: PerSync[RateLimitPacer] = PerSync()

REGIONS = ("eu", "na", "oc")

PLATFORMS = ("klarna", "kustom")

# Kustom's API keys say which environment they are for: kco_live_api_... or kco_test_api_... .
KUSTOM_KEY_PREFIX, KUSTOM_LIVE_KEY, KUSTOM_TEST_KEY = "kco_", "kco_live_", "kco_test_"

LOCAL_HOSTS = ("localhost", "127.0.0.1")


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
    start_date = config.get("start_date")
    if start_date:
        parsed = None
        for layout in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"):
            try:
                parsed = dt.datetime.strptime(str(start_date), layout).replace(tzinfo=dt.timezone.utc)
                break
            except ValueError:
                continue
        if parsed is None:
            return f"The start_date {start_date!r} is not a UTC date-time: write it as YYYY-MM-DDTHH:MM:SSZ, for example 2024-01-01T00:00:00Z."
        if parsed > now:
            return f"The start_date {start_date} lies in the future: set it to today or earlier, or leave it empty to sync the whole history."
    for name, low, high in (
        ("lookback_window_days", 0, 90),
        ("concurrency", 1, 30),
        ("max_requests_per_second", 1, 200),
        ("rate_limit_reserve_percent", 0, 90),
    ):
        value = config.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            return f"{name} must be a whole number from {low} to {high}; it is {value!r}."
    override = config.get("base_url_override")
    if override:
        parsed_url = urlparse(str(override))
        if parsed_url.scheme == "http" and parsed_url.hostname not in LOCAL_HOSTS:
            return (
                f"base_url_override {override!r} uses plain http, which would send the Klarna password unencrypted: "
                "use an https:// URL (plain http is only accepted for localhost and 127.0.0.1)."
            )
        if parsed_url.scheme not in ("http", "https") or not parsed_url.hostname:
            return f"base_url_override {override!r} is not a URL: write it as https://host[:port], or leave it empty to use Klarna's host for the region."
    return None


def _platform_problem(config: Mapping[str, Any], region: str) -> Optional[str]:
    """Platform mistakes: an unknown platform, a Klarna region with Kustom, and a Kustom API key used
    with the wrong platform or environment (only the key's public prefix is ever quoted)."""
    platform = config.get("platform") or "klarna"
    if platform not in PLATFORMS:
        return f"The platform {platform!r} is unknown: use klarna, or kustom if your API credentials come from the Kustom Portal."
    password = str(config.get("password") or "")
    if platform == "klarna":
        if password.startswith(KUSTOM_KEY_PREFIX):
            return "The password is a Kustom API key (it starts with kco_): set platform to kustom."
        return None
    if region != "eu":
        return (
            f"region {region!r} applies to Klarna only: Kustom serves every merchant from api.kustom.co, "
            "so remove region (or set it to eu) when platform is kustom."
        )
    playground = bool(config.get("playground"))
    if password.startswith(KUSTOM_TEST_KEY) and not playground:
        return "The password is a Kustom test API key (kco_test_...): switch playground on, or use a live key (kco_live_...) for production."
    if password.startswith(KUSTOM_LIVE_KEY) and playground:
        return "The password is a Kustom live API key (kco_live_...): switch playground off, or use a test key (kco_test_...) for the playground."
    return None


@dataclass
class PacedBasicHttpAuthenticator(BasicHttpAuthenticator):
    """The manifest's HTTP Basic auth, with every request paced to the merchant's rate limit
    (`RateLimitPacer`) and the Basic token registered as a secret.

    Why the authenticator: it is the one component the CDK's HTTP client consults before every attempt
    (retries included: `HttpClient._send` re-applies the session's auth) and tells about every answer
    it receives (`update_from_response`, the CDK's ResponseAwareAuthenticator protocol). The manifest's
    `api_budget` can only cap a rate; it cannot read Klarna's X-Ratelimit-Remaining. The pacing can
    move to the api_budget when its policies pace by a Remaining header (and leave a reserve).

    The CDK masks the password in its output, not base64(username:password), which a debug log of the
    request headers shows: registering the token here masks it on every runtime, the manifest-only one
    included.
    """

    assumed_limit: Union[InterpolatedString, str, int] = 200
    reserve_percent: Union[InterpolatedString, str, int] = 20
    max_requests_per_second: Union[InterpolatedString, str, int, None] = None

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        super().__post_init__(parameters)
        # The config mistakes a user can fix, in one sentence, on every runtime: the authenticator is the
        # one component every stream builds with the sync's config before its first request. (The
        # manifest's spec validations cannot: the CDK builds them with an empty config and hands them
        # one value at a time; the check moves there when they get the sync's config. source-klarna's
        # entrypoint runs the same checks before the spec's patterns.)
        problem = config_problem(self.config) if self.config else None
        if problem:
            raise AirbyteTracedException(message=problem, internal_message=problem, failure_type=FailureType.config_error)

        def number(value: Any) -> Optional[float]:
            """A setting as a number; None when it evaluates to nothing (no explicit cap)."""
            text = "" if value is None else str(InterpolatedString.create(str(value), parameters=parameters or {}).eval(self.config))
            return float(text) if text.strip() not in ("", "None") else None

        limit, reserve, cap = number(self.assumed_limit), number(self.reserve_percent), number(self.max_requests_per_second)
        self._pacer = RATE_LIMIT_PACERS.of(
            self.config,
            lambda: RateLimitPacer(assumed_limit=limit or 200, reserve=(20 if reserve is None else reserve) / 100, cap=cap),
        )
        self._token_registered = False
        self._token: Optional[str] = None

    @property
    def token(self) -> str:
        # The username and password do not change within a sync: the CDK's BasicHttpAuthenticator
        # renders both through Jinja twice per request (about 5 % of an order's CPU); once is enough.
        if self._token is None:
            self._token = super().token
        return self._token

    @property
    def pacer(self) -> RateLimitPacer:
        return self._pacer

    def __call__(self, request: requests.PreparedRequest) -> Any:
        if not self._token_registered:
            # Registered when first used, after the entrypoint has set up its secret list (which it
            # replaces with the spec's secrets once it has the config).
            add_to_secrets(self.token.split(" ", 1)[-1])
            self._token_registered = True
        failure = SYNC_FAILURES.of(self.config).failure_for(str(request.url))
        if failure is not None:
            # The same answer met this endpoint (or host) earlier in the sync and will not change.
            raise AirbyteTracedException(message=failure.error_message, internal_message=failure.error_message, failure_type=failure.failure_type)
        if request.url != replayed_url():  # a replayed answer (DirectOrderRequests) was paced when sent
            self._pacer.wait_turn()
        return super().__call__(request)

    def update_from_response(self, request: requests.PreparedRequest, response: requests.Response) -> None:
        if not response.__dict__.get(_OBSERVED):
            self._pacer.observe(response)


# ----------------------------------------------------------------------------- transactions

# The fields of Klarna's Transaction schema (settlements OpenAPI), in a fixed order.
TRANSACTION_KEY_FIELDS = (
    "amount",
    "capture_id",
    "merchant_reference1",
    "sale_date",
    "type",
    "capture_date",
    "payment_reference",
    "order_id",
    "payout",
    "refund_id",
    "short_order_id",
    "merchant_reference2",
    "currency_code",
    "purchase_country",
    "vat_rate",
    "vat_amount",
    "shipping_country",
    "initial_payment_method_type",
    "initial_number_of_installments",
    "initial_payment_method_monthly_downpayments",
    "merchant_capture_reference",
    "merchant_refund_reference",
    "detailed_type",
    "tax_in_currency_of_registration_country",
    "currency_code_of_registration_country",
    "klarna_comment",
    "reversal_reference",
)


def transaction_fingerprint(record: Mapping[str, Any]) -> str:
    """A short hash of the row's Klarna fields (absent and null hash alike)."""
    values = list(map(record.get, TRANSACTION_KEY_FIELDS))
    return hashlib.sha1(orjson.dumps(values)).hexdigest()[:20]


class OccurrenceCounter:
    """Counts how often each fingerprint was seen in each payout partition being read.

    Counts belong to one partition object (the slice the CDK passes with every page of that
    partition), not to the payment_reference: should the CDK read a payout twice in one sync, the
    second read numbers its identical rows from 0 again and so repeats the first read's keys. A
    partition's pages are read one after another by one worker and at most `concurrency` (<= 30)
    partitions are read at once, so keeping the counters of the `capacity` most recent partitions is
    exact while bounding memory on accounts with millions of transactions. Each entry holds its
    slice, so the id() it is keyed by cannot be reused while the entry lives.
    """

    def __init__(self, capacity: int = 512) -> None:
        self._capacity = capacity
        self._counts: "OrderedDict[int, Tuple[Any, Dict[str, int]]]" = OrderedDict()
        self._lock = threading.Lock()
        # Each thread's current partition and its counts: the rows of a page come one after another
        # from one thread, so the shared table (and its lock) is consulted once per partition switch.
        self._current = threading.local()

    def _counts_of(self, partition: Any) -> Dict[str, int]:
        with self._lock:
            entry = self._counts.get(id(partition))
            if entry is None:
                entry = self._counts[id(partition)] = (partition, {})
                if len(self._counts) > self._capacity:
                    self._counts.popitem(last=False)
            return entry[1]

    def next_occurrence(self, partition: Any, fingerprint: str) -> int:
        current = self._current
        if getattr(current, "partition", None) is partition:
            counts = current.counts
        else:
            counts = self._counts_of(partition)
            current.partition, current.counts = partition, counts
        occurrence = counts.get(fingerprint, 0)
        counts[fingerprint] = occurrence + 1
        return occurrence


@dataclass
class TransactionKeyAndPayout(RecordTransformation):
    """Adds `transaction_key`, and `payment_reference`/`payout_date` from the payout partition."""

    parameters: InitVar[Mapping[str, Any]] = None
    counter: OccurrenceCounter = field(default_factory=OccurrenceCounter)

    def transform(
        self,
        record: Dict[str, Any],
        config: Optional[Config] = None,
        stream_state: Optional[StreamState] = None,
        stream_slice: Optional[StreamSlice] = None,
    ) -> None:
        payment_reference = None
        payout_date = None
        if stream_slice is not None:
            payment_reference = stream_slice.partition.get("payment_reference")
            payout_date = stream_slice.extra_fields.get("payout_date")
        payment_reference = payment_reference or record.get("payment_reference")
        if not record.get("payment_reference"):
            record["payment_reference"] = payment_reference
        if payout_date is not None:
            record["payout_date"] = payout_date
        fingerprint = transaction_fingerprint(record)
        occurrence = self.counter.next_occurrence(stream_slice, fingerprint)
        record["transaction_key"] = f"{payment_reference}:{fingerprint}:{occurrence}"


def _instant(payout_date: Any) -> Optional[datetime]:
    """A payout_date as an aware datetime (None if it is not a date-time)."""
    try:
        moment = datetime.fromisoformat(str(payout_date).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass
class UnreadPayoutsPartitionRouter(RequestOptionsOfWrapped, PartitionRouter):
    """One partition per payout whose transactions no earlier sync has read: the payouts router of
    `transactions`, minus the payouts the previous sync already read.

    An incremental sync re-reads the payouts of the lookback window to catch payouts Klarna books late,
    and a plain SubstreamPartitionRouter would then read the transactions of every one of them again
    (two thirds of an incremental sync's requests after a day's growth). A payout's transactions never
    change once it is paid out, so a payout read before is skipped. Which payouts were read is kept in
    the parent state the CDK already carries for this stream, next to the payouts cursor:

        "parent_state": {"payouts": {"payout_date": "...", "payouts_read": {"<payment_reference>": "<payout_date>", ...}}}

    The CDK keeps such extra keys of a sequential cursor state (its `legacy` part) and commits each
    snapshot of this router's state only once every partition generated before it is closed, so a
    payout enters the saved list only after all its transactions were emitted: skipping never loses a
    row. The list holds the payouts dated within `remember_days` of the newest one seen (in this sync or
    on the list it started from), i.e. those the next sync's lookback window can bring back; a payout
    dropped from it too early is merely read again.
    A late payout is not on the list, so it is read. Without a saved list (first sync, reset, a state
    from an older version) every payout is read.
    """

    underlying_partition_router: SubstreamPartitionRouter
    config: Config
    parameters: InitVar[Mapping[str, Any]]
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
                self._read = {
                    ref: date for ref, date in self._read.items()
                    if (_instant(date) or moment) >= horizon
                }

    def stream_slices(self) -> Iterable[StreamSlice]:
        # Read before the first parent page moves the parent cursor (and its state) on. The list goes
        # on into this sync's state: should this sync fail before its payouts are all read, the state
        # it leaves still names the payouts earlier syncs read.
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
            # On the list before the slice goes out: the CDK's state snapshot taken after this slice
            # includes the payout, and is committed only once this slice's partition is closed.
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

    @property
    def _wrapped(self) -> PartitionRouter:
        return self.underlying_partition_router


# ----------------------------------------------------------------------------- payouts

@dataclass
class EachKeyOncePerSync(RecordFilter):
    """Lets a record through the first time its `key` is seen in this sync, drops repeats.

    Klarna lists a window's payouts newest first and pages by offset: a payout Klarna adds while the
    connector is between two pages of a window shifts the list, and the last payouts of page 1 come
    again at the top of page 2. Nothing is skipped (the shift is towards later pages), but the sync
    would emit those payouts twice. Payouts are few (about one per currency and day), so the keys of
    one sync fit in memory; the filter belongs to one stream instance, shared by its concurrent
    windows. The payouts Klarna added meanwhile arrive with the next sync (the lookback re-reads them).
    """

    key: str = ""

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        super().__post_init__(parameters)
        self._seen: Set[Any] = set()
        self._lock = threading.Lock()

    def filter_records(
        self,
        records: Iterable[Mapping[str, Any]],
        stream_state: StreamState,
        stream_slice: Optional[StreamSlice] = None,
        next_page_token: Optional[Mapping[str, Any]] = None,
    ) -> Iterable[Mapping[str, Any]]:
        for record in records:
            value = record.get(self.key)
            if value is None:
                yield record  # nothing to recognise it by: the schema check downstream sees it
                continue
            with self._lock:
                first = value not in self._seen
                self._seen.add(value)
            if first:
                yield record


# ----------------------------------------------------------------------------- orders, captures and refunds

LOGGER = logging.getLogger("airbyte.source_klarna")


class GoneOrders:
    """The order URLs already reported gone (HTTP 404) in each sync: one warning per gone order and
    sync, whichever stream's request met the 404."""

    def __init__(self) -> None:
        self._reported = PerSync(set)
        self._lock = threading.Lock()

    def first_report(self, config: Any, url: str) -> bool:
        reported = self._reported.of(config)
        with self._lock:
            if url in reported:
                return False
            reported.add(url)
            return True


GONE_ORDERS = GoneOrders()


def is_order_answer_to_keep(response: requests.Response) -> bool:
    """An order (what KlarnaErrorHandler accepts as one), or Klarna's 404 saying the order does not
    exist: the answers the order store keeps for the other streams. The body parsed here stays on the
    response for the extractor."""
    body = parsed_body(response)
    if response.status_code == 404:
        return isinstance(body, dict) and body.get("error_code") == "NO_SUCH_ORDER"
    return response.status_code == 200 and answer_problem(body, "order") is None


class SpillingAnswers:
    """order_id -> (status, body, readers so far): the most recent answers in memory, up to
    `memory_bytes` of bodies; older ones in a private temporary SQLite database (SQLite's empty file
    name: its pages stay in a page cache of `page_cache_kb` and spill to a file SQLite deletes on
    close), zlib-compressed (4 KB -> 1.1 KB). So memory stays flat however many orders wait for a
    reader (a stream that is not selected, or one that runs after the others), and a sync whose three
    streams read side by side never touches the database. Not thread-safe: OrderStore's lock guards it.
    """

    def __init__(self, memory_bytes: int = 8 << 20, page_cache_kb: int = 8192) -> None:
        self._memory_bytes = memory_bytes
        self._page_cache_kb = page_cache_kb
        self._recent: "OrderedDict[str, List[Any]]" = OrderedDict()
        self._recent_bytes = 0
        self._db: Any = None
        self.spilled = 0  # answers written to the database so far

    def put(self, order_id: str, status: int, body: bytes, readers: int) -> None:
        self._recent[order_id] = [status, body, readers]
        self._recent_bytes += len(body)
        while self._recent_bytes > self._memory_bytes and len(self._recent) > 1:
            spilled_id, (spilled_status, spilled_body, spilled_readers) = self._recent.popitem(last=False)
            self._recent_bytes -= len(spilled_body)
            self._database().execute(
                "INSERT OR REPLACE INTO answer VALUES (?, ?, ?, ?)",
                (spilled_id, spilled_status, zlib.compress(spilled_body, 1), spilled_readers),
            )
            self.spilled += 1

    def __contains__(self, order_id: object) -> bool:
        if order_id in self._recent:
            return True
        if not self.spilled:
            return False
        return self._database().execute("SELECT 1 FROM answer WHERE order_id = ?", (order_id,)).fetchone() is not None

    def take(self, order_id: str, reader: int, every_reader: int) -> Optional[Tuple[int, bytes]]:
        """The answer (status, body), now also read by `reader`; dropped once `every_reader` has."""
        entry = self._recent.get(order_id)
        if entry is not None:
            entry[2] |= reader
            if entry[2] == every_reader:
                del self._recent[order_id]
                self._recent_bytes -= len(entry[1])
            return entry[0], entry[1]
        if not self.spilled:
            return None
        db = self._database()
        row = db.execute("SELECT status, body, read_by FROM answer WHERE order_id = ?", (order_id,)).fetchone()
        if row is None:
            return None
        status, body, readers = row
        readers |= reader
        if readers == every_reader:
            db.execute("DELETE FROM answer WHERE order_id = ?", (order_id,))
        else:
            db.execute("UPDATE answer SET read_by = ? WHERE order_id = ?", (readers, order_id))
        return status, zlib.decompress(body)

    def _database(self) -> Any:
        if self._db is None:
            import sqlite3  # here: most syncs never spill

            self._db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
            for pragma in ("journal_mode = OFF", "synchronous = OFF", f"cache_size = -{self._page_cache_kb}"):
                self._db.execute(f"PRAGMA {pragma}")
            self._db.execute(
                "CREATE TABLE answer (order_id TEXT PRIMARY KEY, status INTEGER, body BLOB, read_by INTEGER) WITHOUT ROWID"
            )
        return self._db

    def close(self) -> None:
        self._recent.clear()
        self._recent_bytes = 0
        if self._db is not None:
            self._db.close()
            self._db = None


class OrderStore:
    """Klarna's answer for each order one of `orders`, `captures` and `refunds` fetched in this sync,
    kept until all three have read it: the reason each order is requested once per sync, whatever the
    catalog selects and whichever stream gets to an order first.

    Single-flight: the first reader of an order fetches it; a reader that comes while that request is
    under way takes the batch's other orders first and waits only at the end (`answers`). A fetch waits
    on nothing but Klarna (and the rate limit), so every wait ends; a fetch that fails is forgotten and
    the next reader asks again. Only orders and Klarna's 404 NO_SUCH_ORDER are kept (a gone order is
    not asked for twice); an answer the error handler retried never gets here. Kept in SpillingAnswers.
    """

    READERS = {"orders": 1, "captures": 2, "refunds": 4}
    EVERY_READER = 7

    def __init__(self, answers: Optional[SpillingAnswers] = None) -> None:
        self._lock = threading.Lock()
        self._fetching: Dict[str, threading.Event] = {}
        self.kept = answers or SpillingAnswers()

    def close(self) -> None:
        with self._lock:
            self.kept.close()

    def _take_or_claim(self, order_id: str, reader: int) -> Any:
        """The kept answer (status, body); else the Event of the fetch under way; else None: the
        order is now this caller's to fetch."""
        with self._lock:
            answer = self.kept.take(order_id, reader, self.EVERY_READER)
            if answer is not None:
                return answer
            fetching = self._fetching.get(order_id)
            if fetching is not None:
                return fetching
            self._fetching[order_id] = threading.Event()
            return None

    def _settle(self, order_id: str, reader: int, kept: Optional[Tuple[int, bytes]]) -> None:
        """Ends this caller's fetch of the order, keeping its answer for the other readers."""
        with self._lock:
            if kept is not None and reader != self.EVERY_READER:
                self.kept.put(order_id, kept[0], kept[1], reader)
            self._fetching.pop(order_id).set()

    def _fetch(self, order_id: str, reader: int, fetch: Callable[[str], Optional[requests.Response]]) -> Any:
        kept = None
        try:
            response = fetch(order_id)
            if response is not None and is_order_answer_to_keep(response):
                kept = (response.status_code, response.content if response.status_code == 200 else b"")
        finally:
            self._settle(order_id, reader, kept)
        return parsed_body(response) if kept is not None and kept[0] == 200 else None

    def prefetch(self, order_id: str, fetch: Callable[[str], Optional[requests.Response]]) -> bool:
        """Fetches the order for readers to come, unless it is kept or being fetched already; whether
        it did. (No reader has read it yet: it is kept until all three have.)"""
        with self._lock:
            if order_id in self._fetching or order_id in self.kept:
                return False
            self._fetching[order_id] = threading.Event()
        self._fetch(order_id, 0, fetch)
        return True

    def answers(
        self, order_ids: Iterable[str], reader_name: str, fetch: Callable[[str], Optional[requests.Response]]
    ) -> Iterable[Tuple[str, Any]]:
        """(order_id, the order as a dict, or None for an order Klarna no longer returns) for each
        order, fetched with `fetch(order_id)` by whichever reader gets to it first."""
        reader = self.READERS[reader_name]
        pending = list(order_ids)
        while pending:
            waiting: List[Tuple[str, threading.Event]] = []
            for order_id in pending:
                got = self._take_or_claim(order_id, reader)
                if got is None:
                    yield order_id, self._fetch(order_id, reader, fetch)
                elif isinstance(got, threading.Event):
                    waiting.append((order_id, got))
                else:
                    status, body = got
                    yield order_id, orjson.loads(body) if status == 200 else None
            if waiting:
                waiting[0][1].wait()  # set by the fetcher when its request ends, answered or failed
            pending = [order_id for order_id, _ in waiting]


ORDER_STORES = PerSync(OrderStore)


class BatchesAhead:
    """How many batches each of `orders`, `captures` and `refunds` has made but not yet read, so that its
    partition generator waits while `limit` are outstanding, and what it can do meanwhile.

    The CDK generates a stream's partitions as fast as their parent can be read (up to 10,000 pending
    partitions), and keeps each generated partition, its slice, its cursor and its future until it is
    read: memory that grows with the orders. Kept `limit` batches ahead of the reads, the three streams
    also stay close to one another, so the order store holds few orders at a time. A generator thread
    is one of the sync's `concurrency` workers: while it would wait, it fetches orders of its newest
    batches (`prefetch`: they are read last), which the readers then find in the store, so that every
    worker keeps a request in flight. A generator that has waited `patience_s` without a batch being
    read stops waiting for the rest of the sync (the reads stalled, e.g. Klarna asked to retry after
    minutes, or the sync is failing and must be able to end).
    """

    LIMIT = 32

    def __init__(self, limit: int = LIMIT, patience_s: float = 30.0) -> None:
        self.limit = limit
        self.patience_s = patience_s
        self._outstanding: Dict[str, int] = {}
        self._reading: Dict[str, int] = {}
        self._unbounded: Set[str] = set()
        self._changed = threading.Condition()

    def _may_make(self, stream: str) -> bool:
        # With no batch of the stream being read, waiting could wait for nothing: with one worker
        # (concurrency 1) the generator is the only thread, and reads start only once it is done.
        return (
            stream in self._unbounded
            or self._outstanding.get(stream, 0) < self.limit
            or not self._reading.get(stream, 0)
        )

    def wait_to_make(self, stream: str, prefetch: Callable[[], bool] = lambda: False) -> None:
        while True:
            with self._changed:
                if self._may_make(stream):
                    self._outstanding[stream] = self._outstanding.get(stream, 0) + 1
                    return
            if prefetch():
                continue
            with self._changed:
                if not self._may_make(stream) and not self._changed.wait(self.patience_s):
                    self._unbounded.add(stream)

    def reading(self, stream: str) -> None:
        with self._changed:
            self._reading[stream] = self._reading.get(stream, 0) + 1

    def read(self, stream: str) -> None:
        with self._changed:
            self._outstanding[stream] = max(0, self._outstanding.get(stream, 0) - 1)
            self._reading[stream] = max(0, self._reading.get(stream, 0) - 1)
            self._changed.notify_all()


BATCHES_AHEAD = PerSync(BatchesAhead)

# Each stream's way of fetching one order (OrderBatchRequester._fetch_one), for its generator's prefetch.
ORDER_FETCHERS = PerSync(dict)


class _ParsedPage(requests.Response):
    """A page made here, its body already parsed (parsed_body): the extractor reads that, and the bytes
    are made only if something asks for them (serialising every page was about 3 % of an order's CPU)."""

    @property
    def content(self) -> bytes:  # type: ignore[override]
        if self._content is False:
            self._content = orjson.dumps(self.__dict__[_PARSED_BODY])
        return self._content


def _answer_page(items_field: str, records: List[Dict[str, Any]], url: str) -> requests.Response:
    """A 200 whose body is `{items_field: records}`, already parsed (parsed_body) for the extractor."""
    response = _ParsedPage()
    response.status_code = 200
    response.url = url
    response.__dict__[_PARSED_BODY] = {items_field: records}
    return response


_ORDER_ID_PLACEHOLDER = "\x00order_id\x00"


# The answer a direct order request got, for the CDK's client to take as its first attempt (see
# DirectOrderRequests): (url, response or exception), on the thread that sends it.
_REPLAYED = threading.local()
# Set on an answer the pacer has already seen, so that its replay is not counted again.
_OBSERVED = "_klarna_observed_by_pacer"


def replayed_url() -> Optional[str]:
    """The URL whose answer this thread is about to hand to the CDK's client, if any."""
    primed = getattr(_REPLAYED, "answer", None)
    return primed[0] if primed is not None else None


def replay_on(session: requests.Session) -> None:
    """Makes `session.send` answer the request this thread primed (`_REPLAYED`) with the answer already
    received, once; every other request is sent as before. (On the session object, not a transport
    adapter: requests' adapter lookup is what test doubles such as requests-mock replace.)"""
    if session.__dict__.get("_klarna_replaying"):
        return
    send = session.send

    def send_or_replay(request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        primed = getattr(_REPLAYED, "answer", None)
        if primed is not None and primed[0] == request.url:
            _REPLAYED.answer = None
            if isinstance(primed[1], BaseException):
                raise primed[1]
            return primed[1]
        return send(request, **kwargs)

    session.send = send_or_replay  # type: ignore[method-assign]
    session.__dict__["_klarna_replaying"] = True


# requests' own Session.send: when something else stands in its place (a test double such as
# requests-mock, a tracing instrumentation), direct requests go through it too.
_REQUESTS_SESSION_SEND = requests.Session.send


class OneHostAdapter(requests.adapters.HTTPAdapter):
    """The session's transport adapter (its connection pools, retries and TLS settings, shared) for
    requests to one host with the same TLS and proxy settings, doing once what HTTPAdapter does for
    every request: look up the connection pool (a pool key built from the URL and the TLS context)
    and check the CA bundle on disk. HTTPAdapter.send itself, its errors included, is requests' own."""

    _SAME_AS_HTTP_ADAPTER = ("send", "get_connection_with_tls_context", "cert_verify", "request_url", "build_response")

    def __init__(self, adapter: requests.adapters.HTTPAdapter) -> None:  # shares `adapter`'s state, builds none
        self.__dict__.update(adapter.__dict__)
        self._pool: Any = None
        self._verified: Any = None

    @classmethod
    def can_stand_for(cls, adapter: Any) -> bool:
        """Whether `adapter` sends as requests' HTTPAdapter does (a subclass may send otherwise)."""
        return isinstance(adapter, requests.adapters.HTTPAdapter) and all(
            getattr(type(adapter), name) is getattr(requests.adapters.HTTPAdapter, name) for name in cls._SAME_AS_HTTP_ADAPTER
        )

    def get_connection_with_tls_context(self, request: requests.PreparedRequest, verify: Any, proxies: Any = None, cert: Any = None) -> Any:
        # Looked up on the first request: the CDK does not close a session within a sync.
        if self._pool is None:
            self._pool = super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        return self._pool

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        if conn is not self._verified:
            super().cert_verify(conn, url, verify, cert)
            self._verified = conn


class DirectOrderRequests:
    """GET of one order the way the CDK's client sends it, at less than half its CPU: the request made
    from one prepared at start (the same URL, headers, proxies, TLS settings and timeout, through the
    same session, adapter and pools, paced and signed by the same authenticator), sent once. An order
    (a 200 whose body is an order) is the answer.

    Why: every order is a request of its own, and the CDK's client spends about 2 ms of CPU on each
    besides the exchange (requests' preparation, two scans of the environment for proxies, three
    backoff decorators built per call, the url_base's Jinja, the request options merged per request);
    at Klarna's 200 requests/s that is more than this machine's core. The exchange itself goes through
    the session's adapter (OneHostAdapter: the pool looked up once) rather than Session.send, unless
    something stands in for Session.send (a test double, a tracing instrumentation).

    Anything else (a 404, a 429, a 5xx, an answer that is not an order, no answer at all) goes to the
    CDK's client with this answer as its first attempt (`replay_on` the client's session): its error
    handler, warnings, retries, backoff and messages from there on, exactly as if it had sent the
    request itself, and no second request. The pacer sees each answer once. A redirect, which the
    session would have followed, is left to the client to ask again.

    `for_requester` returns None, and every order goes through the CDK's client, when the requester
    is one this cannot reproduce (another method or authenticator, request options that depend on
    the order, a response filter that could act on a 200, a cached session); and so does `fetch` for
    an order id that is not plain (requests would quote it), in the Connector Builder (which logs each
    request) and with DEBUG logs (which the client writes for each request).
    """

    _PLAIN_ID = re.compile(r"[A-Za-z0-9._~-]+\Z")
    _ID_TOKEN = "KLARNAORDERID0123456789"

    def __init__(self, requester: HttpRequester, client: Any, url: str, prepared: requests.PreparedRequest, send_kwargs: Mapping[str, Any]) -> None:
        self._config = requester.config
        self._session = client._session
        self._auth = self._session.auth
        self._logger = client._logger
        self._url_head, self._url_tail = url.split(self._ID_TOKEN)
        self._headers = prepared.headers
        self._send_kwargs = dict(send_kwargs)
        # What the session hands its adapter: the same settings, the (connect, read) timeout made once.
        self._adapter_kwargs = dict(send_kwargs)
        timeout = self._adapter_kwargs.get("timeout")
        if isinstance(timeout, tuple) and len(timeout) == 2:
            self._adapter_kwargs["timeout"] = requests.adapters.TimeoutSauce(connect=timeout[0], read=timeout[1])
        self._adapter: Any = None
        self._one_host: Optional[OneHostAdapter] = None

    @classmethod
    def for_requester(cls, requester: Any, path_template: str) -> Optional["DirectOrderRequests"]:
        client = getattr(requester, "_http_client", None)
        session = getattr(client, "_session", None)
        if (
            not isinstance(requester, HttpRequester)
            or not path_template
            or session is None
            or requester.get_method().value != "GET"
            or requester.stream_response
            or not isinstance(session.auth, PacedBasicHttpAuthenticator)
            or session.auth is not requester.get_authenticator()
            or not isinstance(requester.error_handler, KlarnaErrorHandler)
            or requester.error_handler.expect != "order"
            or any(_may_act_on_success(f) for f in requester.error_handler.response_filters or [])
        ):
            return None
        path = path_template.replace(_ORDER_ID_PLACEHOLDER, cls._ID_TOKEN)
        token_slice = StreamSlice(partition={"order_id": cls._ID_TOKEN}, cursor_slice={})
        options = {
            "params": requester._request_params(None, token_slice, None),
            "headers": requester._request_headers(None, token_slice, None),
            "json": requester._request_body_json(None, token_slice, None),
            "data": requester._request_body_data(None, token_slice, None),
        }
        if options["params"] or options["json"] or options["data"] or cls._ID_TOKEN in str(options["headers"]):
            return None
        url = requester._get_url(path=path, stream_state=None, stream_slice=token_slice, next_page_token=None)
        # Prepared as the CDK's client prepares each request (a no-op auth: pacing is per request).
        prepared = session.prepare_request(requests.Request("GET", url, headers=options["headers"], auth=lambda r: r))
        if str(prepared.url).count(cls._ID_TOKEN) != 1 or prepared.body is not None:
            return None
        send_kwargs: Dict[str, Any] = {"stream": False}
        send_kwargs.update(session.merge_environment_settings(url=prepared.url, proxies={}, stream=False, verify=None, cert=None))
        if client._request_timeout is not None:
            send_kwargs["timeout"] = client._request_timeout
        replay_on(session)
        return cls(requester, client, str(prepared.url), prepared, send_kwargs)

    def _send(self, request: requests.PreparedRequest) -> requests.Response:
        """What the client's session does with a request (its API budget, its transport adapter, the
        whole body read), less what an order's GET has no use for: Session.send's hooks, its cookie
        jar (a Set-Cookie from the orders endpoint is not sent back) and the redirects it follows
        (`fetch` leaves a redirect to the client). With the pool looked up once (OneHostAdapter) an
        exchange costs half the CPU of the session's."""
        if requests.Session.send is not _REQUESTS_SESSION_SEND:
            return self._session.send(request, **self._send_kwargs)
        adapter = self._session.get_adapter(url=str(request.url))
        if adapter is not self._adapter:
            self._adapter, self._one_host = adapter, OneHostAdapter(adapter) if OneHostAdapter.can_stand_for(adapter) else None
        if self._one_host is None:
            return self._session.send(request, **self._send_kwargs)
        budget = getattr(self._session, "_api_budget", None)
        if budget is not None:
            budget.acquire_call(request)
        response = self._one_host.send(request, **self._adapter_kwargs)
        response.content  # read whole, as the session does unless streaming: the connection goes back to its pool
        if budget is not None:
            budget.update_from_response(request, response)
        return response

    def fetch(self, order_id: str, through_client: Callable[[], Optional[requests.Response]], log_formatter: Any = None) -> Optional[requests.Response]:
        """The answer for the order; `through_client()` (the CDK's way) for what this leaves to it."""
        if log_formatter is not None or not self._PLAIN_ID.match(order_id) or self._logger.isEnabledFor(logging.DEBUG):
            return through_client()
        request = requests.PreparedRequest()
        request.method, request.url, request.headers = "GET", f"{self._url_head}{order_id}{self._url_tail}", self._headers.copy()
        if self._session.cookies:
            request.prepare_cookies(self._session.cookies)
        self._auth(request)
        answer: Union[requests.Response, requests.RequestException]
        try:
            answer = self._send(request)
        except requests.RequestException as error:
            answer = error
        else:
            try:
                self._auth.update_from_response(request, answer)
            finally:
                answer.__dict__[_OBSERVED] = True
            if answer.status_code == 200 and is_order_answer_to_keep(answer):
                SYNC_FAILURES.of(self._config).proper_answer(str(answer.url))
                return answer
            if answer.is_redirect:
                return through_client()  # which follows it, as the session would have (Klarna's API does not redirect)
        _REPLAYED.answer = (request.url, answer)
        try:
            return through_client()
        finally:
            _REPLAYED.answer = None


_DIRECT_LOCK = threading.Lock()


def _may_act_on_success(response_filter: Any) -> bool:
    """Whether a response filter could match a 200 (then every answer must meet the error handler)."""
    codes = getattr(response_filter, "http_codes", None) or set()
    return not codes or any(200 <= int(code) < 300 for code in codes)


@dataclass
class OrderBatchRequester(RequestOptionsOfWrapped, Requester):
    """The requester of `orders`, `captures` and `refunds`: one page per partition of order ids (an
    OrderIdBatches slice: `order_id` and `payout_date` lists), made of each order's record(s), the
    orders fetched one by one through the sync's OrderStore with the wrapped HttpRequester's request
    (its path, error handler, retries and rate limit), sent by DirectOrderRequests.

    `items_field` says what a page holds: `orders` (the order itself, with the slice's `payout_date`),
    or the name of a list embedded in the order (`captures`, `refunds`: one record per item, with the
    order's `order_id` and `payout_date`).

    Why not one partition per order, with `captures` and `refunds` substreams of `orders` (the CDK's
    way): the CDK builds a cursor, a partition and a future for each partition (about half a
    millisecond of CPU, and memory it keeps for the rest of the sync), and reads a parent stream one
    record at a time on the child's partition-generating thread, again for each child; a child that
    starts before its parent (catalog order) then fetches every order itself, one after another. With
    batches and the store, the three streams read the same orders side by side, in any order, each
    order requested once.
    """

    requester: HttpRequester
    config: Config
    items_field: str = ""
    parameters: InitVar[Mapping[str, Any]] = None

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        self.items_field = self.items_field or (parameters or {}).get("items_field") or "orders"
        if self.items_field not in OrderStore.READERS:
            raise ValueError(f"OrderBatchRequester: items_field must be one of {sorted(OrderStore.READERS)}, not {self.items_field!r}")
        ORDER_FETCHERS.of(self.config)[self.items_field] = self._fetch_one

    def _path_template(self) -> str:
        """The wrapped requester's path rendered once with a placeholder for the order id, or "" when
        the template does more with the id than insert it."""
        template = self.__dict__.get("_rendered_path")
        if template is None:
            placeholder = StreamSlice(partition={"order_id": _ORDER_ID_PLACEHOLDER}, cursor_slice={})
            rendered = self.requester.get_path(stream_state=None, stream_slice=placeholder, next_page_token=None)
            template = self.__dict__["_rendered_path"] = rendered if rendered.count(_ORDER_ID_PLACEHOLDER) == 1 else ""
        return template

    def _path_of(self, order_slice: StreamSlice) -> str:
        """The wrapped requester's path for one order: the template filled in (a Jinja render per
        request was ~3 % of the CPU of a sync), or rendered for the order when there is none."""
        template = self._path_template()
        if not template:
            return self.requester.get_path(stream_state=None, stream_slice=order_slice, next_page_token=None)
        return template.replace(_ORDER_ID_PLACEHOLDER, str(order_slice.partition["order_id"]))

    def __getattr__(self, name: str) -> Any:
        # Everything else (name, error_handler, exit_on_rate_limit, ...) is the wrapped requester's.
        if name.startswith("__") or name == "requester":
            raise AttributeError(name)
        return getattr(self.requester, name)

    @property
    def _wrapped(self) -> HttpRequester:
        return self.requester

    def get_authenticator(self) -> Any:
        return self.requester.get_authenticator()

    def get_url(self, **kwargs: Any) -> str:
        return self.requester.get_url(**kwargs)

    def get_url_base(self, **kwargs: Any) -> str:
        return self.requester.get_url_base(**kwargs)

    def get_path(self, **kwargs: Any) -> str:
        return self.requester.get_path(**kwargs)

    def get_method(self) -> Any:
        return self.requester.get_method()

    def send_request(
        self,
        stream_state: Optional[Mapping[str, Any]] = None,
        stream_slice: Optional[StreamSlice] = None,
        next_page_token: Optional[Mapping[str, Any]] = None,
        path: Optional[str] = None,
        request_headers: Optional[Mapping[str, Any]] = None,
        request_params: Optional[Mapping[str, Any]] = None,
        request_body_data: Optional[Union[Mapping[str, Any], str]] = None,
        request_body_json: Optional[Mapping[str, Any]] = None,
        log_formatter: Optional[Callable[[requests.Response], Any]] = None,
    ) -> Optional[requests.Response]:
        order_ids, payout_dates = _orders_of(stream_slice)

        def fetch(order_id: str) -> Optional[requests.Response]:
            return self._fetch_one(order_id, stream_state, request_headers, request_params, log_formatter)

        ahead = BATCHES_AHEAD.of(self.config)
        ahead.reading(self.items_field)
        try:
            records = self._records(order_ids, payout_dates, fetch)
        finally:
            ahead.read(self.items_field)
        return _answer_page(self.items_field, records, self.requester.get_url_base())

    def _fetch_one(
        self,
        order_id: str,
        stream_state: Optional[Mapping[str, Any]] = None,
        request_headers: Optional[Mapping[str, Any]] = None,
        request_params: Optional[Mapping[str, Any]] = None,
        log_formatter: Optional[Callable[[requests.Response], Any]] = None,
    ) -> Optional[requests.Response]:
        order_slice = StreamSlice(partition={"order_id": order_id}, cursor_slice={})

        def through_client() -> Optional[requests.Response]:
            return self.requester.send_request(
                stream_state=stream_state,
                stream_slice=order_slice,
                path=self._path_of(order_slice),
                request_headers=request_headers,
                request_params=request_params,
                log_formatter=log_formatter,
            )

        direct = self._direct_requests()
        if direct is None or request_headers or request_params:
            return through_client()
        return direct.fetch(order_id, through_client, log_formatter)

    def _direct_requests(self) -> Optional[DirectOrderRequests]:
        """The requester's DirectOrderRequests, made on first use (None: every order through the CDK)."""
        if "_direct" not in self.__dict__:
            with _DIRECT_LOCK:
                if "_direct" not in self.__dict__:
                    self.__dict__["_direct"] = DirectOrderRequests.for_requester(self.requester, self._path_template())
        return self.__dict__["_direct"]

    def _records(
        self, order_ids: List[str], payout_dates: Mapping[str, Any], fetch: Callable[[str], Optional[requests.Response]]
    ) -> List[Dict[str, Any]]:
        records: List[Dict[str, Any]] = []
        for order_id, order in ORDER_STORES.of(self.config).answers(order_ids, self.items_field, fetch):
            if not isinstance(order, dict):
                continue  # gone (HTTP 404): skipped, with the fetcher's one warning
            payout_date = payout_dates.get(order_id)
            if self.items_field == "orders":
                order["payout_date"] = payout_date
                records.append(order)
                continue
            for item in order.get(self.items_field) or []:
                if isinstance(item, dict):
                    item["order_id"], item["payout_date"] = order_id, payout_date
                    records.append(item)
        return records


def _orders_of(stream_slice: Optional[StreamSlice]) -> Tuple[List[str], Dict[str, Any]]:
    """The slice's order ids, and the payout_date of each (an OrderIdBatches slice holds both as lists,
    in the same order; a slice of one order may hold one of each)."""
    if stream_slice is None:
        return [], {}
    order_ids = stream_slice.partition.get("order_id")
    payout_dates = (stream_slice.extra_fields or {}).get("payout_date")
    if not isinstance(order_ids, list):
        order_ids, payout_dates = [order_ids], [payout_dates]
    if not isinstance(payout_dates, list) or len(payout_dates) != len(order_ids):
        payout_dates = [None] * len(order_ids)
    pairs = [(str(order_id), date) for order_id, date in zip(order_ids, payout_dates) if order_id]
    return [order_id for order_id, _ in pairs], dict(pairs)


class SharedParentRows:
    """What `orders`, `captures` and `refunds` each take from a parent partition (a payout's
    transactions): the order ids it names, each once, with their extra fields, and the first record of
    each cursor value. Read by whichever of the three gets to the partition first, kept for the other
    two, so a sync reads each payout's transactions once, not three times (py-spy put those three
    reads at about a tenth of a sync's CPU at 12,000 orders, and each made its own requests).

    Keyed by what decides the partition's records: the parent's name, the fields read, and the
    partition's slice and extra fields (the payout's reference and date), not its cursor slice: the
    transactions' cursor adds no request option (tested), so the same payout gives the same rows
    whatever each stream's state. Each stream still observes and closes its own partitions in its own
    cursor, so each keeps its own state.

    Single-flight, as OrderStore: a stream that comes while another reads the partition waits for that
    read, which makes requests and nothing else (no batch is yielded while it lasts), so every wait
    ends; a read that fails is forgotten, and the next stream reads the partition itself. An entry is
    dropped once all three streams took it; the oldest entries go beyond `capacity_rows` (a stream not
    selected never takes its share; a stream that falls that far behind reads the partition again).
    """

    def __init__(self, capacity_rows: int = 32_768) -> None:
        self._capacity_rows = capacity_rows
        self._lock = threading.Lock()
        self._entries: "OrderedDict[Any, List[Any]]" = OrderedDict()  # key -> [rows, firsts, readers]
        self._rows = 0
        self._reading: Dict[Any, threading.Event] = {}

    def _take(self, key: Any, reader: int) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry[2] |= reader
                if entry[2] == OrderStore.EVERY_READER:
                    del self._entries[key]
                    self._rows -= len(entry[0])
                return entry[0], entry[1]
            reading = self._reading.get(key)
            if reading is not None:
                return reading
            self._reading[key] = threading.Event()
            return None

    def rows_of(self, key: Any, reader: int, read: Callable[[], Tuple[List[Any], List[Any]]]) -> Tuple[List[Any], List[Any]]:
        """The (rows, firsts) of the partition under `key`: another stream's read, or `read()`."""
        while True:
            got = self._take(key, reader)
            if isinstance(got, threading.Event):
                got.wait()  # set when that read ends, read or failed
                continue
            if got is not None:
                return got
            read_rows: Optional[Tuple[List[Any], List[Any]]] = None
            try:
                read_rows = read()
                return read_rows
            finally:
                with self._lock:
                    if read_rows is not None:
                        self._entries[key] = [read_rows[0], read_rows[1], reader]
                        self._rows += len(read_rows[0])
                        while self._rows > self._capacity_rows and len(self._entries) > 1:
                            _, (dropped, _, _) = self._entries.popitem(last=False)
                            self._rows -= len(dropped)
                    self._reading.pop(key).set()


SHARED_PARENT_ROWS = PerSync(SharedParentRows)


@dataclass
class OrderIdBatches(PartitionRouter):
    """The orders the parent's records (the transactions read in this sync) name, each once, in
    partitions of `batch_size` order ids: `{"order_id": [...]}` with `extra_fields` `{"payout_date": [...]}`
    (that of the payout whose transaction named the order first), the slice OrderBatchRequester reads.

    What a SubstreamPartitionRouter under a GroupingPartitionRouter does (its parent config, built by
    the CDK with the parent's state, is `underlying_partition_router`), at a fraction of the CPU: the
    CDK's router looks up the key and every extra field of each parent record with dpath (a glob
    match over the record, a third of the time of generating order partitions) and observes every
    parent record in the parent's cursor (a date parse each); here the fields are read directly and
    the cursor observes each payout_date once per parent partition (observing the same value again
    changes nothing), and what a payout's transactions give is read once for the three streams
    (SharedParentRows). The parent state a batch carries is taken when the batch is made: a parent
    partition (a payout) counts as read only in the states of batches made after its last order was
    batched, so a sync that stops midway never skips an order.

    `nest_state_under` presents the parent state one level down, as a substream of a stream of that
    name would have it: `captures` and `refunds` keep the state shape they had as substreams of
    `orders` (`parent_state.orders.parent_state.transactions`), so that states move freely between
    this version and the one before; NestedParentStateMigration lifts it back for the CDK on the way in.
    """

    underlying_partition_router: SubstreamPartitionRouter
    config: Config
    parameters: InitVar[Mapping[str, Any]] = None
    batch_size: int = 25
    nest_state_under: Optional[str] = None

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        (parent_config,) = self.underlying_partition_router.parent_stream_configs
        self._parent = parent_config.stream
        self._key = str(parent_config.parent_key.eval(self.config))
        self._extra_fields = [
            [str(part.eval(self.config)) for part in path] for path in (parent_config.extra_fields or [])
        ]
        cursor_field = getattr(self._parent.cursor, "cursor_field", None)
        self._cursor_key: Optional[str] = getattr(cursor_field, "cursor_field_key", None)
        # The fields a parent record may take from its partition (see stream_slices).
        self._carried = {name for name in [self._cursor_key, *(path[0] for path in self._extra_fields if len(path) == 1)] if name}
        self._state: Optional[Mapping[str, StreamState]] = {}
        # The stream whose batches these are (the one OrderBatchRequester reads them for).
        self._stream = (parameters or {}).get("items_field")
        # The order ids of the batches made lately, newest last: what a waiting generator prefetches.
        self._made: Deque[str] = deque(maxlen=BatchesAhead.LIMIT * max(1, int(self.batch_size)))
        self._prefetching = True

    def _extras(self, data: Mapping[str, Any]) -> Tuple[Any, ...]:
        """The values of the extra fields in `data`, in the order of `_extra_fields`."""
        extras = []
        for path in self._extra_fields:
            value: Any = data
            for part in path:
                value = value.get(part) if isinstance(value, Mapping) else None
            extras.append(value)
        return tuple(extras)

    def _prefetch(self) -> bool:
        """Fetches one order of the newest batches made (see BatchesAhead); whether it did."""
        fetch = ORDER_FETCHERS.of(self.config).get(self._stream) if self._prefetching else None
        store = ORDER_STORES.of(self.config)
        while fetch is not None and self._made:
            try:
                if store.prefetch(self._made.pop(), fetch):
                    return True
            except Exception:  # left to the batch's reader, whose failure ends the stream properly
                self._prefetching = False
                return False
        return False

    def _batch(self, order_ids: List[str], extras: List[Tuple[Any, ...]]) -> StreamSlice:
        if self._stream:
            BATCHES_AHEAD.of(self.config).wait_to_make(self._stream, self._prefetch)
            self._made.extend(order_ids)
        self._state = self.underlying_partition_router.get_stream_state()
        names = [".".join(path) for path in self._extra_fields]
        return StreamSlice(
            partition={"order_id": order_ids},
            cursor_slice={},
            extra_fields={name: [extra[index] for extra in extras] for index, name in enumerate(names)},
        )

    def _read_rows(self, partition: Any) -> Tuple[List[Tuple[str, Tuple[Any, ...]]], List[Mapping[str, Any]]]:
        """The partition's rows: (order id, its extra fields) for each order id, once, in the order
        read; and the first record's data of each cursor value (what the parent's cursor observes)."""
        cursor_key = self._cursor_key
        rows: List[Tuple[str, Tuple[Any, ...]]] = []
        firsts: List[Mapping[str, Any]] = []
        values: Set[Any] = set()
        named: Set[str] = set()
        for record in partition.read():
            data = record.data
            carried = record.associated_slice.extra_fields if record.associated_slice is not None else None
            if carried:
                # The parent is read without its record transformations (the transaction key is
                # of no use here, and costs a hash a row): the fields its partition carries (the
                # payout's payout_date) come from there, as the transformation would set them.
                for name in self._carried:
                    if data.get(name) is None and carried.get(name) is not None:
                        data[name] = carried[name]
            value = data.get(cursor_key) if cursor_key else None
            if value not in values:
                firsts.append(data)
                values.add(value)
            order_id = data.get(self._key)
            if order_id is None or order_id in named:
                continue
            named.add(order_id)
            rows.append((order_id, self._extras(data)))
        return rows, firsts

    def _share_key(self, partition: Any, stream_slice: Optional[StreamSlice]) -> Optional[Tuple[Any, ...]]:
        """What decides the rows of the partition (whose slice is `stream_slice`; see
        SharedParentRows); None: not to be shared (a stream that is none of the three, a Connector
        Builder test read counting its records, a slice that is not JSON)."""
        reader = OrderStore.READERS.get(self._stream or "")
        if not reader or stream_slice is None or getattr(partition, "_max_records_limit", None) is not None:
            return None
        try:
            return (
                self._parent.name, self._key, tuple(map(tuple, self._extra_fields)), self._cursor_key,
                orjson.dumps(dict(stream_slice.partition), option=orjson.OPT_SORT_KEYS),
                orjson.dumps(dict(stream_slice.extra_fields or {}), option=orjson.OPT_SORT_KEYS),
            )
        except TypeError:
            return None

    def stream_slices(self) -> Iterable[StreamSlice]:
        parent, cursor = self._parent, self._parent.cursor
        seen: Set[str] = set()
        order_ids: List[str] = []
        extras: List[Tuple[Any, ...]] = []
        for partition in parent.generate_partitions():
            associated = partition.to_slice() if hasattr(partition, "to_slice") else None
            key = self._share_key(partition, associated)
            if key is None:
                rows, firsts = self._read_rows(partition)
            else:
                rows, firsts = SHARED_PARENT_ROWS.of(self.config).rows_of(
                    key, OrderStore.READERS[self._stream], lambda: self._read_rows(partition)
                )
            # Observing one record of each cursor value is observing them all (the cursor keeps the
            # greatest value per slice), a date parse each instead of one per row.
            for data in firsts:
                cursor.observe(Record(data=data, stream_name=parent.name, associated_slice=associated))
            for order_id, extra in rows:
                if order_id in seen:
                    continue
                seen.add(order_id)
                order_ids.append(order_id)
                extras.append(extra)
                if len(order_ids) >= self.batch_size:
                    yield self._batch(order_ids, extras)
                    order_ids, extras = [], []
            cursor.close_partition(partition)
        cursor.ensure_at_least_one_state_emitted()
        if order_ids:
            yield self._batch(order_ids, extras)
        self._state = self.underlying_partition_router.get_stream_state()

    def get_stream_state(self) -> Optional[Mapping[str, StreamState]]:
        if not self.nest_state_under or not self._state:
            return self._state
        return {self.nest_state_under: {"use_global_cursor": True, "parent_state": dict(self._state)}}

    def get_request_params(self, **kwargs: Any) -> Mapping[str, Any]:
        return {}

    def get_request_headers(self, **kwargs: Any) -> Mapping[str, Any]:
        return {}

    def get_request_body_data(self, **kwargs: Any) -> Union[Mapping[str, Any], str]:
        return {}

    def get_request_body_json(self, **kwargs: Any) -> Mapping[str, Any]:
        return {}


@dataclass
class NestedParentStateMigration(StateMigration):
    """A `captures`/`refunds` state as the CDK reads it: `parent_state.orders.parent_state` (the shape
    both this version and the one before write, see OrderIdBatches) lifted to `parent_state`. The CDK
    gives a parent stream the child state's `parent_state[<parent name>]` before any router runs, so
    only a state migration can. It stays as long as states written by 1.1.0 may come back."""

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

    The CDK's RemoveFields has a `condition`, but it cannot gate on the config: it hands the condition
    to dpath.delete as `afilter`, and dpath 2.2 then deletes every leaf of the record the filter accepts,
    matched by the pointer or not (`selected = afilter and leaf(value) and afilter(value)`), so
    `condition: "{{ not config.include_personal_data }}"` empties the whole record. Pointers are lists
    of keys; "*" stands for every item of a list (or value of an object). It can go when RemoveFields'
    condition selects among the pointed fields only (the manifest then says `condition:` instead).
    """

    field_pointers: List[List[str]]
    keep_if: str
    parameters: InitVar[Mapping[str, Any]] = None

    def transform(
        self,
        record: Dict[str, Any],
        config: Optional[Config] = None,
        stream_state: Optional[StreamState] = None,
        stream_slice: Optional[StreamSlice] = None,
    ) -> None:
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
