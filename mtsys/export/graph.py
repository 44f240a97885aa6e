"""The exported system as TensorFlow computation: one Keras layer per component, shared by all.

Every task's path is a chain of component ids. `SystemGraph` instantiates each id once, loads its
stored weights once, and runs a task by calling its components in order, so every signature of
every task shares one set of variables and a component used by ten tasks is saved once.

Each (component, input shape) is one `tf.function`: every signature that runs it calls the same
function in the SavedModel's library instead of inlining a copy of its ops, which keeps the graph
small however many tasks share a component (Grappler inlines the calls again when it runs).

Routing (the `routed` signatures) follows the tasks' paths as a prefix tree: the root's children
are the image sizes, below them the components. Each node runs once, on the sub-batch of
examples whose paths pass through it; a node no example of the batch reaches is skipped by a
`tf.cond`, so no example runs a component its path does not use.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from mtsys.protos import mtsys_pb2
from mtsys.system import assembly


@dataclasses.dataclass(frozen=True)
class TaskPath:
  """One exported task: its path and what its outputs need."""

  name: str
  path: mtsys_pb2.PathSpec
  image_size: int
  num_classes: int
  class_names: tuple  # by label index; () when the task's source has no names


@dataclasses.dataclass
class _Node:
  """A prefix-tree node: an image size (root children) or a component, and the tasks below it."""

  tasks: list  # indices into SystemGraph.tasks, in order
  image_size: int = 0
  component_id: str = ""
  depth: int = 0  # components from the image to this node, inclusive
  children: dict = dataclasses.field(default_factory=dict)


class SystemGraph:
  """The layers of an exported system and the computations its signatures call.

  Args:
    tasks: The exported tasks, in signature order.
    specs: Component id -> spec, for every component the tasks' paths use.
    weights: Component id -> stored weight arrays (checksum-verified by the store).
    channels: Channels the root reads (every path's input).
  """

  def __init__(self, tasks: Sequence[TaskPath], specs: Mapping[str, mtsys_pb2.ComponentSpec],
               weights: Mapping[str, Sequence[np.ndarray]], channels: int):
    self.tasks = list(tasks)
    self.channels = channels
    self.layers: dict[str, keras.layers.Layer] = {}
    for task in self.tasks:
      # Calling the layers on symbolic inputs builds each (once) with its real input shape.
      x = keras.Input((task.image_size, task.image_size, channels))
      for cid in task.path.component_ids:
        if cid not in self.layers:
          self.layers[cid] = assembly.instantiate(specs[cid])
        x = self.layers[cid](x)
      if tuple(x.shape) != (None, task.num_classes):
        raise ValueError(f"Task '{task.name}': its path ends in shape {tuple(x.shape)}; expected "
                         f"(None, {task.num_classes}) logits.")
    for cid, layer in self.layers.items():
      assembly.set_stored_weights(layer, specs[cid], weights[cid])
      layer.trainable = False
    self._functions: dict[tuple, Callable] = {}
    self._tree = self._prefix_tree()
    self.max_classes = max(t.num_classes for t in self.tasks)

  def labelled_variables(self) -> list[tuple[tf.Variable, str]]:
    """(tf.Variable, component id) for every variable of the export."""
    out = []
    for cid, layer in self.layers.items():
      for v in layer.weights:
        out.append((getattr(v, "value", v), cid))  # a Keras 3 variable wraps a tf.Variable
    return out

  # ------------------------------------------------------------------ one task
  def component(self, cid: str, x: tf.Tensor) -> tf.Tensor:
    """Runs component `cid` on `x` through its shared per-shape tf.function."""
    key = (cid, tuple(x.shape[1:]))
    fn = self._functions.get(key)
    if fn is None:
      layer = self.layers[cid]
      spec = tf.TensorSpec([None] + list(x.shape[1:]), x.dtype)
      fn = tf.function(lambda inputs: layer(inputs, training=False), input_signature=[spec],
                       autograph=False)
      self._functions[key] = fn
    return fn(x)

  def logits(self, task_index: int, images: tf.Tensor) -> tf.Tensor:
    """The task's logits [B, K] for preprocessed images [B, S, S, C]."""
    x = images
    for cid in self.tasks[task_index].path.component_ids:
      x = self.component(cid, x)
    return x

  # ------------------------------------------------------------------ routing
  def _prefix_tree(self) -> _Node:
    root = _Node(tasks=list(range(len(self.tasks))))
    for i, task in enumerate(self.tasks):
      node = root.children.setdefault(("size", task.image_size),
                                      _Node(tasks=[], image_size=task.image_size))
      node.tasks.append(i)
      for depth, cid in enumerate(task.path.component_ids, start=1):
        node = node.children.setdefault(("component", cid),
                                        _Node(tasks=[], component_id=cid, depth=depth))
        node.tasks.append(i)
    return root

  def task_indices(self, names: tf.Tensor) -> tf.Tensor:
    """Task names string [B] -> int32 [B] indices; an unknown name fails the request naming it."""
    known = tf.constant([t.name for t in self.tasks])
    matches = tf.equal(names[:, None], known[None, :])
    found = tf.reduce_any(matches, axis=1)
    unknown = tf.boolean_mask(names, tf.logical_not(found))
    # Backticks, not quotes: the Assert op's message escapes quotes (\').
    message = tf.strings.join([
        "Unknown task `", tf.concat([unknown, [""]], 0)[0], "` in input `task`; expected one of [",
        tf.strings.reduce_join(known, separator=", "), "]"])
    check = tf.debugging.Assert(tf.reduce_all(found), [message])
    with tf.control_dependencies([check]):
      return tf.argmax(tf.cast(matches, tf.int32), axis=1, output_type=tf.int32)

  def routed_probabilities(self, task_index: tf.Tensor,
                           inputs_at: Callable[[int, tf.Tensor], tf.Tensor]) -> tf.Tensor:
    """Each example's probabilities under its own task, padded to [B, max_classes] with zeros.

    Args:
      task_index: int32 [B], from `task_indices`.
      inputs_at: (image_size, rows int32 [n]) -> preprocessed images [n, S, S, C] of those rows
        of the request, so only examples of tasks at that size are decoded or resized there.
    """
    # No shortcut for a batch of one task: a tf.switch_case over the tasks' paths passes every
    # task's variables into every branch, so its cost and the graph's size grow with the
    # square of the number of tasks (measured: slower than the tree, +35% saved_model.pb at 32
    # tasks). The tree spends a few ops per branch a batch does not reach (TensorFlow's
    # per-op cost, not the components, dominates a branch skipped).
    batch = tf.shape(task_index)[0]
    rows, probabilities = self._children(self._tree, None, tf.range(batch), task_index,
                                         inputs_at)
    out = tf.scatter_nd(rows[:, None], probabilities, [batch, self.max_classes])
    out.set_shape([None, self.max_classes])
    return out

  def _empty(self) -> tuple:
    return tf.zeros([0], tf.int32), tf.zeros([0, self.max_classes], tf.float32)

  def _subtree(self, node: _Node, x: Optional[tf.Tensor], rows: tf.Tensor, tasks: tf.Tensor,
               inputs_at) -> tuple:
    """Runs `node` and its subtree on `rows`, all of whose paths pass through it.

    Returns:
      (rows int32 [n], probabilities [n, max_classes]) of the examples whose paths end below.
    """
    y = inputs_at(node.image_size, rows) if node.image_size else self.component(
        node.component_id, x)
    parts = []
    for i in node.tasks:
      if len(self.tasks[i].path.component_ids) != node.depth:
        continue
      if len(node.tasks) == 1:  # only task i passes here: y is all its logits
        mine_rows, logits = rows, y
      else:
        mine = tf.where(tf.equal(tasks, i))[:, 0]
        mine_rows, logits = tf.gather(rows, mine), tf.gather(y, mine)
      padding = [[0, 0], [0, self.max_classes - self.tasks[i].num_classes]]
      parts.append((mine_rows, tf.pad(tf.nn.softmax(logits), padding)))
    if node.children:
      parts.append(self._children(node, y, rows, tasks, inputs_at))
    if len(parts) == 1:
      return parts[0]
    return tf.concat([r for r, _ in parts], 0), tf.concat([p for _, p in parts], 0)

  def _children(self, node: _Node, y: Optional[tf.Tensor], rows: tf.Tensor, tasks: tf.Tensor,
                inputs_at) -> tuple:
    """`node`'s children, each run by a tf.cond on the examples whose paths go through it."""
    children = list(node.children.values())
    ended = any(len(self.tasks[i].path.component_ids) == node.depth for i in node.tasks)
    if len(children) == 1 and children[0].tasks == node.tasks and not ended:
      return self._subtree(children[0], y, rows, tasks, inputs_at)  # no choice to make
    # Which child each example goes to (0 for tasks that end here), counted in one op.
    table = np.zeros(len(self.tasks), np.int32)
    for j, child in enumerate(children):
      table[child.tasks] = j + 1
    which = tf.gather(table, tasks)
    reached = tf.unstack(tf.math.bincount(which, minlength=len(children) + 1,
                                          maxlength=len(children) + 1)[1:] > 0,
                         num=len(children))
    parts = []
    for j, child in enumerate(children):
      def run(j=j, child=child):
        picked = tf.where(tf.equal(which, j + 1))[:, 0]
        return self._subtree(child, None if y is None else tf.gather(y, picked),
                             tf.gather(rows, picked), tf.gather(tasks, picked), inputs_at)

      parts.append(tf.cond(reached[j], run, self._empty))
    return tf.concat([r for r, _ in parts], 0), tf.concat([p for _, p in parts], 0)
