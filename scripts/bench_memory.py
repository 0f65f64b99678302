#!/usr/bin/env python3
"""Memory of a sidecar holding many endpoints and many idle client connections.

Registers ENDPOINTS instances (fake loopback addresses, never called) in a fresh registry, starts
one client-only sidecar (--workers WORKERS, default 1) that follows them, opens CONNECTIONS idle
HTTP/2 connections to its outbound port (client preface + SETTINGS, then nothing), and reads
the resident memory (VmRSS, and VmHWM, the peak) of the sidecar's processes from /proc, summed.

  python scripts/bench_memory.py [--endpoints 1000] [--connections 1000] [--workers 1] [--json F]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh import procs
from grpcmesh.admin import admin_get
from grpcmesh.registry.client import RegistryClient

# The HTTP/2 client preface and an empty SETTINGS frame: what an idle gRPC client sends.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def rss_mb(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) in MB of pid and its children (the --workers processes)."""
    pids = [pid] + [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                    for c in (task / "children").read_text().split()]
    rss = peak = 0.0
    for p in pids:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{p}/status").read_text()
                      .splitlines() if ":" in line)
        rss += int(fields["VmRSS"].split()[0]) / 1024
        peak += int(fields["VmHWM"].split()[0]) / 1024
    return rss, peak


async def main_async(args: argparse.Namespace) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.connections + 512)), hard))
    daemons: list[procs.Daemon] = []
    writers: list[asyncio.StreamWriter] = []
    try:
        registry = await procs.start("registry", "registry", "--listen", "127.0.0.1:0")
        daemons.append(registry)
        reg = registry.addresses["registry"]
        client = RegistryClient([reg])
        for i in range(args.endpoints):
            await client.call("Register", pb.RegisterRequest(ttl_seconds=3600, instance=pb.Instance(
                service=f"svc-{i % 50}", instance_id=f"i{i}",
                address=f"127.0.{1 + i // 250}.{1 + i % 250}:9", proto_services=[f"p{i % 50}.S"],
                health=pb.SERVING)))
        await client.close()
        sidecar = await procs.start("sidecar", "--log-level", "WARNING", "sidecar", "--service",
                                    "mem", "--registry", reg, "--outbound", "127.0.0.1:0",
                                    "--admin", "127.0.0.1:0", "--workers",
                                    str(args.workers))
        daemons.append(sidecar)
        pid = sidecar.proc.pid
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            body = await admin_get(sidecar.addresses["admin"], "/endpoints")
            if sum(len(s["endpoints"]) for s in body["services"].values()) == args.endpoints:
                break
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError("the sidecar did not learn every endpoint")
        with_endpoints = rss_mb(pid)[0]
        host, _, port = sidecar.addresses["outbound"].rpartition(":")
        for _ in range(args.connections):
            _reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(PREFACE)
            writers.append(writer)
        await asyncio.gather(*(w.drain() for w in writers))
        await asyncio.sleep(2)
        rss, peak = rss_mb(pid)
        result = {"endpoints": args.endpoints, "connections": len(writers),
                  "workers": args.workers,
                  "rss_mb_with_endpoints": round(with_endpoints, 1),
                  "rss_mb_with_connections": round(rss, 1), "peak_rss_mb": round(peak, 1),
                  "target_mb": 200}
        print(f"sidecar RSS ({args.workers} process{'es' if args.workers > 1 else ''}): "
              f"{with_endpoints:.1f} MB with {args.endpoints} endpoints; "
              f"{rss:.1f} MB with {len(writers)} idle connections too (peak {peak:.1f} MB; "
              "target < 200 MB)")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2))
        return 0
    finally:
        for writer in writers:
            writer.close()
        await procs.stop_all(daemons)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1, help="the sidecar's --workers")
    parser.add_argument("--json", type=Path, default=Path("bench-results/memory.json"))
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
