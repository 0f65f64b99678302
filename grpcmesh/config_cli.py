"""`grpcmesh config check | apply | show`: the mesh config from the command line.

apply checks the file here first, exactly as check does (errors: exit 1, nothing sent), then
sends the file's text, not its canonical form, so that the registry validates it again and
reports its own errors as FILE:LINE too: a CLI older than the registry cannot push a config the
registry would read differently. Warnings come from the registry's check, which knows the
instances (subsets that select none today) as well as the rules that never apply.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import grpc
import yaml

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh import config
from grpcmesh.clock import iso_utc
from grpcmesh.commands import CliError, _registry_call
from grpcmesh.registry.model import CLIENT_ROLE, ROLE_LABEL, PushedConfig
from grpcmesh.sidecar_config import digest_of


async def cmd_config(args: argparse.Namespace) -> int:
    command = {"check": check, "apply": apply, "show": show}[args.config_command]
    return await command(args)


def _read(path: str, known: config.KnownInstances | None = None,
          serving: config.ServingProtos | None = None) -> config.Report:
    try:
        return config.check_file(path, known, serving)
    except OSError as err:
        raise CliError(f"cannot read {path}: {err.strerror or err}") from None


def _load(path: str) -> tuple[bytes, config.Report]:
    """The file's bytes and their check: what is checked here is what is sent."""
    try:
        with open(path, "rb") as f:
            data = f.read(config.MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise CliError(f"cannot read {path}: {err.strerror or err}") from None
    if len(data) > config.MAX_CONFIG_BYTES:
        return data, _read(path)  # names the file's full size
    return data, config.check_text(data, path)


def _warnings(count: int) -> str:
    return f"; {count} warning{'s' if count > 1 else ''}" if count else ""


async def check(args: argparse.Namespace) -> int:
    report = _read(args.file)
    if report.config is not None and args.registry:
        cfg = report.config
        known = await _known_instances(args, [*(s.name for s in cfg.services),
                                              *(e.name for e in cfg.external)])
        serving = await _serving(args, [p for e in cfg.external for p in e.proto_services])
        report = _read(args.file, known, serving)
    for line in report.lines():
        print(line, file=sys.stderr)
    if report.config is None:
        return 1
    print(f"{args.file}: ok: {report.config.summary()}{_warnings(len(report.warnings))}")
    return 0


async def apply(args: argparse.Namespace) -> int:
    text, report = _load(args.file)
    if report.config is None:
        for line in report.lines():
            print(line, file=sys.stderr)
        return 1
    try:
        resp = await _registry_call(args, "ApplyConfig",
                                    pb.ApplyConfigRequest(text=text, source=args.file))
    except CliError as err:
        if err.code != grpc.StatusCode.INVALID_ARGUMENT:
            raise
        # The registry's own check found errors (it may be newer than this CLI): one per line.
        for line in err.details.splitlines():
            print(line, file=sys.stderr)
        print(f"grpcmesh config: the registry refused {args.file}; the config in force is "
              "unchanged", file=sys.stderr)
        return 1
    for line in resp.warnings:
        print(line, file=sys.stderr)
    version = resp.config.version
    if resp.changed:
        print(f"{args.file}: applied: version {version}: {report.config.summary()}"
              f"{_warnings(len(resp.warnings))}")
    else:
        print(f"{args.file}: unchanged: version {version} already has this content"
              f"{_warnings(len(resp.warnings))}")
    return 0


async def show(args: argparse.Namespace) -> int:
    resp = await _registry_call(args, "GetConfig", pb.GetConfigRequest())
    pushed = PushedConfig.from_proto(resp.config)
    try:
        rules = _natural_order(json.loads(pushed.canonical_json))
    except ValueError as err:
        raise CliError(f"the registry sent a config that is not JSON: {err}") from None
    applied_at = None if pushed.applied_at is None else iso_utc(pushed.applied_at)
    if args.json:
        print(json.dumps({"version": pushed.version, "applied_at": applied_at,
                          "digest": digest_of(pushed.canonical_json), "config": rules},
                         indent=2, ensure_ascii=False))
        return 0
    if pushed.version == 0:
        print("# mesh config version 0: none applied, no rules")
    else:
        print(f"# mesh config version {pushed.version}, applied {applied_at}\n"
              f"# sha256 {digest_of(pushed.canonical_json)}")
    print(render(rules), end="")
    return 0


def _natural_order(data: Any) -> Any:
    """The canonical form in the file's order of keys (balancer, timeout, ..., not sorted as
    in the JSON), if this CLI can read it; as it came otherwise (from a newer registry)."""
    report = config.check_data(data)
    return data if report.config is None else report.config.to_dict()


def render(rules: Any) -> str:
    """The canonical form as YAML: readable, and a file that applies to the same version."""
    text: str = yaml.safe_dump(rules, sort_keys=False, allow_unicode=True,
                               default_flow_style=False, width=100)
    return text


async def _known_instances(args: argparse.Namespace, services: list[str]
                           ) -> dict[str, list[dict[str, str]]]:
    """service -> its registered instances' labels (a service never registered has none;
    client-only sidecars' announcements are no endpoints a subset could select)."""
    return {name: [dict(inst.labels) for inst in await _resolve(
        args, pb.ResolveRequest(service=name))
        if inst.labels.get(ROLE_LABEL) != CLIENT_ROLE] for name in services}


async def _serving(args: argparse.Namespace, protos: list[str]) -> dict[str, list[str]]:
    """proto service -> the mesh services whose registered instances serve it."""
    return {proto: sorted({inst.service for inst in await _resolve(
        args, pb.ResolveRequest(proto_service=proto))}) for proto in protos}


async def _resolve(args: argparse.Namespace, request: pb.ResolveRequest) -> list[pb.Instance]:
    """The registered instances the request asks for; none when the registry knows none."""
    try:
        resp = await _registry_call(args, "Resolve", request)
    except CliError as err:
        if err.code != grpc.StatusCode.NOT_FOUND:
            raise
        return []
    return list(resp.instances)
