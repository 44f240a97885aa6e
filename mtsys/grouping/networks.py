"""Group networks (Standley et al. 2020, section 3): a shared trunk with one head per task.

A candidate network solves a subset of the tasks with one trunk (hard parameter sharing) and a
head per task. The trunk is made of mtsys components: the root's (default; pretrained when the
config says so), or a task's path of an evolved system without its head (`--trunk_from=
SYSTEM_DIR:TASK`, adapters included), starting from their stored weights.

Every trunk component is cloned into the candidate (trainable; the source is never written), and
each task gets a fresh zero-initialised head, so a trained candidate is exactly a set of paths
sharing their trunk components: the rest of mtsys can store, inspect, export and serve it.

Loss. The network trains on the SUM of the task losses (each the batch mean cross-entropy of the
task's own batch: mtsys tasks have their own images, so a step draws one batch per task). The
paper's text says "the unweighted mean", but the authors' released code sums the task losses,
and the sum is what keeps a candidate comparable to its single-task counterpart: every head gets
exactly its own task's gradient, at the scale a single-task network gives it, whatever the size
of the group, and the shared trunk gets every task's gradient at full weight. (With the mean a
task's head would learn k times slower in a k-task network.) The global-norm clipping at 1.0 of
mtsys' optimizer then acts on the summed gradient.

Half-size networks (the paper's 1/2-SNT single-task candidates) keep the first half of the
trunk's transformer blocks (floor(N/2), with any adapters that follow them): about half the
FLOPs, never more, declared as cost 0.5.

Training (`train`): mtsys' optimizer recipe (`mtsys.train.optimizer`: SGD with a momentum trace,
warm-up + cosine, clipping), mtsys' input pipelines, `trainer.Budget`'s epochs of at most
`max_batches_per_epoch` steps (an epoch of a group is as long as that of its largest task). After
every epoch each task's validation loss and accuracy are measured; the epoch with the lowest
summed validation loss is kept (the paper keeps the best network on validation loss), and test
loss and accuracy are measured on it. One device only (a custom loop: TAG's lookahead needs it).

TAG's lookahead (`lookahead_every`, Fifty et al. 2021): every few steps, before the real update,
for each task i a plain SGD step (the current learning rate) on the shared trunk with task i's
gradient alone, then every task j's loss on its batch; Z[i, j] = 1 - L_j(after) / L_j(before),
averaged over the run, is the affinity of i onto j (positive: i's step helps j). The trunk is
restored after each trial, so training itself is unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from mtsys import data as mdata
from mtsys import errors
from mtsys.config import loader
from mtsys.protos import mtsys_pb2
from mtsys.system import assembly
from mtsys.system import paths as mpaths
from mtsys.system import root as mroot
from mtsys.system import store as mstore
from mtsys.train import optimizer as moptimizer
from mtsys.train import trainer

HEAD_KIND = "head"
BLOCK_KIND = "transformer_block"
_EVAL_BATCH_FACTOR = 4  # evaluation batches hold this many training batches' examples


# --- Trunks -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Trunk:
  """Where candidates' trunks start: components in path order (no head) with their weights."""

  specs: tuple  # ComponentSpec per component
  weights: tuple  # list of arrays per component
  image_size: int
  channels: int
  source: str  # "root" or "SYSTEM_DIR:TASK", for messages and records
  # The root settings of the system the trunk comes from (what candidate systems record).
  root_config: Optional[mtsys_pb2.RootModel] = None
  # An imported root's head template (`mtsys.system.root.head_template`): new heads start from it.
  head_template: Optional[tuple] = None

  @property
  def num_blocks(self) -> int:
    return sum(s.kind == BLOCK_KIND for s in self.specs)

  @property
  def flops(self) -> int:
    return sum(int(s.flops) for s in self.specs)


def parse_trunk_from(value: str) -> tuple[str, str]:
  """`SYSTEM_DIR:TASK` -> (system directory, task); the last ':' separates (gs:// works)."""
  directory, sep, task = (value or "").rpartition(":")
  if not sep or not directory or not task or task.startswith("/"):
    raise errors.ConfigError(f"Invalid --trunk_from={value!r}: expected SYSTEM_DIR:TASK, e.g. "
                             "'out/chars-lite:digits'.")
  return directory, task


def root_trunk(store: mstore.Store, config: loader.Config) -> Trunk:
  """The root held by `store` (see `pretrain.ensure_root`) as a trunk."""
  specs = [store.read_component_spec(c) for c in mroot.root_ids(config)]
  root = config.proto.root
  return Trunk(tuple(specs), tuple(store.read_weights(s) for s in specs), int(root.image_size),
               int(root.channels), "root", root, mroot.head_template(store, root))


