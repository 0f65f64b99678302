"""The shortest path through the mesh: client -> outbound sidecar -> inbound sidecar -> app."""
from __future__ import annotations

import grpc
import pytest

from generated.grpcmesh.example.v1 import echo_pb2, echo_pb2_grpc
from tests.conftest import Mesh


@pytest.mark.asyncio
async def test_unary_call_through_two_sidecars(mesh: Mesh) -> None:
    app = await mesh.app("a")
    await mesh.sidecar("echo", app)
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 1)
    async with grpc.aio.insecure_channel(client.outbound_address) as channel:
        resp = await echo_pb2_grpc.EchoStub(channel).Unary(
            echo_pb2.EchoRequest(message="hi"), timeout=5)
    assert (resp.message, resp.instance) == ("hi", "a")
    assert app.service.calls == 1
