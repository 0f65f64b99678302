"""A call's request headers, read once and checked before anything is routed. Pure.

Everything here may come from a hostile client: pseudo-headers count toward the metadata limit
as the rest do (HPACK's accounting: name + value + 32 bytes per entry), :path has a limit of its
own, and what a message repeats of a header is clipped, so that no header costs more than time
linear in its size. A request that is not gRPC (its content-type does not start with
application/grpc) is answered with HTTP 415, as the gRPC spec asks, and never forwarded.
"""
from __future__ import annotations

import grpc

from grpcmesh.relay.limits import clip
from grpcmesh.routing import SERVICE_HEADER

Headers = list[tuple[str, str]]


class Refused(Exception):
    """The request is answered by the proxy: a gRPC status, or an HTTP status (not gRPC)."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str, http: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason  # CallRecord.reason
        self.http = http


class Request:
    __slots__ = ("override", "path", "timeout")

    def __init__(self, path: str, override: str | None, timeout: str | None) -> None:
        self.path = path
        self.override = override  # the grpcmesh-service header
        self.timeout = timeout  # grpc-timeout, unparsed


def read_request(headers: Headers, max_metadata: int, max_path: int) -> Request:
    """The fields the relay needs, or Refused."""
    path = ""
    override = timeout = content_type = None
    size = 0
    for key, value in headers:
        size += len(key) + len(value) + 32
        if key[0] == ":":
            if key == ":path":
                path = value
        elif key == SERVICE_HEADER:
            override = value
        elif key == "grpc-timeout":
            timeout = value
        elif key == "content-type":
            content_type = value
    if len(path) > max_path:
        raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                      f"request :path of {len(path)} bytes ({clip(path)}); the proxy's limit is "
                      f"{max_path}", "too_large")
    if size > max_metadata:
        raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                      f"request metadata of {path} is {size} bytes; the proxy's limit is "
                      f"{max_metadata}", "too_large")
    if content_type is None or not content_type.startswith("application/grpc"):
        got = "no content-type" if content_type is None else f"content-type {clip(content_type)!r}"
        raise Refused(grpc.StatusCode.INTERNAL,
                      f"{got} for {path}: the proxy relays gRPC only (application/grpc)",
                      "not_grpc", http=415)
    return Request(path, override, timeout)
