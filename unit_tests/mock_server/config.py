"""Connector configs for the mock-HTTP tests."""

from __future__ import annotations

from typing import Any, Dict

PASSWORD = "pw-Zq8#unit-secret"


class ConfigBuilder:
    def __init__(self) -> None:
        self._config: Dict[str, Any] = {
            "username": "K123456_unit",
            "password": PASSWORD,
            "region": "eu",
            "playground": False,
            "start_date": "2024-01-01T00:00:00Z",
        }

    def with_region(self, region: str) -> "ConfigBuilder":
        self._config["region"] = region
        return self

    def with_playground(self, playground: bool = True) -> "ConfigBuilder":
        self._config["playground"] = playground
        return self

    def with_start_date(self, start_date: str) -> "ConfigBuilder":
        self._config["start_date"] = start_date
        return self

    def with_fields(self, **fields: Any) -> "ConfigBuilder":
        self._config.update(fields)
        return self

    def without(self, name: str) -> "ConfigBuilder":
        self._config.pop(name, None)
        return self

    def build(self) -> Dict[str, Any]:
        return dict(self._config)
