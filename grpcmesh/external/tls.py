"""TLS to external services: the client contexts, made when a config version comes into force,
not per connection.

As a gRPC client's: the certificate is verified against tls.ca_file or the system's CAs
(ssl.create_default_context: CERT_REQUIRED, hostname checked, TLS 1.2 at least), and ALPN
offers h2 only (the relay checks that the server chose it: relay/dial.py). A context with a CA
file is made anew for each config version (so a new version reads the file again); the one with
the system's CAs is made once per process, because loading them takes about 40 ms, on the event
loop. A CA file that cannot be read makes its external service unusable, and its calls say why.
"""
from __future__ import annotations

import ssl

from grpcmesh.config.schema import Tls


def client_context(ca_file: str | None) -> ssl.SSLContext:
    """Raises OSError or ssl.SSLError (a CA file that is missing or not PEM)."""
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])
    return context


class ClientContexts:
    """A context for each Tls setting (the system's CAs: one, kept)."""

    def __init__(self) -> None:
        self._system: ssl.SSLContext | None = None

    def __call__(self, tls: Tls) -> ssl.SSLContext:
        if tls.ca_file is not None:
            return client_context(tls.ca_file)
        if self._system is None:
            self._system = client_context(None)
        return self._system


def server_name(tls: Tls, address: str) -> str:
    """The name sent in SNI and checked in the certificate: tls.server_name, else the host of
    the configured address (never the resolved IP)."""
    return tls.server_name or address.rpartition(":")[0].strip("[]")
