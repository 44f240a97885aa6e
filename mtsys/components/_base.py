"""What every component layer shares: argument checks, `param_count()` and the FLOPs contract.

FLOPs convention (all kinds): inference FLOPs for one example, counting one multiply-add of a
matmul, convolution or attention product as 2 FLOPs. Biases, normalisations, activations, softmax,
residual and position-embedding additions and position-embedding interpolation are not counted:
they are a few percent of a ViT and would make the pinned numbers depend on guesses about kernels.
"""

import math
import numbers

import keras


def check_positive_int(name, value):
  """Returns `value` as an `int`, or raises Keras' "Invalid value received" error."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
    raise ValueError(
        f"Invalid value received for argument `{name}`. "
        f"Expected a positive integer. Received: {name}={value!r}"
    )
  return int(value)


def check_seed(seed):
  """Seeds are None (unseeded) or non-negative ints: they must survive `get_config` as JSON."""
  if seed is None:
    return None
  if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
    raise ValueError(
        "Invalid value received for argument `seed`. "
        f"Expected None or a non-negative integer. Received: seed={seed!r}"
    )
  return int(seed)


def offset_seed(seed, offset):
  """A distinct seed per initializer: initializers seeded with one int draw the same values."""
  return None if seed is None else seed + offset


def check_example_shape(input_shape, rank, meaning):
  """Validates a per-example shape (no batch dimension) given to `flops_per_example`."""
  try:
    dims = tuple(input_shape)
  except TypeError:
    dims = None
  if (
      dims is None
      or len(dims) != rank
      or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d <= 0 for d in dims)
  ):
    raise ValueError(
        "Invalid value received for argument `input_shape`. Expected a shape without the "
        f"batch dimension: {rank} positive integers {meaning}. "
        f"Received: input_shape={input_shape!r}"
    )
  return tuple(int(d) for d in dims)


class Component(keras.layers.Layer):
  """Base class of the component layers; `kind` is set by `registry.register`."""

  kind = None

  def param_count(self):
    """Number of scalars in the layer's weights (trainable or not; seed state excluded)."""
    if not self.built:
      raise ValueError(
          f"Layer '{self.name}' ({type(self).__name__}) has no weights until it is built; "
          "call it on an input or call `build(input_shape)` before `param_count()`."
      )
    return sum(math.prod(w.shape) for w in self.weights)

  def _propagate_trainable(self):
    """Call at the end of `build`: makes `trainable=False` reach every sublayer's variables.

    `Layer(trainable=False)` flags only the layer itself; sublayers created afterwards (ours in
    `__init__`, MultiHeadAttention's in its `build`) would keep trainable variables that an
    enclosing Model still trains. Re-applying the flag once everything exists fixes that. It
    calls the property setter directly on every nested layer because TensorFlow's
    `AutoTrackable.__setattr__` skips `x.trainable = False` when it is already False.
    """
    if not self.trainable:
      for layer in self._flatten_layers():
        keras.layers.Layer.trainable.fset(layer, False)

  def flops_per_example(self, input_shape):
    """Inference FLOPs for one example of `input_shape` (no batch dim); see module doc."""
    raise NotImplementedError
