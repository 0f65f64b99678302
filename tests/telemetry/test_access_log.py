"""The access log: its lines (pure), its bounded queue, and a real sidecar writing it."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import grpc
import pytest

from generated.grpcmesh.example.v1 import echo_pb2 as pb
from generated.grpcmesh.example.v1 import echo_pb2_grpc
from grpcmesh.clock import FakeClock
from grpcmesh.relay.record import CallRecord
from grpcmesh.telemetry.access_log import AccessLog, Stamp, line, trace_id
from tests.conftest import Mesh

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def record(headers: list[tuple[str, str]] | None = None) -> CallRecord:
    return CallRecord("/pkg.S/M", "127.0.0.1:5000", "svc", "10.0.0.1:80",
                      grpc.StatusCode.UNAVAILABLE, "app", "", 100.0, 0.0125, 0.01, 10, 20, 2,
                      "budget_exhausted", headers or [])


@pytest.mark.parametrize(("value", "expected"), [
    (PARENT, TRACE),
    (f"01-{TRACE}-00f067aa0ba902b7-01-more", TRACE),  # a later version keeps the layout
    ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", ""),  # all zeros: invalid
    (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", ""),  # upper case: invalid
    ("00-abc-00f067aa0ba902b7-01", ""),
    ("garbage", ""),
])
def test_the_trace_id_comes_from_a_valid_traceparent_only(value: str, expected: str) -> None:
    assert trace_id([("te", "trailers"), ("traceparent", value)]) == expected
    assert trace_id([]) == ""


def test_a_line_says_what_the_call_came_to() -> None:
    text = line(record([("traceparent", PARENT)]), "outbound",
                Stamp(1_700_000_000.0)(100.0))
    assert text.endswith(b"\n") and text.count(b"\n") == 1
    assert json.loads(text) == {
        "start": "2023-11-14T22:15:00.000Z", "duration_ms": 12.5, "direction": "outbound",
        "caller": "127.0.0.1:5000", "service": "svc", "method": "/pkg.S/M",
        "endpoint": "10.0.0.1:80", "code": "UNAVAILABLE", "by": "app", "reason": "",
        "attempts": 2, "retry_stop": "budget_exhausted", "request_bytes": 10,
        "response_bytes": 20, "trace_id": TRACE}


def test_lines_are_written_and_a_full_queue_drops_rather_than_waits(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), FakeClock(), buffer=3)  # (no running loop: no batching)
    gate, entered = threading.Event(), threading.Event()
    real = log._out

    class Slow:
        def write(self, data: bytes) -> int:
            entered.set()
            gate.wait(5)
            return real.write(data)

        def close(self) -> None:
            real.close()

    log._out = Slow()  # type: ignore[assignment]
    observe = log.observer("inbound")
    observe(record())
    assert entered.wait(5)  # the writer holds that line, stuck in its write
    for _ in range(10):  # two more fit the buffer; the rest are dropped, not waited for
        observe(record())
    assert log.dropped == 8
    gate.set()
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 3 == log.written
    assert all(json.loads(line)["direction"] == "inbound" for line in lines)


def test_an_access_log_that_cannot_be_opened_says_so(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="cannot open the access log .*: Is a directory"):
        AccessLog(str(tmp_path), FakeClock())


@pytest.mark.asyncio
async def test_a_sidecar_logs_each_call_in_both_directions(mesh: Mesh, tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    app = await mesh.app("a")
    server = await mesh.sidecar("echo", app, access_log=str(path))
    client = await mesh.sidecar("client", access_log=str(path))
    await mesh.serving(client, "echo", 1)
    async with grpc.aio.insecure_channel(client.outbound_address) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        await stub.Unary(pb.EchoRequest(message="x"), timeout=5,
                         metadata=(("traceparent", PARENT),))
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary("/nope.v1.Nothing/Call")(b"", timeout=5)
    for sidecar in (client, server):
        await sidecar.shutdown()
    lines = [json.loads(entry) for entry in path.read_text().splitlines()]
    unary = [entry for entry in lines if entry["method"].endswith("/Unary")]
    assert sorted(entry["direction"] for entry in unary) == ["inbound", "outbound"]
    for entry in unary:
        assert (entry["code"], entry["by"], entry["trace_id"], entry["attempts"]) == (
            "OK", "app", TRACE, 1)
        assert entry["service"] == "echo" and entry["request_bytes"] > 0
    outbound = next(entry for entry in unary if entry["direction"] == "outbound")
    inbound = next(entry for entry in unary if entry["direction"] == "inbound")
    assert outbound["endpoint"] == server.inbound_address
    assert inbound["endpoint"] == app.address
    nope = [entry for entry in lines if entry["method"] == "/nope.v1.Nothing/Call"]
    assert [(n["code"], n["by"], n["reason"], n["endpoint"]) for n in nope] == [
        ("UNIMPLEMENTED", "proxy", "no_route", "")]


def test_the_stamp_makes_each_seconds_text_once_and_keeps_milliseconds() -> None:
    stamp = Stamp(1_700_000_000.0)
    assert stamp(0.0) == "2023-11-14T22:13:20.000Z"
    assert stamp(0.2505) == "2023-11-14T22:13:20.250Z"
    assert stamp(1.999) == "2023-11-14T22:13:21.999Z"


def test_strings_from_clients_are_escaped() -> None:
    odd = CallRecord('/p.S/"M\\\n\u2028', "c", "s", "", grpc.StatusCode.OK, "app", "", 0.0, 0.0,
                     None, 0, 0, 1)
    assert json.loads(line(odd, "inbound", "x"))["method"] == '/p.S/"M\\\n\u2028'


def test_short_writes_are_finished_and_a_failed_one_never_joins_two_lines(
        tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), FakeClock(), buffer=100)
    real = log._out
    budget = [10_000]

    class Short:  # at most 7 bytes a write, and fails once budget runs out (a full disk)
        def write(self, data: bytes) -> int:
            if budget[0] <= 0:
                raise OSError(28, "No space left on device")
            n = min(7, len(data), budget[0])
            budget[0] -= n
            return real.write(bytes(data[:n]))

        def close(self) -> None:
            real.close()

    log._out = Short()  # type: ignore[assignment]
    observe = log.observer("outbound")  # (no running loop: each line is its own batch)

    def written() -> None:  # the writer thread has taken everything
        deadline = time.monotonic() + 5
        while log._queued and time.monotonic() < deadline:
            time.sleep(0.005)
        assert not log._queued
    observe(record())
    observe(record())
    written()
    size = len(line(record(), "outbound", "x"))
    budget[0] = size + size // 2  # the next two lines: one and a half get in
    observe(record())
    observe(record())
    written()
    budget[0] = 10_000  # space again
    observe(record())
    log.close()
    text = path.read_text()
    lines = text.split("\n")
    whole = [json.loads(x) for x in lines if x.startswith("{") and x.endswith("}")]
    assert len(whole) == 4 == log.written and log.dropped == 1
    assert [x for x in lines if x and not (x.startswith("{") and x.endswith("}"))] != []  # torn
    assert text.endswith("}\n") and json.loads(lines[-2])["direction"] == "outbound"


def test_only_a_valid_traceparent_gives_a_trace_id() -> None:
    for bad in (f"ff-{TRACE}-00f067aa0ba902b7-01", f"00-{TRACE}-00f067aa0ba902b7-01-x",
                f"00-{TRACE}-0000000000000000-01", f" {PARENT}"):
        assert trace_id([("traceparent", bad)]) == ""
