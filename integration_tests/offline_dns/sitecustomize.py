"""Put first on PYTHONPATH of every connector run by the integration tests (connector_runner): a host
under `.invalid` (RFC 6761: a name that never resolves) fails to resolve at once, as the system's
resolver would answer it, without a DNS query leaving the machine. Every other name resolves as usual.
"""

import socket

_getaddrinfo = socket.getaddrinfo


def _offline_getaddrinfo(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else str(host or "")
    if name.rstrip(".").lower().endswith(".invalid"):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _offline_getaddrinfo
