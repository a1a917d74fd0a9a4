"""A saved state the connector cannot use, reported as one sentence that names the stream, the bad value
and the fix, before any request.

Airbyte hands back the state a sync emitted, but a state can also be edited by hand, come from another
connector, or be cut short. The CDK then ends the read with a bare traceback (a file that is not a list
of state messages) or "Something went wrong in the connector" (a cursor that is not a date-time). This
reads the state file itself and checks what the connector's cursors and components will read from it:
every `payout_date` / `summary_month` cursor value, at any depth (the transactions' and orders' states
carry their parents' states), and the `payouts_read` list the transactions router keeps. States written
by every earlier version of this connector pass (unit_tests/resources/states/).
"""

import json
from datetime import datetime
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple

from source_klarna.config_checks import KlarnaConfigError

CURSOR_FIELDS = ("payout_date", "summary_month")
PAYOUTS_READ = "payouts_read"
STATE_KINDS = ("STREAM", "GLOBAL")


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_datetime(value: Any, formats: Sequence[str]) -> bool:
    if not isinstance(value, str):
        return False
    for layout in formats:
        try:
            datetime.strptime(value, layout)
            return True
        except ValueError:
            continue
    return False


def _values_to_check(node: Any, path: str) -> Iterator[Tuple[str, str, Any]]:
    """(kind, path, value) of every cursor value and payouts_read list in a stream's state."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key in CURSOR_FIELDS:
                yield "cursor", where, value
            elif key == PAYOUTS_READ:
                yield PAYOUTS_READ, where, value
            else:
                yield from _values_to_check(value, where)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _values_to_check(item, f"{path}[{index}]")


def _stream_states(message: Any) -> Iterator[Tuple[Optional[str], Any]]:
    """(stream name, stream state) of one state message, or raises ValueError on a foreign shape."""
    if not isinstance(message, Mapping) or message.get("type") not in STATE_KINDS:
        raise ValueError(f"an entry {_shown(message)} is not a STREAM or GLOBAL state message")
    if message["type"] == "STREAM":
        entries = [message.get("stream")]
    else:
        entries = list((message.get("global") or {}).get("stream_states") or [])
    for entry in entries:
        descriptor = entry.get("stream_descriptor") if isinstance(entry, Mapping) else None
        if not isinstance(descriptor, Mapping) or not isinstance(descriptor.get("name"), str):
            raise ValueError(f"an entry {_shown(entry)} names no stream")
        yield descriptor["name"], entry.get("stream_state")


def state_problem(state: Any, streams: Sequence[str], cursor_formats: Sequence[str]) -> Optional[str]:
    """The first reason `state` (the parsed --state file) cannot be used, as a sentence, or None."""
    if state in (None, [], {}):
        return None
    reset = "reset the connection's state (Airbyte: the connection's Settings, Clear data) and sync again"
    if not isinstance(state, list):
        return (
            f"The saved state is a JSON {type(state).__name__}, not a list of Airbyte state messages: it was not "
            f"written by this connector (or by an Airbyte older than per-stream state); {reset}."
        )
    for message in state:
        try:
            stream_states = list(_stream_states(message))
        except ValueError as error:
            return f"The saved state is not a list of Airbyte state messages ({error}); {reset}."
        for name, stream_state in stream_states:
            if name not in streams:
                return (
                    f"The saved state holds a stream {name!r}, which source-klarna does not have (its streams: "
                    f"{', '.join(streams)}): the state belongs to another connector; {reset}."
                )
            problem = _stream_state_problem(name, stream_state, cursor_formats)
            if problem:
                return problem
    return None


def _stream_state_problem(name: str, stream_state: Any, cursor_formats: Sequence[str]) -> Optional[str]:
    reset = f"reset the state of stream {name} (Airbyte: the connection's Settings, Clear data for {name}) and sync again"
    if stream_state is not None and not isinstance(stream_state, Mapping):
        return f"The saved state of stream {name} is {_shown(stream_state)}, not a JSON object; {reset}."
    for kind, where, value in _values_to_check(stream_state or {}, ""):
        if kind == "cursor" and value is not None and not _is_datetime(value, cursor_formats):
            return f"The saved state of stream {name} has {where} = {_shown(value)}, which is not a UTC date-time like 2024-01-31T06:00:00Z; {reset}."
        if kind == PAYOUTS_READ:
            if not isinstance(value, Mapping):
                return f"The saved state of stream {name} has {where} = {_shown(value)}, not an object of payment_reference to payout_date; {reset}."
            for reference, payout_date in value.items():
                if not _is_datetime(payout_date, cursor_formats):
                    return (
                        f"The saved state of stream {name} has {where}[{reference!r}] = {_shown(payout_date)}, which is "
                        f"not a UTC date-time like 2024-01-31T06:00:00Z; {reset}."
                    )
    return None


def read_state_file(path: str, streams: Sequence[str], cursor_formats: Sequence[str]) -> List[Any]:
    """The --state file's JSON, checked; a KlarnaConfigError (a config error in one sentence) otherwise."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        raise KlarnaConfigError(f"The state file {path} cannot be read ({error}): pass the state file Airbyte wrote, or none.")
    try:
        state = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as error:
        raise KlarnaConfigError(
            f"The saved state is not JSON ({error.msg} at line {error.lineno}, column {error.colno}): "
            "reset the connection's state (Airbyte: the connection's Settings, Clear data) and sync again."
        )
    problem = state_problem(state, streams, cursor_formats)
    if problem:
        raise KlarnaConfigError(problem)
    return state
