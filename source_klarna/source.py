"""The connector class: the declarative manifest, its streams given the CDK patches of cdk_patches.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Mapping, Optional, Tuple

import yaml

from airbyte_cdk.models import AirbyteStateMessage, ConfiguredAirbyteCatalog
from airbyte_cdk.sources.declarative.parsers.custom_code_compiler import SDM_COMPONENTS_MODULE_NAME
from airbyte_cdk.sources.declarative.parsers.manifest_reference_resolver import ManifestReferenceResolver
from airbyte_cdk.sources.declarative.yaml_declarative_source import YamlDeclarativeSource

from source_klarna import components
from source_klarna.cdk_patches import observe_each_cursor_value_once


def manifest_path() -> Path:
    """The manifest shipped inside the wheel, or the repository's top-level one in a checkout."""
    packaged = Path(__file__).with_name("manifest.yaml")
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parent.parent / "manifest.yaml"


def resolved_manifest() -> Mapping[str, Any]:
    """manifest.yaml with its $refs resolved, as the CDK reads it."""
    return ManifestReferenceResolver().preprocess_manifest(yaml.safe_load(manifest_path().read_text()))


def streams_and_cursor_formats(manifest: Mapping[str, Any]) -> Tuple[List[str], List[str]]:
    """The manifest's stream names, and every date-time format its cursors accept in a state."""
    streams = [stream["name"] for stream in manifest["streams"]]
    formats: List[str] = []
    for stream in manifest["streams"]:
        for layout in (stream.get("incremental_sync") or {}).get("cursor_datetime_formats") or []:
            if layout not in formats:
                formats.append(layout)
    return streams, formats


class SourceKlarna(YamlDeclarativeSource):
    def __init__(
        self,
        catalog: Optional[ConfiguredAirbyteCatalog] = None,
        config: Optional[Mapping[str, Any]] = None,
        state: Optional[List[AirbyteStateMessage]] = None,
    ) -> None:
        # The manifest names its components the way Airbyte's manifest-only runtime
        # (source-declarative-manifest, the Connector Builder) registers a components.py:
        # `source_declarative_manifest.components.<Class>`. Installed as a package, that file is
        # source_klarna.components; registering it under the runtime's name lets one manifest serve both.
        sys.modules[SDM_COMPONENTS_MODULE_NAME] = components
        super().__init__(path_to_yaml=str(manifest_path()), catalog=catalog, config=config, state=state)

    def streams(self, config: Mapping[str, Any]) -> List[Any]:
        streams = super().streams(config)
        observe_each_cursor_value_once(streams)
        return streams
