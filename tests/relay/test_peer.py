"""The relay's per-connection logic on fake transports: flow control with backpressure, frame
order, header blocks. No sockets, no event loop."""
from __future__ import annotations

import asyncio
from typing import Any

import hpack
import pytest

from grpcmesh.relay import frames as f
from grpcmesh.relay.limits import RelayLimits
from grpcmesh.relay.peer import CONN_WINDOW, FRAMES_PER_TURN, Flusher, Leg, Peer
from tests.relay.fakes import FakeTransport, attach

STREAM_WINDOW = RelayLimits().stream_window


class Recorder(Peer):
    def __init__(self, flusher: Flusher) -> None:
        super().__init__(flusher)
        self.events: list[tuple[Any, ...]] = []

    def on_data(self, leg: Leg, payload: bytes, end: bool, length: int) -> None:
        self.events.append(("data", leg.sid, payload, end, length))

    def on_headers(self, sid: int, block: bytes, end: bool) -> None:
        self.events.append(("headers", sid, block, end))

    def on_reset(self, leg: Leg, code: int, finished: bool, answered: bool) -> None:
        self.events.append(("reset", leg.sid, code))


def pair() -> tuple[Flusher, Recorder, FakeTransport, Recorder, FakeTransport]:
    """A source peer and a destination peer, as the two sides of a relayed call."""
    flusher = Flusher()
    src, dst = Recorder(flusher), Recorder(flusher)
    return flusher, src, attach(src), dst, attach(dst)


def legs(src: Peer, dst: Peer, sid: int = 1) -> tuple[Leg, Leg]:
    a, b = Leg(src, sid, None), Leg(dst, sid, None)
    src.streams[sid], dst.streams[sid] = a, b
    a.other, b.other = b, a
    return a, b


def data_payloads(frames: list[tuple[int, int, int, bytes]]) -> list[bytes]:
    return [p for kind, _, _, p in frames if kind == f.DATA]


def test_data_within_the_windows_goes_out_at_once_and_is_credited() -> None:
    flusher, src, ts, dst, td = pair()
    a, b = legs(src, dst)
    dst.send_data(b, b"hello", False, a, 5)
    flusher.flush()
    assert td.frames() == [(f.DATA, 0, 1, b"hello")]
    assert (b.window, dst.window) == (f.DEFAULT_WINDOW - 5, f.DEFAULT_WINDOW - 5)
    assert a.unacked == 5
    assert ts.frames() == []  # credit below half a window is not sent yet


def test_data_beyond_the_window_waits_and_the_source_is_credited_only_as_it_is_sent() -> None:
    flusher, src, _ts, dst, td = pair()
    a, b = legs(src, dst)
    b.window = 50
    dst.send_data(b, b"x" * 120, True, a, 120)
    flusher.flush()
    assert data_payloads(td.frames()) == [b"x" * 50]
    assert a.unacked == 50 and dst.blocked
    # The destination opens its stream window by 100; the connection window allows it all.
    dst.data_received(f.window_update(1, 100))
    frames = td.frames()
    assert [(k, fl, p) for k, fl, _, p in frames if k == f.DATA] == [(f.DATA, f.END_STREAM,
                                                                      b"x" * 70)]
    assert a.unacked == 120 and not dst.blocked and not b.pending
    assert b.ended_out


def test_the_connection_window_blocks_every_stream_until_it_opens() -> None:
    flusher, src, _ts, dst, td = pair()
    a1, b1 = legs(src, dst, 1)
    a3, b3 = legs(src, dst, 3)
    dst.window = 10
    dst.send_data(b1, b"a" * 10, False, a1, 10)
    dst.send_data(b3, b"b" * 10, False, a3, 10)
    flusher.flush()
    assert data_payloads(td.frames()) == [b"a" * 10]
    dst.data_received(f.window_update(0, 4))
    assert data_payloads(td.frames()) == [b"b" * 4]
    dst.data_received(f.window_update(0, 100))
    assert data_payloads(td.frames()) == [b"b" * 6]
    assert (a1.unacked, a3.unacked) == (10, 10)


def test_trailers_wait_behind_data_that_waits_for_window() -> None:
    flusher, src, _ts, dst, td = pair()
    a, b = legs(src, dst)
    b.window = 0
    dst.send_data(b, b"body", False, a, 4)
    dst.send_headers(b, b"\x88", True)  # :status 200, as a stand-in block
    flusher.flush()
    assert td.frames() == []
    dst.data_received(f.window_update(1, 4))
    assert [k for k, *_ in td.frames()] == [f.DATA, f.HEADERS]
    assert b.ended_out


