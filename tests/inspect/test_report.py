"""The HTML report: rendered in headless Chromium (one row per task, every picture loads, the
screenshot is not blank), escaped, written by `bin/inspect_system.py report` and by
`bin/evolve.py --report_dir`, and refused with a clear error, nothing written, for bad input.

The browser tests need Debian's `chromium` (CI installs it, bin/setup_env.sh); without it they
fail, they do not skip. Chromium runs as `chromium --headless --no-sandbox --user-data-dir=TMP`,
every run bounded by a timeout; its stderr chatter (D-Bus, GPU) is ignored."""

import concurrent.futures
import html.parser
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mtsys import testing
from mtsys.config import loader
from mtsys.inspect import dump
from mtsys.inspect import graphs
from mtsys.inspect import report
from mtsys.inspect import view
from mtsys.jobs import evolve
from mtsys.protos import mtsys_pb2
from mtsys.system import store as mstore

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TIMEOUT = 120  # seconds per Chromium run; one takes about 2 s
_SHOWN = ["a", "b"]  # the evolved system's public tasks (s is private)


class _Page(html.parser.HTMLParser):
  """The task rows (their data-task) and the images (their attributes) of an HTML page."""

  def __init__(self, text):
    super().__init__()
    self.rows, self.images = [], []
    self.feed(text)

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == "tr" and "task-row" in (attrs.get("class") or "").split():
      self.rows.append(attrs.get("data-task"))
    if tag == "img":
      self.images.append(attrs)


def _chromium():
  path = shutil.which("chromium")
  assert path, ("Debian's chromium is missing; the report's browser tests need it: apt-get "
                "install chromium (bin/setup_env.sh does it when run as root).")
  return path


def _browse(page, profile, *args):
  done = subprocess.run(
      [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
       "--hide-scrollbars", *args, f"file://{page}"],
      capture_output=True, text=True, timeout=_TIMEOUT)
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stdout


@pytest.fixture(scope="module")
def written(evolved, digest, tmp_path_factory):
  """The evolved system's report (private tasks left out): (its directory, the system's digest
  before, and after)."""
  out = tmp_path_factory.mktemp("report") / "out"
  before = digest(evolved)
  index = report.write_report(evolved, str(out))
  assert index == f"{out}/index.html"
  return out, before, digest(evolved)


@pytest.fixture(scope="module")
def browsed(written, tmp_path_factory):
  """Chromium's DOM of the report once loaded, and its screenshot."""
  out = written[0]
  work = tmp_path_factory.mktemp("chromium")
  dom = _browse(out / "index.html", work / "profile-dom", "--virtual-time-budget=5000",
                "--run-all-compositor-stages-before-draw", "--dump-dom")
  _browse(out / "index.html", work / "profile-shot", "--window-size=1200,2000",
          f"--screenshot={work / 'screenshot.png'}")
  return dom, work / "screenshot.png"


def test_chromium_is_installed():
  _chromium()


def test_the_dom_has_one_row_per_task_and_every_picture_loads(browsed):
  dom, _ = browsed
  page = _Page(dom)
  assert page.rows == _SHOWN
  assert 'data-loaded="true"' in dom  # the page's load handler ran
  names = [i["id"] for i in page.images]
  assert names == ["img-system-graph", "img-knowledge-flow", "img-params_per_task",
                   "img-best_score", "img-hparams", "img-mutation_probs"]
  for image in page.images:
    assert image["src"].startswith("data:image/"), image["id"]  # nothing to fetch
    assert int(image["data-natural-width"]) > 0, image["id"]


def test_the_screenshot_is_not_blank(browsed):
  _, screenshot = browsed
  with Image.open(screenshot) as image:
    assert image.size == (1200, 2000)
    pixels = np.asarray(image.convert("RGB"), dtype=float)
  assert pixels.std() > 20
  assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # text, pictures, colours


def test_the_report_links_its_dumps_and_never_writes_the_system(written, evolved):
  out, before, after = written
  assert after == before
  assert sorted(os.listdir(out)) == ["index.html", "knowledge_flow.svg", "summary.json",
                                     "system.json", "system.textproto", "system_graph.svg"]
  text = (out / "index.html").read_text()
  for name in os.listdir(out):
    if name != "index.html":
      assert f'href="{name}"' in text, name
  system = view.open_system(evolved)
  assert (out / "system.textproto").read_text() == dump.dump(system)
  assert (out / "summary.json").read_text() == dump.format_summary(dump.summary(system), "json")
  assert "1 private task(s) not shown" in text
  assert "Skipped" not in text and "tradeoff" in text  # named among the plots not drawn


def test_private_tasks_are_shown_when_asked(evolved, tmp_path):
  report.write_report(evolved, str(tmp_path), include_private=True)
  text = (tmp_path / "index.html").read_text()
  assert _Page(text).rows == ["a", "b", "s"] and "private task(s) not shown" not in text


def test_every_name_is_escaped(synthetic):
  state = synthetic(2)
  state.config.name = '<script>alert("name")</script>'
  bad = 'x"><img src=y onerror=alert(1)>&'
  state.config.task[0].name = state.paths[0].task = bad
  system = view.SystemView.of(state)
  page = report.render(system, dump.summary(system), b"<svg/>", b"<svg/>", {},
                       ["<b>skipped</b>"])
  assert "<script>alert" not in page and "<img src=y" not in page
  parsed = _Page(page)
  assert parsed.rows == [bad, "task01"]
  assert len(parsed.images) == 2  # the two graphs; nothing injected
  assert "&lt;script&gt;alert(&quot;name&quot;)&lt;/script&gt;" in page
  assert "&lt;b&gt;skipped&lt;/b&gt;" in page
  assert re.findall(r"<script\b", page) == ["<script"]  # only the page's own load handler


