"""Training and evaluating one path under a `tf.distribute` strategy.

The recipe is Steiner et al.'s ViT fine-tuning setup as used by muNet/µ2Net: SGD with momentum
(optionally Nesterov), a cosine schedule with linear warm-up, global-norm clipping at 1.0, no
weight decay. Every value comes from the path's hyperparameters. An "epoch" is
min(1 epoch, `max_batches_per_epoch` batches) so small and large tasks get comparable compute;
validation runs after each epoch, and the best epoch's weights and optimizer state are kept.

Training uses `keras.Model.fit` itself, so the engine adds no per-step cost over plain Keras.

Fixed cost per child. Building a `keras.Model`, compiling it and tracing its train and test
functions costs seconds, more than a small child's training. Evolution trains many children of
the same structure one after another, so `train_path(..., cache=ModelCache())` keeps compiled
models and reuses one whenever the next path has the same structure (component kinds and
configs, which of them train, input shape, strategy, XLA setting, schedule kind, Nesterov):
every weight, every other layer state (e.g. dropout seeds), the optimizer's step counter and
momentum are reassigned, and the hyperparameters that may differ between children (learning
rate, warm-up and decay lengths, momentum) are variables read by the traced step, so a reused
model trains exactly like a freshly built one (tests/train/test_trainer_reuse.py). Without a
cache (the default) every call builds a new model.

Also, with or without a cache:
- XLA (`jit_compile="auto"`) is only used where an accelerator exists: on CPU-only hosts it
  compiles for seconds and runs no faster.
- A `OneDeviceStrategy` (the command-line default) becomes a plain device scope: Keras would
  otherwise rebuild the model symbolically and make two distributed iterators on every fit,
  evaluate and predict call (see `_placement`).
- Validation images are resized once and kept in memory (small splits), in batches of 4x the
  training batch. The frozen components below the lowest trainable one give the same outputs
  for them every epoch, so they run once (once per cache, for paths sharing them) and each
  epoch runs only the rest of the path, one traced call per batch (Keras' evaluate under other
  strategies or XLA). The logits are the whole model's, so accuracy is exactly what Keras'
  evaluate reports (the mean loss may differ in the last bits: other batches).
- On CPU-only hosts, tf.data autotuning of the training pipeline is off (see `_input_options`).

The schedules and momentum live in variables; the learning rates equal Keras' schedules'
bit for bit, except that "restarts" may differ from a graph with constant-folded hyperparameters
in the last bit at a few steps (grappler rewrites a division by a constant there).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import math
import threading
import time
import typing
from typing import Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from mtsys import data as mdata
from mtsys.config import hparams as hp
from mtsys.system import assembly


@dataclasses.dataclass(frozen=True)
class Budget:
  """How much a path trains: `epochs` validation cycles of at most `max_batches_per_epoch`."""

  epochs: int
  max_batches_per_epoch: int
  batch_size: int

  def __post_init__(self):
    for field in ("epochs", "max_batches_per_epoch", "batch_size"):
      value = getattr(self, field)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"Invalid value received for argument `{field}`. Expected a positive "
                         f"integer. Received: {field}={value!r}")

  def steps_per_epoch(self, num_train_examples: int) -> int:
    return max(1, min(math.ceil(num_train_examples / self.batch_size), self.max_batches_per_epoch))


@dataclasses.dataclass
class TrainResult:
  """What training a path produced.

  `weights` / `optimizer_slots` hold the best epoch's arrays of every trainable component, by
  component id, in the layer's weight order.
  """

  validation_accuracy: float
  best_epoch: int
  steps_per_epoch: int
  # Steps that produced the kept weights (up to and including the best epoch).
  best_steps: int
  # All steps run, including epochs after the best one (compute accounting).
  total_steps: int
  train_seconds: float
  # Wall time outside model.fit: building, compiling, restoring, snapshots.
  overhead_seconds: float
  history: list
  weights: dict
  optimizer_slots: dict
  test_accuracy: Optional[float] = None
  # True if a compiled model from the `cache` was reused (no build, compile or tracing).
  reused_model: bool = False


# --- Optimizer and schedule -------------------------------------------------------------------

def _hparam_variable(value, name):
  # Read by the traced train step, assigned between children; one value for every replica.
  return keras.Variable(float(value), dtype="float32", trainable=False, name=name,
                        aggregation="only_first_replica")


class _WarmupCosine(keras.optimizers.schedules.CosineDecay):
  """Keras' CosineDecay (linear warm-up from 0 to the peak, then cosine) with its numbers held
  in variables, so a traced train step follows new values without retracing. `alpha=1` keeps the
  rate at the peak after warm-up (the "constant" schedule)."""

  def __init__(self, peak, decay_steps, warmup_steps, alpha):
    super().__init__(0.0, decay_steps, alpha=alpha, warmup_target=peak, warmup_steps=warmup_steps)
    # CosineDecay.__call__ reads these through ops.cast / arithmetic; variables work unchanged.
    self.warmup_target = _hparam_variable(peak, "peak_learning_rate")
    self.decay_steps = _hparam_variable(decay_steps, "decay_steps")
    self.warmup_steps = _hparam_variable(warmup_steps, "warmup_steps")
    self.alpha = _hparam_variable(alpha, "alpha")

  def set(self, peak, decay_steps, warmup_steps, alpha):
    if decay_steps <= 0:
      raise ValueError(f"Argument `decay_steps` must be > 0. Received: decay_steps={decay_steps}")
    self.warmup_target.assign(float(peak))
    self.decay_steps.assign(float(decay_steps))
    self.warmup_steps.assign(float(warmup_steps))
    self.alpha.assign(float(alpha))

  def get_config(self):
    return {"initial_learning_rate": 0.0, "decay_steps": int(self.decay_steps.numpy()),
            "alpha": float(self.alpha.numpy()), "name": self.name,
            "warmup_target": float(self.warmup_target.numpy()),
            "warmup_steps": int(self.warmup_steps.numpy())}


class _Restarts(keras.optimizers.schedules.CosineDecayRestarts):
  """Keras' CosineDecayRestarts (SGDR) with the peak and first period held in variables."""

  def __init__(self, peak, first_decay_steps):
    super().__init__(peak, first_decay_steps)
    self.initial_learning_rate = _hparam_variable(peak, "peak_learning_rate")
    self.first_decay_steps = _hparam_variable(first_decay_steps, "first_decay_steps")

  def set(self, peak, first_decay_steps):
    if first_decay_steps <= 0:
      raise ValueError("Argument `first_decay_steps` must be > 0. Received: "
                       f"first_decay_steps={first_decay_steps}")
    self.initial_learning_rate.assign(float(peak))
    self.first_decay_steps.assign(float(first_decay_steps))

  def get_config(self):
    config = super().get_config()
    config.update(initial_learning_rate=float(self.initial_learning_rate.numpy()),
                  first_decay_steps=int(self.first_decay_steps.numpy()))
    return config


