"""External services (the mesh config's `external`) through a real client sidecar: a grpcio
server over TLS with a test CA, plaintext HTTP/2, and a front that shows what reached "the
outside" (SNI, :authority). The config is applied to a real registry and pushed, as in
test_rules.py."""
from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from generated.grpcmesh.example.v1 import echo_pb2 as pb
from generated.grpcmesh.example.v1 import echo_pb2_grpc
from grpcmesh.admin import admin_get
from grpcmesh.balance.picker import RoundRobin
from grpcmesh.example.server import EchoBehaviour, EchoService
from grpcmesh.sidecar import Sidecar
from tests.certs import Certs, make_certs
from tests.conftest import Mesh, wait_for
from tests.h2front import Front
from tests.integration.test_rules import ECHO, apply, running

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


def external(name: str, address: str, tls: str = "") -> str:
    """A config with one external service that takes the example Echo service's calls."""
    return (f"external:\n  {name}:\n    addresses: [{address}]\n    proto_services: [{ECHO}]\n"
            + (f"    tls: {tls}\n" if tls else ""))


async def in_force(mesh: Mesh, text: str, client: Sidecar, name: str | None = None) -> None:
    """Apply text, wait until every sidecar runs it and (name) client has name's endpoints."""
    await running(mesh.sidecars, await apply(mesh.registry, text))
    if name is not None:
        await wait_for(lambda: client.external.pools[name].ready, 5.0, f"endpoints of {name}")


async def unary(sidecar: Sidecar, **kwargs: object) -> pb.EchoResponse:
    async with grpc.aio.insecure_channel(sidecar.outbound_address) as channel:
        reply: pb.EchoResponse = await echo_pb2_grpc.EchoStub(channel).Unary(
            pb.EchoRequest(message="x"), timeout=5, **kwargs)
        return reply


async def refused(sidecar: Sidecar) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await unary(sidecar)
    return err.value


@pytest_asyncio.fixture
async def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "good")


@pytest_asyncio.fixture
async def tls_server(certs: Certs) -> AsyncIterator[int]:
    """The example Echo service, named "outside", on a grpcio server with TLS only."""
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServicer_to_server(EchoService(EchoBehaviour("outside")), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
        [(certs.key, certs.cert)]))
    await server.start()
    yield port
    await server.stop(0)


async def test_an_external_service_over_tls(mesh: Mesh, certs: Certs, tls_server: int,
                                            tmp_path: Path) -> None:
    client = await mesh.sidecar("client")
    address = f"localhost:{tls_server}"
    await in_force(mesh, external("outside", address,
                                  f"{{server_name: localhost, ca_file: {certs.ca}}}"),
                   client, "outside")
    assert (await unary(client)).instance == "outside"
    # The sidecar's /endpoints lists it like a mesh service, with what DNS said.
    body = await admin_get(client.admin.address, "/endpoints")
    outside = body["services"]["outside"]
    assert [e["calls"] for e in outside["endpoints"]] == [1]
    assert outside["external"] == {address: {"resolved": [f"127.0.0.1:{tls_server}"],
                                             "error": None}}

    # A CA that did not sign the server's certificate: the call says what failed, and where.
    wrong = make_certs(tmp_path / "wrong", "another CA")
    await in_force(mesh, external("outside", address,
                                  f"{{server_name: localhost, ca_file: {wrong.ca}}}"),
                   client, "outside")
    err = await refused(client)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    details = err.details() or ""
    assert details.startswith(f"cannot connect to external service outside at {address} "
                              f"(127.0.0.1:{tls_server}): TLS: "), details
    assert "certificate verify failed" in details, details


