"""A connection's frame loop (peer.py) on fake transports: frames dispatched to its side, a
stream's end, the rules that end a connection, and fair turns. No sockets, no event loop
(flow control, control frames, header blocks and output have test modules of their own)."""
from __future__ import annotations

import asyncio

import pytest

from grpcmesh.relay import frames as f
from grpcmesh.relay.headers import MAX_BLOCK
from grpcmesh.relay.peer import FRAMES_PER_TURN, Leg
from tests.relay.fakes import goaway_code, legs, pair


def test_reset_drops_what_waits_and_returns_its_credit() -> None:
    flusher, src, _ts, dst, td = pair()
    a, b = legs(src, dst)
    b.window = 0
    dst.send_data(b, b"z" * 30, False, a, 30)
    dst.reset(b, f.CANCEL)
    flusher.flush()
    assert td.frames() == [(f.RST_STREAM, 0, 1, f.CANCEL.to_bytes(4, "big"))]
    assert 1 not in dst.streams and not dst.blocked
    assert a.unacked == 30  # its sender may go on: it gets its stream credit
    a.ended_in = True
    dst.send_data(b, b"y" * 5, False, a, 5)  # a finished sender needs none
    assert a.unacked == 30


def test_incoming_frames_are_dispatched_and_padding_is_removed() -> None:
    _flusher, src, _ts, _dst, _td = pair()
    leg = Leg(src, 1, None)
    src.streams[1] = leg
    padded = bytes([3]) + b"abc" + b"\0\0\0"
    src.data_received(f.frame(f.DATA, f.PADDED | f.END_STREAM, 1, padded)
                      + f.frame(f.DATA, 0, 9, b"late"))  # stream 9: unknown
    assert src.events == [("data", 1, b"abc", True, 7)]
    assert leg.ended_in
    assert src.conn_unacked == 7 + 4  # every DATA byte is credited on the connection


def test_header_blocks_are_reassembled_from_continuations() -> None:
    _flusher, src, _ts, _dst, _td = pair()
    block = b"b" * 40_000
    src.data_received(f.header_frames(5, block, True, 16_384))
    assert src.events == [("headers", 5, block, True)]


def test_a_bad_preface_ends_the_connection() -> None:
    _flusher, src, ts, _dst, _td = pair()
    src.expect_preface = True
    src.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert goaway_code(ts.frames()) == f.PROTOCOL_ERROR and ts.closed


def test_a_stream_ended_both_ways_is_forgotten_and_a_reset_can_wait_for_the_end() -> None:
    flusher, src, _ts, dst, td = pair()
    a, b = legs(src, dst)
    b.window = 0
    dst.send_data(b, b"tail", True, a, 4)
    dst.end_then_reset(b)  # the response is complete: the request is no longer wanted
    flusher.flush()
    assert td.frames() == [] and 1 in dst.streams
    dst.data_received(f.window_update(1, 4))
    assert [k for k, *_ in td.frames()] == [f.DATA, f.RST_STREAM]
    assert 1 not in dst.streams


@pytest.mark.parametrize(("frames", "error"), [
    (f.frame(f.HEADERS, 0, 1, b"\x82") + f.frame(f.DATA, 0, 1, b"x"), "DATA inside a header"),
    (f.frame(f.DATA, 0, 3, b"x"), "DATA on stream 3, which is not open"),
    (f.frame(f.HEADERS, 0, 1, b"\x82") + f.frame(f.CONTINUATION, 0, 1, b"x" * 16_384)
     * (MAX_BLOCK // 16_384 + 1), "header block too large"),
    (f.frame(f.DATA, 0, 1, b"x" * (f.DEFAULT_FRAME_SIZE + 1)), "a frame of 16385 bytes"),
])
def test_frames_the_loop_refuses_end_the_connection(frames: bytes, error: str) -> None:
    _flusher, src, ts, _dst, _td = pair()
    src.idle = lambda sid: True  # type: ignore[method-assign]
    src.data_received(frames)
    assert error in next(p for k, _, _, p in ts.frames() if k == f.GOAWAY)[8:].decode()
    assert ts.closed


@pytest.mark.parametrize(("frames", "why"), [
    (f.frame(f.HEADERS, 0, 1, b"\x82") + f.frame(f.CONTINUATION, 0, 1) * 20, "empty frames"),
    (f.frame(f.HEADERS, 0, 1, b"\x82") + f.frame(f.CONTINUATION, 0, 1, b"\x82") * 100,
     "CONTINUATION"),
    (f.frame(f.PING, 0, 0, b"12345678") * 20_000, "control frames"),
    (f.frame(8 + 30, 0, 0, b"unknown") * 20_000, "control frames"),
])
def test_frame_floods_end_the_connection_with_enhance_your_calm(frames: bytes, why: str) -> None:
    _flusher, src, ts, _dst, _td = pair()
    src.data_received(frames)
    out = ts.frames()
    assert goaway_code(out) == f.ENHANCE_YOUR_CALM and ts.closed
    assert why in next(p for k, _, _, p in out if k == f.GOAWAY)[8:].decode()


def test_empty_data_frames_in_a_row_end_the_connection() -> None:
    _flusher, src, ts, _dst, _td = pair()
    src.streams[1] = Leg(src, 1, None)
    src.data_received(f.frame(f.DATA, 0, 1) * 10)  # the limit: fine
    assert not ts.closed
    src.data_received(f.frame(f.DATA, 0, 1))
    assert goaway_code(ts.frames()) == f.ENHANCE_YOUR_CALM


def test_a_connection_yields_to_others_after_a_turn_of_frames() -> None:
    async def scenario() -> None:
        _flusher, src, ts, _dst, _td = pair()
        pings = f.frame(f.PING, 0, 0, b"12345678") * (FRAMES_PER_TURN * 3)
        src.data_received(pings)
        acks = [k for k, *_ in ts.frames() if k == f.PING]
        assert len(acks) == FRAMES_PER_TURN  # then it stops reading until the loop turns
        assert not ts.reading
        for _ in range(3):
            await asyncio.sleep(0)
        assert len([k for k, *_ in ts.frames() if k == f.PING]) == 2 * FRAMES_PER_TURN
        assert ts.reading and not src.buf

    asyncio.run(asyncio.wait_for(scenario(), 5))
