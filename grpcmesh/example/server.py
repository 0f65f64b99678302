"""An Echo server with all four call kinds, grpc.health.v1 and reflection.

Get answers as Unary does, but its proto declares it NO_SIDE_EFFECTS: the mesh may retry and
hedge it, and not Unary, which declares nothing.

Knobs for demos and benchmarks: a fixed extra delay per call and a status code to fail with,
both per server (flags) and per request (EchoRequest.delay_ms / fail_code); recover() (SIGUSR1
from the command line) drops the failure and switches to the recovered delay.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from generated.grpcmesh.example.v1 import echo_pb2 as pb
from generated.grpcmesh.example.v1 import echo_pb2_grpc
from grpcmesh.reflection import enable_reflection
from grpcmesh.server_util import bind, server_options, with_port

ECHO_SERVICE = pb.DESCRIPTOR.services_by_name["Echo"].full_name


@dataclass
class EchoBehaviour:
    name: str
    delay_ms: float = 0.0
    fail_code: int = 0
    recovered_delay_ms: float = 0.0

    def recover(self) -> None:
        self.delay_ms = self.recovered_delay_ms
        self.fail_code = 0


class EchoService(echo_pb2_grpc.EchoServicer):
    def __init__(self, behaviour: EchoBehaviour) -> None:
        self.behaviour = behaviour
        self.calls = 0

    async def _answer(self, request: pb.EchoRequest, context: grpc.aio.ServicerContext
                      ) -> pb.EchoResponse:
        self.calls += 1
        delay = request.delay_ms or self.behaviour.delay_ms
        if delay:
            await asyncio.sleep(delay / 1000)
        code = request.fail_code or self.behaviour.fail_code
        if code:
            await context.abort(grpc.StatusCode[_code_name(code)],
                                f"{self.behaviour.name} fails on purpose with code {code}")
        return pb.EchoResponse(message=request.message, payload=request.payload,
                               instance=self.behaviour.name)

    async def Unary(self, request: pb.EchoRequest, context: grpc.aio.ServicerContext
                    ) -> pb.EchoResponse:
        return await self._answer(request, context)

    async def Get(self, request: pb.EchoRequest, context: grpc.aio.ServicerContext
                  ) -> pb.EchoResponse:
        """Unary's answer, under a method whose proto says NO_SIDE_EFFECTS (safe to retry)."""
        return await self._answer(request, context)

    async def ServerStream(self, request: pb.EchoRequest, context: grpc.aio.ServicerContext
                           ) -> AsyncIterator[pb.EchoResponse]:
        for _ in range(request.responses or 3):
            yield await self._answer(request, context)

    async def ClientStream(self, requests: AsyncIterator[pb.EchoRequest],
                           context: grpc.aio.ServicerContext) -> pb.EchoResponse:
        messages = []
        last = pb.EchoRequest()
        async for request in requests:
            messages.append(request.message)
            last = request
        last.message = ",".join(messages)
        return await self._answer(last, context)

    async def BidiStream(self, requests: AsyncIterator[pb.EchoRequest],
                         context: grpc.aio.ServicerContext) -> AsyncIterator[pb.EchoResponse]:
        async for request in requests:
            yield await self._answer(request, context)


def _code_name(code: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return str(status.name)
    raise ValueError(f"fail code {code} is not a gRPC status code (0-16)")


class EchoServer:
    """The example app: Echo + health + reflection on one port."""

    def __init__(self, listen: str, behaviour: EchoBehaviour) -> None:
        self.listen = listen
        self.service = EchoService(behaviour)
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(options=server_options())
        self.address = ""

    async def start(self) -> str:
        echo_pb2_grpc.add_EchoServicer_to_server(self.service, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        enable_reflection(self.server, [ECHO_SERVICE, health.SERVICE_NAME])
        self.address = with_port(self.listen, bind(self.server, self.listen, "example server"))
        await self.server.start()
        await self.set_serving(True)
        return self.address

    async def set_serving(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", ECHO_SERVICE):
            await self.health.set(name, status)

    async def stop(self, grace: float | None = 0.5) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
