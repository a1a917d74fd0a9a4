"""Config mistakes a user can fix, each reported as one sentence that says what to change.

The checks themselves are `config_problem` in components.py (the manifest runs them as a spec
validation, on the manifest-only runtime too); the entrypoint runs them first, before the spec's
JSON-schema patterns, so that `check`, `discover` and `read` answer in words.
"""

from typing import Any, Mapping

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_klarna.components import config_problem

__all__ = ["KlarnaConfigError", "config_problem", "validate_config"]


class KlarnaConfigError(AirbyteTracedException):
    def __init__(self, message: str) -> None:
        super().__init__(message=message, internal_message=message, failure_type=FailureType.config_error)


def validate_config(config: Mapping[str, Any]) -> None:
    problem = config_problem(config)
    if problem:
        raise KlarnaConfigError(problem)
