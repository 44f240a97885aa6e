"""bin/inspect_system.py end to end: every sub-command's output, every bad input's one-line error
(exact text, exit status 2, nothing written), and a system directory left byte for byte as it
was; then cli_lib in process: option checks, and adding a sub-command.

Each run starts TensorFlow (seconds), so the runs are started together once, two at a time, and
the tests check their results."""

import concurrent.futures
import json
import os
import subprocess
import sys

import pytest
from google.protobuf import text_format
from PIL import Image

from mtsys import errors
from mtsys.inspect import cli_lib
from mtsys.inspect import dump
from mtsys.inspect import view
from mtsys.protos import mtsys_pb2

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_BIN = os.path.join(_REPO, "bin", "inspect_system.py")


def _runs(system, out, plain_file):
  """Run name -> (arguments, extra environment). Each sub-command once, each bad input once;
  the variations (--task, --format, ...) are tested in process by test_dump and test_graphs."""
  s = f"--system_dir={system}"
  return {
      "dump": (["dump", s], {}),
      "summary": (["summary", s], {}),
      "summary_json": (["summary", s, "--format=json", "--include_private"], {}),
      "graph": (["graph", s, f"--output={out}/system.png"], {}),
      "flow": (["flow", s, f"--output={out}/flow.svg", "--include_private"], {}),
      "no_system": (["summary", f"--system_dir={out}/nothing"], {}),
      "unknown_task": (["dump", s, "--task=nope"], {}),
      "unwritable": (["graph", s, f"--output={plain_file}/system.svg"], {}),
      "bad_extension": (["graph", s, f"--output={out}/system.jpg"], {}),
      "no_graphviz": (["graph", s, f"--output={out}/nodot.png"], {"PATH": "/nonexistent"}),
      "unknown_command": (["draw", s], {}),
      "missing_output": (["flow", s], {}),
  }


@pytest.fixture(scope="module")
def cli(evolved, digest, tmp_path_factory):
  """Runs every command line of `_runs` against the evolved system, two at a time.

  Returns:
    (name -> CompletedProcess, the output directory, a regular file, the system directory's
    digest before the runs, and after).
  """
  out = tmp_path_factory.mktemp("out")
  plain_file = out / "plain"
  plain_file.write_text("not a directory")
  before = digest(evolved)
  runs = _runs(evolved, out, plain_file)
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    futures = {name: pool.submit(_run, *run) for name, run in runs.items()}
    results = {name: f.result() for name, f in futures.items()}
  return results, out, plain_file, before, digest(evolved)


def _run(args, env):
  return subprocess.run([sys.executable, _BIN] + args, capture_output=True, text=True,
                        timeout=600, cwd=_REPO,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env))


def _ok(cli, name):
  done = cli[0][name]
  assert done.returncode == 0, (name, done.stderr[-3000:])
  return done.stdout


def _error(cli, name):
  """The one error line of a failed run (TensorFlow may log a CUDA probe line before it)."""
  done = cli[0][name]
  assert done.returncode == 2, (name, done.returncode, done.stderr[-3000:])
  assert "Traceback" not in done.stderr and not done.stdout, (name, done.stderr[-3000:])
  return done.stderr.strip().splitlines()[-1]


def test_the_system_directory_is_left_as_it_was(cli):
  _, _, _, before, after = cli
  assert after == before


def test_dump(cli, evolved):
  system = view.open_system(evolved)
  text = _ok(cli, "dump")
  assert text_format.Parse(text, mtsys_pb2.SystemState()) == (
      view.SystemView.of(system).shown_state())


def test_summary(cli, evolved):
  system = view.open_system(evolved)
  table = _ok(cli, "summary")
  assert table == dump.format_summary(dump.summary(system), hidden_tasks=1)
  rows = json.loads(_ok(cli, "summary_json"))
  assert rows == [r.to_json() for r in dump.summary(system, include_private=True)]
  assert [r["task"] for r in rows] == ["a", "b", "s"]


def test_pictures(cli):
  results, out, _, _, _ = cli
  assert _ok(cli, "graph") == f"Wrote {out}/system.png\n"
  width, height = Image.open(out / "system.png").size
  assert width > 100 and height > 100
  assert _ok(cli, "flow") == f"Wrote {out}/flow.svg\n"
  svg = (out / "flow.svg").read_text()
  assert svg.lstrip().startswith("<?xml") and ">s</text>" in svg  # --include_private


def test_bad_input_is_one_line_naming_it_and_nothing_is_written(cli):
  results, out, plain_file, _, _ = cli
  assert _error(cli, "no_system") == (
      f"Error: No mtsys system at {out}/nothing (missing {out}/nothing/system.pb).")
  assert _error(cli, "unknown_task") == "Error: Unknown task 'nope'; expected one of ['a', 'b']."
  assert _error(cli, "unwritable") == (
      f"Error: Cannot write the picture to {plain_file}/system.svg: {plain_file} is not a "
      "directory.")
  assert _error(cli, "bad_extension") == (
      f"Error: Unknown picture format '.jpg' of {out}/system.jpg; expected a file name ending "
      "in one of ['.svg', '.png', '.dot'].")
  assert _error(cli, "no_graphviz") == (
      "Error: Graphviz's `dot` program was not found on PATH; it draws .png and .svg pictures. "
      "Install it (Debian/Ubuntu: apt-get install graphviz; see the README's \"Inspect a "
      "system\"), or write a .dot file instead.")
  assert _error(cli, "unknown_command") == (
      "Error: Unknown sub-command 'draw'; expected one of ['dump', 'summary', 'graph', 'flow', "
      "'plots', 'report'].")
  assert _error(cli, "missing_output") == "Error: flow needs --output."
  assert sorted(os.listdir(out)) == ["flow.svg", "plain", "system.png"]


def test_sub_commands_check_their_options_before_reading(evolved):
  def run(command, **options):
    lines = []
    cli_lib.run(command, cli_lib.Options(**options), out=lines.append)
    return lines

  with pytest.raises(errors.UserError) as e:
    run("dump", system_dirs=[evolved], output="x.png")
  assert str(e.value) == ("dump does not take --output; it takes ['--system_dir', '--task', "
                          "'--format', '--include_private'].")
  with pytest.raises(errors.UserError, match=r"^summary needs --system_dir\.$"):
    run("summary")
  with pytest.raises(errors.UserError, match=r"^Expected one --system_dir, got 2: "):
    run("summary", system_dirs=[evolved, evolved])
  with pytest.raises(errors.UserError, match=r"^Unknown --format 'xml'; expected one of "
                     r"\['textproto', 'json'\]\.$"):
    run("dump", system_dirs=[evolved], format="xml")
  with pytest.raises(errors.UserError, match=r"^Missing sub-command; expected one of "):
    run(None)
  lines = run("dump", system_dirs=[evolved], task="s", format="json", include_private=True)
  assert len(lines) == 1 and json.loads(lines[0])["paths"][0]["task"] == "s"


def test_a_sub_command_is_one_function_and_one_table_entry(monkeypatch, evolved):
  seen = []
  monkeypatch.setitem(cli_lib.COMMANDS, "tasks", cli_lib.Command(
      lambda options, out: seen.append(options.system_dirs), "List the tasks.",
      options=("system_dirs",), required=("system_dirs",)))
  cli_lib.run("tasks", cli_lib.Options(system_dirs=[evolved]), out=print)
  assert seen == [[evolved]] and "  tasks    List the tasks." in cli_lib.usage()
