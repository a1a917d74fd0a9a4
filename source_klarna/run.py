"""The `source-klarna` console script: Airbyte's spec / check / discover / read."""

from __future__ import annotations

import base64
import sys
from typing import Any, List, Mapping, Optional

import orjson

from airbyte_cdk.entrypoint import PRINT_BUFFER, AirbyteEntrypoint
from airbyte_cdk.models import (
    AirbyteConnectionStatus,
    FailureType,
    AirbyteMessage,
    AirbyteMessageSerializer,
    Status,
    Type,
)
from airbyte_cdk.utils.airbyte_secrets_utils import add_to_secrets, update_secrets
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_klarna.config_checks import validate_config
from source_klarna.credentials_probe import rejected_credentials_message
from source_klarna.error_grouping import OneErrorPerCause
from source_klarna.source import SourceKlarna, resolved_manifest, streams_and_cursor_formats
from source_klarna.state_checks import read_state_file


def _print(message: AirbyteMessage) -> None:
    sys.stdout.write(orjson.dumps(AirbyteMessageSerializer.dump(message)).decode() + "\n")
    sys.stdout.flush()


def credential_secrets(config: Mapping[str, Any]) -> List[str]:
    """The password and the Basic token (base64 of username:password) that a debug log of request
    headers would show: the CDK masks only the password itself."""
    username, password = config.get("username"), config.get("password")
    if not (isinstance(username, str) and isinstance(password, str) and password):
        return []
    return [password, base64.b64encode(f"{username}:{password}".encode()).decode()]


def hide_credentials(config: Mapping[str, Any]) -> None:
    update_secrets(credential_secrets(config))


class KlarnaEntrypoint(AirbyteEntrypoint):
    """Airbyte's entrypoint, with the Basic token masked too.

    The CDK resets its secret list from the spec's `airbyte_secret` fields once it has the config,
    which would drop the token registered before; this adds it back at that point."""

    @staticmethod
    def set_up_secret_filter(config: Any, connection_specification: Mapping[str, Any]) -> None:
        AirbyteEntrypoint.set_up_secret_filter(config, connection_specification)
        for secret in credential_secrets(config):
            add_to_secrets(secret)


def launch(source: SourceKlarna, args: List[str]) -> None:
    """airbyte_cdk.entrypoint.launch, through KlarnaEntrypoint, with one error per cause."""
    entrypoint = KlarnaEntrypoint(source)
    parsed_args = entrypoint.parse_args(args)
    grouping = OneErrorPerCause(lambda message: print(f"{message}\n", end=""))
    try:
        with PRINT_BUFFER:
            try:
                for message in entrypoint.run(parsed_args):
                    grouping.feed(message)
            finally:
                grouping.flush()
    except AirbyteTracedException as error:
        # The CDK ends a read whose streams failed with one more error that repeats every partition's
        # exception (36 lines for 36 failed months), logged with a traceback. Each stream's error has
        # been reported above, once per cause: that is the whole story, so the sync just ends.
        if not grouping.reported or not (error.message or "").startswith(FAILED_STREAMS):
            raise
        sys.exit(1)


FAILED_STREAMS = "During the sync, the following streams did not sync successfully: "


def _config_error_exit(command: str, error: AirbyteTracedException) -> None:
    """`check` answers a config error with a FAILED status (exit 0, as Airbyte expects); the other
    commands with an error trace and a non-zero exit."""
    if command == "check":
        _print(
            AirbyteMessage(
                type=Type.CONNECTION_STATUS,
                connectionStatus=AirbyteConnectionStatus(status=Status.FAILED, message=error.message),
            )
        )
        sys.exit(0)
    _print(error.as_airbyte_message())
    sys.exit(1)


# How long a thread may hold the GIL before CPython makes it hand over (the default is 5 ms). Our
# worker threads are CPU-bound between requests (decoding pages, building records) and the per-record
# cursor parse goes through `_strptime`, which takes a module-level lock: at 5 ms eight workers on two
# cores spend more time handing the GIL and that lock around than working (a read of 100k rows took
# twice the CPU at concurrency 8 than at 1). At 50 ms the handovers that remain are the ones a thread
# makes itself when it waits on the network, so I/O concurrency is untouched (measured in bench/).
GIL_SWITCH_INTERVAL_SECONDS = 0.05


def run(args: Optional[List[str]] = None) -> None:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)
    args = list(sys.argv[1:] if args is None else args)
    command = args[0] if args else ""
    config_path = AirbyteEntrypoint.extract_config(args)
    config = None
    if config_path:
        config = SourceKlarna.read_config(config_path)
        hide_credentials(config)
        try:
            validate_config(config)
        except AirbyteTracedException as error:
            _config_error_exit(command, error)
    catalog_path = AirbyteEntrypoint.extract_catalog(args)
    state_path = AirbyteEntrypoint.extract_state(args)
    if state_path:
        try:
            read_state_file(state_path, *streams_and_cursor_formats(resolved_manifest()))
        except AirbyteTracedException as error:
            _config_error_exit(command, error)
    source = SourceKlarna(
        catalog=SourceKlarna.read_catalog(catalog_path) if catalog_path else None,
        config=config,
        state=SourceKlarna.read_state(state_path) if state_path else None,
    )
    if command == "read" and config is not None:
        rejected = rejected_credentials_message(source.resolved_manifest, config)
        if rejected:
            _config_error_exit(command, AirbyteTracedException(message=rejected, internal_message=rejected, failure_type=FailureType.config_error))
    launch(source, args)
