"""Flow control (flow.py) as a plain object: a connection reduced to its windows, what it sends
left in its output queue. No transport, no event loop. The last tests charge the windows through
a peer's frame loop."""
from __future__ import annotations

import pytest

from grpcmesh.clock import FakeClock
from grpcmesh.relay import frames as f
from grpcmesh.relay.flow import CONN_WINDOW, FlowControl, Leg
from grpcmesh.relay.limits import RelayLimits
from grpcmesh.relay.output import Flusher
from tests.h2raw import Frame, parse_frames
from tests.relay.fakes import data_payloads, pair

STREAM_WINDOW = RelayLimits().stream_window


class Host(FlowControl):
    """The rest of a connection, as little as flow control needs: its streams and frame size,
    and the end of a leg."""

    def __init__(self, limits: RelayLimits = RelayLimits()) -> None:
        super().__init__(Flusher(), limits, FakeClock())
        self.streams: dict[int, Leg] = {}
        self.peer_max_frame = f.DEFAULT_FRAME_SIZE

    def ended(self, leg: Leg) -> None:
        leg.ended_out = True

    def open(self, sid: int = 1) -> Leg:
        leg = self.streams[sid] = Leg(self, sid, None)  # type: ignore[arg-type]
        return leg

    def sent(self) -> list[Frame]:
        """The frames queued since the last call (as if they were written)."""
        frames, _ = parse_frames(b"".join(self.out))
        self.out.clear()
        self.out_bytes = 0
        return frames


def inc(increment: int) -> bytes:
    """A WINDOW_UPDATE frame's payload."""
    return increment.to_bytes(4, "big")


def call(sid: int = 1) -> tuple[Host, Leg, Host, Leg]:
    """A source connection and a destination connection, with a call's leg on each."""
    src, dst = Host(), Host()
    return src, src.open(sid), dst, dst.open(sid)


def test_data_within_the_windows_goes_out_at_once_and_is_credited() -> None:
    src, a, dst, b = call()
    dst.send_data(b, b"hello", False, a, 5)
    assert dst.sent() == [(f.DATA, 0, 1, b"hello")]
    assert (b.window, dst.window) == (f.DEFAULT_WINDOW - 5, f.DEFAULT_WINDOW - 5)
    assert a.unacked == 5
    assert src.sent() == []  # credit below half a window is not sent yet


def test_data_beyond_the_window_waits_and_the_source_is_credited_only_as_it_is_sent() -> None:
    _src, a, dst, b = call()
    b.window = 50
    dst.send_data(b, b"x" * 120, True, a, 120)
    assert data_payloads(dst.sent()) == [b"x" * 50]
    assert a.unacked == 50 and dst.blocked
    dst.window_update(1, inc(100))  # the stream window opens; the connection window allows it all
    assert [(k, fl, p) for k, fl, _, p in dst.sent()] == [(f.DATA, f.END_STREAM, b"x" * 70)]
    assert a.unacked == 120 and not dst.blocked and not b.pending
    assert b.ended_out


def test_the_connection_window_blocks_every_stream_until_it_opens() -> None:
    src, dst = Host(), Host()
    a1, b1, a3, b3 = src.open(1), dst.open(1), src.open(3), dst.open(3)
    dst.window = 10
    dst.send_data(b1, b"a" * 10, False, a1, 10)
    dst.send_data(b3, b"b" * 10, False, a3, 10)
    assert data_payloads(dst.sent()) == [b"a" * 10]
    dst.window_update(0, inc(4))
    assert data_payloads(dst.sent()) == [b"b" * 4]
    dst.window_update(0, inc(100))
    assert data_payloads(dst.sent()) == [b"b" * 6]
    assert (a1.unacked, a3.unacked) == (10, 10)


def test_trailers_wait_behind_data_that_waits_for_window() -> None:
    _src, a, dst, b = call()
    b.window = 0
    dst.send_data(b, b"body", False, a, 4)
    dst.send_headers(b, b"\x88", True)  # :status 200, as a stand-in block
    assert dst.sent() == []
    dst.window_update(1, inc(4))
    assert [k for k, *_ in dst.sent()] == [f.DATA, f.HEADERS]
    assert b.ended_out


