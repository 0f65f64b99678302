"""Small helpers shared by every gRPC server and channel grpcmesh makes."""
from __future__ import annotations

import socket
from typing import Any

import grpc

from grpcmesh.names import parse_address


def server_options(*, reuse_port: bool = False, max_message_bytes: int | None = None
                   ) -> list[tuple[str, Any]]:
    # grpcio turns SO_REUSEPORT on by default, which lets two servers silently share a port;
    # grpcmesh sets it explicitly.
    options: list[tuple[str, Any]] = [("grpc.so_reuseport", 1 if reuse_port else 0)]
    if max_message_bytes is not None:
        options += [("grpc.max_receive_message_length", max_message_bytes),
                    ("grpc.max_send_message_length", max_message_bytes)]
    return options


def check_bindable(address: str, what: str, reuse_port: bool = False) -> None:
    """Fail with the system's reason (in use, not an address of this machine...) before grpcio
    tries, whose own error only says that binding failed."""
    host, port = parse_address(address, what, listen=True)
    if port == 0:
        return
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpcio does
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise OSError(f"cannot listen on {address} for {what}: "
                          f"{err.strerror or err}") from None


def bind(server: grpc.aio.Server, address: str, what: str, reuse_port: bool = False,
         join: bool = False) -> int:
    """Listen on address and return the bound port, or fail with a message naming both.

    With reuse_port the port can be shared, but only join=True (a --workers process joining
    its primary) may bind a port that is already in use: a primary checks without
    SO_REUSEPORT, so a second, unrelated sidecar cannot silently share its port."""
    check_bindable(address, what, reuse_port and join)
    try:
        port: int = server.add_insecure_port(address)
    except RuntimeError as err:
        raise OSError(f"cannot listen on {address} for {what}: {err}") from None
    if port == 0:
        raise OSError(f"cannot listen on {address} for {what}")
    return port


def with_port(address: str, port: int) -> str:
    host = address.rpartition(":")[0]
    return f"{host}:{port}"


def reconnect_options() -> list[tuple[str, Any]]:
    """Reconnect soon after a peer comes back, not after grpcio's 120 s maximum backoff."""
    return [("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000)]
