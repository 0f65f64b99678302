"""Header blocks of one connection: joined from their frames, and read and written by the
relay's HPACK policy (RFC 7541): when a peer's blocks can be forwarded byte for byte, decoding
within limits, and encoding. No sockets, no asyncio.

The relay advertises SETTINGS_HEADER_TABLE_SIZE=0. Once a peer acknowledged that and a header
block of its, decoded, showed that it emptied its table, its blocks reference no dynamic table:
they are forwarded byte for byte, and the same block always decodes to the same headers (so
accepted blocks are cached, blocks.py). Blocks before that, and every block of a peer that
ignores the setting, are decoded and re-encoded (without Huffman coding: hpack's encoder is
quadratic in a value's length).
"""
from __future__ import annotations

import hpack

from grpcmesh.relay import frames as f
from grpcmesh.relay.blocks import BlockCache, Headers
from grpcmesh.relay.limits import FrameGuard

__all__ = ["MAX_BLOCK", "MAX_HEADER_LIST", "BlockAssembly", "HeaderBlocks", "Headers",
           "replaced"]

MAX_BLOCK = 256 * 1024  # a header block beyond this ends the connection (ENHANCE_YOUR_CALM)
# Decoded header lists up to this size are read, so that one over the proxy's metadata limit
# fails its call (RESOURCE_EXHAUSTED), not the connection.
MAX_HEADER_LIST = 1 << 20


class HeaderBlocks:
    """One connection's HPACK state: the decoder of the peer's blocks, the encoder of ours.

    Peer.read_block serves a verbatim peer's blocks from the cache and passes every other
    block to decode(), which keeps the decoder's state."""

    __slots__ = ("acked", "cache", "decoder", "encoder", "verbatim")

    def __init__(self, cache: BlockCache) -> None:
        self.cache = cache
        self.decoder = hpack.Decoder(max_header_list_size=MAX_HEADER_LIST)
        self.encoder = hpack.Encoder()
        self.encoder.header_table_size = 0  # what we send uses no dynamic table either
        self.acked = False  # the peer applied our SETTINGS
        self.verbatim = False  # ... and a block of its showed its table emptied: see decode

    def decode(self, block: bytes) -> tuple[Headers, bool]:
        """(the headers; whether the block can be forwarded byte for byte). hpack.HPACKError
        when the block breaks HPACK, or announces a table once the peer's was emptied."""
        decoder = self.decoder
        headers = [(str(k), str(v)) for k, v in decoder.decode(block)]
        if self.verbatim:
            return headers, True
        if self.acked and decoder.header_table.maxsize == 0:
            # The block began with the size update RFC 7541 (4.2) asks for after our SETTINGS:
            # from now on the peer's blocks refer to no dynamic table, and any that announces
            # a table is an error (COMPRESSION_ERROR). A peer that never sends the update keeps
            # having its blocks decoded and re-encoded, which is slower but correct.
            self.verbatim = True
            decoder.max_allowed_table_size = 0
            return headers, True
        return headers, False

    def keep(self, block: bytes, headers: Headers) -> None:
        """block, decoded to headers, was accepted: later copies of it need no decoding (only
        a verbatim peer's blocks mean the same whoever sends them)."""
        if self.verbatim:
            self.cache.accept(block, headers)

    def encode(self, headers: Headers) -> bytes:
        return bytes(self.encoder.encode(headers, huffman=False))


class BlockAssembly:
    """HEADERS and the CONTINUATION frames after it joined into one header block (RFC 9113
    4.3), within the FrameGuard's limits (CONTINUATION chains, empty frames). The frame loop
    checks `partial` against MAX_BLOCK once per read, and that no other frame comes inside it.
    """

    __slots__ = ("guard", "partial")

    def __init__(self, guard: FrameGuard) -> None:
        self.guard = guard
        self.partial: tuple[int, bool, bytearray] | None = None  # (stream, END_STREAM, block)

    def frame(self, kind: int, sid: int, flags: int, payload: bytes
              ) -> tuple[int, bool, bytearray] | None:
        """Add a HEADERS or CONTINUATION frame; the whole block once END_HEADERS came."""
        guard = self.guard
        if kind == f.HEADERS:
            if self.partial is not None:
                raise f.ProtocolError("HEADERS while a header block was unfinished")
            payload = f.strip_padding(flags, payload, "HEADERS")
            if flags & f.PRIORITY:
                payload = payload[5:]
            guard.continuations = 0
            self.partial = (sid, bool(flags & f.END_STREAM), bytearray(payload))
        else:
            if self.partial is None or self.partial[0] != sid:
                raise f.ProtocolError("CONTINUATION without its HEADERS")
            guard.continuation()
            self.partial[2].extend(payload)
        if not payload and not flags & (f.END_HEADERS | f.END_STREAM):
            guard.payload(True)
        elif guard.empty:
            guard.empty = 0
        if flags & f.END_HEADERS:
            whole, self.partial = self.partial, None
            return whole
        return None


def replaced(headers: Headers, name: str, value: str | None) -> Headers:
    """A copy of headers without name, and with name: value last (value None: without it)."""
    out = [h for h in headers if h[0] != name]
    if value is not None:
        out.append((name, value))
    return out
