"""Airbyte's connector QA rules, applied to this repository as Airbyte applies them to a connector
directory (metadata.yaml, icon.svg, manifest.yaml, components.py) and its documentation pages
(docs/klarna.md, docs/klarna-migrations.md, here in this repository's docs/).

Each test names the published rule it implements (repository and path). They are re-implemented here,
without network or new packages: the metadata schema as a hand-written subset validated with the
jsonschema package the CDK already installs.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ElementTree
from datetime import date, timedelta
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "klarna.md"
MIGRATIONS = ROOT / "docs" / "klarna-migrations.md"

# Airbyte's own Klarna connector: the connector this one replaces, its last version
# (airbytehq/airbyte: docs/integrations/sources/klarna.md, changelog; metadata.yaml definitionId).
UPSTREAM_DEFINITION_ID = "60c24725-00ae-490c-991d-55b78c3197e0"
UPSTREAM_LAST_VERSION = (0, 3, 24)


def _metadata():
    return yaml.safe_load((ROOT / "metadata.yaml").read_text())


def _version(text):
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", text)
    assert match, f"{text!r} is not a MAJOR.MINOR.PATCH version"
    return tuple(int(part) for part in match.groups())


# --- metadata.yaml against the metadata schema ---------------------------------------------------
# airbytehq/airbyte: airbyte-ci/connectors/metadata_service/lib/metadata_service/models/src/
# ConnectorMetadataDefinitionV0.yaml, ConnectorReleases.yaml, ConnectorBreakingChanges.yaml,
# RemoteRegistries.yaml, RegistryOverrides.yaml, AllowedHosts.yaml, AirbyteInternal.yaml,
# ConnectorBuildOptions.yaml, ConnectorTestSuiteOptions.yaml, SuggestedStreams.yaml, SupportLevel.yaml,
# ReleaseStage.yaml (as bundled in airbytehq/airbyte-python-cdk:
# airbyte_cdk/test/models/connector_metadata/generated/metadata_schema.json). The subset a source uses;
# every object closed (additionalProperties: false) where the schema closes it.
_REGISTRY_OVERRIDE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["enabled"],
    "properties": {
        "enabled": {"type": "boolean"},
        "name": {"type": "string"},
        "dockerRepository": {"type": "string"},
        "dockerImageTag": {"type": "string"},
        "documentationUrl": {"type": "string"},
        "connectorSubtype": {"type": "string"},
        "allowedHosts": {"type": "object"},
        "suggestedStreams": {"type": "object"},
        "resourceRequirements": {"type": "object"},
    },
}
_BREAKING_CHANGE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["upgradeDeadline", "message"],
    "properties": {
        "upgradeDeadline": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
        "message": {"type": "string"},
        "deadlineAction": {"type": "string", "enum": ["auto_upgrade", "disable"]},
        "migrationDocumentationUrl": {"type": "string", "pattern": "^https://"},
        "scopedImpact": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["scopeType", "impactedScopes"],
                "properties": {
                    "scopeType": {"const": "stream"},
                    "impactedScopes": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                },
            },
        },
    },
}
METADATA_SCHEMA = {
    "type": "object",
    "required": ["metadataSpecVersion", "data"],
    "additionalProperties": False,
    "properties": {
        "metadataSpecVersion": {"type": "string"},
        "data": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "name",
                "definitionId",
                "connectorType",
                "dockerRepository",
                "dockerImageTag",
                "license",
                "documentationUrl",
                "githubIssueLabel",
                "connectorSubtype",
                "releaseStage",
            ],
            "properties": {
                "name": {"type": "string"},
                "icon": {"type": "string"},
                "definitionId": {"type": "string"},
                "connectorBuildOptions": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"baseImage": {"type": "string"}},
                },
                "connectorTestSuitesOptions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["suite"],
                        "additionalProperties": False,
                        "properties": {
                            "suite": {"enum": ["unitTests", "integrationTests", "acceptanceTests", "liveTests"]},
                            "testSecrets": {"type": "array"},
                            "testConnections": {"type": "array"},
                        },
                    },
                },
                "connectorType": {"enum": ["destination", "source"]},
                "dockerRepository": {"type": "string"},
                "dockerImageTag": {"type": "string"},
                "license": {"type": "string"},
                "documentationUrl": {"type": "string", "pattern": "^https://"},
                "githubIssueLabel": {"type": "string"},
                "maxSecondsBetweenMessages": {"type": "integer"},
                "releaseDate": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
                "protocolVersion": {"type": "string"},
                "erdUrl": {"type": "string"},
                "connectorSubtype": {
                    "enum": ["api", "database", "datalake", "file", "custom", "message_queue", "unknown", "vectorstore"]
                },
                "releaseStage": {"enum": ["alpha", "beta", "generally_available", "custom"]},
                "supportLevel": {"enum": ["community", "certified", "archived"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "registryOverrides": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"oss": _REGISTRY_OVERRIDE, "cloud": _REGISTRY_OVERRIDE},
                },
                "allowedHosts": {
                    "type": "object",
                    "properties": {"hosts": {"type": "array", "items": {"type": "string"}}},
                },
                "releases": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "rolloutConfiguration": {"type": "object"},
                        "breakingChanges": {
                            "type": "object",
                            "minProperties": 1,
                            "additionalProperties": False,
                            "patternProperties": {r"^\d+\.\d+\.\d+$": _BREAKING_CHANGE},
                        },
                        "migrationDocumentationUrl": {"type": "string", "pattern": "^https://"},
                    },
                },
                "suggestedStreams": {
                    "type": "object",
                    "properties": {"streams": {"type": "array", "items": {"type": "string"}}},
                },
                "resourceRequirements": {"type": "object"},
                "ab_internal": {
                    "type": "object",
                    "properties": {
                        "sl": {"enum": [0, 100, 200, 300]},
                        "ql": {"enum": [0, 100, 200, 300, 400, 500, 600]},
                        "isEnterprise": {"type": "boolean"},
                        "requireVersionIncrementsInPullRequests": {"type": "boolean"},
                    },
                },
                "remoteRegistries": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "pypi": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["enabled", "packageName"],
                            "properties": {"enabled": {"type": "boolean"}, "packageName": {"type": "string"}},
                        }
                    },
                },
                "supportsRefreshes": {"type": "boolean"},
                "supportsFileTransfer": {"type": "boolean"},
                "supportsDataActivation": {"type": "boolean"},
                "supportsDbt": {"type": "boolean"},
                "supportsNormalization": {"type": "boolean"},
                "generated": {"type": "object"},
                "connectorIPCOptions": {"type": "object"},
            },
        },
    },
}


def test_metadata_validates_against_the_metadata_schema():
    metadata = _metadata()
    jsonschema.validate(metadata, METADATA_SCHEMA)  # raises with the offending path

    data = metadata["data"]
    assert uuid.UUID(data["definitionId"]) == uuid.UUID(UPSTREAM_DEFINITION_ID)
    assert data["dockerRepository"] == "airbyte/source-klarna"
    assert data["icon"] == "icon.svg"


def test_the_schema_subset_refuses_what_the_schema_refuses():
    """The hand-written subset is not a rubber stamp: a misspelt key, a wrong enum and a breaking
    change without its deadline are refused as Airbyte's schema refuses them."""
    for broken in (
        {"releasesStage": "alpha"},
        {"supportLevel": "partner"},
        {"releases": {"breakingChanges": {"2.0.0": {"message": "no deadline"}}}},
        {"releases": {"breakingChanges": {"2.0.0": {"message": "m", "upgradeDeadline": "2027-02-01",
                                                    "scopedImpact": [{"scopeType": "stream", "impactedScopes": ["payouts"],
                                                                      "note": "extra"}]}}}},
        {"remoteRegistries": {"pypi": {"enabled": True}}},
    ):
        metadata = _metadata()
        metadata["data"].update(broken)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(metadata, METADATA_SCHEMA)


