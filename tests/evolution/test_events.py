"""TensorBoard events of evolution: per-child curves, each task's best score and the system's
size, in one run per writer under <system_dir>/tensorboard/, timed as loop bookkeeping."""

import collections
import os

import pytest
import tensorflow as tf

from mtsys import testing
from mtsys.config import loader
from mtsys.evolution import events
from mtsys.evolution import loop
from mtsys.system import history
from mtsys.system import store as mstore

_EPOCHS = 2


def _config(directory, mode="SHARED"):
  npz = testing.write_band_npz(str(directory), "a", 0, n=90)
  return loader.parse(f"""
  root {{ vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 5 }}
  evolution {{ task_iterations: 1 generations: 2 children_per_generation: 2
              epochs_per_child: {_EPOCHS} max_batches_per_epoch: 2 batch_size: 16 seed: 4
              mutation_probability: {mode} }}
  task {{ name: "a" num_classes: 3 files {{ npz: "{npz}" validation_fraction: 0.2
         test_fraction: 0.2 }} }}
  """)


def _scalars(run_dir):
  """tag -> [(step, value)] of every scalar in the run's event files."""
  out = collections.defaultdict(list)
  for name in sorted(tf.io.gfile.listdir(run_dir)):
    for event in tf.compat.v1.train.summary_iterator(os.path.join(run_dir, name)):
      for value in event.summary.value:
        out[value.tag].append((event.step, float(tf.make_ndarray(value.tensor))))
  return out


@pytest.fixture(scope="module")
def evolved(tmp_path_factory):
  work = tmp_path_factory.mktemp("events")
  config = _config(work, mode="PER_ACTION")
  store = mstore.Store.create(str(work / "system"), config.proto)
  evolver = loop.Evolver.with_root(config, store, log=lambda m: None)
  evolver.run()
  return store, evolver, history.read(store)


def test_one_run_per_writer_holds_the_expected_tags(evolved):
  store, evolver, records = evolved
  base = events.tensorboard_dir(store.root)
  assert os.listdir(base) == [evolver.recorder.writer]
  scalars = _scalars(os.path.join(base, evolver.recorder.writer))
  assert len(records) == 4
  for r in records:
    name = f"a/children/{r.task_iteration}.{r.generation}.{r.index}"
    for metric in ("train_loss", "train_accuracy", "validation_loss", "validation_accuracy"):
      assert [s for s, _ in scalars[f"{name}/{metric}"]] == list(range(1, _EPOCHS + 1))
    curve = [v for _, v in scalars[f"{name}/validation_accuracy"]]
    assert max(curve) == pytest.approx(r.metrics.validation_accuracy)
  assert [s for s, _ in scalars["a/child_score"]] == [r.sequence for r in records]
  assert [v for _, v in scalars["a/child_score"]] == pytest.approx([r.score for r in records])
  assert [s for s, _ in scalars["a/best_score"]] == [1, 2]
  assert scalars["a/best_score"][-1][1] == pytest.approx(max(r.score for r in records if r.kept))
  # System size at the end of each generation, by children trained so far.
  assert [s for s, _ in scalars["system/components"]] == [2, 4]
  assert [v for _, v in scalars["system/parameters"]] == [records[1].system_params,
                                                          records[3].system_params]
  assert all(v > 0 for _, v in scalars["system/components"])


def test_per_action_mu_is_recorded_per_action(evolved):
  records = evolved[2]
  assert all(set(r.mutation_probs) == {f"mutation_prob/{a}" for a in
                                       ("hparam", "remove_block", "add_block", "insert_adapter",
                                        "clone")} for r in records)


def test_recording_time_is_part_of_the_loop_bookkeeping(evolved):
  timing = evolved[1].timing
  assert 0 < timing.recording <= timing.total - timing.training
  assert timing.recording_share == pytest.approx(timing.recording / timing.total)


def test_without_tensorboard_only_the_history_is_written(tmp_path):
  config = _config(tmp_path)
  config.proto.evolution.generations = 1
  store = mstore.Store.create(str(tmp_path / "system"), config.proto)
  loop.Evolver.with_root(config, store, log=lambda m: None, tensorboard=False).run()
  assert not os.path.exists(events.tensorboard_dir(store.root))
  assert len(history.read(store)) == 2