class _PathSGD(keras.optimizers.SGD):
  """Keras' SGD with its momentum coefficient in a variable.

  The update is SGD's, operation for operation. Momentum slots always exist, so a traced step
  serves any momentum; with momentum 0 the slot gets m = 0 * m - lr * g = -lr * g and the weight
  w + m, bit for bit plain SGD's w - lr * g (the slots are then reported as zeros, as plain SGD
  keeps none).
  """

  def __init__(self, learning_rate, momentum, nesterov, global_clipnorm):
    super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                     global_clipnorm=global_clipnorm, name="sgd")
    with keras.name_scope(self.name, caller=self):
      self._momentum_coefficient = _hparam_variable(momentum, "momentum")

  def set_momentum(self, momentum: float) -> None:
    if not 0 <= momentum <= 1:
      raise ValueError("`momentum` must be a float between [0, 1].")
    self.momentum = float(momentum)
    self._momentum_coefficient.assign(float(momentum))

  def build(self, variables):
    if self.built:
      return
    keras.optimizers.Optimizer.build(self, variables)
    self.momentums = self.add_optimizer_variables(variables, "momentum")

  def _clip_gradients(self, grads):
    """Clips the batch's gradient, not each replica's share of it.

    Keras 3 (TF backend) clips by global norm before the replicas' gradients are summed, so
    with several replicas each clips its own part by its own norm and data-parallel training
    diverges from one device (measured: 2.7e-2 apart after 5 steps, 1.5e-8 without clipping).
    Here the gradients are summed first and clipped once; the sum Keras takes next adds
    `replicas` identical copies, hence the division.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    context = tf.distribute.get_replica_context()
    if self.global_clipnorm is None or replicas == 1 or context is None:
      return super()._clip_gradients(grads)
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, list(grads))
    return [g / replicas for g in super()._clip_gradients(total)]

  def update_step(self, gradient, variable, learning_rate):
    ops = keras.ops
    learning_rate = ops.cast(learning_rate, variable.dtype)
    gradient = ops.cast(gradient, variable.dtype)
    m = self.momentums[self._get_variable_index(variable)]
    momentum = ops.cast(self._momentum_coefficient, variable.dtype)
    self.assign(m, ops.subtract(ops.multiply(m, momentum), ops.multiply(gradient, learning_rate)))
    if self.nesterov:
      self.assign_add(variable, ops.subtract(ops.multiply(m, momentum),
                                             ops.multiply(gradient, learning_rate)))
    else:
      self.assign_add(variable, m)

  def get_config(self):
    config = super().get_config()
    config["momentum"] = float(self.momentum)
    return config


@dataclasses.dataclass(frozen=True)
class _OptimizerSettings:
  schedule: str  # "cosine", "constant" or "restarts"
  peak: float
  warmup_steps: int
  decay_steps: int  # for "restarts": the first period
  momentum: float
  nesterov: bool

  @property
  def schedule_class(self):
    return _Restarts if self.schedule == "restarts" else _WarmupCosine


def _optimizer_settings(hparams: Mapping[str, object], total_steps: int) -> _OptimizerSettings:
  lr = float(hparams.get("learning_rate", hp.KNOWN["learning_rate"].default))
  schedule = hparams.get("lr_schedule", "cosine")
  momentum = float(hparams.get("momentum", hp.KNOWN["momentum"].default))
  nesterov = bool(hparams.get("nesterov", hp.KNOWN["nesterov"].default))
  if schedule not in ("constant", "cosine", "restarts"):
    raise ValueError(f"Invalid value received for hyperparameter `lr_schedule`. Expected one of "
                     f"['constant', 'cosine', 'restarts']. Received: lr_schedule={schedule!r}")
  if not 0 <= momentum <= 1:
    raise ValueError(f"Invalid value received for hyperparameter `momentum`. Expected a value in "
                     f"[0, 1]. Received: momentum={momentum}")
  if schedule == "restarts":
    return _OptimizerSettings(schedule, lr, 0, max(1, total_steps // 4), momentum, nesterov)
  warmup = int(round(float(hparams.get("warmup_ratio", hp.KNOWN["warmup_ratio"].default))
                     * total_steps))
  warmup = min(warmup, total_steps - 1)
  return _OptimizerSettings(schedule, lr, warmup, max(1, total_steps - warmup), momentum,
                            nesterov)


def _make_schedule(s: _OptimizerSettings):
  if s.schedule == "restarts":
    return _Restarts(s.peak, s.decay_steps)
  # "constant": alpha=1, the cosine part stays at the peak, leaving only the warm-up.
  return _WarmupCosine(s.peak, s.decay_steps, s.warmup_steps,
                       1.0 if s.schedule == "constant" else 0.0)


def _set_schedule(schedule, s: _OptimizerSettings) -> None:
  if s.schedule == "restarts":
    schedule.set(s.peak, s.decay_steps)
  else:
    schedule.set(s.peak, s.decay_steps, s.warmup_steps, 1.0 if s.schedule == "constant" else 0.0)


def make_optimizer(hparams: Mapping[str, object], total_steps: int) -> keras.optimizers.SGD:
  """SGD(momentum, nesterov) with the path's schedule and global-norm clipping at 1.0.

  The schedules are Keras' CosineDecay (with linear warm-up; "constant" keeps the peak after
  warm-up) and CosineDecayRestarts, with their numbers and the momentum held in variables.
  """
  s = _optimizer_settings(hparams, total_steps)
  return _PathSGD(_make_schedule(s), s.momentum, s.nesterov, global_clipnorm=1.0)


# --- XLA ----------------------------------------------------------------------------------------

@functools.cache
def _has_accelerator() -> bool:  # physical devices are fixed once TensorFlow has started
  return any(d.device_type != "CPU" for d in tf.config.list_physical_devices())


def _input_options() -> tf.data.Options:
  """Options for the training input pipeline.

  On CPU-only hosts the input pipeline and the train step share the same cores; tf.data's
  autotuner then mostly competes with training, and stopping it blocks the end of every `fit`
  for tens to hundreds of milliseconds (its optimisation pass must finish first). There,
  AUTOTUNE parallelism is fixed instead (the number of cores). The batches are the same.
  """
  options = tf.data.Options()
  if not _has_accelerator():
    options.autotune.enabled = False
  return options


def resolve_jit_compile(jit_compile):
  """`jit_compile` as given, except "auto" means False on hosts with no accelerator.

  On CPU, XLA compiles a train step for seconds (more than a small child trains) and runs it no
  faster; where a GPU or TPU exists "auto" is passed on to Keras, which decides per model.
  """
  if jit_compile == "auto" and not _has_accelerator():
    return False
  return jit_compile


# --- Model cache --------------------------------------------------------------------------------

@dataclasses.dataclass(eq=False)
class _Entry:
  """A compiled path model and what is needed to load another path of the same structure."""

  key: tuple
  strategy: tf.distribute.Strategy
  model: keras.Model
  layers: list
  optimizer: _PathSGD
  input_shapes: list  # per layer, with the batch dimension
  momentum_index: dict  # id(trainable variable) -> index into optimizer.momentums
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
  optimizer step and momentum, learning rate, warm-up and decay lengths, momentum coefficient)
  is reassigned. A model is used by one call at a time (thread-safe); at most `max_models`
  idle models are kept, the least recently used is dropped first. Each holds a copy of every
  weight of its path (on the strategy's devices) and the optimizer's momentum.

  Also kept, for as many sets each: resized validation images, and the outputs of frozen
  components on them (each set only if under 64 MiB).

  Names of a reused model's layers stay those of the path it was built for.
  """

  def __init__(self, max_models: int = 4):
    if not isinstance(max_models, int) or max_models <= 0:
      raise ValueError(f"Invalid value received for argument `max_models`. Expected a positive "
                       f"integer. Received: max_models={max_models!r}")
    self.max_models = max_models
    self._idle: collections.OrderedDict = collections.OrderedDict()  # (key, n) -> _Entry
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

  def _checkout(self, key, strategy) -> Optional[_Entry]:
    with self._lock:
      for slot, entry in reversed(self._idle.items()):
        if slot[0] == key and entry.strategy is strategy:
          del self._idle[slot]
          self.hits += 1
          return entry
      self.misses += 1
      return None

  def _checkin(self, entry: _Entry) -> None:
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


