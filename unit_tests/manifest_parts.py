"""Components built the way the connector builds them: from manifest.yaml's resolved definitions by the
CDK's own factory, with components.py registered (unit_tests/conftest.py)."""

from __future__ import annotations

import copy
import functools
import http.server
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from airbyte_cdk.sources.declarative.decoders import JsonDecoder
from airbyte_cdk.sources.declarative.models.declarative_component_schema import DeclarativeStream as DeclarativeStreamModel
from airbyte_cdk.sources.declarative.models.declarative_component_schema import HttpRequester as HttpRequesterModel
from airbyte_cdk.sources.declarative.parsers.model_to_component_factory import ModelToComponentFactory

from source_klarna.run import SourceKlarna


@functools.lru_cache(maxsize=None)
def _resolved() -> Mapping[str, Any]:
    return SourceKlarna(config=None).resolved_manifest


def resolved_manifest() -> Dict[str, Any]:
    """manifest.yaml with every $ref resolved and $parameters propagated (a copy)."""
    return copy.deepcopy(dict(_resolved()))


def cursor_datetime_formats() -> List[str]:
    """The payout_date cursor's formats, which UsableState and UnreadPayoutsPartitionRouter take from the manifest."""
    return list(resolved_manifest()["definitions"]["payout_date_cursor"]["cursor_datetime_formats"])


def order_requester(config: Mapping[str, Any]) -> Any:
    """The manifest's `order_requester` (its authenticator, its error handler), for `config`. Building
    it builds the authenticator, which sends the credentials probe first."""
    definition = resolved_manifest()["definitions"]["order_requester"]
    return ModelToComponentFactory().create_component(HttpRequesterModel, definition, dict(config) if not isinstance(config, dict) else config, name="orders", decoder=JsonDecoder(parameters={}))


def stream(name: str, config: Mapping[str, Any]) -> Any:
    """The manifest's stream `name`, as the factory builds it for a sync."""
    definition = next(s for s in resolved_manifest()["streams"] if s["name"] == name)
    return ModelToComponentFactory().create_component(DeclarativeStreamModel, definition, config)


Answer = Tuple[int, Mapping[str, str], bytes]


class LocalKlarna:
    """A tiny HTTP server on 127.0.0.1: `answer(path)` gives (status, headers, body) for each request;
    `requests` lists the paths asked for, in order. Runs in a daemon thread until closed."""

    def __init__(self, answer: Callable[[str], Answer]) -> None:
        self.requests: List[str] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
                with outer._lock:
                    outer.requests.append(self.path)
                status, headers, body = answer(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def asked(self, fragment: str) -> List[str]:
        with self._lock:
            return [path for path in self.requests if fragment in path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


def json_answer(status: int, body: bytes, headers: Optional[Mapping[str, str]] = None) -> Answer:
    return status, {"Content-Type": "application/json", **(headers or {})}, body
