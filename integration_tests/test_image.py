"""The Docker image (`make image`) run as Airbyte runs it, against the emulator on the host's 127.0.0.1.

Every run is `docker run --rm --network host --read-only --tmpfs /tmp` with the config, catalog and
state mounted read-only under /secrets (docker_image.run_image), as the image's `airbyte` user: a
read that succeeds so proves the connector writes nowhere but its temp directory. Without Docker or
without the image these tests skip, saying why; SOURCE_KLARNA_REQUIRE_IMAGE_TESTS=1 makes them fail.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterator, List

import orjson
import pytest
import yaml

from conftest import EMULATOR_PASSWORD
from connector_runner import ConnectorRun, configured_catalog, run_connector
from docker_image import SANDBOX, docker, require_image, run_image
from klarna_emulator import DatasetSpec, KlarnaEmulator

pytestmark = pytest.mark.image_tests

ALL_STREAMS = ("payouts", "transactions", "payout_summaries", "orders", "captures", "refunds")
SETTLEMENT_STREAMS = ("payouts", "transactions")
# 12 payouts over 4 days of 520 transactions each (two pages per payout).
IMAGE_SPEC = DatasetSpec(seed=11, payouts=12, transactions_per_payout=520, first_payout_date="2026-01-05T00:00:00Z")
WRONG_PASSWORD = "Img-wrong-pw_Q4v!t9-never-print-me"
INTEGRATION_CODE = "/airbyte/integration_code"


@pytest.fixture(scope="module")
def image() -> str:
    return require_image()


@pytest.fixture(scope="module")
def image_emulator(image: str) -> Iterator[KlarnaEmulator]:
    with KlarnaEmulator(spec=IMAGE_SPEC, password=EMULATOR_PASSWORD) as server:
        yield server


def _metadata() -> Dict[str, Any]:
    return yaml.safe_load((Path(__file__).resolve().parents[1] / "metadata.yaml").read_text())["data"]


def _canonical(row: Any) -> str:
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS).decode()


def _records(run: ConnectorRun, stream: str) -> Counter:
    return Counter(map(_canonical, run.records(stream)))


def _assert_clean(run: ConnectorRun, config: Dict[str, Any]) -> None:
    """Neither the password nor the Authorization header's credentials in any byte of the output."""
    credentials = base64.b64encode(f"{config['username']}:{config['password']}".encode()).decode()
    for secret in (config["password"], credentials):
        assert secret not in run.everything, "a secret appears in the container's output"


def _spec_line(run: ConnectorRun) -> str:
    lines = [line for line, message in zip(run.stdout_lines, run.messages) if message.get("type") == "SPEC"]
    assert len(lines) == 1, run.everything[-3000:]
    return lines[0]


def test_image_is_built_as_airbyte_builds_python_connectors(image: str) -> None:
    inspected = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    entrypoint = f"{INTEGRATION_CODE}/entrypoint.sh"

    assert inspected["User"] == "airbyte"
    assert inspected["WorkingDir"] == INTEGRATION_CODE
    assert inspected["Entrypoint"] == [entrypoint]
    assert f"AIRBYTE_ENTRYPOINT={entrypoint}" in inspected["Env"]
    assert inspected["Labels"]["io.airbyte.name"] == _metadata()["dockerRepository"] == "airbyte/source-klarna"
    assert inspected["Labels"]["io.airbyte.version"] == _metadata()["dockerImageTag"]


# Run inside the image by its Python: the user it runs as, the code's folder (and whether that user
# may write there: on a writable file system, so that only permissions answer), and every package the
# installed connector needs (the closure of its requirements, markers evaluated), with its version.
_INSIDE_THE_IMAGE = """
import json, os, re
from importlib import metadata
from packaging.requirements import Requirement
seen, todo = {}, ["source-klarna"]
while todo:
    name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
    if name in seen:
        continue
    seen[name] = metadata.version(name)
    for text in metadata.requires(name) or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            todo.append(requirement.name)
print(json.dumps({"uid": os.getuid(), "code_writable": os.access(".", os.W_OK), "files": sorted(os.listdir(".")), "packages": seen}))
"""