def path_trunk(trunk_from: str) -> Trunk:
  """The trunk of `SYSTEM_DIR:TASK`: that task's path without its head.

  Raises:
    ConfigError: a malformed value; SystemNotFoundError: no system there; UnknownTaskError: the
      system has no path for the task.
  """
  directory, task = parse_trunk_from(trunk_from)
  store = mstore.Store.open(directory)
  path = store.read_path(task)
  if path is None:
    raise errors.UnknownTaskError(
        f"--trunk_from={trunk_from!r}: the system at {directory} has no path for task '{task}'; "
        f"expected one of {sorted(store.paths())}.")
  specs = [store.read_component_spec(c) for c in path.component_ids]
  if specs and specs[-1].kind == HEAD_KIND:
    specs = specs[:-1]
  state = store.read_state()
  size = int(mpaths.hparams_from_proto(path.hparams).get("image_size",
                                                         state.config.root.image_size))
  return Trunk(tuple(specs), tuple(store.read_weights(s) for s in specs), size,
               int(state.config.root.channels or 3), trunk_from, state.config.root,
               mroot.head_template(store, state.config.root))


def half_trunk(trunk: Trunk) -> Trunk:
  """The first floor(N/2) transformer blocks of `trunk` (with the adapters following them)."""
  keep = trunk.num_blocks // 2
  if keep < 1:
    raise errors.ConfigError(
        f"Half-size candidates keep the first half of the trunk's transformer blocks; the trunk "
        f"({trunk.source}) has {trunk.num_blocks}: expected at least 2 (root.num_blocks).")
  end, seen = len(trunk.specs), 0
  for i, spec in enumerate(trunk.specs):
    if spec.kind == BLOCK_KIND:
      if seen == keep:
        end = i
        break
      seen += 1
  return dataclasses.replace(trunk, specs=trunk.specs[:end], weights=trunk.weights[:end])


# --- Planning -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GroupPlan:
  """A candidate's components before training: cloned trunk and fresh heads, all trainable."""

  tasks: tuple  # task names, in the network's order
  trunk: tuple  # PlannedComponent per trunk component
  heads: Mapping[str, assembly.PlannedComponent]
  image_size: int
  channels: int

  def path(self, task: str) -> list:
    """The task's path: the shared trunk, then its head."""
    return [*self.trunk, self.heads[task]]


def group_access(tasks: Sequence[mtsys_pb2.TaskSpec], base: mtsys_pb2.ComponentAccess
                 ) -> mtsys_pb2.ComponentAccess:
  """Who may use a component trained on all of `tasks`: public only if every task and `base`
  are; otherwise restricted, always including the group's own tasks (which share it)."""
  access = base
  for task in tasks:
    access = mpaths.intersect_access(access, mroot.task_access(task))
  if not access.public:
    access.tasks.extend(sorted({t.name for t in tasks} - set(access.tasks)))
  return access


def plan_group(trunk: Trunk, tasks: Sequence[mtsys_pb2.TaskSpec]) -> GroupPlan:
  """Trainable clones of `trunk` (new ids) and one zero-initialised head per task."""
  if not tasks:
    raise errors.ConfigError("A group network needs at least one task; got none.")
  planned, shape = [], (trunk.image_size, trunk.image_size, trunk.channels)
  for spec, weights in zip(trunk.specs, trunk.weights, strict=True):
    clone = mtsys_pb2.ComponentSpec()
    clone.CopyFrom(spec)
    clone.id = mroot.new_component_id("grouping", spec.kind)
    clone.cloned_from = spec.id
    clone.created_by_task = tasks[0].name
    clone.created_at_ms = mroot.now_ms()
    clone.access.CopyFrom(group_access(tasks, spec.access))
    for field in ("weights_file", "weights_sha256", "optimizer_file", "optimizer_sha256",
                  "optimizer_slots_kind"):
      clone.ClearField(field)
    planned.append(assembly.PlannedComponent(clone, list(weights), None, trainable=True))
    shape = tuple(assembly.instantiate(spec).compute_output_shape((1, *shape)))[1:]
  tokens, hidden = shape
  heads = {}
  for task in tasks:
    spec, weights = mroot.new_head(task, hidden, tokens, mroot.task_access(task),
                                   trunk.head_template)
    heads[task.name] = assembly.PlannedComponent(spec, weights, None, trainable=True)
  return GroupPlan(tuple(t.name for t in tasks), tuple(planned), heads, trunk.image_size,
                   trunk.channels)


