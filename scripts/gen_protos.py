#!/usr/bin/env python3
"""Regenerate generated/ from protos/ with grpcio-tools' bundled protoc.

protoc writes absolute imports (``from grpcmesh.registry.v1 import registry_pb2``) that would
collide with the grpcmesh package, so they are rewritten to live under the ``generated``
package (``from generated.grpcmesh.registry.v1 import registry_pb2``). Proto file names in the
descriptor pool stay ``grpcmesh/registry/v1/registry.proto``, as reflection clients expect.

Usage: python scripts/gen_protos.py [--out DIR]   (default: the repository's generated/)
tests/test_generated.py regenerates into a temporary folder and fails when generated/ is stale.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out: Path) -> list[Path]:
    import grpc_tools
    from grpc_tools import protoc  # imported here so --help works without grpcio-tools

    protos = sorted(PROTOS.rglob("*.proto"))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={out}",
            f"--pyi_out={out}", f"--grpc_python_out={out}"]
    args += [str(p.relative_to(PROTOS)) for p in protos]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed for {', '.join(map(str, protos))}")
    packages = {str(p.parent.relative_to(PROTOS)).replace("/", ".") for p in protos}
    pattern = re.compile(r"^from (" + "|".join(map(re.escape, sorted(packages))) + r") import ",
                         re.MULTILINE)
    written = []
    for path in sorted(out.rglob("*.py*")):
        text = path.read_text()
        path.write_text(pattern.sub(r"from generated.\1 import ", text))
        written.append(path)
    for directory in [out, *sorted(p for p in out.rglob("*") if p.is_dir())]:
        init = directory / "__init__.py"
        init.write_text("" if directory != out else '"""protoc output; regenerate with scripts/gen_protos.py."""\n')
        written.append(init)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "generated",
                        help="output folder (replaced entirely)")
    args = parser.parse_args(argv)
    files = generate(args.out)
    print(f"wrote {len(files)} files to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