def test_stream_credit_is_returned_in_batches_of_half_a_window() -> None:
    flusher, src, ts, dst, _td = pair()
    a, _b = legs(src, dst)
    src.credit(a, STREAM_WINDOW // 2 - 1)
    flusher.flush()
    assert ts.frames() == []
    src.credit(a, 1)
    flusher.flush()
    assert ts.frames() == [(f.WINDOW_UPDATE, 0, 1, (STREAM_WINDOW // 2).to_bytes(4, "big"))]


def test_the_connection_window_is_credited_as_data_arrives_whatever_the_stream() -> None:
    _flusher, src, ts, _dst, _td = pair()
    src.recv_window = CONN_WINDOW
    held = Leg(src, 1, None)  # a stream whose bytes are never relayed (its reader stalls)
    src.streams[1] = held
    chunk = f.frame(f.DATA, 0, 1, b"x" * 16_384)
    frames = 0
    while frames * 16_384 < CONN_WINDOW // 2:
        held.recv = STREAM_WINDOW  # as if the stream were credited: only the connection counts
        src.data_received(chunk)
        frames += 1
    assert (f.WINDOW_UPDATE, 0, 0, (frames * 16_384).to_bytes(4, "big")) in ts.frames()
    assert held.unacked == 0  # stream credit still waits for the bytes to be relayed


def test_a_finished_stream_gets_no_stream_credit() -> None:
    flusher, src, ts, dst, _td = pair()
    a, _b = legs(src, dst)
    a.ended_in = True
    src.credit(a, STREAM_WINDOW)
    flusher.flush()
    assert a.unacked == 0 and ts.frames() == []


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


def test_ping_is_answered_and_a_bad_preface_ends_the_connection() -> None:
    _flusher, src, ts, _dst, _td = pair()
    src.data_received(f.frame(f.PING, 0, 0, b"12345678"))
    assert (f.PING, f.ACK, 0, b"12345678") in ts.frames()
    src.expect_preface = True
    src.buf.clear()
    src.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    frames = ts.frames()
    assert frames[-1][0] == f.GOAWAY
    assert int.from_bytes(frames[-1][3][4:8], "big") == f.PROTOCOL_ERROR
    assert ts.closed


def test_blocks_are_forwarded_verbatim_once_the_peer_applied_table_size_zero() -> None:
    _flusher, src, _ts, _dst, _td = pair()
    headers = [(":path", "/pkg.S/M"), ("x-k", "v")]
    indexing = hpack.Encoder()  # uses the dynamic table, as a peer may before our SETTINGS
    first = indexing.encode(headers)
    got, verbatim = src.read_block(first)
    assert got == headers and not verbatim  # not acknowledged yet: re-encode
    assert src.decoder.header_table.dynamic_entries  # the block indexed its headers
    src.data_received(f.frame(f.SETTINGS, f.ACK, 0))
    # Acknowledged, but only a block that shows the size update proves the table is empty.
    indexing.header_table_size = 0  # the peer applies our SETTINGS_HEADER_TABLE_SIZE=0
    second = indexing.encode(headers)
    got, verbatim = src.read_block(second, need=False)  # decoded all the same
    assert got == headers and verbatim
    assert not src.decoder.header_table.dynamic_entries
    third = indexing.encode(headers)  # literals "with incremental indexing" index nothing now
    assert src.read_block(third, need=False) == (None, True)
    got, verbatim = src.read_block(third)
    assert got == headers and verbatim
    assert src.read_block(third, need=False) == (None, True)
    again, _ = src.read_block(third)
    assert again is not got and again == got  # not accepted yet (keep): decoded again
    assert got is not None
    src.keep(third, got)
    again, _ = src.read_block(third)
    assert again is got  # accepted once, then cached


def test_a_peer_that_keeps_its_table_after_the_ack_has_every_block_re_encoded() -> None:
    _flusher, src, ts, _dst, _td = pair()
    ignoring = hpack.Encoder()  # never applies our SETTINGS_HEADER_TABLE_SIZE=0
    src.data_received(f.frame(f.SETTINGS, f.ACK, 0))
    for value in ("a", "b", "a"):
        headers = [(":path", "/pkg.S/M"), ("x-k", value)]
        got, verbatim = src.read_block(ignoring.encode(headers), need=False)
        assert got == headers and not verbatim  # its blocks refer to its table: re-encoded
    assert not ts.closed


def test_a_peer_that_announces_a_table_after_emptying_it_is_refused() -> None:
    _flusher, src, _ts, _dst, _td = pair()
    peer = hpack.Encoder()
    src.data_received(f.frame(f.SETTINGS, f.ACK, 0))
    peer.header_table_size = 0
    src.read_block(peer.encode([(":path", "/pkg.S/M")]))
    assert src.verbatim
    peer.header_table_size = 4096  # against our setting
    with pytest.raises(hpack.HPACKError):  # which data_received answers with COMPRESSION_ERROR
        src.read_block(peer.encode([(":path", "/pkg.S/M")]))


def test_a_peer_that_overruns_the_stream_window_loses_the_connection() -> None:
    _flusher, src, ts, _dst, _td = pair()
    leg = Leg(src, 1, None)
    src.streams[1] = leg
    src.recv_window = CONN_WINDOW
    chunk = f.frame(f.DATA, 0, 1, b"x" * 16_384)
    src.data_received(chunk * (STREAM_WINDOW // 16_384))  # exactly the window: fine
    assert not ts.closed and leg.recv == 0
    src.data_received(f.frame(f.DATA, 0, 1, b"x"))
    goaway = [p for kind, _, _, p in ts.frames() if kind == f.GOAWAY]
    assert int.from_bytes(goaway[0][4:8], "big") == f.FLOW_CONTROL_ERROR and ts.closed


@pytest.mark.parametrize(("frame", "code"), [
    (f.window_update(0, 0), f.PROTOCOL_ERROR),
    (f.window_update(0, f.MAX_WINDOW), f.FLOW_CONTROL_ERROR),  # over 2^31-1 with the default
    (f.frame(f.PING, 0, 0, b"short"), f.FRAME_SIZE_ERROR),
    (f.frame(f.PING, 0, 1, b"12345678"), f.PROTOCOL_ERROR),
    (f.frame(f.RST_STREAM, 0, 1, b"\0"), f.FRAME_SIZE_ERROR),
    (f.frame(f.SETTINGS, f.ACK, 0, b"\0" * 6), f.FRAME_SIZE_ERROR),
    (f.settings_frame([(f.MAX_FRAME_SIZE, 100)]), f.PROTOCOL_ERROR),
    (f.settings_frame([(f.ENABLE_PUSH, 2)]), f.PROTOCOL_ERROR),
    (f.frame(f.GOAWAY, 0, 0, b"\0" * 4), f.FRAME_SIZE_ERROR),
])
def test_malformed_control_frames_end_the_connection_with_their_error(frame: bytes,
                                                                      code: int) -> None:
    _flusher, src, ts, _dst, _td = pair()
    src.data_received(frame)
    goaway = [p for kind, _, _, p in ts.frames() if kind == f.GOAWAY]
    assert int.from_bytes(goaway[0][4:8], "big") == code and ts.closed


def test_a_stream_window_over_the_maximum_ends_the_connection() -> None:
    _flusher, src, ts, _dst, _td = pair()
    src.streams[1] = Leg(src, 1, None)
    src.data_received(f.window_update(1, f.MAX_WINDOW))
    goaway = [p for kind, _, _, p in ts.frames() if kind == f.GOAWAY]
    assert int.from_bytes(goaway[0][4:8], "big") == f.FLOW_CONTROL_ERROR


def goaway_code(frames: list[tuple[int, int, int, bytes]]) -> int | None:
    codes = [int.from_bytes(p[4:8], "big") for kind, _, _, p in frames if kind == f.GOAWAY]
    return codes[-1] if codes else None


def test_data_for_a_peer_that_does_not_read_waits_and_its_source_is_not_credited() -> None:
    flusher, src, _ts, dst, td = pair()
    a, b = legs(src, dst)
    b.window = dst.window = 10 * STREAM_WINDOW  # the peer granted plenty of window ...
    high = dst.limits.write_buffer_bytes
    sent = 0
    while not td.paused_writing:  # ... but does not read its socket
        dst.send_data(b, b"x" * 16_384, False, a, 16_384)
        flusher.flush()
        sent += 16_384
    assert not td.reading  # a peer whose output is full is not read either
    credited = a.unacked
    dst.send_data(b, b"y" * 16_384, False, a, 16_384)
    flusher.flush()
    assert b.pending and a.unacked == credited  # waits: no credit for it
    assert sent <= high + 16_384
    td.frames()
    td.drain()  # the peer reads: what waited goes out, and its source is credited
    assert td.reading and not b.pending
    assert data_payloads(td.frames()) == [b"y" * 16_384]


def test_a_large_window_update_does_not_queue_more_than_the_write_buffer_at_once() -> None:
    flusher, src, _ts, dst, td = pair()
    dst.window = 0  # every stream waits for the connection window
    pairs = [legs(src, dst, sid) for sid in range(1, 41, 2)]
    for a, b in pairs:
        b.window = STREAM_WINDOW
        dst.send_data(b, b"z" * 100_000, False, a, 100_000)
    flusher.flush()
    assert td.frames() == []
    dst.data_received(f.window_update(0, f.MAX_WINDOW - f.DEFAULT_WINDOW))
    queued = sum(len(p) for p in data_payloads(td.frames()))
    assert queued <= dst.limits.write_buffer_bytes + 100_000  # the rest waits for the reader
    assert td.paused_writing and dst.blocked
    td.drain()
    assert sum(len(p) for p in data_payloads(td.frames())) > 0


def test_control_frames_a_peer_does_not_read_end_its_connection() -> None:
    flusher, src, ts, _dst, _td = pair()
    ts.high = 1024
    src.queue(b"\0" * 2048)  # output the peer does not read
    flusher.flush()
    assert src.paused and not ts.reading
    pings = b"".join(f.frame(f.PING, 0, 0, b"%08d" % n) for n in range(9_000))  # a burst: fine
    src.data_received(pings)  # (what was read before reading stopped)
    assert ts.aborted  # no GOAWAY can reach a peer that does not read: the socket is dropped
    assert ts.buffered <= 2048 + src.limits.max_unread_control_bytes + 17 + 9 + 8 + 200  # GOAWAY


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
