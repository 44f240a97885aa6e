"""Evolution's history: one record per trained child, one file per writer, readable after a
kill mid-write, merged over writers, and empty for systems made before it existed."""

import os
import shutil

import pytest

from mtsys import errors
from mtsys import testing
from mtsys.config import loader
from mtsys.evolution import loop
from mtsys.protos import mtsys_pb2
from mtsys.system import fsck
from mtsys.system import history
from mtsys.system import store as mstore

_GENERATIONS, _CHILDREN, _EPOCHS = 2, 2, 2


def _config(directory, tasks):
  parts = [f"""
  root {{ vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 5 }}
  evolution {{ task_iterations: 1 generations: {_GENERATIONS}
              children_per_generation: {_CHILDREN} epochs_per_child: {_EPOCHS}
              max_batches_per_epoch: 2 batch_size: 16 seed: 3 }}
  """]
  for i, name in enumerate(tasks):
    npz = testing.write_band_npz(str(directory), name, i, n=90)
    parts.append(f'task {{ name: "{name}" num_classes: 3 files {{ npz: "{npz}" '
                 'validation_fraction: 0.2 test_fraction: 0.2 } }')
  return loader.parse("\n".join(parts))


@pytest.fixture(scope="module")
def evolved(tmp_path_factory):
  """Tasks a and b evolved by one Evolver; its child reports and its records."""
  work = tmp_path_factory.mktemp("history")
  config = _config(work, ["a", "b"])
  store = mstore.Store.create(str(work / "system"), config.proto)
  reports = []
  evolver = loop.Evolver.with_root(config, store, log=lambda m: None, on_child=reports.append)
  evolver.run()
  return store, evolver, reports, history.read(store)


def test_one_record_per_trained_child_with_its_fields(evolved):
  store, evolver, reports, records = evolved
  assert len(records) == len(reports) == store.read_evolution_state().children_trained == 8
  assert [r.sequence for r in records] == list(range(1, 9))
  assert [r.wall_time_ms for r in records] == sorted(r.wall_time_ms for r in records)
  files = history.files(store.root)
  assert [os.path.basename(f) for f in files] == [f"{evolver.recorder.writer}.00000.log"]
  compared = 0
  for record, report in zip(records, reports):
    assert (record.task, record.task_iteration, record.generation, record.index) == (
        report.task, report.task_iteration, report.generation, report.index)
    assert list(record.mutations) == report.mutations
    assert record.parent_id == report.parent_id and record.kept == report.kept
    assert record.score == report.score and record.best_score == report.best_score
    assert record.metrics.validation_accuracy == report.validation_accuracy
    assert record.parent_score == report.parent_score
    assert record.writer == evolver.recorder.writer and record.author == "evolve"
    assert {"learning_rate", "image_size", "mutation_prob"} <= set(record.hparams)
    assert dict(record.mutation_probs) == {
        "mutation_prob": record.hparams["mutation_prob"].number}
    m = record.metrics
    assert 0 < record.added_params <= m.total_params and 0 < m.accounted_params <= m.total_params
    assert m.flops > 0 and m.train_steps == _EPOCHS * 2 and m.train_seconds > 0
    assert len(record.epochs) == _EPOCHS
    assert max(e.validation_accuracy for e in record.epochs) == pytest.approx(
        m.validation_accuracy)
    assert all(e.train_loss > 0 for e in record.epochs)
    assert record.component_ids[-1].startswith(f"{record.task}.head.")
    assert record.system_components >= len(record.component_ids)
    assert record.system_params >= m.total_params
    compared += 1
  assert compared == 8


def test_kept_flags_match_the_stored_paths(evolved):
  store, _, _, records = evolved
  kept = {r.path_id: r for r in records if r.kept}
  pruned = {r.path_id for r in records if not r.kept}
  assert len(kept) + len(pruned) == len(records)  # every child has its own path id
  for task, path in store.paths().items():
    record = kept[path.id]  # the stored path is a kept child
    assert record.task == task and list(record.component_ids) == list(path.component_ids)
    assert record.score == path.score and record.generation == path.generation
  assert not pruned & {p.id for p in store.paths().values()}
  # Every parent is the root or a kept child.
  assert all(r.parent_id in kept or r.parent_id == loop.ROOT_PATH_ID for r in records)


