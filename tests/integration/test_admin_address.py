"""A sidecar publishes its admin port's address with its app's registration."""
from __future__ import annotations

import pytest

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh.admin import admin_get
from grpcmesh.registry.client import RegistryClient
from tests.conftest import Mesh, wait_for


@pytest.mark.asyncio
async def test_a_registered_instance_carries_its_sidecars_admin_address(mesh: Mesh) -> None:
    app = await mesh.app("a")
    sidecar = await mesh.sidecar("echo", app)
    store = mesh.registry.store
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
    store = mesh.registry.store
    await wait_for(store.instances, 5, "echo to be registered")
    assert store.instances()[0].admin_address == ""