class _CacheKey(typing.NamedTuple):
  """What a reused model must share with the path it trains."""

  components: tuple
  image_size: int
  channels: int
  jit_compile: str  # repr: True, False or "auto"
  dtype_policy: str
  schedule: str
  nesterov: bool


def _cache_key(planned, image_size, channels, jit_compile,
               settings: _OptimizerSettings) -> _CacheKey:
  return _CacheKey(tuple(_component_key(p) for p in planned), int(image_size), int(channels),
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
                 direct_eval: bool) -> _Entry:
  """A new compiled model for `planned` (call inside the strategy's scope)."""
  model, layers = assembly.build_path_model(planned, image_size, channels)
  optimizer = _PathSGD(_make_schedule(settings), settings.momentum, settings.nesterov,
                       global_clipnorm=1.0)
  model.compile(optimizer=optimizer, jit_compile=jit_compile, **_loss_and_metrics())
  trainable_vars = list(model.trainable_variables)
  optimizer.build(trainable_vars)
  entry = _Entry(
      key=key, strategy=strategy, model=model, layers=layers, optimizer=optimizer,
      input_shapes=[(None, *layer.input.shape[1:]) for layer in layers],
      momentum_index={id(v): i for i, v in enumerate(trainable_vars)},
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


def _fresh_values(entry: _Entry, planned) -> list:
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


def _load_path(entry: _Entry, planned, fresh_values) -> None:
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


def _reset_optimizer(entry: _Entry, planned, settings: _OptimizerSettings, fresh: bool) -> None:
  """Step 0, the path's schedule and momentum, and the cloned (or zero) momentum slots."""
  opt = entry.optimizer
  if not fresh:
    opt.iterations.assign(0)
    _set_schedule(opt._learning_rate, settings)
    opt.set_momentum(settings.momentum)
  restored = set()
  for layer, p in zip(entry.layers, planned):
    if p.trainable and p.optimizer_slots is not None:
      for w, s in zip(layer.weights, p.optimizer_slots):
        i = entry.momentum_index[id(w)]
        opt.momentums[i].assign(s)
        restored.add(i)
  if not fresh:
    for i, m in enumerate(opt.momentums):
      if i not in restored:
        m.assign(tf.zeros(m.shape, m.dtype))


# --- Evaluation data ----------------------------------------------------------------------------

# Evaluation batches are this many training batches: no activations are kept for a backward pass,
# and fewer, larger batches cost less per example. Logits do not depend on the batch size.
_EVAL_BATCH_FACTOR = 4
# A validation split up to this size (as float32 images) is preprocessed once and kept in memory
# (in the cache, across paths), instead of decoded and resized again every epoch.
_EVAL_IN_MEMORY_BYTES = 64 << 20


def _eval_arrays(task_data, split, *, batch_size, image_size, channels,
                 cache: Optional[ModelCache]):
  """(images, labels) of `split` in order and resized, if small enough to keep in memory."""
  nbytes = task_data.sizes.get(split, 0) * image_size * image_size * channels * 4
  if nbytes > _EVAL_IN_MEMORY_BYTES:
    return None
  key = (split, int(image_size), int(channels))
  stored = cache._get_eval_data(task_data, key) if cache is not None else None
  if stored is None:
    ds = mdata.make_dataset(task_data, split, training=False, batch_size=batch_size,
                            image_size=image_size, channels=channels, hparams=None, seed=None)
    batches = list(ds)
    stored = (tf.concat([b[0] for b in batches], 0), tf.concat([b[1] for b in batches], 0))
    if cache is not None:
      cache._put_eval_data(task_data, key, *stored)
  return stored


def _metrics_function(model: keras.Model, input_shape, input_dtype):
  """A traced function: a batch (inputs, labels) -> (correct predictions, mean loss x size)."""
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  def batch_metrics(x, y):
    logits = model(x, training=False)
    n = tf.cast(tf.shape(logits)[0], tf.float32)
    labels = tf.cast(y, logits.dtype)
    predicted = tf.cast(tf.argmax(logits, axis=-1), logits.dtype)
    correct = tf.reduce_sum(tf.cast(tf.equal(labels, predicted), tf.float32))
    return correct, tf.cast(loss_fn(y, logits), tf.float32) * n, n

  return tf.function(batch_metrics, input_signature=[
      tf.TensorSpec((None, *input_shape), input_dtype), tf.TensorSpec((None,), tf.int64)])


def _evaluate(entry: _Entry, model: keras.Model, inputs, labels, batch_size) -> dict:
  """Keras evaluate's accuracy and loss of `model` on in-memory (inputs, labels).

  Those are SparseCategoricalAccuracy and the batch-size-weighted mean of each batch's mean
  loss, accumulated in float32 batch after batch. Without distribution or XLA this runs one
  traced call per batch and nothing else; otherwise it is Keras' evaluate.
  """
  if not entry.direct_eval:
    ds = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(batch_size)
    return model.evaluate(ds, verbose=0, return_dict=True)
  inputs, labels = tf.convert_to_tensor(inputs), tf.cast(labels, tf.int64)
  key = (id(model), inputs.dtype)
  if key not in entry.eval_functions:
    entry.eval_functions[key] = _metrics_function(model, inputs.shape[1:], inputs.dtype)
  run = entry.eval_functions[key]
  total = [np.float32(0.0)] * 3
  for i in range(0, int(labels.shape[0]), batch_size):
    batch = run(inputs[i:i + batch_size], labels[i:i + batch_size])
    total = [t + np.float32(b) for t, b in zip(total, batch)]
  correct, loss, count = total
  return {"accuracy": float(correct / count), "loss": float(loss / count)}


def _device_types(strategy) -> tuple:
  try:
    names = strategy.extended.worker_devices
  except RuntimeError:  # the default strategy: wherever TF places ops
    return ("default",)
  return tuple(sorted({tf.DeviceSpec.from_string(d).device_type or "CPU" for d in names}))


def _evaluator(entry: _Entry, planned, task_data, split, *, batch_size, image_size, channels,
               cache: Optional[ModelCache], on_device=contextlib.nullcontext):
  """A function returning the path's metrics on `split` ({"accuracy": ..., "loss": ...}).

  Evaluation images carry no augmentation, so the frozen components below the lowest trainable
  one give the same outputs every epoch (and for every path that shares them): they run once,
  and each call runs only the rest of the path on their outputs (kept in `cache`, if given,
  across paths). The logits are those of the whole model, the metrics those of Keras' evaluate.
  Splits too large to keep in memory are streamed through the whole model on every call.
  """
  arrays = _eval_arrays(task_data, split, batch_size=batch_size, image_size=image_size,
                        channels=channels, cache=cache)
  if arrays is None:
    ds = mdata.make_dataset(task_data, split, training=False, batch_size=batch_size,
                            image_size=image_size, channels=channels, hparams=None, seed=None)
    return lambda: entry.model.evaluate(ds, verbose=0, return_dict=True)
  images, labels = arrays
  k = entry.first_trainable
  feature_bytes = int(labels.shape[0]) * int(np.prod(entry.input_shapes[k][1:])) * 4
  if k == 0 or feature_bytes > _EVAL_IN_MEMORY_BYTES:
    return lambda: _evaluate(entry, entry.model, images, labels, batch_size)
  prefix = planned[:k]
  cacheable = cache is not None and all(p.weights is not None for p in prefix)
  devices = _device_types(entry.strategy)
  numerics = (entry.key.jit_compile, entry.key.dtype_policy, devices)
  key = (split, int(image_size), int(channels), numerics, tuple(p.spec.id for p in prefix))
  prefix_weights = [list(p.weights) for p in prefix] if cacheable else None
  features = cache._get_features(task_data, key, prefix_weights) if cacheable else None
  if features is None:
    # Whole batches only (the last one padded), so predict traces one batch shape, not two.
    n = int(images.shape[0])
    padded = tf.concat([images, tf.repeat(images[-1:], (-n) % batch_size, axis=0)], 0)
    padded = tf.data.Dataset.from_tensor_slices(padded).batch(batch_size)
    with on_device():
      features = entry.prefix.predict(padded, verbose=0)[:n]
    if cacheable:
      cache._put_features(task_data, key, prefix_weights, features)
  features = tf.convert_to_tensor(features)
  return lambda: _evaluate(entry, entry.suffix, features, labels, batch_size)


class _Validate(keras.callbacks.Callback):
  """Adds `val_<metric>` to the epoch's logs (before the callbacks that read them)."""

  def __init__(self, evaluate):
    super().__init__()
    self._evaluate = evaluate

  def on_epoch_end(self, epoch, logs=None):
    if logs is not None:
      logs.update({f"val_{k}": v for k, v in self._evaluate().items()})


class _KeepBest(keras.callbacks.Callback):
  """Snapshots the trainable components (weights and momentum) at the best validation epoch."""

  def __init__(self, trainable_layers, slot_of):
    super().__init__()
    self._layers = trainable_layers
    self._slot_of = slot_of
    self.best = -1.0
    self.best_epoch = -1
    self.weights = {}
    self.slots = {}
    self.seconds = 0.0

  def on_epoch_end(self, epoch, logs=None):
    acc = float((logs or {}).get("val_accuracy", float("nan")))
    if acc > self.best:
      start = time.perf_counter()
      self.best, self.best_epoch = acc, epoch
      self.weights = {cid: [np.array(w) for w in layer.get_weights()]
                      for cid, layer in self._layers.items()}
      self.slots = {cid: [np.array(self._slot_of(w)) for w in layer.weights]
                    for cid, layer in self._layers.items()}
      self.seconds += time.perf_counter() - start


def train_path(planned: Sequence[assembly.PlannedComponent], task_data: "mdata.TaskData",
               hparams: Mapping[str, object], budget: Budget, *,
               image_size: int, channels: int,
               strategy: Optional[tf.distribute.Strategy] = None, seed: int = 0,
               evaluate_test: bool = False, verbose: int = 0, jit_compile="auto",
               callbacks: Sequence[keras.callbacks.Callback] = (),
               cache: Optional[ModelCache] = None) -> TrainResult:
  """Trains the trainable components of a path on its task and returns the best epoch's state.

  Args:
    planned: the path's components in order; `trainable` marks the child's own ones.
    task_data: the task's data (mtsys.data.load_task).
    hparams: the path's hyperparameters (missing ones take the search-space defaults).
    budget: epochs, batches per epoch and batch size (global, split across replicas).
    image_size, channels: the input the path reads.
    strategy: a tf.distribute strategy; default: the current (default) strategy. A
      `OneDeviceStrategy` is applied as a device scope (see `_placement`).
    seed: seeds data shuffling and augmentation.
    evaluate_test: also report test accuracy of the kept weights.
    verbose: Keras progress output (0 silent, 1 bar, 2 one line per epoch).
    jit_compile: XLA for the train and test steps: True, False or "auto" (XLA only where an
      accelerator exists; see `resolve_jit_compile`).
    callbacks: more Keras callbacks for `fit`.
    cache: a `ModelCache` to reuse compiled models of the same structure from (and keep this
      one in); None builds and compiles a new model.
  """
  if not any(p.trainable for p in planned):
    raise ValueError("A path needs at least one trainable component to train; got none "
                     f"among {[p.spec.id for p in planned]}.")
  default_strategy = None if tf.distribute.has_strategy() else tf.distribute.get_strategy()
  strategy = strategy or tf.distribute.get_strategy()
  run_strategy, device = _placement(strategy)
  on_device = (lambda: tf.device(device)) if device else contextlib.nullcontext
  return _train(planned, task_data, hparams, budget, image_size=image_size, channels=channels,
                strategy=strategy, run_strategy=run_strategy, on_device=on_device, seed=seed,
                evaluate_test=evaluate_test, verbose=verbose, jit_compile=jit_compile,
                callbacks=callbacks, cache=cache, default_strategy=default_strategy)


def _placement(strategy: tf.distribute.Strategy):
  """The strategy to build and train under, and a device scope (or None).

  A `OneDeviceStrategy` is replaced by its device as a plain device scope: with a strategy, Keras
  rebuilds the model symbolically and creates two distributed (multi-device) iterators for every
  fit, evaluate and predict call (0.5-1 s per child on chars-lite); with one device there is
  nothing to distribute. (That symbolic build also takes the first training batch off the iterator before
  training; without it training starts at the first batch, as under the default strategy.)
  """
  if isinstance(strategy, tf.distribute.OneDeviceStrategy) and not tf.distribute.has_strategy():
    return tf.distribute.get_strategy(), strategy.extended.worker_devices[0]
  return strategy, None


def _train(planned, task_data, hparams, budget, *, image_size, channels, strategy, run_strategy,
           on_device, seed, evaluate_test, verbose, jit_compile, callbacks, cache,
           default_strategy) -> TrainResult:
  # Datasets are made outside `on_device` (their iterators stay with them, on the host).
  t0 = time.perf_counter()
  steps = budget.steps_per_epoch(task_data.sizes["train"])
  total = steps * budget.epochs
  settings = _optimizer_settings(hparams, total)
  jit_compile = resolve_jit_compile(jit_compile)
  common = dict(batch_size=budget.batch_size, image_size=image_size, channels=channels,
                hparams=hparams, seed=seed)
  train_ds = mdata.make_dataset(task_data, "train", training=True, repeat=True,
                                drop_remainder=True, **common).with_options(_input_options())
  eval_batch_size = budget.batch_size * _EVAL_BATCH_FACTOR

  key = _cache_key(planned, image_size, channels, jit_compile, settings)
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
  model, layers, optimizer = entry.model, entry.layers, entry.optimizer

  def slot_of(variable):
    if optimizer.momentum == 0:  # plain SGD keeps no momentum
      return np.zeros(variable.shape, variable.dtype)
    return optimizer.momentums[entry.momentum_index[id(variable)]]

  evaluation = dict(batch_size=eval_batch_size, image_size=image_size, channels=channels)
  validate = _Validate(_evaluator(entry, planned, task_data, "validation", cache=cache,
                                  on_device=on_device, **evaluation))
  trainable_layers = {p.spec.id: layer for layer, p in zip(layers, planned) if p.trainable}
  keep = _KeepBest(trainable_layers, slot_of)
  t_fit = time.perf_counter()
  with on_device():
    history = model.fit(train_ds, epochs=budget.epochs, steps_per_epoch=steps,
                        callbacks=[validate, keep, *callbacks], verbose=verbose,
                        shuffle=False)  # the dataset shuffles itself, seeded
  fit_seconds = time.perf_counter() - t_fit - keep.seconds

  test_accuracy = None
  if evaluate_test:
    for cid, layer in trainable_layers.items():
      layer.set_weights(keep.weights[cid])
    # Once per path: the test split is not kept in the cache.
    test = _evaluator(entry, planned, task_data, "test", cache=None, on_device=on_device,
                      **evaluation)
    with on_device():
      test_accuracy = float(test()["accuracy"])
  if cache is not None:
    cache._checkin(entry)
  elapsed = time.perf_counter() - t0
  return TrainResult(
      validation_accuracy=keep.best, best_epoch=keep.best_epoch, steps_per_epoch=steps,
      best_steps=(keep.best_epoch + 1) * steps, total_steps=total, train_seconds=elapsed,
      overhead_seconds=elapsed - fit_seconds,
      history=[dict(zip(history.history, v)) for v in zip(*history.history.values())],
      weights=keep.weights, optimizer_slots=keep.slots, test_accuracy=test_accuracy,
      reused_model=reused)
