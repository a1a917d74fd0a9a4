"""Klarna components that several places of the stream schemas use, written once in the manifest.

The `schemas:` section keeps one copy of each such component under `schemas.shared.<component>`, and
each place that uses it says `$ref: "#/schemas/shared/<component>"` with, beside the `$ref`, only what
differs there (a description, a key that is never null, the fields the connector adds). The CDK's
ManifestReferenceResolver, which runs whenever a manifest is loaded (discover, read, the Connector
Builder's resolve_manifest), replaces such a mapping by the one it points to overlaid with the keys
beside the `$ref`: a key the target has keeps its place, a new key comes last. `share` only writes
what that rule turns back into the same schema, and `check_resolves_to` proves it with the resolver.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

SHARED = "shared"


class ComponentSchema(dict):
    """A JSON schema converted from one Klarna OpenAPI component, `component` its name."""

    def __init__(self, component: str, schema: Mapping[str, Any] = ()) -> None:
        super().__init__(schema)
        self.component = component


class SharingError(RuntimeError):
    """The shared form of the schemas does not resolve to the complete ones (a bug of this module)."""


def plain(node: Any) -> Any:
    """The same schema in plain dicts and lists."""
    if isinstance(node, Mapping):
        return {key: plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [plain(value) for value in node]
    return node


def _same(a: Any, b: Any) -> bool:
    # Key order counts (discover prints the keys in this order); `==` on dicts ignores it.
    return json.dumps(a) == json.dumps(b)


def _has_parts(schema: Mapping[str, Any]) -> bool:
    # A `$ref` stands in only for something with parts (an object, an array, a list of fields):
    # a single field is clearer written out.
    return any(isinstance(value, Mapping) for value in schema.values())


def _uses(schemas: Mapping[str, Mapping[str, Any]]) -> Tuple[Dict[str, List[ComponentSchema]], Dict[str, Set[Tuple[str, str]]]]:
    """Every converted copy of each component, and the places that use it: (what it is inside, where)."""
    copies: Dict[str, List[ComponentSchema]] = {}
    places: Dict[str, Set[Tuple[str, str]]] = {}

    def walk(node: Any, inside: str, path: str) -> None:
        if isinstance(node, ComponentSchema):
            copies.setdefault(node.component, []).append(node)
            places.setdefault(node.component, set()).add((inside, path))
            inside, path = node.component, ""
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, inside, f"{path}/{key}")

    for stream, schema in schemas.items():
        walk(schema, f"stream {stream}", "")
    return copies, places


def _common(copies: List[Any], klarnas: Any) -> Any:
    """What every copy of a component has: where all copies agree, theirs; elsewhere Klarna's own."""
    first = copies[0]
    if all(_same(other, first) for other in copies[1:]):
        return first
    if isinstance(klarnas, Mapping) and all(isinstance(other, Mapping) for other in copies):
        merged = {
            key: _common([other[key] for other in copies], value) if all(key in other for other in copies) else value
            for key, value in klarnas.items()
        }
        return ComponentSchema(klarnas.component, merged) if isinstance(klarnas, ComponentSchema) else merged
    return klarnas


class _Writer:
    def __init__(self, shared: Mapping[str, ComponentSchema]) -> None:
        self._shared = shared

    def definition(self, component: str) -> Dict[str, Any]:
        return {key: self.node(value) for key, value in self._shared[component].items()}

    def node(self, node: Any, base: Optional[Any] = None, ref: str = "") -> Any:
        """`node` as the manifest writes it; `base` is what `$ref: ref` would give at this place, if anything."""
        if isinstance(node, ComponentSchema) and node.component in self._shared:
            base, ref = self._shared[node.component], f"#/schemas/{SHARED}/{node.component}"
        if not isinstance(node, Mapping):
            return node
        if isinstance(base, Mapping) and _has_parts(base):
            if _same(node, base):
                return {"$ref": ref}
            if list(node)[: len(base)] == list(base):  # the base's keys in its order, then any new ones
                written: Dict[str, Any] = {"$ref": ref}
                for key, value in node.items():
                    if key not in base:
                        written[key] = self.node(value)
                    elif not _same(value, base[key]):
                        written[key] = self.node(value, base[key], f"{ref}/{key}")
                return written
        # Written out, its parts still taking what they can from the base's parts.
        return {
            key: self.node(value, base[key], f"{ref}/{key}") if isinstance(base, Mapping) and key in base else self.node(value)
            for key, value in node.items()
        }


def share(schemas: Mapping[str, ComponentSchema], klarnas_own: Callable[[str], ComponentSchema]) -> Dict[str, Any]:
    """The `schemas:` section: each stream's schema, with every component that more than one place uses
    written once under `shared` (as all its uses have it, and as Klarna has it where they differ)."""
    if SHARED in schemas:
        raise SharingError(f"a stream named {SHARED!r} would clash with the shared parts")
    copies, places = _uses(schemas)
    shared = {component: _common(found, klarnas_own(component)) for component, found in copies.items() if len(places[component]) > 1}
    writer = _Writer(shared)
    section: Dict[str, Any] = {stream: writer.node(schema) for stream, schema in schemas.items()}
    if shared:
        section[SHARED] = {component: writer.definition(component) for component in shared}
    return section


def check_resolves_to(section: Mapping[str, Any], schemas: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise unless the CDK, resolving the section's `$ref`s, gives back every stream's complete schema."""
    from airbyte_cdk.sources.declarative.parsers.manifest_reference_resolver import ManifestReferenceResolver

    resolved = ManifestReferenceResolver().preprocess_manifest({"schemas": plain(section)})["schemas"]
    wrong = [stream for stream, schema in schemas.items() if not _same(resolved.get(stream), schema)]
    if wrong:
        raise SharingError(f"the shared form of {wrong} does not resolve to the complete schema")
