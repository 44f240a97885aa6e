"""The one place mtsys reaches into private Keras attributes.

Keras 3 (3.15) has no public way for an optimizer to find the slot of the variable it updates:
`Optimizer.update_step(gradient, variable, learning_rate)` receives one variable at a time, and
under the TensorFlow backend not the `keras.Variable` the optimizer was built with but the
`tf.Variable` inside it, or, under a `tf.distribute` strategy, one replica's component of it.
Only `Optimizer._get_variable_index` maps all of those back to the variable's position in the
list passed to `build`; Keras' own optimizers use it, and so does the subclassing example in
`keras.optimizers.Optimizer`'s docstring. Nothing else in mtsys touches a name starting with "_"
on a Keras object.

tests/train/test_keras_internals.py pins the behaviour relied on here, so a Keras upgrade that
changes it fails there, by name, rather than somewhere inside training.
"""

from __future__ import annotations

import keras


def variable_index(optimizer: keras.optimizers.Optimizer, variable) -> int:
  """The position of `variable` in the list `optimizer` was built with.

  Args:
    optimizer: a built Keras optimizer.
    variable: one of the variables it was built with, as a `keras.Variable`, as the backend
      variable inside it, or as one replica's component of that (what `update_step` receives).
  """
  return optimizer._get_variable_index(variable)  # pylint: disable=protected-access
