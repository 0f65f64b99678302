"""HTTP/2 and gRPC framing helpers of the relay: pure functions and objects."""
from __future__ import annotations

import pytest

from grpcmesh.relay import frames as f


@pytest.mark.parametrize(("text", "seconds"), [("100m", 0.1), ("5S", 5.0), ("2M", 120.0),
                                               ("1H", 3600.0), ("250u", 250e-6), ("7n", 7e-9)])
def test_parse_timeout(text: str, seconds: float) -> None:
    assert f.parse_timeout(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "m", "10", "10x", "-1S", "123456789S", "1.5S"])
def test_malformed_timeouts_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="malformed grpc-timeout"):
        f.parse_timeout(text)


@pytest.mark.parametrize("seconds", [1e-7, 0.0015, 0.1, 1.0, 99.9999, 200.0, 1e6, 3e9])
def test_formatted_timeouts_round_up_and_parse_back(seconds: float) -> None:
    text = f.format_timeout(seconds)
    assert len(text) <= 9  # at most 8 digits and a unit
    assert f.parse_timeout(text) >= seconds * (1 - 1e-12)
    assert f.parse_timeout(text) <= max(seconds * 1.01, 1e-6)  # tight, not just long


def test_format_timeout_picks_the_finest_unit_that_fits() -> None:
    assert f.format_timeout(0.0015) == "1500u"
    assert f.format_timeout(200.0) == "200000m"


def test_grpc_message_is_percent_encoded() -> None:
    assert f.encode_message("no route: 100% gone\n") == "no route: 100%25 gone%0A"
    assert f.encode_message("café") == "caf%C3%A9"


def _message(size: int) -> bytes:
    return b"\0" + size.to_bytes(4, "big") + b"x" * size


def test_framing_passes_messages_up_to_the_limit_however_they_are_split() -> None:
    framing = f.MessageFraming(limit=10)
    stream = _message(10) + _message(0) + _message(3)
    assert framing.feed(stream) is None
    for cut in range(1, len(stream)):
        framing = f.MessageFraming(limit=10)
        assert framing.feed(stream[:cut]) is None
        assert framing.feed(stream[cut:]) is None


def test_framing_finds_an_oversized_message_even_with_its_prefix_split() -> None:
    stream = _message(4) + _message(11)
    for cut in range(1, len(stream)):
        framing = f.MessageFraming(limit=10)
        assert (framing.feed(stream[:cut]), framing.feed(stream[cut:])).count(11) == 1


def test_header_frames_split_a_big_block_into_continuations() -> None:
    block = bytes(range(256)) * 160  # 40960 bytes
    data = f.header_frames(7, block, True, 16_384)
    kinds, flags, payload = [], [], b""
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        kinds.append(data[pos + 3])
        flags.append(data[pos + 4])
        assert int.from_bytes(data[pos + 5:pos + 9], "big") == 7
        payload += data[pos + 9:pos + 9 + length]
        pos += 9 + length
    assert kinds == [f.HEADERS, f.CONTINUATION, f.CONTINUATION]
    assert flags == [f.END_STREAM, 0, f.END_HEADERS]
    assert payload == block
    assert f.header_frames(1, b"abc", False, 16_384) == f.frame(f.HEADERS, f.END_HEADERS, 1,
                                                                b"abc")


def test_settings_round_trip_and_bad_sizes_are_refused() -> None:
    data = f.settings_frame([(f.INITIAL_WINDOW_SIZE, 1 << 20), (f.HEADER_TABLE_SIZE, 0)])
    assert f.parse_settings(data[9:]) == [(f.INITIAL_WINDOW_SIZE, 1 << 20),
                                          (f.HEADER_TABLE_SIZE, 0)]
    with pytest.raises(f.ProtocolError):
        f.parse_settings(b"\0" * 7)


def test_a_literal_header_appended_to_a_block_decodes_with_it() -> None:
    import hpack

    block = hpack.Encoder().encode([(":path", "/pkg.S/M")])
    for name, value in (("grpc-timeout", "5000000u"), ("x-long", "v" * 300)):
        headers = hpack.Decoder().decode(block + f.literal_header(name, value))
        assert headers[-1] == (name, value)
