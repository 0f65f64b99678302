"""HTTP/2 frames and the bits of gRPC-over-HTTP/2 the relay reads. Pure: no sockets.

RFC 9113 (HTTP/2) for frames and settings; gRPC's PROTOCOL-HTTP2.md for grpc-timeout,
grpc-status, grpc-message and the 5-byte message prefix.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable
from urllib.parse import quote

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY_FRAME, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY = 0x4, 0x8, 0x20

# Settings identifiers
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, \
    MAX_HEADER_LIST_SIZE = range(1, 7)

# Error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, \
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, \
    ENHANCE_YOUR_CALM, INADEQUATE_SECURITY, HTTP_1_1_REQUIRED = range(14)

DEFAULT_WINDOW = 65_535
DEFAULT_FRAME_SIZE = 16_384
MAX_WINDOW = 2**31 - 1
LARGEST_FRAME_SIZE = 2**24 - 1


class ProtocolError(Exception):
    """The peer broke HTTP/2: the connection ends with GOAWAY carrying code."""

    def __init__(self, message: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (len(payload).to_bytes(3, "big") + bytes((kind, flags))
            + stream.to_bytes(4, "big") + payload)


def settings_frame(settings: Iterable[tuple[int, int]]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in settings))


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    if len(payload) % 6:
        raise ProtocolError(f"SETTINGS payload of {len(payload)} bytes", FRAME_SIZE_ERROR)
    return [struct.unpack_from(">HI", payload, i) for i in range(0, len(payload), 6)]


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, increment.to_bytes(4, "big"))


def rst_stream(stream: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream, code.to_bytes(4, "big"))


def goaway(last_stream: int, code: int = NO_ERROR, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, last_stream.to_bytes(4, "big") + code.to_bytes(4, "big") + debug)


def header_frames(stream: int, block: bytes, end_stream: bool, max_frame: int) -> bytes:
    """A header block as HEADERS plus CONTINUATION frames no larger than max_frame."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return frame(HEADERS, flags | END_HEADERS, stream, block)
    parts = [block[i:i + max_frame] for i in range(0, len(block), max_frame)]
    out = [frame(HEADERS, flags, stream, parts[0])]
    out += [frame(CONTINUATION, 0, stream, p) for p in parts[1:-1]]
    out.append(frame(CONTINUATION, END_HEADERS, stream, parts[-1]))
    return b"".join(out)


def literal_header(name: str, value: str) -> bytes:
    """One header field as an HPACK "literal without indexing, new name" (RFC 7541 6.2.2), no
    Huffman coding: it can be appended to any header block without touching a table."""
    raw_name, raw_value = name.encode(), value.encode()
    return b"\0" + _hpack_length(len(raw_name)) + raw_name + _hpack_length(len(raw_value)) \
        + raw_value


def _hpack_length(n: int) -> bytes:
    """A string length: a 7-bit prefix integer with the Huffman bit clear (RFC 7541 5.1)."""
    if n < 127:
        return bytes((n,))
    out = bytearray((127,))
    n -= 127
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def strip_padding(flags: int, payload: bytes, kind: str) -> bytes:
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise ProtocolError(f"{kind} frame padding longer than its payload")
    return payload[1:len(payload) - payload[0]]


# -- gRPC ---------------------------------------------------------------------------------------

_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_timeout(value: str) -> float:
    """grpc-timeout ("100m", "5S", ...) in seconds; ValueError when malformed."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        raise ValueError(f"malformed grpc-timeout {value!r}: expected 1-8 digits and a unit "
                         "(H, M, S, m, u, n)")
    return int(digits) * unit


def format_timeout(seconds: float) -> str:
    """The shortest exact-or-longer grpc-timeout for seconds (rounded up, as grpc does)."""
    micros = max(1, int(-(-seconds * 1_000_000 // 1)))
    for unit, scale in (("u", 1), ("m", 1000), ("S", 1_000_000), ("M", 60_000_000)):
        value = -(-micros // scale)
        if value < 100_000_000:
            return f"{value}{unit}"
    return f"{min(-(-micros // 3_600_000_000), 99_999_999)}H"


def encode_message(text: str) -> str:
    """grpc-message is percent-encoded UTF-8 (printable ASCII except % passes)."""
    return quote(text, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")


class MessageFraming:
    """Follows gRPC's length-prefixed messages across DATA frames to find oversized ones."""

    __slots__ = ("_header", "_left", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._left = 0  # bytes of the current message still to come
        self._header = b""  # a prefix split across frames

    def feed(self, data: bytes) -> int | None:
        """Consume one DATA payload; the announced length of a message over the limit, if one
        starts in it."""
        n = len(data)
        if not self._left and not self._header and n >= 5:  # the usual case: whole messages
            length = int.from_bytes(data[1:5], "big")
            if length > self.limit:
                return length
            if n == 5 + length:
                return None
        pos = 0
        while pos < n:
            if self._left:
                step = min(self._left, n - pos)
                self._left -= step
                pos += step
                continue
            need = 5 - len(self._header)
            self._header += data[pos:pos + need]
            pos += need
            if len(self._header) < 5:
                return None
            length = int.from_bytes(self._header[1:5], "big")
            self._header = b""
            if length > self.limit:
                return length
            self._left = length
        return None
