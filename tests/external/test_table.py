"""External services as pools and routes (table.py), and their precedence in RouteTable. Pure:
DNS answers are handed in, TLS contexts come from a fake factory."""
from __future__ import annotations

import ssl

import grpc
import pytest

from grpcmesh.balance.endpoint import Endpoint
from grpcmesh.balance.picker import RoundRobin
from grpcmesh.config import ExternalService, Tls
from grpcmesh.external.table import ExternalTable
from grpcmesh.registry.model import Event, EventType, Health, Instance
from grpcmesh.routing import RouteError, RouteTable

T0 = 1000.0
FORECAST = "weather.v1.Forecast"
WEATHER = ExternalService("weather", ("api.weather.example:443",), (FORECAST,),
                          Tls("api.weather.example"))
BILLING = ExternalService("billing", ("10.0.0.7:9000",), ("billing.v1.Invoices",))
HEADERS = [(":method", "POST"), (":scheme", "http"), (":path", f"/{FORECAST}/Get"),
           (":authority", "localhost:15001"), ("content-type", "application/grpc")]


def context(tls: Tls) -> ssl.SSLContext:
    if tls.ca_file == "/missing.pem":
        raise FileNotFoundError(2, "No such file or directory")
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def table(removed: list[Endpoint] | None = None) -> ExternalTable:
    return ExternalTable(lambda service: RoundRobin(),
                         (removed if removed is not None else []).append, tls_context=context)


def addresses(t: ExternalTable, name: str) -> list[str]:
    return sorted(e.address for e in t.pools[name].ready)


def test_routes_endpoints_and_dials_follow_dns() -> None:
    t = table()
    routes = t.configure([BILLING, WEATHER], T0)
    assert sorted(routes) == [("proto", "billing.v1.Invoices"), ("proto", FORECAST),
                              ("service", "billing"), ("service", "weather")]
    assert routes[("proto", FORECAST)] is routes[("service", "weather")]
    assert routes[("service", "weather")].service == "weather"  # services.weather's rules
    # An IP literal in plaintext is its own endpoint at once; a name waits for DNS.
    assert addresses(t, "billing") == ["10.0.0.7:9000"]
    assert addresses(t, "weather") == []
    assert t.resolutions.due(T0) == ["api.weather.example:443"]
    t.answered("api.weather.example:443", ["192.0.2.1:443", "192.0.2.2:443"], T0)
    key = "192.0.2.1:443 (api.weather.example:443, tls api.weather.example)"
    assert addresses(t, "weather") == [key, key.replace("2.1:", "2.2:")]
    dial = t.dials[key]
    assert (dial.host, dial.port, dial.authority, dial.server_name) == (
        "192.0.2.1", 443, "api.weather.example:443", "api.weather.example")
    assert dial.tls is not None
    assert t.dials["10.0.0.7:9000"].tls is None
    assert set(t.dials) == {e.address for pool in t.pools.values() for e in pool.endpoints.values()}


def test_the_authority_is_the_configured_address() -> None:
    t = table()
    target = t.configure([WEATHER], T0)[("service", "weather")]
    t.resolutions.due(T0)
    t.answered("api.weather.example:443", ["192.0.2.1:443"], T0)
    endpoint = target.pick()
    assert endpoint is not None and target.external is not None
    out = target.external.headers(endpoint, HEADERS)
    assert out[3] == (":authority", "api.weather.example:443")
    assert HEADERS[3] == (":authority", "localhost:15001")  # the caller's list is not changed
    without = target.external.headers(endpoint, [h for h in HEADERS if h[0] != ":authority"])
    assert without[3] == (":authority", "api.weather.example:443")  # after the pseudo-headers
    assert without[4] == ("content-type", "application/grpc")


