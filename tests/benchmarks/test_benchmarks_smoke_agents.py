"""The benchmark scripts run end to end (`--quick`) and end with their JSON figures (agents).

The check is `quick_run` (tests/benchmarks/conftest.py); the scripts are split over files so the
two test workers share them.
"""

import pytest


@pytest.mark.parametrize("script, keys", [
    ("agents.py", ["speedup", "strong_speedup", "sequential_avg_test_accuracy",
                   "agents_avg_test_accuracy", "store_ops_share", "train_steps_per_task",
                   "gc_reclaimed_bytes"]),
])
def test_quick_run_ends_with_one_json_object_of_figures(script, keys, quick_run):
  quick_run(script, keys)
