"""Per-call settings of the relay: message and metadata sizes, how long a call waits for a
connection. Frozen, built once from the sidecar's flags."""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
PUSHBACK = "grpc-retry-pushback-ms"  # a server's hint to wait before retrying (gRFC A6)


@dataclass(frozen=True)
class ForwardSettings:
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # grpcio enforces its own metadata limit only after the client acknowledged SETTINGS; HEADERS
    # sent earlier got through with 300 KB. The proxy checks every call itself (HPACK accounting:
    # name + value + 32 bytes per entry, pseudo-headers included), at grpcio's hard limit.
    max_metadata_bytes: int = 16 * 1024
    connect_timeout: float = 1.0  # how long a call waits for a new upstream connection
