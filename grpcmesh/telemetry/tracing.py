"""W3C trace context, and with `--otlp HOST:PORT` a span per call (issue 12).

Without `--otlp` the relay passes `traceparent` and `tracestate` through untouched, as every
other header. With it, each sidecar process records a span per call (a CLIENT span for the app's
own calls, a SERVER span for calls to the app) and exports it over OTLP/gRPC with the
OpenTelemetry SDK (the `otlp` extra): the span is a child of the call's `traceparent`, or, for a
call without a valid one, the root of a new trace, sampled at `--trace-sample-ratio` (1.0 by
default: a user who turns tracing on expects traces). The call goes on with the span's own id
as the parent in `traceparent`, so the next hop (the app's spans, or the next sidecar's) hangs
under it. A call that joins a trace its caller did not sample is not recorded and keeps its
headers; a new root that is not sampled goes on without any. A `tracestate` without a valid
`traceparent` is dropped (W3C: it cannot be interpreted without one).

Spans are made and ended on the event loop; the SDK's BatchSpanProcessor exports them from its
own thread in batches (every second, at most 512 at a time), and drops spans rather than
queueing more than 2,048: a slow or absent collector never slows calls or grows memory.

The tracing interceptor is the first of every chain, so that calls answered by an interceptor
or a mesh rule (a fault, a rate limit) are traced too. Its parsing and formatting of
`traceparent` is pure (parse_traceparent, format_traceparent).
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from grpcmesh.interceptors.api import Answer, CallView, Delay, Interceptor
from grpcmesh.relay.record import PROXY, CallRecord

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

_HEX = frozenset("0123456789abcdef")
DEFAULT_RATIO = 1.0
HEALTH = "/grpc.health.v1.Health/"


def parse_traceparent(value: str | None) -> tuple[int, int, int] | None:
    """(trace id, parent span id, flags) of a valid W3C traceparent, or None. Version 00 must
    have exactly four fields; a later version at least four (its extra ones are ignored);
    version ff, all-zero ids and upper-case hex are invalid."""
    if value is None:
        return None
    parts = value.split("-")
    if len(parts) < 4:
        return None
    version, trace, parent, flags = parts[:4]
    if len(version) != 2 or not set(version) <= _HEX or version == "ff" or (
            version == "00" and len(parts) != 4):
        return None
    if len(trace) != 32 or len(parent) != 16 or len(flags) != 2 or not (
            set(trace) <= _HEX and set(parent) <= _HEX and set(flags) <= _HEX):
        return None
    trace_id, parent_id = int(trace, 16), int(parent, 16)
    if not trace_id or not parent_id:
        return None
    return trace_id, parent_id, int(flags, 16)


def format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


class Tracing(Interceptor):
    """A span per call, exported by provider (an SDK TracerProvider)."""

    name = "tracing"

    def __init__(self, provider: TracerProvider, direction: str,
                 ratio: float = DEFAULT_RATIO, rng: random.Random | None = None) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

        if not 0 <= ratio <= 1:
            raise ValueError(f"trace sample ratio {ratio}: expected 0 to 1")
        self.tracer = provider.get_tracer("grpcmesh")
        self.kind = SpanKind.CLIENT if direction == "outbound" else SpanKind.SERVER
        self.ratio = ratio
        self.rng = rng or random.Random()
        self.spans: dict[CallView, Any] = {}  # the calls in flight that have a span
        self._trace, self._span_context, self._flags = trace, SpanContext, TraceFlags
        self._non_recording = NonRecordingSpan

    def request(self, call: CallView) -> Answer | Delay | None:
        parent = parse_traceparent(call.header("traceparent"))
        if parent is None:
            if call.method.startswith(HEALTH):
                return None  # probes start no trace
            if call.header("tracestate") is not None:
                call.remove_header("tracestate")
            if self.ratio < 1 and self.rng.random() >= self.ratio:
                return None  # a new root, not sampled: nothing recorded, nothing passed on
            context = None
        else:
            trace_id, parent_id, flags = parent
            if not flags & 1:
                return None  # the caller did not sample it: passed on untouched
            remote = self._span_context(trace_id, parent_id, is_remote=True,
                                        trace_flags=self._flags(flags))
            context = self._trace.set_span_in_context(self._non_recording(remote))
        service, _, method = call.method[1:].partition("/")
        span = self.tracer.start_span(
            call.method[1:], context=context, kind=self.kind,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method,
                        "grpcmesh.service": call.service, "client.address": call.caller})
        own = span.get_span_context()
        call.set_header("traceparent", format_traceparent(own.trace_id, own.span_id,
                                                          int(own.trace_flags) | 1))
        self.spans[call] = span
        return None

    def end(self, call: CallView, record: CallRecord) -> None:
        span = self.spans.pop(call, None)
        if span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("rpc.grpc.status_code", record.code.value[0])
        span.set_attribute("grpcmesh.attempts", record.attempts)
        if record.endpoint:
            span.set_attribute("server.address", record.endpoint)
        if record.by == PROXY:
            span.set_attribute("grpcmesh.proxy_reason", record.reason)
        if record.code.value[0] != 0:
            span.set_status(Status(StatusCode.ERROR, record.code.name))
        span.end()


def otlp_provider(endpoint: str, service: str) -> TracerProvider:
    """An SDK TracerProvider exporting to the OTLP/gRPC collector at endpoint (plaintext),
    batched from its own thread. Needs the `otlp` extra."""
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as err:
        raise RuntimeError("--otlp needs the OpenTelemetry SDK: pip install "
                           f"'grpcmesh[otlp]' ({err})") from None
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    # An export waits at most 2 s for the collector (so does the one at shutdown).
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=2), max_queue_size=2048,
        schedule_delay_millis=1000, max_export_batch_size=512, export_timeout_millis=2000))
    return provider
