"""The benchmark smoke runs (`--quick`): one check shared by the files of this directory.

They are split over several files so that pytest-xdist (`--dist loadfile`, one file per worker at
a time) can spread them over both workers: together they are the suite's longest stretch.
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


@pytest.fixture(name="quick_run")
def _quick_run(tmp_path):
  """`quick_run(script, keys)`: see `check_quick_run`."""
  return lambda script, keys: check_quick_run(script, keys, tmp_path)


def check_quick_run(script, keys, tmp_path):
  """Runs `benchmarks/<script> --quick` in `tmp_path`; checks its last line holds `keys`."""
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
    elif key.startswith(("hoa_", "tag_")):  # the chars-lite part, trained for real (tiny)
      assert isinstance(figures[key], float) and math.isfinite(figures[key]), (key, figures)
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
