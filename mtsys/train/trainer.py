"""Training and evaluating one path under a `tf.distribute` strategy.

The recipe is Steiner et al.'s ViT fine-tuning setup as used by muNet/µ2Net: SGD with momentum
(optionally Nesterov) kept as a learning-rate-free trace, as in the papers' optax code, a cosine
schedule with linear warm-up, global-norm clipping at 1.0, no weight decay
(`mtsys.train.optimizer`). Every value comes from the path's hyperparameters. An "epoch" is
min(1 epoch, `max_batches_per_epoch` batches) so small and large tasks get comparable compute;
validation runs after each epoch, and the best epoch's weights and optimizer slots (the momentum
traces) are kept.

Training uses `keras.Model.fit` itself, so the engine adds no per-step cost over plain Keras.

Fixed cost per child, with or without a `ModelCache`:
- `train_path(..., cache=ModelCache())` reuses a compiled model of the same structure instead of
  building, compiling and tracing a new one (`mtsys.train.model_cache`).
- Validation runs the frozen components below the lowest trainable one once, on images resized
  once, and each epoch only the rest of the path (`mtsys.train.fast_eval`).
- XLA (`jit_compile="auto"`) is only used where an accelerator exists: on CPU-only hosts it
  compiles for seconds and runs no faster.
- A `OneDeviceStrategy` (the command-line default) becomes a plain device scope: Keras would
  otherwise rebuild the model symbolically and make two distributed iterators on every fit,
  evaluate and predict call (see `_placement`).
- On CPU-only hosts, tf.data autotuning of the training pipeline is off (see `_input_options`).

The optimizer, the model cache and the evaluation helpers live in their own modules;
`make_optimizer`, `TraceSGD` and `ModelCache` are importable from here as well.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from typing import Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from mtsys import data as mdata
from mtsys.system import assembly
from mtsys.train import fast_eval
from mtsys.train import model_cache
from mtsys.train import optimizer as moptimizer

# Re-exported: callers use them as `trainer.<name>`.
ModelCache = model_cache.ModelCache
TraceSGD = moptimizer.TraceSGD
make_optimizer = moptimizer.make_optimizer


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
  component id, in the layer's weight order; the slots are the learning-rate-free momentum traces
  (`TraceSGD.slots`), what `optimizer.npz` stores.
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


# --- Host ---------------------------------------------------------------------------------------

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


# --- Training -----------------------------------------------------------------------------------

class _KeepBest(keras.callbacks.Callback):
  """Snapshots the trainable components (weights and optimizer slots) at the best validation
  epoch; `slots_of(variable)` gives a variable's slots (`TraceSGD.slots`)."""

  def __init__(self, trainable_layers, slots_of):
    super().__init__()
    self._layers = trainable_layers
    self._slots_of = slots_of
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
      self.slots = {cid: [self._slots_of(w) for w in layer.weights]
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
  nothing to distribute. (That symbolic build also takes the first training batch off the
  iterator before training; without it training starts at the first batch, as under the default
  strategy.)
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
  settings = moptimizer.optimizer_settings(hparams, total)
  jit_compile = resolve_jit_compile(jit_compile)
  common = dict(batch_size=budget.batch_size, image_size=image_size, channels=channels,
                hparams=hparams, seed=seed)
  train_ds = mdata.make_dataset(task_data, "train", training=True, repeat=True,
                                drop_remainder=True, **common).with_options(_input_options())
  eval_batch_size = budget.batch_size * fast_eval.EVAL_BATCH_FACTOR

  entry, reused = model_cache.checkout(
      cache, planned, image_size=image_size, channels=channels, jit_compile=jit_compile,
      settings=settings, strategy=strategy, run_strategy=run_strategy, on_device=on_device,
      default_strategy=default_strategy)
  model, layers = entry.model, entry.layers

  evaluation = dict(batch_size=eval_batch_size, image_size=image_size, channels=channels)
  validate = fast_eval.Validate(fast_eval.evaluator(
      entry, planned, task_data, "validation", cache=cache, on_device=on_device, **evaluation))
  trainable_layers = {p.spec.id: layer for layer, p in zip(layers, planned) if p.trainable}
  keep = _KeepBest(trainable_layers, entry.optimizer.slots)
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
    test = fast_eval.evaluator(entry, planned, task_data, "test", cache=None,
                               on_device=on_device, **evaluation)
    with on_device():
      test_accuracy = float(test()["accuracy"])
  model_cache.checkin(cache, entry)
  elapsed = time.perf_counter() - t0
  return TrainResult(
      validation_accuracy=keep.best, best_epoch=keep.best_epoch, steps_per_epoch=steps,
      best_steps=(keep.best_epoch + 1) * steps, total_steps=total, train_seconds=elapsed,
      overhead_seconds=elapsed - fit_seconds,
      history=[dict(zip(history.history, v)) for v in zip(*history.history.values())],
      weights=keep.weights, optimizer_slots=keep.slots, test_accuracy=test_accuracy,
      reused_model=reused)
