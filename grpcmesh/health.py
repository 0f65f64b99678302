"""Health of an app, observed with the standard grpc.health.v1 protocol.

HealthWatcher follows one address: it uses the streaming Watch; if the app answers UNIMPLEMENTED
to Watch it polls Check; if Check is UNIMPLEMENTED too, the app has no health service and counts
as SERVING while it answers at all (gRFC A17: "UNIMPLEMENTED means checking is disabled"). An app
that cannot be reached is NOT_SERVING. The sidecar uses it for its local app and the registry for
registry-checked instances; both only hear about changes.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grpcmesh.registry.model import Health
from grpcmesh.server_util import reconnect_options

log = logging.getLogger(__name__)

_FROM_PROTO = {health_pb2.HealthCheckResponse.SERVING: Health.SERVING}


class HealthWatcher:
    def __init__(self, address: str, on_change: Callable[[Health, str], None], *,
                 service: str = "", poll_interval: float = 1.0,
                 check_timeout: float = 2.0) -> None:
        self.address = address
        self.service = service
        self.status = Health.UNKNOWN
        self._on_change = on_change
        self._poll_interval = poll_interval
        self._check_timeout = check_timeout

    def _report(self, status: Health, why: str) -> None:
        if status != self.status:
            self.status = status
            self._on_change(status, why)

    async def run(self) -> None:
        """Follow the app's health until cancelled."""
        async with grpc.aio.insecure_channel(self.address, reconnect_options()) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=self.service)
            while True:
                try:
                    async for resp in stub.Watch(request):
                        self._report(_FROM_PROTO.get(resp.status, Health.NOT_SERVING),
                                     f"health Watch says {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}")
                    # The app ended the stream (shutting down): look again.
                except grpc.aio.AioRpcError as err:
                    if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                        await self._poll(stub, request)
                        return
                    self._report(Health.NOT_SERVING,
                                 f"health Watch failed: {err.code().name} {err.details()}")
                await asyncio.sleep(self._poll_interval)

    async def _poll(self, stub: health_pb2_grpc.HealthStub,
                    request: health_pb2.HealthCheckRequest) -> None:
        while True:
            try:
                resp = await stub.Check(request, timeout=self._check_timeout)
                self._report(_FROM_PROTO.get(resp.status, Health.NOT_SERVING),
                             f"health Check says {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}")
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                    self._report(Health.SERVING, "no health service; the app answers calls")
                else:
                    self._report(Health.NOT_SERVING,
                                 f"health Check failed: {err.code().name} {err.details()}")
            await asyncio.sleep(self._poll_interval)