# --- The network --------------------------------------------------------------------------------

class GroupNetwork(keras.Model):
  """The shared trunk (a functional model of the trunk's components) and a head per task.

  Called on {task: images} it returns {task: logits}: each task's images go through the trunk and
  that task's head.
  """

  def __init__(self, plan: GroupPlan, **kwargs):
    super().__init__(**kwargs)
    self.tasks = tuple(plan.tasks)
    self.image_size, self.channels = plan.image_size, plan.channels
    self.trunk, self.trunk_layers = assembly.build_path_model(
        plan.trunk, plan.image_size, plan.channels, name="trunk")
    self.head_layers = []
    for task in self.tasks:
      p = plan.heads[task]
      head = assembly.instantiate(p.spec)
      head.build(self.trunk.output_shape)
      assembly.set_stored_weights(head, p.spec, p.weights)
      self.head_layers.append(head)
    self.component_ids = [p.spec.id for p in plan.trunk] + [plan.heads[t].spec.id
                                                            for t in self.tasks]

  def head(self, task: str) -> keras.layers.Layer:
    return self.head_layers[self.tasks.index(task)]

  def call(self, images: Mapping[str, tf.Tensor], training=None):
    return {t: self.head(t)(self.trunk(images[t], training=training)) for t in images}

  def component_layers(self) -> dict:
    """Component id -> its layer (trunk components, then heads)."""
    return dict(zip(self.component_ids, [*self.trunk_layers, *self.head_layers]))


def task_losses(net: GroupNetwork, batches: Mapping[str, tuple], training=None) -> dict:
  """{task: mean cross-entropy of its batch}; batches: {task: (images, labels)}."""
  logits = net({t: x for t, (x, _) in batches.items()}, training=training)
  return {t: keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
      batches[t][1], logits[t], from_logits=True)) for t in batches}


def _train_step(net: GroupNetwork, optimizer: moptimizer.TraceSGD):
  variables = net.trainable_variables

  @tf.function(autograph=False, jit_compile=False)
  def step(batches):
    with tf.GradientTape() as tape:
      losses = task_losses(net, batches, training=True)
      total = tf.add_n(list(losses.values()))  # the sum (module doc)
    optimizer.apply(tape.gradient(total, variables), variables)
    return losses

  return step


def lookahead(net: GroupNetwork):
  """TAG's lookahead: a function (batches, learning rate) -> Z [tasks, tasks] (module doc).

  Two traced functions: every task's loss and trunk gradient, and one trial step (given
  gradients) measuring every task's loss, called once per task: the graphs grow linearly with the
  number of tasks, not quadratically.
  """
  shared = net.trunk.trainable_variables

  @tf.function(autograph=False, jit_compile=False)
  def losses_and_gradients(batches):
    before, grads = [], []
    for t in net.tasks:
      with tf.GradientTape() as tape:
        before.append(task_losses(net, {t: batches[t]})[t])
      grads.append([tf.zeros_like(v) if g is None else g
                    for v, g in zip(shared, tape.gradient(before[-1], shared))])
    return tf.stack(before), grads

  @tf.function(autograph=False, jit_compile=False)
  def trial(batches, grads, learning_rate):
    saved = [tf.identity(v) for v in shared]
    for v, g in zip(shared, grads):
      v.assign_sub(tf.cast(learning_rate, v.dtype) * g)
    after = task_losses(net, batches)
    for v, s in zip(shared, saved):
      v.assign(s)
    return tf.stack([after[t] for t in net.tasks])

  def affinity(batches, learning_rate):
    before, grads = losses_and_gradients(batches)
    return tf.stack([1.0 - trial(batches, g, learning_rate) / before for g in grads])

  return affinity


def _evaluator(net: GroupNetwork, task: str, image_size: int, channels: int):
  spec = [tf.TensorSpec([None, image_size, image_size, channels], tf.float32),
          tf.TensorSpec([None], tf.int64)]

  @tf.function(autograph=False, jit_compile=False, input_signature=spec)
  def sums(images, labels):
    logits = net.head(task)(net.trunk(images, training=False))
    loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    correct = tf.cast(tf.equal(tf.argmax(logits, -1), labels), tf.float32)
    return tf.reduce_sum(loss), tf.reduce_sum(correct)

  return sums


