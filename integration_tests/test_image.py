"""The Docker image (`make image`) run as Airbyte runs it, against the emulator on the host's 127.0.0.1.

The image is what Airbyte ships for a manifest-only connector: the stock source-declarative-manifest
(SDM) image at manifest.yaml's `version:` (or the stand-in `make base-image` builds of it) with
manifest.yaml and components.py in /airbyte/integration_code/source_declarative_manifest/, and nothing
else. Every run is `docker run --rm --network host --read-only --tmpfs /tmp` with the config, catalog
and state mounted read-only under /secrets (docker_image.run_image), as the image's `airbyte` user: a
read that succeeds so proves the connector writes nowhere but its temp directory. Without Docker or
without the image these tests skip, saying why; SOURCE_KLARNA_REQUIRE_IMAGE_TESTS=1 makes them fail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterator

import orjson
import pytest
import yaml

from conftest import EMULATOR_PASSWORD
from connector_runner import ConnectorRun, configured_catalog, run_connector
from docker_image import base_image_of, docker, inspect, require_image, run_image
from klarna_emulator import DatasetSpec, KlarnaEmulator

pytestmark = pytest.mark.image_tests

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = yaml.safe_load((ROOT / "manifest.yaml").read_text())
SETTLEMENT_STREAMS = ("payouts", "transactions")
ORDER_STREAMS = ("orders", "captures", "refunds")
# 12 payouts over 4 days of 520 transactions each (two pages per payout).
IMAGE_SPEC = DatasetSpec(seed=11, payouts=12, transactions_per_payout=520, first_payout_date="2026-01-05T00:00:00Z")
WRONG_PASSWORD = "Img-wrong-pw_Q4v!t9-never-print-me"
INTEGRATION_CODE = "/airbyte/integration_code"
SDM_DIR = f"{INTEGRATION_CODE}/source_declarative_manifest"
# The SDM image's entry point (its Dockerfile in airbyte-python-cdk), which airbyte-ci sets again.
ENTRYPOINT = ["python", f"{INTEGRATION_CODE}/main.py"]
PERSONAL = ("billing_address", "shipping_address", "customer")


def _resolve(reference: str) -> Any:
    """What a `$ref` of the manifest ("#/definitions/...") names."""
    node: Any = MANIFEST
    for part in reference.lstrip("#/").split("/"):
        node = node[part]
    return node


ALL_STREAMS = tuple(_resolve(s["$ref"])["name"] if "$ref" in s else s["name"] for s in MANIFEST["streams"])


@pytest.fixture(scope="module")
def image() -> str:
    return require_image()


@pytest.fixture(scope="module")
def image_emulator(image: str) -> Iterator[KlarnaEmulator]:
    with KlarnaEmulator(spec=IMAGE_SPEC, password=EMULATOR_PASSWORD) as server:
        yield server


def _metadata() -> Dict[str, Any]:
    return yaml.safe_load((ROOT / "metadata.yaml").read_text())["data"]


def _canonical(row: Any) -> str:
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS).decode()


def _records(run: ConnectorRun, stream: str) -> Counter:
    return Counter(map(_canonical, run.records(stream)))


def _assert_clean(run: ConnectorRun, config: Dict[str, Any]) -> None:
    """Neither the password nor the Authorization header's credentials in any byte of the output."""
    credentials = base64.b64encode(f"{config['username']}:{config['password']}".encode()).decode()
    for secret in (config["password"], credentials):
        assert secret not in run.everything, "a secret appears in the container's output"


def _is_the_sdm_at_the_manifests_version(base: Dict[str, Any]) -> bool:
    """A name of `base` is source-declarative-manifest:<manifest.yaml's version> (the stand-in's has
    `-standin` after it), or its digest is the one metadata.yaml's baseImage pins at that version."""
    version = re.escape(str(MANIFEST["version"]))
    names = (base.get("RepoTags") or []) + (base.get("RepoDigests") or [])
    if any(re.search(rf"(^|/)source-declarative-manifest:{version}(-standin)?$", name) for name in names):
        return True
    pinned = re.fullmatch(rf"(?:docker\.io/)?(airbyte/source-declarative-manifest):{version}@(sha256:[0-9a-f]{{64}})", _metadata()["connectorBuildOptions"]["baseImage"])
    return bool(pinned) and any(name.endswith(f"{pinned.group(1)}@{pinned.group(2)}") for name in names)


