"""bin/inspect_system.py plots end to end: the PNGs of several systems, the skipped plots'
reasons, one-line errors (exit status 2) for no system and an unwritable output directory,
and the system directories left byte for byte as they were; then the option checks in process.

Each run starts TensorFlow (seconds), so the runs are started together, two at a time."""

import concurrent.futures
import os
import subprocess
import sys

import pytest
from PIL import Image

from mtsys import errors
from mtsys.config import loader
from mtsys.inspect import cli_lib
from mtsys.system import synthetic

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_BIN = os.path.join(_REPO, "bin", "inspect_system.py")
_OLD_CONFIG = """
name: "old"
root { vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 5 }
task { name: "a" num_classes: 3 builtin { name: "sklearn_digits" } }
"""


@pytest.fixture(scope="module")
def cli(evolved, digest, tmp_path_factory):
  """Runs the command lines below: (name -> CompletedProcess, the output directory, a regular
  file, the old system's directory, the systems' digests before the runs, and after)."""
  out = tmp_path_factory.mktemp("plots-out")
  plain_file = out / "plain"
  plain_file.write_text("not a directory")
  # A system without history, as systems made before mtsys kept one are.
  old = str(synthetic.make_system(str(out / "old"), loader.parse(_OLD_CONFIG)).root)
  s = f"--system_dir={evolved}"
  runs = {
      "two": ["plots", s, f"--system_dir={old}", f"--output_dir={out}/two"],
      "private": ["plots", s, "--include_private", f"--output_dir={out}/private"],
      "no_system": ["plots", s, f"--system_dir={out}/nothing", f"--output_dir={out}/none"],
      "unwritable": ["plots", s, f"--output_dir={plain_file}/plots"],
  }
  before = [digest(evolved), digest(old)]
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    futures = {name: pool.submit(_run, args) for name, args in runs.items()}
    results = {name: f.result() for name, f in futures.items()}
  return results, out, plain_file, old, before, [digest(evolved), digest(old)]


def _run(args):
  return subprocess.run([sys.executable, _BIN] + args, capture_output=True, text=True,
                        timeout=600, cwd=_REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def _ok(cli, name):
  done = cli[0][name]
  assert done.returncode == 0, (name, done.stderr[-3000:])
  return done.stdout.splitlines()


def _error(cli, name):
  done = cli[0][name]
  assert done.returncode == 2, (name, done.returncode, done.stderr[-3000:])
  assert "Traceback" not in done.stderr and not done.stdout, (name, done.stderr[-3000:])
  return done.stderr.strip().splitlines()[-1]


def _assert_picture(path):
  with Image.open(path) as image:
    assert image.format == "PNG" and image.size[0] >= 300 and image.size[1] >= 200, path


def test_the_system_directories_are_left_as_they_were(cli):
  *_, before, after = cli
  assert after == before


def test_plots_of_two_systems_and_why_some_were_skipped(cli):
  _, out, _, old, _, _ = cli
  lines = _ok(cli, "two")
  names = ["params_per_task-system.png", "best_score-system.png", "hparams.png",
           "mutation_probs.png", "tradeoff.png"]
  assert lines == [f"Wrote {out}/two/{n}" for n in names] + [
      f"Skipped: No history in {old} (a system made before mtsys kept one, or never evolved): "
      "skipping its history plots."]
  assert sorted(os.listdir(out / "two")) == sorted(names)
  for name in names:
    _assert_picture(out / "two" / name)


def test_plots_of_one_system_with_its_private_tasks(cli):
  _, out, _, _, _, _ = cli
  lines = _ok(cli, "private")
  names = ["params_per_task.png", "best_score.png", "hparams.png", "mutation_probs.png"]
  assert lines == [f"Wrote {out}/private/{n}" for n in names] + [
      "Skipped: The quality/size trade-off needs two or more systems (or baselines) with "
      "evaluated paths; found 1: skipping tradeoff.png."]


def test_bad_input_is_one_line_naming_it_and_nothing_is_written(cli):
  _, out, plain_file, _, _, _ = cli
  assert _error(cli, "no_system") == (
      f"Error: No mtsys system at {out}/nothing (missing {out}/nothing/system.pb).")
  assert _error(cli, "unwritable") == (
      f"Error: Cannot write the plots to {plain_file}/plots: {plain_file} is not a directory.")
  assert not os.path.exists(out / "none") and not os.path.exists(out / "nothing")


def _run_in_process(**options):
  lines = []
  cli_lib.run("plots", cli_lib.Options(**options), out=lines.append)
  return lines


def test_options_and_output_directories_are_checked_before_anything_is_read(evolved, tmp_path,
                                                                            digest):
  before = digest(evolved)
  with pytest.raises(errors.UserError, match=r"^plots needs --output_dir\.$"):
    _run_in_process(system_dirs=[evolved])
  with pytest.raises(errors.UserError, match=r"^plots needs --system_dir\.$"):
    _run_in_process(output_dir=str(tmp_path))
  with pytest.raises(errors.UserError) as e:
    _run_in_process(system_dirs=[evolved], output_dir=str(tmp_path), format="json")
  assert str(e.value) == ("plots does not take --format; it takes ['--system_dir', "
                          "'--output_dir', '--include_private'].")
  with pytest.raises(errors.UserError) as e:
    _run_in_process(system_dirs=[evolved], output_dir=f"{evolved}/plots")
  assert str(e.value) == (f"Cannot write the plots to {evolved}/plots: it is inside the system "
                          f"directory {evolved}; choose a directory outside it.")
  plain = tmp_path / "plain"
  plain.write_text("x")
  with pytest.raises(errors.UserError) as e:
    _run_in_process(system_dirs=[evolved], output_dir=str(plain))
  assert str(e.value) == f"Cannot write the plots to {plain}: it is not a directory."
  assert digest(evolved) == before and os.listdir(tmp_path) == ["plain"]
