"""deploy/kubernetes/ (docs/kubernetes.md): every manifest against the Kubernetes API schema
(kubernetes-validate, which ships the schemas: offline), and against grpcmesh itself: the
flags the containers pass exist in `grpcmesh SUBCOMMAND --help`, and every port that a probe
or a Service names is one that a container's flags listen on, on an address the kubelet and
other pods can reach. Each check returns its problems, so that a broken manifest can be
shown to fail it."""
from __future__ import annotations

import copy
import functools
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from grpcmesh.example.server import ECHO_SERVICE
from grpcmesh.registry.server import REGISTRY_SERVICE

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
# Native sidecars (restartPolicy: Always on an init container) are on by default from 1.29; the
# manifests must also hold for the newest schema the validator ships.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
# The flags through which each grpcmesh subcommand listens, with their defaults.
GRPCMESH_LISTEN_FLAGS = {
    "sidecar": {"--outbound": "127.0.0.1:15001", "--admin": "127.0.0.1:15000", "--inbound": None},
    "registry": {"--listen": "127.0.0.1:7700"},
    "example-server": {"--listen": "127.0.0.1:50051"},
}
# grpc.health.v1 names each one serves (grpcmesh/registry/server.py, grpcmesh/example/server.py).
GRPC_HEALTH_NAMES = {"registry": {"", REGISTRY_SERVICE}, "example-server": {"", ECHO_SERVICE}}
SIDECAR_ADMIN_PROBE_PATHS = {"/live", "/ready"}
LOOPBACK = re.compile(r"127\.|localhost$|\[::1\]$|::1$")

Doc = dict[str, Any]


# -- reading the manifests ---------------------------------------------------------------------

def manifest_files() -> list[Path]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return [DEPLOY / name for name in kustomization["resources"]]


