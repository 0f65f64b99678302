"""An Echo server with all four call kinds, grpc.health.v1 and reflection.

Get answers as Unary does, but its proto declares it NO_SIDE_EFFECTS: the mesh may retry and
hedge it, and not Unary, which declares nothing.

Knobs for demos and benchmarks (grpcmesh/example/behaviour.py): a fixed extra delay per call
and a status code to fail with, both per server (flags) and per request (EchoRequest.delay_ms /
fail_code); a share of the calls failed or made slow, drawn from a seeded rng; recover()
(SIGUSR1 from the command line) drops the failure and the slow calls and switches to the
recovered delay. Every handler counts its calls per method (EchoService.counts), after the
request was read: the evidence of how many attempts reached the app.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from generated.grpcmesh.example.v1 import echo_pb2 as pb
from generated.grpcmesh.example.v1 import echo_pb2_grpc
from grpcmesh.example.behaviour import CallCounts, EchoBehaviour, MethodCounts
from grpcmesh.reflection import enable_reflection
from grpcmesh.server_util import bind, server_options, with_port

__all__ = ["ECHO_SERVICE", "EchoBehaviour", "EchoServer", "EchoService"]

ECHO_SERVICE = pb.DESCRIPTOR.services_by_name["Echo"].full_name


class EchoService(echo_pb2_grpc.EchoServicer):
    def __init__(self, behaviour: EchoBehaviour) -> None:
        self.behaviour = behaviour
        self.calls = 0  # answers begun, every method (a stream's responses each count)
        self.counts = CallCounts()  # per method: calls, failed, slow, cancelled

    async def _answer(self, request: pb.EchoRequest, context: grpc.aio.ServicerContext,
                      counts: MethodCounts) -> pb.EchoResponse:
        self.calls += 1
        plan = self.behaviour.plan(request.delay_ms, request.fail_code)
        counts.slow += plan.slow
        try:
            if plan.delay_ms:
                await asyncio.sleep(plan.delay_ms / 1000)
        except asyncio.CancelledError:
            counts.cancelled += 1
            raise
        if plan.fail_code:
            counts.failed += 1
            await context.abort(grpc.StatusCode[_code_name(plan.fail_code)],
                                f"{self.behaviour.name} fails on purpose with code "
                                f"{plan.fail_code}")
        return pb.EchoResponse(message=request.message, payload=request.payload,
                               instance=self.behaviour.name)

    def _count(self, method: str) -> MethodCounts:
        counts = self.counts[method]
        counts.calls += 1
        return counts

    async def Unary(self, request: pb.EchoRequest, context: grpc.aio.ServicerContext
                    ) -> pb.EchoResponse:
        return await self._answer(request, context, self._count("Unary"))

    async def Get(self, request: pb.EchoRequest, context: grpc.aio.ServicerContext
                  ) -> pb.EchoResponse:
        """Unary's answer, under a method whose proto says NO_SIDE_EFFECTS (safe to retry)."""
        return await self._answer(request, context, self._count("Get"))

    async def ServerStream(self, request: pb.EchoRequest, context: grpc.aio.ServicerContext
                           ) -> AsyncIterator[pb.EchoResponse]:
        counts = self._count("ServerStream")
        for _ in range(request.responses or 3):
            yield await self._answer(request, context, counts)

    async def ClientStream(self, requests: AsyncIterator[pb.EchoRequest],
                           context: grpc.aio.ServicerContext) -> pb.EchoResponse:
        counts = self._count("ClientStream")
        messages = []
        last = pb.EchoRequest()
        async for request in requests:
            messages.append(request.message)
            last = request
        last.message = ",".join(messages)
        return await self._answer(last, context, counts)

    async def BidiStream(self, requests: AsyncIterator[pb.EchoRequest],
                         context: grpc.aio.ServicerContext) -> AsyncIterator[pb.EchoResponse]:
        counts = self._count("BidiStream")
        async for request in requests:
            yield await self._answer(request, context, counts)


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
