"""grpcmesh: a gRPC-native service mesh (registry, sidecar proxy, health, balancing)."""

__version__ = "0.1.0"
