"""Data moving during a sync: payouts Klarna adds while the connector pages through a date window
must not make it skip rows (offset pagination over a moving list is the classic way to lose data).

The emulator serves a window's payouts newest first, 500 a page, and a window here holds 550. To move
the list at an exact point, an intercepting proxy between the connector and the emulator grows the
emulator's data right before it forwards the connector's second request for payouts: the window's
page 2 (the emulator has no knob for "grow before request n").

Each scenario has its own emulator; they run side by side in one module fixture and each test checks
one scenario's outcome.
"""

from __future__ import annotations

import threading
from collections import Counter
from types import SimpleNamespace

import pytest

from conftest import EMULATOR_PASSWORD
from connector_runner import configured_catalog
from klarna_emulator import DatasetSpec, KlarnaEmulator
from streaming_runner import (
    PAYOUTS_PATH,
    TRANSACTIONS_PATH,
    InterceptingProxy,
    assert_clean_run,
    assert_payouts_exact,
    assert_transactions_exact,
    days_ago,
    result_of,
    scenario_results,
    stream_connector,
    union_by_key,
)

CURRENCIES = ("EUR", "SEK", "USD", "GBP", "NOK", "DKK", "CHF", "AUD", "PLN", "CZK")
# 550 payouts in 55 days, all inside one 90-day window: the window takes two pages (500 + 50).
MOVING_SPEC = DatasetSpec(
    seed=41,
    payouts=550,
    transactions_per_payout=2,
    identical_rows_per_payout=0,
    currencies=CURRENCIES,
    first_payout_date=days_ago(60),
)
START_DATE = days_ago(61)
GROWTH = {"new": dict(new_payouts=4), "late": dict(late_payouts=4)}


class GrowOnce:
    """Grows the emulator right before the first request that `when(path, query)` matches, and keeps
    that request's query (`at`) so a test can show where the list moved."""

    def __init__(self, emulator, when, **growth):
        self.emulator, self.when, self.growth = emulator, when, growth
        self.added = None
        self.at = None
        self._lock = threading.Lock()  # the proxy answers concurrent requests on several threads

    def __call__(self, path, query):
        with self._lock:
            if self.added is None and self.when(path, query):
                self.added = self.emulator.grow(**self.growth)
                self.at = dict(query)
        return None


def later_page_of(path):
    """Matches a request to `path` for a page after a window's first (offset > 0): growing the list
    right before it moves the list between two pages of one window. Counting requests would not do:
    the credentials probe and each window's first page also ask for payouts, at offset 0."""
    return lambda request_path, query: request_path == path and int(query.get("offset") or 0) > 0


def _read(config, streams, state=None):
    run = stream_connector("read", config, configured_catalog(streams, "incremental"), state, timeout=120)
    assert_clean_run(run, config)
    assert run.exit_code == 0 and not run.errors(), [e["message"] for e in run.errors()]
    return run


def growth_between_two_pages(kind):
    """The payouts that existed before, the payouts added between the two pages of the window, the
    sync that saw it happen and the incremental sync after it."""

    def scenario():
        with KlarnaEmulator(spec=MOVING_SPEC, password=EMULATOR_PASSWORD) as emulator:
            before = emulator.dataset.payouts()
            hook = GrowOnce(emulator, later_page_of(PAYOUTS_PATH), **GROWTH[kind])
            with InterceptingProxy(emulator.url, on_request=hook) as proxy:
                config = emulator.config(start_date=START_DATE, base_url_override=proxy.url)
                during = _read(config, ["payouts"])
            assert not proxy.hook_errors, proxy.hook_errors
            pages = [int(q.get("offset") or 0) for p, q in proxy.seen if p == PAYOUTS_PATH]
            after = _read(emulator.config(start_date=START_DATE), ["payouts"], during.final_state())
            return SimpleNamespace(before=before, added=hook.added, grown_at=hook.at, during=during, after=after, pages=pages, final=emulator.dataset.payouts())

    return scenario


