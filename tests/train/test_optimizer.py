"""The optimizer: SGD with a learning-rate-free momentum trace (optax's `sgd`), the path's schedule
from its hyperparameters, clipping of the whole batch's gradient under data parallelism."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtsys.train import optimizer as moptimizer

_SHAPES = [(4, 3), (3,)]


def _mirrored():
  """Two replicas on the test session's two logical CPUs (tests/conftest.py), reducing on one
  device: collectives of several strategies in one process would reuse instance keys."""
  return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                        cross_device_ops=tf.distribute.ReductionToOneDevice())


def _gradients(steps, seed=0):
  """Per step, a gradient per variable; every other step's global norm is above 1 (clipped)."""
  rng = np.random.default_rng(seed)
  out = []
  for k in range(steps):
    scale = 2.0 if k % 2 else 0.1
    out.append([(rng.standard_normal(s) * scale).astype(np.float32) for s in _SHAPES])
  return out


def _cosine_lr(step, peak, warmup, decay):
  """Linear warm-up from 0 to `peak` over `warmup` steps, then a cosine to 0 over `decay`."""
  if step < warmup:
    return peak * step / warmup
  return peak * 0.5 * (1 + math.cos(math.pi * min(step - warmup, decay) / decay))


def _trace_sgd_by_hand(w0, grads, lrs, momentum, nesterov):
  """optax's sgd(momentum, nesterov) after clip_by_global_norm(1.0), in float64."""
  w = [np.asarray(x, np.float64) for x in w0]
  t = [np.zeros_like(x) for x in w]
  weights, traces = [], []
  for gs, lr in zip(grads, lrs):
    gs = [np.asarray(g, np.float64) for g in gs]
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in gs))
    gs = [g * min(1.0, 1.0 / norm) for g in gs]
    t = [g + momentum * x for g, x in zip(gs, t)]
    steps = [g + momentum * x for g, x in zip(gs, t)] if nesterov else t
    w = [x - lr * s for x, s in zip(w, steps)]
    weights.append(w)
    traces.append(t)
  return weights, traces


def _variables(seed=1):
  rng = np.random.default_rng(seed)
  return [keras.Variable(rng.standard_normal(s).astype(np.float32)) for s in _SHAPES]


def _step_function(opt, variables):
  @tf.function
  def step(*grads):
    opt.apply(list(grads), variables)
  return step


@pytest.mark.parametrize("nesterov", [False, True])
def test_trace_matches_the_hand_computed_update_under_a_schedule(nesterov):
  total, peak, momentum = 8, 0.1, 0.9
  opt = moptimizer.make_optimizer({"learning_rate": peak, "momentum": momentum,
                                   "nesterov": nesterov, "lr_schedule": "cosine",
                                   "warmup_ratio": 0.2}, total_steps=total)
  variables = _variables()
  w0 = [np.array(v) for v in variables]
  opt.build(variables)
  step = _step_function(opt, variables)
  grads = _gradients(total)
  lrs = [_cosine_lr(k, peak, warmup=2, decay=6) for k in range(total)]  # round(0.2 * 8) = 2
  assert lrs[0] == 0 and lrs[2] == peak and lrs[-1] < 0.1 * peak
  want_w, want_t = _trace_sgd_by_hand(w0, grads, lrs, momentum, nesterov)
  for k, gs in enumerate(grads):
    step(*[tf.constant(g) for g in gs])
    for v, w, t in zip(variables, want_w[k], want_t[k]):
      np.testing.assert_allclose(np.array(v), w, rtol=1e-5, atol=1e-6, err_msg=f"step {k}")
      np.testing.assert_allclose(np.array(opt.trace(v)), t, rtol=1e-5, atol=1e-6,
                                 err_msg=f"step {k}")
  assert step.experimental_get_tracing_count() == 1
  # At the end of the schedule the trace is the gradients' running sum, not ~0 as Keras'
  # velocity (-lr * trace) would be.
  assert min(np.abs(np.array(opt.trace(v))).max() for v in variables) > 0.1
  for v in variables:
    np.testing.assert_array_equal(opt.slots(v), np.array(opt.trace(v)))


