"""services.NAME.hedge end to end: real apps behind real sidecars, a real registry, and a client
sidecar that hedges. One app is slow; a hedge to the fast one answers, and the slow app's
handler sees its call cancelled (the loser's cancellation crosses both sidecars). A method not
known to be idempotent is never hedged."""
from __future__ import annotations

import asyncio

import grpc
import pytest

from generated.grpcmesh.example.v1 import echo_pb2 as pb
from generated.grpcmesh.example.v1 import echo_pb2_grpc
from grpcmesh.example.behaviour import MethodCounts
from grpcmesh.example.server import EchoBehaviour, EchoServer, EchoService
from grpcmesh.registry.model import is_idempotent
from tests.conftest import Mesh, wait_for
from tests.integration.test_rules import ECHO, apply, running

pytestmark = pytest.mark.timeout(30)

SLOW = 0.6  # seconds the slow app takes


class Counting(EchoService):
    """Echo that takes `delay` seconds per call and counts the calls it got, the metadata of
    each, and those whose handler was cancelled (its client went away)."""

    def __init__(self, name: str, delay: float) -> None:
        super().__init__(EchoBehaviour(name))
        self.name, self.delay = name, delay
        self.cancelled = 0
        self.metadata: list[dict[str, str]] = []

    async def _answer(self, request: pb.EchoRequest, context: grpc.aio.ServicerContext,
                      counts: MethodCounts) -> pb.EchoResponse:
        self.calls += 1  # (counts: the example's own, not used here)
        self.metadata.append({k: v for k, v in context.invocation_metadata() or ()
                              if isinstance(v, str)})
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return pb.EchoResponse(message=request.message, instance=self.name)


async def counting(mesh: Mesh, name: str, delay: float) -> Counting:
    app = EchoServer("127.0.0.1:0", EchoBehaviour(name))
    app.service = service = Counting(name, delay)
    await app.start()
    mesh.apps.append(app)
    await mesh.sidecar("echo", app)
    return service


@pytest.mark.asyncio
async def test_a_hedge_answers_for_the_slow_app_which_sees_its_call_cancelled(
        mesh: Mesh) -> None:
    slow = await counting(mesh, "slow", SLOW)
    fast = await counting(mesh, "fast", 0.0)
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 2)
    await wait_for(lambda: is_idempotent(client.routes.method(f"/{ECHO}/Get")), 5.0,
                   "the client sidecar to know Get is idempotent (from the app's protos)")
    await running(mesh.sidecars, await apply(
        mesh.registry, "services:\n  echo:\n    balancer: round_robin\n"
                       "    hedge: {delay: 50ms}\n"))  # methods: idempotent (the default)
    async with grpc.aio.insecure_channel(client.outbound_address) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        # Both apps get a call, so the client sidecar has a connection to each (a hedge goes
        # only where a connection is up).
        await asyncio.gather(*(stub.Get(pb.EchoRequest(), timeout=5) for _ in range(2)))
        await wait_for(lambda: slow.cancelled == slow.calls, 3.0, "the warm-up's hedges")
        slow_before, cancelled_before = slow.calls, slow.cancelled
        fast_before = len(fast.metadata)
        for _ in range(8):  # the slow app never answers one: a hedge to the fast one does
            reply = await stub.Get(pb.EchoRequest(message="x"), timeout=5)
            assert reply.instance == "fast"
        sent_to_slow = slow.calls - slow_before
        assert sent_to_slow >= 2  # round robin sent it about half of them first
        await wait_for(lambda: slow.cancelled - cancelled_before == sent_to_slow, 3.0,
                       "the slow app to see every call it got cancelled")
        hedges = [m for m in fast.metadata[fast_before:] if "grpc-previous-rpc-attempts" in m]
        assert len(hedges) == sent_to_slow
        assert all(m["grpc-previous-rpc-attempts"] == "1" for m in hedges)

        # Unary declares no idempotency level: never hedged, the slow app answers it.
        fast_before = len(fast.metadata)
        answers = [(await stub.Unary(pb.EchoRequest(), timeout=5)).instance for _ in range(4)]
        assert "slow" in answers
        assert len(fast.metadata) - fast_before == answers.count("fast")
