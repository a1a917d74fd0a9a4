"""RateLimitPacer keeps a merchant's shared Klarna quota out of the red, on a simulated clock.

`KlarnaQuota` models what Klarna does (fixed windows of `limit` requests, shared with the merchant's
other traffic, 429 for everyone once spent) and answers with Klarna's headers; the pacer's sleeps move
the simulated clock, so every figure here is exact and the tests take no wall time.
"""

import math
from typing import List, Optional

import pytest
import requests

from components import RATE_LIMIT_PACERS, PacedBasicHttpAuthenticator, RateLimitPacer


class SimulatedClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: List[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def answer(status: int = 200, **headers: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers)
    return response


class KlarnaQuota:
    """Klarna's per-merchant limit: `limit` requests per `window` seconds, counted together with the
    merchant's other traffic (`others_per_second`, spread evenly); over it, every request gets 429."""

    def __init__(self, clock: SimulatedClock, limit: int = 200, others_per_second: float = 0.0, window: float = 1.0) -> None:
        self.clock, self.limit, self.others, self.window = clock, limit, others_per_second, window
        self.ours_in_window: dict = {}
        self.ours_refused = 0
        self.lowest_remaining = limit

    def _window_of(self, moment: float) -> int:
        return int(moment // self.window)

    def others_rate(self, moment: float) -> float:
        return self.others(moment) if callable(self.others) else self.others

    def others_used(self, moment: float) -> int:
        return math.floor(self.others_rate(moment) * (moment - self._window_of(moment) * self.window))

    def request(self) -> requests.Response:
        now = self.clock.now
        window = self._window_of(now)
        ours = self.ours_in_window.get(window, 0)
        used = ours + self.others_used(now)
        reset = str(max(1, math.ceil((window + 1) * self.window - now)))
        headers = {"X-Ratelimit-Limit": f"{self.limit}, {self.limit};w={self.window:g}", "X-Ratelimit-Reset": reset}
        if used >= self.limit:
            self.ours_refused += 1
            return answer(429, **headers, **{"X-Ratelimit-Remaining": "0", "Retry-After": reset})
        self.ours_in_window[window] = ours + 1
        remaining = self.limit - used - 1
        self.lowest_remaining = min(self.lowest_remaining, remaining)
        return answer(200, **headers, **{"X-Ratelimit-Remaining": str(remaining)})

    def others_refused(self) -> int:
        """The other traffic's requests that found the quota spent, over every window so far."""
        refused = 0
        for window, ours in self.ours_in_window.items():
            refused += max(0, math.floor(self.others_rate(window * self.window) * self.window) + ours - self.limit)
        return refused


def drive(pacer: RateLimitPacer, quota: KlarnaQuota, seconds: float) -> int:
    """Sends one request after another for `seconds` of simulated time; returns how many were sent."""
    sent = 0
    while quota.clock.now < seconds:
        pacer.wait_turn()
        pacer.observe(quota.request())
        sent += 1
    return sent


def test_without_rate_limit_headers_requests_are_spaced_at_the_cap():
    clock = SimulatedClock()
    pacer = RateLimitPacer(assumed_limit=200, reserve=0.2, clock=clock, sleep=clock.sleep)

    sent_at = []
    for _ in range(161):
        pacer.wait_turn()
        sent_at.append(clock.now)
        pacer.observe(answer(200))

    # The first request goes at once; its answer says that Klarna's headers are missing, so every
    # later one goes 1/160 s after the one before, not at the slow start's spacing.
    assert pacer.cap == 160
    gaps = [later - earlier for earlier, later in zip(sent_at, sent_at[1:])]
    assert sent_at[0] == 0
    assert gaps == pytest.approx([1 / 160] * 160)
    assert max(clock.slept) <= RateLimitPacer.NAP  # in naps, to notice a change of rate


def test_an_explicit_cap_wins_over_the_default_and_is_never_exceeded():
    clock = SimulatedClock()
    pacer = RateLimitPacer(assumed_limit=200, reserve=0.2, cap=25, clock=clock, sleep=clock.sleep)
    quota = KlarnaQuota(clock)

    sent_at = []
    while clock.now < 10:
        pacer.wait_turn()
        sent_at.append(clock.now)
        pacer.observe(quota.request())

    assert pacer.cap == 25
    # Never closer than 1/25 s (within the float error of the simulated clock), so at most 25 in any second.
    assert min(later - earlier for earlier, later in zip(sent_at, sent_at[1:])) >= 1 / 25 - 1e-9
    assert len(sent_at) <= 25 * 10 + 2


def test_with_no_other_traffic_it_reaches_the_cap_and_keeps_the_reserve():
    clock = SimulatedClock()
    pacer = RateLimitPacer(assumed_limit=200, reserve=0.2, clock=clock, sleep=clock.sleep)
    quota = KlarnaQuota(clock, limit=200)

    drive(pacer, quota, seconds=2)  # slow start, then the first estimate
    start, sent_before = clock.now, sum(quota.ours_in_window.values())
    drive(pacer, quota, seconds=12)
    rate = (sum(quota.ours_in_window.values()) - sent_before) / (clock.now - start)

    assert rate == pytest.approx(160, rel=0.05)
    assert quota.ours_refused == 0
    assert quota.lowest_remaining >= 200 * 0.2 - 1


@pytest.mark.parametrize("others", [100, 150, 170])
def test_it_leaves_the_merchants_other_traffic_its_share_and_is_never_refused(others):
    clock = SimulatedClock()
    pacer = RateLimitPacer(assumed_limit=200, reserve=0.2, clock=clock, sleep=clock.sleep)
    quota = KlarnaQuota(clock, limit=200, others_per_second=others)

    drive(pacer, quota, seconds=30)
    steady = [count for window, count in quota.ours_in_window.items() if window >= 5]

    assert quota.ours_refused == 0
    # At most 1 % of the others' requests meet a spent limit (the feedback loop's contract, as in
    # test_rate_limit_accountings.py): the loop learns the others' share from Remaining, it cannot know it ahead.
    assert quota.others_refused() <= others * 30 / 100
    # The share the others leave, less the reserve (at least the pacer's floor of 1 % of the limit): at least
    # half of it, and at most 5 % of the limit more. The pacer sees Remaining only in its own answers: the
    # others' requests after its last answer of a window go unseen, so at a low rate (a request every 1/10 s)
    # it keeps the reserve as it sees it, which is a little less than the reserve at the window's end.
    expected = max(200 * 0.8 - others, 2)
    assert expected / 2 <= sum(steady) / len(steady) <= expected + 200 * 0.05


def test_when_the_others_take_everything_it_trickles_and_holds_at_the_reserve():
    clock = SimulatedClock()
    pacer = RateLimitPacer(assumed_limit=200, reserve=0.2, clock=clock, sleep=clock.sleep)
    quota = KlarnaQuota(clock, limit=200, others_per_second=195)

    sent = drive(pacer, quota, seconds=20)
    after_the_start = sum(count for window, count in quota.ours_in_window.items() if window >= 2)

    assert quota.ours_refused == 0
    assert quota.others_refused() <= 195 * 20 / 100  # at most 1 % of theirs
    # Progress, at the floor once the first answers have shown the others' share: never stuck, never pushing the
    # merchant over (the start, a tenth of what the first answer said was left, is test_the_first_answer_...).
    assert sent >= 10 and after_the_start <= 2 * 18 + 10


def test_when_the_others_stop_it_speeds_up_again_within_a_few_windows():
    clock = SimulatedClock()
    pacer = RateLimitPacer(assumed_limit=200, reserve=0.2, clock=clock, sleep=clock.sleep)
    quota = KlarnaQuota(clock, limit=200, others_per_second=lambda moment: 190 if moment < 10 else 0)

    drive(pacer, quota, seconds=20)

    assert quota.ours_refused == 0
    assert quota.others_refused() <= 190 * 10 / 100  # at most 1 % of theirs
    assert sum(quota.ours_in_window.get(w, 0) for w in range(5, 10)) <= 5 * 10
    assert all(quota.ours_in_window[w] >= 140 for w in range(14, 20)), quota.ours_in_window


def test_a_429_holds_every_request_until_retry_after():
    clock = SimulatedClock()
    pacer = RateLimitPacer(assumed_limit=200, reserve=0.2, clock=clock, sleep=clock.sleep)

    pacer.wait_turn()
    pacer.observe(answer(429, **{"Retry-After": "3"}))
    pacer.wait_turn()

    assert clock.now == pytest.approx(3.0)


def test_remaining_at_half_the_reserve_holds_until_the_window_resets():
    clock = SimulatedClock()
    pacer = RateLimitPacer(assumed_limit=200, reserve=0.2, clock=clock, sleep=clock.sleep)

    pacer.wait_turn()
    pacer.observe(answer(200, **{"X-Ratelimit-Limit": "200, 200;w=1", "X-Ratelimit-Remaining": "20", "X-Ratelimit-Reset": "1"}))
    pacer.wait_turn()

    assert clock.now == pytest.approx(1.0)


def test_the_first_answer_starts_it_at_a_share_of_what_remaining_leaves_above_the_reserve():
    clock = SimulatedClock()
    pacer = RateLimitPacer(assumed_limit=200, reserve=0.2, clock=clock, sleep=clock.sleep)

    assert pacer.rate == 200 * RateLimitPacer.SLOW_START_SHARE  # before any answer
    pacer.wait_turn()
    pacer.observe(answer(200, **{"X-Ratelimit-Limit": "200, 200;w=1", "X-Ratelimit-Remaining": "140", "X-Ratelimit-Reset": "1"}))

    assert pacer.rate == pytest.approx(RateLimitPacer.FIRST_SHARE * (140 - 40))


def test_a_fixed_windows_first_answer_cannot_show_the_others_so_the_first_window_stays_small():
    clock = SimulatedClock()
    pacer = RateLimitPacer(assumed_limit=200, reserve=0.2, clock=clock, sleep=clock.sleep)
    quota = KlarnaQuota(clock, limit=200, others_per_second=150)

    drive(pacer, quota, seconds=1)

    # The first answer comes at the window's start (Remaining 199: the others' 150 are yet to come).
    assert quota.ours_in_window[0] <= RateLimitPacer.FIRST_SHARE * (199 - 40) + 2


def test_the_limit_and_window_come_from_klarnas_headers():
    clock = SimulatedClock()
    pacer = RateLimitPacer(assumed_limit=200, reserve=0.2, clock=clock, sleep=clock.sleep)

    pacer.observe(answer(200, **{"X-Ratelimit-Limit": "50, 50;w=2", "X-Ratelimit-Remaining": "50", "X-Ratelimit-Reset": "2"}))

    assert pacer.cap == 20  # 50 less the 20 % reserve per 2-second window: 40 per window, 20/s
    # The start, in the limit Klarna names: a tenth of what Remaining leaves above the reserve, per 2-second window.
    assert pacer.rate == pytest.approx(RateLimitPacer.FIRST_SHARE * (50 - 10) / 2)


@pytest.mark.parametrize(
    "headers",
    [{"X-Ratelimit-Remaining": "many"}, {"X-Ratelimit-Limit": ";w=x", "X-Ratelimit-Remaining": ""}, {"X-Ratelimit-Reset": "soon"}],
)
def test_headers_it_cannot_read_change_nothing(headers):
    clock = SimulatedClock()
    pacer = RateLimitPacer(assumed_limit=200, reserve=0.2, clock=clock, sleep=clock.sleep)

    pacer.observe(answer(200, **headers))

    assert pacer.rate == pacer.cap == 160


def make_authenticator(config, **settings) -> PacedBasicHttpAuthenticator:
    return PacedBasicHttpAuthenticator(username="{{ config['username'] }}", password="{{ config['password'] }}", config=config, parameters={}, **settings)


def test_every_stream_of_one_sync_shares_one_pacer_and_another_sync_gets_its_own():
    config = {"username": "K1_user", "password": "pw"}

    first, second = make_authenticator(config), make_authenticator(config)
    other_sync = make_authenticator(dict(config))

    assert first.pacer is second.pacer
    assert other_sync.pacer is not first.pacer


@pytest.mark.parametrize(
    "settings, cap",
    [
        ({}, 160),
        ({"assumed_limit": "{{ 50 if config.get('playground') else 200 }}"}, 40),
        ({"reserve_percent": "{{ config.get('rate_limit_reserve_percent', 20) }}"}, 190),
        ({"max_requests_per_second": "{{ config.get('max_requests_per_second') or '' }}"}, 160),
    ],
)
def test_the_settings_come_from_the_config(settings, cap):
    config = {"username": "K1_user", "password": "pw", "playground": True, "rate_limit_reserve_percent": 5}

    assert make_authenticator(config, **settings).pacer.cap == cap


def test_the_authenticator_paces_signs_and_learns_from_each_answer():
    config = {"username": "K1_user", "password": "pw"}
    authenticator = make_authenticator(config)
    request = requests.Request("GET", "https://api.klarna.com/settlements/v1/payouts").prepare()

    signed = authenticator(request)
    authenticator.update_from_response(signed, answer(429, **{"Retry-After": "7"}))

    assert signed.headers["Authorization"] == "Basic SzFfdXNlcjpwdw=="
    assert authenticator.pacer._hold_until >= 7  # the next request waits out the 429


def test_the_basic_token_is_registered_as_a_secret(monkeypatch):
    from airbyte_cdk.utils import airbyte_secrets_utils

    monkeypatch.setattr(airbyte_secrets_utils, "__SECRETS_FROM_CONFIG", [], raising=False)
    authenticator = make_authenticator({"username": "K1_user", "password": "pw"})

    authenticator(requests.Request("GET", "https://api.klarna.com/x").prepare())

    assert airbyte_secrets_utils.filter_secrets("header Basic SzFfdXNlcjpwdw== sent") == "header Basic **** sent"


def test_the_basic_token_is_rendered_when_the_authenticator_is_built_not_per_request(monkeypatch):
    authenticator = make_authenticator({"username": "K1_user", "password": "pw"})
    renders = []
    username = authenticator._username
    monkeypatch.setattr(authenticator, "_username", type("Counting", (), {
        "eval": lambda self, config, **kwargs: renders.append(1) or username.eval(config, **kwargs)})())

    for _ in range(3):
        signed = authenticator(requests.Request("GET", "https://api.klarna.com/x").prepare())

    assert signed.headers["Authorization"] == "Basic SzFfdXNlcjpwdw=="
    assert renders == []


def teardown_module() -> None:
    RATE_LIMIT_PACERS.__init__()  # the pacers these tests made stay out of later tests


def test_the_authenticator_refuses_a_config_mistake_in_words_before_any_request():
    from airbyte_cdk.utils.traced_exception import AirbyteTracedException

    with pytest.raises(AirbyteTracedException) as raised:
        make_authenticator({"username": "K1_user", "password": "pw", "base_url_override": "http://klarna-proxy.example.com"})

    assert "would send the Klarna password unencrypted" in raised.value.message and raised.value.failure_type.value == "config_error"
