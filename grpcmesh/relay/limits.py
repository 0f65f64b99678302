"""What the relay grants one peer, and the rules that end an abusive connection. Pure: no
sockets, time passed in.

Every client of a sidecar may be hostile. Memory a connection can hold is fixed by these
settings, never by what its peer sends or fails to read (docs/proxy.md, "Limits", gives each
default and why):
- per stream: at most stream_window bytes each way (stream windows are credited end to end);
- per connection: max_concurrent_streams streams, write_buffer_bytes of output (above it the
  relay stops reading that peer and stops crediting what is meant for it), plus
  max_unread_control_bytes of control-frame replies the peer does not read;
- per call: up to retry_buffer_bytes of its request, held until an attempt commits so that it
  can be sent again; all calls together hold at most retry_buffer_total_bytes (past either, a
  call commits at once: it is not retried, and holds nothing);
- per listener: max_connections connections; one without a preface after handshake_timeout, or
  with no stream for idle_timeout, or whose output has not drained for stall_timeout, closes.

The anchors' rules (nginx, Envoy, Go net/http2) are in ../shared/FIELD-NOTES.md; the rapid-reset
rule is Envoy's (premature_reset_total_stream_count and min_stream_lifetime).
"""
from __future__ import annotations

from dataclasses import dataclass

from grpcmesh.relay import frames as f


@dataclass(frozen=True)
class RelayLimits:
    max_concurrent_streams: int = 100  # advertised; streams beyond it are REFUSED_STREAM
    stream_window: int = 256 * 1024  # what a peer may send on a stream before we relay it
    write_buffer_bytes: int = 1 << 20  # output queued for a peer before we stop reading it
    max_unread_control_bytes: int = 128 * 1024  # replies queued while its output is full
    control_frames_burst: int = 10_000  # PING, SETTINGS, PRIORITY and unknown frames ...
    control_frames_per_second: int = 1_000  # ... refilled at this rate
    max_empty_frames: int = 10  # consecutive DATA/HEADERS/CONTINUATION frames with no payload
    max_continuation_frames: int = 64  # CONTINUATION frames in one header block
    reset_min_streams: int = 500  # rapid reset: judged once a connection opened this many
    reset_ratio: float = 0.5  # ... and closed when this share of them was reset early
    reset_min_lifetime: float = 1.0  # a client reset before this many seconds is "early"
    max_path_bytes: int = 2048
    max_connections: int = 4096  # per listener (and per worker)
    handshake_timeout: float = 10.0  # connection preface and SETTINGS
    idle_timeout: float = 3600.0  # a client connection with no stream is closed (GOAWAY)
    stall_timeout: float = 30.0  # output over write_buffer_bytes that does not drain
    listen_backlog: int = 1024
    retry_buffer_bytes: int = 64 * 1024  # request a call holds to send again, until it commits
    retry_buffer_total_bytes: int = 64 << 20  # ... and all calls hold (per listener and worker)

    def __post_init__(self) -> None:
        """ValueError naming the sidecar flag of the first setting out of its range."""
        ranges = {"max_concurrent_streams": (1, 2**31 - 1), "stream_window": (16_384, 2**31 - 1),
                  "write_buffer_bytes": (16_384, 1 << 30),
                  "max_unread_control_bytes": (1_024, 1 << 30),
                  "control_frames_burst": (1, 2**31 - 1),
                  "control_frames_per_second": (1, 2**31 - 1),
                  "max_empty_frames": (0, 2**31 - 1), "max_continuation_frames": (1, 2**31 - 1),
                  "reset_min_streams": (1, 2**31 - 1), "max_path_bytes": (16, 1 << 20),
                  "max_connections": (1, 1 << 24), "listen_backlog": (1, 65_535),
                  "retry_buffer_bytes": (0, 1 << 30), "retry_buffer_total_bytes": (0, 1 << 40)}
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"--{_flag(name)} {value} is out of range: expected "
                                 f"{low}-{high}")
        if not 0 < self.reset_ratio <= 1:
            raise ValueError(f"--reset-ratio {self.reset_ratio}: expected more than 0, at most 1")
        for name in ("reset_min_lifetime", "handshake_timeout", "idle_timeout", "stall_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{_flag(name)} {getattr(self, name)} must be positive")


def _flag(name: str) -> str:
    return name.replace("_", "-")


class Abuse(f.ProtocolError):
    """A peer broke one of the limits: its connection ends with GOAWAY ENHANCE_YOUR_CALM."""

    def __init__(self, message: str) -> None:
        super().__init__(message, f.ENHANCE_YOUR_CALM)


class FrameGuard:
    """Counts the frames that cost us work but carry nothing for a call: empty frames, long
    CONTINUATION chains, and control frames (a token bucket: bursts are fine, floods are not).
    """

    # The counts are public so that the peer's frame loop can reset them without a call per
    # frame (`if guard.empty: guard.empty = 0`; `guard.continuations = 0` at each HEADERS).
    __slots__ = ("_at", "_limits", "_tokens", "continuations", "empty")

    def __init__(self, limits: RelayLimits, now: float) -> None:
        self._limits = limits
        self.empty = 0  # empty frames in a row
        self.continuations = 0  # CONTINUATION frames in the current header block
        self._tokens = float(limits.control_frames_burst)
        self._at = now

    def payload(self, empty: bool) -> None:
        """A DATA, HEADERS or CONTINUATION frame that did not end its stream or block."""
        if not empty:
            self.empty = 0
            return
        self.empty += 1
        if self.empty > self._limits.max_empty_frames:
            raise Abuse(f"more than {self._limits.max_empty_frames} empty frames in a row")

    def headers(self) -> None:
        self.continuations = 0

    def continuation(self) -> None:
        self.continuations += 1
        if self.continuations > self._limits.max_continuation_frames:
            raise Abuse(f"more than {self._limits.max_continuation_frames} CONTINUATION frames "
                        "in one header block")

    def control(self, now: float) -> None:
        limits = self._limits
        tokens = self._tokens + (now - self._at) * limits.control_frames_per_second
        self._at = now
        tokens = min(tokens, limits.control_frames_burst)
        if tokens < 1:
            raise Abuse(f"control frames above {limits.control_frames_per_second}/s "
                        f"(burst {limits.control_frames_burst})")
        self._tokens = tokens - 1


class ResetGuard:
    """Rapid reset (CVE-2023-44487), by Envoy's rule: a client that resets at least reset_ratio
    of its streams within reset_min_lifetime of opening them, once it opened reset_min_streams,
    loses its connection. (Resets that arrive in the same read as their HEADERS never reach an
    app at all: the relay routes a read's calls at its end.)"""

    __slots__ = ("_limits", "opened", "premature")

    def __init__(self, limits: RelayLimits) -> None:
        self._limits = limits
        self.opened = 0
        self.premature = 0

    def open(self) -> None:
        self.opened += 1

    def reset(self, lifetime: float) -> None:
        """The client reset a stream whose response had not ended, after lifetime seconds."""
        if lifetime >= self._limits.reset_min_lifetime:
            return
        self.premature += 1
        limits = self._limits
        if self.opened >= limits.reset_min_streams and \
                self.premature >= limits.reset_ratio * self.opened:
            raise Abuse(f"rapid reset: {self.premature} of {self.opened} streams reset within "
                        f"{limits.reset_min_lifetime:g}s")


def clip(text: str, limit: int = 100) -> str:
    """Untrusted text for a message: at most limit characters, marked when cut."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
