"""`bin/evolve.py --remove_task` removes the task from the baseline systems `--with_baselines`
trained under `<system>/baselines/<method>/` too (a removed private task's baseline paths and
components do not stay on disk), leaving the other tasks' baselines bit-identical; a second run
is a no-op that says so; and a rerun after a kill anywhere in the job (between the main system and
the baselines, or inside a baseline's removal) finishes it."""

import hashlib
import os
import shutil
import types

import pytest

from mtsys import faults as mfaults
from mtsys import testing
from mtsys.config import loader
from mtsys.evolution import loop
from mtsys.jobs import evolve
from mtsys.system import admin
from mtsys.system import fsck
from mtsys.system import store as mstore
from mtsys.train import baselines

_METHODS = ("full_finetune", "multi_head", "residual_adapters")


def _config(directory):
  parts = [f"""
  root {{ vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 5 }}
  evolution {{ task_iterations: 1 generations: 1 children_per_generation: 1 epochs_per_child: 1
              max_batches_per_epoch: 2 batch_size: 16 seed: 3 }}
  baselines {{ methods: {list(_METHODS)} epochs: 1 max_batches_per_epoch: 2 batch_size: 16
              replicas: 1 adapter_dim: 4 }}
  """]
  for i, (name, access) in enumerate((("a", ""), ("s", " access { visibility: PRIVATE }"))):
    npz = testing.write_band_npz(str(directory), name, i, n=90)
    parts.append(f'task {{ name: "{name}" num_classes: 3 files {{ npz: "{npz}" '
                 f'validation_fraction: 0.2 test_fraction: 0.2 }}{access} }}')
  return loader.parse("\n".join(parts))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """A system evolved on a and the private s, with every baseline method trained on both (what
  `bin/evolve.py --with_baselines` leaves)."""
  work = tmp_path_factory.mktemp("remove-baselines")
  config = _config(work)
  system = str(work / "system")
  store = mstore.Store.create(system, config.proto)
  loop.Evolver.with_root(config, store, log=lambda m: None).run()
  baselines.run(config, os.path.join(system, "baselines"), root_from=store, log=lambda m: None)
  return system


def _copy(base, directory):
  shutil.copytree(base, directory)
  return str(directory)


def _baseline(system, method):
  return mstore.Store.open(os.path.join(system, "baselines", method))


def _files(root):
  """Every file under `root` (relative), the lock files aside."""
  return sorted(os.path.relpath(os.path.join(d, n), root) for d, _, names in os.walk(root)
                for n in names if n != "RUN.lock")


def _digest(root):
  """SHA-256 of every file under `root` (name and bytes), the lock files aside."""
  h = hashlib.sha256()
  for name in _files(root):
    h.update(name.encode())
    with open(os.path.join(root, name), "rb") as f:
      h.update(f.read())
  return h.hexdigest()


def _component_files(store, cids):
  """Relative path -> bytes of every file of the components `cids` held by `store`."""
  out = {}
  for cid in cids:
    cdir = os.path.join(store.root, "components", cid)
    for name in sorted(os.listdir(cdir)) if os.path.isdir(cdir) else []:
      with open(os.path.join(cdir, name), "rb") as f:
        out[os.path.relpath(os.path.join(cdir, name), store.root)] = f.read()
  return out


def _task_component_files(system, task):
  """Files under <system>/baselines of components of `task`: those whose manifest says the task
  made them or only it may use them, and any (even manifest-less) named after the task."""
  found = []
  for method in _METHODS:
    store = _baseline(system, method)
    ours = {c for c in store.held_component_ids()
            if store.read_component_spec(c).created_by_task == task
            or list(store.read_component_spec(c).access.tasks) == [task]}
    base = os.path.join(store.root, "components")
    for cid in os.listdir(base):
      if cid in ours or cid.startswith(f"{task}."):
        found += [os.path.join(base, cid, n) for n in os.listdir(os.path.join(base, cid))]
  return sorted(found)


def _task_ids(store, task):
  """The ids of `task`'s path and of every component its path holds (bytes, to grep files)."""
  path = store.read_path(task)
  return [path.id.encode()] + [c.encode() for c in path.component_ids
                               if not c.startswith(admin.ROOT_COMPONENT_PREFIX)]


