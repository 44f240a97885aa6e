"""Crash consistency under `kill -9`: real `bin/evolve.py` processes killed at chosen store writes
of every named phase (mtsys.faults, through MTSYS_FAULT) and at random wall-clock times, then
rerun with the same command.

After every kill: no stored file is corrupt (only leftovers of the interrupted step may exist).
After every rerun: it completes, every stored file matches its checksum, nothing is left over or
orphaned, and every task the rerun did not evolve predicts bit-identically on a fixed batch to
before the kill.

The scenarios run two at a time (the machine has two cores; each process is mostly one-threaded
at this size) in one module fixture; the tests below then check each scenario's outcome.
"""

import concurrent.futures
import dataclasses
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mtsys import faults
from mtsys import testing
from mtsys.system import fsck
from mtsys.system import store as mstore
from mtsys.train import evaluate

pytestmark = pytest.mark.slow

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TIMEOUT = 240  # seconds per process; a run here takes 5-20 s

_CONFIG = """
name: "crash"
root {{ vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 5
  pretrain {{ task {{ name: "pre" num_classes: 3 files {{ npz: "{d}/pre.npz"
                       validation_fraction: 0.2 test_fraction: 0.2 }} }}
             epochs: 2 max_batches_per_epoch: 2 batch_size: 16 }} }}
evolution {{ task_iterations: 1 generations: 2 children_per_generation: 2 epochs_per_child: 1
            max_batches_per_epoch: 2 batch_size: 16 seed: 1 }}
baselines {{ methods: ["multi_head"] epochs: 1 max_batches_per_epoch: 2 batch_size: 16 }}
{tasks}"""


@dataclasses.dataclass
class Scenario:
  name: str
  phase: str             # a faults.PHASES name, or "wall_clock"
  args: list             # bin/evolve.py arguments after --config (system_dir included)
  start: str             # "empty" or "base": the system the run starts from
  point: int = 0         # the fault point (phase runs); 0 for wall-clock kills
  delay: float = 0.0     # wall-clock kills: seconds after the start
  untouched: tuple = ()  # tasks the run does not evolve (compared bit for bit)
  # Filled in by the run.
  directory: str = ""
  killed: bool = False
  kill_stderr: str = ""
  after_kill: fsck.Report = None
  rerun: subprocess.CompletedProcess = None
  seconds: float = 0.0


def _evolve(config, args, fault=None):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop(faults.ENV_VAR, None)
  if fault:
    env[faults.ENV_VAR] = fault
  return [sys.executable, os.path.join(_REPO, "bin", "evolve.py"), f"--config={config}",
          *args], env


def _tree_digest(root):
  """SHA-256 of every file under `root` (path and bytes), for "never written" checks: the run
  lock and forks' registrations (`forks/`, which garbage collection reads) left out."""
  h = hashlib.sha256()
  for directory, _, files in sorted(os.walk(root)):
    for name in sorted(files):
      if name == "RUN.lock" or os.path.relpath(directory, root).split(os.sep)[0] == "forks":
        continue
      path = os.path.join(directory, name)
      h.update(os.path.relpath(path, root).encode())
      with open(path, "rb") as f:
        h.update(f.read())
  return h.hexdigest()


def _scenarios(work):
  def system(name):
    return f"--system_dir={work}/{name}"

  out = []
  for k in (1, 2):
    out.append(Scenario(f"pretrain{k}", faults.ROOT_PRETRAINING, [system(f"pretrain{k}"),
                        "--tasks=a"], "empty", point=k))
  for k in (2, 16):  # four root components, four writes each: within the first, in the last
    out.append(Scenario(f"root{k}", faults.ROOT_WRITE, [system(f"root{k}"), "--tasks=a"],
                        "empty", point=k))
  for k in (1, 5, 10):
    out.append(Scenario(f"child{k}", faults.CHILD_TRAINING, [system(f"child{k}"), "--tasks=c"],
                        "base", point=k, untouched=("a", "b")))
  for k in (1, 2, 4):
    out.append(Scenario(f"end{k}", faults.END_OF_PHASE, [system(f"end{k}"), "--tasks=c"],
                        "base", point=k, untouched=("a", "b")))
  for k in (1, 4, 8):
    out.append(Scenario(f"baselines{k}", faults.BASELINES,
                        [system(f"baselines{k}"), "--tasks=a", "--with_baselines"], "base",
                        point=k, untouched=("a", "b")))
  for k in (1, 3, 6):
    out.append(Scenario(f"fork{k}", faults.FORK,
                        [system(f"fork{k}"), f"--fork_from={work}/base", "--tasks=a"], "empty",
                        point=k, untouched=("a", "b")))
  # Removal's writes: 1-2 intent, 3-4 history, 5-6 events, 7-8 state, 9 path, 10-11
  # components, 12-13 config (tests/system/test_remove_history.py kills at every one).
  for k in (1, 4, 7, 11):
    out.append(Scenario(f"removal{k}", faults.TASK_REMOVAL,
                        [system(f"removal{k}"), "--remove_task=a"], "base", point=k,
                        untouched=("b",)))
  rng = np.random.default_rng(20261129)
  for i in range(2):
    out.append(Scenario(f"wall{i}", "wall_clock",
                        [system(f"wall{i}"), "--tasks=c", "--with_baselines"], "base",
                        delay=float(rng.uniform(6.0, 12.0)), untouched=("a", "b")))
  return out


