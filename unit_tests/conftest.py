"""One components module for the tests and the connector.

The manifest names its classes `source_declarative_manifest.components.<Class>`, and the launcher
(`source_klarna.run.register_components`) loads components.py under that name, as Airbyte's
manifest-only runtime does. The tests import the same file as `components` (the repository's root
module): both names are made to denote the one module object, so that a class, a per-sync registry
(PerSync) or a patch a test reaches through `components` is the one the declarative source uses.
"""

import sys

from source_klarna.run import register_components

sys.modules["components"] = register_components()
