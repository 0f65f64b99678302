#!/usr/bin/env python3
"""A prototype of forwarding below the call layer: an HTTP/2 frame relay on uvloop, a reference
configuration of scripts/bench_proxy.py (`h2relay`). Not part of the product.

Each client stream is mapped to a stream on one shared upstream connection. The relay reads
every frame header (9 bytes), rewrites stream ids, and copies DATA payloads untouched; it
decodes a request's header block only to read `:path`, which is where a mesh would route and
pick an endpoint per call. The trick that keeps it cheap: it advertises
SETTINGS_HEADER_TABLE_SIZE=0 to both peers, so once a peer has acknowledged that, its header
blocks use no dynamic table and can be forwarded byte for byte, without re-encoding. Blocks sent
before that are decoded and, if they touched the dynamic table, re-encoded.

Prototype limits (why it is a measurement, not a feature): one upstream; flow control is
"advertise huge windows and ignore the peers'" (fine for small messages, wrong for large ones);
no deadline, status or balancer bookkeeping; errors close the connection.

  python scripts/h2_relay.py LISTEN UPSTREAM   (prints {"proxy": "HOST:PORT"} when ready)
"""
from __future__ import annotations

import asyncio
import struct
import sys
from typing import Any, cast

import hpack
import uvloop
from reference_proxy import announce_until_signal

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0, 1, 3, 4, 6, 7, 8, 9)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
BIG_WINDOW = 2**31 - 1
# SETTINGS: HEADER_TABLE_SIZE=0, ENABLE_PUSH=0, INITIAL_WINDOW_SIZE=2^31-1; then a connection
# window as large as allowed.
OUR_SETTINGS = struct.pack(">HIHIHI", 1, 0, 2, 0, 4, BIG_WINDOW)
HELLO = (struct.pack(">I", len(OUR_SETTINGS))[1:] + bytes([SETTINGS, 0]) + b"\0\0\0\0"
         + OUR_SETTINGS + b"\0\0\x04" + bytes([WINDOW_UPDATE, 0]) + b"\0\0\0\0"
         + struct.pack(">I", BIG_WINDOW - 65535))
REFILL_AT = 1 << 30


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(
        ">I", stream) + payload