def test_bad_input_is_a_clear_error_and_nothing_is_written(evolved, tmp_path, digest,
                                                          monkeypatch):
  before = digest(evolved)
  with pytest.raises(mstore.SystemNotFoundError, match=f"No mtsys system at {tmp_path}/none"):
    report.write_report(str(tmp_path / "none"), str(tmp_path / "out"))
  with pytest.raises(report.OutputDirError) as e:
    report.write_report(evolved, f"{evolved}/report")
  assert str(e.value) == (f"Cannot write the report to {evolved}/report: it is inside the "
                          f"system directory {evolved}; choose a directory outside it.")
  blocker = tmp_path / "plain"
  blocker.write_text("x")
  with pytest.raises(report.OutputDirError) as e:
    report.write_report(evolved, str(blocker / "deeper" / "out"))
  assert str(e.value) == (f"Cannot write the report to {blocker}/deeper/out: {blocker} is not a "
                          "directory.")
  monkeypatch.setattr(report.shutil, "which", lambda name: None)
  with pytest.raises(graphs.GraphvizNotFoundError, match=r"apt-get install graphviz"):
    report.write_report(evolved, str(tmp_path / "out"))
  assert os.listdir(tmp_path) == ["plain"] and digest(evolved) == before


# ------------------------------------------------------- bin/inspect_system.py, bin/evolve.py

_TINY = """
name: "tiny"
root {{ vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 5 }}
evolution {{ task_iterations: 1 generations: 1 children_per_generation: 1 epochs_per_child: 1
            max_batches_per_epoch: 2 batch_size: 16 seed: 1 }}
task {{ name: "bands" num_classes: 3 files {{ npz: "{npz}" validation_fraction: 0.2
       test_fraction: 0.2 }} }}
"""


@pytest.fixture(scope="module")
def commands(evolved, tmp_path_factory):
  """The command lines below, two at a time: (name -> CompletedProcess, work directory)."""
  work = tmp_path_factory.mktemp("commands")
  config = work / "tiny.textproto"
  config.write_text(_TINY.format(npz=testing.write_band_npz(str(work), "bands", 0, n=90)))
  inspect_bin = os.path.join(_REPO, "bin", "inspect_system.py")
  evolve_bin = os.path.join(_REPO, "bin", "evolve.py")
  runs = {
      "evolve": [evolve_bin, f"--config={config}", f"--system_dir={work}/system",
                 f"--report_dir={work}/evolved-report"],
      "report": [inspect_bin, "report", f"--system_dir={evolved}", f"--output_dir={work}/cli",
                 "--include_private"],
      "no_system": [inspect_bin, "report", f"--system_dir={work}/none",
                    f"--output_dir={work}/out"],
      "evolve_inside": [evolve_bin, f"--config={config}", f"--system_dir={work}/new",
                        f"--report_dir={work}/new/report"],
  }
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    futures = {name: pool.submit(
        subprocess.run, [sys.executable] + args, capture_output=True, text=True, timeout=600,
        cwd=_REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        for name, args in runs.items()}
    return {name: f.result() for name, f in futures.items()}, work


def _error(done):
  assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
  assert "Traceback" not in done.stderr and not done.stdout, done.stderr[-3000:]
  return done.stderr.strip().splitlines()[-1]


def test_the_report_sub_command(commands):
  results, work = commands
  done = results["report"]
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout == f"Wrote {work}/cli/index.html\n"
  assert _Page((work / "cli" / "index.html").read_text()).rows == ["a", "b", "s"]
  assert _error(results["no_system"]) == (
      f"Error: No mtsys system at {work}/none (missing {work}/none/system.pb).")
  assert not os.path.exists(work / "out")


def test_evolve_writes_the_report_at_the_end_and_prints_its_path(commands):
  results, work = commands
  done = results["evolve"]
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.rstrip().splitlines()[-1] == f"Report: {work}/evolved-report/index.html"
  assert _Page((work / "evolved-report" / "index.html").read_text()).rows == ["bands"]


def test_evolve_checks_the_report_dir_before_the_run(commands, tmp_path):
  results, work = commands
  assert _error(results["evolve_inside"]) == (
      f"Error: Cannot write the report to {work}/new/report: it is inside the system directory "
      f"{work}/new; choose a directory outside it.")
  assert not os.path.exists(work / "new")
  blocker = tmp_path / "plain"
  blocker.write_text("x")
  config = loader.parse(_TINY.format(npz=work / "bands.npz"))
  options = evolve.Options(system_dir=str(tmp_path / "system"),
                           distribution=mtsys_pb2.DistributionConfig(),
                           report_dir=str(blocker / "report"))
  with pytest.raises(report.OutputDirError, match=f"^Cannot write the report to {blocker}/report: "
                     f"{blocker} is not a directory.$"):
    evolve.run(config, options, out=lambda line: None)
  assert os.listdir(tmp_path) == ["plain"]
