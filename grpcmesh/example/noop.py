"""An interceptor that does nothing: scripts/bench_proxy.py's `outbound-interceptor` measures
what one interceptor in the chain costs per call (`--interceptor grpcmesh.example.noop:factory`).
"""
from __future__ import annotations

from grpcmesh.interceptors import Interceptor


def factory() -> Interceptor:
    return Interceptor()
