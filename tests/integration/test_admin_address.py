"""A sidecar publishes its admin port's address with its app's registration, and a
client-only sidecar announces itself (as no endpoint)."""
from __future__ import annotations

import pytest

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh.admin import admin_get
from grpcmesh.registry.client import RegistryClient
from grpcmesh.registry.model import Health
from tests.conftest import Mesh, wait_for


@pytest.mark.asyncio
async def test_a_registered_instance_carries_its_sidecars_admin_address(mesh: Mesh) -> None:
    app = await mesh.app("a")
    sidecar = await mesh.sidecar("echo", app)
    store = mesh.registry.view
    await wait_for(store.instances, 5, "echo to be registered")
    [instance] = store.instances()
    assert sidecar.admin.address and instance.admin_address == sidecar.admin.address
    # what tools see through the registry's API, and that the address answers
    client = RegistryClient([mesh.registry.address])
    try:
        resp = await client.call("Resolve", pb.ResolveRequest(service="echo"))
    finally:
        await client.close()
    [published] = resp.instances
    assert published.admin_address == sidecar.admin.address
    assert await admin_get(published.admin_address, "/live") == {"live": True}


@pytest.mark.asyncio
async def test_a_sidecar_without_an_admin_port_publishes_none(mesh: Mesh) -> None:
    app = await mesh.app("a")
    await mesh.sidecar("echo", app, admin=None)
    store = mesh.registry.view
    await wait_for(store.instances, 5, "echo to be registered")
    assert store.instances()[0].admin_address == ""


@pytest.mark.asyncio
async def test_a_client_only_sidecar_announces_itself_but_is_no_endpoint(mesh: Mesh) -> None:
    store = mesh.registry.view
    app = await mesh.app("a")
    server = await mesh.sidecar("echo", app)
    client = await mesh.sidecar("web", labels=(("zone", "eu-1"),), instance_id="web-1")
    await wait_for(lambda: len(store.instances()) == 2, 5, "both sidecars to register")
    announced = next(i for i in store.instances() if i.service == "web")
    assert announced.instance_id == "web-1"
    assert announced.address == client.outbound_address
    assert announced.admin_address == client.admin.address
    assert announced.proto_services == () and announced.methods == ()
    assert announced.labels == (("grpcmesh.io/role", "client"), ("zone", "eu-1"))
    assert announced.health == Health.SERVING
    assert announced.lease_id != 0
    await mesh.serving(client, "echo", 1)
    for sidecar in (client, server):
        assert "web" not in sidecar.routes.pools
    assert (await admin_get(client.admin.address, "/ready"))["ready"] is True

    await client.shutdown()  # deregisters at once, not at the lease's end
    assert [i.service for i in store.instances()] == ["echo"]


@pytest.mark.asyncio
async def test_a_client_only_sidecars_default_instance_id_is_host_and_port(mesh: Mesh) -> None:
    store = mesh.registry.view
    client = await mesh.sidecar("web")
    await wait_for(store.instances, 5, "the client sidecar to announce itself")
    [announced] = store.instances()
    port = client.outbound_address.rpartition(":")[2]
    assert announced.instance_id.endswith(f":{port}") and announced.instance_id != f"127.0.0.1:{port}"
