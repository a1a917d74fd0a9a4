"""Turn Klarna's OpenAPI component schemas into Airbyte stream JSON schemas.

Used two ways: `python -m scripts.openapi_schemas` (from the repository root) prints the YAML for the manifest's `schemas`
section (a starting point when Klarna publishes a new field), and the unit tests import
`airbyte_schema` to prove the manifest's inline schemas still cover the OpenAPI files.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Mapping

import yaml

from reference import ORDER_MANAGEMENT_OPENAPI, SETTLEMENTS_OPENAPI


def load_components(path: Path) -> Mapping[str, Any]:
    return yaml.safe_load(path.read_text())["components"]["schemas"]


def airbyte_schema(components: Mapping[str, Any], name: str, required: tuple[str, ...] = ()) -> dict:
    """The Airbyte schema for one component: every property nullable (Klarna may omit or null any
    field it does not list as required, and a warehouse column must accept that), enums keep their
    values plus null, integers stay integers (money is minor units), date-times get `format`."""
    return _convert(components, components[name], required=set(required))


def _convert(components: Mapping[str, Any], node: Mapping[str, Any], required: set[str] = frozenset()) -> dict:
    if "$ref" in node:
        return _convert(components, components[node["$ref"].rsplit("/", 1)[1]])
    node_type = node.get("type", "object" if "properties" in node else "string")
    out: dict[str, Any] = {}
    if "description" in node:
        out["description"] = " ".join(str(node["description"]).split())
    if node_type == "object":
        out["type"] = ["null", "object"] if not required else "object"
        out["additionalProperties"] = True
        out["properties"] = {}
        for prop, sub in node.get("properties", {}).items():
            converted = _convert(components, sub)
            if prop in required:
                converted["type"] = [t for t in converted["type"] if t != "null"][0] if isinstance(converted["type"], list) else converted["type"]
            out["properties"][prop] = converted
        return out
    if node_type == "array":
        out["type"] = ["null", "array"]
        out["items"] = _convert(components, node.get("items", {}))
        return out
    out["type"] = ["null", node_type]
    if node.get("format") == "date-time":
        out["format"] = "date-time"
        out["airbyte_type"] = "timestamp_with_timezone"
    elif node.get("format") == "date":
        out["format"] = "date"
    # Klarna writes one enum as a single "a|b|c" string (order_line.type): split it into values.
    enum = [part for v in node.get("enum", []) if v is not None for part in str(v).split("|")]
    if enum and node_type == "string":
        out["enum"] = [None, *enum]
    return out


# Which OpenAPI component each stream's records come from, and the keys that are never null.
STREAM_COMPONENTS = {
    "payouts": (SETTLEMENTS_OPENAPI, "Payout", ("payment_reference",)),
    "transactions": (SETTLEMENTS_OPENAPI, "Transaction", ()),
    "payout_summaries": (SETTLEMENTS_OPENAPI, "PayoutSummary", ()),
    "orders": (ORDER_MANAGEMENT_OPENAPI, "MerchantOrderDto", ("order_id",)),
    "captures": (ORDER_MANAGEMENT_OPENAPI, "Capture", ("capture_id",)),
    "refunds": (ORDER_MANAGEMENT_OPENAPI, "Refund", ("refund_id",)),
}


class _FlowTypeDumper(yaml.SafeDumper):
    """Writes short scalar lists (`type: [null, string]`, enums) on one line."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(v, (dict, list)) for v in data) and len(data) <= 4
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_FlowTypeDumper.add_representer(list, _represent_list)


def main() -> None:
    schemas = {}
    for stream, (path, component, required) in STREAM_COMPONENTS.items():
        schema = {"$schema": "http://json-schema.org/draft-07/schema#"}
        schema.update(airbyte_schema(load_components(path), component, required))
        schemas[stream] = schema
    yaml.dump({"schemas": copy.deepcopy(schemas)}, sys.stdout, Dumper=_FlowTypeDumper, sort_keys=False, width=100)


if __name__ == "__main__":
    main()
