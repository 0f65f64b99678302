"""Many Watch streams from a process of their own, for tests/integration/test_registry_scale.py:
`python -m tests.watchers ADDRESS COUNT` opens COUNT streams over 10 channels, reads each one's
first snapshot (all its parts) and prints one JSON line: the instances in each snapshot. With
`--stall` each reads one message only, prints how many did, and reads no more until its stdin
closes: watchers that take their snapshot slowly (or never), as an attacker's might.

In their own process the watchers' work (parsing hundreds of MB) does not delay the test's
own calls, whose latency is what the test measures."""
from __future__ import annotations

import asyncio
import json
import sys

import grpc

from generated.grpcmesh.registry.v1 import registry_pb2 as pb

WATCH = f"/{pb.DESCRIPTOR.services_by_name['Registry'].full_name}/Watch"


async def first_snapshot(call: grpc.aio.UnaryStreamCall) -> int:
    count = 0
    while True:
        data = await call.read()
        if data is grpc.aio.EOF:
            return -1
        part = pb.WatchEvent.FromString(data)
        count += len(part.instances)
        if not part.more:
            return count


async def main(address: str, count: int, stall: bool) -> None:
    channels = [grpc.aio.insecure_channel(address) for _ in range(10)]
    watch = [channel.unary_stream(WATCH, request_serializer=pb.WatchRequest.SerializeToString)
             for channel in channels]  # no deserializer: the parts as bytes
    calls = [watch[i % len(watch)](pb.WatchRequest()) for i in range(count)]
    if stall:
        first = await asyncio.wait_for(asyncio.gather(*(c.read() for c in calls)), 60)
        print(json.dumps({"stalled": sum(m is not grpc.aio.EOF for m in first)}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    else:
        counts = await asyncio.wait_for(asyncio.gather(*(first_snapshot(c) for c in calls)), 60)
        print(json.dumps({"counts": counts}), flush=True)
    for call in calls:
        call.cancel()
    for channel in channels:
        await channel.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), "--stall" in sys.argv[3:]))
