"""The `source-klarna` command: manifest.yaml and components.py run the way Airbyte's stock
manifest-only runtime runs them (`source-declarative-manifest` with a local manifest), for pip and
PyAirbyte users. It adds no behaviour: every check, error and speed-up lives in the two files, so what
this command does is what the registry's image, Airbyte Cloud and the Connector Builder do.
"""

import importlib.util
import sys
import traceback
from pathlib import Path
from typing import Any, List, Mapping, Optional

import orjson

from airbyte_cdk.entrypoint import AirbyteEntrypoint, launch
from airbyte_cdk.models import AirbyteErrorTraceMessage, AirbyteMessage, AirbyteMessageSerializer, AirbyteTraceMessage, TraceType, Type
from airbyte_cdk.sources.declarative.parsers.custom_code_compiler import SDM_COMPONENTS_MODULE_NAME
from airbyte_cdk.sources.declarative.yaml_declarative_source import YamlDeclarativeSource
from airbyte_cdk.utils.datetime_helpers import ab_datetime_now

HERE = Path(__file__).resolve().parent


def connector_file(name: str) -> Path:
    """manifest.yaml or components.py: packaged beside this module in the wheel, else the checkout's."""
    packaged = HERE / name
    return packaged if packaged.is_file() else HERE.parent / name


def register_components() -> Any:
    """Loads components.py as the runtime does, under the name the manifest's class names use."""
    module = sys.modules.get(SDM_COMPONENTS_MODULE_NAME)
    if module is None or Path(getattr(module, "__file__", "")) != connector_file("components.py"):
        spec = importlib.util.spec_from_file_location(SDM_COMPONENTS_MODULE_NAME, connector_file("components.py"))
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[SDM_COMPONENTS_MODULE_NAME] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


class SourceKlarna(YamlDeclarativeSource):
    """The declarative source of manifest.yaml, with components.py registered first."""

    def __init__(self, catalog: Any = None, config: Optional[Mapping[str, Any]] = None, state: Any = None, config_path: Optional[str] = None) -> None:
        register_components()
        super().__init__(path_to_yaml=str(connector_file("manifest.yaml")), catalog=catalog, config=config, state=state, config_path=config_path)


def source_from_args(args: List[str]) -> SourceKlarna:
    """The source for a command line, as the runtime builds it: a config, catalog or state it cannot
    read ends in the runtime's error trace."""
    try:
        parsed = AirbyteEntrypoint.parse_args(args)
        config = SourceKlarna.read_config(parsed.config) if getattr(parsed, "config", None) else None
        catalog = SourceKlarna.read_catalog(parsed.catalog) if getattr(parsed, "catalog", None) else None
        state = SourceKlarna.read_state(parsed.state) if getattr(parsed, "state", None) else []
        return SourceKlarna(catalog=catalog, config=config, state=state, config_path=getattr(parsed, "config", None))
    except Exception as error:
        trace = AirbyteTraceMessage(
            type=TraceType.ERROR,
            emitted_at=ab_datetime_now().to_epoch_millis(),
            error=AirbyteErrorTraceMessage(
                message="Error starting the sync. This could be due to an invalid configuration or catalog. "
                f"Please contact Support for assistance. Error: {error}",
                stack_trace=traceback.format_exc(),
            ),
        )
        print(orjson.dumps(AirbyteMessageSerializer.dump(AirbyteMessage(type=Type.TRACE, trace=trace))).decode())
        raise


def run(args: Optional[List[str]] = None) -> None:
    args = list(sys.argv[1:] if args is None else args)
    launch(source_from_args(args), args)
