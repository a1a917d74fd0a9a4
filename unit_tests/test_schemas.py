"""Every stream schema covers its Klarna OpenAPI component, so a field Klarna adds is caught here."""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Tuple

import jsonschema
import pytest

from scripts.openapi_schemas import STREAM_COMPONENTS, load_components, load_decisions
from source_klarna import SourceKlarna
from unit_tests.mock_server.klarna_mock import discover_offline

CONFIG = {"username": "u", "password": "p", "start_date": "2024-01-01T00:00:00Z"}
# What the connector decides about each stream's schema (scripts/schema_decisions.yaml).
DECISIONS = {stream: load_decisions()["streams"].get(stream, {}) for stream in STREAM_COMPONENTS}
ADDED_BY_THE_CONNECTOR = {
    stream: set(decision.get("added_first", {})) | set(decision.get("added", {})) for stream, decision in DECISIONS.items()
}


@pytest.fixture(scope="module")
def stream_schemas() -> Mapping[str, Mapping[str, Any]]:
    catalog = discover_offline(CONFIG)
    return {stream.name: stream.json_schema for stream in catalog.streams}


def _walk(openapi: Mapping[str, Any], ours: Mapping[str, Any], components: Mapping[str, Any], path: str) -> Iterator[Tuple[str, Mapping, Mapping]]:
    if "$ref" in openapi:
        openapi = components[openapi["$ref"].rsplit("/", 1)[1]]
    yield path, openapi, ours
    if "properties" in openapi:
        for name, sub in openapi["properties"].items():
            assert name in ours.get("properties", {}), f"{path}.{name} is in Klarna's OpenAPI but not in our schema"
            yield from _walk(sub, ours["properties"][name], components, f"{path}.{name}")
    if openapi.get("type") == "array" and "items" in openapi:
        yield from _walk(openapi["items"], ours["items"], components, f"{path}[]")


def _types(schema: Mapping[str, Any]) -> set:
    kind = schema.get("type")
    return set(kind) if isinstance(kind, list) else {kind}


@pytest.mark.parametrize("stream", sorted(STREAM_COMPONENTS))
def test_schema_covers_every_openapi_field_type_format_and_value_list(stream_schemas, stream):
    path, component = STREAM_COMPONENTS[stream]
    keys = DECISIONS[stream].get("required", [])
    components = load_components(path)
    for where, openapi, ours in _walk(components[component], stream_schemas[stream], components, stream):
        kind = openapi.get("type", "object" if "properties" in openapi else None)
        if kind:
            assert kind in _types(ours), f"{where}: OpenAPI says {kind}, we say {ours.get('type')}"
        if openapi.get("format") == "date-time":
            assert ours.get("format") == "date-time", f"{where} must be format: date-time"
        if "enum" in openapi and kind == "string":
            # Klarna's value lists keep growing: a plain string, the values known today in its description.
            values = [part for v in openapi["enum"] if v is not None for part in str(v).split("|")]
            assert "enum" not in ours, f"{where} must not be an enum: Klarna adds values"
            assert f"Known values (the list grows): {', '.join(values)}." in ours.get("description", ""), where
        if where != stream and where.rsplit(".", 1)[-1] not in keys:
            assert "null" in _types(ours), f"{where} must be nullable: Klarna may omit it"


@pytest.mark.parametrize("stream", sorted(STREAM_COMPONENTS))
def test_schema_has_no_field_klarna_does_not_publish_except_ours(stream_schemas, stream):
    path, component = STREAM_COMPONENTS[stream]
    published = set(load_components(path)[component]["properties"])
    ours = set(stream_schemas[stream]["properties"])

    assert ours - published == ADDED_BY_THE_CONNECTOR.get(stream, set())


def test_money_is_integer_minor_units(stream_schemas):
    totals = stream_schemas["payouts"]["properties"]["totals"]["properties"]
    assert all("integer" in _types(field) for name, field in totals.items() if name.endswith("_amount"))
    assert "integer" in _types(stream_schemas["transactions"]["properties"]["amount"])


