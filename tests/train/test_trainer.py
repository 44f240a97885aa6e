"""Training one path: it learns, keeps the best epoch, stores learning-rate-free momentum traces
as its optimizer slots and continues the cloned ones, and runs the same under a mirrored strategy
over 2 logical CPUs."""

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
from mtsys.train import model_cache
from mtsys.train import optimizer as moptimizer
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
_HEAD_SHAPES = [(64,), (64,), (64, 3), (3,)]  # LayerNorm scale and bias, Dense kernel and bias


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
  slots = [np.full(s, 0.25, np.float32) for s in _HEAD_SHAPES]
  planned = _plan(config, slots=slots)
  seen = {}

  class Peek(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
      seen["traces"] = [np.array(m) for m in self.model.optimizer.traces]

  task_data = mdata.load_task(config.task("thirds"))
  trainer.train_path(planned, task_data, _HP, trainer.Budget(1, 1, 16), image_size=8, channels=1,
                     callbacks=[Peek()])
  assert [m.shape for m in seen["traces"]] == _HEAD_SHAPES
  for m in seen["traces"]:
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


def test_public_names_stay_importable_from_trainer():
  assert trainer.ModelCache is model_cache.ModelCache
  assert trainer.make_optimizer is moptimizer.make_optimizer
  assert trainer.TraceSGD is moptimizer.TraceSGD
  assert callable(trainer.resolve_jit_compile) and callable(trainer.train_path)


def _global_norm(arrays):
  return float(np.sqrt(sum(np.sum(np.square(a, dtype=np.float64)) for a in arrays)))


def test_stored_slots_are_the_learning_rate_free_trace(task_npz):
  """What a child hands on (optimizer.npz) is optax's trace t <- g + momentum * t, which the
  last step used as w <- w - lr * t: at the end of a cosine schedule lr is about 0 while the
  trace is not (Keras' velocity, -lr * t, would be about 0 there)."""
  config = _config(task_npz)
  planned = _plan(config)  # only the head trains
  task_data = mdata.load_task(config.task("thirds"))
  momentum = 0.9
  hparams = {**_HP, "momentum": momentum, "lr_schedule": "cosine", "warmup_ratio": 0.1}
  budget = trainer.Budget(epochs=1, max_batches_per_epoch=12, batch_size=16)
  seen = {}

  class Peek(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
      if batch == 11:  # before the last step
        opt = self.model.optimizer
        seen["lr"] = float(opt.schedule(opt.iterations))
        seen["weights"] = [np.array(v) for v in self.model.trainable_variables]
        seen["traces"] = [np.array(opt.trace(v)) for v in self.model.trainable_variables]

  result = trainer.train_path(planned, task_data, hparams, budget, image_size=8, channels=1,
                              callbacks=[Peek()])
  assert result.total_steps == 12 and result.best_epoch == 0  # the kept state is the last one
  (head_id,) = result.optimizer_slots
  slots, weights = result.optimizer_slots[head_id], result.weights[head_id]
  assert [s.shape for s in slots] == [w.shape for w in seen["weights"]] == _HEAD_SHAPES
  assert 0 < seen["lr"] < 0.05 * _HP["learning_rate"]  # the end of the cosine
  assert _global_norm(slots) > 0.5  # far from zero
  for before, after, trace in zip(seen["weights"], weights, slots):
    # The last step moved the weights by -lr * (stored trace).
    np.testing.assert_allclose(before - after, seen["lr"] * trace, rtol=1e-3, atol=1e-7)
  # trace - momentum * previous trace is the last step's gradient, clipped to norm <= 1.
  gradient = [t - momentum * p for t, p in zip(slots, seen["traces"])]
  assert 0.01 < _global_norm(gradient) <= 1.0 + 1e-5


def test_carried_slots_continue_the_trace(task_npz):
  """A child starting from cloned slots c takes the step t = g + momentum * c (optax's trace),
  i.e. the same step as from zero momentum, g, plus momentum * c."""
  config = _config(task_npz)
  task_data = mdata.load_task(config.task("thirds"))
  momentum, lr = 0.8, _HP["learning_rate"]
  hparams = {**_HP, "momentum": momentum, "lr_schedule": "constant", "warmup_ratio": 0.0}
  rng = np.random.default_rng(7)
  carried = [rng.standard_normal(s).astype(np.float32) * 0.1 for s in _HEAD_SHAPES]
  one_step = trainer.Budget(epochs=1, max_batches_per_epoch=1, batch_size=16)
  planned = _plan(config)
  head = planned[-1]
  results = []
  for slots in (carried, None):  # same weights, same batch, hence the same gradient g
    planned[-1] = assembly.PlannedComponent(head.spec, head.weights, slots, trainable=True)
    results.append(trainer.train_path(planned, task_data, hparams, one_step, image_size=8,
                                      channels=1))
  (head_id,) = results[0].optimizer_slots
  with_slots, without = (r.optimizer_slots[head_id] for r in results)
  w_with, w_without = (r.weights[head_id] for r in results)
  assert _global_norm(without) > 0  # g
  for t, g, c, a, b in zip(with_slots, without, carried, w_with, w_without):
    np.testing.assert_allclose(t - g, momentum * c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b - a, lr * momentum * c, rtol=1e-4, atol=1e-6)
