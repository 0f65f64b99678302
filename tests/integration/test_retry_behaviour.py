"""The retry rule's behaviours (issue 11) end to end: real grpc.aio apps on 127.0.0.1, each
behind its own sidecar, a real registry, and a client sidecar that applies the rule. The apps
are scripted (what their nth call does) and record every call they get: when it came, the
deadline it carried (`context.time_remaining()`) and its metadata, so that the tests count
attempts where they happen, not in the proxy.

What tests/integration/test_retries.py proves already is not repeated here: the idempotency
level of a method read from a real app's protos through reflection (the client sidecar learns
that `Get` is NO_SIDE_EFFECTS), and that only such methods are retried by default."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from generated.grpcmesh.example.v1 import echo_pb2 as pb
from generated.grpcmesh.example.v1 import echo_pb2_grpc
from grpcmesh.example.server import EchoBehaviour, EchoServer, EchoService
from grpcmesh.sidecar import Sidecar
from tests.conftest import Mesh
from tests.integration.test_rules import ECHO, apply, running

pytestmark = pytest.mark.timeout(20)

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
GET, STREAM = f"/{ECHO}/Get", f"/{ECHO}/ServerStream"
CALL_TIMEOUT = 5.0  # seconds: no call of these tests may hang longer


@dataclass
class Seen:
    """One call as the app saw it."""
    at: float  # time.monotonic() when it arrived
    left: float | None  # context.time_remaining(): the deadline it carried
    metadata: dict[str, str]


class Script:
    """What the nth call does, counted over every app that shares the script (so that a test
    does not depend on which app the balancer picks); the last step repeats."""

    def __init__(self, *steps: str) -> None:
        self.steps = steps
        self.calls = 0

    def next(self) -> str:
        self.calls += 1
        return self.steps[min(self.calls, len(self.steps)) - 1]


class Scripted(EchoService):
    """Echo whose Get and ServerStream do, on the script's nth call, what its nth step says:

    - `ok`: answer (ServerStream: request.responses messages, 3 by default);
    - `fail`: UNAVAILABLE before any message (a trailers-only response);
    - `headers-then-fail`: response headers first (with `x-app`), then UNAVAILABLE trailers,
      no message;
    - `pushback=N`: UNAVAILABLE with the trailer `grpc-retry-pushback-ms: N`;
    - `slow-fail`: UNAVAILABLE after 400 ms;
    - `one-then-fail` (ServerStream): one message, then UNAVAILABLE."""

    def __init__(self, name: str, script: Script) -> None:
        super().__init__(EchoBehaviour(name))
        self.name = name
        self.script = script
        self.seen: list[Seen] = []

    async def _step(self, context: grpc.aio.ServicerContext) -> str:
        left = context.time_remaining()
        self.seen.append(Seen(time.monotonic(), left,
                              {k: v for k, v in context.invocation_metadata() or ()
                               if isinstance(v, str)}))
        self.calls += 1
        step = self.script.next()
        if step == "headers-then-fail":
            await context.send_initial_metadata((("x-app", self.name),))
        elif step.startswith("pushback="):
            context.set_trailing_metadata((("grpc-retry-pushback-ms", step[9:]),))
        elif step == "slow-fail":
            await asyncio.sleep(0.4)
        if step != "ok" and step != "one-then-fail":
            await context.abort(UNAVAILABLE, f"{self.name} fails on purpose ({step})")
        return step

    def _reply(self, request: pb.EchoRequest) -> pb.EchoResponse:
        return pb.EchoResponse(message=request.message, instance=self.name)

    async def Get(self, request: pb.EchoRequest, context: grpc.aio.ServicerContext
                  ) -> pb.EchoResponse:
        await self._step(context)
        return self._reply(request)

    async def ServerStream(self, request: pb.EchoRequest, context: grpc.aio.ServicerContext
                           ) -> AsyncIterator[pb.EchoResponse]:
        step = await self._step(context)
        if step == "one-then-fail":
            yield self._reply(request)
            await asyncio.sleep(0.05)  # (the message goes out before the trailers)
            await context.abort(UNAVAILABLE, f"{self.name} fails after its first message")
        for _ in range(request.responses or 3):
            yield self._reply(request)


async def scripted(mesh: Mesh, name: str, script: Script) -> Scripted:
    """A Scripted app (Echo, health and reflection on one port) behind its own sidecar; the
    mesh fixture stops both."""
    app = EchoServer("127.0.0.1:0", EchoBehaviour(name))
    app.service = service = Scripted(name, script)
    await app.start()
    mesh.apps.append(app)
    await mesh.sidecar("echo", app)
    return service


async def client_with(mesh: Mesh, instances: int, retry: str, timeout: str = "") -> Sidecar:
    """A client sidecar that routes to instances instances of echo and runs retry (and the
    service's timeout, if given)."""
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", instances)
    text = f"services:\n  echo:\n    balancer: round_robin\n    retry: {retry}\n"
    if timeout:
        text += f"    timeout: {timeout}\n"
    await running(mesh.sidecars, await apply(mesh.registry, text))
    return client


async def collect(call: grpc.aio.UnaryStreamCall) -> tuple[list[str], grpc.StatusCode]:
    """What a server-streaming call gave its client: the messages' instances, then its code."""
    got: list[str] = []
    try:
        async for reply in call:
            got.append(reply.instance)
    except grpc.aio.AioRpcError as err:
        return got, err.code()
    return got, await call.code()


@pytest.mark.asyncio
async def test_headers_then_error_trailers_with_no_message_are_retried(mesh: Mesh) -> None:
    bad = await scripted(mesh, "bad", Script("headers-then-fail"))
    good = await scripted(mesh, "good", Script("ok"))
    # Precondition: the app really sends response headers before its error (not the
    # trailers-only response a plain abort gives), which a direct call shows.
    async with grpc.aio.insecure_channel(mesh.apps[0].address) as direct:
        call = echo_pb2_grpc.EchoStub(direct).Get(pb.EchoRequest(), timeout=CALL_TIMEOUT)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == UNAVAILABLE
        assert ("x-app", "bad") in tuple(await call.initial_metadata())
    bad.seen.clear()
    client = await client_with(mesh, 2, "{attempts: 2, backoff: {base: 1ms, max: 1ms}}")
    async with grpc.aio.insecure_channel(client.outbound_address) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        for _ in range(6):
            call = stub.Get(pb.EchoRequest(message="x"), timeout=CALL_TIMEOUT)
            assert (await call).instance == "good"
            # nothing of the failed attempt reached the client: not bad's headers either
            assert ("x-app", "bad") not in tuple(await call.initial_metadata())
    assert len(bad.seen) >= 2  # (round robin: about half the calls went there first)
    assert len(good.seen) == 6
    retried = [s for s in good.seen if "grpc-previous-rpc-attempts" in s.metadata]
    assert len(retried) == len(bad.seen)
    assert all(s.metadata["grpc-previous-rpc-attempts"] == "1" for s in retried)


@pytest.mark.asyncio
async def test_a_server_stream_is_retried_before_its_first_message_only(mesh: Mesh) -> None:
    # ServerStream declares no idempotency level: the rule lists it.
    script = Script("headers-then-fail", "fail", "one-then-fail", "one-then-fail", "ok")
    apps = [await scripted(mesh, name, script) for name in ("a", "b")]
    client = await client_with(
        mesh, 2, f"{{attempts: 3, methods: [{STREAM}], backoff: {{base: 1ms, max: 1ms}}}}")
    async with grpc.aio.insecure_channel(client.outbound_address) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        # 1. The first two attempts fail before any message (headers then an error; a
        # trailers-only error): each is retried (the second on the other app); the third
        # sends its first message, then fails: that reaches the client, and no fourth
        # attempt is made.
        got, code = await asyncio.wait_for(
            collect(stub.ServerStream(pb.EchoRequest(message="s"), timeout=CALL_TIMEOUT)),
            CALL_TIMEOUT)
        assert code == UNAVAILABLE
        assert len(got) == 1
        assert script.calls == 3
        assert {len(app.seen) for app in apps} == {1, 2}  # (retried on the other app first)
        seen = sorted((s for app in apps for s in app.seen), key=lambda s: s.at)
        assert [s.metadata.get("grpc-previous-rpc-attempts") for s in seen] == [None, "1", "2"]
        # 2. A failure after the first message is not retried: one attempt, the client sees
        # the message, then the error.
        got, code = await asyncio.wait_for(
            collect(stub.ServerStream(pb.EchoRequest(message="s"), timeout=CALL_TIMEOUT)),
            CALL_TIMEOUT)
        assert (len(got), code) == (1, UNAVAILABLE)
        assert script.calls == 4
        # 3. Both now answer: the stream is whole.
        got, code = await asyncio.wait_for(
            collect(stub.ServerStream(pb.EchoRequest(message="s"), timeout=CALL_TIMEOUT)),
            CALL_TIMEOUT)
        assert (len(got), code) == (3, grpc.StatusCode.OK)
        assert script.calls == 5


@pytest.mark.asyncio
async def test_pushback_is_honoured(mesh: Mesh) -> None:
    app = await scripted(mesh, "a", Script("pushback=-1", "pushback=300", "ok", "pushback=1000"))
    client = await client_with(mesh, 1, "{attempts: 3, backoff: {base: 1ms, max: 1ms}}")
    async with grpc.aio.insecure_channel(client.outbound_address) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        # a negative pushback: the server asks not to retry, and it is not
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Get(pb.EchoRequest(), timeout=CALL_TIMEOUT)
        assert err.value.code() == UNAVAILABLE
        await asyncio.sleep(0.1)  # (a retry would come within the 1 ms backoff)
        assert len(app.seen) == 1
        # 300 ms: the retry waits that long, not the 1 ms backoff
        reply = await stub.Get(pb.EchoRequest(), timeout=CALL_TIMEOUT)
        assert reply.instance == "a"
        assert len(app.seen) == 3
        waited = app.seen[2].at - app.seen[1].at
        assert 0.29 <= waited < 1.0, waited
        assert app.seen[2].metadata.get("grpc-previous-rpc-attempts") == "1"
        # a pushback that would end after the deadline: the call ends at once, with the
        # attempt's own status, rather than wait and time out
        start = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Get(pb.EchoRequest(), timeout=0.5)  # (1 s of pushback)
        assert err.value.code() == UNAVAILABLE
        assert time.monotonic() - start < 0.3
        await asyncio.sleep(0.1)
        assert len(app.seen) == 4


@pytest.mark.parametrize("given_by", ["client", "mesh"])
@pytest.mark.asyncio
async def test_the_deadline_spans_the_attempts(mesh: Mesh, given_by: str) -> None:
    # A 1 s deadline, from the client's grpc-timeout or from the service's `timeout` (for
    # calls that arrive without one); every attempt fails after 400 ms.
    apps = [await scripted(mesh, name, Script("slow-fail")) for name in ("a", "b")]
    client = await client_with(mesh, 2, "{attempts: 5, backoff: {base: 1ms, max: 1ms}}",
                               timeout="1s" if given_by == "mesh" else "")
    async with grpc.aio.insecure_channel(client.outbound_address) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        start = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(stub.Get(pb.EchoRequest(), timeout=1.0 if given_by ==
                                            "client" else None), CALL_TIMEOUT)
    took = time.monotonic() - start
    assert err.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, UNAVAILABLE)
    assert took < 1.3, took
    await asyncio.sleep(0.2)  # (an attempt sent after the deadline would arrive by now)
    seen = sorted((s for app in apps for s in app.seen), key=lambda s: s.at)
    # 400 ms each: three attempts fit in 1 s (at about 0, 0.4 and 0.8 s), no more
    assert len(seen) == 3, [(s.at - start, s.left) for s in seen]
    assert all(s.at - start < 1.0 for s in seen)
    lefts = [s.left for s in seen if s.left is not None]  # (every attempt had a deadline)
    assert len(lefts) == 3 and 0.9 < lefts[0] <= 1.0, lefts
    for n in (1, 2):
        # each retry is sent what is left: less than before by the ~400 ms the attempt took
        assert lefts[n] <= lefts[n - 1] - 0.35, lefts
        assert seen[n].metadata.get("grpc-previous-rpc-attempts") == str(n)
    assert "grpc-previous-rpc-attempts" not in seen[0].metadata
