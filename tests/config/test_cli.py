"""`grpcmesh config check FILE`: exit status and output format (offline, through main())."""
from __future__ import annotations

from pathlib import Path

import pytest

from grpcmesh.cli import main

from .support import EXAMPLE


def test_valid_file_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(EXAMPLE)
    assert main(["config", "check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == (f"{path}: ok: 1 service, 1 external service, 2 subsets, 2 routes, 1 fault, "
                   "1 rate limit\n")
    assert err == ""


def test_invalid_file_prints_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(EXAMPLE.replace("to: {stable: 90, canary: 10}", "to: {stable: -5}")
                    .replace("UNAVAILABLE", "UNAVAILABLE_")
                    .replace("  orders:", "  orders:\n    retry: {attempts: 6}"))
    assert main(["config", "check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == (f"{path}:3: services.orders.retry.attempts: attempts must be a whole "
                        "number from 1 to 5 (total attempts, the first one included; gRFC A6 "
                        "caps them at 5), got 6")
    assert lines[1] == (f"{path}:14: services.orders.routes[1].to: weights must be positive "
                        "numbers, got -5 for 'stable'")
    assert lines[2].startswith(f"{path}:18: services.orders.faults[0].abort.code: "
                               "'UNAVAILABLE_' is not a gRPC status name")
    assert len([line for line in lines if ": warning: " not in line]) == 3


def test_warnings_do_not_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("services:\n  orders:\n    routes:\n      - {}\n      - {timeout: 1s}\n")
    assert main(["config", "check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.endswith("; 1 warning\n")
    assert err.startswith(f"{path}:5: warning: services.orders.routes[1]: never applies")


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(tmp_path / "none.yaml")]) == 1
    assert capsys.readouterr().err == (f"grpcmesh config: cannot read {tmp_path / 'none.yaml'}"
                                       ": No such file or directory\n")
