"""Compiled path models, built once and reused by paths of the same structure.

Building a `keras.Model`, compiling it and tracing its train and test functions costs seconds,
more than a small child's training. Evolution trains many children of the same structure one
after another, so `train_path(..., cache=ModelCache())` keeps compiled models and reuses one
whenever the next path has the same structure (component kinds and configs, which of them train,
input shape, strategy, XLA setting, schedule kind, Nesterov): every weight, every other layer
state (e.g. dropout seeds), the optimizer's step counter and momentum traces are reassigned, and
the hyperparameters that may differ between children (learning rate, warm-up and decay lengths,
momentum) are variables read by the traced step (`mtsys.train.optimizer`), so a reused model
trains exactly like a freshly built one (tests/train/test_trainer_reuse.py). Without a cache
every call builds a new model.

The cache also keeps resized validation images and the outputs of frozen components on them,
for `mtsys.train.fast_eval`, which reads and fills those tables through the cache's underscore
methods (they are this package's, not the caller's).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import threading
import typing
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from mtsys.system import assembly
from mtsys.train import optimizer as moptimizer


@dataclasses.dataclass(eq=False)
class Entry:
  """A compiled path model and what is needed to load another path of the same structure."""

  key: tuple
  strategy: tf.distribute.Strategy
  model: keras.Model
  layers: list
  optimizer: moptimizer.TraceSGD
  input_shapes: list  # per layer, with the batch dimension
  # Per layer: its variables that are not weights (e.g. dropout seed states).
  extra_state: list
  # Index of the lowest trainable component. Evaluation runs the frozen components below it
  # once (`prefix`, predict only) and the rest (`suffix`) every epoch; both None when it is 0.
  first_trainable: int = 0
  prefix: Optional[keras.Model] = None
  suffix: Optional[keras.Model] = None
  # Evaluation in one traced call per pass (no distribution, no XLA); else Keras' evaluate.
  direct_eval: bool = False
  eval_functions: dict = dataclasses.field(default_factory=dict)


class ModelCache:
  """Compiled path models kept between `train_path` calls, reused by paths of the same structure.

  Pass one to `train_path(..., cache=...)` when training many paths in one process. A model is
  reused when the next path has the same component kinds and configs (seeds aside), the same
  trainable components, input shape, strategy (the same object), XLA setting, schedule kind
  ("restarts" or the cosine family) and Nesterov flag; everything else (weights, layer state,
  optimizer step and momentum traces, learning rate, warm-up and decay lengths, momentum
  coefficient) is reassigned. A model is used by one call at a time (thread-safe); at most
  `max_models` idle models are kept, the least recently used is dropped first. Each holds a copy
  of every weight of its path (on the strategy's devices) and the optimizer's momentum traces.

  Also kept, for as many sets each: resized validation images, and the outputs of frozen
  components on them (each set only if under 64 MiB).

  Names of a reused model's layers stay those of the path it was built for.
  """

  def __init__(self, max_models: int = 4):
    if not isinstance(max_models, int) or max_models <= 0:
      raise ValueError(f"Invalid value received for argument `max_models`. Expected a positive "
                       f"integer. Received: max_models={max_models!r}")
    self.max_models = max_models
    self._idle: collections.OrderedDict = collections.OrderedDict()  # (key, n) -> Entry
    # (id(task_data), split, image_size, channels) -> (task_data, images, labels)
    self._eval_data: collections.OrderedDict = collections.OrderedDict()
    # (id(task_data), split, image_size, channels, prefix component ids)
    #   -> (task_data, prefix weights, features)
    self._features: collections.OrderedDict = collections.OrderedDict()
    self._lock = threading.Lock()
    self._serial = 0
    self.hits = 0
    self.misses = 0

  def __len__(self) -> int:
    with self._lock:
      return len(self._idle)

  def clear(self) -> None:
    with self._lock:
      self._idle.clear()
      self._eval_data.clear()
      self._features.clear()

  def _checkout(self, key, strategy) -> Optional[Entry]:
    with self._lock:
      for slot, entry in reversed(self._idle.items()):
        if slot[0] == key and entry.strategy is strategy:
          del self._idle[slot]
          self.hits += 1
          return entry
      self.misses += 1
      return None

  def _checkin(self, entry: Entry) -> None:
    with self._lock:
      self._serial += 1
      self._idle[(entry.key, self._serial)] = entry
      self._trim(self._idle)

  def _trim(self, table: collections.OrderedDict) -> None:
    while len(table) > self.max_models:  # least recently used first
      table.popitem(last=False)

  # Per-task-data tables (_eval_data, _features): keyed by (id(task_data), *key), holding
  # (task_data, *value) so that a recycled id of another TaskData never matches.
  def _lookup(self, table, task_data, key) -> Optional[tuple]:
    with self._lock:
      hit = table.get((id(task_data), *key))
    return hit[1:] if hit is not None and hit[0] is task_data else None

  def _touch(self, table, task_data, key) -> None:
    with self._lock:
      if (id(task_data), *key) in table:
        table.move_to_end((id(task_data), *key))

  def _store(self, table, task_data, key, *value) -> None:
    with self._lock:
      table[(id(task_data), *key)] = (task_data, *value)
      self._trim(table)

  def _get_eval_data(self, task_data, key):
    hit = self._lookup(self._eval_data, task_data, key)
    if hit is not None:
      self._touch(self._eval_data, task_data, key)
    return hit  # (images, labels) or None

  def _put_eval_data(self, task_data, key, images, labels) -> None:
    self._store(self._eval_data, task_data, key, images, labels)

  def _get_features(self, task_data, key, prefix_weights):
    hit = self._lookup(self._features, task_data, key)
    if hit is None or not _same_arrays(hit[0], prefix_weights):  # compared outside the lock
      return None
    self._touch(self._features, task_data, key)
    return hit[1]

  def _put_features(self, task_data, key, prefix_weights, features) -> None:
    self._store(self._features, task_data, key, prefix_weights, features)


def _same_arrays(a, b) -> bool:
  """Whether two lists (per component) of weight lists hold the same values."""
  return len(a) == len(b) and all(
      len(x) == len(y) and all(u is v or np.array_equal(u, v) for u, v in zip(x, y))
      for x, y in zip(a, b))


def _component_key(p: assembly.PlannedComponent) -> tuple:
  config = json.loads(p.spec.config_json)
  config.pop("seed", None)  # seeds only fix initial values and dropout streams (reassigned)
  return (p.spec.kind, json.dumps(config, sort_keys=True), bool(p.trainable))


class CacheKey(typing.NamedTuple):
  """What a reused model must share with the path it trains."""

  components: tuple
  image_size: int
  channels: int
  jit_compile: str  # repr: True, False or "auto"
  dtype_policy: str
  schedule: str
  nesterov: bool


def cache_key(planned, image_size, channels, jit_compile,
              settings: moptimizer.OptimizerSettings) -> CacheKey:
  return CacheKey(tuple(_component_key(p) for p in planned), int(image_size), int(channels),
                  repr(jit_compile), keras.config.dtype_policy().name,
                  settings.schedule_class.__name__, settings.nesterov)


def _check_shapes(layer, p: assembly.PlannedComponent) -> None:
  expected = [tuple(w.shape) for w in layer.weights]
  got = [tuple(np.shape(w)) for w in p.weights]
  if expected != got:
    raise ValueError(f"Stored weights of component '{p.spec.id}' ({p.spec.kind}) have shapes "
                     f"{got}; the layer expects {expected}.")


def _extra_state(layer) -> list:
  weights = {id(w) for w in layer.weights}
  return [v for v in layer.variables if id(v) not in weights]


def _loss_and_metrics():
  return dict(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])


def _build_entry(key, strategy, planned, image_size, channels, settings, jit_compile,
                 direct_eval: bool) -> Entry:
  """A new compiled model for `planned` (call inside the strategy's scope)."""
  model, layers = assembly.build_path_model(planned, image_size, channels)
  optimizer = moptimizer.build_optimizer(settings)
  model.compile(optimizer=optimizer, jit_compile=jit_compile, **_loss_and_metrics())
  optimizer.build(list(model.trainable_variables))
  entry = Entry(
      key=key, strategy=strategy, model=model, layers=layers, optimizer=optimizer,
      input_shapes=[(None, *layer.input.shape[1:]) for layer in layers],
      extra_state=[_extra_state(layer) for layer in layers], direct_eval=direct_eval)
  k = next(i for i, p in enumerate(planned) if p.trainable)
  if k > 0:
    # The same layer objects (and variables) in two more functional graphs.
    entry.first_trainable = k
    entry.prefix = keras.Model(model.inputs, layers[k - 1].output, name="frozen_prefix")
    entry.prefix.compile(optimizer=None, jit_compile=jit_compile)
    features = keras.Input(entry.input_shapes[k][1:], name="features")
    x = features
    for layer in layers[k:]:
      x = layer(x)
    entry.suffix = keras.Model(features, x, name="trained_suffix")
    entry.suffix.compile(optimizer=None, jit_compile=jit_compile, **_loss_and_metrics())
  return entry


def _fresh_values(entry: Entry, planned) -> list:
  """Per layer, the values a fresh layer would start from where the reused one needs them: its
  initial weights when the path gives none, and its non-weight state (e.g. dropout seeds)."""
  out = []
  for layer, p, shape, extra in zip(entry.layers, planned, entry.input_shapes,
                                    entry.extra_state):
    if p.weights is None or extra:
      fresh = assembly.instantiate(p.spec)
      fresh(keras.KerasTensor(shape))  # builds it
      out.append((None if p.weights is not None else fresh.get_weights(),
                  [np.array(v.value) for v in _extra_state(fresh)]))
    else:
      out.append((None, []))
  return out


def _load_path(entry: Entry, planned, fresh_values) -> None:
  """Gives a reused model the state a freshly built model of `planned` would have."""
  for layer, p, (fresh_weights, fresh_extra), extra in zip(entry.layers, planned, fresh_values,
                                                           entry.extra_state):
    if p.weights is not None:
      _check_shapes(layer, p)
      values = p.weights
    else:
      values = fresh_weights
    for variable, value in zip(layer.weights, values):
      variable.assign(value)
    for variable, value in zip(extra, fresh_extra):
      variable.assign(value)


def _reset_optimizer(entry: Entry, planned, settings: moptimizer.OptimizerSettings,
                     fresh: bool) -> None:
  """Step 0, the path's schedule and momentum, and the cloned (or zero) momentum traces."""
  opt = entry.optimizer
  if not fresh:
    moptimizer.restart(opt, settings)
  opt.load_slots(((w, s) for layer, p in zip(entry.layers, planned)
                  if p.trainable and p.optimizer_slots is not None
                  for w, s in zip(layer.weights, p.optimizer_slots)),
                 zero_others=not fresh)  # a fresh optimizer's traces are zero already


def checkout(cache: Optional[ModelCache], planned, *, image_size, channels, jit_compile,
             settings: moptimizer.OptimizerSettings, strategy, run_strategy, on_device,
             default_strategy) -> tuple[Entry, bool]:
  """A compiled model holding `planned`, ready to train it: (entry, whether it was reused).

  The model comes from `cache` when one of the same structure is idle there (it is reloaded
  with the path's weights, layer state, optimizer step, schedule, momentum and traces), else it
  is built and compiled under `run_strategy` and `on_device`. Give it back with `checkin`.
  """
  key = cache_key(planned, image_size, channels, jit_compile, settings)
  entry = cache._checkout(key, strategy) if cache is not None else None
  reused = entry is not None
  # Built outside the strategy's scope: only their values are used.
  fresh_values = _fresh_values(entry, planned) if reused else None
  with on_device(), run_strategy.scope():
    if reused:
      _load_path(entry, planned, fresh_values)
    else:
      direct_eval = run_strategy is default_strategy and jit_compile is False
      entry = _build_entry(key, strategy, planned, image_size, channels, settings, jit_compile,
                           direct_eval)
    _reset_optimizer(entry, planned, settings, fresh=not reused)
  return entry, reused


def checkin(cache: Optional[ModelCache], entry: Entry) -> None:
  """Keeps a model `checkout` gave for reuse (nothing without a cache)."""
  if cache is not None:
    cache._checkin(entry)
