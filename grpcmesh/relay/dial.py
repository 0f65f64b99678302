"""How the relay reaches an upstream address that is not a plain mesh HOST:PORT: the endpoints
of external services (grpcmesh/external/), which may need TLS and their own :authority.

Upstreams keys its connections by an endpoint's address; an address with a Dial is connected
as the Dial says (TLS with this context and server name, ALPN h2), any other as HOST:PORT in
plaintext, as mesh instances are."""
from __future__ import annotations

import ssl
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Dial:
    host: str  # what to connect to: a resolved IP
    port: int
    authority: str  # the configured HOST:PORT: the calls' :authority
    tls: ssl.SSLContext | None = None  # None: plaintext HTTP/2 (prior knowledge)
    server_name: str | None = None  # SNI, and the name the certificate must carry


def check_h2(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> None:
    """A TLS connection must have agreed on HTTP/2 (ALPN h2): a gRPC server does, and
    anything else (an HTTP/1.1 server, a proxy that ignores ALPN) would not understand
    the frames; ConnectionError saying so."""
    chosen = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
    if chosen != "h2":
        raise ConnectionError("TLS: the server did not negotiate HTTP/2 (ALPN h2); it chose "
                              f"{chosen or 'no protocol'}")
