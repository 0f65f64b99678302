"""The registry: a pure store, its gRPC service, persistence and the client sidecars use."""
