"""The example service (grpcmesh.example.v1.Echo) used by the demo, tests and benchmarks."""
