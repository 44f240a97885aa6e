"""Removing a task also deletes what evolution recorded about it: its history records and its
TensorBoard events (a removed private task's hyperparameters and scores do not stay on disk),
leaving every other record as it was; a kill at any write of the removal is finished by the
rerun; and removing a removed task again deletes records an older mtsys kept."""

import os
import shutil
import types
import uuid

import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2

from mtsys import faults as mfaults
from mtsys import testing
from mtsys.config import loader
from mtsys.evolution import events
from mtsys.evolution import loop
from mtsys.protos import mtsys_pb2
from mtsys.system import admin
from mtsys.system import fileio
from mtsys.system import fsck
from mtsys.system import history
from mtsys.system import store as mstore


def _config(directory, tasks, private=()):
  parts = ["""
  root { vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 5 }
  evolution { task_iterations: 1 generations: 2 children_per_generation: 1 epochs_per_child: 1
              max_batches_per_epoch: 2 batch_size: 16 seed: 3 }
  """]
  for i, name in enumerate(tasks):
    npz = testing.write_band_npz(str(directory), name, i, n=90)
    access = " access { visibility: PRIVATE }" if name in private else ""
    parts.append(f'task {{ name: "{name}" num_classes: 3 files {{ npz: "{npz}" '
                 f'validation_fraction: 0.2 test_fraction: 0.2 }}{access} }}')
  return loader.parse("\n".join(parts))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """A system evolved on a, b and the private s (history and TensorBoard events of each)."""
  work = tmp_path_factory.mktemp("remove-history")
  config = _config(work, ["a", "b", "s"], private=["s"])
  store = mstore.Store.create(str(work / "system"), config.proto)
  loop.Evolver.with_root(config, store, log=lambda m: None).run()
  return str(work / "system")


def _copy(base, directory):
  shutil.copytree(base, directory)
  return mstore.Store.open(str(directory))


def _records(root):
  """Every history record on disk, removed tasks' included."""
  return history.read(root, removed_tasks=[])


def _events(root):
  """Event file (relative) -> its events as (tag, step, value bytes); read by TensorFlow,
  which checks every record's checksums."""
  out = {}
  for directory, _, names in tf.io.gfile.walk(f"{root}/{events.TENSORBOARD}"):
    for name in names:
      path = f"{directory}/{name}"
      out[os.path.relpath(path, root)] = [
          (v.tag, e.step, v.tensor.SerializeToString())
          for e in map(event_pb2.Event.FromString,
                       (r.numpy() for r in tf.data.TFRecordDataset(path)))
          for v in e.summary.value]
  return out


def _of(task, items):
  return [i for i in items if i[0].startswith(f"{task}/")]


def _files(root):
  return sorted(os.path.relpath(os.path.join(d, n), root) for d, _, names in os.walk(root)
                for n in names if n != "RUN.lock")


def test_removing_a_task_deletes_its_history_records_and_events_only(base, tmp_path):
  store = _copy(base, tmp_path / "system")
  records = history.read(store.root, removed_tasks=[])
  before = _events(store.root)
  path_id = store.read_path("s").id.encode()
  assert {r.task for r in records} == {"a", "b", "s"}
  assert all(_of("s", tags) and _of("a", tags) for tags in before.values())

  report = admin.remove_task(store, "s")

  assert report.removed_history_records == sum(r.task == "s" for r in records) > 0
  assert report.removed_events == sum(len(_of("s", tags)) for tags in before.values()) > 0
  assert _records(store.root) == [r for r in records if r.task != "s"]
  after = _events(store.root)
  assert set(after) == set(before)
  for name, tags in after.items():
    assert tags == [t for t in before[name] if not t[0].startswith("s/")]
  for name in _files(store.root):  # not a trace of the private task's path anywhere
    with open(os.path.join(store.root, name), "rb") as f:
      assert path_id not in f.read(), name
  assert fsck.check(store).ok


