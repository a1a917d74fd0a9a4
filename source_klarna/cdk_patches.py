"""Patches of the CDK that are not manifest components: what source-klarna's entrypoint does to the
streams the CDK builds, and that the manifest-only runtime therefore does without (README says what
that costs).

`observe_each_cursor_value_once` (installed by `SourceKlarna.streams`) spares the CDK's cursors the
per-record parse of a cursor value they have just seen. It replaces the `observe` method of the
CDK's cursor objects (`stream.cursor`, `cursor.cursor_field.cursor_field_key`: CDK 7.39.1 internals,
guarded by unit_tests/test_cdk_internals.py). It can go when the CDK observes a partition's cursor
value once, or parses it without strptime.

`skip_attribute_docs` (called by `source_klarna/__init__.py` before the CDK is imported) spares every
start of the connector (spec, check, discover, read: each a process, on Airbyte a pod) about 0.9 s
of CPU, a third of its start: importing `airbyte_cdk.models` builds the protocol's serializers, and
serpyco_rs looks for attribute docstrings by reading and parsing the source of every protocol class
and each of its bases. Those docstrings only ever become "description"s of a JSON schema of the
protocol classes, which nothing in a connector asks for; the serializers are the same without them
(unit_tests/test_cdk_patches.py compares their output). It can go when serpyco_rs reads the docs
lazily.
"""

import threading
from typing import Any, Callable, Dict, Sequence


def _no_attribute_docs(cls: type) -> Dict[str, str]:
    return {}


def skip_attribute_docs() -> bool:
    """Makes serpyco_rs describe classes without their attribute docstrings; whether it could."""
    try:
        from serpyco_rs import _describe
        from serpyco_rs._json_schema import _convert
    except ImportError:
        return False
    modules = [module for module in (_describe, _convert) if hasattr(module, "get_attributes_doc")]
    for module in modules:
        module.get_attributes_doc = _no_attribute_docs  # type: ignore[attr-defined]
    return len(modules) == 2


class ObserveEachCursorValueOnce:
    """A stream cursor's `observe`, called only when a record's cursor value differs from the previous
    record's of the same partition on the same thread.

    The CDK observes every record: it parses the cursor value with `strptime` (which takes a module
    lock), formats it back and compares it with the stream's. All transactions of a payout share its
    payout_date, so that work is repeated ~500 times a page with the same outcome (15 % of the CPU of
    a CPU-bound read). Observing the same value for the same slice again changes nothing in the CDK's
    cursors (the global cursor keeps the greatest value; a partition's cursor keeps the greatest per
    slice), so skipping the repeat is exact. A partition is read by one worker from start to end, so a
    per-thread memory of (slice, value) sees every repeat. Installed by SourceKlarna.streams().
    """

    def __init__(self, observe: Callable[[Any], None], cursor_field_key: str) -> None:
        self._observe = observe
        self._key = cursor_field_key
        self._last = threading.local()

    def __call__(self, record: Any) -> None:
        last = self._last
        value = record.data.get(self._key)
        stream_slice = record.associated_slice
        if value is not None and getattr(last, "slice", None) is stream_slice and last.value == value:
            return
        self._observe(record)
        # Holding the slice keeps its id from being reused while it is remembered.
        last.slice, last.value = stream_slice, value


def observe_each_cursor_value_once(streams: Sequence[Any]) -> None:
    """Wraps the `observe` of every stream cursor that has a cursor field (see ObserveEachCursorValueOnce)."""
    for stream in streams:
        cursor = getattr(stream, "cursor", None)
        cursor_field = getattr(cursor, "cursor_field", None)
        key = getattr(cursor_field, "cursor_field_key", None)
        if cursor is None or not isinstance(key, str) or isinstance(cursor.observe, ObserveEachCursorValueOnce):
            continue
        cursor.observe = ObserveEachCursorValueOnce(cursor.observe, key)
