"""A real emulator server in a thread of the test's process, and a session authenticated against it:
what the emulator's own tests of growth, pending rows and disputes share."""

from __future__ import annotations

import contextlib

import requests

from klarna_emulator.server import start_server


@contextlib.contextmanager
def served(dataset, user: str, password: str, faults=None, headers: dict | None = None):
    """Yields a requests.Session with `base` (the server's URL) and `state` (the server's state)."""
    server, thread = start_server(dataset, user, password, faults=faults)
    try:
        with requests.Session() as session:
            session.auth = (user, password)
            session.headers.update(headers or {})
            session.base = f"http://127.0.0.1:{server.server_address[1]}"
            session.state = server.state
            yield session
    finally:
        server.state.shutdown_event.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def get(session, path, **params):
    """The JSON of a 200 answer to GET path?params (anything else fails the test)."""
    resp = session.get(session.base + path, params=params, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()
