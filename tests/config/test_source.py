"""Reading a config: its size bound, its encoding, files."""
from __future__ import annotations

from pathlib import Path

from grpcmesh.config import MAX_CONFIG_BYTES, check_file, check_text

from .support import EXAMPLE


def test_oversize_text_is_refused_before_parsing() -> None:
    text = "# " + "x" * MAX_CONFIG_BYTES + "\n"
    report = check_text(text, "big.yaml")
    assert report.lines() == [(f"big.yaml: the file has {len(text)} bytes, more than the "
                              f"{MAX_CONFIG_BYTES} bytes (1 MiB) a config may have")]


def test_oversize_file_is_refused_after_reading_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (3 * MAX_CONFIG_BYTES))
    report = check_file(str(path))
    assert report.lines() == [(f"{path}: the file has {3 * MAX_CONFIG_BYTES} bytes, more than "
                              f"the {MAX_CONFIG_BYTES} bytes (1 MiB) a config may have")]


def test_a_file_of_exactly_the_limit_is_read() -> None:
    text = "services: {}\n"
    text += "#" * (MAX_CONFIG_BYTES - len(text) - 1) + "\n"
    assert check_text(text.encode()).ok


def test_not_utf8_names_the_line() -> None:
    report = check_text(b"services:\n  orders:\n    timeout: \xff2s\n", "f")
    assert report.lines() == ["f:3: not UTF-8 text: byte 0xff cannot be decoded"]


def test_byte_order_mark_is_fine() -> None:
    assert check_text("\ufeff" + EXAMPLE).ok
    assert check_text(("\ufeff" + EXAMPLE).encode()).ok


def test_check_file(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(EXAMPLE.replace("timeout: 2s", "timeout: 2x"))
    report = check_file(str(path))
    assert report.lines() == [
        (f"{path}:4: services.orders.timeout: timeout '2x' is not a duration: expected a number "
        "and a unit: ms, s, m or h (e.g. 250ms, 1.5s, 2m)")]
