"""Property-based tests (hypothesis) of the three things an exact sync rests on: when pagination
stops, how the date range is cut into windows, and the transaction key. Pure and fast: no HTTP, the
manifest's own components evaluated in process.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import math
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import pendulum
import requests
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import airbyte_cdk.sources.declarative.models.declarative_component_schema as models
from airbyte_cdk.sources.declarative.models.declarative_component_schema import DatetimeBasedCursor as DatetimeBasedCursorModel
from airbyte_cdk.sources.declarative.parsers.model_to_component_factory import ModelToComponentFactory
from airbyte_cdk.sources.declarative.requesters.paginators.strategies.pagination_strategy import PaginationStrategy
from components import TRANSACTION_KEY_FIELDS, TransactionKeyAndPayout, transaction_fingerprint
from source_klarna.run import SourceKlarna, connector_file
from unit_tests.keying import keyed, payout_slice

MANIFEST = yaml.safe_load(connector_file("manifest.yaml").read_text())
STRATEGY = MANIFEST["definitions"]["paginator"]["pagination_strategy"]
PAGE_SIZE = int(STRATEGY["page_size"])
UTC = dt.timezone.utc
FORMAT = "%Y-%m-%dT%H:%M:%SZ"
EARLIEST = dt.datetime(2015, 1, 1, tzinfo=UTC)
KEY_RE = re.compile(r"^(?P<ref>.+):(?P<hash>[0-9a-f]{20}):(?P<occurrence>[0-9]+)$")
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- pagination stop condition


def _strategy() -> PaginationStrategy:
    """The manifest's pagination strategy, built by the CDK's own factory from its definition (so
    these properties keep holding the manifest to them whatever type of strategy it uses)."""
    return ModelToComponentFactory().create_component(getattr(models, STRATEGY["type"]), copy.deepcopy(STRATEGY), config={})


def _response(body: Mapping[str, Any]) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response._content = json.dumps(body).encode()
    response.headers["Content-Type"] = "application/json"
    return response


def _page_through(
    items: List[int], server_cap: int, with_total: bool = True, with_offset: bool = True, request_budget: Optional[int] = None
) -> Tuple[List[int], int, bool]:
    """Reads `items` the way the connector does: offset pagination, `size` = the manifest's page
    size, a server that serves at most `server_cap` rows a page and may leave out the optional
    `total` and `offset` (only `count` is required by Klarna's Pagination schema).
    Returns (rows read, requests made, whether it stopped by itself within the budget)."""
    strategy = _strategy()
    budget = request_budget or (len(items) // max(1, min(server_cap, PAGE_SIZE)) + 3)
    offset: Optional[int] = None
    read: List[int] = []
    for request in range(1, budget + 1):
        start = int(offset or 0)
        page = items[start : start + min(server_cap, PAGE_SIZE)]
        pagination: Dict[str, Any] = {"count": len(page)}
        if with_total:
            pagination["total"] = len(items)
        if with_offset:
            pagination["offset"] = start
        read.extend(page)
        token = strategy.next_page_token(
            _response({"payouts": page, "pagination": pagination}),
            len(page),
            page[-1] if page else None,
            offset,
        )
        if token is None:
            return read, request, True
        assert int(token) > start, f"the next offset {token} does not move past {start}"
        offset = token
    return read, budget, False


# (rows, rows the server serves per page): up to 30 pages, so every example stays fast.
lists_and_caps = st.integers(min_value=1, max_value=PAGE_SIZE).flatmap(
    lambda cap: st.tuples(st.integers(min_value=0, max_value=30 * cap + cap - 1), st.just(cap))
)


@FAST
@given(case=lists_and_caps)
def test_with_total_every_row_is_read_once_and_paging_stops_after_the_last_page(case):
    n, server_cap = case
    items = list(range(n))

    read, requests_made, stopped = _page_through(items, server_cap)

    assert stopped
    assert read == items
    # Not one request more than needed, even when the last page is exactly full.
    assert requests_made == max(1, math.ceil(n / server_cap))


@FAST
@given(n=st.integers(min_value=0, max_value=4000))
def test_without_total_a_short_or_empty_page_ends_the_read_and_nothing_is_lost(n):
    items = list(range(n))

    read, requests_made, stopped = _page_through(items, PAGE_SIZE, with_total=False)

    assert stopped
    assert read == items
    # A list of exactly k full pages costs one extra (empty) request, never a lost page.
    assert requests_made == n // PAGE_SIZE + 1


@FAST
@given(case=lists_and_caps)
def test_a_server_that_serves_fewer_rows_than_asked_still_gets_paged_through_when_it_gives_total(case):
    n, server_cap = case
    # Klarna may cap `size` below what we ask for: `total` keeps the connector going.
    items = list(range(n))

    read, _, stopped = _page_through(items, server_cap, with_total=True)

    assert stopped and read == items


@FAST
@given(n=st.integers(min_value=2 * PAGE_SIZE + 1, max_value=4000))
def test_paging_terminates_and_reads_everything_when_klarna_leaves_out_the_optional_offset(n):
    items = list(range(n))

    read, _, stopped = _page_through(items, PAGE_SIZE, with_total=True, with_offset=False, request_budget=n // PAGE_SIZE + 5)

    assert stopped, "pagination never stopped"
    assert read == items


# --------------------------------------------------------------------------- window slicing


def _fmt(value: dt.datetime) -> str:
    return value.strftime(FORMAT)


def _parse(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, FORMAT).replace(tzinfo=UTC)


@functools.lru_cache(maxsize=None)
def _cursor_definitions() -> Mapping[str, Mapping[str, Any]]:
    """Each stream's incremental_sync exactly as the connector resolves it (refs, $parameters)."""
    source = SourceKlarna(config={"username": "u", "password": "p"}, catalog=None, state=None)
    return {stream["name"]: stream["incremental_sync"] for stream in source.resolved_manifest["streams"] if "incremental_sync" in stream}


def _slices(stream: str, config: Mapping[str, Any], state: Optional[Mapping[str, Any]] = None) -> List[Tuple[dt.datetime, dt.datetime]]:
    """The date windows the connector's concurrent cursor cuts for `stream` (built by the CDK's own
    factory from the manifest, so no HTTP and no full source per example)."""
    cursor = ModelToComponentFactory().create_concurrent_cursor_from_datetime_based_cursor(
        model_type=DatetimeBasedCursorModel,
        component_definition=copy.deepcopy(dict(_cursor_definitions()[stream])),
        stream_name=stream,
        stream_namespace=None,
        stream_state=dict(state or {}),
        config=dict(config),
    )
    return [(_parse(window["start_time"]), _parse(window["end_time"])) for window in cursor.stream_slices()]


def _assert_contiguous(windows: List[Tuple[dt.datetime, dt.datetime]]) -> None:
    for (start, end), (next_start, _) in zip(windows, windows[1:]):
        assert start <= end
        assert next_start == end + dt.timedelta(seconds=1), f"gap or overlap between {end} and {next_start}"


def _now() -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0)