# --- Training -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Settings:
  """How a candidate trains: budget, hyperparameters, seeds, TAG's lookahead period (0: off)."""

  budget: trainer.Budget
  hparams: Mapping[str, object]
  seed: int = 0
  # Task name -> data seed offset, so a task sees the same batches in every candidate.
  task_seeds: Mapping[str, int] = dataclasses.field(default_factory=dict)
  lookahead_every: int = 0


@dataclasses.dataclass
class GroupResult:
  """A trained candidate: per-task {split: {"loss", "accuracy"}} of the kept epoch, its weights
  and momentum traces by component id, step counts, and TAG's affinity (None without)."""

  metrics: dict
  weights: dict
  optimizer_slots: dict
  best_epoch: int
  steps_per_epoch: int
  total_steps: int
  seconds: float
  affinity: Optional[np.ndarray] = None
  lookaheads: int = 0


def evaluate(net: GroupNetwork, task_data: Mapping[str, "mdata.TaskData"], split: str,
             batch_size: int, evaluators: Optional[dict] = None) -> dict:
  """{task: {"loss", "accuracy"}} on `split` (mean over the split's examples)."""
  out = {}
  for task in net.tasks:
    fn = (evaluators or {}).get(task) or _evaluator(net, task, net.image_size, net.channels)
    ds = mdata.make_dataset(task_data[task], split, batch_size=batch_size,
                            image_size=net.image_size, channels=net.channels, hparams=None,
                            training=False, seed=0)
    loss = correct = count = 0.0
    for images, labels in ds:
      l, c = fn(images, labels)
      loss, correct, count = loss + float(l), correct + float(c), count + int(labels.shape[0])
    out[task] = {"loss": loss / count, "accuracy": correct / count}
  return out


def train(plan: GroupPlan, task_data: Mapping[str, "mdata.TaskData"], settings: Settings, *,
          log: Optional[Callable[[str], None]] = None) -> GroupResult:
  """Trains a group network on the sum of its task losses; returns the best epoch's state."""
  t0 = time.perf_counter()
  budget, tasks = settings.budget, plan.tasks
  steps = budget.steps_per_epoch(max(task_data[t].sizes["train"] for t in tasks))
  total = steps * budget.epochs
  net = GroupNetwork(plan)
  optimizer = moptimizer.build_optimizer(moptimizer.optimizer_settings(settings.hparams, total))
  variables = net.trainable_variables
  optimizer.build(variables)
  train_ds = tf.data.Dataset.zip({t: mdata.make_dataset(
      task_data[t], "train", batch_size=budget.batch_size, image_size=plan.image_size,
      channels=plan.channels, hparams=settings.hparams, training=True,
      seed=settings.seed + settings.task_seeds.get(t, 0), repeat=True, drop_remainder=True)
      for t in tasks}).prefetch(2)
  step = _train_step(net, optimizer)
  look = lookahead(net) if settings.lookahead_every else None
  evaluators = {t: _evaluator(net, t, plan.image_size, plan.channels) for t in tasks}
  eval_batch = budget.batch_size * _EVAL_BATCH_FACTOR
  layers = net.component_layers()
  affinity, lookaheads = np.zeros((len(tasks), len(tasks))), 0
  best, best_epoch, kept = math.inf, -1, None
  batches = iter(train_ds)
  for epoch in range(budget.epochs):
    for s in range(steps):
      batch = next(batches)
      if look is not None and (epoch * steps + s) % settings.lookahead_every == 0:
        affinity += look(batch, optimizer.learning_rate).numpy()
        lookaheads += 1
      step(batch)
    val = evaluate(net, task_data, "validation", eval_batch, evaluators)
    summed = sum(v["loss"] for v in val.values())
    if log:
      log(f"    epoch {epoch + 1}/{budget.epochs}: validation loss {summed:.4f} (" + ", ".join(
          f"{t} {v['loss']:.3f}/{v['accuracy']:.3f}" for t, v in val.items()) + ")")
    if kept is None or summed < best:  # NaN never wins, but the first epoch is always kept
      best, best_epoch = summed, epoch
      kept = ({cid: [np.array(w) for w in layer.get_weights()] for cid, layer in layers.items()},
              {cid: [optimizer.slots(w) for w in layer.weights] for cid, layer in layers.items()},
              val)
  weights, slots, val = kept
  for cid, layer in layers.items():
    layer.set_weights(weights[cid])
  test = evaluate(net, task_data, "test", eval_batch, evaluators)
  metrics = {t: {"validation": val[t], "test": test[t]} for t in tasks}
  return GroupResult(metrics, weights, slots, best_epoch, steps, total,
                     time.perf_counter() - t0,
                     affinity / lookaheads if lookaheads else None, lookaheads)
