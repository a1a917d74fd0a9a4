"""Writes the manifest-only form of the connector into build/manifest-only/: manifest.yaml, components.py
and metadata.yaml, what Airbyte's registry ships for a low-code connector and its stock
`source-declarative-manifest` image (and the Connector Builder) runs.

The repository's root files are that form already (the package `source_klarna` only launches them), so
this copies them as they are, after checking what the stock runtime needs of them: components.py
self-contained (no import of source_klarna), without `from __future__ import annotations` (which the
runtime cannot exec), and manifest.yaml naming its components `source_declarative_manifest.components.<Class>`
(the module the runtime registers a components.py as).

Each file is written whole and then renamed into place, so that a test run reading build/manifest-only/
while this runs sees the old file or the new one, never half of one.

Run from the repository root: `python -m scripts.manifest_only` (`make manifest-only`).
"""

import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "manifest-only"
FILES = ("manifest.yaml", "components.py", "metadata.yaml")
# What components.py may import: the standard library, the CDK and what the CDK brings.
FOREIGN_IMPORT = re.compile(r"^\s*(from|import)\s+source_klarna\b", re.MULTILINE)
# A statement at the start of a line, not the words in a docstring that say it is absent.
FUTURE_ANNOTATIONS = re.compile(r"^from\s+__future__\s+import\s+annotations\b", re.MULTILINE)


def problems(root: Path = ROOT) -> list:
    """Why the repository's files are not in manifest-only form (empty when they are)."""
    found = []
    text = (root / "components.py").read_text()
    if FOREIGN_IMPORT.search(text):
        found.append("components.py imports source_klarna: it must be self-contained")
    if FUTURE_ANNOTATIONS.search(text):
        found.append("components.py starts with `from __future__ import annotations`, which the runtime cannot exec")
    for name in re.findall(r"class_name:\s*(\S+)", (root / "manifest.yaml").read_text()):
        if not name.startswith("source_declarative_manifest.components."):
            found.append(f"manifest.yaml names {name}, not source_declarative_manifest.components.<Class>")
    return found


def _copy(source: Path, target: Path) -> None:
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(source.read_bytes())
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would keep the files from an image's other users
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def main(root: Path = ROOT, out: Path = OUT) -> int:
    found = problems(root)
    if found:
        print("\n".join(found), file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        _copy(root / name, out / name)
    print(f"wrote {out.relative_to(root) if out.is_relative_to(root) else out}/{', '.join(FILES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