@pytest.mark.parametrize("momentum,nesterov", [(0.9, False), (0.8, True), (0.0, False)])
def test_with_a_constant_rate_it_is_keras_sgd(momentum, nesterov):
  """m = -lr * t: with a constant learning rate the trace and Keras' velocity make the same
  updates (up to rounding)."""
  ours = moptimizer.make_optimizer({"learning_rate": 0.1, "momentum": momentum,
                                    "nesterov": nesterov, "lr_schedule": "constant",
                                    "warmup_ratio": 0.01}, total_steps=10)  # no warm-up step
  ref = keras.optimizers.SGD(learning_rate=0.1, momentum=momentum, nesterov=nesterov,
                             global_clipnorm=1.0)
  mine, theirs = _variables(), _variables()
  ours.build(mine)
  ref.build(theirs)
  step_ours, step_ref = _step_function(ours, mine), _step_function(ref, theirs)
  for gs in _gradients(6):
    step_ours(*[tf.constant(g) for g in gs])
    step_ref(*[tf.constant(g) for g in gs])
  for a, b in zip(mine, theirs):
    np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-6)
  if momentum:
    for a, m in zip(mine, ref.momentums):
      np.testing.assert_allclose(-0.1 * np.array(ours.trace(a)), np.array(m), rtol=1e-5,
                                 atol=1e-7)


def test_momentum_zero_is_plain_sgd_and_reports_zero_slots():
  opt = moptimizer.TraceSGD(0.5, momentum=0.0)
  (v,) = _variables()[:1]
  w0 = np.array(v)
  opt.build([v])
  g = np.full(_SHAPES[0], 0.25, np.float32)
  opt.apply([tf.constant(g)], [v])
  opt.apply([tf.constant(g)], [v])
  np.testing.assert_allclose(np.array(v), w0 - 2 * 0.5 * g, rtol=1e-6)
  np.testing.assert_array_equal(opt.slots(v), np.zeros(_SHAPES[0], np.float32))


def test_loaded_slots_continue_the_trace_and_new_settings_need_no_retracing():
  settings = moptimizer.optimizer_settings({"learning_rate": 0.1, "momentum": 0.5,
                                            "lr_schedule": "constant", "warmup_ratio": 0.0}, 4)
  opt = moptimizer.build_optimizer(settings)
  variables = _variables()
  opt.build(variables)
  step = _step_function(opt, variables)
  step(*[tf.constant(g) for g in _gradients(1)[0]])
  carried = [np.full(s, 0.3, np.float32) for s in _SHAPES]
  moptimizer.restart(opt, moptimizer.optimizer_settings(
      {"learning_rate": 0.2, "momentum": 0.9, "lr_schedule": "constant", "warmup_ratio": 0.0}, 4))
  opt.load_slots([(variables[0], carried[0])], zero_others=True)
  assert int(opt.iterations) == 0 and opt.momentum == 0.9
  np.testing.assert_array_equal(np.array(opt.trace(variables[0])), carried[0])
  np.testing.assert_array_equal(np.array(opt.trace(variables[1])), 0.0)
  w0 = [np.array(v) for v in variables]
  g = [np.full(s, 0.01, np.float32) for s in _SHAPES]  # global norm < 1: not clipped
  step(*[tf.constant(x) for x in g])
  assert step.experimental_get_tracing_count() == 1
  for v, w, x, c in zip(variables, w0, g, [carried[0], np.zeros(_SHAPES[1], np.float32)]):
    t = x + 0.9 * c
    np.testing.assert_allclose(np.array(opt.trace(v)), t, rtol=1e-6)
    np.testing.assert_allclose(np.array(v), w - 0.2 * t, rtol=1e-6, atol=1e-7)


