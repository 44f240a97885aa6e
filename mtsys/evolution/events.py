"""What evolution records as it goes: one history record per trained child
(`mtsys.system.history`) and TensorBoard event files, timed so the loop can report their cost.

TensorBoard (`tensorboard --logdir <system_dir>/tensorboard`): one run per program,
`tensorboard/<writer>/`, named like its history files. TensorBoard groups charts by the part of a
tag before the first "/", here the task:

| tag | step | value |
|---|---|---|
| `<task>/children/<iteration>.<generation>.<index>/<metric>` | epoch (from 1) | the child's `train_loss`, `train_accuracy`, `validation_loss`, `validation_accuracy` |
| `<task>/child_score`, `<task>/child_validation_accuracy` | the child's sequence number | every child's score and validation accuracy |
| `<task>/best_score` | the task's generation over all its phases (from 1) | the active population's best score |
| `system/components`, `system/parameters`, `system/tasks` | children trained so far | what the system's paths and the active population use |

Event files are written by TensorFlow's summary writer, not by the store's primitives: only
`admin.remove_task` reads them back (to drop a removed task's events), and they are no part of
the system's state. A kill leaves at most a truncated
last event, which TensorBoard skips; fsck and crash recovery ignore the directory. The summary
writer is created at the first generation's end and flushed at every generation's end.

The per-child work (a record, a few scalars) is kept out of training and done once per
generation; `Recorder.seconds` is its wall time, part of the loop's bookkeeping
(`loop.Timing.recording`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Mapping

import tensorflow as tf

from mtsys.evolution import mutations
from mtsys.protos import mtsys_pb2
from mtsys.system import fileio
from mtsys.system import history
from mtsys.system import paths as mpaths
from mtsys.system import store as mstore

TENSORBOARD = "tensorboard"
# Keras' epoch logs -> EpochMetrics fields.
_EPOCH_KEYS = {"loss": "train_loss", "accuracy": "train_accuracy",
               "val_loss": "validation_loss", "val_accuracy": "validation_accuracy"}


@dataclasses.dataclass
class ChildReport:
  """One trained child, for progress displays."""

  task: str
  task_iteration: int
  generation: int
  index: int
  parent_id: str
  mutations: list
  validation_accuracy: float
  score: float
  parent_score: float
  kept: bool
  best_score: float
  seconds: float


def child_report(record: mtsys_pb2.ChildRecord) -> ChildReport:
  return ChildReport(record.task, record.task_iteration, record.generation, record.index,
                     record.parent_id, list(record.mutations),
                     record.metrics.validation_accuracy, record.score, record.parent_score,
                     record.kept, record.best_score, record.seconds)


def child_record(task: str, iteration: int, generation: int, index: int,
                 child: "mutations.Child", result, *, seconds: float, sequence: int,
                 path_id: str, score: float, parent_score: float, kept: bool,
                 best_score: float, accounted: float, flops: int, author: str,
                 wall_time_ms: int) -> mtsys_pb2.ChildRecord:
  """The history record of a trained child (`result`: its `trainer.TrainResult`)."""
  planned = child.planned
  record = mtsys_pb2.ChildRecord(
      task=task, task_iteration=iteration, generation=generation, index=index,
      sequence=sequence, parent_id=child.parent.id, path_id=path_id,
      mutations=list(child.mutations),
      added_params=sum(p.spec.param_count for p in planned if p.trainable),
      score=score, parent_score=parent_score, kept=kept, best_score=best_score,
      component_ids=[p.spec.id for p in planned], wall_time_ms=wall_time_ms, seconds=seconds,
      author=author)
  record.metrics.CopyFrom(mtsys_pb2.PathMetrics(
      validation_accuracy=result.validation_accuracy,
      test_accuracy=result.test_accuracy or 0.0, accounted_params=accounted,
      total_params=sum(p.spec.param_count for p in planned), flops=flops,
      train_steps=result.total_steps, train_seconds=result.train_seconds))
  for name, value in mpaths.hparams_to_proto(child.hparams).items():
    record.hparams[name].CopyFrom(value)
  for name, value in child.hparams.items():
    if name == "mutation_prob" or name.startswith(mutations.PER_ACTION_PREFIX):
      record.mutation_probs[name] = float(value)
  for logs in result.history:
    record.epochs.add(**{field: float(logs[key]) for key, field in _EPOCH_KEYS.items()
                         if key in logs})
  return record


class Recorder:
  """Writes one program's history records and TensorBoard events for a store's evolution."""

  def __init__(self, store: mstore.Store, author: str, *, tensorboard: bool = True,
               clock: Callable[[], float] = time.time):
    """`clock`: wall time in seconds, for the records' times and the writer's name."""
    self.author = author
    self._clock = clock
    self.writer = history.writer_id(author, clock)
    self.history = history.Writer(store, self.writer)
    self.tensorboard_dir = (fileio.join(store.root, TENSORBOARD, self.writer)
                            if tensorboard else None)
    self._summary = None
    self._children: list[mtsys_pb2.ChildRecord] = []  # this generation's, not yet written
    # Wall time spent here (building records, writing history and events).
    self.seconds = 0.0

  def child(self, *args, **kwargs) -> mtsys_pb2.ChildRecord:
    """Records a trained child (arguments: `child_record`'s but `author` and `wall_time_ms`);
    written at the end of its generation. Returns the record."""
    start = time.perf_counter()
    record = child_record(*args, author=self.author,
                          wall_time_ms=int(self._clock() * 1000), **kwargs)
    self._children.append(record)
    self.seconds += time.perf_counter() - start
    return record

  def generation(self, state: mtsys_pb2.EvolutionState,
                 system: Mapping[str, mtsys_pb2.PathSpec],
                 spec_of: Callable[[str], mtsys_pb2.ComponentSpec], task: str, step: int,
                 best_score: float) -> None:
    """Writes the generation's records (the history file, before the state that completes the
    generation) and events. `system`: the tasks' paths; `step`: the task's generation count
    over all its phases (from 1)."""
    start = time.perf_counter()
    in_use = (mstore.component_ids_of(system.values())
              | mstore.component_ids_of(state.population))
    params = sum(spec_of(c).param_count for c in in_use)
    for record in self._children:
      record.system_components, record.system_params = len(in_use), params
      self.history.append(record)
    self.history.flush()
    if self.tensorboard_dir is not None:
      self._write_events(task, step, best_score, len(in_use), params, len(system),
                         int(state.children_trained))
    self._children = []
    self.seconds += time.perf_counter() - start

  def _write_events(self, task, step, best_score, components, params, tasks, trained) -> None:
    if self._summary is None:
      self._summary = tf.summary.create_file_writer(self.tensorboard_dir)
    with self._summary.as_default():
      for r in self._children:
        name = f"{r.task}/children/{r.task_iteration}.{r.generation}.{r.index}"
        for epoch, metrics in enumerate(r.epochs, start=1):
          for field in _EPOCH_KEYS.values():
            tf.summary.scalar(f"{name}/{field}", getattr(metrics, field), step=epoch)
        tf.summary.scalar(f"{r.task}/child_score", r.score, step=r.sequence)
        tf.summary.scalar(f"{r.task}/child_validation_accuracy",
                          r.metrics.validation_accuracy, step=r.sequence)
      if best_score > float("-inf"):
        tf.summary.scalar(f"{task}/best_score", best_score, step=step)
      tf.summary.scalar("system/components", components, step=trained)
      tf.summary.scalar("system/parameters", params, step=trained)
      tf.summary.scalar("system/tasks", tasks, step=trained)
    self._summary.flush()

  def close(self) -> None:
    """Closes the event file (the history needs nothing: it is written per generation)."""
    if self._summary is not None:
      self._summary.close()
      self._summary = None


def tensorboard_dir(root: str) -> str:
  """Where evolution writes TensorBoard runs for the system at `root`."""
  return fileio.join(root, TENSORBOARD)
