"""The registry over real gRPC: leases, watch streams, its own health checks of registered apps,
errors, health and reflection of the registry itself, and a restart on a SQLite store.

Every test talks to a RegistryServer on 127.0.0.1 port 0 through the generated stubs.
"""
from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2 as rpb

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from generated.grpcmesh.registry.v1 import registry_pb2_grpc
from grpcmesh.example.server import EchoBehaviour, EchoServer
from grpcmesh.reflection import MethodCatalog, list_services
from grpcmesh.registry.limits import RegistryLimits
from grpcmesh.registry.model import Method
from grpcmesh.registry.server import RegistryServer
from grpcmesh.registry.sqlite_store import SqlitePersistence
from tests.conftest import wait_for

REGISTRY = "grpcmesh.registry.v1.Registry"
SNAPSHOT, UPSERT, DELETE = pb.WatchEvent.SNAPSHOT, pb.WatchEvent.UPSERT, pb.WatchEvent.DELETE
EVENT_TIMEOUT = 3.0
LEASE = 30  # long enough never to expire during a test; keeps the registry's checker away


def instance(service: str = "orders", instance_id: str = "o1", address: str = "127.0.0.1:9001",
             *protos: str, health: int = pb.SERVING, owner: str = "") -> pb.Instance:
    return pb.Instance(service=service, instance_id=instance_id, address=address,
                       proto_services=list(protos), health=health, owner=owner)


@pytest_asyncio.fixture
async def stub(registry: RegistryServer) -> AsyncIterator[registry_pb2_grpc.RegistryStub]:
    async with grpc.aio.insecure_channel(registry.address) as channel:
        yield registry_pb2_grpc.RegistryStub(channel)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port with nothing listening: bound (so nobody else takes it) but not accepting."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