def test_removing_a_task_removes_it_from_every_baseline_and_leaves_the_others(base, tmp_path):
  system = _copy(base, tmp_path / "system")
  traces, counts, kept = [], {}, {}
  for method in _METHODS:
    store = _baseline(system, method)
    assert {"a", "s"} <= set(admin.known_tasks(store))
    own = [c for c in store.held_component_ids()
           if store.read_component_spec(c).created_by_task == "s"]
    counts[method] = len(own)
    traces += _task_ids(store, "s")
    path = store.read_path("a")
    kept[method] = (path.SerializeToString(), _component_files(store, path.component_ids))
  before = _task_component_files(system, "s")
  # Not vacuous: every method stored components of s (its head at least), found on disk.
  assert all(counts[m] > 0 for m in _METHODS)
  assert {os.path.relpath(f, os.path.join(system, "baselines")).split(os.sep)[0]
          for f in before} == set(_METHODS)
  assert len(before) >= sum(counts.values()) * 2  # a manifest and a weights file each

  lines = []
  evolve.remove_task(system, "s", out=lines.append)

  assert lines[0].startswith("Removed task 's': ")
  assert lines[1:] == [f"Removed task 's' from the {m} baseline: {counts[m]} components "
                       "deleted." for m in _METHODS]
  assert "s" not in admin.known_tasks(mstore.Store.open(system))
  assert fsck.check(mstore.Store.open(system)).ok
  assert _task_component_files(system, "s") == []
  assert not [f for f in before if os.path.exists(f)]
  for method in _METHODS:
    store = _baseline(system, method)
    assert admin.known_tasks(store) == ["a"]
    assert store.removed_tasks() == ["s"]
    assert store.read_path("s") is None
    path = store.read_path("a")  # a's baseline: the same path, bit-identical components
    assert (path.SerializeToString(), _component_files(store, path.component_ids)) == \
        kept[method]
    report = fsck.check(store)
    assert report.ok, report.summary()
  for name in _files(os.path.join(system, "baselines")):  # no trace of s's path or components
    with open(os.path.join(system, "baselines", name), "rb") as f:
      data = f.read()
    assert not [t for t in traces if t in data], name

  # A second run: nothing to do, and it says so; not a byte changes.
  digest = _digest(system)
  again = []
  evolve.remove_task(system, "s", out=again.append)
  assert again == ["Task 's' was removed already; nothing to do."]
  assert _digest(system) == digest


def test_a_baseline_without_the_task_is_left_untouched(base, tmp_path):
  system = _copy(base, tmp_path / "system")
  admin.remove_task(_baseline(system, "multi_head"), "s")  # as if it never had s
  untouched = _digest(os.path.join(system, "baselines", "multi_head"))
  lines = []
  evolve.remove_task(system, "s", out=lines.append)
  assert [line.split(" from the ")[1].split(" ")[0] for line in lines[1:]] == [
      "full_finetune", "residual_adapters"]
  assert _digest(os.path.join(system, "baselines", "multi_head")) == untouched


def _outcome(system):
  return {root: _digest(os.path.join(system, root))
          for root in ["."] + [os.path.join("baselines", m) for m in _METHODS]}


def test_a_kill_between_the_main_removal_and_the_baselines_is_finished_by_the_rerun(
    base, tmp_path):
  clean = _copy(base, tmp_path / "clean")
  evolve.remove_task(clean, "s", out=lambda line: None)
  system = _copy(base, tmp_path / "system")
  admin.remove_task(mstore.Store.open(system), "s")  # the main system only: killed there
  assert all("s" in admin.known_tasks(_baseline(system, m)) for m in _METHODS)

  lines = []
  evolve.remove_task(system, "s", out=lines.append)

  assert lines[0] == "Task 's' was removed from the system already; finished its baselines' removal."
  assert [line.split(" baseline: ")[0] for line in lines[1:]] == [
      f"Removed task 's' from the {m}" for m in _METHODS]
  assert _task_component_files(system, "s") == []
  for method in _METHODS:
    assert admin.known_tasks(_baseline(system, method)) == ["a"]
    assert fsck.check(_baseline(system, method)).ok
  assert _outcome(system) == _outcome(clean)


class _Killed(Exception):
  pass


def test_a_kill_at_any_write_of_the_job_is_finished_by_the_rerun(base, tmp_path, monkeypatch):
  clean = _copy(base, tmp_path / "clean")
  evolve.remove_task(clean, "s", out=lambda line: None)
  want = _outcome(clean)

  def kill(pid, signal):
    raise _Killed()

  monkeypatch.setattr(mfaults, "os", types.SimpleNamespace(kill=kill, getpid=os.getpid))
  point, baseline_kills = 0, 0
  while True:
    point += 1
    system = _copy(base, tmp_path / f"kill{point}")
    lines = []
    try:
      evolve.remove_task(system, "s", faults=mfaults.Injector(mfaults.TASK_REMOVAL, point),
                         out=lines.append)
      break  # no write left to kill at
    except _Killed:
      pass
    # Killed in a baseline: one of the baseline systems was written to.
    baseline_kills += any(_digest(os.path.join(system, "baselines", m))
                          != _digest(os.path.join(base, "baselines", m)) for m in _METHODS)
    evolve.remove_task(system, "s", out=lambda line: None)  # the rerun
    assert _outcome(system) == want, point
    for method in _METHODS:
      assert fsck.check(_baseline(system, method)).ok, (point, method)
    shutil.rmtree(system)
  # Every write was tried: the main system's (13), then each baseline's (its intent 2, path 1,
  # components 2 each, config entry 2).
  assert point > 13 and baseline_kills >= 3 * 7
