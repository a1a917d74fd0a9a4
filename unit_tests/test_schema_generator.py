"""The manifest's `schemas:` section is the schema generator's output (scripts/openapi_schemas.py), and
what it shares resolves, for discover and for the Connector Builder, to every stream's complete schema."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from airbyte_cdk.connector_builder.connector_builder_handler import create_source, get_limits, resolve_manifest
from scripts import manifest_section
from scripts.manifest_section import MarkerError
from scripts.openapi_schemas import MANIFEST, ROOT, DecisionError, expanded_stream_schemas, generated_section, load_decisions, main
from scripts.shared_parts import ComponentSchema, SharingError, check_resolves_to, share
from unit_tests.mock_server.klarna_mock import discover_offline

CONFIG = {"username": "u", "password": "p"}
# A line of the generated section, and the hand edit the tests make to it.
KLARNAS_LINE = "          description: City.\n"
HAND_EDITED_LINE = "          description: Town.\n"


@pytest.fixture(scope="module")
def section() -> str:
    return generated_section()


@pytest.fixture(scope="module")
def expanded():
    return expanded_stream_schemas()


@pytest.fixture
def manifest_copy(tmp_path) -> Path:
    copied = tmp_path / "manifest.yaml"
    copied.write_bytes(MANIFEST.read_bytes())
    return copied


def hand_edit(path: Path) -> None:
    text = manifest_section.read(path)
    assert text.count(KLARNAS_LINE) == 1, "the test's hand edit needs a line that occurs once"
    manifest_section.write(path, text.replace(KLARNAS_LINE, HAND_EDITED_LINE))


def as_json(schema) -> str:
    return json.dumps(schema)  # key order counts: discover prints the keys in this order


# ------------------------------------------------------------------------------------ the manifest


def test_the_manifests_schemas_section_is_the_generators_output(section):
    current = manifest_section.section(manifest_section.read(MANIFEST))

    assert current == section, (
        "manifest.yaml's schemas section is not what scripts/openapi_schemas.py writes: run `make schemas`\n"
        + manifest_section.short_diff(current, section, "manifest.yaml")
    )


def test_discover_shows_each_streams_complete_schema(expanded):
    catalog = discover_offline(CONFIG)
    discovered = {stream.name: stream.json_schema for stream in catalog.streams}

    expected = expanded
    assert list(discovered) == list(expected)
    for stream, schema in expected.items():
        assert as_json(discovered[stream]) == as_json(schema), stream
        assert "$ref" not in as_json(discovered[stream])


def test_the_connector_builder_resolves_every_schema_inline(expanded, monkeypatch):
    # The Builder runs this manifest only where custom code may run (components.py): the spec's start_date
    # check is a custom component too, built even to resolve the manifest.
    monkeypatch.setenv("AIRBYTE_ENABLE_UNSAFE_CODE", "true")
    builder_config = {**CONFIG, "__injected_declarative_manifest": yaml.safe_load(MANIFEST.read_text()), "__command": "resolve_manifest"}
    answer = resolve_manifest(create_source(config=builder_config, limits=get_limits(builder_config)))
    streams = {stream["name"]: stream for stream in answer.record.data["manifest"]["streams"]}

    for stream, schema in expanded.items():
        loader = streams[stream]["schema_loader"]
        assert loader["type"] == "InlineSchemaLoader"
        assert as_json(loader["schema"]) == as_json(schema), stream


def test_shared_parts_are_written_once(section, expanded):
    # One field of each shared Klarna component: address, order_line, shipping_info, Capture, Refund.
    for description in ("Second line of street address.", "Descriptive item name.", "Name of the shipping company (as specific",
                        "The captured amount in minor units.", "Refunded amount in minor units."):
        assert sum(as_json(schema).count(description) for schema in expanded.values()) > 1, description
        assert section.count(description) == 1, description


# ----------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("edited, exit_code", [(False, 0), (True, 1)])
def test_make_schemas_check_fails_on_a_hand_edited_schema_only(manifest_copy, edited, exit_code):
    if edited:
        hand_edit(manifest_copy)
    before = manifest_copy.read_bytes()

    # As `make schemas` runs it: a module of the repository root, with the venv's Python.
    done = subprocess.run(
        [sys.executable, "-m", "scripts.openapi_schemas", "--check", "--manifest", str(manifest_copy)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )

    assert done.returncode == exit_code, done.stdout + done.stderr
    assert manifest_copy.read_bytes() == before, "--check must not write"
    if edited:
        assert "run `make schemas`" in done.stdout
        assert "-" + HAND_EDITED_LINE.rstrip("\n") in done.stdout.splitlines()
        assert "+" + KLARNAS_LINE.rstrip("\n") in done.stdout.splitlines()
        assert len(done.stdout.splitlines()) < 50, "the diff is short"


def test_writing_restores_the_section_and_keeps_every_byte_outside_the_markers(manifest_copy, capsys):
    hand_edit(manifest_copy)
    outside = "# a line someone else added above the schemas\n"
    text = manifest_section.read(manifest_copy)
    manifest_section.write(manifest_copy, text.replace(manifest_section.BEGIN, outside + manifest_section.BEGIN, 1))

    assert main(["--manifest", str(manifest_copy)]) == 0

    original = manifest_section.read(MANIFEST)
    assert manifest_section.read(manifest_copy) == original.replace(manifest_section.BEGIN, outside + manifest_section.BEGIN, 1)
    assert main(["--check", "--manifest", str(manifest_copy)]) == 0
    assert "wrote the schemas section" in capsys.readouterr().out


def test_a_manifest_without_its_markers_is_refused(manifest_copy):
    text = manifest_section.read(manifest_copy)
    manifest_section.write(manifest_copy, text.replace(manifest_section.END + "\n", ""))

    with pytest.raises(MarkerError, match="put them back"):
        main(["--check", "--manifest", str(manifest_copy)])


# --------------------------------------------------------------------------------- the decisions


def decisions_with(change) -> dict:
    decisions = copy.deepcopy(load_decisions())
    change(decisions["streams"])
    return decisions


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda streams: streams["orders"]["personal_data"].update({"biling_address": "typo"}), "biling_address"),
        (lambda streams: streams["captures"]["required"].append("capture_idd"), "capture_idd"),
        (lambda streams: streams["refunds"]["added"].update({"refunded_at": {"type": "string"}}), "refunded_at"),
        (lambda streams: streams.update({"invoices": {}}), "invoices"),
    ],
    ids=["personal_data", "required", "added", "stream"],
)
def test_a_decision_about_something_klarna_does_not_have_or_already_has_is_refused(change, named):
    with pytest.raises(DecisionError, match=named):
        expanded_stream_schemas(decisions_with(change))


def test_a_required_key_loses_null_and_is_listed(expanded):
    decisions = decisions_with(lambda streams: streams["payout_summaries"].update({"required": ["summary_settlement_currency"]}))
    summaries = expanded_stream_schemas(decisions)["payout_summaries"]

    assert summaries["required"] == ["summary_settlement_currency"]
    assert summaries["properties"]["summary_settlement_currency"]["type"] == "string"
    assert expanded["payout_summaries"]["properties"]["summary_settlement_currency"]["type"] == ["null", "string"]


# ------------------------------------------------------------------------------- the shared parts


def field(description: str) -> dict:
    return {"description": description, "type": ["null", "string"]}


def thing(description: str = "Klarna's thing.") -> ComponentSchema:
    return ComponentSchema("thing", {"description": description, "type": ["null", "object"], "properties": {"a": field("A.")}})


def test_a_component_two_places_use_is_written_once_with_what_differs_beside_its_ref():
    schemas = {
        "one": ComponentSchema("One", {"type": "object", "properties": {"x": thing(), "y": thing("Ours.")}}),
        "two": ComponentSchema("Two", {"type": "object", "properties": {"x": thing()}}),
    }

    section = share(schemas, lambda component: thing())

    assert section["shared"] == {"thing": {"description": "Klarna's thing.", "type": ["null", "object"], "properties": {"a": field("A.")}}}
    assert section["one"]["properties"] == {"x": {"$ref": "#/schemas/shared/thing"}, "y": {"$ref": "#/schemas/shared/thing", "description": "Ours."}}
    assert section["two"]["properties"] == {"x": {"$ref": "#/schemas/shared/thing"}}
    check_resolves_to(section, schemas)


def test_a_stream_that_is_also_a_shared_component_takes_its_fields_and_adds_its_own():
    embedded = thing()
    record = ComponentSchema("thing", {"$schema": "draft-07", **thing(), "type": "object"})
    record["properties"] = {**record["properties"], "added": field("Ours.")}
    schemas = {"holder": ComponentSchema("Holder", {"properties": {"things": {"items": embedded}}}), "things": record}

    section = share(schemas, lambda component: thing())

    # `$schema` comes first, so the record cannot be the shared part plus additions: it is written
    # out, and its fields are the shared part's plus its own.
    assert section["things"] == {
        "$schema": "draft-07",
        "description": "Klarna's thing.",
        "type": "object",
        "properties": {"$ref": "#/schemas/shared/thing/properties", "added": field("Ours.")},
    }
    check_resolves_to(section, schemas)


def test_a_component_one_place_uses_stays_inline():
    schemas = {"one": ComponentSchema("One", {"type": "object", "properties": {"x": thing(), "y": field("Y.")}})}

    assert share(schemas, lambda component: thing()) == {"one": {"type": "object", "properties": {"x": dict(thing()), "y": field("Y.")}}}


def test_the_check_fails_when_the_shared_form_does_not_resolve_to_the_schemas():
    schemas = {"one": ComponentSchema("One", {"properties": {"x": thing(), "y": thing()}})}
    section = share(schemas, lambda component: thing())
    section["shared"]["thing"]["description"] = "Changed."

    with pytest.raises(SharingError, match="one"):
        check_resolves_to(section, schemas)
