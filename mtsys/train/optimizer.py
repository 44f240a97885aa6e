"""The optimizer a path trains with: SGD with a learning-rate-free momentum trace.

The papers' reference code trains with optax's `sgd(schedule, momentum, nesterov)`: the gradient
g (clipped by global norm) goes into a trace that does not involve the learning rate, and the
learning rate scales the update:

    t <- g + momentum * t
    w <- w - lr * t                         (Nesterov: w <- w - lr * (g + momentum * t))

Keras' SGD instead keeps a velocity with the learning rate folded in, m <- momentum * m - lr * g,
and adds m to w. With a constant learning rate the two are the same optimizer (m = -lr * t); with
a schedule they are not, and at the end of a cosine schedule (lr -> 0) Keras' velocity is about
zero. A cloned component carries its optimizer slots into its child as the starting momentum, so
`TraceSGD` keeps the trace: its slots are what `optimizer.npz` stores (`ComponentSpec`'s
`optimizer_slots_kind` LR_FREE_TRACE, see `mtsys.system.component_files`).

The rest of the recipe is Steiner et al.'s ViT fine-tuning as used by muNet/µ2Net: a cosine
schedule with linear warm-up (or "constant" after warm-up, or SGDR "restarts"), global-norm
clipping at 1.0 of the whole batch's gradient, no weight decay. The schedules' numbers and the
momentum live in variables, so a traced train step follows new values without retracing (a
cached model trains the next path with them, `mtsys.train.model_cache`); the learning rates equal
Keras' schedules' bit for bit, except that "restarts" may differ from a graph with
constant-folded hyperparameters in the last bit at a few steps (grappler rewrites a division by a
constant there).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Optional

import keras
import numpy as np
import tensorflow as tf

from mtsys.config import hparams as hp
from mtsys.train import keras_internals


def _hparam_variable(value, name):
  # Read by the traced train step, assigned between children; one value for every replica.
  return keras.Variable(float(value), dtype="float32", trainable=False, name=name,
                        aggregation="only_first_replica")


# --- Schedules ----------------------------------------------------------------------------------

class _WarmupCosine(keras.optimizers.schedules.CosineDecay):
  """Keras' CosineDecay (linear warm-up from 0 to the peak, then cosine) with its numbers held
  in variables, so a traced train step follows new values without retracing. `alpha=1` keeps the
  rate at the peak after warm-up (the "constant" schedule)."""

  def __init__(self, peak, decay_steps, warmup_steps, alpha):
    super().__init__(0.0, decay_steps, alpha=alpha, warmup_target=peak, warmup_steps=warmup_steps)
    # CosineDecay.__call__ reads these through ops.cast / arithmetic; variables work unchanged
    # (tests/train/test_optimizer.py checks the rates against Keras' own schedule).
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


# --- The optimizer ------------------------------------------------------------------------------

def _check_momentum(momentum) -> None:
  if not 0 <= momentum <= 1:
    raise ValueError("`momentum` must be a float between [0, 1].")


def _clip_by_global_norm(grads: list, clipnorm: float) -> list:
  # Keras' global-norm clipping, operation for operation (an inf/NaN norm makes every value NaN).
  norm = keras.ops.sqrt(keras.ops.sum(keras.ops.stack(
      [keras.ops.sum(keras.ops.square(g)) for g in grads])))
  scale = clipnorm * keras.ops.minimum(1.0 / norm, 1.0 / clipnorm)
  scale = scale + (norm - norm)
  return [g * scale for g in grads]


def _clip_batch_gradients(grads: list, clipnorm: float) -> list:
  """`grads` clipped by the global norm of the whole batch's gradient (None entries kept).

  Keras 3 (TF backend) clips before the replicas' gradients are summed, so with several replicas
  each would clip its own part by its own norm and data-parallel training would diverge from one
  device (measured: 2.7e-2 apart after 5 steps, 1.5e-8 without clipping). Here the replicas'
  gradients are summed first and clipped once; the sum Keras takes after `apply` then adds
  `replicas` identical copies, hence the division.
  """
  present = [i for i, g in enumerate(grads) if g is not None]
  values = [grads[i] for i in present]
  if not values:
    return grads
  replicas = tf.distribute.get_strategy().num_replicas_in_sync
  context = tf.distribute.get_replica_context()
  summed = replicas > 1 and context is not None
  if summed:
    values = context.all_reduce(tf.distribute.ReduceOp.SUM, values)
  values = _clip_by_global_norm(values, clipnorm)
  if summed:
    values = [g / replicas for g in values]
  out = list(grads)
  for i, g in zip(present, values):
    out[i] = g
  return out


class TraceSGD(keras.optimizers.Optimizer):
  """SGD with momentum kept as a learning-rate-free trace, as optax's `sgd` (see the module).

  Per variable w with gradient g: t <- g + momentum * t, then w <- w - lr * t, or with Nesterov
  w <- w - lr * (g + momentum * t). One trace per trainable variable (`traces`, in `build`'s
  order) always exists, so a traced step serves any momentum: with momentum 0 this is plain SGD.

  Args:
    learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`.
    momentum: the trace's decay, in [0, 1]. Held in a variable: `set_momentum` changes it
      between training runs without retracing.
    nesterov: Nesterov momentum.
    global_clipnorm: if set, the whole batch's gradient (summed over replicas) is clipped to this
      global norm before the update (see `apply`).
    name: the optimizer's name (a name scope of its variables).
  """

  def __init__(self, learning_rate=0.01, momentum: float = 0.0, nesterov: bool = False,
               global_clipnorm: Optional[float] = None, name: str = "trace_sgd"):
    _check_momentum(momentum)
    # Keras' own clipping stays off: it would clip each replica's part separately (`apply`).
    super().__init__(learning_rate=learning_rate, name=name)
    is_schedule = isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule)
    # The schedule object (Keras' `learning_rate` property gives only its current value).
    self.schedule = learning_rate if is_schedule else None
    self.momentum = float(momentum)
    self.nesterov = bool(nesterov)
    self.batch_clipnorm = None if global_clipnorm is None else float(global_clipnorm)
    with keras.name_scope(self.name, caller=self):
      self.momentum_variable = _hparam_variable(momentum, "momentum")
    self.traces = []

  def set_momentum(self, momentum: float) -> None:
    """The momentum of the following steps (no retracing)."""
    _check_momentum(momentum)
    self.momentum = float(momentum)
    self.momentum_variable.assign(float(momentum))

  def build(self, variables):
    if self.built:
      return
    super().build(variables)
    self.traces = [self.add_variable_from_reference(v, name="trace") for v in variables]

  def apply(self, grads, trainable_variables=None):
    """Keras' `apply`, with the batch's gradient clipped first (`global_clipnorm`).

    Keras calls this in each replica's context with that replica's gradients and sums them
    afterwards; the clipping all-reduces them first (see `_clip_batch_gradients`).
    """
    if self.batch_clipnorm:
      grads = _clip_batch_gradients(list(grads), self.batch_clipnorm)
    return super().apply(grads, trainable_variables)

  def update_step(self, gradient, variable, learning_rate):
    ops = keras.ops
    learning_rate = ops.cast(learning_rate, variable.dtype)
    gradient = ops.cast(gradient, variable.dtype)
    momentum = ops.cast(self.momentum_variable, variable.dtype)
    trace = self.traces[keras_internals.variable_index(self, variable)]
    new_trace = ops.add(gradient, ops.multiply(momentum, trace))
    self.assign(trace, new_trace)
    step = ops.add(gradient, ops.multiply(momentum, new_trace)) if self.nesterov else new_trace
    self.assign_sub(variable, ops.multiply(learning_rate, step))

  def trace(self, variable) -> keras.Variable:
    """The trace of one of the variables the optimizer was built with."""
    return self.traces[keras_internals.variable_index(self, variable)]

  def slots(self, variable) -> np.ndarray:
    """The variable's optimizer slots as stored (`optimizer.npz`): a copy of its trace, or zeros
    while the momentum is 0 (plain SGD, like optax's `sgd` without momentum, keeps none)."""
    if self.momentum == 0:
      return np.zeros(variable.shape, variable.dtype)
    return np.array(self.trace(variable))

  def load_slots(self, slots: Iterable[tuple], zero_others: bool) -> None:
    """Sets traces from (variable, stored slots) pairs; the others to zero if `zero_others`."""
    loaded = set()
    for variable, value in slots:
      i = keras_internals.variable_index(self, variable)
      self.traces[i].assign(value)
      loaded.add(i)
    if zero_others:
      for i, t in enumerate(self.traces):
        if i not in loaded:
          t.assign(tf.zeros(t.shape, t.dtype))

  def get_config(self):
    config = super().get_config()
    config.update(momentum=self.momentum, nesterov=self.nesterov,
                  global_clipnorm=self.batch_clipnorm)
    return config


# --- Settings from hyperparameters --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
  """What a path's hyperparameters and length ask of the optimizer."""

  schedule: str  # "cosine", "constant" or "restarts"
  peak: float
  warmup_steps: int
  decay_steps: int  # for "restarts": the first period
  momentum: float
  nesterov: bool

  @property
  def schedule_class(self):
    return _Restarts if self.schedule == "restarts" else _WarmupCosine


def optimizer_settings(hparams: Mapping[str, object], total_steps: int) -> OptimizerSettings:
  """The settings for `total_steps` steps under `hparams` (missing ones take the defaults)."""
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
    return OptimizerSettings(schedule, lr, 0, max(1, total_steps // 4), momentum, nesterov)
  warmup = int(round(float(hparams.get("warmup_ratio", hp.KNOWN["warmup_ratio"].default))
                     * total_steps))
  warmup = min(warmup, total_steps - 1)
  return OptimizerSettings(schedule, lr, warmup, max(1, total_steps - warmup), momentum,
                           nesterov)


def make_schedule(s: OptimizerSettings):
  """A new variable-backed schedule for `s`."""
  if s.schedule == "restarts":
    return _Restarts(s.peak, s.decay_steps)
  # "constant": alpha=1, the cosine part stays at the peak, leaving only the warm-up.
  return _WarmupCosine(s.peak, s.decay_steps, s.warmup_steps,
                       1.0 if s.schedule == "constant" else 0.0)


def set_schedule(schedule, s: OptimizerSettings) -> None:
  """Gives a schedule of `s.schedule_class` the numbers of `s` (no retracing)."""
  if s.schedule == "restarts":
    schedule.set(s.peak, s.decay_steps)
  else:
    schedule.set(s.peak, s.decay_steps, s.warmup_steps, 1.0 if s.schedule == "constant" else 0.0)


def build_optimizer(s: OptimizerSettings) -> TraceSGD:
  """TraceSGD with the settings' schedule and momentum, clipping the batch's gradient at 1.0."""
  return TraceSGD(make_schedule(s), s.momentum, s.nesterov, global_clipnorm=1.0)


def restart(optimizer: TraceSGD, s: OptimizerSettings) -> None:
  """Step 0 with the schedule and momentum of `s` (an optimizer built for the same kind)."""
  optimizer.iterations.assign(0)
  set_schedule(optimizer.schedule, s)
  optimizer.set_momentum(s.momentum)


def make_optimizer(hparams: Mapping[str, object], total_steps: int) -> TraceSGD:
  """SGD(momentum, nesterov) with a learning-rate-free trace, the path's schedule and global-norm
  clipping at 1.0.

  The schedules are Keras' CosineDecay (with linear warm-up; "constant" keeps the peak after
  warm-up) and CosineDecayRestarts, with their numbers and the momentum held in variables.
  """
  return build_optimizer(optimizer_settings(hparams, total_steps))
