"""Training one path: it learns, keeps the best epoch, restores cloned optimizer state, follows
the path's schedule, and runs the same under a mirrored strategy over 2 logical CPUs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtsys import data as mdata
from mtsys.config import hparams as hp
from mtsys.config import loader
from mtsys.system import assembly
from mtsys.system import paths as mpaths
from mtsys.system import root as mroot
from mtsys.train import strategy as mstrategy
from mtsys.train import trainer


@pytest.fixture(scope="module")
def task_npz(thirds_npz):
  """A learnable 3-class task: which third of the 8x8 image is bright."""
  return thirds_npz(seed=0, n=600)


def _config(npz):
  return loader.parse(f"""
  root {{ vit: "tiny/4" image_size: 8 channels: 1 seed: 2 num_blocks: 1 }}
  task {{ name: "thirds" num_classes: 3
          files {{ npz: "{npz}" validation_fraction: 0.2 test_fraction: 0.2 }} }}
  """)


def _plan(config, trainable_kinds=("head",), slots=None):
  task = config.task("thirds")
  access = mroot.task_access(task)
  planned = []
  for spec, weights in mroot.make_root(config):
    if spec.kind in trainable_kinds:
      planned.append(mpaths.clone(spec, weights, None, task.name, access))
    else:
      planned.append(assembly.PlannedComponent(spec, weights, None, trainable=False))
  h_spec, h_weights = mroot.new_head(task, config.arch.hidden_size, 5, access)
  planned.append(assembly.PlannedComponent(h_spec, h_weights, slots, trainable=True))
  return planned


_HP = {"learning_rate": 0.1, "crop": False, "flip": False}


def test_path_learns_and_keeps_best_epoch(task_npz):
  config = _config(task_npz)
  planned = _plan(config, trainable_kinds=("patch_embedding", "transformer_block"))
  task_data = mdata.load_task(config.task("thirds"))
  budget = trainer.Budget(epochs=4, max_batches_per_epoch=10, batch_size=32)
  result = trainer.train_path(planned, task_data, {**hp.defaults(config.search_space), **_HP},
                              budget, image_size=8, channels=1, evaluate_test=True)
  assert result.steps_per_epoch == 10 and result.total_steps == 40
  val = [h["val_accuracy"] for h in result.history]
  assert result.validation_accuracy == max(val)
  assert result.best_epoch == int(np.argmax(val))
  assert result.best_steps == (result.best_epoch + 1) * 10
  assert result.validation_accuracy > 0.6 and result.test_accuracy > 0.6
  trainable = [p for p in planned if p.trainable]
  assert sorted(result.weights) == sorted(p.spec.id for p in trainable)
  for p in trainable:
    shapes = [w.shape for w in result.weights[p.spec.id]]
    assert shapes == [s.shape for s in result.optimizer_slots[p.spec.id]]
  # The frozen components' stored arrays were not touched.
  for p, (spec, weights) in zip(planned, mroot.make_root(config)):
    if not p.trainable:
      assert all(a.tobytes() == b.tobytes() for a, b in zip(p.weights, weights))


def test_cloned_optimizer_state_is_restored(task_npz):
  config = _config(task_npz)
  head_shapes = [(64,), (64,), (64, 3), (3,)]
  slots = [np.full(s, 0.25, np.float32) for s in head_shapes]
  planned = _plan(config, slots=slots)
  seen = {}

  class Peek(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
      seen["momentums"] = [np.array(m) for m in self.model.optimizer.momentums]

  task_data = mdata.load_task(config.task("thirds"))
  trainer.train_path(planned, task_data, _HP, trainer.Budget(1, 1, 16), image_size=8, channels=1,
                     callbacks=[Peek()])
  assert [m.shape for m in seen["momentums"]] == head_shapes
  for m in seen["momentums"]:
    np.testing.assert_array_equal(m, 0.25)


def test_mirrored_over_two_logical_cpus(task_npz):
  assert len(tf.config.list_logical_devices("CPU")) == 2  # tests/conftest.py
  strategy = mstrategy.make_strategy(mstrategy.mtsys_pb2.DistributionConfig(strategy="mirrored"))
  assert strategy.num_replicas_in_sync == 2
  config = _config(task_npz)
  planned = _plan(config, trainable_kinds=("transformer_block",))
  task_data = mdata.load_task(config.task("thirds"))
  budget = trainer.Budget(2, 5, 32)
  result = trainer.train_path(planned, task_data, _HP, budget, image_size=8, channels=1,
                              strategy=strategy, seed=3)
  assert result.total_steps == 10
  assert len(result.weights) == 2  # the block and the head
  # The same steps on one device give the same weights, up to the order in which the replicas'
  # gradients are summed (tolerance 1e-5; measured 1.5e-8). Gradient clipping is on (norm 1):
  # it must see the batch's gradient, not each replica's half. The one device runs as a
  # one-replica MirroredStrategy: under any strategy Keras' symbolic build takes the first batch
  # off the iterator (see trainer._placement), so the plain one-device path sees other batches.
  single = trainer.train_path(planned, task_data, _HP, budget, image_size=8, channels=1,
                              strategy=tf.distribute.MirroredStrategy(["/cpu:0"]), seed=3)
  assert single.best_epoch == result.best_epoch
  compared = 0
  for cid, weights in result.weights.items():
    for got, want in zip(weights, single.weights[cid], strict=True):
      np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
      compared += 1
  moved = [not np.array_equal(w, p.weights[i]) for p in planned if p.trainable
           for i, w in enumerate(result.weights[p.spec.id])]
  assert compared == len(moved) > 10 and any(moved)  # training really moved the weights


def test_nothing_trainable_is_an_error(task_npz):
  config = _config(task_npz)
  frozen = [assembly.PlannedComponent(p.spec, p.weights, None, False) for p in _plan(config)]
  with pytest.raises(ValueError, match="at least one trainable component"):
    trainer.train_path(frozen, None, {}, trainer.Budget(1, 1, 1), image_size=8, channels=1)


@pytest.mark.parametrize("field", ["epochs", "max_batches_per_epoch", "batch_size"])
def test_budget_rejects_non_positive(field):
  args = {"epochs": 1, "max_batches_per_epoch": 1, "batch_size": 1, field: 0}
  with pytest.raises(ValueError, match=f"argument `{field}`. Expected a positive integer. "
                                       f"Received: {field}=0"):
    trainer.Budget(**args)


def test_epoch_is_capped_at_max_batches():
  budget = trainer.Budget(epochs=3, max_batches_per_epoch=100, batch_size=64)
  assert budget.steps_per_epoch(1000) == 16
  assert budget.steps_per_epoch(100000) == 100


def test_optimizer_follows_hparams():
  opt = trainer.make_optimizer({"learning_rate": 0.1, "warmup_ratio": 0.1, "momentum": 0.8,
                                "nesterov": True}, total_steps=100)
  schedule = opt._learning_rate  # the schedule object, not a value
  lr = [float(schedule(s)) for s in (0, 5, 10, 55, 100)]
  assert lr[0] == 0.0 and lr[1] == pytest.approx(0.05) and lr[2] == pytest.approx(0.1)
  assert 0 < lr[3] < 0.1 and lr[4] == pytest.approx(0.0, abs=1e-6)
  assert opt.momentum == 0.8 and opt.nesterov and opt.global_clipnorm == 1.0
  with pytest.raises(ValueError, match="lr_schedule.*Received: lr_schedule='linear'"):
    trainer.make_optimizer({"lr_schedule": "linear"}, 10)