def test_tags_are_key_value_pairs_with_one_language_tag():
    # airbytehq/airbyte: airbyte-ci/connectors/metadata_service/lib/metadata_service/validators/
    # metadata_validator.py (validate_all_tags_are_keyvalue_pairs, validate_at_least_one_language_tag)
    tags = _metadata()["data"]["tags"]

    assert all(":" in tag for tag in tags)
    assert [tag for tag in tags if tag.startswith("language:")] == ["language:manifest-only"]
    assert [tag for tag in tags if tag.startswith("cdk:")] == ["cdk:low-code"]


def test_pypi_publishing_only_for_python_or_low_code_tags():
    # airbytehq/airbyte: airbyte-ci/connectors/metadata_service/lib/metadata_service/validators/
    # metadata_validator.py (validate_pypi_only_for_python): a manifest-only connector may name its
    # PyPI package but not publish it from Airbyte's registry.
    data = _metadata()["data"]
    pypi = data["remoteRegistries"]["pypi"]

    assert pypi["packageName"] == "airbyte-source-klarna"
    if pypi["enabled"]:
        assert {"language:python", "language:low-code"} & set(data["tags"])


def test_language_tag_matches_a_root_manifest():
    # airbytehq/airbyte-python-cdk: airbyte_cdk/qa/checks/metadata (test_connector_language_tag):
    # a manifest.yaml at the connector's root means language:manifest-only, before pyproject.toml.
    # airbytehq/airbyte: airbyte-ci/connectors/connectors_qa/src/connectors_qa/checks/metadata.py
    # (CheckConnectorLanguageTag).
    assert (ROOT / "manifest.yaml").is_file()
    assert "language:manifest-only" in _metadata()["data"]["tags"]


