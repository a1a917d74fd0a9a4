"""Runs the connector in-process the way Airbyte does, through the CDK's entrypoint wrapper."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional
from unittest import mock

from airbyte_cdk.models import AirbyteStateMessage, SyncMode
from airbyte_cdk.test.catalog_builder import CatalogBuilder
from airbyte_cdk.test.entrypoint_wrapper import EntrypointOutput, read
from airbyte_cdk.test.state_builder import StateBuilder

from source_klarna import SourceKlarna


def catalog(streams: Mapping[str, SyncMode]) -> Any:
    builder = CatalogBuilder()
    for name, mode in streams.items():
        builder.with_stream(name, mode)
    return builder.build()


def state_for(stream_states: Mapping[str, Mapping[str, Any]]) -> List[AirbyteStateMessage]:
    builder = StateBuilder()
    for name, value in stream_states.items():
        builder.with_stream_state(name, dict(value))
    return builder.build()


def read_streams(
    config: Dict[str, Any],
    streams: Mapping[str, SyncMode],
    state: Optional[List[AirbyteStateMessage]] = None,
    expecting_exception: bool = False,
    sleep: Optional[mock.MagicMock] = None,
) -> EntrypointOutput:
    """A read with backoff waits skipped; pass `sleep` (a MagicMock) to see the waits asked for."""
    configured = catalog(streams)
    with mock.patch("time.sleep", sleep or mock.MagicMock()):
        return read(SourceKlarna(catalog=configured, config=config, state=state), config, configured, state, expecting_exception)


def records_of(output: EntrypointOutput, stream: str) -> List[Dict[str, Any]]:
    return [m.record.data for m in output.records if m.record.stream == stream]


def final_state(output: EntrypointOutput, stream: str) -> Dict[str, Any]:
    states = [m.state.stream.stream_state for m in output.state_messages if m.state.stream.stream_descriptor.name == stream]
    assert states, f"no state emitted for {stream}"
    return states[-1].__dict__


def check_connection(config: Dict[str, Any], tmp_path: Any) -> EntrypointOutput:
    """`check` through the entrypoint, as the platform runs it before every sync."""
    from airbyte_cdk.test.entrypoint_wrapper import _run_command, make_file

    config_path = make_file(tmp_path / "config.json", config)
    with mock.patch("time.sleep"):
        return _run_command(SourceKlarna(config=config), ["check", "--config", config_path], expecting_exception=True)


def everything_printed(output: EntrypointOutput) -> str:
    """Every message of the run, serialised as the platform would receive it."""
    import orjson

    from airbyte_cdk.models import AirbyteMessageSerializer

    return "\n".join(orjson.dumps(AirbyteMessageSerializer.dump(m)).decode() for m in output.get_message_iterator())