def test_the_tag_rule_matches_what_evolution_writes(base):
  assert admin.TENSORBOARD == events.TENSORBOARD
  tags = {t for items in _events(base).values() for t, _, _ in items}
  assert {t.split("/")[0] for t in tags} == {"a", "b", "s", "system"}
  for tag in tags:
    owner = tag.split("/")[0]
    for task in ("a", "b", "s", "system"):
      assert admin._is_task_tag(tag, task) == (task == owner != "system"), (tag, task)
  # Task names may hold "/": a task is never matched by another's tags.
  assert admin._is_task_tag("emnist/children/0.1.2/train_loss", "emnist")
  assert admin._is_task_tag("emnist/digits/best_score", "emnist/digits")
  assert not admin._is_task_tag("emnist/digits/best_score", "emnist")
  assert not admin._is_task_tag("emnist/digits/children/0.1.2/train_loss", "emnist")


class _Killed(Exception):
  pass


def _kill_instead(monkeypatch):
  """Makes the fault injector raise _Killed where it would SIGKILL the process."""
  def kill(pid, signal):
    raise _Killed()
  monkeypatch.setattr(mfaults, "os", types.SimpleNamespace(kill=kill, getpid=os.getpid))


def _outcome(store):
  state = store.read_state()
  return (_records(store.root), _events(store.root), sorted(store.paths()),
          sorted(store.component_ids()), list(state.removed_tasks),
          [t.name for t in state.config.task], _files(store.root))


def test_a_kill_at_any_write_of_the_removal_is_finished_by_the_rerun(base, tmp_path,
                                                                     monkeypatch):
  clean = _copy(base, tmp_path / "clean")
  admin.remove_task(clean, "s")
  want = _outcome(clean)
  _kill_instead(monkeypatch)
  point = 0
  while True:
    point += 1
    directory = tmp_path / f"kill{point}"
    store = _copy(base, directory)
    store.faults = mfaults.Injector(mfaults.TASK_REMOVAL, point)
    try:
      admin.remove_task(store, "s")
      break  # no write left to kill at
    except _Killed:
      pass
    # The rerun of `bin/evolve.py --remove_task=s`: leftovers first, then the removal.
    rerun = mstore.Store.open(str(directory))
    rerun.sweep_leftovers()
    admin.remove_task(rerun, "s")
    assert _outcome(rerun) == want, point
    assert fsck.check(rerun).ok, point
  # Every point was tried: the intent, the history file, the event file, the rest.
  assert point > 6


@pytest.fixture(params=["local", "ram"])
def root(request, tmp_path):
  return str(tmp_path / "system") if request.param == "local" else (
      f"ram://mtsys-remove-history-{uuid.uuid4().hex}")


def _record(store, task, author):
  writer = history.Writer(store, history.writer_id(author))
  writer.append(mtsys_pb2.ChildRecord(task=task, sequence=1, score=0.5))
  writer.flush()


def _event(root, task, run):
  with tf.summary.create_file_writer(f"{root}/{events.TENSORBOARD}/{run}").as_default():
    tf.summary.scalar(f"{task}/best_score", 0.5, step=1)
    tf.summary.scalar("system/tasks", 2, step=1)
    tf.summary.flush()


def test_removing_a_removed_task_again_deletes_records_an_older_mtsys_kept(root, tmp_path):
  config = _config(tmp_path, ["a", "s"])
  store = mstore.Store.create(root, config.proto)
  _record(store, "a", "one")
  _record(store, "s", "two")  # a file holding only s's record: deleted
  _event(root, "s", "one")
  first = admin.remove_task(store, "s")
  assert (first.removed_history_records, first.removed_events) == (1, 1)
  assert len(history.files(root)) == 1 and [r.task for r in history.read(root, [])] == ["a"]
  # Records an older mtsys kept of the task it removed.
  _record(store, "s", "three")
  _event(root, "s", "two")
  again = admin.remove_task(store, "s")
  assert again.already_removed
  assert (again.removed_history_records, again.removed_events) == (1, 1)
  assert [r.task for r in history.read(root, [])] == ["a"]
  tags = [t for items in _events(root).values() for t, _, _ in items]
  assert sorted(tags) == ["system/tasks", "system/tasks"]
  assert not [p for d, _, names in tf.io.gfile.walk(root) for p in names
              if fileio.TMP_MARK in p]