def _run(config, work, sc: Scenario) -> Scenario:
  sc.directory = f"{work}/{sc.name}"
  if sc.start == "base":
    shutil.copytree(f"{work}/base", sc.directory)
  start = time.perf_counter()
  if sc.phase == "wall_clock":
    cmd, env = _evolve(config, sc.args)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
      proc.wait(timeout=sc.delay)
    except subprocess.TimeoutExpired:
      proc.send_signal(signal.SIGKILL)
    _, sc.kill_stderr = proc.communicate(timeout=_TIMEOUT)
    sc.killed = proc.returncode == -signal.SIGKILL
  else:
    cmd, env = _evolve(config, sc.args, fault=f"{sc.phase}:{sc.point}")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=_TIMEOUT)
    sc.kill_stderr = done.stderr
    marker = f"{faults.MARKER} SIGKILL at {sc.phase} point {sc.point}:"
    sc.killed = done.returncode == -signal.SIGKILL and marker in done.stderr
  if os.path.exists(f"{sc.directory}/system.pb"):
    sc.after_kill = fsck.check(mstore.Store.open(sc.directory))
  cmd, env = _evolve(config, sc.args)
  sc.rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=_TIMEOUT)
  sc.seconds = time.perf_counter() - start
  return sc


@pytest.fixture(scope="module")
def crashes(tmp_path_factory):
  work = tmp_path_factory.mktemp("crash")
  for i, name in enumerate(["pre", "a", "b", "c"]):
    testing.write_band_npz(str(work), name, seed=i, n=120)
  config = work / "crash.textproto"
  config.write_text(_CONFIG.format(d=work, tasks=testing.band_tasks_textproto(work, "abc")))
  start = time.perf_counter()
  cmd, env = _evolve(config, [f"--system_dir={work}/base", "--tasks=a,b"])
  base = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=_TIMEOUT)
  assert base.returncode == 0, base.stderr[-3000:]
  batch = np.load(f"{work}/a.npz")["image"][:24, :, :, None]
  store = mstore.Store.open(f"{work}/base")
  before = {t: evaluate.predict_stored(store, t, batch) for t in ("a", "b")}
  digest = _tree_digest(f"{work}/base")
  scenarios = _scenarios(work)
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    done = list(pool.map(lambda sc: _run(config, work, sc), scenarios))
  seconds = time.perf_counter() - start
  kills = {}
  for sc in done:
    kills[sc.phase] = kills.get(sc.phase, 0) + int(sc.killed)
  print(f"\ncrash tests: {sum(kills.values())} kills {kills} in {seconds:.0f}s")
  return {"work": work, "scenarios": {sc.name: sc for sc in done}, "before": before,
          "batch": batch, "base_digest": digest, "kills": kills}


def _names(phase):
  return [sc.name for sc in _scenarios("/w") if sc.phase == phase]


_ALL = [sc.name for sc in _scenarios("/w")]


@pytest.mark.parametrize("name", _ALL)
def test_kill_then_rerun_completes_consistent_and_leaves_other_tasks_bit_identical(crashes, name):
  sc = crashes["scenarios"][name]
  if sc.phase != "wall_clock":
    assert sc.killed, f"the run was not killed at {sc.phase} point {sc.point}:\n" + \
        sc.kill_stderr[-3000:]
  if sc.after_kill is not None:  # readers never see a corrupt file, even right after a kill
    assert not sc.after_kill.corrupt and not sc.after_kill.dangling, sc.after_kill.summary()
  assert sc.rerun.returncode == 0, sc.rerun.stderr[-3000:]
  store = mstore.Store.open(sc.directory)
  report = fsck.check(store)
  assert report.ok and report.files_checked > 0, report.summary()
  for method in ("multi_head",):
    if os.path.isdir(f"{sc.directory}/baselines/{method}"):
      baseline = fsck.check(mstore.Store.open(f"{sc.directory}/baselines/{method}"))
      assert baseline.ok, baseline.summary()
  compared = 0
  for task in sc.untouched:
    after = evaluate.predict_stored(store, task, crashes["batch"])
    assert np.array_equal(after, crashes["before"][task]), task
    compared += 1
  assert compared == len(sc.untouched)
  # Forks write nothing in their source but their registration.
  assert crashes["base_digest"] == _tree_digest(f"{crashes['work']}/base")


@pytest.mark.parametrize("name", _names(faults.TASK_REMOVAL))
def test_an_interrupted_removal_is_finished_and_the_task_stays_removed(crashes, name):
  store = mstore.Store.open(crashes["scenarios"][name].directory)
  assert store.removed_tasks() == ["a"] and "a" not in store.paths()
  assert [t.name for t in store.read_state().config.task] == ["b", "c"]
  assert not any(store.read_component_spec(c).created_by_task == "a"
                 for c in store.component_ids())


@pytest.mark.parametrize("name", _names(faults.ROOT_WRITE) + _names(faults.ROOT_PRETRAINING))
def test_a_root_killed_midway_is_made_again_whole(crashes, name):
  sc = crashes["scenarios"][name]
  store = mstore.Store.open(sc.directory)
  root = [c for c in store.component_ids() if c.startswith("root.")]
  assert len(root) == 4 and set(root) <= set(store.paths()["a"].component_ids)
  # Each root component takes four writes (weights, optimizer slots, manifest, its rename): a
  # kill after the fourth leaves complete components of a root that is not; the rerun deletes
  # them and writes the whole root again from one pretraining run.
  partial = sc.phase == faults.ROOT_WRITE and sc.point > 4
  assert ("Removing a partial root" in sc.rerun.stdout) == partial, sc.rerun.stdout[-2000:]


def test_at_least_twenty_kills_over_every_phase(crashes):
  kills = crashes["kills"]
  assert sum(kills.values()) >= 20, kills
  assert all(kills.get(p, 0) >= 2 for p in faults.PHASES), kills
