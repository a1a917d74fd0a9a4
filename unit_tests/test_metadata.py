"""metadata.yaml is valid Airbyte connector metadata and agrees with the package."""

from __future__ import annotations

import re
import tomllib
import uuid
from importlib import metadata
from pathlib import Path

import yaml
from airbyte_cdk.models.connector_metadata import ConnectorLanguage, MetadataFile

ROOT = Path(__file__).resolve().parents[1]


def test_metadata_validates_against_the_cdk_model():
    metadata = MetadataFile.from_file(ROOT / "metadata.yaml").data

    assert metadata.dockerRepository == "airbyte/source-klarna"
    assert metadata.language == ConnectorLanguage.MANIFEST_ONLY
    assert "cdk:low-code" in metadata.tags
    assert metadata.connectorBuildOptions.baseImage.startswith("docker.io/airbyte/source-declarative-manifest:")
    # Airbyte's own Klarna connector's definition: 2.0.0 replaces it in place.
    assert metadata.model_extra["definitionId"] == "60c24725-00ae-490c-991d-55b78c3197e0"
    assert uuid.UUID(metadata.model_extra["definitionId"]).version == 4
    assert set(metadata.suggestedStreams.streams) <= {"payouts", "transactions", "payout_summaries"}


def test_the_makefile_reads_the_base_image_and_the_tag():
    """The Makefile takes METADATA_BASE_IMAGE and CONNECTOR_VERSION from these two lines with sed."""
    text = (ROOT / "metadata.yaml").read_text()

    assert len(re.findall(r"(?m)^ *baseImage: *\S+$", text)) == 1
    assert len(re.findall(r"(?m)^ *dockerImageTag: *\S+$", text)) == 1


def test_image_tag_is_the_package_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

    assert MetadataFile.from_file(ROOT / "metadata.yaml").data.dockerImageTag == version



def _pins():
    """constraints.txt as {distribution: version}."""
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.MULTILINE))


def _installed_version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_installed_cdk_is_the_pinned_one_and_the_manifests_version():
    """constraints.txt pins the CDK the tests and the Docker image run; the manifest declares the
    same version (moving to a newer CDK: README, Development)."""
    manifest_version = yaml.safe_load((ROOT / "manifest.yaml").read_text())["version"]

    assert _pins()["airbyte-cdk"] == manifest_version == metadata.version("airbyte-cdk")


def test_every_installed_pinned_package_has_its_pinned_version():
    """`make install` installs under constraints.txt: a stale .venv would test other versions than
    the image ships."""
    installed = {name: _installed_version(name) for name in _pins()}
    installed = {name: version for name, version in installed.items() if version is not None}

    assert {"airbyte-cdk", "requests", "pytest"} <= set(installed)
    assert installed == {name: _pins()[name] for name in installed}
