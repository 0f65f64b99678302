"""Small helpers shared by every gRPC server grpcmesh starts."""
from __future__ import annotations

from typing import Any

import grpc


def server_options(*, reuse_port: bool = False, max_message_bytes: int | None = None
                   ) -> list[tuple[str, Any]]:
    # grpcio turns SO_REUSEPORT on by default, which lets two servers silently share a port;
    # grpcmesh sets it explicitly.
    options: list[tuple[str, Any]] = [("grpc.so_reuseport", 1 if reuse_port else 0)]
    if max_message_bytes is not None:
        options += [("grpc.max_receive_message_length", max_message_bytes),
                    ("grpc.max_send_message_length", max_message_bytes)]
    return options


def bind(server: grpc.aio.Server, address: str, what: str) -> int:
    """Listen on address and return the bound port, or fail with a message naming both."""
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as err:
        raise OSError(f"{what}: cannot listen on {address}: {err} (is the port in use?)") from None
    if port == 0:
        raise OSError(f"{what}: cannot listen on {address} (is the port in use?)")
    return port


def with_port(address: str, port: int) -> str:
    host = address.rpartition(":")[0]
    return f"{host}:{port}"
