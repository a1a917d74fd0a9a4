"""source-klarna: Airbyte's source for Klarna, `manifest.yaml` + `components.py` (packaged beside this
module) on the CDK's declarative runtime. `source_klarna.run` is the `source-klarna` command."""

from source_klarna.run import SourceKlarna

__all__ = ["SourceKlarna"]
