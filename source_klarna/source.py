"""The connector class: the declarative manifest, nothing else."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Mapping, Optional

from airbyte_cdk.models import AirbyteStateMessage, ConfiguredAirbyteCatalog
from airbyte_cdk.sources.declarative.parsers.custom_code_compiler import SDM_COMPONENTS_MODULE_NAME
from airbyte_cdk.sources.declarative.yaml_declarative_source import YamlDeclarativeSource

from source_klarna import components
from source_klarna.components import observe_each_cursor_value_once


def manifest_path() -> Path:
    """The manifest shipped inside the wheel, or the repository's top-level one in a checkout."""
    packaged = Path(__file__).with_name("manifest.yaml")
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parent.parent / "manifest.yaml"


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
