"""Writes the manifest-only form of the connector into build/manifest-only/: manifest.yaml, components.py
and metadata.yaml, what Airbyte's registry ships for a low-code connector and its stock
`source-declarative-manifest` image (and the Connector Builder) runs.

The repository's own files are already in that form, so this only copies them: manifest.yaml names
its components `source_declarative_manifest.components.<Class>` (the module the runtime registers a
components.py as; the package registers source_klarna/components.py under that name too), and
components.py is self-contained. metadata.yaml is the repository's, with what differs for a
manifest-only connector: the tags and the base image (the runtime image of the pinned CDK).

Run from the repository root: `python -m scripts.manifest_only` (`make manifest-only`).
"""

import re
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "manifest-only"
COMPONENTS = ROOT / "source_klarna" / "components.py"
RUNTIME_IMAGE = "docker.io/airbyte/source-declarative-manifest"
# What components.py may import: the standard library, the CDK and what the CDK brings.
FOREIGN_IMPORT = re.compile(r"^\s*(from|import)\s+source_klarna\b", re.MULTILINE)
# A statement at the start of a line, not the words in a docstring that say it is absent.
FUTURE_ANNOTATIONS = re.compile(r"^from\s+__future__\s+import\s+annotations\b", re.MULTILINE)


def manifest_only_metadata(metadata: dict, cdk_version: str) -> dict:
    data = dict(metadata["data"])
    data["tags"] = ["language:manifest-only", "cdk:low-code"]
    data["connectorBuildOptions"] = {"baseImage": f"{RUNTIME_IMAGE}:{cdk_version}"}
    data.pop("remoteRegistries", None)  # no PyPI package: the runtime image runs the two files
    return {**metadata, "data": data}


def problems() -> list:
    """Why the repository's files are not in manifest-only form (empty when they are)."""
    found = []
    text = COMPONENTS.read_text()
    if FOREIGN_IMPORT.search(text):
        found.append("components.py imports source_klarna: it must be self-contained")
    if FUTURE_ANNOTATIONS.search(text):
        found.append("components.py starts with `from __future__ import annotations`, which the runtime cannot exec")
    for name in re.findall(r"class_name:\s*(\S+)", (ROOT / "manifest.yaml").read_text()):
        if not name.startswith("source_declarative_manifest.components."):
            found.append(f"manifest.yaml names {name}, not source_declarative_manifest.components.<Class>")
    return found


def main() -> int:
    found = problems()
    if found:
        print("\n".join(found), file=sys.stderr)
        return 1
    manifest = yaml.safe_load((ROOT / "manifest.yaml").read_text())
    metadata = yaml.safe_load((ROOT / "metadata.yaml").read_text())
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "manifest.yaml", OUT / "manifest.yaml")
    shutil.copyfile(COMPONENTS, OUT / "components.py")
    (OUT / "metadata.yaml").write_text(yaml.safe_dump(manifest_only_metadata(metadata, str(manifest["version"])), sort_keys=False))
    print(f"wrote {OUT.relative_to(ROOT)}/manifest.yaml, components.py, metadata.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
