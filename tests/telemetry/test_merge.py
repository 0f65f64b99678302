"""The primary's merge of its workers' /metrics texts (pure)."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from grpcmesh.telemetry.merge import merged_text


def worker(ok: int, in_flight: int, estimate: float, version: int, connected: int) -> str:
    return f"""# HELP grpcmesh_calls Calls
# TYPE grpcmesh_calls counter
grpcmesh_calls_total{{direction="outbound",service="echo",method="e.E/M",code="OK"}} {ok}
# HELP grpcmesh_call_duration_seconds Duration
# TYPE grpcmesh_call_duration_seconds histogram
grpcmesh_call_duration_seconds_bucket{{direction="outbound",service="echo",method="e.E/M",le="0.001"}} 1
grpcmesh_call_duration_seconds_bucket{{direction="outbound",service="echo",method="e.E/M",le="+Inf"}} {ok}
grpcmesh_call_duration_seconds_count{{direction="outbound",service="echo",method="e.E/M"}} {ok}
grpcmesh_call_duration_seconds_sum{{direction="outbound",service="echo",method="e.E/M"}} 0.5
# HELP grpcmesh_calls_in_flight In flight
# TYPE grpcmesh_calls_in_flight gauge
grpcmesh_calls_in_flight{{direction="outbound",service="echo"}} {in_flight}
# HELP grpcmesh_endpoint_latency_estimate_seconds Estimate
# TYPE grpcmesh_endpoint_latency_estimate_seconds gauge
grpcmesh_endpoint_latency_estimate_seconds{{service="echo",endpoint="a:1"}} {estimate}
# HELP grpcmesh_config_version Version
# TYPE grpcmesh_config_version gauge
grpcmesh_config_version {version}
# HELP grpcmesh_registry_connected Connected
# TYPE grpcmesh_registry_connected gauge
grpcmesh_registry_connected {connected}
"""


def test_counters_and_histograms_sum_and_gauges_follow_their_rule() -> None:
    text = merged_text([worker(3, 1, 0.02, 4, 1), worker(5, 2, 0.05, 3, 0)]).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    call = (("code", "OK"), ("direction", "outbound"), ("method", "e.E/M"), ("service", "echo"))
    assert samples["grpcmesh_calls_total", call] == 8
    series = (("direction", "outbound"), ("method", "e.E/M"), ("service", "echo"))
    bucket = tuple(sorted((*series, ("le", "0.001"))))
    assert samples["grpcmesh_call_duration_seconds_bucket", bucket] == 2
    assert samples["grpcmesh_call_duration_seconds_count", series] == 8
    assert samples["grpcmesh_call_duration_seconds_sum", series] == 1.0
    assert samples["grpcmesh_calls_in_flight", (("direction", "outbound"),
                                                ("service", "echo"))] == 3
    assert samples["grpcmesh_endpoint_latency_estimate_seconds",
                   (("endpoint", "a:1"), ("service", "echo"))] == 0.05
    assert samples["grpcmesh_config_version", ()] == 3
    assert samples["grpcmesh_registry_connected", ()] == 0
