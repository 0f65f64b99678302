"""The code stays lint-clean (ruff) and strictly typed (mypy --strict), generated/ excepted."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, check=False,
                          capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(240)
def test_ruff() -> None:
    result = run("ruff", "check", "grpcmesh", "scripts", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(240)
def test_mypy_strict() -> None:
    result = run("mypy", "grpcmesh")
    assert result.returncode == 0, result.stdout + result.stderr
