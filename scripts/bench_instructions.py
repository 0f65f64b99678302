#!/usr/bin/env python3
"""What each per-call feature of the relay costs, in instructions per call, side by side.

CPU time per call on this shared 2-core machine moves by 10-30% from run to run, which hides
the few percent a feature costs. `valgrind --tool=callgrind` counts instructions instead: the
same code and load give the same count whatever else the machine does. For each variant, a relay
runs in-process under callgrind in front of the example app while a separate client process
makes sequential unary calls (100 B) through it; the relay's count is taken for two numbers of
calls, and the difference divided by the difference in calls is its cost per call (start-up
cancels out). Variants:

  base          the relay, no interceptor, no mesh config, calls without a deadline
  deadline      calls with a grpc-timeout (the relay's own deadline timer per call)
  interceptor   one no-op interceptor in the chain (--interceptor grpcmesh.example.noop:factory)
  config        scripts/bench_proxy.py's SECTION_3_CONFIG applied (a 90/10 split, timeouts, a
                fault rule at 0%)
  outlier       base plus services.echo.outlier: the sidecar's outlier observer reads each
                call's end record (a sidecar registers it only while some service has the rule)
  retry         services.echo.retry {methods: all}: each call gets its policy and a budget
                deposit, and its response headers wait for the first message (commit.py)
  hedge         services.echo.hedge {delay: 1s, methods: all}: each call gets its hedge timer
                (none fires: the calls take well under 1 s)
  access_log    base plus --access-log to a file: a JSON line per call, made on the loop and
                written by its thread (both counted)
  window        base plus the sidecar's last-minute window for /stat (grpcmesh stat), which
                every sidecar keeps: each call's end record counted per service and endpoint
  metrics       base plus what --metrics (the default) turns on: the metrics observer
                (grpcmesh/telemetry/counters.py) and the /stat window (window.py); the relay
                builds each call's end record for them, and both count it

Targets (issue 10): interceptor <= 1.05x base; config <= 1.1x base; (issue 12) metrics
<= 1.1x base. Prints a table, writes JSON,
says PASS or MISS, exits 1 on a MISS. Needs valgrind (apt-get install -y valgrind); about 20 s
per run, two runs per variant.

  python scripts/bench_instructions.py [--calls 500,2500] [--json bench-results/instructions.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = ("base", "deadline", "interceptor", "config", "outlier", "retry", "hedge",
            "access_log", "window", "metrics")
RULES = {"retry": "services:\n  echo:\n    retry: {methods: all}\n",
         "hedge": "services:\n  echo:\n    hedge: {delay: 1s, methods: all}\n"}
TARGETS = {"interceptor": 1.05, "config": 1.10, "metrics": 1.10}

# The relay under measurement (run as `bench_instructions.py --relay VARIANT APP CALLS`).


async def relay_main(variant: str, app: str, calls: int) -> None:
    from grpcmesh.balance.pool import Pool
    from grpcmesh.config import parse_text
    from grpcmesh.interceptors import Interceptor
    from grpcmesh.registry.model import Health, Instance
    from grpcmesh.relay.relay import Relay
    from grpcmesh.routing import Target
    from scripts.bench_proxy import SECTION_3_CONFIG

    pool = Pool("echo")
    pool.upsert(Instance("echo", "a", app, health=Health.SERVING, labels=(("version", "v1"),)))
    target = Target("echo", (pool,))
    relay = Relay(lambda path, override: target,
                  interceptors=[Interceptor()] if variant == "interceptor" else ())
    if variant == "config":
        relay.set_config(parse_text(SECTION_3_CONFIG))
    if variant in RULES:
        relay.set_config(parse_text(RULES[variant]))
    if variant == "outlier":
        from grpcmesh.clock import MonotonicClock
        from grpcmesh.resilience.ejection import Ejections

        ejections = Ejections({"echo": pool}.get, MonotonicClock())
        ejections.configure(parse_text("services:\n  echo:\n    outlier: {}\n"))
        relay.observers.append(ejections.observe)
    access_log = None
    if variant == "access_log":
        from grpcmesh.clock import MonotonicClock
        from grpcmesh.telemetry.access_log import AccessLog

        access_log = AccessLog(os.path.join(tempfile.mkdtemp(), "access.log"), MonotonicClock())
        relay.observers.append(access_log.observer("outbound"))
    if variant == "window":
        from grpcmesh.telemetry.window import Window

        relay.observers.append(Window().observer("outbound"))
    if variant == "metrics":
        from grpcmesh.telemetry.counters import CallCounters

        known = {"/grpcmesh.example.v1.Echo/Unary": True}  # (the sidecar: RouteTable.method)
        relay.observers.append(CallCounters("outbound", known.get).observe)
        from grpcmesh.telemetry.window import Window

        relay.observers.append(Window().observer("outbound"))
    port = relay.bind("127.0.0.1:0", "bench")
    await relay.start()
    client = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--client", f"127.0.0.1:{port}", str(calls),
        "10" if variant == "deadline" else "none")
    await client.wait()
    await relay.stop(None)
    if access_log is not None:
        access_log.close()


async def client_main(target: str, calls: int, timeout: str) -> None:
    import grpc

    from generated.grpcmesh.example.v1 import echo_pb2, echo_pb2_grpc

    seconds = None if timeout == "none" else float(timeout)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        request = echo_pb2.EchoRequest(message="x" * 100)
        for _ in range(calls):
            await stub.Unary(request, timeout=seconds)


def count(variant: str, app: str, calls: int) -> int:
    """Instructions the relay process executed for calls calls (start-up included)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
             __file__, "--relay", variant, app, str(calls)],
            check=False, capture_output=True, text=True, timeout=600, cwd=ROOT,
            # A fixed hash seed: str hashes (so dict and set layouts) are the same every run
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"})
        found = re.search(r"Collected : (\d+)", run.stderr)
        if run.returncode != 0 or found is None:
            raise RuntimeError(f"{variant}: valgrind failed\n{run.stderr[-2000:]}")
        return int(found.group(1))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--relay":
        import uvloop
        uvloop.run(relay_main(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        asyncio.run(client_main(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", default="500,2500",
                        type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        type=lambda s: s.split(","))
    parser.add_argument("--json", type=Path, default=Path("bench-results/instructions.json"))
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install -y valgrind", file=sys.stderr)
        return 2
    low, high = args.calls
    app = subprocess.Popen([sys.executable, "-m", "grpcmesh", "example-server", "--listen",
                            "127.0.0.1:0"], stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert app.stdout is not None
        address = json.loads(app.stdout.readline())["app"]
        per_call = {}
        for variant in args.variants:
            a, b = count(variant, address, low), count(variant, address, high)
            per_call[variant] = (b - a) / (high - low)
            print(f"{variant:12} {per_call[variant]:10.0f} instructions per call", flush=True)
    finally:
        app.terminate()
        app.wait(10)
    base = per_call.get("base")
    rows, misses = [], []
    print(f"\n{'VARIANT':12} {'INSTR/CALL':>10} {'X BASE':>7}  TARGET")
    for variant, value in per_call.items():
        ratio = value / base if base else float("nan")
        limit = TARGETS.get(variant)
        verdict = "" if limit is None else ("PASS" if ratio <= limit else "MISS")
        if verdict == "MISS":
            misses.append(variant)
        print(f"{variant:12} {value:10.0f} {ratio:7.3f}  "
              f"{'' if limit is None else f'<= {limit:.2f}x {verdict}'}")
        rows.append({"variant": variant, "instructions_per_call": round(value),
                     "ratio_to_base": round(ratio, 4), "target": limit, "result": verdict})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"calls": args.calls, "rows": rows}, indent=2))
    print(f"\nwrote {args.json}; {'MISS: ' + ', '.join(misses) if misses else 'PASS'}")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
