"""metadata.yaml is valid Airbyte connector metadata and agrees with the package."""

from __future__ import annotations

import tomllib
import uuid
from pathlib import Path

from airbyte_cdk.models.connector_metadata import ConnectorLanguage, MetadataFile

ROOT = Path(__file__).resolve().parents[1]


def test_metadata_validates_against_the_cdk_model():
    metadata = MetadataFile.from_file(ROOT / "metadata.yaml").data

    assert metadata.dockerRepository == "airbyte/source-klarna"
    assert metadata.language == ConnectorLanguage.PYTHON
    assert "cdk:low-code" in metadata.tags
    assert metadata.connectorBuildOptions.baseImage.startswith("docker.io/airbyte/python-connector-base:4.0.2@sha256:")
    assert uuid.UUID(metadata.model_extra["definitionId"]).version == 4
    assert set(metadata.suggestedStreams.streams) <= {"payouts", "transactions", "payout_summaries"}


def test_image_tag_is_the_package_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

    assert MetadataFile.from_file(ROOT / "metadata.yaml").data.dockerImageTag == version
