"""Config mistakes are answered with a sentence that says what to change, from one place each: what the spec states
(required fields, types, enums, ranges) by the CDK's check against the spec, before any component runs, in both
forms; the rest by components.config_problem, which the authenticator raises as a config error before any request
(unit_tests/test_probe.py)."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml

from airbyte_cdk.models import ConnectorSpecification, FailureType
from airbyte_cdk.sources.utils.schema_helpers import check_config_against_spec_or_exit
from airbyte_cdk.utils.traced_exception import AirbyteTracedException
from components import config_problem, start_date_problem
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
        ({"base_url_override": "http://klarna-proxy.example.com"}, "would send the Klarna password unencrypted"),
        ({"base_url_override": "ftp://x"}, "is not a URL"),
        ({"platform": "kustom", "region": "na"}, "region 'na' applies to Klarna only"),
        ({"platform": "kustom", "region": "oc", "playground": True}, "remove region (or set it to eu) when platform is kustom"),
        ({"platform": "kustom", "password": "kco_test_api_c2VjcmV0"}, "switch playground on"),
        ({"platform": "kustom", "password": "kco_live_api_c2VjcmV0", "playground": True}, "switch playground off"),
        ({"password": "kco_live_api_c2VjcmV0"}, "set platform to kustom"),
    ],
)
def test_each_mistake_gets_its_sentence(change, expected):
    config = {**GOOD, **change}
    # The start_date is the spec validation's (StartDateCheck: start_date_problem), the rest config_problem's.
    problem = start_date_problem(config["start_date"], now=NOW) if "start_date" in change else config_problem(config)

    assert problem is not None and expected in problem


def _spec() -> ConnectorSpecification:
    manifest = yaml.safe_load(connector_file("manifest.yaml").read_text())
    return ConnectorSpecification(connectionSpecification=manifest["spec"]["connection_specification"])


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"region": "mars"}, "'mars' is not one of ['eu', 'na', 'oc']"),
        ({"password": None}, "None is not of type 'string'"),
        ({"username": None}, "None is not of type 'string'"),
        ({"concurrency": 0}, "0 is less than the minimum of 1"),
        ({"concurrency": 31}, "31 is greater than the maximum of 30"),
        ({"lookback_window_days": -1}, "-1 is less than the minimum of 0"),
        ({"max_requests_per_second": 500}, "500 is greater than the maximum of 200"),
        ({"rate_limit_reserve_percent": 95}, "95 is greater than the maximum of 90"),
        ({"rate_limit_reserve_percent": 12.5}, "12.5 is not of type 'integer'"),
        ({"playground": "yes"}, "'yes' is not of type 'boolean'"),
        ({"include_personal_data": "true"}, "'true' is not of type 'boolean'"),
        ({"platform": "klarnaa"}, "'klarnaa' is not one of ['klarna', 'kustom']"),
    ],
)
def test_what_the_spec_states_is_checked_against_the_spec_before_any_component_and_only_there(change, expected):
    config = {**GOOD, **change}
    for name, value in change.items():
        if value is None:
            del config[name]  # missing, as a config without the field is
            expected = f"'{name}' is a required property"

    with pytest.raises(AirbyteTracedException) as raised:
        check_config_against_spec_or_exit(config, _spec())

    assert raised.value.failure_type == FailureType.config_error
    assert raised.value.message == f"Config validation error: {expected}"
    assert config_problem(config) is None  # not repeated in the components


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
    assert config_problem({**GOOD, **change}) is None and start_date_problem(change.get("start_date", GOOD["start_date"]), now=NOW) is None


@pytest.mark.parametrize("password", ["kco_test_api_c2VjcmV0", "kco_live_api_c2VjcmV0"])
def test_a_kustom_key_mistake_never_quotes_the_key(password):
    for change in ({"platform": "kustom", "playground": password.startswith("kco_live_")}, {"platform": "klarna"}):
        problem = config_problem({**GOOD, **change, "password": password})

        assert problem is not None and "c2VjcmV0" not in problem


def test_the_concurrency_the_spec_shows_as_default_is_the_one_the_connector_uses():
    import re

    import yaml

    manifest = yaml.safe_load(connector_file("manifest.yaml").read_text())
    spec_default = manifest["spec"]["connection_specification"]["properties"]["concurrency"]["default"]
    fallback = re.fullmatch(r"\{\{ config\.get\('concurrency'\) or (\d+) \}\}", manifest["concurrency_level"]["default_concurrency"])

    assert fallback and int(fallback.group(1)) == spec_default
    assert spec_default <= manifest["concurrency_level"]["max_concurrency"]