async def test_tls_sends_the_configured_name_and_authority(mesh: Mesh, certs: Certs) -> None:
    app = await mesh.app("outside")  # in no sidecar: reached through the front only
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*_files(certs))
    context.set_alpn_protocols(["h2"])
    front = Front(app.address, context)
    await front.start()
    no_h2 = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    no_h2.load_cert_chain(*_files(certs))
    no_h2.set_alpn_protocols(["http/1.1"])
    http1 = Front(app.address, no_h2)
    await http1.start()
    try:
        client = await mesh.sidecar("client")
        # tls: {} -> the host of the address is the server name; the CA is the test's
        await in_force(mesh, external("outside", f"localhost:{front.port}",
                                      f"{{ca_file: {certs.ca}}}"), client, "outside")
        assert (await unary(client)).instance == "outside"
        assert front.server_names == ["localhost"]
        assert front.authorities == [f"localhost:{front.port}"]  # not the sidecar's address

        await in_force(mesh, external("outside", f"localhost:{http1.port}",
                                      f"{{ca_file: {certs.ca}}}"), client, "outside")
        err = await refused(client)
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert "the server did not negotiate HTTP/2 (ALPN h2); it chose no protocol" in (
            err.details() or ""), err.details()
    finally:
        await front.stop()
        await http1.stop()


def _files(certs: Certs) -> tuple[str, str]:
    directory = certs.ca.parent
    (directory / "leaf.pem").write_bytes(certs.cert)
    (directory / "leaf.key").write_bytes(certs.key)
    return str(directory / "leaf.pem"), str(directory / "leaf.key")


async def test_plaintext_external_wins_and_follows_config_changes(mesh: Mesh) -> None:
    inside = await mesh.app("inside")
    await mesh.sidecar("echo", inside)  # a mesh service that serves the same proto service
    outside = await mesh.app("outside", delay_ms=300)
    front = Front(outside.address)
    await front.start()
    try:
        client = await mesh.sidecar("client")
        await mesh.serving(client, "echo", 1)
        assert (await unary(client)).instance == "inside"
        address = f"localhost:{front.port}"
        rules = ("services:\n  outside:\n    balancer: round_robin\n    faults:\n"
                 "      - {match: {metadata: {x-chaos: 'on'}}, abort: {code: ABORTED}}\n")
        await in_force(mesh, rules + external("outside", address), client, "outside")
        # By proto service: the config's external service wins over the mesh's.
        assert (await unary(client)).instance == "outside"
        assert front.authorities == [address]
        # services.outside holds its rules, as for a mesh service.
        assert isinstance(client.routes.route(f"/{ECHO}/Unary", None).picker, RoundRobin)
        with pytest.raises(grpc.aio.AioRpcError) as fault:
            await unary(client, metadata=(("x-chaos", "on"),))
        assert (fault.value.code(), fault.value.details()) == (
            grpc.StatusCode.ABORTED, "fault injected by services.outside.faults[0]")
        # By name; and a mesh service named in the header is still reached.
        named = await unary(client, metadata=(("grpcmesh-service", "outside"),))
        assert named.instance == "outside"
        mesh_named = await unary(client, metadata=(("grpcmesh-service", "echo"),))
        assert mesh_named.instance == "inside"

        # A call in flight when the external service is removed finishes; new calls go to
        # the mesh again.
        slow = asyncio.ensure_future(unary(client))
        await wait_for(lambda: len(front.authorities) == 3, 2.0, "the slow call to arrive")
        await in_force(mesh, "services: {}\n", client)
        assert (await unary(client)).instance == "inside"
        assert (await slow).instance == "outside"
    finally:
        await front.stop()


async def test_an_address_that_does_not_resolve(mesh: Mesh) -> None:
    client = await mesh.sidecar("client")
    await in_force(mesh, external("nowhere", "nowhere.invalid:443"), client)
    # (.invalid never resolves, RFC 6761; a resolver that does not answer takes up to 10 s)
    await wait_for(lambda: client.external.resolutions.known["nowhere.invalid:443"].error,
                   15.0, "the resolution to fail")
    err = await refused(client)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert (err.details() or "").startswith(
        "cannot resolve nowhere.invalid:443 for external service nowhere: "), err.details()
