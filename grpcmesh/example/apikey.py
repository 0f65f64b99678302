"""An example interceptor (docs/interceptors.md): calls must carry a known API key.

    GRPCMESH_API_KEYS=key1,key2 grpcmesh sidecar ... --interceptor grpcmesh.example.apikey:factory

A call without `x-api-key`, or with a key not in GRPCMESH_API_KEYS, gets UNAUTHENTICATED from
the sidecar and never reaches the app; the key is removed before the call goes on, so the app
never sees it.
"""
from __future__ import annotations

import os

import grpc

from grpcmesh.interceptors import Answer, CallView, Delay, Interceptor


class ApiKey(Interceptor):
    name = "api-key"

    def __init__(self, keys: frozenset[str]) -> None:
        self.keys = keys

    def request(self, call: CallView) -> Answer | Delay | None:
        key = call.header("x-api-key")
        if key is None:
            return Answer(grpc.StatusCode.UNAUTHENTICATED, f"{call.method} needs an x-api-key")
        if key not in self.keys:
            return Answer(grpc.StatusCode.UNAUTHENTICATED,
                          f"the x-api-key sent to {call.method} is not a known key")
        call.remove_header("x-api-key")
        return None


def factory() -> Interceptor:
    keys = frozenset(k.strip() for k in os.environ.get("GRPCMESH_API_KEYS", "").split(",")
                     if k.strip())
    return ApiKey(keys)