def test_image_is_the_sdm_image_with_the_manifest_and_components_added(image: str) -> None:
    """Built as airbyte-ci builds a manifest-only connector: on the SDM image at manifest.yaml's
    version, one layer more (the two files), its user, working directory and entry point."""
    (built,) = inspect(image)
    base = base_image_of(image)

    assert base is not None, f"{image} is built on no local image"
    assert _is_the_sdm_at_the_manifests_version(base), (base.get("RepoTags"), base.get("RepoDigests"))
    assert len(built["RootFS"]["Layers"]) == len(base["RootFS"]["Layers"]) + 1
    config, base_config = built["Config"], base["Config"]
    assert config["User"] == base_config["User"] == "airbyte"
    assert config["WorkingDir"] == base_config["WorkingDir"] == INTEGRATION_CODE
    assert config["Entrypoint"] == base_config["Entrypoint"] == ENTRYPOINT
    assert f"AIRBYTE_ENTRYPOINT={' '.join(ENTRYPOINT)}" in config["Env"]
    assert f"AIRBYTE_ENTRYPOINT={' '.join(ENTRYPOINT)}" in base_config["Env"]
    assert config["Labels"]["io.airbyte.name"] == _metadata()["dockerRepository"] == "airbyte/source-klarna"
    assert config["Labels"]["io.airbyte.version"] == _metadata()["dockerImageTag"]


# Run inside the image by its Python: the user it runs as, the SDM folder's files (owner uid and
# SHA-256 of each), whether run.py is the CDK's source_declarative_manifest/_run.py, and every package
# airbyte-cdk needs (the closure of its requirements, markers evaluated), with its version.
_INSIDE_THE_IMAGE = """
import hashlib, json, os, re, sys
from importlib import metadata
from packaging.requirements import Requirement
import airbyte_cdk.cli.source_declarative_manifest as sdm
folder = sys.argv[1]
files = {name: {"uid": os.stat(os.path.join(folder, name)).st_uid,
                "sha256": hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()}
         for name in os.listdir(folder) if os.path.isfile(os.path.join(folder, name))}
run_py = open(os.path.join(folder, "run.py"), "rb").read() == open(os.path.join(sdm.__path__[0], "_run.py"), "rb").read()
seen, todo = {}, ["airbyte-cdk"]
while todo:
    name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
    if name in seen:
        continue
    seen[name] = metadata.version(name)
    for text in metadata.requires(name) or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            todo.append(requirement.name)
print(json.dumps({"uid": os.getuid(), "cwd": os.getcwd(), "files": files, "run_py_is_the_cdks": run_py, "packages": seen}))
"""