def test_data_parallel_clips_the_batch_gradient():
  """Two replicas with gradient halves g0, g1 update like one device with g0 + g1, clipping
  included (Keras' own clipping would clip each half by its own norm)."""
  strategy = _mirrored()
  halves = [[np.full(s, 0.6, np.float32) for s in _SHAPES],
            [np.full(s, -0.1, np.float32) * np.arange(1, s[-1] + 1, dtype=np.float32)
             for s in _SHAPES]]
  whole = [a + b for a, b in zip(*halves)]
  assert math.sqrt(sum(float(np.sum(g * g)) for g in whole)) > 1  # clipped
  with strategy.scope():
    variables = _variables()
    opt = moptimizer.TraceSGD(0.1, momentum=0.9, global_clipnorm=1.0)
    opt.build(variables)

  @tf.function
  def step():
    def replica_step():
      i = tf.distribute.get_replica_context().replica_id_in_sync_group
      grads = [tf.where(tf.equal(i, 0), a, b) for a, b in zip(*halves)]
      opt.apply(grads, variables)
    strategy.run(replica_step)

  single = _variables()
  ref = moptimizer.TraceSGD(0.1, momentum=0.9, global_clipnorm=1.0)
  ref.build(single)
  for _ in range(2):
    step()
    ref.apply([tf.constant(g) for g in whole], single)
  for a, b in zip(variables, single):
    np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.array(opt.trace(a)), np.array(ref.trace(b)), rtol=1e-6)


def test_optimizer_follows_hparams():
  opt = moptimizer.make_optimizer({"learning_rate": 0.1, "warmup_ratio": 0.1, "momentum": 0.8,
                                   "nesterov": True}, total_steps=100)
  assert isinstance(opt, moptimizer.TraceSGD)
  lr = [float(opt.schedule(s)) for s in (0, 5, 10, 55, 100)]
  assert lr[0] == 0.0 and lr[1] == pytest.approx(0.05) and lr[2] == pytest.approx(0.1)
  assert 0 < lr[3] < 0.1 and lr[4] == pytest.approx(0.0, abs=1e-6)
  assert opt.momentum == 0.8 and opt.nesterov and opt.batch_clipnorm == 1.0
  assert opt.get_config()["global_clipnorm"] == 1.0
  with pytest.raises(ValueError, match="lr_schedule.*Received: lr_schedule='linear'"):
    moptimizer.make_optimizer({"lr_schedule": "linear"}, 10)
  with pytest.raises(ValueError, match="momentum.*Received: momentum=1.5"):
    moptimizer.make_optimizer({"momentum": 1.5}, 10)
  with pytest.raises(ValueError, match="between"):
    opt.set_momentum(-0.1)


@pytest.mark.parametrize("schedule", ["cosine", "constant", "restarts"])
def test_schedules_follow_keras(schedule):
  total, lr, ratio = 37, 0.05, 0.2
  warmup = int(round(ratio * total))
  if schedule == "restarts":
    ref = keras.optimizers.schedules.CosineDecayRestarts(lr, total // 4)
  else:
    ref = keras.optimizers.schedules.CosineDecay(
        0.0, total - warmup, alpha=1.0 if schedule == "constant" else 0.0, warmup_target=lr,
        warmup_steps=warmup)
  ours = moptimizer.make_optimizer({"learning_rate": lr, "warmup_ratio": ratio,
                                    "lr_schedule": schedule}, total).schedule
  got = np.array([float(ours(s)) for s in range(total + 2)])
  want = np.array([float(ref(s)) for s in range(total + 2)])
  np.testing.assert_array_equal(got, want)  # eagerly, the same operations
  # New values reach an already traced function (no retracing needed).
  step = tf.Variable(0, dtype=tf.int64)
  read = tf.function(lambda: ours(step))
  read()
  moptimizer.set_schedule(ours, moptimizer.optimizer_settings(
      {"learning_rate": 0.2, "warmup_ratio": 0.0, "lr_schedule": schedule}, 12))
  step.assign(0)
  assert float(read()) == pytest.approx(0.2)  # step 0 without warm-up: the new peak
  assert read.experimental_get_tracing_count() == 1
