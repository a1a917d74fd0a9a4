"""HTTPS for the emulator: a self-signed certificate made at start with the ``openssl`` command line
tool, so that a client verifying against the default CA store refuses the server (what a man in the
middle or a misconfigured proxy looks like), while one given the certificate accepts it."""
from __future__ import annotations

import ipaddress
import os
import shutil
import ssl
import subprocess
import tempfile

__all__ = ["TlsUnavailable", "SelfSignedCertificate"]


def _san_entry(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"DNS:{host}"
    return f"IP:{host}"


class TlsUnavailable(RuntimeError):
    """The certificate cannot be made (no openssl, or openssl failed); the message says what to do."""


class SelfSignedCertificate:
    """A fresh key and certificate for 127.0.0.1/localhost in a temporary directory (removed by ``close``)."""

    def __init__(self, host: str = "127.0.0.1"):
        openssl = shutil.which("openssl")
        if openssl is None:
            raise TlsUnavailable("--tls needs the openssl command line tool to make its self-signed certificate: "
                                 "install openssl or run without --tls.")
        self._dir = tempfile.TemporaryDirectory(prefix="klarna-emulator-tls-")
        self.cert_file = os.path.join(self._dir.name, "cert.pem")
        self.key_file = os.path.join(self._dir.name, "key.pem")
        names = "IP:127.0.0.1,DNS:localhost" + (f",{_san_entry(host)}" if host not in ("127.0.0.1", "localhost", "") else "")
        cmd = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
               "-keyout", self.key_file, "-out", self.cert_file, "-days", "2", "-subj", "/CN=klarna-emulator",
               "-addext", f"subjectAltName={names}"]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            detail = getattr(e, "stderr", b"") or b""
            self.close()
            raise TlsUnavailable(f"openssl could not make the self-signed certificate for --tls: "
                                 f"{detail.decode(errors='replace').strip() or e}") from None

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def close(self):
        self._dir.cleanup()
