"""Agents (issue #12): real `bin/agent.py` processes extending one system through the store.

One module fixture runs the scenarios (two at a time at most: the machine has two cores), the
tests below check their outcomes:

- `hetero`: agents of tasks a and b started at once on an empty directory, synchronised, one on
  two logical CPU devices (mirrored) and one on the default device; then an agent of task c
  joins the finished system later.
- `kills`: agents of a, b and c, synchronised; two of them are killed with SIGKILL at seeded
  random moments and restarted with the same command (taking over their own leases); then
  `bin/gc.py` runs.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mtsys import testing
from mtsys.evolution import barriers
from mtsys.protos import mtsys_pb2
from mtsys.system import fenced_paths
from mtsys.system import fileio
from mtsys.system import fsck
from mtsys.system import leases
from mtsys.system import root as mroot
from mtsys.system import store as mstore
from mtsys.config import loader
from mtsys.train import evaluate

pytestmark = pytest.mark.slow

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TIMEOUT = 300  # seconds per scenario

_CONFIG = """
name: "agents"
root {{ vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 5 }}
evolution {{ task_iterations: 2 generations: 1 children_per_generation: 2 epochs_per_child: 1
            max_batches_per_epoch: 2 batch_size: 16 seed: 1 }}
{tasks}"""


def _agent(config, system_dir, task, *extra):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.Popen(
      [sys.executable, os.path.join(_REPO, "bin", "agent.py"), f"--config={config}",
       f"--system_dir={system_dir}", f"--task={task}", "--lease_ttl_s=6",
       "--barrier_timeout_s=240", *extra],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run_cli(*args, timeout=_TIMEOUT):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                        timeout=timeout)


def _finish(procs, deadline):
  outs = {}
  for task, proc in procs.items():
    out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    outs[task] = (proc.returncode, out)
  return outs


@dataclasses.dataclass
class Kill:
  task: str
  at: float
  happened: bool = False


def _hetero(config, work):
  system = f"{work}/hetero"
  deadline = time.monotonic() + _TIMEOUT
  procs = {"a": _agent(config, system, "a", "--cpu_devices=2", "--strategy=mirrored"),
           "b": _agent(config, system, "b")}
  first = _finish(procs, deadline)
  store = mstore.Store.open(system)
  batch = np.load(f"{work}/a.npz")["image"][:16, :, :, None]
  before = {t: evaluate.predict_stored(store, t, batch) for t in ("a", "b")}
  joined = _finish({"c": _agent(config, system, "c", "--task_iterations=1")},
                   time.monotonic() + _TIMEOUT)
  after = {t: evaluate.predict_stored(mstore.Store.open(system), t, batch) for t in ("a", "b")}
  return {"dir": system, "first": first, "joined": joined, "before": before, "after": after}


def _kills(config, work):
  system = f"{work}/kills"
  rng = np.random.default_rng(20261129)
  deadline = time.monotonic() + _TIMEOUT
  procs = {t: _agent(config, system, t) for t in ("a", "b", "c")}
  # Kill once the root exists (a killed root writer's claim would be waited out, 90 s).
  config_proto = loader.load(str(config))
  root_ids = mroot.root_ids(config_proto)
  while time.monotonic() < deadline and not all(
      os.path.exists(f"{system}/components/{c}/MANIFEST.pb") for c in root_ids):
    time.sleep(0.2)
  start = time.monotonic()
  kills = [Kill(t, float(rng.uniform(2.0, 10.0))) for t in ("a", "c")]
  outputs = {t: [] for t in procs}
  for kill in sorted(kills, key=lambda k: k.at):
    time.sleep(max(0.0, start + kill.at - time.monotonic()))
    proc = procs[kill.task]
    if proc.poll() is None:
      proc.send_signal(signal.SIGKILL)
      out, _ = proc.communicate(timeout=30)
      outputs[kill.task].append(out)
      kill.happened = True
      procs[kill.task] = _agent(config, system, kill.task)  # the same command, restarted
  finished = _finish(procs, deadline)
  store = mstore.Store.open(system)
  referenced = set(mroot.root_ids(config_proto))
  for path in store.paths().values():
    referenced.update(path.component_ids)
  for state in store.evolution_states().values():
    for path in state.population:
      referenced.update(path.component_ids)
  before_gc = set(store.component_ids())
  # Every agent has ended: what killed writers left may go at once.
  gc = _run_cli(os.path.join(_REPO, "bin", "gc.py"), f"--system_dir={system}",
                "--leftover_age_s=0")
  after_gc = set(mstore.Store.open(system).component_ids())
  return {"dir": system, "finished": finished, "kills": kills, "killed_outputs": outputs,
          "referenced": referenced, "before_gc": before_gc, "after_gc": after_gc, "gc": gc}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  work = tmp_path_factory.mktemp("agents")
  for i, name in enumerate(["a", "b", "c"]):
    testing.write_band_npz(str(work), name, seed=i, n=120)
  config = work / "agents.textproto"
  config.write_text(_CONFIG.format(d=work, tasks=testing.band_tasks_textproto(work, "abc")))
  return {"config": config, "work": work, "hetero": _hetero(config, work),
          "kills": _kills(config, work)}


def _assert_consistent(system_dir, tasks, iterations):
  store = mstore.Store.open(system_dir)
  report = fsck.check(store)
  # Orphans (components no path uses) are garbage an agent's collection may have skipped
  # while another ran, and a killed agent may leave a temporary file (invisible to readers):
  # bin/gc.py takes both (test_gc_after_...); nothing is corrupt or missing.
  assert not report.corrupt and not report.dangling, report.summary()
  assert all(fileio.TMP_MARK in f for f in report.leftovers), report.summary()
  assert report.files_checked > 0
  paths = store.paths()
  assert sorted(paths) == sorted(tasks)
  for task in tasks:
    state = store.read_evolution_state(task=task)
    assert state.iterations_done[task] == iterations[task] and not state.task, (task, state)
    # The path readers see is the highest fenced commit (the mirror caught up).
    assert fenced_paths.read_path(store, task) == paths[task]
    for cid in paths[task].component_ids:
      assert store.has_component(cid)
  return store


def test_agents_started_at_once_make_one_root_and_finish_their_iterations(runs):
  hetero = runs["hetero"]
  for task, (code, out) in hetero["first"].items():
    assert code == 0, f"{task}:\n{out[-3000:]}"
  store = _assert_consistent(hetero["dir"], ["a", "b", "c"], {"a": 2, "b": 2, "c": 1})
  assert sorted(t.name for t in store.read_state().config.task) == ["a", "b", "c"]
  # One root, whatever the number of agents that found the directory empty.
  claim = leases.current(f"{hetero['dir']}/root.claim", "root")
  assert claim is not None and claim.token == 1  # exactly one writer claimed the root
  root_ids = mroot.root_ids(loader.load(str(runs["config"])))
  assert sorted(c for c in store.component_ids() if c.startswith("root.")) == sorted(root_ids)
  records = {r.task: r for r in barriers.registered(hetero["dir"])}
  assert records["a"].devices.count("CPU") == 2 and records["b"].devices == "default"
  for iteration in (0, 1):
    assert not barriers.missing(hetero["dir"], iteration), iteration


def test_an_agent_joining_later_leaves_the_other_tasks_bit_identical(runs):
  hetero = runs["hetero"]
  code, out = hetero["joined"]["c"]
  assert code == 0, out[-3000:]
  compared = 0
  for task in ("a", "b"):
    assert np.array_equal(hetero["before"][task], hetero["after"][task]), task
    compared += 1
  assert compared == 2


def test_agents_killed_and_restarted_finish_with_every_invariant(runs):
  kills = runs["kills"]
  assert sum(k.happened for k in kills["kills"]) >= 1, kills["kills"]
  for task, (code, out) in kills["finished"].items():
    assert code == 0, f"{task}:\n{out[-3000:]}"
  _assert_consistent(kills["dir"], ["a", "b", "c"], {"a": 2, "b": 2, "c": 2})
  for iteration in (0, 1):
    assert not barriers.missing(kills["dir"], iteration), iteration


def test_gc_after_the_agents_removes_only_unreferenced_components(runs):
  kills = runs["kills"]
  assert kills["gc"].returncode == 0, kills["gc"].stderr[-3000:]
  deleted = kills["before_gc"] - kills["after_gc"]
  assert not deleted & kills["referenced"], deleted & kills["referenced"]
  assert kills["referenced"] <= kills["after_gc"]
  assert kills["after_gc"] and kills["referenced"]
  report = fsck.check(mstore.Store.open(kills["dir"]))
  assert report.ok and report.files_checked > 0, report.summary()  # no orphan either


def test_a_second_agent_of_a_task_waits_then_fails_naming_the_holder(runs, tmp_path):
  system = f"{runs['work']}/hetero"
  holder = "otherhost/12345/2026-11-29T00:00:00.000+00:00"
  lease = leases.acquire(system, "a", holder, ttl_s=120)
  try:
    before = _digest(system, skip=("RUN.lock",))
    done = _run_cli(os.path.join(_REPO, "bin", "agent.py"), f"--config={runs['config']}",
                    f"--system_dir={system}", "--task=a", "--task_iterations=3",
                    "--lease_wait_s=2")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Task 'a' already has a live agent" in done.stderr and holder in done.stderr
    assert _digest(system, skip=("RUN.lock",)) == before  # it wrote nothing
  finally:
    leases.release(lease)


def test_bad_input_fails_before_any_write_naming_the_culprit(runs, tmp_path):
  unknown = _run_cli(os.path.join(_REPO, "bin", "agent.py"), f"--config={runs['config']}",
                     f"--system_dir={tmp_path}/new", "--task=zz")
  assert unknown.returncode == 2
  assert "Unknown task 'zz'; expected one of ['a', 'b', 'c']" in unknown.stderr
  assert not os.path.exists(f"{tmp_path}/new")
  odd = tmp_path / "odd"
  mstore.Store.create(str(odd), loader.load(str(runs["config"])).proto)
  state = mstore.Store.open(str(odd)).read_state()
  state.schema_version = 99
  from mtsys.system import records
  (odd / "system.pb").write_bytes(records.frame(state.SerializeToString()))
  before = _digest(str(odd))
  done = _run_cli(os.path.join(_REPO, "bin", "agent.py"), f"--config={runs['config']}",
                  f"--system_dir={odd}", "--task=a")
  assert done.returncode == 2
  assert f"The system at {odd} was written with schema version 99" in done.stderr
  assert _digest(str(odd)) == before


def test_a_barrier_timeout_names_the_agents_still_missing(runs, tmp_path):
  system = str(tmp_path / "barrier")
  os.makedirs(system)
  barriers.register(system, "b", "elsewhere/1/then", barriers.SYNC, 2)
  done = _run_cli(os.path.join(_REPO, "bin", "agent.py"), f"--config={runs['config']}",
                  f"--system_dir={system}", "--task=a", "--barrier_timeout_s=2")
  assert done.returncode == 2, done.stderr[-3000:]
  assert ("The agent of task 'a' waited 2 s at the barrier after task-set iteration 1" in
          done.stderr and "'b' (elsewhere/1/then)" in done.stderr), done.stderr[-2000:]
  store = mstore.Store.open(system)
  assert store.read_evolution_state(task="a").iterations_done["a"] == 1
  assert fsck.check(store).ok


def _digest(directory, skip=()):
  import hashlib
  h = hashlib.sha256()
  for base, dirs, files in sorted(os.walk(directory)):
    dirs[:] = sorted(d for d in dirs if d not in skip)
    for name in sorted(files):
      if name in skip:
        continue
      path = os.path.join(base, name)
      h.update(path.encode())
      with open(path, "rb") as f:
        h.update(f.read())
  return h.hexdigest()
