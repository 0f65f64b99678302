#!/usr/bin/env python3
"""Issue 13's benchmark: the registry over the memory, SQLite and etcd stores, driven by real
gRPC clients against real `grpcmesh registry` processes.

For each store, fresh processes on 127.0.0.1: one registry (`python -m grpcmesh registry --store
SPEC --warmup 0`, on uvloop as deployed); for etcd a 3-member etcd cluster (tests/etcd.py,
Debian's etcd-server) and two registry replicas, A and B, on it. Then, in order:

1. register: INSTANCES (10,000) leased instances (ttl 3600 s, so no keep-alive is due), from
   this process, CONCURRENCY (64) Register calls in flight over 4 connections, all to A:
   registrations/s, and each call's latency.
2. watchers: WATCHERS (1,000) Watch streams on A, from WATCHER_PROCS (4) processes
   (scripts/registry_watchers.py), each stream on its own connection group, as sidecars'
   are: the time until every one has its whole snapshot.
3. flips: FLIPS (1,000) SetHealth calls on the leases, SERVING and NOT_SERVING in turn, paced
   at FLIP_RATE (20/s), each sent on schedule whether or not the previous one has answered. For
   each flip: from the moment its SetHealth was sent to the moment the LAST of the watchers
   received its UPSERT (the watcher processes stamp receives with time.monotonic(), which is
   one clock for the whole machine): p50 and p99 (nearest rank), and how many flips some
   watcher never received.
4. memory: the registry's RSS (VmRSS of A) after step 1 minus before it, divided by
   INSTANCES (the instances as the registry holds them, in its View and, for memory and
   SQLite, in its store too).
5. keep-alive: KeepAlive calls on the leases, CONCURRENCY in flight, for 3 s: calls/s (on etcd
   each is a LeaseKeepAlive stream the registry opens to etcd for that one renewal).
6. failover (etcd only; one process has no replica to fail over to): kill -9 replica A; each
   watcher moves to B as watch_forever does (the next address, after its backoff) and asks to
   resume after the last revision it applied. From the kill until every watcher has its RESUMED
   (B holds the changes since) or a whole new SNAPSHOT: seconds, and how many took which.

Is it the registry that is measured, not the clients? The table shows the CPU each side used
during each step, as a share of one core (from /proc): the registry is one process on one
event loop, so at ~100% it is the bottleneck; the watcher processes report their event loop's
lag (a 5 ms ticker) over the flips, the most by which they could have stamped a receive late.
The load average is printed before and after each store: the machine has 2 cores and may be
shared with other work.

Targets (issue 13): flip p99 <= 100 ms on memory and <= 250 ms on etcd, at 1,000 watchers;
>= 1,000 registrations/s on memory; <= 2 KiB of registry memory per instance (every store).
PASS or MISS for each; exit status 0 even on a MISS (it is a report), 1 on a crash.

  python scripts/bench_registry.py [--stores memory,sqlite,etcd] [--instances 10000] \
      [--watchers 1000] [--flips 1000] [--quick] [--json bench-results/registry.json]
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from generated.grpcmesh.registry.v1 import registry_pb2_grpc
from grpcmesh import procs
from grpcmesh.output import table

STORES = ("memory", "sqlite", "etcd")
TTL = 3600
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGETS: dict[str, list[tuple[str, str, float]]] = {  # store: (figure, <= or >=, bound)
    "memory": [("flip_p99_ms", "<=", 100), ("registrations_per_s", ">=", 1000),
               ("bytes_per_instance", "<=", 2048)],
    "sqlite": [("bytes_per_instance", "<=", 2048)],
    "etcd": [("flip_p99_ms", "<=", 250), ("bytes_per_instance", "<=", 2048)],
}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of pid (its threads included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_queue_seconds(pid: int) -> float:
    """How long pid's threads waited for a CPU while runnable (/proc/PID/task/*/schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError):  # a thread that just ended
            pass
    return total / 1e9


