"""source-klarna: an Airbyte source for Klarna settlements, defined by `manifest.yaml`.

manifest.yaml names its components as Airbyte's manifest-only runtime registers a components.py,
`source_declarative_manifest.components.<Class>`; importing the package registers
source_klarna.components under that name, so the manifest resolves wherever the package is used.
"""

import sys

from airbyte_cdk.sources.declarative.parsers.custom_code_compiler import SDM_COMPONENTS_MODULE_NAME

from source_klarna import components

sys.modules.setdefault(SDM_COMPONENTS_MODULE_NAME, components)

from source_klarna.source import SourceKlarna  # noqa: E402

__all__ = ["SourceKlarna"]
