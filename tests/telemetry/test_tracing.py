"""W3C trace context (pure) and --otlp: spans a real OTLP/gRPC collector receives, parented
across a client sidecar, a server sidecar and the app."""
from __future__ import annotations

import asyncio

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

from generated.grpcmesh.example.v1 import echo_pb2 as pb
from generated.grpcmesh.example.v1 import echo_pb2_grpc
from grpcmesh.example.behaviour import MethodCounts
from grpcmesh.example.server import EchoBehaviour, EchoServer, EchoService
from grpcmesh.telemetry.tracing import format_traceparent, parse_traceparent
from tests.conftest import Mesh, wait_for

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.mark.parametrize(("value", "parsed"), [
    (f"00-{TRACE}-{PARENT}-01", (int(TRACE, 16), int(PARENT, 16), 1)),
    (f"00-{TRACE}-{PARENT}-00", (int(TRACE, 16), int(PARENT, 16), 0)),
    (f"cc-{TRACE}-{PARENT}-01-what-comes-later", (int(TRACE, 16), int(PARENT, 16), 1)),
    (f"00-{TRACE}-{PARENT}-01-extra", None),  # version 00 has exactly four fields
    (f"ff-{TRACE}-{PARENT}-01", None),
    (f"00-{'0' * 32}-{PARENT}-01", None),
    (f"00-{TRACE}-{'0' * 16}-01", None),
    (f"00-{TRACE.upper()}-{PARENT}-01", None),
    (f"00-{TRACE[:-1]}-{PARENT}-01", None),
    ("", None), (None, None),
])
def test_traceparent_is_read_as_w3c_says(value: str | None,
                                         parsed: tuple[int, int, int] | None) -> None:
    assert parse_traceparent(value) == parsed


def test_traceparent_is_written_in_version_00() -> None:
    assert format_traceparent(int(TRACE, 16), 5, 1) == f"00-{TRACE}-0000000000000005-01"


class Collector(otlp_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[object] = []

    async def Export(self, request: otlp.ExportTraceServiceRequest,
                     context: grpc.aio.ServicerContext) -> otlp.ExportTraceServiceResponse:
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(scope.spans)
        return otlp.ExportTraceServiceResponse()


class Recording(EchoService):
    """Echo that keeps the traceparent each call came with."""

    def __init__(self) -> None:
        super().__init__(EchoBehaviour("a"))
        self.traceparents: list[str | None] = []

    async def _answer(self, request: pb.EchoRequest, context: grpc.aio.ServicerContext,
                      counts: MethodCounts) -> pb.EchoResponse:
        self.traceparents.append(dict(context.invocation_metadata() or ()).get("traceparent"))
        return pb.EchoResponse(message=request.message, instance="a")


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_spans_reach_the_collector_parented_hop_by_hop(mesh: Mesh) -> None:
    collector = Collector()
    server = grpc.aio.server()
    otlp_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        app = EchoServer("127.0.0.1:0", EchoBehaviour("a"))
        app.service = recording = Recording()
        await app.start()
        mesh.apps.append(app)
        otlp_at = f"127.0.0.1:{port}"
        await mesh.sidecar("echo", app, otlp=otlp_at)
        client = await mesh.sidecar("client", otlp=otlp_at)
        await mesh.serving(client, "echo", 1)
        async with grpc.aio.insecure_channel(client.outbound_address) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            await stub.Unary(pb.EchoRequest(message="x"), timeout=5,
                             metadata=(("traceparent", f"00-{TRACE}-{PARENT}-01"),
                                       ("tracestate", "vendor=1")))
            await stub.Unary(pb.EchoRequest(message="y"), timeout=5)  # a new root
            await stub.Unary(pb.EchoRequest(message="z"), timeout=5,  # not sampled upstream
                             metadata=(("traceparent", f"00-{TRACE}-{PARENT}-00"),))
        for sidecar in list(mesh.sidecars):
            await sidecar.shutdown()  # (flushes their spans)
        await wait_for(lambda: len(collector.spans) >= 4, 10.0, "four spans")
        await asyncio.sleep(0.2)
        spans = collector.spans
        assert len(spans) == 4  # two per sampled call; none for the one not sampled
        joined = [s for s in spans if s.trace_id.hex() == TRACE]  # type: ignore[attr-defined]
        outbound = next(s for s in joined if s.kind == s.SPAN_KIND_CLIENT)  # type: ignore[attr-defined]
        inbound = next(s for s in joined if s.kind == s.SPAN_KIND_SERVER)  # type: ignore[attr-defined]
        assert outbound.parent_span_id.hex() == PARENT  # type: ignore[attr-defined]
        assert inbound.parent_span_id == outbound.span_id  # type: ignore[attr-defined]
        assert outbound.name == "grpcmesh.example.v1.Echo/Unary"  # type: ignore[attr-defined]
        # The app got the inbound span as its parent; the unsampled call's header untouched.
        first, root, unsampled = recording.traceparents
        assert first == f"00-{TRACE}-{inbound.span_id.hex()}-01"  # type: ignore[attr-defined]
        assert unsampled == f"00-{TRACE}-{PARENT}-00"
        new = [s for s in spans if s.trace_id.hex() != TRACE]  # type: ignore[attr-defined]
        assert len(new) == 2 and not next(
            s for s in new if s.kind == s.SPAN_KIND_CLIENT).parent_span_id  # type: ignore[attr-defined]
        assert root is not None and root.split("-")[1] == new[0].trace_id.hex()  # type: ignore[attr-defined]
    finally:
        await server.stop(None)