def load_manifests() -> list[Doc]:
    return [doc for path in manifest_files()
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_spec(doc: Doc) -> Doc | None:
    if doc.get("kind") in WORKLOADS:
        spec: Doc = doc["spec"]["template"]["spec"]
        return spec
    return None


def pods(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(workload, its pod template) for each workload."""
    for doc in docs:
        if pod_spec(doc) is not None:
            yield doc, doc["spec"]["template"]


def all_containers(spec: Doc) -> list[Doc]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def is_grpcmesh(container: Doc) -> bool:
    """The image is grpcmesh's (deploy/kubernetes/Dockerfile: ENTRYPOINT ["grpcmesh"])."""
    image: str = container["image"]
    return image.rsplit("/", 1)[-1].split(":")[0].split("@")[0] == "grpcmesh"


def grpcmesh_command(container: Doc) -> tuple[str, list[str]]:
    """(subcommand, its arguments), after grpcmesh's global flags."""
    argv = [*container.get("command", ["grpcmesh"]), *container.get("args", [])]
    assert argv[0] == "grpcmesh", f"{container['name']}: runs {argv[0]}, not grpcmesh"
    rest = argv[1:]
    while rest and rest[0].startswith("--"):  # --log-level LEVEL
        rest = rest[1:] if "=" in rest[0] else rest[2:]
    assert rest, f"{container['name']}: no grpcmesh subcommand"
    return rest[0], rest[1:]


def flag_names(args: list[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in args if arg.startswith("--")]


def flag_value(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def listening(container: Doc) -> dict[int, str]:
    """The ports a container's flags listen on, each with the host it binds."""
    if is_grpcmesh(container):
        sub, args = grpcmesh_command(container)
        found: dict[int, str] = {}
        for flag, default in GRPCMESH_LISTEN_FLAGS.get(sub, {}).items():
            address = flag_value(args, flag) or default
            if address is not None:
                host, port = split_host_port(address)
                found[port] = host
        return found
    argv = [*container.get("command", []), *container.get("args", [])]
    if argv and argv[0].rsplit("/", 1)[-1] == "etcd":
        found = {}
        for arg in argv:
            if re.match(r"--listen-(client|peer|metrics)-urls=", arg):
                for url in arg.split("=", 1)[1].split(","):
                    parts = urlsplit(url)
                    assert parts.hostname is not None and parts.port is not None, url
                    found[parts.port] = parts.hostname
        return found
    raise AssertionError(f"{container['name']}: which ports does {container['image']} listen on?")


def reachable(host: str) -> bool:
    """Bound where the kubelet's probes and other pods can reach it (not loopback)."""
    return not LOOPBACK.match(host)


def resolve_port(container: Doc, port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            number: int = declared["containerPort"]
            return number
    return None


@functools.cache
def help_flags(*command: str) -> frozenset[str]:
    result = subprocess.run([sys.executable, "-m", "grpcmesh", *command, "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return frozenset(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", result.stdout))


# -- the checks ------------------------------------------------------------------------------

def schema_problems(docs: list[Doc], version: str) -> list[str]:
    problems = []
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            problems.append(f"{name} (k8s {version}): {path}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError as err:
            problems.append(f"{name}: {err.message}")
    return problems


def flag_problems(docs: list[Doc]) -> list[str]:
    problems = []
    for _, template in pods(docs):
        for container in all_containers(template["spec"]):
            if not is_grpcmesh(container):
                continue
            argv = [*container.get("command", ["grpcmesh"]), *container.get("args", [])]
            sub, args = grpcmesh_command(container)
            global_args = argv[1:len(argv) - len(args) - 1]
            for flag in flag_names(global_args):
                if flag not in help_flags():
                    problems.append(f"{container['name']}: grpcmesh has no {flag}")
            if sub not in GRPCMESH_LISTEN_FLAGS:
                problems.append(f"{container['name']}: no such grpcmesh command here: {sub}")
                continue
            for flag in flag_names(args):
                if flag not in help_flags(sub):
                    problems.append(f"{container['name']}: grpcmesh {sub} has no {flag}")
    return problems


def port_problems(docs: list[Doc]) -> list[str]:
    problems = []
    for workload, template in pods(docs):
        for container in all_containers(template["spec"]):
            where = f"{workload['metadata']['name']}/{container['name']}"
            ports = listening(container)
            for declared in container.get("ports", []):
                number = declared["containerPort"]
                if number not in ports or not reachable(ports[number]):
                    problems.append(f"{where}: declares port {number}, which its flags do not "
                                    f"listen on at a reachable address ({ports})")
            for probe_kind in PROBES:
                probe = container.get(probe_kind)
                if probe is None:
                    continue
                handler = probe.get("grpc") or probe.get("httpGet") or probe.get("tcpSocket")
                if handler is None:  # exec
                    continue
                number = resolve_port(container, handler["port"])
                if number is None or number not in ports or not reachable(ports[number]):
                    problems.append(f"{where}: {probe_kind} port {handler['port']} is not one "
                                    f"its flags listen on at a reachable address ({ports})")
    for service in (d for d in docs if d["kind"] == "Service"):
        name = service["metadata"]["name"]
        selector = service["spec"].get("selector", {})
        selected = [t for _, t in pods(docs)
                    if selector.items() <= t["metadata"].get("labels", {}).items()]
        if not selected:
            problems.append(f"Service {name}: selects no pod template ({selector})")
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for template in selected:
                if not any(
                    (number := resolve_port(c, target)) is not None
                    and number in (ports := listening(c)) and reachable(ports[number])
                    for c in all_containers(template["spec"])
                ):
                    problems.append(f"Service {name}: targetPort {target} is not a port a "
                                    f"selected container listens on at a reachable address")
    return problems


def wiring_problems(docs: list[Doc]) -> list[str]:
    """How the pieces meet: native sidecars, --app, --registry, --store, probes' names."""
    problems = []
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    statefulsets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "StatefulSet"}

    def service_port_problem(host: str, port: int, what: str) -> str | None:
        service = services.get(host)
        if service is None:
            return f"{what}: no Service named {host}"
        if port not in [p["port"] for p in service["spec"]["ports"]]:
            return f"{what}: Service {host} has no port {port}"
        return None

    for workload, template in pods(docs):
        spec = template["spec"]
        for container in all_containers(spec):
            where = f"{workload['metadata']['name']}/{container['name']}"
            defined = {e["name"] for e in container.get("env", [])}
            for arg in [*container.get("command", []), *container.get("args", [])]:
                for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
                    if var not in defined:
                        problems.append(f"{where}: $({var}) is not in its env")
            if not is_grpcmesh(container):
                continue
            sub, args = grpcmesh_command(container)
            for probe_kind in PROBES:
                probe = container.get(probe_kind) or {}
                if "grpc" in probe and sub in GRPC_HEALTH_NAMES:
                    name = probe["grpc"].get("service", "")
                    if name not in GRPC_HEALTH_NAMES[sub]:
                        problems.append(f"{where}: {probe_kind} asks grpc.health.v1 for "
                                        f"{name!r}, which grpcmesh {sub} does not serve")
                path = probe.get("httpGet", {}).get("path")
                if sub == "sidecar" and path is not None and path not in SIDECAR_ADMIN_PROBE_PATHS:
                    problems.append(f"{where}: {probe_kind} path {path} is not /live or /ready")
            if sub == "sidecar":
                if container not in spec.get("initContainers", []) or \
                        container.get("restartPolicy") != "Always":
                    problems.append(f"{where}: the sidecar is not a native sidecar (an init "
                                    "container with restartPolicy: Always)")
                app = flag_value(args, "--app")
                if app is not None:
                    _, app_port = split_host_port(app)
                    others = [c for c in all_containers(spec) if c is not container]
                    if not any(app_port in listening(c) for c in others):
                        problems.append(f"{where}: --app {app}: no container of the pod "
                                        "listens there")
                for address in (flag_value(args, "--registry") or "").split(","):
                    host, port = split_host_port(address)
                    if (problem := service_port_problem(host, port, f"{where} --registry")):
                        problems.append(problem)
            if sub == "registry":
                store = flag_value(args, "--store") or "memory"
                if store.startswith("etcd://"):
                    hosts = store.removeprefix("etcd://").split("/", 1)[0].split(",")
                    for address in hosts:
                        host, port = split_host_port(address)
                        member, _, service_name = host.partition(".")
                        set_name, _, ordinal = member.rpartition("-")
                        etcd = statefulsets.get(set_name)
                        if etcd is None or etcd["spec"]["serviceName"] != service_name or \
                                not ordinal.isdigit() or int(ordinal) >= etcd["spec"]["replicas"]:
                            problems.append(f"{where}: --store {address}: no such StatefulSet "
                                            "member behind a headless Service")
                        elif (problem := service_port_problem(service_name, port,
                                                              f"{where} --store")):
                            problems.append(problem)
    return problems


# -- the tests -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return load_manifests()


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def sidecar_of(docs: list[Doc]) -> Doc:
    container: Doc = find(docs, "Deployment", "echo")["spec"]["template"]["spec"][
        "initContainers"][0]
    return container


def test_every_manifest_is_in_the_kustomization() -> None:
    listed = {p.name for p in manifest_files()}
    present = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_the_example_is_complete(docs: list[Doc]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("StatefulSet", "etcd"), ("Service", "etcd"), ("Deployment", "grpcmesh-registry"),
            ("Service", "grpcmesh-registry"), ("Deployment", "echo")} <= kinds
    assert find(docs, "Deployment", "grpcmesh-registry")["spec"]["replicas"] == 3
    assert find(docs, "StatefulSet", "etcd")["spec"]["replicas"] == 3
    assert find(docs, "Service", "etcd")["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_match_the_kubernetes_schema(docs: list[Doc], version: str) -> None:
    assert schema_problems(docs, version) == []


def test_the_schema_check_fails_on_a_broken_manifest(docs: list[Doc]) -> None:
    registry = find(docs, "Deployment", "grpcmesh-registry")
    wrong_type = copy.deepcopy(registry)
    wrong_type["spec"]["replicas"] = "three"
    unknown_field = copy.deepcopy(registry)
    unknown_field["spec"]["template"]["spec"]["containers"][0]["argz"] = ["registry"]
    no_image = copy.deepcopy(registry)
    del no_image["spec"]["template"]["spec"]["containers"][0]["image"]
    unknown_kind = {"apiVersion": "v1", "kind": "Sidecar", "metadata": {"name": "x"}}
    for broken in (wrong_type, unknown_field, unknown_kind):
        assert len(schema_problems([broken], K8S_VERSIONS[0])) == 1, broken
    # The strict schema catches a misplaced field; a required one missing is Kubernetes' own
    # business at admission (the schemas mark `image` optional, as the API does).
    assert schema_problems([no_image], K8S_VERSIONS[0]) == []
    # Before 1.28 the API had no restartPolicy on init containers: the schema knows it.
    echo = find(docs, "Deployment", "echo")
    (problem,) = schema_problems([echo], "1.27.0")
    assert "restartPolicy" in problem


def test_every_grpcmesh_flag_exists(docs: list[Doc]) -> None:
    assert flag_problems(docs) == []
    used = {sub: set(flag_names(args)) for sub, args in (
        grpcmesh_command(c) for _, t in pods(docs) for c in all_containers(t["spec"])
        if is_grpcmesh(c))}
    assert used["sidecar"] >= {"--service", "--registry", "--app", "--inbound", "--outbound",
                               "--admin"}
    assert used["registry"] >= {"--listen", "--store"}


def test_the_flag_check_fails_on_an_unknown_flag(docs: list[Doc]) -> None:
    broken = copy.deepcopy(docs)
    sidecar_of(broken)["args"] += ["--advertise", "$(POD_IP):16001"]
    assert flag_problems(broken) == ["grpcmesh: grpcmesh sidecar has no --advertise"]


def test_probes_and_services_use_ports_the_flags_listen_on(docs: list[Doc]) -> None:
    assert port_problems(docs) == []


def test_the_port_check_fails_on_a_wrong_port(docs: list[Doc]) -> None:
    broken = copy.deepcopy(docs)
    sidecar_of(broken)["readinessProbe"]["httpGet"]["port"] = 15999
    assert len(port_problems(broken)) == 1
    broken = copy.deepcopy(docs)  # the admin port on loopback: the kubelet cannot reach it
    args = sidecar_of(broken)["args"]
    args[args.index("--admin") + 1] = "127.0.0.1:15000"
    assert len(port_problems(broken)) == 4  # its declared port and its three probes
    broken = copy.deepcopy(docs)
    find(broken, "Service", "grpcmesh-registry")["spec"]["ports"][0]["targetPort"] = 7701
    assert port_problems(broken) == [("Service grpcmesh-registry: targetPort 7701 is not a port "
                                      "a selected container listens on at a reachable address")]


def test_the_pieces_meet(docs: list[Doc]) -> None:
    assert wiring_problems(docs) == []
    sidecar = sidecar_of(docs)
    _, args = grpcmesh_command(sidecar)
    # Registered at the pod's IP (--inbound binds it and registers what it bound).
    assert flag_value(args, "--inbound") == "$(POD_IP):16001"
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_the_wiring_check_fails_on_broken_wiring(docs: list[Doc]) -> None:
    broken = copy.deepcopy(docs)
    echo = find(broken, "Deployment", "echo")["spec"]["template"]["spec"]
    sidecar = echo["initContainers"].pop()
    del sidecar["restartPolicy"]
    echo["containers"].insert(0, sidecar)
    args = sidecar["args"]
    args[args.index("--registry") + 1] = "registry:7700"
    args[args.index("--app") + 1] = "127.0.0.1:50052"
    del sidecar["env"]
    registry = find(broken, "Deployment", "grpcmesh-registry")["spec"]["template"]["spec"]
    registry["containers"][0]["readinessProbe"]["grpc"]["service"] = "grpc.health.v1.Health"
    args = registry["containers"][0]["args"]
    args[args.index("--store") + 1] = "etcd://etcd-3.etcd:2379/grpcmesh"
    sidecar["readinessProbe"]["httpGet"]["path"] = "/healthz"
    problems = wiring_problems(broken)
    assert len(problems) == 8, problems
    for expected in ("$(POD_IP) is not in its env", "not a native sidecar",
                     "--app 127.0.0.1:50052", "no Service named registry",
                     "'grpc.health.v1.Health'", "etcd-3.etcd:2379", "/healthz"):
        assert any(expected in p for p in problems), (expected, problems)


def test_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert any(re.search(r"\bpip install \.(\s|$)", line) for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["grpcmesh"]' in lines
    # It copies what pyproject.toml builds the package from, and those paths exist.
    copied = [arg for line in lines if line.startswith("COPY ") for arg in line.split()[1:-1]]
    assert {"pyproject.toml", "grpcmesh", "generated"} <= set(copied)
    assert all((ROOT / path).exists() for path in copied)
