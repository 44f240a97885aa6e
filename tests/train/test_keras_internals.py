"""Pins the Keras behaviour mtsys relies on beyond Keras' public API.

If one of these fails after a Keras upgrade, `mtsys.train.keras_internals` (the private attribute
it reaches for) or `mtsys.train.optimizer` (the clipping of the whole batch's gradient) must be
adapted before anything trains correctly.
"""

import keras
import numpy as np
import tensorflow as tf

from mtsys.train import keras_internals

_SHAPES = [(2,), (3,), (4, 2)]


def _mirrored():
  """Two replicas on the test session's two logical CPUs (tests/conftest.py), reducing on one
  device: collectives of several strategies in one process would reuse instance keys."""
  return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                        cross_device_ops=tf.distribute.ReductionToOneDevice())


class _Recorder(keras.optimizers.Optimizer):
  """An optimizer noting, for every variable `update_step` gets, its shape and its index."""

  def __init__(self):
    super().__init__(learning_rate=1.0, name="recorder")
    self.seen = []

  def update_step(self, gradient, variable, learning_rate):
    self.seen.append((tuple(variable.shape), keras_internals.variable_index(self, variable)))
    self.assign_sub(variable, gradient)


def _variables():
  return [keras.Variable(np.zeros(s, np.float32)) for s in _SHAPES]


def test_keras_has_the_private_method():
  assert callable(getattr(keras.optimizers.Optimizer, "_get_variable_index", None)), (
      "Keras no longer has Optimizer._get_variable_index: adapt "
      "mtsys.train.keras_internals.variable_index.")


def test_variable_index_maps_what_update_step_gets_to_the_build_position():
  variables = _variables()
  built = [variables[2], variables[0], variables[1]]  # not the order of creation
  opt = _Recorder()
  opt.build(built)
  for i, v in enumerate(built):
    assert keras_internals.variable_index(opt, v) == i  # the keras.Variable
    assert keras_internals.variable_index(opt, v.value) == i  # the backend variable inside
  # Only some of them, in another order: indices stay those of `build`.
  tf.function(lambda: opt.apply([tf.ones(s) for s in (_SHAPES[1], _SHAPES[2])],
                                [variables[1], variables[2]]))()
  assert sorted(opt.seen) == [((3,), 2), ((4, 2), 0)]


def test_variable_index_maps_replica_components_under_a_mirrored_strategy():
  assert len(tf.config.list_logical_devices("CPU")) >= 2  # tests/conftest.py
  strategy = _mirrored()
  with strategy.scope():
    variables = _variables()
    opt = _Recorder()
    opt.build(variables)

  @tf.function
  def step():
    strategy.run(lambda: opt.apply([tf.ones(s) for s in _SHAPES], variables))

  step()
  # One update per variable and device, each with the variable's build position.
  assert sorted(opt.seen) == sorted([(s, i) for i, s in enumerate(_SHAPES)] * 2)


def test_keras_sums_the_replicas_gradients_after_apply():
  """`optimizer._clip_batch_gradients` all-reduces the gradients itself and divides by the
  number of replicas because Keras calls `Optimizer.apply` in each replica's context with that
  replica's gradients, and sums them after it (before `update_step`)."""
  strategy = _mirrored()
  halves = [np.full((3,), 0.6, np.float32), np.array([0.0, 0.8, -0.8], np.float32)]
  with strategy.scope():
    v = keras.Variable(np.zeros((3,), np.float32))
    opt = keras.optimizers.SGD(learning_rate=1.0)
    opt.build([v])
  seen = []

  @tf.function
  def step():
    def replica_step():
      context = tf.distribute.get_replica_context()
      seen.append(context is not None and context.num_replicas_in_sync)
      i = context.replica_id_in_sync_group
      opt.apply([tf.where(tf.equal(i, 0), halves[0], halves[1])], [v])
    strategy.run(replica_step)

  step()
  assert seen and all(n == 2 for n in seen)  # in replica context
  np.testing.assert_allclose(np.array(v), -(halves[0] + halves[1]), rtol=1e-6)
