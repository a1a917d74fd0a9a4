"""The manifest's `schemas:` section, generated from Klarna's OpenAPI files and the connector's decisions.

`python -m scripts.openapi_schemas` (from the repository root, which is how `reference` imports;
`make schemas`) rewrites the part of manifest.yaml between its two marker comments and nothing else;
`--check` writes nothing and exits 1 with a short diff when the manifest differs from what it would write.

Each stream's schema is its OpenAPI component (reference/, `STREAM_COMPONENTS`) converted to an Airbyte
JSON schema, with the decisions of schema_decisions.yaml beside this file applied: the fields the
connector adds, the keys that are never null, the personal-data descriptions. Klarna components that
several places use are written once (scripts/shared_parts.py). The unit tests import
`expanded_stream_schemas` (what discover must show) and `generated_section` (what the manifest must hold).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from reference import DISPUTES_OPENAPI, ORDER_MANAGEMENT_OPENAPI, SETTLEMENTS_OPENAPI
from scripts import manifest_section
from scripts.shared_parts import ComponentSchema, check_resolves_to, plain, share

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "manifest.yaml"
DECISIONS = Path(__file__).with_name("schema_decisions.yaml")
JSON_SCHEMA_DRAFT = "http://json-schema.org/draft-07/schema#"

# Which OpenAPI component each stream's records come from.
STREAM_COMPONENTS = {
    "payouts": (SETTLEMENTS_OPENAPI, "Payout"),
    "transactions": (SETTLEMENTS_OPENAPI, "Transaction"),
    "payout_summaries": (SETTLEMENTS_OPENAPI, "PayoutSummary"),
    "orders": (ORDER_MANAGEMENT_OPENAPI, "MerchantOrderDto"),
    "captures": (ORDER_MANAGEMENT_OPENAPI, "Capture"),
    "refunds": (ORDER_MANAGEMENT_OPENAPI, "Refund"),
    "pending_transactions": (SETTLEMENTS_OPENAPI, "Transaction"),
    "disputes": (DISPUTES_OPENAPI, "DisputeDetails"),
}

SECTION_HEADER = """\
# Generated from Klarna's OpenAPI files (reference/) and the connector's decisions about them
# (scripts/schema_decisions.yaml: added fields, keys never null, personal-data notes) by
# scripts/openapi_schemas.py; unit_tests/test_schema_generator.py fails when this differs from its output.
"""
SHARED_COMMENT = """\
  # Klarna components that several places use, written once. Each place takes one with a `$ref`
  # (beside it, only what differs there), which the CDK resolves when it loads the manifest: discover
  # and the Connector Builder see every stream's schema complete and inline.
