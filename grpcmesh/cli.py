"""The `grpcmesh` command line: flags, their checks and the entry point (commands.py acts).

Daemons (registry, sidecar, example-server) log to stderr and print one JSON line with their
bound addresses to stdout once they are ready, so scripts can start them on port 0.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import uvloop

from grpcmesh import names
from grpcmesh.balance.picker import PICKER_KINDS
from grpcmesh.commands import COMMANDS, CliError, UsageError
from grpcmesh.registry.client import parse_registry_addresses
from grpcmesh.registry.limits import RegistryLimits
from grpcmesh.relay.limits import RelayLimits
from grpcmesh.relay.settings import DEFAULT_MAX_MESSAGE_BYTES

DEFAULT_REGISTRY = "127.0.0.1:7700"
# The mesh's own daemons run on uvloop: about 10% less CPU per forwarded call than asyncio's
# default loop (docs/performance.md). Apps (example-server) and one-shot commands keep the
# standard loop, like most users' apps.
UVLOOP_COMMANDS = frozenset({"sidecar", "registry"})


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _typed(check: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a names.* check (its ValueError message becomes the error)."""
    def convert(text: str) -> Any:
        try:
            return check(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return convert


ADDRESS = _typed(names.check_address)
LISTEN = _typed(names.check_listen_address)
SERVICE = _typed(names.check_service)
PROTO = _typed(names.check_proto_service)
LABEL = _typed(names.parse_label)
REGISTRY = _typed(parse_registry_addresses)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _balancer(text: str) -> tuple[str, str]:
    """[SERVICE=]KIND; an empty service means the default for every service."""
    service, sep, kind = text.rpartition("=")
    if kind not in PICKER_KINDS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: balancer {kind!r} is unknown: expected one of {', '.join(PICKER_KINDS)}")
    if sep:
        try:
            names.check_service(service, "--balancer service")
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return service, kind


def _window(text: str) -> int:
    number = text.removesuffix("s")
    if not number.isdigit() or not 1 <= int(number) <= 60:
        raise argparse.ArgumentTypeError(f"{text!r}: expected whole seconds from 1s to 60s")
    return int(number)


def _addresses(text: str) -> list[str]:
    return [ADDRESS(part) for part in text.split(",")]


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _status_code(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 16:
        raise argparse.ArgumentTypeError(f"{text!r} is not a gRPC status code (0-16)")
    return int(text)


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 100:  # (NaN fails this too)
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage (0-100)")
    return value


def _store_spec(text: str) -> str:
    if text.startswith("etcd:"):
        from grpcmesh.registry.etcd_store import parse_etcd_url

        try:
            parse_etcd_url(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix("--store ")) from None
        return text
    if text != "memory" and not (text.startswith("sqlite:") and len(text) > len("sqlite:")):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not 'memory', 'sqlite:PATH' or 'etcd://HOST:PORT[,HOST:PORT...]"
            "[/PREFIX]'")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="grpcmesh", description="A gRPC-native service mesh.")
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="stderr log level (any case)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    p = sub.add_parser("registry", help="run the registry service",
                       description="Run the registry: register/keep-alive/watch API, "
                                   "grpc.health.v1 and reflection on one port.")
    p.add_argument("--listen", type=LISTEN, default=DEFAULT_REGISTRY, metavar="HOST:PORT",
                   help=f"address to serve on (default {DEFAULT_REGISTRY})")
    p.add_argument("--store", type=_store_spec, default="memory",
                   metavar="memory|sqlite:PATH|etcd://HOST:PORT[,...][/PREFIX]",
                   help="where the registry's state lives (default memory: this process; "
                        "sqlite:PATH also keeps registry-checked instances and the config "
                        "across restarts; etcd://: shared by any number of registry replicas, "
                        "default prefix /grpcmesh)")
    p.add_argument("--warmup", type=_positive_float, default=10.0, metavar="SECONDS",
                   help="after a start, how long watchers keep instances this registry has "
                        "not heard from yet (sidecars re-register within their TTL; default 10)")
    p.add_argument("--descriptor-set", action="append", default=[], metavar="FILE",
                   help="a FileDescriptorSet (protoc --include_imports "
                        "--descriptor_set_out=FILE): method kinds for instances registered "
                        "without them, such as apps that serve no reflection, so that sidecars "
                        "forward their calls on the unary fast path (repeatable)")
    p.add_argument("--config", metavar="FILE",
                   help="the mesh config to start with (docs/config.md): checked as `config "
                        "check` does, and the registry does not start if it has errors; with "
                        "--store sqlite:PATH, applied over the stored config (the same content "
                        "keeps its version)")
    _limit_flags(p.add_argument_group("limits (docs/registry.md)"), RegistryLimits(),
                 REGISTRY_LIMIT_FLAGS)

    p = sub.add_parser("sidecar", help="run a sidecar proxy beside an app",
                       description="Run a sidecar: outbound proxy for the app's calls, "
                                   "registration and health of the app, inbound proxy.")
    p.add_argument("--service", type=SERVICE, required=True, help="the app's mesh service name")
    p.add_argument("--app", type=ADDRESS, metavar="HOST:PORT",
                   help="the local app's address; without it the sidecar is outbound only")
    p.add_argument("--registry", type=REGISTRY, required=True, metavar="HOST:PORT[,...]",
                   help="registry addresses, tried in order")
    p.add_argument("--outbound", type=LISTEN, default="127.0.0.1:15001", metavar="HOST:PORT",
                   help="where the app sends its calls (default 127.0.0.1:15001)")
    p.add_argument("--inbound", type=LISTEN, metavar="HOST:PORT",
                   help="accept the mesh's calls for the app here and register this address "
                        "(default: register the app's own address)")
    p.add_argument("--admin", type=LISTEN, default="127.0.0.1:15000", metavar="HOST:PORT",
                   help="HTTP admin port: /live, /ready, /endpoints, /config, /stat, "
                        "/metrics (default 127.0.0.1:15000)")
    p.add_argument("--metrics", action=argparse.BooleanOptionalAction, default=True,
                   help="Prometheus metrics at the admin port's /metrics; --no-metrics saves "
                        "their per-call count (default on; docs/telemetry.md)")
    p.add_argument("--proto-service", type=PROTO, action="append", default=[], metavar="NAME",
                   help="proto service the app serves (repeatable; default: ask its reflection)")
    p.add_argument("--instance-id", help="instance id (default: the registered address; "
                   "client-only: HOSTNAME:OUTBOUND-PORT)")
    p.add_argument("--label", type=LABEL, action="append", default=[], metavar="KEY=VALUE",
                   help="instance label (repeatable)")
    p.add_argument("--ttl", type=int, default=10, metavar="SECONDS",
                   help="lease TTL; the lease is kept alive every TTL/3 (default 10)")
    p.add_argument("--grace-period", type=_positive_float, default=10.0, metavar="SECONDS",
                   help="on SIGTERM, how long calls in flight may take to finish (default 10)")
    p.add_argument("--drain-delay", type=_positive_float, default=1.0, metavar="SECONDS",
                   help="on SIGTERM, wait this long after deregistering before refusing new "
                        "calls, so peers stop sending first (default 1)")
    p.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1,
                   help="processes sharing the listening ports (SO_REUSEPORT), one core each "
                        f"(default: the number of cores, {os.cpu_count() or 1})")
    p.add_argument("--secondary", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--interceptor", action="append", default=[], metavar="MODULE:FACTORY",
                   help="load an interceptor into every call's chain, before the mesh's rules: "
                        "FACTORY() in MODULE returns it (repeatable; docs/interceptors.md)")
    p.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES,
                   help="largest message forwarded either way (default 4 MiB)")
    p.add_argument("--max-metadata-bytes", type=_positive_int, default=16 * 1024,
                   help="largest request metadata accepted, counted as HPACK does "
                        "(default 16384)")
    _limit_flags(p.add_argument_group("limits on what one peer may hold or do (docs/proxy.md)"),
                 RelayLimits(), RELAY_LIMIT_FLAGS)
    p.add_argument("--balancer", type=_balancer, action="append", default=[],
                   metavar="[SERVICE=]KIND",
                   help=f"picker: {', '.join(PICKER_KINDS)} (default peak_ewma); "
                        "SERVICE=KIND sets it for one service (repeatable)")
    p.add_argument("--ewma-decay", type=_positive_float, default=10.0, metavar="SECONDS",
                   help="peak-EWMA decay time (default 10)")
    p.add_argument("--ewma-default-rtt-ms", type=_positive_float, default=30.0, metavar="MS",
                   help="estimate for an endpoint that has not answered yet (default 30)")
    p.add_argument("--failure-penalty", type=_positive_float, default=5.0, metavar="SECONDS",
                   help="latency recorded for a call that fails with UNAVAILABLE, "
                        "RESOURCE_EXHAUSTED, INTERNAL or UNKNOWN, or the server's "
                        "grpc-retry-pushback-ms if longer; 0 turns it off (default 5)")
    p.add_argument("--access-log", metavar="PATH|-",
                   help="write a JSON line per call to PATH (appended), or - for stdout; off "
                        "by default (docs/telemetry.md)")
    p.add_argument("--otlp", type=ADDRESS, metavar="HOST:PORT",
                   help="record a span per call and export it to this OTLP/gRPC collector "
                        "(needs the otlp extra: pip install 'grpcmesh[otlp]'; "
                        "docs/telemetry.md)")
    p.add_argument("--trace-sample-ratio", type=_ratio, default=1.0, metavar="RATIO",
                   help="with --otlp: the share of calls without a traceparent that start a "
                        "trace, 0 to 1 (default 1; calls with one follow their caller's flag)")
    p.add_argument("--access-log-buffer", type=_positive_int, default=10_000, metavar="LINES",
                   help="lines the access log may queue for its writer; past it, lines are "
                        "dropped and counted rather than slowing calls (default 10000)")

    for name, text in (("register", "register an instance the registry health-checks itself"),
                       ("deregister", "remove a registered instance")):
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        _registry_flag(p)
        p.add_argument("--service", type=SERVICE, required=True, help="mesh service name")
        p.add_argument("--address", type=ADDRESS, required=name == "register",
                       metavar="HOST:PORT", help="the instance's address")
        p.add_argument("--instance-id", help="instance id (default: the address)")
        if name == "register":
            p.add_argument("--proto-service", type=PROTO, action="append", default=[],
                           metavar="NAME", help="proto service served (repeatable; default: "
                                                "ask the instance's reflection)")
            p.add_argument("--label", type=LABEL, action="append", default=[],
                           metavar="KEY=VALUE", help="instance label (repeatable)")
        p.add_argument("--owner", default="", help=(
            "owner of the registration (default: the address)" if name == "register" else
            "the owner the instance was registered with; the registry refuses any other "
            "(default: the address)"))

    p = sub.add_parser("services", help="list the mesh's services",
                       description="List services with their proto services and health.")
    _registry_flag(p)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("resolve", help="list one service's instances",
                       description="List the instances of a mesh service, or of the services "
                                   "that serve a proto service (e.g. shop.v1.Orders).")
    _registry_flag(p)
    p.add_argument("name", help="mesh service name or fully-qualified proto service name")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("endpoints", help="show a sidecar's endpoints and why they are picked",
                       description="Show, per service, each endpoint's health, latency "
                                   "estimate, calls in flight, cost, calls and failures, as a "
                                   "sidecar's admin port reports them.")
    p.add_argument("service", nargs="?", help="only this mesh service")
    _admin_flag(p)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("stat", help="success rate, calls/s and latency per service, as the "
                                    "sidecars measured them",
                       description="Per service and direction (outbound: as callers saw it; "
                                   "inbound: as its own sidecars did), or per endpoint of "
                                   "SERVICE: success rate, calls/s and p50/p95/p99 latency "
                                   "over the last WINDOW, added up across the sidecars asked.")
    p.add_argument("service", nargs="?", help="show this mesh service's endpoints")
    _sidecars_flags(p)
    p.add_argument("--window", type=_window, default=30, metavar="DURATION",
                   help="how far back, 1s to 60s (default 30s)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("tap", help="a live line per call through a sidecar",
                       description="Follow the calls through a sidecar as they end: time, "
                                   "direction, method, endpoint, status, latency, attempts "
                                   "(Ctrl-C stops). Lines a slow terminal cannot take are "
                                   "dropped at the sidecar, never held.")
    p.add_argument("service", nargs="?", help="only calls to this mesh service")
    p.add_argument("--method", metavar="NAME", help="only this method (Get, or /pkg.S/Get)")
    _admin_flag(p)
    p.add_argument("--json", action="store_true", help="print each call's JSON line")

    p = sub.add_parser("top", help="a live view of the busiest methods, from the sidecars' "
                                   "/metrics",
                       description="Per service and method, over the last second: calls/s, "
                                   "success rate and p50/p99 latency, busiest first, read from "
                                   "the sidecars' /metrics every second and added up. Outbound "
                                   "calls (as the callers' sidecars saw them) unless --inbound. "
                                   "q or Ctrl-C quits. When stdout is not a terminal, prints "
                                   "one frame and exits.")
    p.add_argument("service", nargs="?", type=SERVICE, help="only this mesh service's methods")
    _sidecars_flags(p)
    p.add_argument("--inbound", action="store_true",
                   help="show inbound calls (as the serving sidecars saw them) instead of "
                        "outbound ones")

    p = sub.add_parser("dashboard", help="a web page of the services, their endpoints and a "
                                         "live chart, from the sidecars",
                       description="Serve a web page (no assets from the internet) that shows, "
                                   "refreshed every second: per service and direction, success "
                                   "rate, calls/s and p50/p95/p99 latency (as grpcmesh stat "
                                   "computes them), a chart of the last minutes, each service's "
                                   "endpoints with the balancer's latency estimate, cost, "
                                   "ejection and share of calls, and the mesh config version.")
    p.add_argument("--listen", type=LISTEN, default="127.0.0.1:7800", metavar="HOST:PORT",
                   help="where the page is served (default 127.0.0.1:7800)")
    p.add_argument("--admin", type=_addresses, default=(), metavar="HOST:PORT[,...]",
                   help="sidecar admin addresses to ask (default: every sidecar that "
                        "publishes one in the registry)")
    _registry_flag(p)
    p.add_argument("--window", type=_window, default=10, metavar="DURATION",
                   help="the figures cover the last DURATION, 1s to 60s (default 10s)")
    p.add_argument("--max-sidecars", type=_positive_int, default=50, metavar="N",
                   help="ask at most N sidecars each second (default 50)")
    p.add_argument("--timeout", type=_positive_float, default=2.0, metavar="S",
                   help="seconds a sidecar or the registry may take to answer (default 2)")

    p = sub.add_parser("config", help="the mesh config: check, apply or show it "
                                      "(docs/config.md)",
                       description="The mesh config: per-service rules (balancer, timeouts, "
                                   "subsets, routes, faults, rate limits) and external "
                                   "services, in one YAML file (docs/config.md).")
    config = p.add_subparsers(dest="config_command", required=True, metavar="COMMAND",
                              parser_class=_Parser)
    c = config.add_parser("check", help="validate a config file",
                          description="Validate FILE offline. Exit 0 with a one-line summary, "
                                      "or 1 with every error, one per line, as FILE:LINE: "
                                      "PATH: message. Warnings (rules that never apply, and "
                                      "with --registry subsets that select no instance "
                                      "today) do not change the exit status.")
    c.add_argument("file", metavar="FILE", help="the YAML config file (at most 1 MiB)")
    c.add_argument("--registry", type=REGISTRY, metavar="HOST:PORT[,...]",
                   help="also ask this registry for the services' instances, and warn about "
                        "subsets that select none of them (default: offline)")
    c = config.add_parser("apply", help="make a config file the mesh's config",
                          description="Check FILE as `config check` does (errors: exit 1, "
                                      "nothing sent), then send it to the registry, which "
                                      "checks it again and applies all of it or nothing, and "
                                      "pushes it to every sidecar. Prints the new version, or "
                                      "'unchanged' when the registry has this content already. "
                                      "Warnings (rules that never apply, subsets that select "
                                      "no instance today) do not change the exit status.")
    c.add_argument("file", metavar="FILE", help="the YAML config file (at most 1 MiB)")
    _registry_flag(c)
    c = config.add_parser("show", help="show the config in force",
                          description="Show the mesh config in force in the registry: its "
                                      "version, when it was applied and its rules in the "
                                      "canonical form, as YAML (which applies as is) or JSON.")
    c.add_argument("--json", action="store_true", help="print JSON")
    _registry_flag(c)

    p = sub.add_parser("example-server", help="run the example Echo service",
                       description="Run grpcmesh.example.v1.Echo with health and reflection. "
                                   "Failures and slow calls happen in the handler, after the "
                                   "request was read. SIGUSR1: stop failing and being slow, "
                                   "and use --recovered-delay-ms. SIGUSR2: write "
                                   "--counts-file now.")
    p.add_argument("--listen", type=LISTEN, default="127.0.0.1:50051", metavar="HOST:PORT")
    p.add_argument("--name", default="echo", help="instance name put in every response")
    p.add_argument("--delay-ms", type=_positive_float, default=0.0, help="delay per call")
    p.add_argument("--fail-code", type=_status_code, default=0,
                   help="fail calls with this gRPC status code (1-16): every call, or "
                        "--fail-percent of them")
    p.add_argument("--fail-percent", type=_percent, default=None, metavar="P",
                   help="with --fail-code: fail P%% of the calls, drawn at random "
                        "(0-100, default 100)")
    p.add_argument("--slow-percent", type=_percent, default=None, metavar="P",
                   help="with --slow-ms: P%% of the calls (0-100), drawn at random, take "
                        "--slow-ms more")
    p.add_argument("--slow-ms", type=_positive_float, default=None, metavar="MS",
                   help="the extra delay of --slow-percent's calls")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the random draws (default: a fresh one each run)")
    p.add_argument("--counts-file", default=None, metavar="PATH",
                   help="write the calls counted per method (calls, failed, slow, cancelled) "
                        "to PATH as JSON, atomically: at start, on SIGUSR2 and at exit")
    p.add_argument("--recovered-delay-ms", type=_positive_float, default=0.0,
                   help="on SIGUSR1, stop failing and use this delay per call (default 0)")

    p = sub.add_parser("demo", help="run a demo mesh on this machine",
                       description="Start a registry, three Echo instances with sidecars and a "
                                   "client calling through its own sidecar; print what happens.")
    p.add_argument("--duration", type=_positive_float, default=0.0,
                   help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--concurrency", type=_positive_int, default=4,
                   help="calls in flight (default 4)")
    return parser