def test_image_runs_as_uid_1000_with_the_packages_the_tests_ran(image: str) -> None:
    result = docker("run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", _INSIDE_THE_IMAGE, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    inside = json.loads(result.stdout)

    assert inside["uid"] == 1000
    assert inside["code_writable"] is False, "the airbyte user may change the connector's code"
    version = _metadata()["dockerImageTag"]
    assert set(inside["files"]) >= {"main.py", "manifest.yaml", "metadata.yaml", "entrypoint.sh", f"source_klarna-{version}-py3-none-any.whl"}
    assert inside["packages"]["source-klarna"] == version
    assert "airbyte-cdk" in inside["packages"]
    assert inside["packages"] == {name: metadata.version(name) for name in inside["packages"]}, "the image's packages are not the test environment's"


def test_spec_equals_the_installed_executables(image: str) -> None:
    """Through the image's entry point, and through main.py (what older Airbyte images ran)."""
    in_image, installed = run_image("spec"), run_connector("spec")
    through_main_py = run_image("spec", entrypoint=("python", f"{INTEGRATION_CODE}/main.py"))

    for run in (in_image, installed, through_main_py):
        assert run.exit_code == 0, run.everything[-3000:]
    assert _spec_line(in_image) == _spec_line(installed) == _spec_line(through_main_py)


def test_check_succeeds(image: str, image_emulator: KlarnaEmulator) -> None:
    config = image_emulator.config()
    run = run_image("check", config)

    assert run.exit_code == 0, run.everything[-3000:]
    assert run.connection_status()["status"] == "SUCCEEDED", run.connection_status()
    _assert_clean(run, config)


def test_check_with_a_wrong_password_fails_cleanly(image: str, image_emulator: KlarnaEmulator) -> None:
    config = image_emulator.config(password=WRONG_PASSWORD)
    run = run_image("check", config)

    assert run.exit_code == 0, run.everything[-3000:]
    status = run.connection_status()
    assert status["status"] == "FAILED" and status.get("message"), status
    assert not run.errors(), "a failed check is a CONNECTION_STATUS, not an error trace"
    _assert_clean(run, config)


def test_discover_lists_the_six_streams(image: str, image_emulator: KlarnaEmulator) -> None:
    config = image_emulator.config()
    run = run_image("discover", config)

    assert run.exit_code == 0, run.everything[-3000:]
    (catalog,) = run.of_type("CATALOG")
    assert sorted(stream["name"] for stream in catalog["catalog"]["streams"]) == sorted(ALL_STREAMS)
    _assert_clean(run, config)


def _without_stats(states: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The states a platform saves, without `sourceStats` (record counts since the last state, which
    depend on the threads' timing)."""
    return sorted((state["stream"] for state in states), key=lambda stream: stream["stream_descriptor"]["name"])


def test_read_equals_the_emulators_rows_and_resumes_from_its_state(image: str, image_emulator: KlarnaEmulator) -> None:
    config, catalog = image_emulator.config(), configured_catalog(SETTLEMENT_STREAMS, "incremental")
    first = run_image("read", config, catalog)

    assert first.exit_code == 0 and not first.errors(), first.everything[-3000:]
    dataset = image_emulator.dataset
    assert _records(first, "payouts") == Counter(map(_canonical, dataset.payouts()))
    klarna_part = [{k: v for k, v in row.items() if k not in ("transaction_key", "payout_date")} for row in first.records("transactions")]
    assert Counter(map(_canonical, klarna_part)) == Counter(map(_canonical, dataset.transactions()))
    assert len({row["transaction_key"] for row in first.records("transactions")}) == len(klarna_part)
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
    assert _without_stats(second.final_state()) == _without_stats(on_the_host.final_state())
    _assert_clean(second, config)


def test_read_writes_only_in_its_temp_directory(image: str, make_emulator) -> None:
    """Every stream, the orders' request cache included, in a container whose file system is
    writable (no --read-only, no tmpfs): `docker diff` lists each path the sync created or changed."""
    # The acceptance tests' data: small, and every stream has records (seed 1 has captures and refunds).
    emulator = make_emulator(DatasetSpec(seed=1, payouts=6, transactions_per_payout=5, first_payout_date="2026-03-02T00:00:00Z"))
    name = f"source-klarna-test-diff-{uuid.uuid4().hex[:12]}"
    try:
        run = run_image("read", emulator.config(), configured_catalog(ALL_STREAMS, "full_refresh"), docker_args=("--network", "host"), remove=False, name=name)
        assert run.exit_code == 0 and not run.errors(), run.everything[-3000:]
        assert all(run.records(stream) for stream in ALL_STREAMS), {stream: len(run.records(stream)) for stream in ALL_STREAMS}
        changed = docker("diff", name, timeout=300)
        assert changed.returncode == 0, changed.stderr
    finally:
        docker("rm", "--force", name, timeout=120)

    # Lines are "<A|C|D> <path>". /secrets is where the files are mounted; /tmp the sync's temp directory.
    paths = [line.split(" ", 1)[1] for line in changed.stdout.splitlines()]
    outside = [path for path in paths if path not in ("/secrets", "/tmp") and not path.startswith(("/secrets/", "/tmp/"))]
    assert outside == [], f"the sync wrote outside /tmp: {outside[:20]}"