def test_primary_keys_are_never_null(stream_schemas):
    assert _types(stream_schemas["payouts"]["properties"]["payment_reference"]) == {"string"}
    assert _types(stream_schemas["transactions"]["properties"]["transaction_key"]) == {"string"}
    assert _types(stream_schemas["orders"]["properties"]["order_id"]) == {"string"}
    assert _types(stream_schemas["captures"]["properties"]["capture_id"]) == {"string"}
    assert _types(stream_schemas["refunds"]["properties"]["refund_id"]) == {"string"}


@pytest.mark.parametrize("stream", ["captures", "refunds"])
def test_items_carry_their_order_id_never_null(stream_schemas, stream):
    assert _types(stream_schemas[stream]["properties"]["order_id"]) == {"string"}
    assert "order_id" in stream_schemas[stream]["required"]


@pytest.mark.parametrize("stream", ["orders", "captures", "refunds"])
def test_the_cursor_is_a_nullable_date_time(stream_schemas, stream):
    payout_date = stream_schemas[stream]["properties"]["payout_date"]
    assert _types(payout_date) == {"null", "string"} and payout_date["format"] == "date-time"


def test_personal_fields_stay_in_the_schemas_nullable(stream_schemas):
    # Left out of the records unless include_personal_data is on, but still columns a warehouse knows.
    orders = stream_schemas["orders"]["properties"]
    for name in ("billing_address", "shipping_address", "customer"):
        assert "null" in _types(orders[name])
    for schema in (orders["captures"]["items"], stream_schemas["captures"]):
        for name in ("billing_address", "shipping_address"):
            assert "null" in _types(schema["properties"][name])


def test_money_of_orders_and_items_is_integer_minor_units(stream_schemas):
    orders = stream_schemas["orders"]["properties"]
    for name in ("order_amount", "original_order_amount", "captured_amount", "refunded_amount", "remaining_authorized_amount"):
        assert "integer" in _types(orders[name]), name
    assert "integer" in _types(stream_schemas["captures"]["properties"]["captured_amount"])
    assert "integer" in _types(stream_schemas["refunds"]["properties"]["refunded_amount"])


def _described_as_personal(schema: Mapping[str, Any], note: str, path: str = "") -> Iterator[str]:
    if note in schema.get("description", "") and path:
        yield path
    for name, sub in schema.get("properties", {}).items():
        yield from _described_as_personal(sub, note, f"{path}.{name}" if path else name)
    if "items" in schema:
        yield from _described_as_personal(schema["items"], note, f"{path}[]")


def _has_field(schema: Mapping[str, Any], pointer: list) -> bool:
    for part in pointer:
        schema = schema.get("items") if part == "*" else schema.get("properties", {}).get(part)
        if schema is None:
            return False
    return True


@pytest.mark.parametrize("stream", sorted(STREAM_COMPONENTS))
def test_the_fields_described_as_personal_data_are_those_the_switch_removes(stream_schemas, stream):
    manifest_stream = next(s for s in SourceKlarna(config=CONFIG).resolved_manifest["streams"] if s["name"] == stream)
    removed = {
        ".".join(pointer).replace(".*", "[]")
        for transformation in manifest_stream.get("transformations", [])
        if transformation.get("class_name", "").endswith(".RemoveFieldsUnlessConfigured")
        for pointer in transformation["field_pointers"]
        if _has_field(stream_schemas[stream], pointer)
    }

    assert set(_described_as_personal(stream_schemas[stream], load_decisions()["personal_data_note"])) == removed


@pytest.mark.parametrize(
    "stream, record",
    [
        ("transactions", {"transaction_key": "P:f:0", "type": "CREDIT", "detailed_type": "CASH_ADVANCE_PAYOUT", "amount": 100}),
        ("transactions", {"transaction_key": "P:f:1", "type": "CHARGE", "detailed_type": "LIABILITY_TRANSFER", "amount": 100}),
        ("orders", {"order_id": "o1", "status": "SOME_NEW_STATUS", "order_lines": [{"type": "gift_card_v2"}]}),
    ],
)
def test_a_value_klarna_added_after_its_openapi_file_is_valid_for_the_schema(stream_schemas, stream, record):
    # Klarna's settlement-file documentation lists detailed types its OpenAPI file lacks (CASH_ADVANCE_*,
    # LIABILITY_TRANSFER); a record with one must be valid as it is (mock_server/test_transactions.py shows it lands).
    jsonschema.validate(record, stream_schemas[stream])
