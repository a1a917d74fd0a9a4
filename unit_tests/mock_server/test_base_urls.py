"""The host follows platform, region and environment; an override wins; the auth header is Basic."""

from __future__ import annotations

import base64

import pytest
from airbyte_cdk.models import SyncMode

from unit_tests.mock_server import response_builder as rb
from unit_tests.mock_server.config import PASSWORD, ConfigBuilder
from unit_tests.mock_server.klarna_mock import KlarnaMock
from unit_tests.mock_server.reader import read_streams, records_of
from unit_tests.mock_server.request_builder import HOSTS, KlarnaRequestBuilder


@pytest.mark.parametrize("platform, region, playground", sorted(HOSTS))
def test_platform_region_and_playground_pick_the_host(requests_mock, platform, region, playground):
    klarna = KlarnaMock(requests_mock, KlarnaRequestBuilder.for_region(region, playground, platform))
    klarna.serve_payouts([rb.payout("A", "2024-02-01T06:00:00Z")])
    config = ConfigBuilder().with_fields(platform=platform).with_region(region).with_playground(playground).build()

    output = read_streams(config, {"payouts": SyncMode.full_refresh})

    assert [r["payment_reference"] for r in records_of(output, "payouts")] == ["A"]
    assert {r.url.split("/settlements")[0] for r in requests_mock.request_history} == {HOSTS[(platform, region, playground)]}


@pytest.mark.parametrize("playground", [False, True])
def test_kustom_without_a_region_uses_kustoms_host(requests_mock, playground):
    klarna = KlarnaMock(requests_mock, KlarnaRequestBuilder.for_region("eu", playground, "kustom"))
    klarna.serve_payouts([rb.payout("A", "2024-02-01T06:00:00Z")])
    config = ConfigBuilder().with_fields(platform="kustom").without("region").with_playground(playground).build()

    output = read_streams(config, {"payouts": SyncMode.full_refresh})

    assert len(records_of(output, "payouts")) == 1
    assert {r.hostname for r in requests_mock.request_history} == {"api.playground.kustom.co" if playground else "api.kustom.co"}


def test_the_spec_and_the_metadata_allow_exactly_the_hosts_the_connector_picks():
    """Airbyte Cloud lets a connector reach only the hosts metadata.yaml allows."""
    import yaml
    from pathlib import Path
    from urllib.parse import urlparse

    metadata = yaml.safe_load((Path(__file__).resolve().parents[2] / "metadata.yaml").read_text())
    allowed = set(metadata["data"]["allowedHosts"]["hosts"]) - {"${base_url_override}"}

    assert allowed == {urlparse(host).hostname for host in HOSTS.values()}


def test_base_url_override_wins_and_requests_carry_basic_auth(requests_mock):
    klarna = KlarnaMock(requests_mock, KlarnaRequestBuilder("https://klarna-proxy.example.com/prefix"))
    klarna.serve_payouts([rb.payout("A", "2024-02-01T06:00:00Z")])
    config = ConfigBuilder().with_fields(base_url_override="https://klarna-proxy.example.com/prefix").build()

    output = read_streams(config, {"payouts": SyncMode.full_refresh})

    assert len(records_of(output, "payouts")) == 1
    expected = "Basic " + base64.b64encode(f"{config['username']}:{PASSWORD}".encode()).decode()
    assert {r.headers["Authorization"] for r in requests_mock.request_history} == {expected}
