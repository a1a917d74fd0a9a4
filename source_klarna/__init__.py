"""source-klarna: an Airbyte source for Klarna settlements, defined by `manifest.yaml`."""

from source_klarna.source import SourceKlarna

__all__ = ["SourceKlarna"]
