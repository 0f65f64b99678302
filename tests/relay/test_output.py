"""A connection's output (output.py) on a fake transport: one write per event, what a peer that
does not read can make us hold, and the close. No sockets."""
from __future__ import annotations

import asyncio

from grpcmesh.relay import frames as f
from grpcmesh.relay.limits import RelayLimits
from grpcmesh.relay.output import Flusher, call_soon_flushed
from tests.relay.fakes import (
    FakeTransport,
    Recorder,
    attach,
    data_payloads,
    goaway_code,
    legs,
    pair,
)

STREAM_WINDOW = RelayLimits().stream_window


def test_what_one_event_queues_for_a_peer_goes_out_in_one_write() -> None:
    flusher = Flusher()
    peer = Recorder(flusher)
    transport = attach(peer)
    writes: list[bytes] = []
    transport.write = writes.append  # type: ignore[method-assign]

    def event() -> None:
        peer.queue(b"a")
        peer.queue_control(b"b")
        assert writes == []

    call_soon_flushed(flusher, event)
    assert writes == [b"ab"] and peer.out_bytes == 0 and not flusher.dirty


def test_a_closed_peer_is_written_nothing_more() -> None:
    _flusher, src, ts, _dst, _td = pair()
    src.close()
    src.queue(b"late")
    assert ts.closed and ts.frames() == [] and not src.out


def test_a_close_for_an_error_says_why_in_a_goaway() -> None:
    _flusher, src, ts, _dst, _td = pair()
    src.close(f.ENHANCE_YOUR_CALM, "too much")
    frames = ts.frames()
    assert goaway_code(frames) == f.ENHANCE_YOUR_CALM and frames[-1][3][8:] == b"too much"
    assert ts.closed and not ts.aborted


def test_a_close_for_an_error_lingers_where_the_transport_can_half_close() -> None:
    class HalfClosing(FakeTransport):
        eof = False

        def can_write_eof(self) -> bool:
            return True

        def write_eof(self) -> None:
            self.eof = True

    async def scenario() -> None:
        peer = Recorder(Flusher())
        transport = HalfClosing()
        transport.protocol = peer
        peer.connection_made(transport)  # type: ignore[arg-type]
        peer.close(f.PROTOCOL_ERROR, "bad")
        assert transport.eof and not transport.closed  # the peer may still read the GOAWAY
        peer.data_received(f.frame(f.PING, 0, 0, b"12345678"))  # read and dropped
        assert goaway_code(transport.frames()) == f.PROTOCOL_ERROR

    asyncio.run(asyncio.wait_for(scenario(), 5))


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