moments = st.datetimes(
    min_value=dt.datetime(2015, 1, 1), max_value=dt.datetime.now() - dt.timedelta(days=2), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


@settings(max_examples=30, deadline=None)
@given(start=moments, bare_date=st.booleans(), probe=st.floats(min_value=0, max_value=1))
def test_payout_windows_cover_start_date_to_now_without_gap_or_overlap(start, bare_date, probe):
    start_value = start.strftime("%Y-%m-%d") if bare_date else _fmt(start)
    expected_start = start.replace(hour=0, minute=0, second=0) if bare_date else start
    before = _now()

    windows = _slices("payouts", {"username": "u", "password": "p", "start_date": start_value})

    assert windows[0][0] == expected_start
    _assert_contiguous(windows)
    assert all(end - begin < dt.timedelta(days=90) for begin, end in windows), "a window longer than 90 days"
    assert before - dt.timedelta(seconds=2) <= windows[-1][1] <= _now() + dt.timedelta(seconds=2)
    # Any payout dated inside the range falls into exactly one window.
    moment = expected_start + (windows[-1][1] - expected_start) * probe
    moment = moment.replace(microsecond=0)
    assert sum(1 for begin, end in windows if begin <= moment <= end) == 1


@settings(max_examples=30, deadline=None)
@given(start=moments, cursor_offset=st.floats(min_value=0, max_value=1), lookback=st.integers(min_value=0, max_value=90))
def test_an_incremental_sync_starts_lookback_days_before_the_saved_cursor_never_before_start_date(start, cursor_offset, lookback):
    cursor = (start + (_now() - start) * cursor_offset).replace(microsecond=0)
    config = {"username": "u", "password": "p", "start_date": _fmt(start), "lookback_window_days": lookback}

    windows = _slices("payouts", config, {"payout_date": _fmt(cursor)})

    assert windows[0][0] == max(start, cursor - dt.timedelta(days=lookback))
    _assert_contiguous(windows)
    assert all(end - begin < dt.timedelta(days=90) for begin, end in windows)


def _month_start(value: dt.datetime) -> dt.datetime:
    return pendulum.instance(value).start_of("month")


def _next_month(value: dt.datetime) -> dt.datetime:
    return pendulum.instance(value).start_of("month").add(months=1)


@settings(max_examples=30, deadline=None)
@given(start=moments)
def test_summary_windows_are_whole_calendar_months_without_gap_or_overlap(start):
    windows = _slices("payout_summaries", {"username": "u", "password": "p", "start_date": _fmt(start)})

    _assert_contiguous(windows)
    for begin, end in windows[:-1]:
        assert begin == _month_start(begin)
        assert end == _next_month(begin) - dt.timedelta(seconds=1)
    # The running month: from its first day to the sync's start (month to date).
    last_begin, last_end = windows[-1]
    assert last_begin == _month_start(_now())
    assert last_begin < last_end <= _now()


@settings(max_examples=30, deadline=None)
@given(start=moments)
def test_summary_windows_cover_every_payout_from_start_date_through_the_running_month(start):
    windows = _slices("payout_summaries", {"username": "u", "password": "p", "start_date": _fmt(start)})

    assert windows and windows[0][0] <= start
    assert windows[-1][1] >= _now() - dt.timedelta(seconds=2)


# --------------------------------------------------------------------------- the transaction key

klarna_values = st.one_of(st.none(), st.integers(min_value=-(10**12), max_value=10**12), st.text(max_size=12))
base_rows = st.fixed_dictionaries(
    {
        "amount": st.integers(min_value=0, max_value=10**9),
        "type": st.sampled_from(["SALE", "FEE", "RETURN", "REVERSAL", "TAX"]),
        "order_id": st.sampled_from(["o1", "o2", "o3"]),
        "capture_id": st.sampled_from(["", "c1", None]),
    },
    optional={"klarna_comment": st.one_of(st.none(), st.text(max_size=8)), "vat_amount": st.integers(0, 500)},
)
# Payouts with many byte-identical rows: draw a few distinct rows, then repeat them.
payout_rows = st.lists(base_rows, min_size=1, max_size=6).flatmap(
    lambda distinct: st.lists(st.sampled_from(distinct), min_size=0, max_size=40).map(lambda picked: [dict(r) for r in picked])
)




def _content(record: Mapping[str, Any]) -> str:
    # An absent field and a null one land as the same NULL column, and hash alike by design.
    return json.dumps({k: v for k, v in record.items() if k != "transaction_key" and v is not None}, sort_keys=True)


@settings(max_examples=150, deadline=None)
@given(rows=payout_rows, order=st.randoms(use_true_random=False))
def test_keys_are_unique_well_formed_and_map_to_the_same_content_in_any_row_order(rows, order):
    first = keyed(rows)
    shuffled_rows = list(rows)
    order.shuffle(shuffled_rows)
    second = keyed(shuffled_rows)

    keys = [r["transaction_key"] for r in first]
    assert len(set(keys)) == len(rows)
    for record in first:
        match = KEY_RE.match(record["transaction_key"])
        assert match and match["ref"] == "P1"
        assert match["hash"] == transaction_fingerprint(record)
    # Identical rows are interchangeable: each key names the same content whatever Klarna's order.
    assert {r["transaction_key"]: _content(r) for r in first} == {r["transaction_key"]: _content(r) for r in second}
    # Occurrences of a fingerprint are numbered 0..k-1 without holes.
    by_hash: Dict[str, List[int]] = {}
    for key in keys:
        match = KEY_RE.match(key)
        by_hash.setdefault(match["hash"], []).append(int(match["occurrence"]))
    assert all(sorted(found) == list(range(len(found))) for found in by_hash.values())


@settings(max_examples=100, deadline=None)
@given(rows=payout_rows, extra=st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda k: k not in TRANSACTION_KEY_FIELDS), klarna_values, max_size=3))
def test_fields_klarna_adds_later_and_null_versus_absent_do_not_change_keys(rows, extra):
    plain = [r["transaction_key"] for r in keyed(rows)]
    widened = [dict(row, **extra) for row in rows]
    nulled = [{**row, **{name: None for name in TRANSACTION_KEY_FIELDS if name not in row and name != "payment_reference"}} for row in rows]

    assert [r["transaction_key"] for r in keyed(widened)] == plain
    assert [r["transaction_key"] for r in keyed(nulled)] == plain


