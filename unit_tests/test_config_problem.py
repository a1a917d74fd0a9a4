"""Config mistakes are answered with a sentence that says what to change (components.config_problem,
which the authenticator raises as a config error before any request: unit_tests/test_probe.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from components import config_problem
from source_klarna.run import connector_file

GOOD = {"username": "K1_user", "password": "pw", "region": "eu", "playground": False, "start_date": "2024-01-01T00:00:00Z"}
NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"start_date": "2024-01-01T00:00:00"}, "write it as YYYY-MM-DDTHH:MM:SSZ"),
        ({"start_date": "01/02/2024"}, "write it as YYYY-MM-DDTHH:MM:SSZ"),
        ({"start_date": "2024-02-30T00:00:00Z"}, "is not a UTC date-time"),
        ({"start_date": "2027-01-01T00:00:00Z"}, "lies in the future"),
        ({"region": "mars"}, "use one of eu, na or oc"),
        ({"password": ""}, "The password is missing"),
        ({"username": None}, "The username is missing"),
        ({"base_url_override": "http://klarna-proxy.example.com"}, "would send the Klarna password unencrypted"),
        ({"base_url_override": "ftp://x"}, "is not a URL"),
        ({"concurrency": 0}, "concurrency must be a whole number from 1 to 30"),
        ({"concurrency": 31}, "from 1 to 30"),
        ({"lookback_window_days": -1}, "lookback_window_days must be a whole number from 0 to 90"),
        ({"max_requests_per_second": 500}, "from 1 to 200"),
        ({"rate_limit_reserve_percent": 95}, "rate_limit_reserve_percent must be a whole number from 0 to 90"),
        ({"rate_limit_reserve_percent": 12.5}, "from 0 to 90"),
        ({"playground": "yes"}, "playground must be true or false"),
        ({"include_personal_data": "true"}, "include_personal_data must be true or false"),
        ({"platform": "klarnaa"}, "use klarna, or kustom if your API credentials come from the Kustom Portal"),
        ({"platform": "kustom", "region": "na"}, "region 'na' applies to Klarna only"),
        ({"platform": "kustom", "region": "oc", "playground": True}, "remove region (or set it to eu) when platform is kustom"),
        ({"platform": "kustom", "password": "kco_test_api_c2VjcmV0"}, "switch playground on"),
        ({"platform": "kustom", "password": "kco_live_api_c2VjcmV0", "playground": True}, "switch playground off"),
        ({"password": "kco_live_api_c2VjcmV0"}, "set platform to kustom"),
    ],
)
def test_each_mistake_gets_its_sentence(change, expected):
    problem = config_problem({**GOOD, **change}, now=NOW)

    assert problem is not None and expected in problem


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"start_date": None},
        {"start_date": "2024-01-01"},
        {"base_url_override": "http://127.0.0.1:8080"},
        {"base_url_override": "http://localhost:9000/base"},
        {"base_url_override": "https://klarna-proxy.example.com"},
        {"region": "oc", "playground": True, "concurrency": 30, "lookback_window_days": 0},
        {"include_personal_data": True},
        {"include_personal_data": False},
        {"rate_limit_reserve_percent": 0, "max_requests_per_second": 200},
        {"platform": "klarna", "region": "na"},
        {"platform": "kustom"},
        {"platform": "kustom", "region": "eu", "password": "kco_live_api_c2VjcmV0"},
        {"platform": "kustom", "playground": True, "password": "kco_test_api_c2VjcmV0"},
        {"platform": "kustom", "region": None},
    ],
)
def test_good_configs_pass(change):
    assert config_problem({**GOOD, **change}, now=NOW) is None


@pytest.mark.parametrize("password", ["kco_test_api_c2VjcmV0", "kco_live_api_c2VjcmV0"])
def test_a_kustom_key_mistake_never_quotes_the_key(password):
    for change in ({"platform": "kustom", "playground": password.startswith("kco_live_")}, {"platform": "klarna"}):
        problem = config_problem({**GOOD, **change, "password": password}, now=NOW)

        assert problem is not None and "c2VjcmV0" not in problem


def test_the_concurrency_the_spec_shows_as_default_is_the_one_the_connector_uses():
    import re

    import yaml

    manifest = yaml.safe_load(connector_file("manifest.yaml").read_text())
    spec_default = manifest["spec"]["connection_specification"]["properties"]["concurrency"]["default"]
    fallback = re.fullmatch(r"\{\{ config\.get\('concurrency'\) or (\d+) \}\}", manifest["concurrency_level"]["default_concurrency"])

    assert fallback and int(fallback.group(1)) == spec_default
    assert spec_default <= manifest["concurrency_level"]["max_concurrency"]
