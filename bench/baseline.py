"""The bar to beat: Airbyte's published Klarna connector (airbyte-source-klarna 0.2.16).

Nothing of it is committed. Its wheel is fetched into a cache directory at run time with
`pip download --no-deps`, its `source_klarna/manifest.yaml` is taken out, every `url_base` is pointed
at the emulator, and the manifest runs on *our* CDK through `source-declarative-manifest read`, passed
as `__injected_declarative_manifest` in the config (the wheel's own code targets CDK 0.80, which does
not import on Python 3.11). If anything fails, the caller skips the baseline with the printed reason.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import yaml

PACKAGE = "airbyte-source-klarna"
VERSION = "0.2.16"
MANIFEST_IN_WHEEL = "source_klarna/manifest.yaml"


def fetch_manifest(cache_dir: Path, timeout_s: float = 180.0) -> Tuple[Optional[Dict[str, Any]], str]:
    """(manifest, "") or (None, reason)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache_dir.glob(f"airbyte_source_klarna-{VERSION}-*.whl"))
    if not wheels:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "-q", f"{PACKAGE}=={VERSION}", "-d", str(cache_dir)]
        try:
            completed = subprocess.run(command, capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as error:
            return None, f"`pip download {PACKAGE}=={VERSION}` failed: {error}"
        if completed.returncode != 0:
            tail = completed.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            return None, f"`pip download {PACKAGE}=={VERSION}` exited {completed.returncode}: {tail[0]}"
        wheels = sorted(cache_dir.glob(f"airbyte_source_klarna-{VERSION}-*.whl"))
        if not wheels:
            return None, f"`pip download` produced no {PACKAGE} {VERSION} wheel in {cache_dir}"
    try:
        with zipfile.ZipFile(wheels[0]) as wheel:
            manifest = yaml.safe_load(wheel.read(MANIFEST_IN_WHEEL))
    except (KeyError, zipfile.BadZipFile, yaml.YAMLError) as error:
        return None, f"no readable {MANIFEST_IN_WHEEL} in {wheels[0].name}: {error}"
    if not isinstance(manifest, dict) or "streams" not in manifest:
        return None, f"{MANIFEST_IN_WHEEL} in {wheels[0].name} is not a declarative manifest"
    return manifest, ""


def point_at(manifest: Dict[str, Any], base_url: str) -> Dict[str, Any]:
    """A copy of the manifest whose every requester's `url_base` is the emulator."""
    result = copy.deepcopy(manifest)
    replaced = 0

    def walk(node: Any) -> None:
        nonlocal replaced
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "url_base":
                    node[key] = base_url.rstrip("/") + "/"
                    replaced += 1
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(result)
    if not replaced:
        raise ValueError("the baseline manifest has no url_base to point at the emulator")
    return result


def stream_names(manifest: Dict[str, Any]) -> list:
    return [stream.get("name") for stream in manifest.get("streams", []) if isinstance(stream, dict)]
