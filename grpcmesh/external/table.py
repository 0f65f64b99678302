"""The external services of the mesh config in force, as pools the relay balances over. Pure:
DNS answers come in through answered/failed (resolver.py asks), TLS contexts from a factory.

Each external service is a Pool named after it, holding one synthetic registry Instance per
resolved address (always SERVING: the balancer's failure penalty and the connection backoff deal
with endpoints that fail), so that routing, balancing and the service's rules in
`services.NAME` work on it as on a mesh service. Its one Target is routed to by each of its proto
services and by its name (the grpcmesh-service header); RouteTable.set_external puts them before
the mesh's (the config's explicit statement wins over discovery).

An endpoint's address is the key of its upstream connection, so it says everything a connection
depends on: the resolved IP:PORT, and, unless that is the configured address itself in
plaintext, the configured address (the calls' :authority) and the TLS server name and CA file:
`93.184.216.34:443 (api.weather.example:443, tls api.weather.example)`. Endpoints that agree on
all of it share a connection; `dials` tells the relay's Upstreams how to open each.
"""
from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from grpcmesh.balance.endpoint import Endpoint, LoadSettings
from grpcmesh.balance.picker import Picker
from grpcmesh.balance.pool import Pool
from grpcmesh.config.schema import ExternalService, Tls
from grpcmesh.external.dns import Resolutions, join, split
from grpcmesh.external.tls import ClientContexts, server_name
from grpcmesh.registry.model import Health, Instance
from grpcmesh.relay.dial import Dial
from grpcmesh.routing import Target

Headers = list[tuple[str, str]]
RouteKey = tuple[str, str]  # ("proto", proto service) or ("service", name), as RouteTable's


class Outside:
    """What the relay asks of an external service's target (Target.external): each endpoint's
    :authority, and the messages of calls that cannot reach it."""

    __slots__ = ("config", "name", "table", "tls_error")

    def __init__(self, config: ExternalService, table: ExternalTable, tls_error: str | None
                 ) -> None:
        self.name = config.name
        self.config = config
        self.table = table
        self.tls_error = tls_error  # the TLS settings cannot be used: why

    def headers(self, endpoint: Endpoint, headers: Headers) -> Headers:
        """The request headers for endpoint: :authority is its configured HOST:PORT (the app
        sent the sidecar's address; external servers check it, as they check SNI)."""
        dial = self.table.dials.get(endpoint.address)
        if dial is None:
            return headers
        out = [(k, dial.authority) if k == ":authority" else (k, v) for k, v in headers]
        if not any(k == ":authority" for k, _ in headers):  # after the pseudo-headers
            at = sum(1 for k, _ in headers if k.startswith(":"))
            out.insert(at, (":authority", dial.authority))
        return out

    def unavailable(self, method: str) -> str:
        """Why the service has no endpoint: unusable TLS settings, or no DNS answer."""
        res = self.table.resolutions
        if self.tls_error is not None:
            why = f"cannot use the TLS settings of external service {self.name}: {self.tls_error}"
        else:
            why = "; ".join(res.why_none(a, self.name) for a in self.config.addresses
                            if not res.answers(a))
        return f"{why} (calling {method})"

    def unreachable(self, tried: Sequence[Endpoint], reason: Callable[[str], str | None],
                    method: str) -> str:
        """No endpoint tried took a connection: each one's configured and resolved address and
        why (reason(address): the connection's last error, such as a TLS verify failure)."""
        parts = []
        for endpoint in tried:
            dial = self.table.dials.get(endpoint.address)
            where = (f"{dial.authority} ({join(dial.host, dial.port)})" if dial is not None
                     else endpoint.address)
            parts.append(f"{where}: {reason(endpoint.address) or 'connection refused'}")
        return (f"cannot connect to external service {self.name} at {'; '.join(parts)} "
                f"(calling {method})")


@dataclass
class _Service:
    config: ExternalService
    outside: Outside
    target: Target
    context: ssl.SSLContext | None  # None: plaintext, or tls_error
    dials: dict[str, Dial] = field(default_factory=dict)