def test_fsck_accepts_the_history_and_tensorboard_files(evolved):
  store = evolved[0]
  assert os.path.isdir(os.path.join(store.root, "history"))
  assert os.path.isdir(os.path.join(store.root, "tensorboard"))
  report = fsck.check(store)
  assert report.ok, report.summary()
  assert store.sweep_leftovers(older_than_seconds=3600) == []


def test_a_file_cut_short_anywhere_reads_as_a_prefix_of_its_records(evolved):
  path = history.files(evolved[0].root)[0]
  with open(path, "rb") as f:
    data = f.read()
  records = history.decode(data, path)
  assert len(records) == 8
  seen = set()
  for cut in range(len(data)):
    prefix = history.decode(data[:cut], path)  # what a kill mid-write may leave
    assert prefix == records[:len(prefix)] and len(prefix) < 8
    seen.add(len(prefix))
  assert seen == set(range(8))


def test_a_truncated_last_record_is_ignored_by_read(evolved, tmp_path):
  root = str(tmp_path / "copy")
  shutil.copytree(evolved[0].root, root)
  path = history.files(root)[0]
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:-10])
  assert history.read(root) == evolved[3][:-1]


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:20] + bytes([d[20] ^ 1]) + d[21:], "Checksum mismatch"),
    (lambda d: b"garbage!" + d[8:], "not an mtsys history file"),
])
def test_damage_other_than_truncation_is_reported_as_corrupt(evolved, damage, message):
  path = history.files(evolved[0].root)[0]
  with open(path, "rb") as f:
    data = f.read()
  with pytest.raises(errors.CorruptFileError, match=message) as caught:
    history.decode(damage(data), path)
  assert path in str(caught.value)


def test_a_system_made_before_the_history_reads_as_empty(tmp_path):
  store = mstore.Store.create(str(tmp_path / "old"), _config(tmp_path, ["a"]).proto)
  assert history.read(store) == [] and history.read(store.root) == []
  assert history.files(str(tmp_path / "nothing-here")) == []


def _record(task, sequence, wall_time_ms, score=0.5):
  return mtsys_pb2.ChildRecord(task=task, sequence=sequence, wall_time_ms=wall_time_ms,
                               score=score)


@pytest.mark.parametrize("root", ["local", "ram://history-merge"])
def test_two_writers_files_merge_in_time_order(tmp_path, root):
  root = str(tmp_path / "s") if root == "local" else root
  store = mstore.Store(root)
  one = history.Writer(store, history.writer_id("agent-a", clock=lambda: 1.0))
  two = history.Writer(store, history.writer_id("agent-b", clock=lambda: 2.0))
  assert one.writer != two.writer and one.writer < two.writer
  for t in (10, 30, 50):
    one.append(_record("a", t, t))
  for t in (20, 40):
    two.append(_record("b", t, t))
  one.flush()
  two.flush()
  merged = history.read(root)
  assert [r.wall_time_ms for r in merged] == [10, 20, 30, 40, 50]
  assert [r.writer for r in merged] == [one.writer, two.writer] * 2 + [one.writer]
  # A generation redone after a kill (same task and sequence, later): the later record wins.
  redo = history.Writer(store, history.writer_id("agent-a", clock=lambda: 3.0))
  redo.append(_record("a", 30, 60, score=0.9))
  redo.flush()
  merged = history.read(root)
  assert [(r.sequence, r.score) for r in merged if r.task == "a"] == [(10, 0.5), (50, 0.5),
                                                                     (30, 0.9)]
  assert [r.task for r in history.read(root, removed_tasks=["a"])] == ["b", "b"]


def test_a_full_segment_is_closed_and_the_next_record_starts_a_new_file(tmp_path):
  store = mstore.Store(str(tmp_path / "s"))
  writer = history.Writer(store, "w", segment_bytes=200)
  for i in range(1, 31):
    writer.append(_record("a", i, i))
    if i % 3 == 0:
      writer.flush()
  assert len(history.files(store.root)) > 2
  assert [r.sequence for r in history.read(store.root)] == list(range(1, 31))
