#!/usr/bin/env python3
"""How many lease renewals per second etcd takes from one Python process, two ways: as
EtcdStore.keep_alive does it today (a LeaseKeepAlive stream opened for one request and one
reply, CONCURRENCY of them in flight), and over one long-lived LeaseKeepAlive stream with
CONCURRENCY requests in flight (as etcd's Go client multiplexes every lease on one stream).

A 3-member etcd on this machine (tests/etcd.py), LEASES leases of 3600 s, DURATION s each way.
The figure that matters is the ratio: this process's CPU is part of both (the table shows
its share of one core and etcd's, summed over the members). For docs/scaling.md: 100k
sidecars with ttl 10 s renew every ttl/3, about 30,000 renewals/s.

  python scripts/bench_etcd_keepalive.py [--leases 1000] [--concurrency 64] [--duration 3] \
      [--json bench-results/etcd_keepalive.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from aetcd import rpc  # type: ignore[import-untyped]

from grpcmesh.output import table
from scripts.bench_registry import CpuMeter
from tests.etcd import EtcdCluster


async def one_shot(stub: Any, leases: list[int], concurrency: int, duration: float) -> int:
    """EtcdStore.keep_alive's way: a stream per renewal."""
    done = 0
    stop = time.monotonic() + duration

    async def worker(k: int) -> None:
        nonlocal done
        i = k
        while time.monotonic() < stop:
            async for reply in stub.LeaseKeepAlive(iter([rpc.LeaseKeepAliveRequest(
                    ID=leases[i % len(leases)])]), timeout=5):
                assert reply.TTL > 0
                break
            done += 1
            i += concurrency

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return done


async def streamed(stub: Any, leases: list[int], concurrency: int, duration: float) -> int:
    """One stream for every renewal, concurrency requests in flight."""
    window = asyncio.Semaphore(concurrency)
    stop = time.monotonic() + duration

    async def requests() -> AsyncIterator[Any]:
        i = 0
        while time.monotonic() < stop:
            await window.acquire()
            yield rpc.LeaseKeepAliveRequest(ID=leases[i % len(leases)])
            i += 1

    done = 0
    call = stub.LeaseKeepAlive(requests())
    async for reply in call:
        assert reply.TTL > 0
        done += 1
        window.release()
        if time.monotonic() >= stop:
            call.cancel()
            break
    return done


async def main_async(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-etcd-keepalive-"))
    cluster = EtcdCluster(tmp, 3).start()
    results: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    try:
        async with grpc.aio.insecure_channel(f"ipv4:{cluster.endpoints}", options=[
                ("grpc.lb_policy_name", "round_robin")]) as channel:
            stub = rpc.LeaseStub(channel)
            leases = [(await stub.LeaseGrant(rpc.LeaseGrantRequest(TTL=3600))).ID
                      for _ in range(args.leases)]
            pids = {f"etcd-{m.name}": m.process.pid for m in cluster.members
                    if m.process is not None}
            for name, way in (("one-shot stream per renewal (EtcdStore today)", one_shot),
                              ("one long-lived stream", streamed)):
                meter = CpuMeter(pids).start()
                start = time.monotonic()
                count = await way(stub, leases, args.concurrency, args.duration)
                elapsed = time.monotonic() - start
                cpu = meter.stop()
                results[name] = {"renewals_per_s": round(count / elapsed),
                                 "client_cpu_pct": cpu["client"],
                                 "etcd_cpu_pct": round(sum(v for k, v in cpu.items()
                                                           if k.startswith("etcd-")
                                                           and not k.endswith("_wait")), 1)}
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    results["load_after"] = os.getloadavg()[0]
    print(f"etcd lease renewals from one Python process ({args.concurrency} in flight, "
          f"{args.leases} leases, 3 members; load {results['load_before']:.2f} -> "
          f"{results['load_after']:.2f})")
    print(table(["way", "renewals/s", "client cpu%", "etcd cpu% (3 members)"],
                [[k, v["renewals_per_s"], v["client_cpu_pct"], v["etcd_cpu_pct"]]
                 for k, v in results.items() if isinstance(v, dict)]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": {k: v for k, v in vars(args).items()
                                                      if k != "json"},
                                         "results": results}, indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leases", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--json", type=Path, default=Path("bench-results/etcd_keepalive.json"))
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
