"""The mesh config (issue 10): per-service rules and external services, from a YAML file.

    report = check_file("mesh.yaml")          # or check_text(text, "mesh.yaml")
    for line in report.lines(): print(line)   # FILE:LINE: services.orders.timeout: ...
    config = report.unwrap()                  # MeshConfig, or ConfigInvalid
    stored = config.canonical_json()          # what the registry keeps; from_data() reads it

Modules: yamlnodes (YAML to nodes that keep their line), durations, schema (the frozen
values), reader (typed reads that collect errors), rules and validate (nodes to values),
source (the entry points). All pure: no sockets, no asyncio.
"""
from grpcmesh.config.durations import Duration
from grpcmesh.config.problems import ConfigInvalid, Problem
from grpcmesh.config.schema import (
    Abort,
    Delay,
    ExternalService,
    Fault,
    Match,
    MeshConfig,
    MethodPattern,
    RateLimit,
    Route,
    ServiceConfig,
    Subset,
    Tls,
)
from grpcmesh.config.source import (
    MAX_CONFIG_BYTES,
    Report,
    check_data,
    check_file,
    check_text,
    from_data,
    parse_text,
)
from grpcmesh.config.validate import KnownInstances, ServingProtos

__all__ = [
    "MAX_CONFIG_BYTES", "Abort", "ConfigInvalid", "Delay", "Duration", "ExternalService",
    "Fault", "KnownInstances", "Match", "MeshConfig", "MethodPattern", "Problem", "RateLimit",
    "Report", "Route", "ServiceConfig", "ServingProtos", "Subset", "Tls", "check_data",
    "check_file", "check_text", "from_data", "parse_text",
]
