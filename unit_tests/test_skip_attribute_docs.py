"""cdk_patches.skip_attribute_docs: the protocol's serializers built without attribute docstrings write
and read every kind of message exactly as the CDK's own do."""

from __future__ import annotations

import json
import subprocess
import sys

from source_klarna import cdk_patches

# Every message kind a connector writes or reads, serialised and read back by the CDK's serializers.
PROBE = r"""
import json, sys
if sys.argv[1] == "patched":
    from source_klarna.cdk_patches import skip_attribute_docs
    assert skip_attribute_docs()
from airbyte_cdk.models import (
    AirbyteMessageSerializer, ConfiguredAirbyteCatalogSerializer, ConnectorSpecificationSerializer, AirbyteStateMessageSerializer,
)
from airbyte_cdk.sources.declarative.yaml_declarative_source import YamlDeclarativeSource

messages = [
    {"type": "RECORD", "record": {"stream": "orders", "data": {"order_id": "o1", "n": 1.5, "x": None}, "emitted_at": 1}},
    {"type": "STATE", "state": {"type": "STREAM", "stream": {"stream_descriptor": {"name": "orders"},
        "stream_state": {"use_global_cursor": True, "state": {"payout_date": "2024-01-01"}, "__ab_no_cursor_state_message": True}}}},
    {"type": "LOG", "log": {"level": "WARN", "message": "gone"}},
    {"type": "TRACE", "trace": {"type": "ERROR", "emitted_at": 2.0, "error": {"message": "m", "internal_message": "i",
        "failure_type": "config_error", "stack_trace": "s"}}},
    {"type": "TRACE", "trace": {"type": "STREAM_STATUS", "emitted_at": 3.0, "stream_status": {"stream_descriptor": {"name": "orders"},
        "status": "RUNNING", "reasons": [{"type": "RATE_LIMITED"}]}}},
    {"type": "CONNECTION_STATUS", "connectionStatus": {"status": "FAILED", "message": "no"}},
    {"type": "CATALOG", "catalog": {"streams": [{"name": "orders", "json_schema": {"type": "object"}, "supported_sync_modes": ["full_refresh", "incremental"],
        "source_defined_cursor": True, "default_cursor_field": ["payout_date"], "source_defined_primary_key": [["order_id"]], "is_resumable": True}]}},
]
out = [AirbyteMessageSerializer.dump(AirbyteMessageSerializer.load(m)) for m in messages]
catalog = {"streams": [{"stream": messages[-1]["catalog"]["streams"][0], "sync_mode": "incremental", "destination_sync_mode": "append_dedup",
    "cursor_field": ["payout_date"], "primary_key": [["order_id"]]}]}
out.append(ConfiguredAirbyteCatalogSerializer.dump(ConfiguredAirbyteCatalogSerializer.load(catalog)))
out.append(AirbyteStateMessageSerializer.dump(AirbyteStateMessageSerializer.load(messages[1]["state"])))
from source_klarna.source import manifest_path
spec = YamlDeclarativeSource(path_to_yaml=str(manifest_path())).spec(None)
out.append(ConnectorSpecificationSerializer.dump(spec))
print(json.dumps(out, sort_keys=True))
"""


def _probe(mode: str) -> list:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_serializers_write_and_read_every_message_kind_as_the_cdks_own_do():
    assert _probe("patched") == _probe("unpatched")


def test_serpyco_still_has_both_places_the_docs_are_looked_up_from():
    assert cdk_patches.skip_attribute_docs() is True
    from serpyco_rs import _describe
    from serpyco_rs._json_schema import _convert

    assert _describe.get_attributes_doc is _convert.get_attributes_doc is cdk_patches._no_attribute_docs