class Peer(asyncio.Protocol):
    """One HTTP/2 connection: frame parsing, SETTINGS/PING/window upkeep, HPACK state."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.out: list[bytes] = []
        self.decoder = hpack.Decoder()
        self.encoder = hpack.Encoder()
        self.encoder.header_table_size = 0  # what we send them uses no dynamic table either
        self.acked = False  # the peer applied our SETTINGS: its blocks need no dynamic table
        self.consumed = 0
        self.partial: tuple[int, int, bytearray] | None = None  # HEADERS awaiting CONTINUATION
        self.expect_preface = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        if self.expect_preface:
            if len(buf) < 24:
                return
            if bytes(buf[:24]) != PREFACE:
                self.close()
                return
            self.expect_preface = False
            pos = 24
        n = len(buf)
        while n - pos >= 9:
            length = int.from_bytes(buf[pos:pos + 3], "big")
            end = pos + 9 + length
            if end > n:
                break
            kind, flags = buf[pos + 3], buf[pos + 4]
            stream = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            payload = bytes(buf[pos + 9:end])
            pos = end
            if kind == DATA:
                self.consumed += length
                self.on_data(stream, flags, payload)
            elif kind == HEADERS or kind == CONTINUATION:
                self.on_header_frame(kind, stream, flags, payload)
            elif kind == RST_STREAM:
                self.on_reset(stream, payload)
            elif kind == SETTINGS:
                if flags & ACK:
                    self.acked = True
                else:
                    self.out.append(frame(SETTINGS, ACK, 0, b""))
            elif kind == PING:
                if not flags & ACK:
                    self.out.append(frame(PING, ACK, 0, payload))
            elif kind == GOAWAY:
                self.close()
                return
            # WINDOW_UPDATE and PRIORITY: ignored (see the module's limits)
        del buf[:pos]
        if self.consumed > REFILL_AT:
            self.out.append(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.consumed)))
            self.consumed = 0
        self.flush()
        self.after_read()

    def on_header_frame(self, kind: int, stream: int, flags: int, payload: bytes) -> None:
        if kind == HEADERS:
            if flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            if flags & PRIORITY:
                payload = payload[5:]
            self.partial = (stream, flags & END_STREAM, bytearray(payload))
        elif self.partial is not None:
            self.partial[2].extend(payload)
        if flags & END_HEADERS and self.partial is not None:
            stream, end_stream, block = self.partial
            self.partial = None
            self.on_headers(stream, end_stream, bytes(block))

    def read_block(self, block: bytes, decode: bool) -> tuple[Any, bool]:
        """(headers if decoded, whether the block can be forwarded as it is)."""
        table = self.decoder.header_table
        if self.acked and not table.dynamic_entries:
            return (self.decoder.decode(block) if decode else None), True
        headers = self.decoder.decode(block)
        return headers, not table.dynamic_entries

    def flush(self) -> None:
        if self.out and self.transport is not None:
            self.transport.write(b"".join(self.out))
            self.out.clear()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # Filled in by the two sides.
    def on_data(self, stream: int, flags: int, payload: bytes) -> None: ...
    def on_headers(self, stream: int, end_stream: int, block: bytes) -> None: ...
    def on_reset(self, stream: int, payload: bytes) -> None: ...
    def after_read(self) -> None: ...


class Upstream(Peer):
    def __init__(self) -> None:
        super().__init__()
        self.next_id = 1
        self.streams: dict[int, tuple[Downstream, int]] = {}  # our id -> (client, its id)
        self.dirty: set[Downstream] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.out.append(PREFACE + HELLO)
        self.flush()

    def open(self, client: Downstream, client_id: int) -> int:
        sid = self.next_id
        self.next_id += 2
        self.streams[sid] = (client, client_id)
        return sid

    def on_data(self, stream: int, flags: int, payload: bytes) -> None:
        entry = self.streams.get(stream)
        if entry is not None:
            entry[0].out.append(frame(DATA, flags, entry[1], payload))
            self.dirty.add(entry[0])

    def on_headers(self, stream: int, end_stream: int, block: bytes) -> None:
        headers, verbatim = self.read_block(block, decode=False)
        entry = self.streams.get(stream)
        if entry is None:
            return
        client, cid = entry
        if not verbatim:
            assert headers is not None
            block = client.encoder.encode(headers)
        client.out.append(frame(HEADERS, END_HEADERS | end_stream, cid, block))
        self.dirty.add(client)
        if end_stream:  # trailers: the call is over
            del self.streams[stream]
            client.streams.pop(cid, None)

    def on_reset(self, stream: int, payload: bytes) -> None:
        entry = self.streams.pop(stream, None)
        if entry is not None:
            entry[0].out.append(frame(RST_STREAM, 0, entry[1], payload))
            entry[0].streams.pop(entry[1], None)
            self.dirty.add(entry[0])

    def after_read(self) -> None:
        for client in self.dirty:
            client.flush()
        self.dirty.clear()


class Downstream(Peer):
    def __init__(self, upstream: Upstream) -> None:
        super().__init__()
        self.upstream = upstream
        self.streams: dict[int, int] = {}  # client id -> upstream id
        self.expect_preface = True
        self.paths = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.out.append(HELLO)
        self.flush()

    def on_headers(self, stream: int, end_stream: int, block: bytes) -> None:
        headers, verbatim = self.read_block(block, decode=True)
        assert headers is not None
        path = next((v for k, v in headers if k == ":path"), None)  # a mesh routes on this
        if path is not None:
            self.paths += 1
        up = self.upstream
        sid = up.open(self, stream)
        self.streams[stream] = sid
        if not verbatim:
            block = up.encoder.encode(headers)
        up.out.append(frame(HEADERS, END_HEADERS | end_stream, sid, block))

    def on_data(self, stream: int, flags: int, payload: bytes) -> None:
        sid = self.streams.get(stream)
        if sid is not None:
            self.upstream.out.append(frame(DATA, flags, sid, payload))

    def on_reset(self, stream: int, payload: bytes) -> None:
        sid = self.streams.pop(stream, None)
        if sid is not None:
            self.upstream.out.append(frame(RST_STREAM, 0, sid, payload))
            self.upstream.streams.pop(sid, None)

    def after_read(self) -> None:
        self.upstream.flush()


async def main(listen: str, upstream_address: str) -> None:
    loop = asyncio.get_running_loop()
    host, _, port = upstream_address.rpartition(":")
    _, upstream = await loop.create_connection(Upstream, host, int(port))
    lhost, _, lport = listen.rpartition(":")
    server = await loop.create_server(lambda: Downstream(upstream), lhost, int(lport))
    await announce_until_signal(lhost, server.sockets[0].getsockname()[1])
    server.close()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], sys.argv[2]))