def test_image_holds_the_repositorys_files_and_the_pinned_cdk(image: str) -> None:
    result = docker("run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", _INSIDE_THE_IMAGE, SDM_DIR, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    inside = json.loads(result.stdout)

    assert inside["uid"] == 1000 and inside["cwd"] == INTEGRATION_CODE
    files = inside["files"]
    assert set(files) >= {"__init__.py", "run.py", "spec.json", "manifest.yaml", "components.py"}, sorted(files)
    assert inside["run_py_is_the_cdks"], "source_declarative_manifest/run.py is not the CDK's _run.py"
    for name in ("manifest.yaml", "components.py"):
        assert files[name]["sha256"] == hashlib.sha256((ROOT / name).read_bytes()).hexdigest(), f"{name} is not the repository's"
        assert files[name]["uid"] == 1000, f"{name} is not owned by the airbyte user"
    assert inside["packages"]["airbyte-cdk"] == str(MANIFEST["version"])
    assert inside["packages"] == {name: metadata.version(name) for name in inside["packages"]}, "the image's packages are not the test environment's"


def test_spec_is_the_manifests(image: str) -> None:
    run = run_image("spec")

    assert run.exit_code == 0, run.everything[-3000:]
    (spec,) = run.of_type("SPEC")
    assert spec["spec"]["connectionSpecification"] == json.loads(json.dumps(MANIFEST["spec"]["connection_specification"]))
    if "documentation_url" in MANIFEST["spec"]:
        assert spec["spec"]["documentationUrl"] == MANIFEST["spec"]["documentation_url"]


def test_check_succeeds(image: str, image_emulator: KlarnaEmulator) -> None:
    config = image_emulator.config()
    run = run_image("check", config)

    assert run.exit_code == 0, run.everything[-3000:]
    assert run.connection_status()["status"] == "SUCCEEDED", run.connection_status()
    _assert_clean(run, config)


def test_check_with_a_wrong_password_fails_with_a_config_error_sentence(image: str, image_emulator: KlarnaEmulator) -> None:
    config = image_emulator.config(password=WRONG_PASSWORD)
    run = run_image("check", config)

    assert run.exit_code == 0, run.everything[-3000:]
    status = run.connection_status()
    assert status["status"] == "FAILED", status
    assert "rejected the API credentials" in status.get("message", ""), status
    assert not run.errors(), "a failed check is a CONNECTION_STATUS, not an error trace"
    _assert_clean(run, config)


def test_discover_lists_the_manifests_streams(image: str, image_emulator: KlarnaEmulator) -> None:
    config = image_emulator.config()
    run = run_image("discover", config)

    assert run.exit_code == 0, run.everything[-3000:]
    (catalog,) = run.of_type("CATALOG")
    assert sorted(stream["name"] for stream in catalog["catalog"]["streams"]) == sorted(ALL_STREAMS)
    assert {"payouts", "transactions", "orders", "pending_transactions"} <= set(ALL_STREAMS)
    _assert_clean(run, config)


def _assert_settlements_are_the_emulators(run: ConnectorRun, dataset: Any) -> None:
    assert _records(run, "payouts") == Counter(map(_canonical, dataset.payouts()))
    klarna_part = [{k: v for k, v in row.items() if k not in ("transaction_key", "payout_date")} for row in run.records("transactions")]
    assert Counter(map(_canonical, klarna_part)) == Counter(map(_canonical, dataset.transactions()))
    assert len({row["transaction_key"] for row in run.records("transactions")}) == len(klarna_part)


def _without_personal_data(order: Dict[str, Any]) -> Dict[str, Any]:
    order = {k: v for k, v in order.items() if k not in PERSONAL}
    order["captures"] = [{k: v for k, v in c.items() if k not in ("billing_address", "shipping_address")} for c in order["captures"]]
    return order


def _assert_orders_are_the_emulators(run: ConnectorRun, dataset: Any) -> None:
    """orders, captures and refunds: exactly the emulator's, for the orders the transactions name (but
    gone ones), without personal data (the default), each with the payout_date of a payout naming it."""
    payout_dates = {p["payment_reference"]: p["payout_date"] for p in dataset.payouts()}
    naming: Dict[str, set] = {}
    for transaction in dataset.transactions():
        naming.setdefault(transaction["order_id"], set()).add(payout_dates[transaction["payment_reference"]])
    expected = {o: _without_personal_data(dataset.order(o)) for o in naming if not dataset.is_purged(o)}

    orders = run.kept("orders")
    assert expected and Counter(o["order_id"] for o in orders) == Counter(list(expected))
    for order in orders:
        row = dict(order)
        assert row.pop("payout_date") in naming[order["order_id"]]
        assert row == expected[order["order_id"]]
    captures = {c["capture_id"]: (o, c) for o, order in expected.items() for c in order["captures"]}
    assert Counter(c["capture_id"] for c in run.records("captures")) == Counter(list(captures))
    for capture in run.records("captures"):
        order_id, klarna = captures[capture["capture_id"]]
        assert capture["order_id"] == order_id
        assert {k: v for k, v in capture.items() if k not in ("order_id", "payout_date")} == klarna
    refunds = {r["refund_id"]: (o, r) for o, order in expected.items() for r in order["refunds"]}
    assert Counter(r["refund_id"] for r in run.records("refunds")) == Counter(list(refunds))
    for refund in run.records("refunds"):
        order_id, klarna = refunds[refund["refund_id"]]
        assert refund["order_id"] == order_id
        assert {k: v for k, v in refund.items() if k not in ("order_id", "payout_date")} == klarna


def test_read_equals_the_emulators_rows_and_resumes_from_its_state(image: str, image_emulator: KlarnaEmulator) -> None:
    config, catalog = image_emulator.config(), configured_catalog(SETTLEMENT_STREAMS, "incremental")
    first = run_image("read", config, catalog)

    assert first.exit_code == 0 and not first.errors(), first.everything[-3000:]
    _assert_settlements_are_the_emulators(first, image_emulator.dataset)
    _assert_clean(first, config)

    # The next sync, from the state the first emitted: after two new payouts and a late one, the
    # image reads what the installed executable reads from that state.
    state = first.final_state()
    added = image_emulator.grow(new_payouts=2, late_payouts=1)
    second = run_image("read", config, catalog, state)
    on_the_host = run_connector("read", config, catalog, state)

    assert second.exit_code == 0 and not second.errors(), second.everything[-3000:]
    assert set(added) <= {row["payment_reference"] for row in second.records("transactions")}
    for stream in SETTLEMENT_STREAMS:
        assert _records(second, stream) == _records(on_the_host, stream), stream
    assert second.comparable_states() == on_the_host.comparable_states()
    _assert_clean(second, config)


def test_read_of_every_stream_equals_the_emulators_and_writes_only_in_its_temp_directory(image: str, make_emulator) -> None:
    """Every stream, the orders' request cache included, in a container whose file system is
    writable (no --read-only, no tmpfs): `docker diff` lists each path the sync created or changed.
    The settlements and the orders, captures and refunds are exactly the emulator's."""
    # The acceptance tests' data: small, and every stream but the pending one has records (seed 1 has
    # captures and refunds).
    emulator = make_emulator(DatasetSpec(seed=1, payouts=6, transactions_per_payout=5, first_payout_date="2026-03-02T00:00:00Z"))
    config = emulator.config()
    name = f"source-klarna-test-diff-{uuid.uuid4().hex[:12]}"
    try:
        run = run_image("read", config, configured_catalog(ALL_STREAMS, "full_refresh"), docker_args=("--network", "host"), remove=False, name=name)
        assert run.exit_code == 0 and not run.errors(), run.everything[-3000:]
        changed = docker("diff", name, timeout=300)
        assert changed.returncode == 0, changed.stderr
    finally:
        docker("rm", "--force", name, timeout=120)

    _assert_settlements_are_the_emulators(run, emulator.dataset)
    _assert_orders_are_the_emulators(run, emulator.dataset)
    assert all(run.records(stream) for stream in SETTLEMENT_STREAMS + ORDER_STREAMS)
    _assert_clean(run, config)
    # Lines are "<A|C|D> <path>". /secrets is where the files are mounted; /tmp the sync's temp directory.
    # Python itself caches the bytecode of main.py's package in source_declarative_manifest/__pycache__
    # (the SDM image gives /airbyte to the airbyte user): that, and its folders marked changed, only.
    changes = [line.split(" ", 1) for line in changed.stdout.splitlines()]
    outside = [
        f"{kind} {path}" for kind, path in changes
        if path not in ("/secrets", "/tmp") and not path.startswith(("/secrets/", "/tmp/"))
        and not (kind == "A" and path.startswith(f"{SDM_DIR}/__pycache__"))
        and not (kind == "C" and path in ("/airbyte", INTEGRATION_CODE, SDM_DIR))
    ]
    assert outside == [], f"the sync wrote outside /tmp: {outside[:20]}"