"""


def load_components(path: Path) -> Mapping[str, Any]:
    return yaml.safe_load(path.read_text())["components"]["schemas"]


def load_decisions(path: Path = DECISIONS) -> Dict[str, Any]:
    return yaml.safe_load(path.read_text())


class DecisionError(ValueError):
    """schema_decisions.yaml names something the OpenAPI files do not have (or no longer have)."""


class _Converter:
    """Klarna's OpenAPI schemas to Airbyte's: every property nullable (Klarna may omit or null any field,
    and a warehouse column must accept that), enums become plain strings whose description lists the
    values known today (Klarna's value lists keep growing: `detailed_type` gained CASH_ADVANCE_* and
    LIABILITY_TRANSFER after its OpenAPI file was written, and a record with a new value must land as it
    is), integers stay integers (money is minor units), date-times get `format`. Each converted component is a ComponentSchema, so
    that the manifest can write it once."""

    def __init__(self, components: Mapping[str, Any], descriptions: Mapping[str, str]) -> None:
        self._components = components
        self._descriptions = descriptions  # path in the record -> the description the connector gives it
        self.described: set = set()

    def component(self, name: str) -> ComponentSchema:
        return self.convert({"$ref": f"#/components/schemas/{name}"}, "")

    def convert(self, node: Mapping[str, Any], at: str) -> Dict[str, Any]:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[1]
            converted = self.convert(self._components[name], at)
            return converted if isinstance(converted, ComponentSchema) else ComponentSchema(name, converted)
        node_type = node.get("type", "object" if "properties" in node else "string")
        out: Dict[str, Any] = {}
        description = self._description(node, at)
        # Klarna writes one enum as a single "a|b|c" string (order_line.type): split it into values.
        known = [part for v in node.get("enum", []) if v is not None for part in str(v).split("|")]
        if known and node_type == "string":
            lead = f"{description.rstrip('. ')}. " if description else ""
            description = f"{lead}Known values (the list grows): {', '.join(known)}."
        if description is not None:
            out["description"] = description
        if node_type == "object":
            out["type"] = ["null", "object"]
            out["additionalProperties"] = True
            out["properties"] = {prop: self.convert(sub, f"{at}.{prop}" if at else prop) for prop, sub in node.get("properties", {}).items()}
            return out
        if node_type == "array":
            out["type"] = ["null", "array"]
            out["items"] = self.convert(node.get("items", {}), f"{at}[]")
            return out
        out["type"] = ["null", node_type]
        if node.get("format") == "date-time":
            out["format"] = "date-time"
            out["airbyte_type"] = "timestamp_with_timezone"
        elif node.get("format") == "date":
            out["format"] = "date"
        return out

    def _description(self, node: Mapping[str, Any], at: str) -> Optional[str]:
        if at in self._descriptions:
            self.described.add(at)
            return self._descriptions[at]
        if "description" in node:
            return " ".join(str(node["description"]).split())
        return None


def _never_null(schema: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.copy(schema)  # a shallow copy keeps a ComponentSchema one
    if isinstance(out.get("type"), list):
        kinds = [kind for kind in out["type"] if kind != "null"]
        out["type"] = kinds[0] if len(kinds) == 1 else kinds
    return out


def _stream_schema(stream: str, components: Mapping[str, Any], component: str, decision: Mapping[str, Any], note: str) -> ComponentSchema:
    personal = {path: f"{description} {note}" for path, description in decision.get("personal_data", {}).items()}
    converter = _Converter(components, personal)
    record = converter.component(component)
    if set(personal) - converter.described:
        raise DecisionError(f"{stream}: personal_data names {sorted(set(personal) - converter.described)}, which {component} does not have")

    added_first, added = decision.get("added_first", {}), decision.get("added", {})
    republished = (set(added_first) | set(added)) & set(record["properties"])
    if republished:
        raise DecisionError(f"{stream}: Klarna's {component} now has {sorted(republished)}: remove them from `added` / `added_first`")
    properties = {**copy.deepcopy(added_first), **record["properties"], **copy.deepcopy(added)}
    required: List[str] = list(decision.get("required", []))
    for key in required:
        if key not in properties:
            raise DecisionError(f"{stream}: required key {key!r} is not a field of the stream")
        properties[key] = _never_null(properties[key])

    # A record is an object, never null; `$schema` first, `required` last, as Airbyte writes them.
    schema = ComponentSchema(component, {"$schema": JSON_SCHEMA_DRAFT, **record, "type": "object", "properties": properties})
    if required:
        schema["required"] = required
    return schema


def _build(decisions: Mapping[str, Any]) -> Tuple[Dict[str, ComponentSchema], Callable[[str], ComponentSchema]]:
    """Each stream's schema, and a function giving a component as Klarna publishes it (no decision applied)."""
    unknown = sorted(set(decisions.get("streams", {})) - set(STREAM_COMPONENTS))
    if unknown:
        raise DecisionError(f"schema_decisions.yaml names streams the connector does not have: {unknown}")
    loaded = {path: load_components(path) for path in {path for path, _ in STREAM_COMPONENTS.values()}}
    note = decisions["personal_data_note"]
    schemas = {
        stream: _stream_schema(stream, loaded[path], component, decisions.get("streams", {}).get(stream, {}), note)
        for stream, (path, component) in STREAM_COMPONENTS.items()
    }

    def klarnas_own(component: str) -> ComponentSchema:
        files = [components for components in loaded.values() if component in components]
        if len(files) != 1:
            raise ValueError(f"Klarna's component {component!r} is in {len(files)} OpenAPI files; the manifest needs one name per shared part")
        return _Converter(files[0], {}).component(component)

    return schemas, klarnas_own


def expanded_stream_schemas(decisions: Optional[Mapping[str, Any]] = None) -> Dict[str, Dict[str, Any]]:
    """Each stream's complete JSON schema, as discover must show it (plain dicts, key order meaningful)."""
    schemas, _ = _build(decisions if decisions is not None else load_decisions())
    return {stream: plain(schema) for stream, schema in schemas.items()}


def generated_section(decisions: Optional[Mapping[str, Any]] = None) -> str:
    """The text between the manifest's markers: the `schemas:` mapping, shared parts written once."""
    schemas, klarnas_own = _build(decisions if decisions is not None else load_decisions())
    section = share(schemas, klarnas_own)
    check_resolves_to(section, schemas)
    return SECTION_HEADER + manifest_section.to_yaml({"schemas": section}).replace("\n  shared:\n", "\n" + SHARED_COMMENT + "  shared:\n", 1)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.openapi_schemas", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 with a diff if the manifest is not up to date")
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help="the manifest to write or check (default: %(default)s)")
    args = parser.parse_args(argv)

    current = manifest_section.read(args.manifest)
    wanted = manifest_section.replace_section(current, generated_section())
    if args.check:
        if wanted == current:
            print(f"{args.manifest.name}: the schemas section is up to date")
            return 0
        print(f"{args.manifest.name}: the schemas section differs from the generator's output; run `make schemas`")
        print(manifest_section.short_diff(current, wanted, args.manifest.name))
        return 1
    if wanted == current:
        print(f"{args.manifest.name}: the schemas section is already up to date")
    else:
        manifest_section.write(args.manifest, wanted)
        print(f"{args.manifest.name}: wrote the schemas section")
    return 0


if __name__ == "__main__":
    sys.exit(main())
