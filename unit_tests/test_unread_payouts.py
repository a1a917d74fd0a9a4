"""UnreadPayoutsPartitionRouter: which payouts' transactions a sync reads, and what it remembers.

The underlying SubstreamPartitionRouter is replaced by a stand-in that serves a fixed list of payout
slices and a parent state; unit_tests/mock_server/test_transactions.py and
integration_tests/test_incremental.py run the real one."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Dict, List, Mapping, Optional

import pytest

from airbyte_cdk.sources.declarative.interpolation.interpolated_string import InterpolatedString
from airbyte_cdk.sources.types import StreamSlice
from components import UnreadPayoutsPartitionRouter
from unit_tests.manifest_parts import cursor_datetime_formats

CONFIG: Dict[str, Any] = {"lookback_window_days": 3}


class PayoutsRouter:
    """Stands in for the SubstreamPartitionRouter over payouts: its slices and its parent state."""

    def __init__(self, payouts: List[tuple], state: Optional[Mapping[str, Any]] = None) -> None:
        self.payouts = payouts
        self.parent_stream_configs = [
            SimpleNamespace(stream=SimpleNamespace(name="payouts"), partition_field=InterpolatedString.create("payment_reference", parameters={}))
        ]
        self.cursor_state = dict(state or {})
        self.request_params_calls: List[Mapping[str, Any]] = []

    def stream_slices(self):
        for ref, payout_date in self.payouts:
            # As the CDK does, the parent cursor moves on while the parent is read.
            self.cursor_state["payout_date"] = max(self.cursor_state.get("payout_date", ""), payout_date)
            yield StreamSlice(partition={"payment_reference": ref, "parent_slice": {}}, cursor_slice={}, extra_fields={"payout_date": payout_date})

    def get_stream_state(self):
        return {"payouts": dict(self.cursor_state)}

    def get_request_params(self, **kwargs):
        self.request_params_calls.append(kwargs)
        return {"payment_reference": kwargs["stream_slice"]["payment_reference"]}


def _router(payouts, state=None, remember_days="{{ config.get('lookback_window_days', 3) + 1 }}"):
    underlying = PayoutsRouter(payouts, state)
    router = UnreadPayoutsPartitionRouter(underlying_partition_router=underlying, config=CONFIG, parameters={}, remember_days=remember_days,
                                          cursor_datetime_formats=cursor_datetime_formats())
    return router, underlying


def _refs(router) -> List[str]:
    return [s.partition["payment_reference"] for s in router.stream_slices()]


def test_without_a_saved_list_every_payout_is_a_partition():
    router, _ = _router([("A", "2024-02-03T06:00:00Z"), ("B", "2024-02-02T06:00:00Z")], state={"payout_date": "2024-02-01T06:00:00Z"})

    assert _refs(router) == ["A", "B"]


def test_payouts_on_the_saved_list_are_skipped_and_late_ones_are_read():
    saved = {"payout_date": "2024-02-10T06:00:00Z", "payouts_read": {"A": "2024-02-10T06:00:00Z", "B": "2024-02-09T06:00:00Z"}}
    router, _ = _router(
        [("NEW", "2024-02-11T06:00:00Z"), ("A", "2024-02-10T06:00:00Z"), ("LATE", "2024-02-09T07:00:00Z"), ("B", "2024-02-09T06:00:00Z")],
        state=saved,
    )

    assert _refs(router) == ["NEW", "LATE"]


def test_a_payout_on_the_list_with_another_payout_date_is_read_again():
    saved = {"payout_date": "2024-02-10T06:00:00Z", "payouts_read": {"A": "2024-02-10T06:00:00Z"}}
    router, _ = _router([("A", "2024-02-10T07:00:00Z")], state=saved)

    assert _refs(router) == ["A"]


def test_a_payout_the_parent_yields_twice_in_one_sync_is_one_partition():
    router, _ = _router([("A", "2024-02-10T06:00:00Z"), ("B", "2024-02-09T06:00:00Z"), ("A", "2024-02-10T06:00:00Z")])

    assert _refs(router) == ["A", "B"]


def test_the_state_keeps_the_parent_cursor_and_lists_skipped_and_read_payouts_of_the_remembered_days():
    saved = {"payout_date": "2024-02-10T06:00:00Z", "payouts_read": {"A": "2024-02-10T06:00:00Z"}}
    # Newest first inside a window, as Klarna lists them; the list keeps 3 + 1 days before the newest.
    payouts = [("NEW", "2024-02-12T06:00:00Z"), ("A", "2024-02-10T06:00:00Z"), ("EDGE", "2024-02-08T06:00:00Z"), ("OLD", "2024-02-07T05:59:59Z")]
    router, _ = _router(payouts, state=saved)
    list(router.stream_slices())

    state = router.get_stream_state()

    assert state == {
        "payouts": {
            "payout_date": "2024-02-12T06:00:00Z",
            "payouts_read": {"NEW": "2024-02-12T06:00:00Z", "A": "2024-02-10T06:00:00Z", "EDGE": "2024-02-08T06:00:00Z"},
        }
    }


def test_the_saved_list_carries_on_into_the_state_before_any_payout_is_read():
    # A sync that fails before its first partition closes must not leave a state that forgets them.
    saved = {"payout_date": "2024-02-10T06:00:00Z", "payouts_read": {"A": "2024-02-10T06:00:00Z", "B": "2024-02-09T06:00:00Z"}}
    router, _ = _router([("NEW", "2024-02-11T06:00:00Z"), ("A", "2024-02-10T06:00:00Z")], state=saved)
    slices = router.stream_slices()

    next(slices)

    assert router.get_stream_state()["payouts"]["payouts_read"] == {
        "A": "2024-02-10T06:00:00Z", "B": "2024-02-09T06:00:00Z", "NEW": "2024-02-11T06:00:00Z"
    }


def test_saved_payouts_fall_off_the_list_once_newer_payouts_leave_them_behind_the_remembered_days():
    saved = {"payout_date": "2024-02-10T06:00:00Z", "payouts_read": {"A": "2024-02-10T06:00:00Z", "B": "2024-02-07T06:00:00Z"}}
    router, _ = _router([("NEW", "2024-02-13T06:00:00Z")], state=saved)
    list(router.stream_slices())

    assert router.get_stream_state()["payouts"]["payouts_read"] == {"A": "2024-02-10T06:00:00Z", "NEW": "2024-02-13T06:00:00Z"}


def test_older_payouts_are_dropped_from_the_list_when_a_newer_one_arrives():
    # Oldest window first, newest first inside each window: the list ends with the last days only.
    payouts = [("W1-B", "2024-01-20T06:00:00Z"), ("W1-A", "2024-01-10T06:00:00Z"), ("W2-B", "2024-03-01T06:00:00Z"), ("W2-A", "2024-02-28T06:00:00Z")]
    router, _ = _router(payouts)
    list(router.stream_slices())

    assert router.get_stream_state()["payouts"]["payouts_read"] == {"W2-B": "2024-03-01T06:00:00Z", "W2-A": "2024-02-28T06:00:00Z"}


def test_each_state_taken_while_slicing_lists_the_payouts_sliced_so_far():
    router, _ = _router([("A", "2024-02-10T06:00:00Z"), ("B", "2024-02-09T06:00:00Z")])
    seen = []
    for _ in router.stream_slices():
        seen.append(sorted(router.get_stream_state()["payouts"]["payouts_read"]))

    # The CDK commits the state taken after a slice only once that slice's partition is closed.
    assert seen == [["A"], ["A", "B"]]


def test_the_remembered_days_follow_the_configured_lookback():
    payouts = [("NEW", "2024-02-20T06:00:00Z"), ("TEN", "2024-02-10T06:00:00Z"), ("TWENTY", "2024-01-31T06:00:00Z")]
    router, _ = _router(payouts)
    router_long = UnreadPayoutsPartitionRouter(
        underlying_partition_router=PayoutsRouter(payouts), config={"lookback_window_days": 14}, parameters={},
        remember_days="{{ config.get('lookback_window_days', 3) + 1 }}", cursor_datetime_formats=cursor_datetime_formats(),
    )
    list(router.stream_slices())
    list(router_long.stream_slices())

    assert sorted(router.get_stream_state()["payouts"]["payouts_read"]) == ["NEW"]
    assert sorted(router_long.get_stream_state()["payouts"]["payouts_read"]) == ["NEW", "TEN"]


def test_request_options_come_from_the_payouts_router():
    router, underlying = _router([("A", "2024-02-10T06:00:00Z")])
    (stream_slice,) = router.stream_slices()

    assert router.get_request_params(stream_state={}, stream_slice=stream_slice, next_page_token=None) == {"payment_reference": "A"}
    assert underlying.request_params_calls[0]["stream_slice"] is stream_slice


@pytest.mark.parametrize("saved", [None, {"payout_date": "x"}, {"payout_date": "x", "payouts_read": ["A"]}, {"payout_date": "x", "payouts_read": None}])
def test_a_missing_or_malformed_list_means_every_payout_is_read(saved):
    router, _ = _router([("A", "2024-02-10T06:00:00Z")], state=saved)

    assert _refs(router) == ["A"]