def test_manifest_only_base_image_is_source_declarative_manifest_on_the_manifests_cdk():
    # airbytehq/airbyte: airbyte-ci/connectors/connectors_qa/checks/security.py
    # (CheckConnectorUsesPythonBaseImage: the base image is declared in connectorBuildOptions.baseImage).
    # The tag is the CDK the manifest declares.
    base_image = _metadata()["data"]["connectorBuildOptions"]["baseImage"]
    manifest_version = yaml.safe_load((ROOT / "manifest.yaml").read_text())["version"]

    match = re.fullmatch(r"docker\.io/airbyte/source-declarative-manifest:([0-9.]+)(@sha256:[0-9a-f]{64})?", base_image)
    assert match, f"{base_image} is not docker.io/airbyte/source-declarative-manifest:<tag>[@sha256:<64 hex>]"
    assert match.group(1) == manifest_version


# Strict: once the digest is in metadata.yaml this passes, and the strict xfail fails until the marker goes.
@pytest.mark.xfail(strict=True, reason="the sha256 digest of source-declarative-manifest:7.39.1 needs Docker Hub, which this machine cannot reach")
def test_the_base_image_carries_its_digest():
    # airbytehq/airbyte: airbyte-ci/connectors/metadata_service/lib/metadata_service/validators/
    # metadata_validator.py (validate_metadata_base_images_in_dockerhub: "<image>:<tag>@<sha>").
    # The digest: `docker buildx imagetools inspect docker.io/airbyte/source-declarative-manifest:<tag>`
    # (the "Digest:" line) on a machine that reaches Docker Hub.
    base_image = _metadata()["data"]["connectorBuildOptions"]["baseImage"]
    assert re.search(r"@sha256:[0-9a-f]{64}$", base_image), base_image


def test_version_is_above_the_replaced_connectors_last():
    # airbytehq/airbyte: airbyte-ci/connectors/connectors_qa/src/connectors_qa/checks/version.py
    # (CheckVersionIncrement: dockerImageTag greater than master's) and metadata_validator.py
    # (validate_docker_image_tag_is_not_decremented).
    assert _version(_metadata()["data"]["dockerImageTag"]) > UPSTREAM_LAST_VERSION


def test_a_major_version_has_its_breaking_change_with_a_deadline_a_week_ahead():
    # airbytehq/airbyte: metadata_validator.py (validate_major_version_bump_has_breaking_change_entry)
    # and connectors_qa/checks/metadata.py (ValidateBreakingChangesDeadlines: more than 7 days ahead,
    # for a version not yet released).
    data = _metadata()["data"]
    version = data["dockerImageTag"]
    major = _version(version)[0]
    assert major > UPSTREAM_LAST_VERSION[0]

    change = data["releases"]["breakingChanges"][version]
    deadline = date.fromisoformat(change["upgradeDeadline"])
    assert deadline == date(2027, 2, 1)
    assert deadline > date(2026, 12, 3) + timedelta(days=7)  # the day 2.0.0 is published
    assert change["migrationDocumentationUrl"] == f"{data['documentationUrl']}-migrations#{version}"
    impacted = {stream for scope in change["scopedImpact"] for stream in scope["impactedScopes"]}
    assert impacted == {"payouts", "transactions"}
    for stream in ("payouts", "transactions", "pending_transactions", "payment_reference", "transaction_key"):
        assert stream in change["message"]


def test_allowed_hosts_cover_every_region_and_platform_of_the_spec():
    """Airbyte Cloud lets the connector reach only allowedHosts: every host a valid config can name."""
    hosts = set(_metadata()["data"]["allowedHosts"]["hosts"])
    spec = yaml.safe_load((ROOT / "manifest.yaml").read_text())["spec"]["connection_specification"]

    expected = {"api.kustom.co", "api.playground.kustom.co"}
    for region in spec["properties"]["region"]["enum"]:
        for playground in ("", "playground."):
            expected.add(f"api{'' if region == 'eu' else '-' + region}.{playground}klarna.com")
    assert hosts - {"${base_url_override}"} == expected


