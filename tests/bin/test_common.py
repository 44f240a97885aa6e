"""The entry points' shared behaviour: --help shows the shared flags, a user error is one line
with exit status 2, anything else keeps its traceback (exit status 1)."""

import os
import subprocess
import sys

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def _run_main(body):
  code = ("import sys; sys.argv = ['job']\n"
          "from bin import common\n"
          "from mtsys import errors\n"
          f"def main(argv):\n  {body}\n"
          "common.run(main)\n")
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=120, cwd=_REPO, env=_ENV)


@pytest.mark.parametrize("job", ["evolve", "baselines"])
def test_help_lists_the_shared_flags(job):
  done = subprocess.run([sys.executable, os.path.join(_REPO, "bin", f"{job}.py"), "--help"],
                        capture_output=True, text=True, timeout=120, env=_ENV)
  for flag in ("--config", "--strategy", "--num_gpus", "--cpu_devices", "--results_json"):
    assert f"  {flag}:" in done.stdout, (flag, done.stdout[-2000:])


def test_user_error_is_one_line_and_exit_status_2():
  done = _run_main("raise errors.DataError(\"Task 'x': label 12 is out of range [0, 10).\")")
  assert done.returncode == 2
  # (TensorFlow may log a CUDA probe line first; the error is the last line, alone.)
  assert done.stderr.splitlines()[-1] == "Error: Task 'x': label 12 is out of range [0, 10)."
  assert "Traceback" not in done.stderr


def test_other_errors_keep_their_traceback_and_exit_status_1():
  done = _run_main("raise ValueError('an internal shape mismatch')")
  assert done.returncode == 1
  assert "Traceback" in done.stderr
  assert "ValueError: an internal shape mismatch" in done.stderr


def test_bad_config_through_the_real_entry_point(tmp_path):
  config = tmp_path / "bad.textproto"
  config.write_text('root { vit: "tiny/4" image_size: 8 channels: 1 }\n'
                    'task { name: "t" num_classes: 0 }\n')
  done = subprocess.run([sys.executable, os.path.join(_REPO, "bin", "evolve.py"),
                         f"--config={config}", f"--system_dir={tmp_path}/s"],
                        capture_output=True, text=True, timeout=300, env=_ENV)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1] == (
      "Error: bad.textproto: task[0].num_classes: expected a positive integer, got 0")
  assert "Traceback" not in done.stderr
  assert not (tmp_path / "s").exists()
