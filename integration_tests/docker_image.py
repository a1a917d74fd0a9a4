"""Runs the connector's Docker image as Airbyte runs it: `docker run --rm <image> <verb>`, the config,
catalog and state mounted read-only under /secrets; and finds the image it was built on.

The image under test is SOURCE_KLARNA_IMAGE (default `airbyte/source-klarna:dev`, what `make image`
builds). Without a Docker daemon that answers, or without the image, the image tests skip and say
why; with SOURCE_KLARNA_REQUIRE_IMAGE_TESTS=1 (CI sets it) they fail instead.

By default every run is sandboxed as tightly as the connector allows: `--network host` (the only way
to reach the emulator on the host's 127.0.0.1 from a container) and a read-only root file system but
for a tmpfs on /tmp, the temp directory of the sync (the CDK's request cache lives there).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import pytest

from connector_runner import ConnectorRun, parse_run, protocol_arguments, run_in_own_session

IMAGE = os.environ.get("SOURCE_KLARNA_IMAGE", "airbyte/source-klarna:dev")
REQUIRE_IMAGE_TESTS = "SOURCE_KLARNA_REQUIRE_IMAGE_TESTS"
SANDBOX = ("--network", "host", "--read-only", "--tmpfs", "/tmp")
MOUNT_DIR = "/secrets"  # where the platform mounts the connector's input files


def docker(*arguments: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *arguments], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@functools.lru_cache(maxsize=None)
def unavailable_reason(image: str) -> Optional[str]:
    """Why `image` cannot be run here, or None if it can."""
    if shutil.which("docker") is None:
        return "Docker image tests: the docker CLI is not on PATH"
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    except subprocess.TimeoutExpired:
        return "Docker image tests: the Docker daemon did not answer `docker info` within 30 s"
    if info.returncode != 0 or not info.stdout.strip():
        last_line = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"Docker image tests: the Docker daemon does not answer (`docker info`: {last_line})"
    if docker("image", "inspect", image).returncode != 0:
        return f"Docker image tests: there is no image {image} (build it with `make image`)"
    return None


def inspect(*images: str) -> List[Dict[str, Any]]:
    """`docker image inspect` of each image (by name or id), in that order."""
    result = docker("image", "inspect", *images)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def base_image_of(image: str) -> Optional[Dict[str, Any]]:
    """The named local image `image` was built on: the one, other than `image`, whose layers are the
    longest proper prefix of `image`'s layers (None if no named image's are). Untagged images (the
    classic builder's intermediate ones, older builds) do not count."""
    (built,) = inspect(image)
    layers = built["RootFS"]["Layers"]
    listed = docker("image", "ls", "--no-trunc", "--format", "{{.ID}}", timeout=60)
    assert listed.returncode == 0, listed.stderr[-2000:]
    ids = sorted({line for line in listed.stdout.split() if line != built["Id"]})
    candidates = [
        other for other in (inspect(*ids) if ids else [])
        if (other.get("RepoTags") or other.get("RepoDigests"))
        and len(other["RootFS"]["Layers"]) < len(layers)
        and layers[: len(other["RootFS"]["Layers"])] == other["RootFS"]["Layers"]
    ]
    return max(candidates, key=lambda other: len(other["RootFS"]["Layers"]), default=None)


def require_image(image: str = IMAGE) -> str:
    """`image` if it can run; else skips the test, or fails it under SOURCE_KLARNA_REQUIRE_IMAGE_TESTS=1."""
    reason = unavailable_reason(image)
    if reason is None:
        return image
    if os.environ.get(REQUIRE_IMAGE_TESTS) == "1":
        pytest.fail(f"{reason}; {REQUIRE_IMAGE_TESTS}=1 requires the image tests to run", pytrace=False)
    pytest.skip(f"{reason} (with {REQUIRE_IMAGE_TESTS}=1 this fails instead)")


def run_image(
    verb: str,
    config: Optional[Mapping[str, Any]] = None,
    catalog: Optional[Mapping[str, Any]] = None,
    state: Optional[List[Mapping[str, Any]]] = None,
    *,
    image: str = IMAGE,
    docker_args: Sequence[str] = SANDBOX,
    entrypoint: Sequence[str] = (),
    remove: bool = True,
    name: Optional[str] = None,
    timeout: float = 300,
) -> ConnectorRun:
    """`docker run <image> <verb> --config /secrets/config.json ...`, each file mounted read-only.

    `entrypoint` replaces the image's (program, then its arguments before the verb). `remove=False`
    keeps the container (named `name`) for `docker diff`; the caller removes it."""
    name = name or f"source-klarna-test-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="source-klarna-image-") as tmp:
        arguments = protocol_arguments(tmp, config, catalog, state)  # [flag, host path, ...]
        mounts: List[str] = []
        for index in range(1, len(arguments), 2):
            inside = f"{MOUNT_DIR}/{Path(arguments[index]).name}"
            mounts += ["--volume", f"{arguments[index]}:{inside}:ro"]
            arguments[index] = inside
        replaced = ["--entrypoint", entrypoint[0]] if entrypoint else []
        command = ["docker", "run", *(["--rm"] if remove else []), "--name", name, *docker_args, *replaced, *mounts, image, *entrypoint[1:], verb, *arguments]
        try:
            exit_code, stdout, stderr = run_in_own_session(command, timeout)
        except AssertionError:
            docker("rm", "--force", name)  # the container of a timed-out run outlives its killed client
            raise
    return parse_run(command, exit_code, stdout, stderr)