@settings(max_examples=150, deadline=None)
@given(row=base_rows, field=st.sampled_from([f for f in TRANSACTION_KEY_FIELDS if f != "payment_reference"]), value=klarna_values)
def test_any_change_of_a_klarna_field_changes_the_key(row, field, value):
    assume(row.get(field) != value)

    (before,) = keyed([row])
    (after,) = keyed([dict(row, **{field: value})])

    assert before["transaction_key"] != after["transaction_key"]


@settings(max_examples=60, deadline=None)
@given(
    payouts=st.lists(payout_rows, min_size=1, max_size=6),
    schedule=st.lists(st.integers(min_value=0, max_value=5), max_size=300),
    reread=st.booleans(),
)
def test_keys_do_not_depend_on_how_concurrent_partitions_interleave_or_on_a_reread(payouts, schedule, reread):
    # Alone: each payout read by its own transformation.
    alone = {f"P{i}": [r["transaction_key"] for r in keyed(rows, payout_slice(f"P{i}"))] for i, rows in enumerate(payouts)}

    # Together: one transformation (as in a sync), pages of different payouts interleaved as the
    # concurrent workers deliver them, and optionally the same payout read twice.
    transformation = TransactionKeyAndPayout(parameters={})
    slices = {f"P{i}": payout_slice(f"P{i}") for i in range(len(payouts))}
    cursors = {ref: 0 for ref in slices}
    together: Dict[str, List[str]] = {ref: [] for ref in slices}
    pending = [ref for ref in slices]
    steps = iter(schedule)
    while pending:
        ref = pending[next(steps, 0) % len(pending)]
        rows = payouts[int(ref[1:])]
        if cursors[ref] < len(rows):
            (record,) = keyed([rows[cursors[ref]]], slices[ref], transformation)
            together[ref].append(record["transaction_key"])
            cursors[ref] += 1
        if cursors[ref] >= len(rows):
            pending.remove(ref)
    assert together == alone

    if reread:
        again = {ref: [r["transaction_key"] for r in keyed(payouts[int(ref[1:])], payout_slice(ref), transformation)] for ref in slices}
        assert again == alone
