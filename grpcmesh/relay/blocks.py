"""Decoded header blocks, shared by every connection of a process. Pure: no sockets.

A block from a peer whose HPACK table is empty (see headers.py) refers to nothing outside itself,
so the same bytes always decode to the same headers, whoever sent them: most calls repeat the
blocks of earlier ones and need no decoding. The cache is bounded in bytes, holds only blocks
the relay accepted (a rejected block is never kept: an attacker sending new blocks that are
refused cannot fill it), and only small ones (large blocks are rare and cheap to miss).
"""
from __future__ import annotations

Headers = list[tuple[str, str]]

_ENTRY_OVERHEAD = 200  # dict slot, list and tuple objects, per block
_HEADER_OVERHEAD = 120  # two str objects and a tuple, per header


class BlockCache:
    __slots__ = ("_sizes", "blocks", "bytes", "limit", "max_block")

    def __init__(self, limit: int = 4 << 20, max_block: int = 4096) -> None:
        self.limit = limit
        self.max_block = max_block
        self.blocks: dict[bytes, Headers] = {}  # read it directly: a lookup per call
        self._sizes: dict[bytes, int] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.blocks)

    def get(self, block: bytes) -> Headers | None:
        return self.blocks.get(block)

    def accept(self, block: bytes, headers: Headers) -> None:
        """block decoded to headers and was accepted: keep it, oldest out first (FIFO)."""
        if len(block) > self.max_block or block in self.blocks:
            return
        size = _ENTRY_OVERHEAD + 2 * len(block) + sum(
            len(k) + len(v) + _HEADER_OVERHEAD for k, v in headers)
        blocks, sizes = self.blocks, self._sizes
        while blocks and self.bytes + size > self.limit:
            oldest = next(iter(blocks))
            del blocks[oldest]
            self.bytes -= sizes.pop(oldest)
        if size <= self.limit:
            blocks[block] = headers
            sizes[block] = size
            self.bytes += size