def _limit_flags(group: Any, defaults: Any, flags: Sequence[tuple[str, str]]) -> None:
    """A flag per field of a limits dataclass, named after it, with its default; the values
    are checked when the dataclass is built from them (commands.settings_from)."""
    for name, text in flags:
        default = getattr(defaults, name)
        group.add_argument(f"--{name.replace('_', '-')}", default=default, metavar="N",
                           type=_positive_float if isinstance(default, float) else _positive_int,
                           help=f"{text} (default {default:g})")


# The registry's limits (grpcmesh.registry.limits, docs/registry.md): RegistryLimits field, help.
REGISTRY_LIMIT_FLAGS = (
    ("max_instance_bytes",
     "largest registration, its Instance message serialized, in bytes (at most 1048576)"),
    ("max_string_length",
     "longest string in a registration: names, address, owner, label, method path"),
    ("max_labels", "most labels per registration"),
    ("max_proto_services", "most proto services per registration"),
    ("max_methods", "most methods per registration"),
    ("max_instances",
     "most instances the registry holds; more registrations get RESOURCE_EXHAUSTED"),
    ("max_watchers", "most Watch streams served at once; more get RESOURCE_EXHAUSTED"),
)


# The relay's limits (grpcmesh.relay.limits, docs/proxy.md, "Limits"): RelayLimits field, help.
RELAY_LIMIT_FLAGS = (
    ("max_concurrent_streams",
     "streams one client connection may have open (SETTINGS_MAX_CONCURRENT_STREAMS)"),
    ("stream_window", "bytes a peer may send on a stream before the relay passed them on"),
    ("write_buffer_bytes", "output queued for a peer before the relay stops reading it"),
    ("max_unread_control_bytes",
     "control frames queued for a peer that does not read, before its connection is aborted"),
    ("control_frames_burst", "PING, SETTINGS, PRIORITY and unknown frames allowed in a burst"),
    ("control_frames_per_second", "... and per second after it"),
    ("max_empty_frames", "DATA, HEADERS or CONTINUATION frames in a row with no payload"),
    ("max_continuation_frames", "CONTINUATION frames in one header block"),
    ("reset_min_streams", "rapid reset: streams opened before a connection's resets are judged"),
    ("reset_ratio", "rapid reset: the share of streams reset early that closes the connection"),
    ("reset_min_lifetime", "rapid reset: a stream reset sooner than this (seconds) is early"),
    ("max_path_bytes", "longest :path accepted (RESOURCE_EXHAUSTED beyond)"),
    ("max_connections", "client connections per listener and worker; more are closed at once"),
    ("handshake_timeout", "seconds a new connection has to send its preface and SETTINGS"),
    ("idle_timeout", "seconds a client connection may have no stream before it is drained"),
    ("stall_timeout", "seconds a peer's output may stay over --write-buffer-bytes"),
    ("listen_backlog", "the listening sockets' accept queue"),
    ("retry_buffer_bytes", "request bytes a call holds until it commits, to send it again"),
    ("retry_buffer_total_bytes", "request bytes all calls together hold to send again"),
)

def _admin_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--admin", type=ADDRESS, default="127.0.0.1:15000", metavar="HOST:PORT",
                   help="the sidecar's admin address (default 127.0.0.1:15000)")


def _sidecars_flags(p: argparse.ArgumentParser) -> None:
    """--admin for several sidecars, else --registry to find every one (commands.py,
    sidecar_admins)."""
    p.add_argument("--admin", type=_addresses, metavar="HOST:PORT[,...]",
                   help="sidecar admin addresses to ask (default: every sidecar that "
                        "publishes one in the registry)")
    _registry_flag(p)


def _registry_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", type=REGISTRY, default=[DEFAULT_REGISTRY],
                   metavar="HOST:PORT[,...]", help=f"registry (default {DEFAULT_REGISTRY})")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = COMMANDS[args.command]
    try:
        run = uvloop.run if args.command in UVLOOP_COMMANDS else asyncio.run
        return run(handler(args))
    except CliError as err:
        print(f"grpcmesh {args.command}: {err}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1
    except OSError as err:
        print(f"grpcmesh {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


