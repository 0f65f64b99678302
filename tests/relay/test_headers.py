"""Header blocks (headers.py, blocks.py) as plain objects: joined from HEADERS and CONTINUATION
frames, decoded by the HPACK policy, cached once accepted. No sockets, no event loop."""
from __future__ import annotations

import hpack
import pytest

from grpcmesh.relay import frames as f
from grpcmesh.relay.blocks import BlockCache
from grpcmesh.relay.headers import BlockAssembly, HeaderBlocks
from grpcmesh.relay.limits import Abuse, FrameGuard, RelayLimits
from tests.relay.fakes import pair

HEADERS = [(":path", "/pkg.S/M"), ("x-k", "v")]


def test_blocks_are_verbatim_once_the_peer_applied_table_size_zero() -> None:
    blocks = HeaderBlocks(BlockCache())
    indexing = hpack.Encoder()  # uses the dynamic table, as a peer may before our SETTINGS
    assert blocks.decode(indexing.encode(HEADERS)) == (HEADERS, False)  # re-encoded
    assert blocks.decoder.header_table.dynamic_entries  # the block indexed its headers
    blocks.acked = True  # the peer acknowledged our SETTINGS_HEADER_TABLE_SIZE=0 ...
    assert blocks.decode(indexing.encode(HEADERS)) == (HEADERS, False)  # ... but not shown it
    indexing.header_table_size = 0  # the peer applies it: its next block says so
    assert blocks.decode(indexing.encode(HEADERS)) == (HEADERS, True)
    assert blocks.verbatim and not blocks.decoder.header_table.dynamic_entries
    assert blocks.decode(indexing.encode(HEADERS)) == (HEADERS, True)


def test_a_peer_that_keeps_its_table_after_the_ack_has_every_block_re_encoded() -> None:
    blocks = HeaderBlocks(BlockCache())
    blocks.acked = True
    ignoring = hpack.Encoder()  # never applies our SETTINGS_HEADER_TABLE_SIZE=0
    for value in ("a", "b", "a"):
        headers = [(":path", "/pkg.S/M"), ("x-k", value)]
        assert blocks.decode(ignoring.encode(headers)) == (headers, False)
    assert not blocks.verbatim


def test_a_peer_that_announces_a_table_after_emptying_it_is_refused() -> None:
    blocks = HeaderBlocks(BlockCache())
    blocks.acked = True
    peer = hpack.Encoder()
    peer.header_table_size = 0
    blocks.decode(peer.encode([(":path", "/pkg.S/M")]))
    assert blocks.verbatim
    peer.header_table_size = 4096  # against our setting
    with pytest.raises(hpack.HPACKError):  # which the frame loop answers with COMPRESSION_ERROR
        blocks.decode(peer.encode([(":path", "/pkg.S/M")]))


def test_only_a_verbatim_peers_blocks_are_kept() -> None:
    cache = BlockCache()
    blocks = HeaderBlocks(cache)
    block = hpack.Encoder().encode(HEADERS)
    blocks.keep(block, HEADERS)  # its blocks may refer to its table: they mean nothing alone
    assert len(cache) == 0
    blocks.verbatim = True
    blocks.keep(block, HEADERS)
    assert cache.get(block) == HEADERS


def test_blocks_are_encoded_without_huffman_coding_or_a_table() -> None:
    blocks = HeaderBlocks(BlockCache())
    block = blocks.encode([("grpc-status", "0"), ("grpc-message", "x" * 1000)])
    assert b"x" * 1000 in block  # literal: hpack's Huffman encoder is quadratic in a value
    assert hpack.Decoder().decode(block) == [("grpc-status", "0"), ("grpc-message", "x" * 1000)]
    assert blocks.encode([("grpc-status", "0")]) == blocks.encode([("grpc-status", "0")])


def test_the_block_cache_is_bounded_in_bytes_and_keeps_the_newest() -> None:
    cache = BlockCache(limit=2000, max_block=100)
    headers = [(":path", "/pkg.S/M")]
    for n in range(50):
        cache.accept(b"block-%d" % n, headers)
    assert cache.bytes <= 2000 and 0 < len(cache) < 50
    assert cache.get(b"block-49") == headers and cache.get(b"block-0") is None
    cache.accept(b"x" * 101, headers)  # over max_block: never kept
    assert cache.get(b"x" * 101) is None


def test_a_verbatim_peers_block_is_decoded_until_accepted_then_read_from_the_cache() -> None:
    _flusher, src, _ts, _dst, _td = pair()
    src.data_received(f.frame(f.SETTINGS, f.ACK, 0))
    assert src.blocks.acked
    encoder = hpack.Encoder()
    encoder.header_table_size = 0
    first = encoder.encode(HEADERS)  # carries the size update
    assert src.read_block(first, need=False) == (HEADERS, True)  # decoded all the same
    assert src.fresh and src.blocks.verbatim
    block = encoder.encode(HEADERS)
    assert src.read_block(block, need=False) == (None, True) and not src.fresh
    got, verbatim = src.read_block(block)
    assert got == HEADERS and verbatim and src.fresh
    again, _ = src.read_block(block)
    assert again is not got and again == got  # not accepted yet (keep): decoded again
    assert again is not None
    src.keep(block, again)
    assert not src.fresh
    cached, _ = src.read_block(block)
    assert cached is again and not src.fresh  # accepted once, then cached


def assembly() -> BlockAssembly:
    return BlockAssembly(FrameGuard(RelayLimits(max_continuation_frames=3), now=0.0))


def test_a_block_is_joined_from_headers_and_continuations() -> None:
    joined = assembly()
    assert joined.frame(f.HEADERS, 5, f.END_STREAM, b"ab") is None
    assert joined.frame(f.CONTINUATION, 5, 0, b"cd") is None
    assert joined.frame(f.CONTINUATION, 5, f.END_HEADERS, b"ef") == (5, True, b"abcdef")
    assert joined.partial is None
    padded = bytes([2]) + b"\0" * 5 + b"gh" + b"\0\0"  # padding, then a priority
    assert joined.frame(f.HEADERS, 7, f.END_HEADERS | f.PADDED | f.PRIORITY, padded) == (
        7, False, b"gh")


@pytest.mark.parametrize(("frames", "error"), [
    ([(f.CONTINUATION, 1, b"x")], "CONTINUATION without its HEADERS"),
    ([(f.HEADERS, 1, b"x"), (f.CONTINUATION, 3, b"x")], "CONTINUATION without its HEADERS"),
    ([(f.HEADERS, 1, b"x"), (f.HEADERS, 3, b"x")], "HEADERS while a header block"),
    ([(f.HEADERS, 1, b"x")] + [(f.CONTINUATION, 1, b"x")] * 4, "more than 3 CONTINUATION"),
])
def test_a_broken_header_block_is_a_protocol_error(frames: list[tuple[int, int, bytes]],
                                                   error: str) -> None:
    joined = assembly()
    with pytest.raises(f.ProtocolError, match=error):
        for kind, sid, payload in frames:
            joined.frame(kind, sid, 0, payload)


def test_empty_header_frames_count_toward_the_empty_frame_limit() -> None:
    joined = BlockAssembly(FrameGuard(RelayLimits(max_empty_frames=2), now=0.0))
    joined.frame(f.HEADERS, 1, 0, b"")
    joined.frame(f.CONTINUATION, 1, 0, b"")
    with pytest.raises(Abuse, match="more than 2 empty frames"):
        joined.frame(f.CONTINUATION, 1, 0, b"")