def growth_while_payouts_and_transactions_are_read():
    with KlarnaEmulator(spec=MOVING_SPEC, password=EMULATOR_PASSWORD) as emulator:
        before = [p["payment_reference"] for p in emulator.dataset.payouts()]
        transactions_requests = []
        page_two = GrowOnce(emulator, later_page_of(PAYOUTS_PATH), new_payouts=3, late_payouts=3)
        mid_transactions = GrowOnce(
            emulator, lambda path, query: path == TRANSACTIONS_PATH and len(transactions_requests) >= 100, new_payouts=2, late_payouts=2
        )

        def hook(path, query):
            if path == TRANSACTIONS_PATH:
                transactions_requests.append(query.get("payment_reference"))
            page_two(path, query)
            mid_transactions(path, query)

        with InterceptingProxy(emulator.url, on_request=hook) as proxy:
            during = _read(emulator.config(start_date=START_DATE, base_url_override=proxy.url), ["payouts", "transactions"])
        assert not proxy.hook_errors, proxy.hook_errors
        after = _read(emulator.config(start_date=START_DATE), ["payouts", "transactions"], during.final_state())
        added = (page_two.added or []) + (mid_transactions.added or [])
        return SimpleNamespace(emulator=emulator, before=before, added=added, moved=bool(page_two.added and mid_transactions.added), during=during, after=after)


SCENARIOS = {
    **{f"{kind}-payouts-between-two-pages": growth_between_two_pages(kind) for kind in GROWTH},
    "growth-while-transactions-are-read": growth_while_payouts_and_transactions_are_read,
}


@pytest.fixture(scope="module")
def results(request):
    return scenario_results(request, SCENARIOS)


BETWEEN_PAGES = [f"{kind}-payouts-between-two-pages" for kind in GROWTH]


@pytest.mark.parametrize("scenario", BETWEEN_PAGES)
def test_payouts_added_between_two_pages_of_a_window_make_no_payout_go_missing(results, scenario):
    outcome = result_of(results, scenario)
    assert outcome.added and int(outcome.grown_at.get("offset") or 0) > 0, "the list never moved between two pages of the window"
    assert len(outcome.pages) >= 2, outcome.pages

    seen = union_by_key(outcome.during.records("payouts"), "payment_reference")
    missing = [p["payment_reference"] for p in outcome.before if p["payment_reference"] not in seen]
    assert not missing, f"{len(missing)} payouts skipped because the list moved: {missing[:5]}"
    for payout in outcome.before:
        assert seen[payout["payment_reference"]] == payout


@pytest.mark.parametrize("scenario", BETWEEN_PAGES)
def test_the_next_incremental_sync_brings_the_payouts_added_mid_window(results, scenario):
    outcome = result_of(results, scenario)

    assert set(outcome.added) <= {p["payment_reference"] for p in outcome.after.records("payouts")}
    rows = outcome.during.records("payouts") + outcome.after.records("payouts")
    assert_payouts_exact(None, rows, repeats_allowed=True, expected=outcome.final)


@pytest.mark.parametrize("scenario", BETWEEN_PAGES)
def test_a_sync_emits_each_payout_once_even_when_the_list_moves(results, scenario):
    # Offset pagination over a list that grows at the top shifts the second page: the payouts at the
    # end of page 1 come again at the start of page 2. The connector drops those repeats.
    outcome = result_of(results, scenario)
    counts = Counter(p["payment_reference"] for p in outcome.during.records("payouts"))

    assert outcome.added and int(outcome.grown_at.get("offset") or 0) > 0, "the list never moved between two pages"
    assert [ref for ref, n in counts.items() if n > 1] == []


@pytest.mark.parametrize("scenario", ["growth-while-transactions-are-read"])
def test_growth_while_payouts_and_transactions_are_read_loses_no_transaction(results, scenario):
    outcome = result_of(results, scenario)
    emulator, during, after = outcome.emulator, outcome.during, outcome.after
    assert outcome.moved, "the data never moved during the sync"

    # Every payout that existed when the sync started has all its transactions, once.
    got = [r for r in during.records("transactions") if r["payment_reference"] in set(outcome.before)]
    assert_transactions_exact(emulator, got, payout_refs=outcome.before)
    # The next sync brings what was added meanwhile, and together they are exactly the emulator's rows.
    assert set(outcome.added) <= {r["payment_reference"] for r in during.records("transactions") + after.records("transactions")}
    assert_payouts_exact(emulator, during.records("payouts") + after.records("payouts"), repeats_allowed=True)
    assert_transactions_exact(emulator, during.records("transactions") + after.records("transactions"), repeats_allowed=True)