# --- icon ------------------------------------------------------------------------------------------
def test_icon_is_a_square_svg_named_icon_svg():
    # airbytehq/airbyte: airbyte-ci/connectors/connectors_qa/src/connectors_qa/checks/assets.py
    # (CheckConnectorIconIsAvailable: icon.svg at the root, not Airbyte's default icon, square).
    icon = ROOT / "icon.svg"
    root = ElementTree.parse(icon).getroot()

    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("width") == root.get("height")
    assert "Klarna" in "".join(root.itertext())
    assert 'fill="#e8e8ed" fill-rule="evenodd" d="M95.775' not in icon.read_text()  # the default icon
    assert icon.stat().st_size < 4096


# --- HTTPS only ------------------------------------------------------------------------------------
# airbytehq/airbyte: airbyte-ci/connectors/connectors_qa/src/connectors_qa/checks/security.py
# (CheckConnectorUsesHTTPSOnly): each line, lower-cased, that is not a comment (# for .py/.yml/.yaml)
# and does not carry "# ignore-https-check", must not contain "http://" once "http://json-schema.org"
# and "http://localhost" are removed. (*.svg files are exempt.)
_HTTPS_EXEMPT_PREFIXES = ("http://json-schema.org", "http://localhost")


def _lines_with_http(path):
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        lowered = line.lower()
        if lowered.lstrip().startswith("#") or "# ignore-https-check" in lowered:
            continue
        for prefix in _HTTPS_EXEMPT_PREFIXES:
            lowered = lowered.replace(prefix, "")
        if "http://" in lowered:
            found.append(f"{path.name}:{number}: {line.strip()}")
    return found


def test_the_https_rule_as_implemented_flags_what_it_should(tmp_path):
    sample = tmp_path / "sample.yaml"
    sample.write_text(
        "a: http://example.com\n"
        "# b: http://example.com\n"
        "c: http://json-schema.org/draft-07/schema#\n"
        "d: http://localhost:8080\n"
        "e: http://127.0.0.1:8080\n"
        'f: "http://127.0.0.1"  # ignore-https-check\n'
    )
    assert [entry.split(":")[1] for entry in _lines_with_http(sample)] == ["1", "5"]


@pytest.mark.parametrize("name", ["manifest.yaml", "components.py", "metadata.yaml"])
def test_connector_files_use_https_only(name):
    path = ROOT / name
    assert path.is_file(), f"{name} is not at the repository root"

    assert _lines_with_http(path) == []


# --- documentation ---------------------------------------------------------------------------------
# airbytehq/airbyte: airbyte-ci/connectors/connectors_qa/src/connectors_qa/checks/documentation/
# documentation.py and templates/template.md.j2 (CheckDocumentationExists, CheckDocumentationHeadersOrder,
# CheckPrerequisitesSectionDescribesRequiredFieldsFromSpec, CheckSupportedSyncModesSectionContent,
# CheckForAirbyteCloudSectionContent, CheckChangelogEntry, CheckMigrationGuide).
_SPECIFIC = "CONNECTOR_SPECIFIC_FEATURES"
_TEMPLATE_HEADERS = [
    "Klarna", "Prerequisites", "Setup guide", "Set up Klarna", "For Airbyte Cloud:", "For Airbyte Open Source:",
    _SPECIFIC, "Set up the Klarna connector in Airbyte", "For Airbyte Cloud:", "For Airbyte Open Source:",
    _SPECIFIC, "Supported sync modes", "Supported Streams", _SPECIFIC, "Performance considerations",
    "Data type map", "Limitations & Troubleshooting", _SPECIFIC, "Tutorials", "Changelog",
]
_NOT_REQUIRED = {
    "Set up the Klarna connector in Airbyte", "For Airbyte Cloud:", "For Airbyte Open Source:", _SPECIFIC,
    "Performance considerations", "Data type map", "Limitations & Troubleshooting", "Tutorials",
}


def _headers(text):
    text = re.sub(r"(?ms)^```.*?^```", "", text)
    headers = re.findall(r"(?m)^#{1,4} +(.+?)\s*$", text)
    return [re.sub(r"^Step \d+: *", "", header) for header in headers]


