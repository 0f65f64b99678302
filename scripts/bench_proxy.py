#!/usr/bin/env python3
"""The data path's cost, side by side: direct, a bare grpc.aio proxy (the floor of a call-level
proxy, which was grpcmesh's first data path), grpcmesh (outbound on the frame relay; the same
with unknown method kinds; the same with one no-op interceptor in the chain, the cost of the
chain; the same with issue 10's section-3 mesh config applied, the cost of the rules; the same
with --no-metrics, against which outbound shows the cost of metrics; the full mesh hop
outbound + inbound), the bare
proxy on asyncio's own loop instead of uvloop (`bare-asyncio`, not run by default), nginx and
HAProxy when installed, and `tcp`, a TCP splice on uvloop (scripts/tcp_proxy.py): the floor of
Python I/O, not a mesh proxy.

One backend (the example Echo service, grpc.aio), one load generator (this process, raw bytes),
the same for every configuration; repetitions interleave the configurations so drift hits them
alike. Workloads: unary and bidirectional streaming (ping-pong on long-lived streams), at 1 and
32 calls in flight, with 100-byte and 64 KiB messages. For each: calls (or messages) per second,
p50, p99, and the proxy processes' CPU time per call from /proc (user + system), with ratios to
direct; medians over the repetitions. Writes JSON.

  python scripts/bench_proxy.py [--reps 3] [--duration 4] [--json bench-results/proxy.json]
  python scripts/bench_proxy.py --configs outbound --kinds unary --sizes 100 --concurrency 32 \
      --sidecar-workers 1,2,3 --connections 6 [--proxy-cpus 1]      # the --workers curve

nginx and HAProxy come from Debian: `apt-get install -y nginx-light haproxy`. The script writes
their configs and runs them on loopback ports in the foreground (one worker / thread each, like
one sidecar process); configurations whose binary is missing are skipped and say so.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from generated.grpcmesh.example.v1 import echo_pb2
from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh import procs
from grpcmesh.admin import admin_get
from grpcmesh.registry.client import RegistryClient

ECHO = "grpcmesh.example.v1.Echo"
CONFIGS = ("direct", "bare", "bare-asyncio", "outbound", "outbound-unknown",
           "outbound-interceptor", "outbound-config", "outbound-no-metrics", "mesh", "nginx",
           "haproxy", "tcp")
# The mesh config of issue 10's section 3 for the backend's service (a split, timeouts, a
# fault rule at 0%): what the rules cost per call (outbound-config against outbound). The
# timeouts are long, so that the benchmark's long-lived streams are not cut.
SECTION_3_CONFIG = """\
services:
  echo:
    timeout: 60s
    max_timeout: 120s
    subsets:
      stable: {version: v1}
      canary: {version: v1}
    routes:
      - match: {method: /grpcmesh.example.v1.Echo/Create, metadata: {x-canary: "1"}}
        to: {canary: 100}
      - match: {method: /grpcmesh.example.v1.Echo/*}
        to: {stable: 90, canary: 10}
        timeout: 60s
    faults:
      - match: {method: /grpcmesh.example.v1.Echo/Unary}
        abort: {code: UNAVAILABLE, percent: 0}
"""
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Workload:
    kind: str  # unary | bidi
    concurrency: int
    size: int

    @property
    def name(self) -> str:
        size = "100B" if self.size < 1024 else f"{self.size // 1024}KiB"
        return f"{self.kind}-c{self.concurrency}-{size}"


@dataclass
class Target:
    name: str
    address: str
    pids: list[int] = field(default_factory=list)  # the proxy processes whose CPU counts


def free_port() -> int:
    """A free port below the ephemeral range (32768+), for servers that need a fixed port."""
    while True:
        port = random.randint(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)
    return total / TICK


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def process_tree(daemon: procs.Daemon) -> list[int]:
    """A sidecar and its --workers processes."""
    return [daemon.proc.pid, *children(daemon.proc.pid)]


async def run_load(address: str, w: Workload, duration: float, connections: int = 1
                   ) -> list[float]:
    """Latencies (s) of every call (unary) or message round trip (bidi) in duration, over
    `connections` client connections (the kernel spreads connections, not calls, over
    --workers processes)."""
    request = echo_pb2.EchoRequest(message="x", payload=b"p" * w.size).SerializeToString()
    latencies: list[float] = []
    options = [("grpc.max_receive_message_length", 8 << 20),
               ("grpc.max_send_message_length", 8 << 20), ("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(connections)]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 10)
        loop = asyncio.get_running_loop()
        end = loop.time() + duration

        async def unary_worker(channel: grpc.aio.Channel) -> None:
            call = channel.unary_unary(f"/{ECHO}/Unary")
            while loop.time() < end:
                t = time.perf_counter()
                await call(request, timeout=10)
                latencies.append(time.perf_counter() - t)

        async def bidi_worker(channel: grpc.aio.Channel) -> None:
            stream = channel.stream_stream(f"/{ECHO}/BidiStream")(timeout=duration + 10)
            while loop.time() < end:
                t = time.perf_counter()
                await stream.write(request)
                await stream.read()
                latencies.append(time.perf_counter() - t)
            await stream.done_writing()
            await stream.read()

        worker = unary_worker if w.kind == "unary" else bidi_worker
        await asyncio.gather(*(worker(channels[i % connections])
                               for i in range(w.concurrency)))
    finally:
        for channel in channels:
            await channel.close()
    return latencies


async def start_targets(args: argparse.Namespace, tmp: Path, daemons: list[procs.Daemon],
                        others: list[asyncio.subprocess.Process]) -> list[Target]:
    backend = await procs.start("backend", "example-server", "--listen", "127.0.0.1:0")
    daemons.append(backend)
    app = backend.addresses["app"]
    targets = [Target("direct", app)]
    wanted = set(args.configs)

    async def registry_with(instance: pb.Instance | None, config: str = "") -> str:
        registry = await procs.start("registry", "registry", "--listen", "127.0.0.1:0")
        daemons.append(registry)
        address = registry.addresses["registry"]
        client = RegistryClient([address])
        if instance is not None:
            await client.call("Register", pb.RegisterRequest(instance=instance, ttl_seconds=0))
        if config:
            await client.call("ApplyConfig", pb.ApplyConfigRequest(text=config.encode(),
                                                                   source="bench"))
        await client.close()
        return address

    async def client_sidecar(registry: str, workers: int, *extra: str) -> procs.Daemon:
        sidecar = await procs.start("sidecar", "--log-level", "WARNING", "sidecar", "--service",
                                    "bench", "--registry", registry, "--outbound",
                                    "127.0.0.1:0", "--admin", "127.0.0.1:0",
                                    "--workers", str(workers), *extra)
        daemons.append(sidecar)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            body = await admin_get(sidecar.addresses["admin"], "/endpoints")
            if any(e["health"] == "SERVING" for info in body["services"].values()
                   for e in info["endpoints"]):
                return sidecar
            await asyncio.sleep(0.1)
        raise RuntimeError("the client sidecar never saw a serving backend")

    async def config_in_force(sidecar: procs.Daemon) -> None:
        deadline = time.monotonic() + 20
        while (await admin_get(sidecar.addresses["admin"], "/config"))["version"] < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the client sidecar never ran the mesh config")
            await asyncio.sleep(0.1)

    for name, script in (("bare", "bare_proxy.py"), ("bare-asyncio", "bare_proxy.py"),
                         ("tcp", "tcp_proxy.py")):
        if name in wanted:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(Path(__file__).parent / script), "127.0.0.1:0", app,
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "BARE_LOOP": "asyncio" if name == "bare-asyncio" else ""})
            others.append(proc)
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            targets.append(Target(name, json.loads(line)["proxy"], [proc.pid]))
    methods = [pb.Method(path=f"/{ECHO}/{name}", client_streaming=cs, server_streaming=ss)
               for name, cs, ss in (("Unary", False, False), ("BidiStream", True, True),
                                    ("ServerStream", False, True),
                                    ("ClientStream", True, False))]
    workers_used = args.sidecar_workers
    curve = len(workers_used) > 1
    noop = ("--interceptor", "grpcmesh.example.noop:factory")
    for name, with_methods, extra in (("outbound", True, ()), ("outbound-unknown", False, ()),
                                      ("outbound-interceptor", True, noop),
                                      ("outbound-config", True, ()),
                                      ("outbound-no-metrics", True, ("--no-metrics",))):
        if name not in wanted:
            continue
        registry = await registry_with(pb.Instance(
            service="echo", instance_id="backend", address=app, proto_services=[ECHO],
            methods=methods if with_methods else [], labels={"version": "v1"}),
            SECTION_3_CONFIG if name == "outbound-config" else "")
        for workers in workers_used if name == "outbound" else workers_used[:1]:
            sidecar = await client_sidecar(registry, workers, *extra)
            if name == "outbound-config":
                await config_in_force(sidecar)
            label = f"{name}-w{workers}" if curve and name == "outbound" else name
            wanted.add(label)
            targets.append(Target(label, sidecar.addresses["outbound"], process_tree(sidecar)))
    if "mesh" in wanted:
        registry = await registry_with(None)
        server = await procs.start("server-sidecar", "--log-level", "WARNING", "sidecar",
                                   "--service", "echo", "--app", app, "--registry", registry,
                                   "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0",
                                   "--admin", "127.0.0.1:0",
                                   "--workers", str(workers_used[0]))
        daemons.append(server)
        sidecar = await client_sidecar(registry, workers_used[0])
        targets.append(Target("mesh", sidecar.addresses["outbound"],
                              process_tree(sidecar) + process_tree(server)))
    if "nginx" in wanted:
        if shutil.which("nginx") is None:
            print("nginx is not installed: skipped (apt-get install -y nginx-light)",
                  file=sys.stderr)
        else:
            port = free_port()
            conf = tmp / "nginx.conf"
            conf.write_text(f"""
worker_processes 1; daemon off; master_process on; pid {tmp}/nginx.pid;
error_log stderr error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_max_body_size 0;
  upstream backend {{ server {app}; keepalive 64; keepalive_requests 100000000; }}
  server {{
    listen 127.0.0.1:{port} http2;
    keepalive_requests 100000000;
    location / {{ grpc_pass grpc://backend; grpc_read_timeout 60s; }}
  }}
}}""")
            proc = await asyncio.create_subprocess_exec("nginx", "-c", str(conf), "-p", str(tmp))
            others.append(proc)
            await asyncio.sleep(0.5)
            targets.append(Target("nginx", f"127.0.0.1:{port}", children(proc.pid)))
    if "haproxy" in wanted:
        if shutil.which("haproxy") is None:
            print("haproxy is not installed: skipped (apt-get install -y haproxy)",
                  file=sys.stderr)
        else:
            port = free_port()
            conf = tmp / "haproxy.cfg"
            conf.write_text(f"""
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:{port} proto h2
  default_backend be
backend be
  server s1 {app} proto h2
""")
            proc = await asyncio.create_subprocess_exec("haproxy", "-f", str(conf), "-db")
            others.append(proc)
            await asyncio.sleep(0.5)
            targets.append(Target("haproxy", f"127.0.0.1:{port}", [proc.pid]))
    targets = [t for t in targets if t.name in wanted]
    if args.proxy_cpus is not None:  # the proxies on their own cores, everything else on the rest
        everything = set(range(os.cpu_count() or 1))
        rest = everything - args.proxy_cpus or everything
        for t in targets:
            for pid in t.pids:
                os.sched_setaffinity(pid, args.proxy_cpus)
        os.sched_setaffinity(backend.proc.pid, rest)
        os.sched_setaffinity(0, rest)
    return targets


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


async def main_async(args: argparse.Namespace) -> int:
    workloads = [Workload(k, c, s) for k in args.kinds for c in args.concurrency
                 for s in args.sizes]
    daemons: list[procs.Daemon] = []
    others: list[asyncio.subprocess.Process] = []
    samples: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmpdir:
        try:
            targets = await start_targets(args, Path(tmpdir), daemons, others)
            for rep in range(args.reps):
                for w in workloads:
                    for t in targets:
                        await run_load(t.address, w, 0.5)  # warm the connections
                        before = cpu_seconds(t.pids)
                        lat = sorted(await run_load(t.address, w, args.duration,
                                                    args.connections))
                        cpu = cpu_seconds(t.pids) - before
                        samples.setdefault((w.name, t.name), []).append({
                            "calls_per_s": len(lat) / args.duration,
                            "p50_ms": 1000 * percentile(lat, 0.5),
                            "p99_ms": 1000 * percentile(lat, 0.99),
                            "cpu_us_per_call": 1e6 * cpu / len(lat) if t.pids else 0.0})
                        print(f"rep {rep + 1}/{args.reps} {w.name:<18} {t.name:<17} "
                              f"{len(lat) / args.duration:8.0f}/s", file=sys.stderr, flush=True)
        finally:
            for proc in others:
                if proc.returncode is None:
                    proc.terminate()
                    await proc.wait()
            await procs.stop_all(daemons)
    rows = []
    for w in workloads:
        direct = statistics.median(s["calls_per_s"] for s in samples[(w.name, "direct")])
        direct_p50 = statistics.median(s["p50_ms"] for s in samples[(w.name, "direct")])
        for name in [t.name for t in targets]:
            if (w.name, name) not in samples:
                continue
            runs = samples[(w.name, name)]
            row = {"workload": w.name, "config": name,
                   **{k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}}
            row["ratio_to_direct"] = round(row["calls_per_s"] / direct, 3)
            row["added_p50_ms"] = round(row["p50_ms"] - direct_p50, 3)
            rows.append(row)
    print(f"\n{'workload':<18}{'config':<18}{'calls/s':>9}{'x direct':>9}{'p50 ms':>8}"
          f"{'+p50':>7}{'p99 ms':>8}{'cpu us/call':>12}")
    for r in rows:
        print(f"{r['workload']:<18}{r['config']:<18}{r['calls_per_s']:>9.0f}"
              f"{r['ratio_to_direct']:>9.2f}{r['p50_ms']:>8.2f}{r['added_p50_ms']:>7.2f}"
              f"{r['p99_ms']:>8.2f}{r['cpu_us_per_call']:>12.0f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: (str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, set)
                        else v) for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=lambda s: s.split(","),
                        default=[c for c in CONFIGS if c != "bare-asyncio"])
    parser.add_argument("--kinds", type=lambda s: s.split(","), default=["unary", "bidi"])
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 32])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[100, 64 * 1024])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sidecar-workers", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1], metavar="N[,N...]",
                        help="--workers for the grpcmesh sidecars (default 1: one process, "
                             "comparable with one nginx worker and one HAProxy thread). A list "
                             "gives one outbound configuration per value (outbound-wN): the "
                             "workers curve")
    parser.add_argument("--proxy-cpus", type=lambda s: {int(x) for x in s.split(",")},
                        default=None, metavar="CPU[,CPU...]",
                        help="pin the proxies to these CPUs and the load generator and backend "
                             "to the others (as taskset would)")
    parser.add_argument("--connections", type=int, default=1,
                        help="client connections the load is spread over (default 1)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per run")
    parser.add_argument("--json", type=Path, default=Path("bench-results/proxy.json"))
    args = parser.parse_args()
    unknown = set(args.configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}: expected {', '.join(CONFIGS)}")
    if "direct" not in args.configs:
        args.configs.insert(0, "direct")  # every ratio is to direct
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