class CpuMeter:
    """The share of one core that each process used between start() and stop(), and the share
    of the time its threads spent waiting for a CPU (all cores busy: the machine, not the
    process, was the limit)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._cpu: dict[str, float] = {}
        self._wait: dict[str, float] = {}
        self._t = 0.0

    def start(self) -> CpuMeter:
        self._cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._wait = {name: run_queue_seconds(pid) for name, pid in self.pids.items()}
        self._cpu["client"] = time.process_time()
        self._t = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self._t
        now = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        now["client"] = time.process_time()
        out = {name: round(100 * (now[name] - self._cpu[name]) / elapsed, 1) for name in now}
        out.update({f"{name}_wait": round(100 * (run_queue_seconds(pid) - self._wait[name])
                                          / elapsed, 1) for name, pid in self.pids.items()})
        return out


def percentile(values: list[float], p: int) -> float:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * p // 100) - 1)] if ordered else float("nan")


def instance(i: int) -> pb.Instance:
    """A typical sidecar's registration: one proto service, two methods, two labels."""
    proto = f"shop.v1.S{i % 100}"
    return pb.Instance(service=f"svc-{i % 100}", instance_id=f"i{i}",
                       address=f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:8080",
                       proto_services=[proto], labels={"version": "v1", "zone": f"z{i % 3}"},
                       admin_address=f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:15000",
                       methods=[pb.Method(path=f"/{proto}/Get"),
                                pb.Method(path=f"/{proto}/Put")],
                       health=pb.SERVING)


@dataclass
class WatcherProc:
    proc: asyncio.subprocess.Process
    ready: float = 0.0

    async def ask(self, command: str, timeout: float = 60.0) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"a watcher process exited (status {self.proc.returncode})")
        return json.loads(line)


