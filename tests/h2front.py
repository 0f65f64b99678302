"""A front for an external service in the tests: it takes HTTP/2 connections (over TLS, with
ALPN, if given a context), records the SNI and each request's :authority, and passes the bytes
to a plaintext upstream (an example app) and back. grpcio servers cannot show :authority
(grpc/grpc#38906), so this is how a test sees what reached "the outside"."""
from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import cast

import hpack

from grpcmesh.relay import frames as f
from tests.h2raw import parse_frames


class Front:
    def __init__(self, upstream: str, tls: ssl.SSLContext | None = None) -> None:
        self.upstream = upstream
        self.tls = tls
        self.authorities: list[str] = []
        self.server_names: list[str | None] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        if self.tls is not None:
            self.tls.sni_callback = lambda _obj, name, _ctx: self.server_names.append(name)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, _, port = self.upstream.rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.gather(self._pipe(reader, up_writer, hpack.Decoder()),
                                 self._pipe(up_reader, writer, None))
        except (ConnectionError, asyncio.CancelledError, ssl.SSLError):
            pass
        finally:
            self._tasks.discard(task)
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    decoder: hpack.Decoder | None) -> None:
        """Copy bytes; from the client (decoder given), read its request headers too."""
        rest, preface = b"", decoder is not None
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
            if decoder is None:
                continue
            rest += data
            if preface:
                if len(rest) < len(f.PREFACE):
                    continue
                rest, preface = rest[len(f.PREFACE):], False
            frames, rest = parse_frames(rest)
            for kind, flags, _, payload in frames:
                if kind == f.HEADERS:  # (the relay sends no padding, priority, CONTINUATION)
                    headers = dict(cast(list[tuple[str, str]], decoder.decode(payload)))
                    if ":authority" in headers:
                        self.authorities.append(headers[":authority"])
        writer.close()
