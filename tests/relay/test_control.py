"""Control frames (control.py) read by a peer on a fake transport: what each one changes, what
it is answered with, and the errors that end the connection. No sockets, no event loop."""
from __future__ import annotations

import asyncio

import pytest

from grpcmesh.relay import frames as f
from grpcmesh.relay.flow import Leg
from tests.relay.fakes import data_payloads, goaway_code, legs, pair


def test_ping_is_answered() -> None:
    _flusher, src, ts, _dst, _td = pair()
    src.data_received(f.frame(f.PING, 0, 0, b"12345678"))
    assert ts.frames() == [(f.PING, f.ACK, 0, b"12345678")]


def test_settings_are_applied_acknowledged_and_end_the_handshake() -> None:
    async def scenario() -> None:
        _flusher, src, ts, _dst, _td = pair()
        waiter = asyncio.ensure_future(src.handshake())
        await asyncio.sleep(0)
        src.data_received(f.settings_frame([(f.MAX_FRAME_SIZE, 20_000),
                                            (f.MAX_CONCURRENT_STREAMS, 7)]))
        assert await waiter and src.got_settings
        assert (src.peer_max_frame, src.peer_max_streams) == (20_000, 7)
        assert ts.frames() == [(f.SETTINGS, f.ACK, 0, b"")]

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_a_settings_change_of_the_initial_window_moves_every_stream_window() -> None:
    _flusher, src, _ts, dst, td = pair()
    a, b = legs(src, dst)
    b.window = 0
    dst.peer_initial = 0
    dst.send_data(b, b"q" * 8, False, a, 8)
    dst.data_received(f.settings_frame([(f.INITIAL_WINDOW_SIZE, 8)]))
    frames = td.frames()
    assert (f.SETTINGS, f.ACK, 0, b"") in frames
    assert data_payloads(frames) == [b"q" * 8]


def test_the_settings_ack_lets_header_blocks_become_verbatim() -> None:
    _flusher, src, ts, _dst, _td = pair()
    src.data_received(f.frame(f.SETTINGS, f.ACK, 0))
    assert src.blocks.acked and ts.frames() == []


def test_a_reset_ends_the_stream_and_returns_the_credit_of_what_waited() -> None:
    _flusher, src, _ts, dst, _td = pair()
    a, b = legs(src, dst)
    b.window = 0
    dst.send_data(b, b"z" * 30, False, a, 30)
    dst.data_received(f.rst_stream(1, f.CANCEL))
    assert dst.events == [("reset", 1, f.CANCEL)]
    assert 1 not in dst.streams and not dst.blocked and a.unacked == 30
    assert b.ended_in and b.ended_out


def test_goaway_is_handed_to_the_side() -> None:
    _flusher, src, _ts, _dst, _td = pair()
    src.data_received(f.goaway(5, f.NO_ERROR, b"bye"))
    assert src.events == [("goaway", 5, f.NO_ERROR, b"bye")]


@pytest.mark.parametrize(("frame", "code"), [
    (f.window_update(0, 0), f.PROTOCOL_ERROR),
    (f.window_update(0, f.MAX_WINDOW), f.FLOW_CONTROL_ERROR),  # over 2^31-1 with the default
    (f.frame(f.WINDOW_UPDATE, 0, 0, b"\0"), f.FRAME_SIZE_ERROR),
    (f.frame(f.PING, 0, 0, b"short"), f.FRAME_SIZE_ERROR),
    (f.frame(f.PING, 0, 1, b"12345678"), f.PROTOCOL_ERROR),
    (f.frame(f.RST_STREAM, 0, 1, b"\0"), f.FRAME_SIZE_ERROR),
    (f.rst_stream(0, f.CANCEL), f.PROTOCOL_ERROR),
    (f.frame(f.SETTINGS, f.ACK, 0, b"\0" * 6), f.FRAME_SIZE_ERROR),
    (f.settings_frame([(f.MAX_FRAME_SIZE, 100)]), f.PROTOCOL_ERROR),
    (f.settings_frame([(f.ENABLE_PUSH, 2)]), f.PROTOCOL_ERROR),
    (f.settings_frame([(f.INITIAL_WINDOW_SIZE, f.MAX_WINDOW + 1)]), f.FLOW_CONTROL_ERROR),
    (f.frame(f.GOAWAY, 0, 0, b"\0" * 4), f.FRAME_SIZE_ERROR),
    (f.frame(f.PUSH_PROMISE, f.END_HEADERS, 1, b"\0" * 4), f.PROTOCOL_ERROR),
    (f.frame(f.HEADERS, 0, 1, b"\x82") + f.frame(f.PING, 0, 0, b"12345678"), f.PROTOCOL_ERROR),
])
def test_malformed_control_frames_end_the_connection_with_their_error(frame: bytes,
                                                                      code: int) -> None:
    _flusher, src, ts, _dst, _td = pair()
    src.data_received(frame)
    assert goaway_code(ts.frames()) == code and ts.closed


def test_a_stream_window_over_the_maximum_ends_the_connection() -> None:
    _flusher, src, ts, _dst, _td = pair()
    src.streams[1] = Leg(src, 1, None)
    src.data_received(f.window_update(1, f.MAX_WINDOW))
    assert goaway_code(ts.frames()) == f.FLOW_CONTROL_ERROR


def test_priority_and_unknown_frames_are_ignored() -> None:
    _flusher, src, ts, _dst, _td = pair()
    src.data_received(f.frame(f.PRIORITY_FRAME, 0, 1, b"\0" * 5) + f.frame(0x30, 0, 0, b"?"))
    assert ts.frames() == [] and not ts.closed
