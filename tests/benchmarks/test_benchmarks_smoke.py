"""The benchmark scripts run end to end (`--quick`) and end with their JSON figures (engine overhead, serving, grouping).

The check is `quick_run` (tests/benchmarks/conftest.py); the scripts are split over files so the
two test workers share them.
"""

import pytest


@pytest.mark.parametrize("script, keys", [
    ("engine_overhead.py", ["fit_throughput_ratio", "head_only_step_ratio",
                            "child_fixed_cost_share"]),
    ("serving.py", ["latency_ratio_32_vs_1_task", "routed_one_task_ratio", "routed_speedup",
                    "export_overhead_ratio", "inprocess_p50_ms", "grpc_p50_ms", "grpc_p99_ms",
                    "rest_p50_ms", "rest_p99_ms", "grpc_overhead_ms", "rest_overhead_ms",
                    "failed_requests_during_swaps", "rss_growth_mb", "requests_fuzzed",
                    "server_alive_after_fuzz"]),
    ("grouping.py", ["seconds_n16", "seconds_n20", "peak_mb_n16", "compile_seconds",
                     "milp_agrees_n12", "milp_agrees", "hoa_gap_mean", "hoa_gap_max",
                     "tag_gap_mean", "tag_gap_max", "hoa_cost_share", "tag_cost_share"]),
])
def test_quick_run_ends_with_one_json_object_of_figures(script, keys, quick_run):
  quick_run(script, keys)
