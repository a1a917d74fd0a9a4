"""source-klarna: an Airbyte source for Klarna settlements, defined by `manifest.yaml`.

manifest.yaml names its components as Airbyte's manifest-only runtime registers a components.py,
`source_declarative_manifest.components.<Class>`; importing the package registers
source_klarna.components under that name, so the manifest resolves wherever the package is used.
"""

import sys

from source_klarna.cdk_patches import skip_attribute_docs

skip_attribute_docs()  # before the CDK's protocol serializers are built (cdk_patches says why)

from airbyte_cdk.sources.declarative.parsers.custom_code_compiler import SDM_COMPONENTS_MODULE_NAME  # noqa: E402

from source_klarna import components  # noqa: E402

sys.modules.setdefault(SDM_COMPONENTS_MODULE_NAME, components)

from source_klarna.source import SourceKlarna  # noqa: E402

__all__ = ["SourceKlarna"]
