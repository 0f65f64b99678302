"""gRPC server reflection: serving it (v1 and v1alpha) and asking an app what it serves.

grpcio-reflection implements only grpc.reflection.v1alpha. The v1 API has the same messages
under another package name, so the same servicer answers both method paths (newer tools such as
grpcurl ask for v1 first).

The client asks v1alpha first, because every Python gRPC app serves it (grpcio-reflection) and
so do the Go, Java and C++ servers, then v1 when v1alpha fails with UNIMPLEMENTED or INTERNAL.
INTERNAL too, because a grpcio client whose stream-stream call is refused before it has sent its
request sometimes reports `INTERNAL: Internal error from Core` instead of the server's
UNIMPLEMENTED (grpc/grpc#36066): asking v1 first made about 1 `grpcmesh register` in 10 of a
Python app fail. The client also sends each request in a call of its own, with the request and
the half-close in one batch, which that bug cannot hit.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2 as rpb

from grpcmesh.registry.model import Idempotency, Method, is_idempotent

_V1 = "grpc.reflection.v1.ServerReflection"
_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
_METHOD = "ServerReflectionInfo"
REFLECTION_SERVICES = (_V1, _V1ALPHA)
ASK_ORDER = (_V1ALPHA, _V1)
# A version that fails with one of these may still be served under the other name; INTERNAL
# because of grpc/grpc#36066 (see the module docstring).
_TRY_NEXT = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL)


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    names = (*service_names, *REFLECTION_SERVICES)
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=rpb.ServerReflectionRequest.FromString,
        response_serializer=rpb.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(_V1, {_METHOD: handler})])


async def _ask(channel: grpc.aio.Channel, requests: list[rpb.ServerReflectionRequest],
               timeout: float) -> list[rpb.ServerReflectionResponse]:
    """The answers to requests, asking v1alpha, then v1 (see the module docstring).

    Each request is its own call of the bidirectional method, sent with its request and
    half-closed at once (a unary-stream call: the same bytes on the wire), which grpc/grpc#36066
    cannot hit. When both versions fail, the error raised is an UNIMPLEMENTED one if any: the
    app serves no reflection."""
    if not requests:
        return []
    errors: list[grpc.aio.AioRpcError] = []
    for service in ASK_ORDER:
        call = channel.unary_stream(
            f"/{service}/{_METHOD}",
            request_serializer=rpb.ServerReflectionRequest.SerializeToString,
            response_deserializer=rpb.ServerReflectionResponse.FromString,
        )
        try:
            first = await _answers(call, requests[0], timeout)
        except grpc.aio.AioRpcError as err:
            if err.code() not in _TRY_NEXT:
                raise
            errors.append(err)
            continue

        rest = await asyncio.gather(*(_answers(call, r, timeout) for r in requests[1:]))
        return first + [resp for found in rest for resp in found]
    unimplemented = [e for e in errors if e.code() == grpc.StatusCode.UNIMPLEMENTED]
    raise (unimplemented or errors)[-1]


async def _answers(call: grpc.aio.UnaryStreamMultiCallable,
                   request: rpb.ServerReflectionRequest,
                   timeout: float) -> list[rpb.ServerReflectionResponse]:
    return [resp async for resp in call(request, timeout=timeout)]


async def list_services(channel: grpc.aio.Channel, timeout: float = 5.0) -> list[str]:
    """The services an app serves, as reported by its reflection service."""
    (resp,) = await _ask(channel, [rpb.ServerReflectionRequest(list_services="")], timeout)
    if resp.HasField("error_response"):
        raise RuntimeError(f"reflection error: {resp.error_response.error_message}")
    return sorted(s.name for s in resp.list_services_response.service)


async def describe_methods(channel: grpc.aio.Channel, services: Iterable[str],
                           timeout: float = 5.0) -> tuple[Method, ...]:
    """The methods of services with their call kinds and idempotency levels, from the app's
    file descriptors.

    Services the app cannot describe are left out: their methods take the generic path."""
    wanted = sorted(set(services))
    answers = await _ask(channel, [rpb.ServerReflectionRequest(file_containing_symbol=name)
                                   for name in wanted], timeout)
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw) for resp in answers
             for raw in resp.file_descriptor_response.file_descriptor_proto]
    return methods_in_files(files, wanted)


def methods_in_files(files: Iterable[descriptor_pb2.FileDescriptorProto],
                     services: Iterable[str] | None = None) -> tuple[Method, ...]:
    """The methods (with call kinds and `option idempotency_level`) of the services the files
    define, or of those named."""
    wanted = None if services is None else set(services)
    methods: dict[str, Method] = {}
    for file in files:
        prefix = f"{file.package}." if file.package else ""
        for service in file.service:
            full = prefix + service.name
            if wanted is None or full in wanted:
                for m in service.method:
                    path = f"/{full}/{m.name}"
                    methods[path] = Method(path, m.client_streaming, m.server_streaming,
                                           Idempotency.of(m.options.idempotency_level))
    return tuple(methods[p] for p in sorted(methods))


def methods_summary(methods: Iterable[Method]) -> str:
    """'5 methods described, 1 idempotent', for logs and `grpcmesh register`."""
    described = list(methods)
    if not described:
        return "no methods described: none is known to be idempotent"
    return (f"{len(described)} methods described, "
            f"{sum(map(is_idempotent, described))} idempotent")


class MethodCatalog:
    """Method kinds and idempotency levels from descriptor sets (`protoc --descriptor_set_out`),
    for apps that serve no reflection: the registry fills them in for instances registered
    without methods."""

    def __init__(self, methods: Iterable[Method] = ()) -> None:
        self._by_service: dict[str, list[Method]] = {}
        for m in sorted(methods, key=lambda m: m.path):
            self._by_service.setdefault(m.path.split("/")[1], []).append(m)

    @classmethod
    def load(cls, paths: Iterable[str]) -> MethodCatalog:
        """Read descriptor set files; ValueError names the file and what is wrong."""
        files: list[descriptor_pb2.FileDescriptorProto] = []
        for path in paths:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as err:
                raise ValueError(f"cannot read descriptor set {path}: "
                                 f"{err.strerror or err}") from None
            try:
                found = descriptor_pb2.FileDescriptorSet.FromString(data).file
            except DecodeError:  # its own message says little
                raise ValueError(f"{path} is not a FileDescriptorSet: expected the output of "
                                 "protoc --descriptor_set_out=FILE") from None
            if not any(f.service for f in found):
                raise ValueError(f"descriptor set {path} defines no services")
            files.extend(found)
        return cls(methods_in_files(files))

    def services(self) -> list[str]:
        return sorted(self._by_service)

    def methods_for(self, services: Iterable[str]) -> tuple[Method, ...]:
        return tuple(m for s in sorted(set(services)) for m in self._by_service.get(s, ()))


def application_services(services: Iterable[str]) -> list[str]:
    """Drop the infrastructure services every app may serve (health, reflection)."""
    skip = {*REFLECTION_SERVICES, "grpc.health.v1.Health"}
    return sorted(s for s in services if s not in skip)
