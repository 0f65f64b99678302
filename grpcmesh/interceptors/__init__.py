"""Interceptors: the per-call rules of the sidecar's data path, in one chain (chain.py).

The public API for users' own interceptors is Interceptor, CallView, Answer and Delay (api.py);
docs/interceptors.md documents it with a complete example.
"""
from grpcmesh.interceptors.api import Answer, CallView, Delay, Interceptor

__all__ = ["Answer", "CallView", "Delay", "Interceptor"]
