"""From YAML nodes to a MeshConfig, collecting every error with its line and key path.

The file's layout, top down: `services` (per mesh service: balancer, timeouts, subsets,
routes, faults, rate_limit) and `external` (services outside the mesh). docs/config.md
describes each key. Each node is read once, and cross-checks use dicts, so the cost is linear
in the file's size. Subsets that select no instance are warnings, given the instances the
registry knows (offline nothing is known, so nothing is said), and so are external services
whose proto services or name mesh services have too (the external service wins).

`services.NAME` may hold the rules of an external service NAME (its balancer, timeouts, routes
without `to`, faults): its calls pass the same interceptors. Subsets and rate limits are errors
there: its endpoints are DNS answers, with no labels, and it has no inbound sidecar.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from grpcmesh import names
from grpcmesh.balance.picker import PICKER_KINDS
from grpcmesh.config.problems import show
from grpcmesh.config.reader import Reader, join
from grpcmesh.config.resilience_rules import (
    check_exclusive,
    read_hedge,
    read_outlier,
    read_retry,
)
from grpcmesh.config.rules import (
    Limits,
    check_order,
    read_fault,
    read_rate_limit,
    read_route,
)
from grpcmesh.config.schema import (
    ExternalService,
    Fault,
    Match,
    MeshConfig,
    Route,
    ServiceConfig,
    Subset,
    Tls,
)
from grpcmesh.config.yamlnodes import Map, Node, Scalar

# service -> the label sets of its instances (what the registry knows today)
KnownInstances = Mapping[str, Sequence[Mapping[str, str]]]
# proto service -> the mesh services whose registered instances serve it
ServingProtos = Mapping[str, Sequence[str]]

SERVICE_KEYS = ("balancer", "timeout", "max_timeout", "subsets", "routes", "faults",
                "rate_limit", "retry", "hedge", "outlier")
EXTERNAL_KEYS = ("addresses", "proto_services", "tls")
# The rules `services.NAME` cannot have when NAME is an external service, and why.
EXTERNAL_CANNOT = {
    "subsets": "its endpoints are the addresses DNS gives, which have no labels to select",
    "rate_limit": "rate limits are applied by each instance's inbound sidecar, and an external "
                  "service has none"}
Rule = TypeVar("Rule", Route, Fault)


def build(root: Node | None, r: Reader, known: KnownInstances | None = None,
          serving: ServingProtos | None = None) -> MeshConfig:
    """The config the nodes describe; meaningful only if r collected no errors. known and
    serving (what the registry knows today, if anything) only add warnings."""
    if root is None:  # an empty file: no rules
        return MeshConfig()
    top = r.map(root, "", "a map with the keys services and/or external")
    if top is None:
        return MeshConfig()
    f = r.fields(top, "", ("services", "external"))
    external: list[ExternalService] = []
    claimed: dict[str, str] = {}  # proto service -> external service
    ext_keys: dict[str, Scalar] = {}
    if "external" in f:
        m = r.map(f["external"], "external", "a map of external service names to settings")
        for key, body in m.items if m else ():
            ext = _external(key, body, r, claimed, known, serving)
            ext_keys[key.text] = key
            if ext is not None:
                external.append(ext)
    services: list[ServiceConfig] = []
    if "services" in f:
        m = r.map(f["services"], "services", "a map of mesh service names to their rules")
        for key, body in m.items if m else ():
            outside = ext_keys.get(key.text)  # the rules of an external service
            others = claimed if outside is None else {
                proto: owner for proto, owner in claimed.items() if owner != key.text}
            service = _service(key, body, r, others, known, outside)
            if service is not None:
                services.append(service)
    return MeshConfig(tuple(sorted(services, key=lambda s: s.name)),
                      tuple(sorted(external, key=lambda e: e.name)))


def _service(key: Scalar, body: Node, r: Reader, external: Mapping[str, str],
             known: KnownInstances | None, outside: Scalar | None = None
             ) -> ServiceConfig | None:
    """external: proto service -> the external service its calls go to (other than this
    one); outside: the key of external.NAME when this service is that external service."""
    path = join("services", key.text)
    name = r.check(names.check_service, key.text, key, path, "service name")
    m = r.map(body, path, "a map of the service's rules (balancer, timeout, routes, ...)")
    if m is None:
        return None
    f = r.fields(m, path, SERVICE_KEYS)
    if outside is not None:
        for rule, why in EXTERNAL_CANNOT.items():
            if rule in f:
                r.error(f[rule], join(path, rule), f"{show(key.text)} is an external service "
                        f"(external, line {outside.line}): {why}")
    balancer = (r.choice(f["balancer"], join(path, "balancer"), PICKER_KINDS, "balancer")
                if "balancer" in f else None)
    timeout = r.duration(f["timeout"], join(path, "timeout")) if "timeout" in f else None
    max_timeout = (r.duration(f["max_timeout"], join(path, "max_timeout"))
                   if "max_timeout" in f else None)
    if "max_timeout" in f:
        check_order(r, timeout, max_timeout, f["max_timeout"], join(path, "max_timeout"))
    subsets = _subsets(f["subsets"], join(path, "subsets"), r) if "subsets" in f else {}
    if subsets is not None and known is not None and name is not None:
        _warn_empty(subsets, known.get(name, ()), name, join(path, "subsets"), r)
    limits = Limits(timeout, max_timeout)
    routes = _list(f, "routes", path, r, lambda node, p: read_route(
        node, p, r, subsets, limits, external))
    faults = _list(f, "faults", path, r, lambda node, p: read_fault(node, p, r, external))
    rate_limit = (read_rate_limit(f["rate_limit"], join(path, "rate_limit"), r)
                  if "rate_limit" in f else None)
    retry = read_retry(f["retry"], join(path, "retry"), r, external) if "retry" in f else None
    hedge = read_hedge(f["hedge"], join(path, "hedge"), r, external) if "hedge" in f else None
    if retry is not None and hedge is not None:
        check_exclusive(r, retry, hedge, f["hedge"], join(path, "hedge"))
    outlier = read_outlier(f["outlier"], join(path, "outlier"), r) if "outlier" in f else None
    if name is None or subsets is None or any(
            key in f and value is None for key, value in (
                ("retry", retry), ("hedge", hedge), ("outlier", outlier))):
        return None
    return ServiceConfig(name, balancer, timeout, max_timeout,
                         tuple(s for _, s in sorted(subsets.values(), key=lambda v: v[1].name)),
                         tuple(routes), tuple(faults), rate_limit, retry, hedge, outlier)


def _list(f: Mapping[str, Node], key: str, path: str, r: Reader,
          read: Callable[[Node, str], Rule | None]) -> list[Rule]:
    """Read each item of the list f[key]; warn about items an earlier one always shadows."""
    if key not in f:
        return []
    lpath = join(path, key)
    seq = r.seq(f[key], lpath, f"a list of {key} (first match wins)")
    items: list[Rule] = []
    shadow = _Shadow()
    for i, node in enumerate(seq.items if seq else ()):
        item = read(node, f"{lpath}[{i}]")
        if item is not None:
            items.append(item)
            shadow.check(item.match, i, node, f"{lpath}[{i}]", key, r)
    return items


class _Shadow:
    """Finds rules that an earlier rule of the same list always matches first (first match
    wins): an earlier rule without metadata conditions on every call, on every method of the
    service, or on the same method. One dict lookup per rule."""

    def __init__(self) -> None:
        self.everything: int | None = None
        self.services: dict[str, int] = {}
        self.methods: dict[str, int] = {}

    def check(self, match: Match, index: int, node: Node, path: str, what: str, r: Reader
              ) -> None:
        earlier = self.everything
        if earlier is None and match.method is not None:
            earlier = self.services.get(match.method.service)
            if earlier is None and match.method.method is not None:
                earlier = self.methods.get(str(match.method))
        if earlier is not None:
            r.warn(node, path, f"never applies: {what}[{earlier}] matches every call it "
                               "matches, and the first match wins")
        elif not match.metadata:
            if match.method is None:
                self.everything = index
            elif match.method.method is None:
                self.services.setdefault(match.method.service, index)
            else:
                self.methods.setdefault(str(match.method), index)


def _subsets(node: Node, path: str, r: Reader) -> dict[str, tuple[Scalar, Subset]] | None:
    m = r.map(node, path, "a map of subset names to labels, e.g. {canary: {version: v2}}")
    if m is None:
        return None
    out: dict[str, tuple[Scalar, Subset]] = {}
    ok = True
    for key, body in m.items:
        spath = join(path, key.text)
        name = r.check(names.check_subset_name, key.text, key, path, "subset")
        labels = r.map(body, spath, "a map of instance labels, e.g. {version: v2}")
        pairs: list[tuple[str, str]] = []
        for lkey, lvalue in labels.items if labels else ():
            value = r.text(lvalue, join(spath, lkey.text), "a label value")
            if value is None:
                continue
            try:
                names.check_label(lkey.text, value, "label")
                pairs.append((lkey.text, value))
            except ValueError as err:
                r.error(lkey, spath, str(err))
        if name is None or labels is None:
            ok = False
            continue
        out[name] = (key, Subset(name, tuple(sorted(pairs))))
    # An unreadable subset name must not turn every route's `to` into "unknown subset".
    return out if ok else None


def _warn_empty(subsets: Mapping[str, tuple[Scalar, Subset]],
                instances: Sequence[Mapping[str, str]], service: str, path: str,
                r: Reader) -> None:
    for key, subset in subsets.values():
        if not any(subset.selects(labels) for labels in instances):
            labels = ", ".join(f"{k}={v}" for k, v in subset.labels) or "none"
            r.warn(key, join(path, subset.name), f"selects no instance of {service} today "
                                                 f"(labels {labels})")


def _external(key: Scalar, body: Node, r: Reader, claimed: dict[str, str],
              known: KnownInstances | None, serving: ServingProtos | None
              ) -> ExternalService | None:
    path = join("external", key.text)
    name = r.check(names.check_service, key.text, key, path, "external service name")
    m = r.map(body, path, "a map with addresses, proto_services and optionally tls")
    if m is None:
        return None
    f = r.fields(m, path, EXTERNAL_KEYS)
    addresses = _names(r, f, m, path, "addresses", names.check_address, "HOST:PORT", "address")
    protos = _names(r, f, m, path, "proto_services", names.check_proto_service,
                    "a proto service such as weather.v1.Forecast", "proto service")
    for node, proto in protos or ():
        owner = claimed.setdefault(proto, name or key.text)
        if owner != (name or key.text):
            r.error(node, join(path, "proto_services"), f"{proto} is already routed to "
                                                        f"external service {owner}")
        elif serving and serving.get(proto):
            r.warn(node, join(path, "proto_services"), f"{proto} is also served by mesh "
                   f"service {', '.join(sorted(serving[proto]))}: its calls go to external "
                   f"service {key.text}, which the config names explicitly (the "
                   "grpcmesh-service header still reaches a mesh service)")
    if known and known.get(key.text):
        r.warn(key, path, f"a mesh service named {show(key.text)} has "
               f"{len(known[key.text])} registered instance(s): calls that name it in the "
               "grpcmesh-service header go to this external service")
    tls = _tls(f["tls"], join(path, "tls"), r) if "tls" in f else None
    if name is None or addresses is None or protos is None or (tls is None and "tls" in f):
        return None
    return ExternalService(name, tuple(a for _, a in addresses), tuple(p for _, p in protos), tls)


def _names(r: Reader, f: Mapping[str, Node], m: Map, path: str, key: str,
           check: Callable[[str, str], object], what: str, field: str
           ) -> list[tuple[Node, str]] | None:
    """A required, non-empty list of distinct strings, each passing check(value, field)."""
    node = r.require(f, key, m, path)
    seq = None if node is None else r.seq(node, join(path, key), f"a list of {what}")
    if seq is None:
        return None
    if not seq.items:
        r.error(seq, join(path, key), f"is empty: give at least one ({what})")
    out: list[tuple[Node, str]] = []
    seen: dict[str, int | None] = {}
    for i, item in enumerate(seq.items):
        ipath = f"{join(path, key)}[{i}]"
        text = r.text(item, ipath, what)
        if text is None or r.check(check, text, item, ipath, field) is None:
            continue
        if text in seen:
            r.error(item, ipath, f"{show(text)} is listed twice (first at line {seen[text]})")
            continue
        seen[text] = item.line
        out.append((item, text))
    return out if len(out) == len(seq.items) and out else None


def _tls(node: Node, path: str, r: Reader) -> Tls | None:
    m = r.map(node, path, "a map with server_name and/or ca_file (or {} for the defaults)")
    if m is None:
        return None
    f = r.fields(m, path, ("server_name", "ca_file"))
    server_name = ca_file = None
    ok = True
    if "server_name" in f:
        text = r.text(f["server_name"], join(path, "server_name"), "a hostname")
        server_name = None if text is None else r.check(
            names.check_hostname, text, f["server_name"], join(path, "server_name"))
        ok = server_name is not None
    if "ca_file" in f:
        ca_file = r.text(f["ca_file"], join(path, "ca_file"), "a file path")
        if ca_file is not None and not os.path.isabs(ca_file):
            r.error(f["ca_file"], join(path, "ca_file"), f"{show(ca_file)} is not an absolute "
                    "path: the sidecars read it, each from its own working directory")
            ca_file = None
        ok = ok and ca_file is not None
    return Tls(server_name, ca_file) if ok else None