class Watch:
    """One Watch stream; next() returns the next event or fails the test after a timeout."""

    def __init__(self, stub: registry_pb2_grpc.RegistryStub, **filters: str) -> None:
        self.call = stub.Watch(pb.WatchRequest(**filters))

    async def next(self, timeout: float = EVENT_TIMEOUT) -> pb.WatchEvent:
        try:
            msg = await asyncio.wait_for(self.call.read(), timeout)
        except TimeoutError:
            raise AssertionError(f"no watch event within {timeout}s") from None
        assert msg is not grpc.aio.EOF, "the registry ended the watch"
        return msg

    async def until(self, type_: int, instance_id: str, health: int | None = None,
                    timeout: float = EVENT_TIMEOUT) -> pb.WatchEvent:
        """Skip events until one of type_ about instance_id (with that health, if given)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.next(max(0.01, deadline - loop.time()))
            if (event.type == type_ and event.instances[0].instance_id == instance_id
                    and (health is None or event.instances[0].health == health)):
                return event

    async def nothing_for(self, seconds: float) -> None:
        try:
            msg = await asyncio.wait_for(self.call.read(), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected watch event: {msg}")

    def cancel(self) -> None:
        self.call.cancel()


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def health_in(server: RegistryServer, service: str, instance_id: str) -> int:
    inst = server.view.get(service, instance_id)
    return pb.HEALTH_STATUS_UNKNOWN if inst is None else int(inst.health)


async def resolve_ids(stub: registry_pb2_grpc.RegistryStub, service: str) -> list[str]:
    resp = await stub.Resolve(pb.ResolveRequest(service=service), timeout=5)
    return [i.instance_id for i in resp.instances]


# -- 1. leases ------------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_lease_expires_without_keepalive_and_lives_with_it(
        stub: registry_pb2_grpc.RegistryStub) -> None:
    watch = Watch(stub, service="orders")
    try:
        assert (await watch.next()).type == SNAPSHOT
        lapsed = await stub.Register(pb.RegisterRequest(
            instance=instance("orders", "lapsed", "127.0.0.1:9001"), ttl_seconds=1), timeout=5)
        kept = await stub.Register(pb.RegisterRequest(
            instance=instance("orders", "kept", "127.0.0.1:9002"), ttl_seconds=1), timeout=5)
        assert lapsed.lease_id != 0 and kept.lease_id != 0 and lapsed.lease_id != kept.lease_id
        assert (lapsed.ttl_seconds, kept.ttl_seconds) == (1, 1)
        assert await resolve_ids(stub, "orders") == ["kept", "lapsed"]
        resp = await stub.Resolve(pb.ResolveRequest(service="orders"), timeout=5)
        assert {i.instance_id: i.lease_id for i in resp.instances} == {
            "lapsed": lapsed.lease_id, "kept": kept.lease_id}

        async def keep_alive() -> None:
            while True:
                ack = await stub.KeepAlive(pb.KeepAliveRequest(lease_id=kept.lease_id), timeout=5)
                assert ack.ttl_seconds == 1
                await asyncio.sleep(0.25)

        keeper = asyncio.get_running_loop().create_task(keep_alive())
        try:
            gone = await watch.until(DELETE, "lapsed")
            assert gone.reason == f"lease {lapsed.lease_id} expired"
            assert gone.instances[0].lease_id == lapsed.lease_id
            assert await resolve_ids(stub, "orders") == ["kept"]
            # Well past the 1 s TTL of "kept": still there, and no event about it.
            await watch.nothing_for(0.7)
            assert await resolve_ids(stub, "orders") == ["kept"]
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        err = await rpc_error(stub.KeepAlive(pb.KeepAliveRequest(lease_id=lapsed.lease_id)))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert f"lease {lapsed.lease_id} not found" in (err.details() or "")
    finally:
        watch.cancel()


@pytest.mark.asyncio
async def test_leases_still_expire_after_the_warmup_ends_on_an_empty_registry() -> None:
    server = RegistryServer("127.0.0.1:0", check_interval=0.1, warmup=0.2)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            watch = Watch(stub)
            try:
                first = await watch.next()
                assert (first.type, first.partial, list(first.instances)) == (SNAPSHOT, True, [])
                complete = await watch.next()
                assert (complete.type, complete.partial) == (SNAPSHOT, False)
                reg = await stub.Register(pb.RegisterRequest(
                    instance=instance("orders", "o1"), ttl_seconds=1), timeout=5)
                await watch.until(UPSERT, "o1")
                gone = await watch.until(DELETE, "o1")
                assert gone.reason == f"lease {reg.lease_id} expired"
            finally:
                watch.cancel()
    finally:
        await server.stop(0)


# -- 2. watch -------------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_watch_snapshot_then_changes_with_increasing_revisions(
        stub: registry_pb2_grpc.RegistryStub) -> None:
    first = await stub.Register(pb.RegisterRequest(
        instance=instance("orders", "o1", "127.0.0.1:9001", "shop.v1.Orders"), ttl_seconds=30),
        timeout=5)
    watch = Watch(stub)
    try:
        snap = await watch.next()
        assert snap.type == SNAPSHOT
        assert snap.revision == first.revision
        assert [(i.service, i.instance_id, i.health) for i in snap.instances] == [
            ("orders", "o1", pb.SERVING)]
        assert snap.instances[0].owner == "127.0.0.1:9001"  # owner defaults to the address

        second = await stub.Register(pb.RegisterRequest(
            instance=instance("orders", "o2", "127.0.0.1:9002", "shop.v1.Orders"),
            ttl_seconds=30), timeout=5)
        added = await watch.next()
        assert (added.type, added.instances[0].instance_id, added.revision) == (
            UPSERT, "o2", second.revision)

        health = await stub.SetHealth(pb.SetHealthRequest(
            lease_id=second.lease_id, health=pb.NOT_SERVING), timeout=5)
        changed = await watch.next()
        assert (changed.type, changed.instances[0].instance_id, changed.instances[0].health) == (
            UPSERT, "o2", pb.NOT_SERVING)
        assert changed.revision == health.revision

        # Setting the same health again is not a change: no event, same revision.
        same = await stub.SetHealth(pb.SetHealthRequest(
            lease_id=second.lease_id, health=pb.NOT_SERVING), timeout=5)
        assert same.revision == health.revision

        removed = await stub.Deregister(pb.DeregisterRequest(
            service="orders", instance_id="o1", owner="127.0.0.1:9001"), timeout=5)
        deleted = await watch.next()
        assert (deleted.type, deleted.instances[0].instance_id, deleted.reason) == (
            DELETE, "o1", "deregistered")
        assert deleted.revision == removed.revision

        revisions = [snap.revision, added.revision, changed.revision, deleted.revision]
        assert revisions == sorted(set(revisions)), revisions
        listed = await stub.ListServices(pb.ListServicesRequest(), timeout=5)
        assert listed.revision == deleted.revision
    finally:
        watch.cancel()


@pytest.mark.asyncio
async def test_filtered_watch_sees_only_matching_instances(
        stub: registry_pb2_grpc.RegistryStub) -> None:
    await stub.Register(pb.RegisterRequest(
        instance=instance("orders", "o1", "127.0.0.1:9001", "shop.v1.Orders"),
        ttl_seconds=LEASE), timeout=5)
    await stub.Register(pb.RegisterRequest(
        instance=instance("users", "u1", "127.0.0.1:9101", "shop.v1.Users"),
        ttl_seconds=LEASE), timeout=5)
    watch = Watch(stub, proto_service="shop.v1.Users")
    try:
        snap = await watch.next()
        assert (snap.type, [i.instance_id for i in snap.instances]) == (SNAPSHOT, ["u1"])
        await stub.Register(pb.RegisterRequest(
            instance=instance("orders", "o2", "127.0.0.1:9002", "shop.v1.Orders"),
            ttl_seconds=LEASE), timeout=5)
        await stub.Register(pb.RegisterRequest(
            instance=instance("users", "u2", "127.0.0.1:9102", "shop.v1.Users"),
            ttl_seconds=LEASE), timeout=5)
        await stub.Deregister(pb.DeregisterRequest(service="orders", instance_id="o1",
                                                   owner="127.0.0.1:9001"), timeout=5)
        await stub.Deregister(pb.DeregisterRequest(service="users", instance_id="u1",
                                                   owner="127.0.0.1:9101"), timeout=5)
        seen = [await watch.next(), await watch.next()]
        assert [(e.type, e.instances[0].instance_id) for e in seen] == [
            (UPSERT, "u2"), (DELETE, "u1")]
        await watch.nothing_for(0.2)
    finally:
        watch.cancel()


# -- 3. health checks by the registry -------------------------------------------------------------

@pytest_asyncio.fixture
async def echo() -> AsyncIterator[EchoServer]:
    app = EchoServer("127.0.0.1:0", EchoBehaviour("echo-1"))
    await app.start()
    try:
        yield app
    finally:
        await app.stop(0)


@pytest.mark.asyncio
async def test_registry_checks_health_of_an_instance_without_lease(
        stub: registry_pb2_grpc.RegistryStub, echo: EchoServer) -> None:
    watch = Watch(stub, service="echo")
    try:
        assert (await watch.next()).type == SNAPSHOT
        reg = await stub.Register(pb.RegisterRequest(instance=instance(
            "echo", "e1", echo.address, "grpcmesh.example.v1.Echo",
            health=pb.HEALTH_STATUS_UNKNOWN), ttl_seconds=0), timeout=5)
        assert (reg.lease_id, reg.ttl_seconds) == (0, 0)
        added = await watch.next()
        assert (added.type, added.instances[0].health) == (UPSERT, pb.HEALTH_STATUS_UNKNOWN)

        serving = await watch.until(UPSERT, "e1", pb.SERVING)
        assert serving.reason == "health SERVING"
        await echo.set_serving(False)
        await watch.until(UPSERT, "e1", pb.NOT_SERVING)
        await echo.set_serving(True)
        await watch.until(UPSERT, "e1", pb.SERVING)
        resp = await stub.Resolve(pb.ResolveRequest(service="echo"), timeout=5)
        assert [(i.instance_id, i.health, i.lease_id) for i in resp.instances] == [
            ("e1", pb.SERVING, 0)]

        await echo.stop(0)
        await watch.until(UPSERT, "e1", pb.NOT_SERVING)
        summary = await stub.ListServices(pb.ListServicesRequest(), timeout=5)
        assert [(s.service, s.instances, s.serving) for s in summary.services] == [("echo", 1, 0)]
    finally:
        watch.cancel()


@pytest.mark.asyncio
async def test_registry_checked_instance_with_nothing_listening_is_not_serving(
        stub: registry_pb2_grpc.RegistryStub, closed_port: int) -> None:
    watch = Watch(stub, service="ghost")
    try:
        assert (await watch.next()).type == SNAPSHOT
        await stub.Register(pb.RegisterRequest(
            instance=instance("ghost", "g1", f"127.0.0.1:{closed_port}", health=pb.SERVING)),
            timeout=5)
        await watch.until(UPSERT, "g1", pb.NOT_SERVING)
        resp = await stub.Resolve(pb.ResolveRequest(service="ghost"), timeout=5)
        assert [i.health for i in resp.instances] == [pb.NOT_SERVING]
    finally:
        watch.cancel()


@pytest.mark.asyncio
async def test_app_without_health_service_counts_as_serving(
        stub: registry_pb2_grpc.RegistryStub) -> None:
    async def ping(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    bare = grpc.aio.server()
    bare.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "bare.v1.Bare", {"Ping": grpc.unary_unary_rpc_method_handler(ping)})])
    port = bare.add_insecure_port("127.0.0.1:0")
    await bare.start()
    watch = Watch(stub, service="bare")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            err = await rpc_error(health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5))
            assert err.code() == grpc.StatusCode.UNIMPLEMENTED  # really no health service
        assert (await watch.next()).type == SNAPSHOT
        await stub.Register(pb.RegisterRequest(instance=instance(
            "bare", "b1", f"127.0.0.1:{port}", health=pb.HEALTH_STATUS_UNKNOWN)), timeout=5)
        await watch.until(UPSERT, "b1", pb.SERVING)
        await bare.stop(0)
        await watch.until(UPSERT, "b1", pb.NOT_SERVING)
    finally:
        watch.cancel()
        await bare.stop(0)


@pytest.mark.asyncio
async def test_registering_a_checked_instance_again_keeps_it_checked(
        stub: registry_pb2_grpc.RegistryStub, echo: EchoServer) -> None:
    """A registrant repeating its registration (same owner) must not leave a stale health."""
    watch = Watch(stub, service="echo")
    try:
        assert (await watch.next()).type == SNAPSHOT
        request = pb.RegisterRequest(instance=instance(
            "echo", "e1", echo.address, health=pb.HEALTH_STATUS_UNKNOWN))
        await stub.Register(request, timeout=5)
        await watch.until(UPSERT, "e1", pb.SERVING)
        await stub.Register(request, timeout=5)
        await watch.until(UPSERT, "e1", pb.SERVING)
        resp = await stub.Resolve(pb.ResolveRequest(service="echo"), timeout=5)
        assert [i.health for i in resp.instances] == [pb.SERVING]
    finally:
        watch.cancel()


# -- 4. bad input -------------------------------------------------------------------------------

@pytest.mark.asyncio
@pytest.mark.parametrize(("inst", "field", "value"), [
    (instance(service=""), "instance.service", "''"),
    (instance(service="Orders_Service"), "instance.service", "'Orders_Service'"),
    (instance(address="nowhere"), "instance.address", "'nowhere'"),
    (instance(address="127.0.0.1:0"), "instance.address", "'127.0.0.1:0'"),
    (instance("orders", "o1", "127.0.0.1:9001", "shop..Orders"), "instance.proto_services",
     "'shop..Orders'"),
    (instance(instance_id=""), "instance.instance_id", "''"),
])
async def test_register_rejects_bad_fields(stub: registry_pb2_grpc.RegistryStub,
                                           inst: pb.Instance, field: str, value: str) -> None:
    err = await rpc_error(stub.Register(pb.RegisterRequest(instance=inst), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith(f"{field} {value} "), err.details()
    with pytest.raises(grpc.aio.AioRpcError) as nothing:
        await stub.Resolve(pb.ResolveRequest(service="orders"), timeout=5)
    assert nothing.value.code() == grpc.StatusCode.NOT_FOUND


def methods_of(inst: pb.Instance, count: int, length: int = 60) -> pb.Instance:
    """inst with count methods of its first proto service, each path length characters long."""
    prefix = f"/{inst.proto_services[0]}/M"
    inst.methods.extend(pb.Method(path=f"{prefix}{i:0{length - len(prefix)}d}")
                        for i in range(count))
    return inst


@pytest.mark.asyncio
async def test_oversized_registrations_are_refused_naming_field_and_limit(
        stub: registry_pb2_grpc.RegistryStub) -> None:
    """What an attacker sent (one registration of ~1 MB) and its smaller variants."""
    base = instance("orders", "o1", "127.0.0.1:9001", "shop.v1.Orders")
    huge = instance("orders", "o1", "127.0.0.1:9001", "shop.v1.Orders")
    huge.labels["blob"] = "x" * 978_000
    many = instance("orders", "o1", "127.0.0.1:9001", *(f"shop.v1.S{i}" for i in range(300)))
    for inst, message in [
        (huge, ("instance.labels[blob] 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' is 978000 "
                "characters long: at most 256 are allowed (grpcmesh registry --max-string-length)")),
        (many, ("instance.proto_services has 300 entries: at most 256 are allowed "
                "(grpcmesh registry --max-proto-services)")),
        (methods_of(base, 1200), "instance orders/o1 is "),
    ]:
        err = await rpc_error(stub.Register(pb.RegisterRequest(instance=inst, ttl_seconds=LEASE),
                                            timeout=5))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.details() or "").startswith(message), err.details()
    assert "bytes serialized: at most 65536 are allowed (grpcmesh registry --max-instance-bytes)" \
        in (err.details() or "")
    err = await rpc_error(stub.Resolve(pb.ResolveRequest(service="orders"), timeout=5))
    assert err.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.asyncio
@pytest.mark.timeout(15)
async def test_the_registry_holds_at_most_max_instances() -> None:
    server = RegistryServer("127.0.0.1:0", limits=RegistryLimits(max_instances=3))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            for i in range(3):
                await stub.Register(pb.RegisterRequest(instance=instance(
                    "orders", f"o{i}", f"127.0.0.1:{9000 + i}"), ttl_seconds=LEASE), timeout=5)
            err = await rpc_error(stub.Register(pb.RegisterRequest(instance=instance(
                "orders", "o3", "127.0.0.1:9003"), ttl_seconds=LEASE), timeout=5))
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert err.details() == (
                "the registry holds 3 instances, its limit (grpcmesh registry --max-instances "
                "3): instance_id 'o3' of service 'orders' is refused until others leave")
            await stub.Deregister(pb.DeregisterRequest(service="orders", instance_id="o0",
                                                       owner="127.0.0.1:9000"), timeout=5)
            await stub.Register(pb.RegisterRequest(instance=instance(
                "orders", "o3", "127.0.0.1:9003"), ttl_seconds=LEASE), timeout=5)
            assert await resolve_ids(stub, "orders") == ["o1", "o2", "o3"]
    finally:
        await server.stop(0)


@pytest.mark.asyncio
async def test_register_without_instance_or_with_bad_ttl_is_invalid(
        stub: registry_pb2_grpc.RegistryStub) -> None:
    err = await rpc_error(stub.Register(pb.RegisterRequest(ttl_seconds=5), timeout=5))
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                           "instance is required")
    err = await rpc_error(stub.Register(pb.RegisterRequest(instance=instance(), ttl_seconds=-1),
                                        timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ttl_seconds -1 is out of range" in (err.details() or "")


@pytest.mark.asyncio
async def test_unknown_leases_and_instances_are_not_found(
        stub: registry_pb2_grpc.RegistryStub) -> None:
    err = await rpc_error(stub.KeepAlive(pb.KeepAliveRequest(lease_id=4242), timeout=5))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert (err.details() or "").startswith("lease 4242 not found")
    err = await rpc_error(stub.SetHealth(pb.SetHealthRequest(lease_id=4343, health=pb.SERVING),
                                         timeout=5))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert (err.details() or "").startswith("lease 4343 not found")
    err = await rpc_error(stub.SetHealth(pb.SetHealthRequest(lease_id=4343), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "health 0 is invalid" in (err.details() or "")
    err = await rpc_error(stub.Deregister(pb.DeregisterRequest(
        service="orders", instance_id="nope", owner="127.0.0.1:9001"), timeout=5))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "instance_id 'nope' of service 'orders' is not registered"


@pytest.mark.asyncio
async def test_duplicate_instance_id_from_another_owner_is_refused(
        stub: registry_pb2_grpc.RegistryStub) -> None:
    await stub.Register(pb.RegisterRequest(instance=instance(
        "orders", "o1", "127.0.0.1:9001", owner="alice"), ttl_seconds=LEASE), timeout=5)
    err = await rpc_error(stub.Register(pb.RegisterRequest(instance=instance(
        "orders", "o1", "127.0.0.1:9009", owner="bob"), ttl_seconds=LEASE), timeout=5))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    details = err.details() or ""
    assert "instance_id 'o1' of service 'orders'" in details
    assert "owner 'alice'" in details and "127.0.0.1:9001" in details
    # The same owner may register again; another owner may not deregister it.
    await stub.Register(pb.RegisterRequest(instance=instance(
        "orders", "o1", "127.0.0.1:9001", owner="alice"), ttl_seconds=LEASE), timeout=5)
    err = await rpc_error(stub.Deregister(pb.DeregisterRequest(
        service="orders", instance_id="o1", owner="bob"), timeout=5))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    resp = await stub.Resolve(pb.ResolveRequest(service="orders"), timeout=5)
    assert [(i.address, i.owner) for i in resp.instances] == [("127.0.0.1:9001", "alice")]


@pytest.mark.asyncio
async def test_deregister_needs_the_owner(stub: registry_pb2_grpc.RegistryStub) -> None:
    """Without the owner any client could empty a service; the owner is the address unless the
    registration gave another."""
    await stub.Register(pb.RegisterRequest(instance=instance(
        "orders", "o1", "127.0.0.1:9001", owner="alice"), ttl_seconds=LEASE), timeout=5)
    await stub.Register(pb.RegisterRequest(instance=instance(
        "orders", "o2", "127.0.0.1:9002"), ttl_seconds=LEASE), timeout=5)
    err = await rpc_error(stub.Deregister(pb.DeregisterRequest(
        service="orders", instance_id="o1"), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith(
        "owner is required to deregister instance_id 'o1' of service 'orders'"), err.details()
    for wrong in ("mallory", "127.0.0.1:9001"):
        err = await rpc_error(stub.Deregister(pb.DeregisterRequest(
            service="orders", instance_id="o1", owner=wrong), timeout=5))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.details() == (f"instance_id 'o1' of service 'orders' is not owned by "
                                 f"{wrong!r}: only the owner it was registered with may "
                                 "deregister it")
    assert await resolve_ids(stub, "orders") == ["o1", "o2"]
    watch = Watch(stub, service="orders")
    try:
        assert (await watch.next()).type == SNAPSHOT
        await stub.Deregister(pb.DeregisterRequest(service="orders", instance_id="o1",
                                                   owner="alice"), timeout=5)
        await stub.Deregister(pb.DeregisterRequest(service="orders", instance_id="o2",
                                                   owner="127.0.0.1:9002"), timeout=5)
        assert [(e.type, e.instances[0].instance_id) for e in
                (await watch.next(), await watch.next())] == [(DELETE, "o1"), (DELETE, "o2")]
    finally:
        watch.cancel()


@pytest.mark.asyncio
async def test_resolve_errors(stub: registry_pb2_grpc.RegistryStub) -> None:
    err = await rpc_error(stub.Resolve(pb.ResolveRequest(service="nosuch"), timeout=5))
    assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND,
                                           "no instance of service 'nosuch' is registered")
    err = await rpc_error(stub.Resolve(pb.ResolveRequest(proto_service="x.v1.Nope"), timeout=5))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.NOT_FOUND, "no instance of proto service 'x.v1.Nope' is registered")
    for request in (pb.ResolveRequest(), pb.ResolveRequest(service="a", proto_service="a.B")):
        err = await rpc_error(stub.Resolve(request, timeout=5))
        assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                               "give exactly one of service or proto_service")
    err = await rpc_error(stub.Resolve(pb.ResolveRequest(service="Bad Name"), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith("service 'Bad Name' is not a valid mesh service name")
    err = await rpc_error(stub.Resolve(pb.ResolveRequest(proto_service="1bad"), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith("proto_service '1bad' is not a fully-qualified")


@pytest.mark.asyncio
async def test_watch_with_bad_filter_is_invalid(stub: registry_pb2_grpc.RegistryStub) -> None:
    watch = Watch(stub, proto_service="not a name")
    try:
        err = await rpc_error(watch.call.read())
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.details() or "").startswith("proto_service 'not a name' is not")
    finally:
        watch.cancel()


# -- 5. lookup by proto service, summaries --------------------------------------------------------

@pytest.mark.asyncio
async def test_resolve_by_proto_service_and_list_services(
        stub: registry_pb2_grpc.RegistryStub) -> None:
    await stub.Register(pb.RegisterRequest(instance=instance(
        "orders", "o1", "127.0.0.1:9001", "shop.v1.Orders", "shop.v1.Admin"),
        ttl_seconds=LEASE), timeout=5)
    o2 = await stub.Register(pb.RegisterRequest(instance=instance(
        "orders", "o2", "127.0.0.1:9002", "shop.v1.Orders", health=pb.SERVING),
        ttl_seconds=30), timeout=5)
    await stub.Register(pb.RegisterRequest(instance=instance(
        "users", "u1", "127.0.0.1:9101", "shop.v1.Users", "shop.v1.Admin",
        health=pb.NOT_SERVING), ttl_seconds=LEASE), timeout=5)
    await stub.SetHealth(pb.SetHealthRequest(lease_id=o2.lease_id, health=pb.NOT_SERVING),
                         timeout=5)

    by_proto = await stub.Resolve(pb.ResolveRequest(proto_service="shop.v1.Admin"), timeout=5)
    assert sorted((i.service, i.instance_id) for i in by_proto.instances) == [
        ("orders", "o1"), ("users", "u1")]
    orders = await stub.Resolve(pb.ResolveRequest(proto_service="shop.v1.Orders"), timeout=5)
    assert [i.instance_id for i in orders.instances] == ["o1", "o2"]
    assert list(orders.instances[0].proto_services) == ["shop.v1.Admin", "shop.v1.Orders"]

    listed = await stub.ListServices(pb.ListServicesRequest(), timeout=5)
    assert [(s.service, list(s.proto_services), s.instances, s.serving)
            for s in listed.services] == [
        ("orders", ["shop.v1.Admin", "shop.v1.Orders"], 2, 1),
        ("users", ["shop.v1.Admin", "shop.v1.Users"], 1, 0),
    ]
    assert listed.revision == by_proto.revision == 4


# -- 6. the registry's own health and reflection --------------------------------------------------

@pytest.mark.asyncio
async def test_registry_serves_health(registry: RegistryServer) -> None:
    async with grpc.aio.insecure_channel(registry.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", REGISTRY):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING, name
        err = await rpc_error(health.Check(health_pb2.HealthCheckRequest(service="no.Such"),
                                           timeout=5))
        assert err.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.asyncio
async def test_registry_serves_reflection_v1_and_v1alpha(registry: RegistryServer) -> None:
    async with grpc.aio.insecure_channel(registry.address) as channel:
        listed = await list_services(channel)
        assert REGISTRY in listed and "grpc.health.v1.Health" in listed
        for version in ("v1", "v1alpha"):
            call = channel.stream_stream(
                f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                request_serializer=rpb.ServerReflectionRequest.SerializeToString,
                response_deserializer=rpb.ServerReflectionResponse.FromString)
            requests = [rpb.ServerReflectionRequest(list_services=""),
                        rpb.ServerReflectionRequest(file_containing_symbol=REGISTRY),
                        rpb.ServerReflectionRequest(file_containing_symbol="no.such.Symbol")]
            responses = [r async for r in call(iter(requests), timeout=5)]
            assert len(responses) == 3, version
            services, found, missing = responses
            assert {s.name for s in services.list_services_response.service} >= {
                REGISTRY, "grpc.health.v1.Health", f"grpc.reflection.{version}.ServerReflection"
            }, version
            files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
                     for raw in found.file_descriptor_response.file_descriptor_proto]
            registry_file = next(f for f in files
                                 if f.name == "grpcmesh/registry/v1/registry.proto")
            assert registry_file.package == "grpcmesh.registry.v1"
            assert [m.name for m in registry_file.service[0].method] == [
                "Register", "KeepAlive", "SetHealth", "Deregister", "Resolve", "ListServices",
                "Watch", "ApplyConfig", "GetConfig"]
            assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


# -- 7. restart on a SQLite store -----------------------------------------------------------------

@pytest.mark.asyncio
async def test_restart_keeps_checked_instances_and_forgets_leases(
        tmp_path: Path, echo: EchoServer) -> None:
    db = str(tmp_path / "r.db")
    first = RegistryServer("127.0.0.1:0", SqlitePersistence(db), check_interval=0.1)
    await first.start()
    try:
        async with grpc.aio.insecure_channel(first.address) as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            await stub.Register(pb.RegisterRequest(instance=instance(
                "echo", "e1", echo.address, "grpcmesh.example.v1.Echo",
                health=pb.HEALTH_STATUS_UNKNOWN)), timeout=5)
            leased = await stub.Register(pb.RegisterRequest(instance=instance(
                "echo", "e2", "127.0.0.1:9002"), ttl_seconds=30), timeout=5)
            await wait_for(lambda: health_in(first, "echo", "e1") == pb.SERVING,
                           what="e1 SERVING before the restart")
    finally:
        await first.stop(0)

    second = RegistryServer("127.0.0.1:0", SqlitePersistence(db), check_interval=0.1)
    await second.start()
    try:
        async with grpc.aio.insecure_channel(second.address) as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            watch = Watch(stub)
            try:
                snap = await watch.next()
                assert snap.type == SNAPSHOT
                assert [(i.instance_id, i.address, list(i.proto_services), i.lease_id)
                        for i in snap.instances] == [
                    ("e1", echo.address, ["grpcmesh.example.v1.Echo"], 0)]
                if snap.instances[0].health != pb.SERVING:
                    await watch.until(UPSERT, "e1", pb.SERVING)
            finally:
                watch.cancel()
            resp = await stub.Resolve(pb.ResolveRequest(service="echo"), timeout=5)
            assert [(i.instance_id, i.health) for i in resp.instances] == [("e1", pb.SERVING)]
            err = await rpc_error(stub.KeepAlive(pb.KeepAliveRequest(lease_id=leased.lease_id),
                                                 timeout=5))
            assert err.code() == grpc.StatusCode.NOT_FOUND
            assert (err.details() or "").startswith(f"lease {leased.lease_id} not found")
            # A leased instance comes back only by registering again.
            again = await stub.Register(pb.RegisterRequest(instance=instance(
                "echo", "e2", "127.0.0.1:9002"), ttl_seconds=30), timeout=5)
            assert again.lease_id != 0
            assert await resolve_ids(stub, "echo") == ["e1", "e2"]
    finally:
        await second.stop(0)


@pytest.mark.asyncio
@pytest.mark.timeout(15)
async def test_stopping_ends_watch_streams_with_unavailable(
        registry: RegistryServer, stub: registry_pb2_grpc.RegistryStub) -> None:
    watch = Watch(stub)
    assert (await watch.next()).type == SNAPSHOT
    await asyncio.wait_for(registry.stop(5), 3)  # well inside the grace: the stream ended
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(watch.call.read(), EVENT_TIMEOUT)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in (err.value.details() or "")


@pytest.mark.asyncio
@pytest.mark.timeout(15)
async def test_descriptor_sets_give_kinds_to_instances_registered_without_them() -> None:
    echo = "grpcmesh.example.v1.Echo"
    catalog = MethodCatalog([Method(f"/{echo}/Unary"), Method(f"/{echo}/Bidi", True, True)])
    server = RegistryServer("127.0.0.1:0", catalog=catalog)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            await stub.Register(pb.RegisterRequest(instance=instance(
                "echo", "e1", "127.0.0.1:9001", echo), ttl_seconds=LEASE))
            own = pb.Method(path=f"/{echo}/Own", server_streaming=True)
            given = instance("echo", "e2", "127.0.0.1:9002", echo)
            given.methods.append(own)
            await stub.Register(pb.RegisterRequest(instance=given, ttl_seconds=LEASE))
            found = {i.instance_id: list(i.methods) for i in
                     (await stub.Resolve(pb.ResolveRequest(service="echo"))).instances}
        assert found["e1"] == [pb.Method(path=f"/{echo}/Bidi", client_streaming=True,
                                         server_streaming=True),
                               pb.Method(path=f"/{echo}/Unary")]
        assert found["e2"] == [own]  # what the instance said about itself wins
    finally:
        await server.stop(0)
