"""What an instance costs the registry's memory: the store, the view that follows it (with both
histories of recent changes) and the serialized snapshot, for a typical sidecar's registration.
scripts/bench_registry.py measures the same on a real process (its RSS); issue 13's target is
2 KiB per instance."""
from __future__ import annotations

import asyncio
import gc
import tracemalloc

import pytest

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh.registry.limits import RegistryLimits
from grpcmesh.registry.model import Event, Instance, Lease, Method
from grpcmesh.registry.server import local_store
from grpcmesh.registry.service import RegistryService
from grpcmesh.registry.view import View, follow

COUNT = 3000


def registration(i: int) -> pb.Instance:
    """As in scripts/bench_registry.py: one proto service, two methods, two labels."""
    proto = f"shop.v1.S{i % 100}"
    host = f"10.0.{i // 256 % 256}.{i % 256}"
    return pb.Instance(service=f"svc-{i % 100}", instance_id=f"i{i}", address=f"{host}:8080",
                       proto_services=[proto], labels={"version": "v1", "zone": f"z{i % 3}"},
                       admin_address=f"{host}:15000", health=pb.SERVING,
                       methods=[pb.Method(path=f"/{proto}/Get"), pb.Method(path=f"/{proto}/Put")])


def test_instances_share_their_names_and_carry_no_attribute_dict() -> None:
    a, b = (Instance.from_proto(registration(i)) for i in (0, 100))
    assert a.service is b.service and a.proto_services[0] is b.proto_services[0]
    assert a.labels[0][1] is b.labels[0][1] and a.methods[0].path is b.methods[0].path
    for value in (a, a.methods[0], Event(a.health, 1), Lease(1, 10.0, 0.0)):
        assert not hasattr(value, "__dict__"), type(value)
    assert isinstance(a.methods[0], Method)


@pytest.mark.asyncio
async def test_the_registry_holds_an_instance_in_under_2_kib() -> None:
    store = local_store(warmup=0, limits=RegistryLimits(max_instances=COUNT + 10))
    await store.open()
    view = View(store.store_id, store.limits)
    service = RegistryService(store, view)
    listed = asyncio.Event()
    following = asyncio.get_running_loop().create_task(follow(store, view, listed))
    try:
        await listed.wait()
        registrations = [registration(i) for i in range(COUNT)]
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for msg in registrations:
                await store.register(Instance.from_proto(msg), 3600)
            assert await view.wait_for(store.state.revision, 5)
            service.snapshot()
            gc.collect()
            per_instance = (tracemalloc.get_traced_memory()[0] - before) / COUNT
        finally:
            tracemalloc.stop()
        assert len(view.instances()) == COUNT
        assert per_instance <= 2048, f"{per_instance:.0f} bytes per instance"
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        service.close()
        await store.close()
