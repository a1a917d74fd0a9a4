"""The `source-klarna` command (source_klarna.run), a thin launcher of manifest.yaml + components.py, and
what components.py sets up for every runtime: the GIL switch interval (once a sync builds its streams), the region "us" migration of
the spec, the Basic token masked in the output."""

from __future__ import annotations

import base64
import importlib.util
import json
import sys

import pytest

from airbyte_cdk.models import ConfiguredAirbyteCatalogSerializer, SyncMode
from airbyte_cdk.sources.declarative.parsers.custom_code_compiler import SDM_COMPONENTS_MODULE_NAME
from airbyte_cdk.utils.airbyte_secrets_utils import filter_secrets

from source_klarna.run import SourceKlarna, connector_file, register_components, run
from unit_tests.mock_server import response_builder as rb
from unit_tests.mock_server.config import PASSWORD, ConfigBuilder
from unit_tests.mock_server.klarna_mock import KlarnaMock
from unit_tests.mock_server.request_builder import KlarnaRequestBuilder
from unit_tests.mock_server.reader import catalog


def test_spec_prints_the_manifests_spec(capsys):
    run(["spec"])

    spec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert spec["type"] == "SPEC"
    assert spec["spec"]["connectionSpecification"]["title"] == "Klarna Spec"


def test_the_components_are_registered_under_the_runtimes_module_name_from_the_connectors_file():
    module = register_components()

    assert sys.modules[SDM_COMPONENTS_MODULE_NAME] is module
    assert module.__file__ == str(connector_file("components.py"))
    assert register_components() is module  # loaded once


def test_components_lengthen_the_gil_switch_interval_when_a_sync_builds_its_authenticator_not_on_import(requests_mock):
    # Why 50 ms and not CPython's 5 ms: components.SWITCH_INTERVAL's comment and bench/ (CPU-bound workers).
    default = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        spec = importlib.util.spec_from_file_location("components_imported_again", connector_file("components.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert sys.getswitchinterval() == pytest.approx(0.005, abs=1e-4)  # importing changes nothing of the process

        requests_mock.get(KlarnaRequestBuilder.for_region("eu").probe_url(), json=rb.page("payouts", []))
        SourceKlarna(config=ConfigBuilder().build()).streams(ConfigBuilder().build())
        assert sys.getswitchinterval() == pytest.approx(0.05, abs=1e-4)

        sys.setswitchinterval(0.2)  # a host process that chose a longer one keeps it
        SourceKlarna(config=ConfigBuilder().build()).streams(ConfigBuilder().build())
        assert sys.getswitchinterval() == pytest.approx(0.2, abs=1e-4)
    finally:
        sys.setswitchinterval(default)


def test_a_config_saying_region_us_is_read_as_na(requests_mock):
    # Airbyte's Klarna connector 0.2.x called Klarna's na region "us".
    requests_mock.get(KlarnaRequestBuilder.for_region("na").probe_url(), json=rb.page("payouts", []))
    config = ConfigBuilder().with_region("us").build()

    source = SourceKlarna(config=config)

    assert source._config["region"] == "na"
    source.streams(source._config)  # builds the authenticator: its probe goes to the na host
    assert [r.hostname for r in requests_mock.request_history] == ["api-na.klarna.com"]


def test_other_regions_are_left_as_they_are():
    for region in ("eu", "na", "oc"):
        assert SourceKlarna(config=ConfigBuilder().with_region(region).build())._config["region"] == region


def test_a_read_through_the_command_masks_the_password_and_the_basic_token(requests_mock, tmp_path, capsys):
    klarna = KlarnaMock(requests_mock)
    klarna.serve_payouts([rb.payout("A", "2024-02-01T06:00:00Z")])
    config = ConfigBuilder().build()
    token = base64.b64encode(f"{config['username']}:{PASSWORD}".encode()).decode()
    config_path, catalog_path = tmp_path / "config.json", tmp_path / "catalog.json"
    config_path.write_text(json.dumps(config))
    catalog_path.write_text(json.dumps(ConfiguredAirbyteCatalogSerializer.dump(catalog({"payouts": SyncMode.full_refresh}))))
    run(["read", "--config", str(config_path), "--catalog", str(catalog_path)])

    out = capsys.readouterr().out
    records = [json.loads(line) for line in out.splitlines() if line.startswith('{"type":"RECORD"')]
    assert [r["record"]["data"]["payment_reference"] for r in records] == ["A"]
    assert PASSWORD not in out and token not in out
    # The entrypoint lists the spec's secrets (the password); the authenticator adds the Basic token.
    assert filter_secrets(f"{PASSWORD} Basic {token}") == "**** Basic ****"