def test_stream_credit_is_returned_in_batches_of_half_a_window() -> None:
    src, a, _dst, _b = call()
    src.credit(a, STREAM_WINDOW // 2 - 1)
    assert src.sent() == []
    src.credit(a, 1)
    assert src.sent() == [(f.WINDOW_UPDATE, 0, 1, (STREAM_WINDOW // 2).to_bytes(4, "big"))]
    assert a.recv == 3 * STREAM_WINDOW // 2  # what the peer may now send on it


def test_a_finished_stream_gets_no_stream_credit() -> None:
    src, a, _dst, _b = call()
    a.ended_in = True
    src.credit(a, STREAM_WINDOW)
    assert a.unacked == 0 and src.sent() == []


def test_the_connection_window_is_credited_all_at_once() -> None:
    src = Host()
    src.recv_window, src.conn_unacked = 100, 900
    src.credit_connection()
    assert src.sent() == [(f.WINDOW_UPDATE, 0, 0, (900).to_bytes(4, "big"))]
    assert (src.recv_window, src.conn_unacked) == (1000, 0)


def test_dropping_what_waits_returns_its_credit_to_its_source() -> None:
    _src, a, dst, b = call()
    b.window = 0
    dst.send_data(b, b"z" * 30, False, a, 30)
    dst.reset_pending(b)
    assert not b.pending and not dst.blocked and a.unacked == 30
    dst.window_update(1, inc(100))
    assert dst.sent() == []


def test_a_change_of_the_initial_window_moves_every_stream_window() -> None:
    _src, a, dst, b = call()
    dst.peer_initial = b.window = 0
    dst.send_data(b, b"q" * 8, False, a, 8)
    assert dst.sent() == []
    dst.initial_window(8)
    assert data_payloads(dst.sent()) == [b"q" * 8]
    assert dst.open(3).window == 8  # new streams start with it
    dst.initial_window(0)
    assert b.window == -8  # a window may go negative (RFC 9113 6.9.2)


def test_a_window_update_of_the_wrong_size_or_of_zero_is_refused() -> None:
    host = Host()
    with pytest.raises(f.ProtocolError, match="wrong size") as err:
        host.window_update(0, b"\0\0\1")
    assert err.value.code == f.FRAME_SIZE_ERROR
    with pytest.raises(f.ProtocolError, match="WINDOW_UPDATE of 0 on stream 3"):
        host.window_update(3, inc(0))


@pytest.mark.parametrize("update", [
    lambda host: host.window_update(0, inc(f.MAX_WINDOW)),
    lambda host: host.window_update(1, inc(f.MAX_WINDOW)),
    lambda host: host.initial_window(f.MAX_WINDOW + 1),
])
def test_a_window_over_the_maximum_is_a_flow_control_error(update: object) -> None:
    host = Host()
    host.open(1)
    with pytest.raises(f.ProtocolError) as err:
        update(host)  # type: ignore[operator]
    assert err.value.code == f.FLOW_CONTROL_ERROR


def test_data_waits_while_the_output_is_full_and_goes_once_it_is_written() -> None:
    _src, a, dst, b = call()
    b.window = dst.window = 10 * STREAM_WINDOW
    dst.out_bytes = dst.limits.write_buffer_bytes - 10  # output the peer has not read yet
    dst.send_data(b, b"y" * 100, False, a, 100)
    assert [len(p) for p in data_payloads(dst.sent())] == [10]  # what fits
    assert b.pending and a.unacked == 10
    assert dst.starved  # Flusher.flush drains the blocked legs once `out` is written ...
    dst.starved = False  # ... as it does here (sent() emptied `out`)
    dst.drain_blocked()
    assert data_payloads(dst.sent()) == [b"y" * 90] and a.unacked == 100


def test_a_paused_peer_is_sent_no_data_and_its_source_is_not_credited() -> None:
    _src, a, dst, b = call()
    dst.paused = True
    dst.send_data(b, b"x", False, a, 1)
    assert dst.sent() == [] and b.pending and a.unacked == 0


# -- through a peer's frame loop --------------------------------------------------------------


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
