"""The benchmark scripts run end to end (`--quick`) and end with their JSON figures (quality and tuning).

The check is `quick_run` (tests/benchmarks/conftest.py); the scripts are split over files so the
two test workers share them.
"""

import pytest


@pytest.mark.parametrize("script, keys", [
    ("quality.py", ["evolution_avg_test_accuracy", "evolution_params_per_task", "best_baseline",
                    "best_baseline_avg_test_accuracy", "full_finetune_params_per_task",
                    "bookkeeping_share"]),
    ("tuning.py", ["chosen_shape", "chosen_learning_rate", "wall_seconds"]),
])
def test_quick_run_ends_with_one_json_object_of_figures(script, keys, quick_run):
  quick_run(script, keys)
