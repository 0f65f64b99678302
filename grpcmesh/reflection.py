"""gRPC server reflection: serving it (v1 and v1alpha) and asking an app what it serves.

grpcio-reflection implements only grpc.reflection.v1alpha. The v1 API has the same messages
under another package name, so the same servicer answers both method paths (newer tools such as
grpcurl ask for v1 first). The client tries v1 and falls back to v1alpha, since many servers
serve only one of them.
"""
from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2 as rpb

from grpcmesh.registry.model import Method

_V1 = "grpc.reflection.v1.ServerReflection"
_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
_METHOD = "ServerReflectionInfo"
REFLECTION_SERVICES = (_V1, _V1ALPHA)


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
    """Send requests on one reflection stream (v1, then v1alpha) and return the answers."""
    last: grpc.aio.AioRpcError | None = None
    for service in REFLECTION_SERVICES:
        call = channel.stream_stream(
            f"/{service}/{_METHOD}",
            request_serializer=rpb.ServerReflectionRequest.SerializeToString,
            response_deserializer=rpb.ServerReflectionResponse.FromString,
        )
        try:
            return [resp async for resp in call(iter(requests), timeout=timeout)]
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            last = err
    assert last is not None
    raise last


async def list_services(channel: grpc.aio.Channel, timeout: float = 5.0) -> list[str]:
    """The services an app serves, as reported by its reflection service."""
    (resp,) = await _ask(channel, [rpb.ServerReflectionRequest(list_services="")], timeout)
    if resp.HasField("error_response"):
        raise RuntimeError(f"reflection error: {resp.error_response.error_message}")
    return sorted(s.name for s in resp.list_services_response.service)


async def describe_methods(channel: grpc.aio.Channel, services: Iterable[str],
                           timeout: float = 5.0) -> tuple[Method, ...]:
    """The methods of services with their call kinds, from the app's file descriptors.

    Services the app cannot describe are left out: their methods take the generic path."""
    wanted = sorted(set(services))
    answers = await _ask(channel, [rpb.ServerReflectionRequest(file_containing_symbol=name)
                                   for name in wanted], timeout)
    methods: dict[str, Method] = {}
    for resp in answers:
        for raw in resp.file_descriptor_response.file_descriptor_proto:
            file = descriptor_pb2.FileDescriptorProto.FromString(raw)
            prefix = f"{file.package}." if file.package else ""
            for service in file.service:
                full = prefix + service.name
                if full in wanted:
                    for m in service.method:
                        path = f"/{full}/{m.name}"
                        methods[path] = Method(path, m.client_streaming, m.server_streaming)
    return tuple(methods[p] for p in sorted(methods))


def application_services(services: Iterable[str]) -> list[str]:
    """Drop the infrastructure services every app may serve (health, reflection)."""
    skip = {*REFLECTION_SERVICES, "grpc.health.v1.Health"}
    return sorted(s for s in services if s not in skip)
