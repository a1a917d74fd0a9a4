"""The merchant's rate limit, shared with its other traffic: a whole sync stays exact and out of the red.

Klarna counts its limit per merchant and refuses all of the merchant's requests once it is spent, the
checkout's too. The emulator models that (fixed 1-second windows of `rate_limit_rps`, shared with
`other_traffic_rps` of someone else's requests, X-Ratelimit-* headers on every answer); the connector
must leave the others their share and its reserve, and still deliver every row.
"""

from collections import Counter

import pytest

from connector_runner import configured_catalog, run_connector
from klarna_emulator import DatasetSpec
from streaming_runner import assert_payouts_exact, assert_transactions_exact

STREAMS = ("payouts", "transactions", "payout_summaries", "orders", "captures", "refunds")
# About 60 orders, so a sync makes about a hundred requests: ten seconds at the ~10/s the others leave.
SPEC = DatasetSpec(seed=71, payouts=6, transactions_per_payout=30, first_payout_date="2026-10-01T00:00:00Z")


@pytest.mark.parametrize("other_traffic_rps", [150])
def test_with_the_merchants_traffic_at_150_of_200_a_full_sync_is_exact_and_gets_at_most_1_percent_429s(make_emulator, other_traffic_rps):
    emulator = make_emulator(SPEC, rate_limit_rps=200, other_traffic_rps=other_traffic_rps)

    run = run_connector("read", emulator.config(), configured_catalog(STREAMS, "full_refresh"), timeout=240)

    assert run.exit_code == 0, run.everything[-3000:]
    assert not run.errors()
    assert_payouts_exact(emulator, run.records("payouts"))
    assert_transactions_exact(emulator, run.records("transactions"))
    named = {t["order_id"] for t in emulator.dataset.transactions()}
    assert Counter(o["order_id"] for o in run.records("orders")) == Counter(named)
    stats = emulator.stats()
    ours = stats["total"]
    assert ours > 60
    assert stats["rate_limited"] <= ours / 100, stats
    # The merchant's own traffic was never refused because of the sync, and the reserve (20 % of the
    # limit) was kept, give or take the requests in flight.
    assert stats["rate_limit"]["other_traffic"]["refused"] == 0, stats["rate_limit"]
    assert stats["rate_limit"]["lowest_remaining"] >= 200 * 0.2 - 12, stats["rate_limit"]


# The limit's accounting and the merchant's other traffic as Klarna might have them (the emulator's
# `rate_limit_accounting` and `other_traffic_pattern`): whichever, a sync stays exact and neither side is
# refused more than 1 % of its requests. L = 40 with the others at 20/s (50 %) leaves the connector
# 40 x 0.8 - 20 = 12/s: this dataset's ~45 requests take a few seconds.
SHARED_LIMIT = 40
SHARING_STREAMS = ("payouts", "transactions", "orders")
SHARING_SPEC = DatasetSpec(seed=73, payouts=8, transactions_per_payout=10, first_payout_date="2026-09-01T00:00:00Z")


@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["steady", "step", "bursts", "poisson"])
@pytest.mark.parametrize("accounting", ["fixed", "sliding", "token"])
def test_whatever_the_accounting_and_the_others_pattern_at_50_percent_a_sync_is_exact_and_neither_side_is_refused_over_1_percent(make_emulator, accounting, pattern):
    # step: the others start 1.5 s after the reset (about when the connector's first request comes), at 40/s
    emulator = make_emulator(SHARING_SPEC, rate_limit_rps=SHARED_LIMIT, rate_limit_accounting=accounting,
                             other_traffic_rps=SHARED_LIMIT / 2, other_traffic_pattern=pattern,
                             other_traffic_step_at_s=1.5, other_traffic_seed=11)
    emulator.reset_requests()  # the others' pattern and the statistics start now

    run = run_connector("read", emulator.config(), configured_catalog(SHARING_STREAMS, "full_refresh"), timeout=240)

    assert run.exit_code == 0, run.everything[-3000:]
    assert not run.errors()
    assert_payouts_exact(emulator, run.records("payouts"))
    assert_transactions_exact(emulator, run.records("transactions"))
    named = {t["order_id"] for t in emulator.dataset.transactions()}
    assert Counter(o["order_id"] for o in run.records("orders")) == Counter(named)
    stats = emulator.stats()
    sharing = stats["rate_limit_sharing"]
    assert sharing["accounting"] == accounting and sharing["others"]["pattern"] == pattern
    ours, others = sharing["ours"], sharing["others"]
    assert ours["requests"] > 30 and others["requests"] > 0, sharing
    assert stats["rate_limited"] <= ours["requests"] / 100, sharing
    assert others["refused"] <= others["requests"] / 100, sharing
