"""Reusing compiled path models across `train_path` calls (`trainer.ModelCache`), and the
trainer's other fixed-cost savings.

A reused model must train exactly like a freshly built one: same weights, momentum traces,
history and test accuracy, bit for bit, whatever the previous path left in it; frozen components
stay untouched; paths whose structure differs get their own model (`mtsys.train.model_cache`).
Validation from the frozen prefix's outputs must match Keras' evaluate of the whole model
(`mtsys.train.fast_eval`); a OneDeviceStrategy must train like the default strategy, on its
device. The variable-backed optimizer and schedules: tests/train/test_optimizer.py.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtsys import data as mdata
from mtsys.config import hparams as hp
from mtsys.config import loader
from mtsys.protos import mtsys_pb2
from mtsys.system import assembly
from mtsys.system import paths as mpaths
from mtsys.system import root as mroot
from mtsys.train import strategy as mstrategy
from mtsys.train import trainer


@pytest.fixture(scope="module")
def task_npz(thirds_npz):
  """A learnable 3-class task: which third of the 8x8 image is bright."""
  return thirds_npz(seed=1, n=480)


@pytest.fixture(scope="module")
def config(task_npz):
  return loader.parse(f"""
  root {{ vit: "tiny/4" image_size: 8 channels: 1 seed: 2 num_blocks: 2 }}
  task {{ name: "thirds" num_classes: 3
          files {{ npz: "{task_npz}" validation_fraction: 0.2 test_fraction: 0.2 }} }}
  """)


@pytest.fixture(scope="module")
def task_data(config):
  return mdata.load_task(config.task("thirds"))


def _plan(config, trainable_kinds=("head",), perturb=0.0, seed=0, slots=False,
          block_dropout=None):
  """The root (frozen unless its kind is listed) and a new head; `perturb` shifts all weights so
  paths of the same structure differ in every value."""
  task = config.task("thirds")
  access = mroot.task_access(task)
  rng = np.random.default_rng(seed)
  planned = []
  root = mroot.make_root(config)
  h_spec, h_weights = mroot.new_head(task, config.arch.hidden_size, 5, access)
  for spec, weights in [*root, (h_spec, h_weights)]:
    weights = [w + perturb * rng.standard_normal(w.shape).astype(w.dtype) for w in weights]
    if block_dropout is not None and spec.kind == "transformer_block":
      spec_copy = type(spec)()
      spec_copy.CopyFrom(spec)
      conf = json.loads(spec.config_json)
      conf.update(dropout=block_dropout, seed=conf["seed"] + seed)
      spec_copy.config_json = json.dumps(conf, sort_keys=True)
      spec = spec_copy
    if spec.kind in trainable_kinds or spec is h_spec:
      opt = ([rng.standard_normal(w.shape).astype(np.float32) * 0.01 for w in weights]
             if slots else None)
      p = mpaths.clone(spec, weights, opt, task.name, access) if spec is not h_spec else \
          assembly.PlannedComponent(spec, weights, opt, trainable=True)
      planned.append(p)
    else:
      planned.append(assembly.PlannedComponent(spec, weights, None, trainable=False))
  return planned


_HP = {"learning_rate": 0.1, "crop": False, "flip": False}


def _train(planned, task_data, hparams, budget=trainer.Budget(2, 4, 16), **kw):
  return trainer.train_path(planned, task_data, hparams, budget, image_size=8, channels=1,
                            seed=3, evaluate_test=True, **kw)


def _assert_same(a, b):
  assert sorted(a.weights) == sorted(b.weights)
  for cid in a.weights:
    for x, y in zip(a.weights[cid], b.weights[cid]):
      assert x.tobytes() == y.tobytes(), cid
    for x, y in zip(a.optimizer_slots[cid], b.optimizer_slots[cid]):
      assert x.tobytes() == y.tobytes(), cid
  assert a.history == b.history
  assert a.test_accuracy == b.test_accuracy
  assert (a.validation_accuracy, a.best_epoch) == (b.validation_accuracy, b.best_epoch)


@pytest.mark.parametrize("kinds", [("head",), ("transformer_block",),
                                   ("patch_embedding", "class_token", "position_embedding",
                                    "transformer_block")])
def test_reused_model_trains_like_a_fresh_one(config, task_data, kinds):
  cache = trainer.ModelCache()
  first = _train(_plan(config, kinds, perturb=0.05, seed=1), task_data,
                 {**_HP, "momentum": 0.8, "warmup_ratio": 0.3}, cache=cache)
  assert not first.reused_model and len(cache) == 1
  # Same structure; every weight, the momentum slots and the hyperparameters differ.
  planned = _plan(config, kinds, perturb=0.02, seed=2, slots=True)
  hparams = {**_HP, "learning_rate": 0.05, "momentum": 0.95, "warmup_ratio": 0.1,
             "lr_schedule": "constant"}
  reused = _train(planned, task_data, hparams, trainer.Budget(3, 5, 16), cache=cache)
  fresh = _train(planned, task_data, hparams, trainer.Budget(3, 5, 16))
  assert reused.reused_model and not fresh.reused_model
  assert (cache.hits, cache.misses) == (1, 1)
  _assert_same(reused, fresh)


def test_reuse_keeps_frozen_components_and_input_arrays(config, task_data):
  cache = trainer.ModelCache()
  _train(_plan(config, ("transformer_block",), perturb=0.05, seed=1), task_data, _HP,
         cache=cache)
  planned = _plan(config, ("transformer_block",), perturb=0.03, seed=2)
  before = [[np.array(w) for w in p.weights] for p in planned]
  result = _train(planned, task_data, _HP, cache=cache)
  assert result.reused_model
  (entry,) = cache._idle.values()
  for p, layer, arrays in zip(planned, entry.layers, before):
    assert all(a.tobytes() == b.tobytes() for a, b in zip(p.weights, arrays))  # inputs untouched
    if not p.trainable:  # frozen: the model still holds exactly the planned values
      assert all(np.asarray(v).tobytes() == a.tobytes() for v, a in zip(layer.weights, arrays))
    else:
      assert any(np.asarray(v).tobytes() != a.tobytes() for v, a in zip(layer.weights, arrays))
  assert {id(v) for v in entry.model.trainable_variables} == {
      id(v) for p, l in zip(planned, entry.layers) if p.trainable for v in l.weights}


def test_reused_model_restores_dropout_seeds(config, task_data):
  """Dropout streams are layer state outside the weights; a reused model restarts them."""
  cache = trainer.ModelCache()
  _train(_plan(config, ("transformer_block",), seed=1, block_dropout=0.3), task_data, _HP,
         cache=cache)
  planned = _plan(config, ("transformer_block",), seed=2, block_dropout=0.3)
  reused = _train(planned, task_data, _HP, cache=cache)
  fresh = _train(planned, task_data, _HP)
  assert reused.reused_model
  _assert_same(reused, fresh)


def test_components_without_weights_start_from_their_initialisation(config, task_data):
  cache = trainer.ModelCache()
  _train(_plan(config, ("transformer_block",), perturb=0.05, seed=1), task_data, _HP,
         cache=cache)
  planned = _plan(config, ("transformer_block",), seed=2)
  i = next(i for i, p in enumerate(planned) if p.trainable)
  planned[i] = assembly.PlannedComponent(planned[i].spec, None, None, trainable=True)
  reused = _train(planned, task_data, _HP, cache=cache)
  fresh = _train(planned, task_data, _HP)
  assert reused.reused_model
  _assert_same(reused, fresh)


def test_different_structures_get_their_own_models(config, task_data):
  cache = trainer.ModelCache(max_models=2)
  _train(_plan(config, ("head",)), task_data, _HP, cache=cache)
  r = _train(_plan(config, ("transformer_block",)), task_data, _HP, cache=cache)
  assert not r.reused_model
  r = _train(_plan(config, ("head",)), task_data, {**_HP, "nesterov": True}, cache=cache)
  assert not r.reused_model  # Nesterov changes the traced update
  assert len(cache) == 2 and cache.misses == 3 and cache.hits == 0  # oldest model dropped
  r = _train(_plan(config, ("head",)), task_data, {**_HP, "nesterov": True}, cache=cache)
  assert r.reused_model
  with pytest.raises(ValueError, match="max_models"):
    trainer.ModelCache(max_models=0)


def test_a_model_in_use_is_not_handed_out_twice(config, task_data):
  cache = trainer.ModelCache()
  _train(_plan(config), task_data, _HP, cache=cache)
  ((key, _),) = cache._idle
  strategy = tf.distribute.get_strategy()
  entry = cache._checkout(key, strategy)
  assert entry is not None and cache._checkout(key, strategy) is None
  cache._checkin(entry)
  assert cache._checkout(key, strategy) is entry


def test_reuse_under_a_mirrored_strategy(config, task_data):
  strategy = mstrategy.make_strategy(mtsys_pb2.DistributionConfig(strategy="mirrored"))
  assert strategy.num_replicas_in_sync == 2  # tests/conftest.py splits the CPU
  cache = trainer.ModelCache()
  _train(_plan(config, ("transformer_block",), perturb=0.05, seed=1), task_data, _HP,
         strategy=strategy, cache=cache)
  planned = _plan(config, ("transformer_block",), seed=2, slots=True)
  reused = _train(planned, task_data, _HP, strategy=strategy, cache=cache)
  fresh = _train(planned, task_data, _HP, strategy=strategy)
  assert reused.reused_model
  _assert_same(reused, fresh)
  # A model lives on its strategy's devices: another strategy does not get it.
  ((key, _),) = cache._idle
  assert cache._checkout(key, tf.distribute.get_strategy()) is None
  assert cache._checkout(key, strategy) is not None


def test_stale_frozen_features_are_not_reused(config, task_data):
  """Validation keeps the frozen prefix's outputs across paths; new prefix weights (under the
  same component ids) must not see the old outputs."""
  cache = trainer.ModelCache()
  _train(_plan(config, ("head",), seed=1), task_data, _HP, cache=cache)
  planned = _plan(config, ("head",), perturb=0.1, seed=2)  # same ids, other frozen values
  reused = _train(planned, task_data, _HP, cache=cache)
  fresh = _train(planned, task_data, _HP)
  assert reused.reused_model
  _assert_same(reused, fresh)


def test_validation_matches_keras_evaluate_of_the_whole_model(config, task_data):
  planned = _plan(config, ("transformer_block",), perturb=0.05, seed=4)
  result = _train(planned, task_data, _HP, trainer.Budget(1, 6, 16))
  trained = [assembly.PlannedComponent(p.spec, result.weights.get(p.spec.id, p.weights), None,
                                       p.trainable) for p in planned]
  model, _ = assembly.build_path_model(trained, 8, 1)
  model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
  for split, got in (("validation", result.validation_accuracy),
                     ("test", result.test_accuracy)):
    ds = mdata.make_dataset(task_data, split, batch_size=16, image_size=8, channels=1,
                            hparams=None, training=False, seed=None)
    metrics = model.evaluate(ds, verbose=0, return_dict=True)
    assert metrics["accuracy"] == got
    if split == "validation":
      assert result.history[0]["val_loss"] == pytest.approx(metrics["loss"], rel=1e-5)


def test_jit_auto_is_on_only_with_an_accelerator(monkeypatch):
  monkeypatch.setattr(trainer, "_has_accelerator", lambda: True)
  assert trainer.resolve_jit_compile("auto") == "auto"
  monkeypatch.setattr(trainer, "_has_accelerator", lambda: False)
  assert trainer.resolve_jit_compile("auto") is False
  assert trainer.resolve_jit_compile(True) is True
  assert trainer.resolve_jit_compile(False) is False


def test_path_learns_with_a_cache(config, task_data):
  cache = trainer.ModelCache()
  hparams = {**hp.defaults(config.search_space), **_HP}
  for seed in (1, 2):
    result = _train(_plan(config, ("transformer_block",), seed=seed), task_data, hparams,
                    trainer.Budget(4, 10, 32), cache=cache)
  assert result.reused_model
  assert result.validation_accuracy > 0.6 and result.test_accuracy > 0.6


def test_one_device_strategy_is_a_device_scope(config, task_data):
  """Under a OneDeviceStrategy a path trains exactly as under the default strategy, with its
  variables on the strategy's device (Keras' per-call strategy overhead is skipped)."""
  planned = _plan(config, ("transformer_block",), perturb=0.05, seed=5)
  plain = _train(planned, task_data, _HP)
  second_cpu = tf.config.list_logical_devices("CPU")[-1].name
  strategy = tf.distribute.OneDeviceStrategy(second_cpu)
  cache = trainer.ModelCache()
  on_device = _train(planned, task_data, _HP, strategy=strategy, cache=cache)
  _assert_same(on_device, plain)
  (entry,) = cache._idle.values()
  devices = {v.value.device for v in entry.model.weights + entry.optimizer.variables}
  assert {d.split("/")[-1] for d in devices} == {"device:CPU:1"}