@dataclass
class Run:
    store: str
    args: argparse.Namespace
    tmp: Path
    registries: list[procs.Daemon] = field(default_factory=list)
    watchers: list[WatcherProc] = field(default_factory=list)
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    leases: list[int] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)

    def stubs(self, address: str, count: int = 4) -> list[registry_pb2_grpc.RegistryStub]:
        new = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
               for _ in range(count)]
        self.channels.extend(new)
        return [registry_pb2_grpc.RegistryStub(c) for c in new]

    @property
    def pids(self) -> dict[str, int]:
        return {"registry": self.registries[0].proc.pid}

    async def start_registries(self, spec: str, replicas: int) -> None:
        args = self.args
        for name in "ab"[:replicas]:
            self.registries.append(await procs.start(
                f"registry-{name}", "--log-level", "WARNING", "registry", "--listen",
                "127.0.0.1:0", "--store", spec, "--warmup", "0",
                "--max-instances", str(args.instances + 100),
                "--max-watchers", str(args.watchers + 100), timeout=30))

    async def register(self) -> None:
        args = self.args
        stubs = self.stubs(self.registries[0].addresses["registry"])
        self.leases = [0] * args.instances
        latencies: list[float] = []
        next_i = iter(range(args.instances))

        async def worker(k: int) -> None:
            stub = stubs[k % len(stubs)]
            for i in next_i:
                start = time.monotonic()
                resp = await stub.Register(pb.RegisterRequest(instance=instance(i),
                                                              ttl_seconds=TTL), timeout=30)
                latencies.append(time.monotonic() - start)
                self.leases[i] = resp.lease_id

        await asyncio.sleep(1)
        before = rss_bytes(self.registries[0].proc.pid)
        meter = CpuMeter(self.pids).start()
        start = time.monotonic()
        await asyncio.gather(*(worker(k) for k in range(args.concurrency)))
        elapsed = time.monotonic() - start
        cpu = meter.stop()
        await asyncio.sleep(1)
        after = rss_bytes(self.registries[0].proc.pid)
        self.result.update({
            "registrations_per_s": round(args.instances / elapsed, 1),
            "register_seconds": round(elapsed, 2),
            "register_p50_ms": round(1000 * percentile(latencies, 50), 2),
            "register_p99_ms": round(1000 * percentile(latencies, 99), 2),
            "register_cpu_pct": cpu,
            "rss_before_mb": round(before / 2**20, 1), "rss_after_mb": round(after / 2**20, 1),
            "bytes_per_instance": round((after - before) / args.instances),
        })

    async def start_watchers(self) -> None:
        args = self.args
        addresses = ",".join(r.addresses["registry"] for r in self.registries)
        per = [args.watchers // args.watcher_procs + (k < args.watchers % args.watcher_procs)
               for k in range(args.watcher_procs)]
        meter = CpuMeter(self.pids).start()
        start = time.monotonic()
        for count in per:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "scripts" / "registry_watchers.py"), addresses,
                str(count), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            self.watchers.append(WatcherProc(proc))
        for w in self.watchers:
            assert w.proc.stdout is not None
            line = await asyncio.wait_for(w.proc.stdout.readline(), 300)
            if not line:
                raise RuntimeError("a watcher process exited before its snapshots")
            w.ready = json.loads(line)["ready"]
        self.result["watchers"] = args.watchers
        self.result["all_snapshots_s"] = round(time.monotonic() - start, 2)
        self.result["snapshot_cpu_pct"] = meter.stop()

    async def flips(self) -> None:
        args = self.args
        stub = self.stubs(self.registries[0].addresses["registry"], 1)[0]
        health = [pb.SERVING] * args.instances
        sent: list[tuple[float, int]] = []  # (when sent, revision)
        errors = 0
        pids = {**self.pids, **{f"watchers{k}": w.proc.pid for k, w in enumerate(self.watchers)}}

        async def flip(k: int) -> None:
            nonlocal errors
            i = k % args.instances
            health[i] = pb.NOT_SERVING if health[i] == pb.SERVING else pb.SERVING
            start = time.monotonic()
            try:
                resp = await stub.SetHealth(pb.SetHealthRequest(lease_id=self.leases[i],
                                                                health=health[i]), timeout=30)
            except grpc.aio.AioRpcError:
                errors += 1
                return
            sent.append((start, resp.revision))

        meter = CpuMeter(pids).start()
        start = time.monotonic()
        tasks = []
        for k in range(args.flips):
            await asyncio.sleep(max(0.0, start + k / args.flip_rate - time.monotonic()))
            tasks.append(asyncio.get_running_loop().create_task(flip(k)))
        await asyncio.gather(*tasks)
        await asyncio.sleep(2)  # the last flips' events reach every watcher
        cpu = meter.stop()
        reports = [await w.ask("flips") for w in self.watchers]
        latencies, missed = [], 0
        for when, revision in sent:
            key = str(revision)
            got = sum(r["seen"].get(key, 0) for r in reports)
            if got < args.watchers:
                missed += 1
                continue
            latencies.append(max(r["latest"][key] for r in reports) - when)
        self.result.update({
            "flips": args.flips, "flip_rate": args.flip_rate, "flip_errors": errors,
            "flips_missed": missed,
            "flip_p50_ms": round(1000 * percentile(latencies, 50), 1),
            "flip_p99_ms": round(1000 * percentile(latencies, 99), 1),
            "flip_max_ms": round(1000 * max(latencies, default=float("nan")), 1),
            "flip_cpu_pct": cpu,
            "watcher_lag_max_ms": max(r["lag_max_ms"] for r in reports),
            "watcher_lag_p99_ms": max(r["lag_p99_ms"] for r in reports),
        })

    async def keep_alives(self, seconds: float = 3.0) -> None:
        stubs = self.stubs(self.registries[0].addresses["registry"])
        done = errors = 0
        stop = time.monotonic() + seconds

        async def worker(k: int) -> None:
            nonlocal done, errors
            i = k
            while time.monotonic() < stop:
                try:
                    await stubs[k % len(stubs)].KeepAlive(pb.KeepAliveRequest(
                        lease_id=self.leases[i % len(self.leases)]), timeout=10)
                    done += 1
                except grpc.aio.AioRpcError:
                    errors += 1
                i += self.args.concurrency

        meter = CpuMeter(self.pids).start()
        start = time.monotonic()
        await asyncio.gather(*(worker(k) for k in range(self.args.concurrency)))
        self.result["keepalives_per_s"] = round(done / (time.monotonic() - start), 1)
        self.result["keepalive_errors"] = errors
        self.result["keepalive_cpu_pct"] = meter.stop()

    async def failover(self) -> None:
        killed = self.registries[0]
        killed.kill()
        at = time.monotonic()
        await killed.proc.wait()
        reports = [await w.ask("caught-up 60", timeout=90) for w in self.watchers]
        last = max(r["last"] for r in reports)
        resumed = sum(r["resumed"] for r in reports)
        snapshot = sum(r["snapshot"] for r in reports)
        self.result.update({
            "failover_lost": sum(r["lost"] for r in reports),
            "failover_resumed": resumed, "failover_snapshot": snapshot,
            "failover_catch_up_s": round(last - at, 3)
            if resumed + snapshot == self.args.watchers else None,
        })

    async def close(self) -> None:
        for w in self.watchers:
            if w.proc.stdin is not None:
                w.proc.stdin.close()
        for w in self.watchers:
            try:
                await asyncio.wait_for(w.proc.wait(), 10)
            except TimeoutError:
                w.proc.kill()
                await w.proc.wait()
        for channel in self.channels:
            await channel.close()
        await procs.stop_all(self.registries)