def test_messages_name_the_service_the_address_and_the_reason() -> None:
    t = table()
    target = t.configure([WEATHER], T0)[("service", "weather")]
    assert target.external is not None
    assert target.external.unavailable("/w/Get") == (
        "resolving api.weather.example:443 for external service weather: no answer yet "
        "(calling /w/Get)")
    t.resolutions.due(T0)
    t.failed("api.weather.example:443", "[Errno -2] Name or service not known", T0)
    assert target.external.unavailable("/w/Get") == (
        "cannot resolve api.weather.example:443 for external service weather: [Errno -2] Name "
        "or service not known (calling /w/Get)")
    t.resolutions.due(T0 + 1)
    t.answered("api.weather.example:443", ["192.0.2.1:443"], T0 + 1)
    endpoint = target.pick()
    assert endpoint is not None
    assert target.external.unreachable([endpoint], lambda a: "TLS: certificate verify failed",
                                       "/w/Get") == (
        "cannot connect to external service weather at api.weather.example:443 (192.0.2.1:443): "
        "TLS: certificate verify failed (calling /w/Get)")
    bad = ExternalService("weather", WEATHER.addresses, WEATHER.proto_services,
                          Tls(ca_file="/missing.pem"))
    target = t.configure([bad], T0 + 2)[("service", "weather")]
    assert addresses(t, "weather") == []  # unusable TLS settings: no endpoint
    assert target.external is not None
    assert target.external.unavailable("/w/Get") == (
        "cannot use the TLS settings of external service weather: tls.ca_file /missing.pem: "
        "[Errno 2] No such file or directory (calling /w/Get)")


def test_a_new_config_keeps_what_did_not_change() -> None:
    removed: list[Endpoint] = []
    t = table(removed)
    t.configure([WEATHER, BILLING], T0)
    t.resolutions.due(T0)
    t.answered("api.weather.example:443", ["192.0.2.1:443"], T0)
    kept = t.pools["weather"].ready[0]
    kept.calls = 7
    # The same services again (a new config version): endpoints and their load stay.
    t.configure([WEATHER, BILLING], T0 + 1)
    assert t.pools["weather"].ready[0] is kept and removed == []
    # billing removed, weather's server name changed: new endpoints (new connections).
    renamed = ExternalService("weather", WEATHER.addresses, WEATHER.proto_services,
                              Tls("weather.example"))
    routes = t.configure([renamed], T0 + 2)
    assert sorted(routes) == [("proto", FORECAST), ("service", "weather")]
    assert "billing" not in t.pools
    assert sorted(e.address for e in removed) == [
        "10.0.0.7:9000", "192.0.2.1:443 (api.weather.example:443, tls api.weather.example)"]
    assert addresses(t, "weather") == [
        "192.0.2.1:443 (api.weather.example:443, tls weather.example)"]  # no DNS again
    assert set(t.dials) == set(addresses(t, "weather"))


def test_external_services_come_before_the_mesh() -> None:
    routes = RouteTable(lambda service: RoundRobin())
    mesh = Instance("forecast", "f1", "10.0.0.1:1", (FORECAST,), health=Health.SERVING)
    routes.apply(Event(EventType.SNAPSHOT, 1, (mesh,)))
    assert routes.route(f"/{FORECAST}/Get").service == "forecast"
    t = table()
    routes.set_external(t.configure([WEATHER], T0))
    assert routes.route(f"/{FORECAST}/Get").service == "weather"
    assert routes.route("/any.v1.Thing/Get", "weather").service == "weather"  # by name
    assert routes.route(f"/{FORECAST}/Get", "forecast").service == "forecast"  # still there
    routes.set_external(t.configure([], T0 + 1))
    assert routes.route(f"/{FORECAST}/Get").service == "forecast"


def test_external_services_route_before_the_registry_answers() -> None:
    routes = RouteTable()
    routes.set_external(table().configure([BILLING], T0))
    assert routes.route("/billing.v1.Invoices/List").external is not None
    with pytest.raises(RouteError) as err:
        routes.route("/shop.v1.Orders/Get")
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