def _header_order_errors(actual):
    """CheckDocumentationHeadersOrder.check_headers, step by step."""
    a = e = 0
    while a < len(actual) and e < len(_TEMPLATE_HEADERS):
        expected = _TEMPLATE_HEADERS[e]
        if expected == _SPECIFIC:
            if actual[a] not in _TEMPLATE_HEADERS:
                a += 1
            else:
                e += 1
            continue
        if actual[a] == expected:
            a, e = a + 1, e + 1
            continue
        if expected in _NOT_REQUIRED:
            e += 1
            continue
        return [f"{actual[a]!r} where the template expects {expected!r}"]
    missing = [h for h in _TEMPLATE_HEADERS[e:] if h not in _NOT_REQUIRED]
    return [f"missing {missing}"] if missing else []


def test_header_order_check_refuses_a_misplaced_section():
    assert _header_order_errors(["Klarna", "Prerequisites", "Setup guide", "Set up Klarna", "Supported sync modes",
                                 "Supported Streams", "Changelog"]) == []
    assert _header_order_errors(["Klarna", "Setup guide", "Prerequisites"]) != []
    assert _header_order_errors(["Klarna", "Prerequisites", "Setup guide", "Set up Klarna", "Changelog",
                                 "Supported sync modes"]) != []


def test_docs_page_headers_follow_the_template():
    assert DOCS.is_file()
    assert _header_order_errors(_headers(DOCS.read_text())) == []


def _section(text, header):
    match = re.search(rf"(?ms)^#+ +{re.escape(header)}\s*$\n(.*?)(?=^#+ )", text)
    assert match, f"no section {header!r}"
    return match.group(1)


def test_docs_sections_carry_the_templates_text():
    text = DOCS.read_text()

    assert "This page contains the setup guide and reference information for the [Klarna](" in text
    assert ("The Klarna source connector supports the following [sync modes]"
            "(https://docs.airbyte.com/cloud/core-concepts/#connection-sync-modes):") in _section(text, "Supported sync modes")
    cloud = _section(text, "For Airbyte Cloud:")
    assert cloud.lstrip().startswith(
        "1. [Log into your Airbyte Cloud](https://cloud.airbyte.com/workspaces) account.\n"
        "2. Click Sources and then click + New source.\n"
        "3. On the Set up the source page, select Klarna from the Source type dropdown.\n"
        "4. Enter a name for the Klarna connector.\n"
    )
    assert _section(text, "For Airbyte Open Source:").lstrip().startswith("1. Navigate to the Airbyte Open Source dashboard.")
    assert "<details>\n  <summary>Expand to review</summary>" in text.split("## Changelog", 1)[1]


def test_prerequisites_name_every_required_spec_field():
    spec = yaml.safe_load((ROOT / "manifest.yaml").read_text())["spec"]["connection_specification"]
    prerequisites = _section(DOCS.read_text(), "Prerequisites").lower()

    for field in spec["required"]:
        assert spec["properties"][field]["title"].lower() in prerequisites
    assert "credentials" in prerequisites


def test_docs_describe_every_spec_field_and_every_stream():
    text = DOCS.read_text()
    manifest = yaml.safe_load((ROOT / "manifest.yaml").read_text())
    spec = manifest["spec"]["connection_specification"]

    for field in spec["properties"]:
        assert f"`{field}`" in text, field
    assert "`us`" in text  # the legacy region value
    for stream in ("payouts", "transactions", "payout_summaries", "orders", "captures", "refunds", "pending_transactions"):
        assert re.search(rf"(?m)^\| `{stream}` \|", _section(text, "Supported Streams")), stream


def test_changelog_has_a_row_for_the_version_first_then_every_upstream_row():
    version = _metadata()["data"]["dockerImageTag"]
    changelog = DOCS.read_text().split("## Changelog", 1)[1]
    rows = re.findall(r"(?m)^\| (\d+\.\d+\.\d+) \| (\d{4}-\d{2}-\d{2}) \|", changelog)

    assert rows[0][0] == version
    versions = [_version(v) for v, _ in rows]
    assert versions == sorted(versions, reverse=True)
    assert rows[1] == ("0.3.24", "2026-06-30") and rows[-1] == ("0.1.0", "2022-10-24")
    assert len(rows) == 1 + 43  # 0.1.0 to 0.3.24


def test_migration_guide_has_a_section_per_breaking_change_in_descending_order():
    breaking_changes = _metadata()["data"]["releases"]["breakingChanges"]
    text = MIGRATIONS.read_text()

    assert text.splitlines()[0] == "# Klarna Migration Guide"
    headings = [line.strip()[len("## Upgrading to "):] for line in text.splitlines() if line.strip().startswith("## Upgrading to ")]
    assert headings == sorted(breaking_changes, key=_version, reverse=True)
    for word in ("payment_reference", "transaction_key", "pending_transactions", "refresh", "clear"):
        assert word in text
