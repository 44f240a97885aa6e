"""The benchmark scripts run end to end (`--quick`) and end with their JSON figures.

Timings and qualities are never asserted (the numbers of a smoke run mean nothing); this only
keeps the scripts working as the library changes under them.
"""

import json
import math
import os
import subprocess
import sys

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("script, keys", [
    ("engine_overhead.py", ["fit_throughput_ratio", "head_only_step_ratio",
                            "child_fixed_cost_share"]),
    ("quality.py", ["evolution_avg_test_accuracy", "evolution_params_per_task", "best_baseline",
                    "best_baseline_avg_test_accuracy", "full_finetune_params_per_task",
                    "bookkeeping_share"]),
    ("serving.py", ["latency_ratio_32_vs_1_task", "routed_one_task_ratio", "routed_speedup",
                    "export_overhead_ratio", "inprocess_p50_ms", "grpc_p50_ms", "grpc_p99_ms",
                    "rest_p50_ms", "rest_p99_ms", "grpc_overhead_ms", "rest_overhead_ms",
                    "failed_requests_during_swaps", "rss_growth_mb", "requests_fuzzed",
                    "server_alive_after_fuzz"]),
    ("tuning.py", ["chosen_shape", "chosen_learning_rate", "wall_seconds"]),
    ("grouping.py", ["seconds_n16", "seconds_n20", "peak_mb_n16", "compile_seconds",
                     "milp_agrees_n12", "milp_agrees"]),
    ("agents.py", ["speedup", "strong_speedup", "sequential_avg_test_accuracy",
                   "agents_avg_test_accuracy", "store_ops_share", "train_steps_per_task",
                   "gc_reclaimed_bytes"]),
])
def test_quick_run_ends_with_one_json_object_of_figures(script, keys, tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, os.path.join(_REPO, "benchmarks", script), "--quick"],
                        capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
  assert proc.returncode == 0, proc.stderr[-4000:]
  lines = proc.stdout.strip().splitlines()
  assert len(lines) > 2, proc.stdout  # a table comes first
  figures = json.loads(lines[-1])
  for key in keys:
    assert key in figures, (key, sorted(figures))
    if key in ("best_baseline", "chosen_shape"):
      assert isinstance(figures[key], str) and figures[key], (key, figures)
    elif script == "grouping.py" and key != "compile_seconds":
      # The quick run stops at small n: the large-n figures are null, n=8 is checked by milp.
      assert figures[key] is True if key == "milp_agrees" else figures[key] is None, figures
    elif key in ("sequential_avg_test_accuracy", "agents_avg_test_accuracy"):
      assert figures[key] and all(0 <= v <= 1 for v in figures[key]), (key, figures)
    elif key == "train_steps_per_task":  # the same training per task both ways
      assert figures[key]["agents"] == figures[key]["sequential"], figures[key]
      assert all(v > 0 for v in figures[key]["agents"].values()), figures[key]
    elif key == "chosen_learning_rate":
      assert figures[key] and all(isinstance(v, float) for v in figures[key].values()), figures
    else:
      assert isinstance(figures[key], (int, float)) and math.isfinite(figures[key]), (key, figures)
  if script == "tuning.py":
    assert figures["chosen_shape"] in figures["shapes"], figures
  if script == "quality.py":
    assert figures["best_baseline"] in figures["methods"], (figures["best_baseline"],
                                                            sorted(figures["methods"]))
