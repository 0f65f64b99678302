"""A raw HTTP/2 client for abuse tests: frames written as bytes (so that a test can send what a
well-behaved client never would) over an asyncio connection, and the server's frames parsed."""
from __future__ import annotations

import asyncio

import hpack

from grpcmesh.relay import frames as f

Frame = tuple[int, int, int, bytes]  # kind, flags, stream, payload


def parse_frames(data: bytes) -> tuple[list[Frame], bytes]:
    """Whole frames in data, and what is left of a frame not yet complete."""
    out: list[Frame] = []
    pos = 0
    while len(data) - pos >= 9:
        length = int.from_bytes(data[pos:pos + 3], "big")
        if len(data) - pos < 9 + length:
            break
        out.append((data[pos + 3], data[pos + 4], int.from_bytes(data[pos + 5:pos + 9], "big"),
                    data[pos + 9:pos + 9 + length]))
        pos += 9 + length
    return out, data[pos:]


def request_headers(path: str, content_type: str = "application/grpc",
                    extra: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    return [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "mesh"),
            ("content-type", content_type), ("te", "trailers"), *(extra or [])]


def grpc_message(body: bytes) -> bytes:
    return b"\0" + len(body).to_bytes(4, "big") + body


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.frames: list[Frame] = []
        self.reset = False  # the server reset the connection (TCP RST)
        self._rest = b""

    @classmethod
    async def connect(cls, address: str, settings: list[tuple[int, int]] | None = None,
                      preface: bool = True) -> RawClient:
        host, _, port = address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        client = cls(reader, writer)
        if preface:
            writer.write(f.PREFACE + f.settings_frame(settings or []))
        return client

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def headers(self, sid: int, headers: list[tuple[str, str]], end: bool = False) -> bytes:
        block = self.encoder.encode(headers, huffman=False)
        return f.header_frames(sid, block, end, f.DEFAULT_FRAME_SIZE)

    @staticmethod
    def data(sid: int, payload: bytes, end: bool = False) -> bytes:
        """DATA frames of at most the default frame size."""
        size = f.DEFAULT_FRAME_SIZE
        parts = [payload[i:i + size] for i in range(0, len(payload), size)] or [b""]
        return b"".join(f.frame(f.DATA, f.END_STREAM if end and i == len(parts) - 1 else 0,
                                sid, part) for i, part in enumerate(parts))

    async def read(self, timeout: float = 5.0, until_closed: bool = False) -> list[Frame]:
        """Frames that arrive within timeout (all of them, or those before the first read
        that brings at least one when not until_closed)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        got: list[Frame] = []
        while loop.time() < end:
            try:
                data = await asyncio.wait_for(self.reader.read(1 << 16), end - loop.time())
            except TimeoutError:
                break
            except ConnectionError:
                self.reset = True
                break
            if not data:
                break
            frames, self._rest = parse_frames(self._rest + data)
            got += frames
            if got and not until_closed:
                break
        self.frames += got
        return got

    async def answer(self, sid: int, timeout: float = 5.0) -> list[tuple[str, str]]:
        """The last header block the server sends on sid (its trailers), once the stream ends
        (END_STREAM or RST_STREAM) within timeout."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not any(stream == sid and (kind == f.RST_STREAM or flags & f.END_STREAM)
                      for kind, flags, stream, _ in self.frames):
            if loop.time() >= end or not await self.read(end - loop.time()):
                raise AssertionError(f"stream {sid} did not end within {timeout}s")
        return self.decoded(sid)[-1]

    async def closed(self, timeout: float = 5.0) -> bool:
        """Whether the server closes the connection within timeout (reading what it sends)."""
        await self.read(timeout, until_closed=True)
        return self.reader.at_eof() or self.reset

    def goaway(self) -> int | None:
        codes = [int.from_bytes(p[4:8], "big") for k, _, _, p in self.frames if k == f.GOAWAY]
        return codes[-1] if codes else None

    def decoded(self, sid: int) -> list[list[tuple[str, str]]]:
        """The header blocks the server sent on sid, decoded (HEADERS only: our blocks fit)."""
        out = []
        for kind, _, stream, payload in self.frames:
            if kind == f.HEADERS:
                headers = [(str(k), str(v)) for k, v in self.decoder.decode(payload)]
                if stream == sid:
                    out.append(headers)
        return out

    def close(self) -> None:
        self.writer.transport.abort()
