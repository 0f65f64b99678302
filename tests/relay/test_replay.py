"""A call holds its request until an attempt commits, so that an attempt no app saw (the
endpoint's REFUSED_STREAM, or its GOAWAY below the attempt's stream) goes to another endpoint.
Fake transports, two endpoints, no sockets."""
from __future__ import annotations

import asyncio

import grpc
import hpack
import pytest

from grpcmesh.registry.model import Health, Instance
from grpcmesh.relay import frames as f
from grpcmesh.relay.limits import RelayLimits
from grpcmesh.relay.record import CallRecord
from grpcmesh.relay.upstreams import Upstream
from tests.relay.fakes import FakeTransport, attach
from tests.relay.test_relay import OK, REQUEST, RESPONSE, Mesh, client_status, message

OTHER = "127.0.0.1:10"


class TwoEndpoints(Mesh):
    """Mesh's relay, client and first endpoint, and a second endpoint, connected too."""

    def __init__(self, limits: RelayLimits = RelayLimits()) -> None:
        super().__init__(limits=limits)
        self.pool.upsert(Instance("svc", "e2", OTHER, health=Health.SERVING))
        self.other = Upstream(OTHER, self.relay.upstreams)
        self.other_t = attach(self.other)
        self.relay.upstreams._current[OTHER] = self.other
        self.relay.upstreams._all.add(self.other)
        self.other.data_received(f.settings_frame([]))
        self.other_t.frames()
        self.records: list[CallRecord] = []
        self.relay.observers.append(self.records.append)

    def first(self) -> tuple[Upstream, FakeTransport, Upstream, FakeTransport]:
        """(the endpoint that got the call, its transport, the other one, its transport)."""
        if self.up.streams:
            return self.up, self.up_t, self.other, self.other_t
        return self.other, self.other_t, self.up, self.up_t

    def assert_clean(self) -> None:
        super().assert_clean()
        assert not self.other.streams
        assert self.relay.held == 0


def kinds(frames: list[tuple[int, int, int, bytes]]) -> list[int]:
    return [k for k, *_ in frames]


@pytest.mark.parametrize("refusal", ["goaway", "refused_stream"])
@pytest.mark.asyncio
async def test_a_call_no_app_saw_is_sent_to_the_other_endpoint_with_its_request(
        refusal: str) -> None:
    mesh = TwoEndpoints()
    mesh.request(body=message(b"hi"), headers=[*REQUEST, ("grpc-timeout", "5S")])
    first, first_t, second, second_t = mesh.first()
    assert kinds(first_t.frames()) == [f.HEADERS, f.DATA]
    mesh.clock.advance(1.0)
    if refusal == "goaway":
        first.data_received(f.goaway(0, f.NO_ERROR))
    else:
        first.data_received(f.rst_stream(1, f.REFUSED_STREAM))
    mesh.down.data_received(f.frame(f.DATA, f.END_STREAM, 1, message(b"more")))
    await asyncio.sleep(0)
    sent = second_t.frames()
    # The request again, then what the client sent while it was on its way.
    assert kinds(sent) == [f.HEADERS, f.DATA, f.DATA]
    assert [p for k, _, _, p in sent if k == f.DATA] == [message(b"hi"), message(b"more")]
    headers = dict(hpack.Decoder().decode(sent[0][3]))
    assert f.parse_timeout(headers["grpc-timeout"]) == 4.0  # what is left of the deadline
    assert mesh.down_t.frames() == []  # the client saw nothing of the refusal
    second.data_received(f.frame(f.HEADERS, f.END_HEADERS, 1, hpack.Encoder().encode(RESPONSE))
                         + f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1,
                                   hpack.Encoder().encode(OK)))
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
    assert [r.attempts for r in mesh.records] == [2]
    assert mesh.records[0].endpoint == second.address
    mesh.assert_clean()


@pytest.mark.asyncio
async def test_a_call_whose_response_reached_the_client_is_not_sent_again() -> None:
    mesh = TwoEndpoints()
    mesh.request(body=message(b"hi"), end=True)
    first, _, _, second_t = mesh.first()
    first.data_received(mesh.headers(1, RESPONSE))  # committed: the client has its headers
    first.data_received(f.rst_stream(1, f.REFUSED_STREAM))
    await asyncio.sleep(0)
    assert second_t.frames() == []
    got = mesh.down_t.frames()
    assert kinds(got) == [f.HEADERS, f.RST_STREAM]
    assert int.from_bytes(got[1][3], "big") == f.REFUSED_STREAM
    assert [r.code for r in mesh.records] == [grpc.StatusCode.UNAVAILABLE]
    mesh.assert_clean()


@pytest.mark.parametrize("limits", [RelayLimits(retry_buffer_bytes=8),
                                    RelayLimits(retry_buffer_total_bytes=8)],
                         ids=["per call", "all calls"])
@pytest.mark.asyncio
async def test_a_request_over_the_retry_buffer_commits_and_is_not_sent_again(
        limits: RelayLimits) -> None:
    mesh = TwoEndpoints(limits)
    mesh.request(body=message(b"more than eight bytes"), end=True)
    first, _, _, second_t = mesh.first()
    assert mesh.relay.held == 0  # nothing held: the attempt committed
    first.data_received(f.goaway(0, f.NO_ERROR))
    await asyncio.sleep(0)
    assert second_t.frames() == []
    got = mesh.down_t.frames()
    assert kinds(got) == [f.RST_STREAM]  # refused: the client may retry it itself
    assert int.from_bytes(got[0][3], "big") == f.REFUSED_STREAM
    mesh.assert_clean()


@pytest.mark.asyncio
async def test_a_call_refused_everywhere_is_refused_to_its_client() -> None:
    mesh = TwoEndpoints()
    mesh.request(body=message(b"hi"), end=True)
    first, _, second, second_t = mesh.first()
    first.data_received(f.rst_stream(1, f.REFUSED_STREAM))
    await asyncio.sleep(0)
    assert kinds(second_t.frames()) == [f.HEADERS, f.DATA]
    second.data_received(f.rst_stream(1, f.REFUSED_STREAM))
    await asyncio.sleep(0)
    got = mesh.down_t.frames()
    assert kinds(got) == [f.RST_STREAM]
    assert int.from_bytes(got[0][3], "big") == f.REFUSED_STREAM
    assert [(r.code, r.attempts) for r in mesh.records] == [(grpc.StatusCode.UNAVAILABLE, 2)]
    mesh.assert_clean()


@pytest.mark.asyncio
async def test_a_client_that_leaves_while_its_call_is_sent_again_cancels_it() -> None:
    mesh = TwoEndpoints()
    mesh.request(body=message(b"hi"))
    first, _, _, second_t = mesh.first()
    first.data_received(f.goaway(0, f.NO_ERROR))
    mesh.down.data_received(f.rst_stream(1, f.CANCEL))
    await asyncio.sleep(0)
    assert second_t.frames() == []
    assert [r.code for r in mesh.records] == [grpc.StatusCode.CANCELLED]
    mesh.assert_clean()
