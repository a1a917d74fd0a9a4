"""The connector class: the declarative manifest, nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Mapping, Optional

from airbyte_cdk.models import AirbyteStateMessage, ConfiguredAirbyteCatalog
from airbyte_cdk.sources.declarative.yaml_declarative_source import YamlDeclarativeSource


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
        super().__init__(path_to_yaml=str(manifest_path()), catalog=catalog, config=config, state=state)