async def run_store(store: str, args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-registry-{store}-"))
    run = Run(store, args, tmp)
    cluster = None
    run.result["load_before"] = [round(x, 2) for x in os.getloadavg()]
    try:
        if store == "etcd":
            from tests.etcd import EtcdCluster

            cluster = EtcdCluster(tmp / "etcd", 3).start()
            await run.start_registries(cluster.url("/bench"), 2)
        else:
            await run.start_registries("memory" if store == "memory"
                                       else f"sqlite:{tmp / 'registry.db'}", 1)
        print(f"[{store}] registering {args.instances} instances", file=sys.stderr)
        await run.register()
        print(f"[{store}] {args.watchers} watchers", file=sys.stderr)
        await run.start_watchers()
        print(f"[{store}] {args.flips} flips at {args.flip_rate:g}/s", file=sys.stderr)
        await run.flips()
        await run.keep_alives()
        if len(run.registries) > 1:
            print(f"[{store}] failover", file=sys.stderr)
            await run.failover()
    finally:
        await run.close()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    run.result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return run.result


def checks(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for store, result in results.items():
        for figure, op, bound in TARGETS[store]:
            value = result.get(figure)
            ok = value is not None and (value <= bound if op == "<=" else value >= bound)
            out.append({"store": store, "target": f"{figure} {op} {bound:g}", "value": value,
                        "ok": ok})
    return out


def report(results: dict[str, dict[str, Any]], targets: list[dict[str, Any]]) -> str:
    def cpu(r: dict[str, Any], step: str) -> str:
        c = r.get(f"{step}_cpu_pct", {})
        return f"{c.get('registry', '-')}/{c.get('registry_wait', '-')}"

    rows = []
    for store, r in results.items():
        fo = (f"{r['failover_catch_up_s']} s ({r['failover_resumed']}R/"
              f"{r['failover_snapshot']}S)" if "failover_resumed" in r else "n/a")
        rows.append([store, r["registrations_per_s"], r["register_p99_ms"], cpu(r, "register"),
                     r["bytes_per_instance"], r["all_snapshots_s"], r["flip_p50_ms"],
                     r["flip_p99_ms"], f"{r['flips_missed']}/{r['flip_errors']}", cpu(r, "flip"),
                     r["watcher_lag_max_ms"], r["keepalives_per_s"], cpu(r, "keepalive"), fo,
                     f"{r['load_before'][0]}/{r['load_after'][0]}"])
    lines = [table(["store", "reg/s", "reg p99 ms", "cpu/wait%", "B/inst", "snapshots s",
                    "flip p50 ms", "flip p99 ms", "missed/err", "cpu/wait%", "client lag ms",
                    "keepalive/s", "cpu/wait%", "failover", "load"], rows), ""]
    for c in targets:
        lines.append(f"  {'PASS' if c['ok'] else 'MISS'}  {c['store']}: {c['target']}: "
                     f"{c['value']}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    results: dict[str, dict[str, Any]] = {}
    for store in args.stores:
        results[store] = await run_store(store, args)
    targets = checks(results)
    print(f"registry benchmark: {args.instances} instances, {args.watchers} watchers in "
          f"{args.watcher_procs} processes, {args.flips} flips at {args.flip_rate:g}/s, "
          f"{os.cpu_count()} cores (cpu%: the registry's share of one core during the step / "
          "the share of the time its threads waited for a CPU (the machine was full); "
          "client lag: the watcher processes' worst event-loop lag during the flips; "
          "failover: R resumed, S took a snapshot; load: 1-min load average before/after)")
    print(report(results, targets))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        args.json.write_text(json.dumps({"settings": settings, "cores": os.cpu_count(),
                                         "results": results, "targets": targets}, indent=2))
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default=",".join(STORES),
                        type=lambda s: [x for x in s.split(",") if x])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--watcher-procs", type=int, default=4)
    parser.add_argument("--flips", type=int, default=1000)
    parser.add_argument("--flip-rate", type=float, default=5.0,
                        help="flips per second (default 5: one every 200 ms, so that each is "
                        "timed on its own; at 1,000 watchers a replica fans out about 20 a "
                        "second with a whole core, and faster rates measure its backlog)")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for a smoke run: 200 instances, 20 watchers in 2 "
                             "processes, 20 flips at 50/s")
    parser.add_argument("--json", type=Path, default=Path("bench-results/registry.json"))
    args = parser.parse_args()
    for store in args.stores:
        if store not in STORES:
            parser.error(f"--stores: {store!r} is not one of {', '.join(STORES)}")
    if args.quick:
        args.instances, args.watchers, args.watcher_procs = 200, 20, 2
        args.flips, args.flip_rate, args.concurrency = 20, 50.0, 16
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
