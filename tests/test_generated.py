"""generated/ must be exactly what scripts/gen_protos.py produces from protos/ today."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "generated"


def tree(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under root, ignoring bytecode caches."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_generated_tree_is_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    result = subprocess.run([sys.executable, "scripts/gen_protos.py", "--out", str(out)],
                            check=False, cwd=ROOT, capture_output=True, text=True,
                            timeout=50)
    assert result.returncode == 0, f"gen_protos.py failed:\n{result.stderr}"
    fresh, committed = tree(out), tree(GENERATED)
    assert fresh, "gen_protos.py wrote nothing"
    differing = sorted(
        [f"{name} (missing from generated/)" for name in fresh.keys() - committed.keys()]
        + [f"{name} (not produced by gen_protos.py)" for name in committed.keys() - fresh.keys()]
        + [f"{name} (content differs)" for name in fresh.keys() & committed.keys()
           if fresh[name] != committed[name]])
    assert not differing, ("generated/ is stale: run python scripts/gen_protos.py\n  "
                           + "\n  ".join(differing))