class ExternalTable:
    def __init__(self, picker_factory: Callable[[str], Picker],
                 on_endpoint_removed: Callable[[Endpoint], None] = lambda e: None,
                 load: LoadSettings = LoadSettings(),
                 tls_context: Callable[[Tls], ssl.SSLContext] | None = None) -> None:
        self.pools: dict[str, Pool] = {}
        self.dials: dict[str, Dial] = {}  # endpoint address -> how to connect (Upstreams.dials)
        self.resolutions = Resolutions()
        self._services: dict[str, _Service] = {}
        self._picker_factory = picker_factory
        self._on_removed = on_endpoint_removed
        self._load = load
        self._tls_context = tls_context if tls_context is not None else ClientContexts()

    def configure(self, externals: Sequence[ExternalService], now: float
                  ) -> dict[RouteKey, Target]:
        """A config version comes into force: its external services, with new TLS contexts and
        pickers; addresses still configured keep their DNS answers (and endpoints their load).
        Returns the routes for RouteTable.set_external."""
        old, self._services = self._services, {}
        for ext in externals:
            context, error = None, None
            if ext.tls is not None:
                try:
                    context = self._tls_context(ext.tls)
                except (OSError, ssl.SSLError) as err:
                    error = f"tls.ca_file {ext.tls.ca_file}: {err}"
            pool = self.pools.get(ext.name)
            if pool is None:
                pool = self.pools[ext.name] = Pool(ext.name, self._on_removed, self._load)
            outside = Outside(ext, self, error)
            target = Target(ext.name, (pool,), self._picker_factory(ext.name), external=outside)
            self._services[ext.name] = _Service(ext, outside, target, context)
        for name in old.keys() - self._services.keys():
            self.pools.pop(name).reset(())  # its endpoints go: their connections drain
        self.resolutions.want([a for ext in externals for a in ext.addresses], now)
        for service in self._services.values():
            self._refresh(service)
        self._sync_dials()
        return self.routes()

    def routes(self) -> dict[RouteKey, Target]:
        out: dict[RouteKey, Target] = {}
        for name, service in self._services.items():
            out[("service", name)] = service.target
            for proto in service.config.proto_services:
                out[("proto", proto)] = service.target
        return out

    # -- DNS ----------------------------------------------------------------------------------

    def answered(self, address: str, answers: Sequence[str], now: float) -> None:
        if self.resolutions.answered(address, answers, now):
            for service in self._services.values():
                if address in service.config.addresses:
                    self._refresh(service)
            self._sync_dials()

    def failed(self, address: str, reason: str, now: float) -> None:
        """The last good answer stays (resolutions.failed); calls name the error only while an
        address has none."""
        self.resolutions.failed(address, reason, now)

    # -- endpoints ----------------------------------------------------------------------------

    def _refresh(self, service: _Service) -> None:
        """The service's endpoints from the DNS answers it has now."""
        ext = service.config
        service.dials = {}
        instances = []
        if service.outside.tls_error is None:
            for address in ext.addresses:
                for answer in self.resolutions.answers(address):
                    key, dial = _dial(answer, address, ext.tls, service.context)
                    service.dials[key] = dial
                    instances.append(Instance(ext.name, key, key, ext.proto_services,
                                              health=Health.SERVING))
        self.pools[ext.name].reset(instances)

    def _sync_dials(self) -> None:
        """dials in place (Upstreams holds this very dict): every endpoint's, no others."""
        wanted: dict[str, Dial] = {}
        for service in self._services.values():
            wanted.update(service.dials)
        self.dials.clear()
        self.dials.update(wanted)

    def describe(self) -> dict[str, dict[str, object]]:
        """For /endpoints: each external service's configured addresses and what DNS said."""
        res = self.resolutions
        return {name: {address: {"resolved": list(res.answers(address)),
                                 "error": r.error if (r := res.known.get(address)) else None}
                       for address in s.config.addresses}
                for name, s in sorted(self._services.items())}


def _dial(answer: str, address: str, tls: Tls | None, context: ssl.SSLContext | None
          ) -> tuple[str, Dial]:
    """The endpoint address (its connection's key) and Dial of one DNS answer."""
    host, port = split(answer)
    if tls is None:
        key = answer if answer == address else f"{answer} ({address})"
        return key, Dial(host, port, address)
    name = server_name(tls, address)
    ca = f", ca {tls.ca_file}" if tls.ca_file else ""
    return f"{answer} ({address}, tls {name}{ca})", Dial(host, port, address, context, name)
