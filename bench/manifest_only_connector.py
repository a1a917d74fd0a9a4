"""`python bench/manifest_only_connector.py <verb> <args>`: the manifest-only form as one executable.

Runs Airbyte's stock `source-declarative-manifest` from .venv-manifest-only (airbyte-cdk alone) on
build/manifest-only's manifest.yaml and components.py (`make manifest-only`, `make test` builds both),
so that bench.py's `--runtime manifest-only` measures it exactly as it measures `source-klarna`.
It replaces itself with the runtime (os.execv): the bench's CPU and RSS figures are the runtime's.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / ".venv-manifest-only" / "bin" / "source-declarative-manifest"
BUILD = ROOT / "build" / "manifest-only"


def main() -> None:
    missing = [str(path.relative_to(ROOT)) for path in (RUNTIME, BUILD / "manifest.yaml", BUILD / "components.py") if not path.exists()]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: run `make manifest-only .venv-manifest-only/.installed` first")
    os.environ["AIRBYTE_ENABLE_UNSAFE_CODE"] = "true"  # the runtime runs a components.py only when allowed to
    verb, rest = sys.argv[1], sys.argv[2:]
    os.execv(str(RUNTIME), [str(RUNTIME), verb, *rest,
                            "--manifest-path", str(BUILD / "manifest.yaml"), "--components-path", str(BUILD / "components.py")])


if __name__ == "__main__":
    main()
