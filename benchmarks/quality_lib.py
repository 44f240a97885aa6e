"""What benchmarks/quality.py and benchmarks/tuning.py share: edited copies of a config, one
evolution run, one seed's baselines, and muNet Table 1's figures over seeds."""

from __future__ import annotations

import dataclasses
import time
from typing import Optional, Sequence

def edited(config, edit):
  """A validated copy of `config` after `edit(proto)`."""
  from google.protobuf import text_format
  from mtsys.config import loader
  proto = type(config.proto)()
  proto.CopyFrom(config.proto)
  edit(proto)
  return loader.parse(text_format.MessageToString(proto), config.path)


def with_seeds(config, seed_offset: int, scale_factor=None):
  """A copy of `config` with seeds moved by `seed_offset` (and a scale factor)."""
  def edit(proto):
    proto.evolution.seed += seed_offset
    proto.baselines.seed += seed_offset
    if scale_factor is not None:
      proto.evolution.score.scale_factor = scale_factor
  return edited(config, edit)


def quick(config):
  """Tiny budgets for a smoke run; the baselines keep eq. 4's equal budget."""
  def edit(proto):
    ev = proto.evolution
    ev.task_iterations, ev.generations, ev.children_per_generation = 1, 1, 2
    ev.epochs_per_child, ev.max_batches_per_epoch = 1, 5
    if proto.root.HasField("pretrain"):
      proto.root.pretrain.epochs, proto.root.pretrain.max_batches_per_epoch = 1, 5
    for field in ("epochs", "max_batches_per_epoch", "batch_size"):
      proto.baselines.ClearField(field)  # re-derived from the evolution budget
  return edited(config, edit)


def mean_std(values):
  import numpy as np
  values = np.asarray(values, dtype=float)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def run_evolution(config, directory: str, tasks, task_data, log, root_from=None) -> dict:
  """One evolution run; returns per-task test accuracy, params per task, compute, timing.

  `root_from`: a system whose root to copy (runs of one seed share one pretrained root)."""
  from mtsys.evolution import accounting
  from mtsys.evolution import loop
  from mtsys.system import store as mstore
  from mtsys.train import pretrain
  store = mstore.Store.create(directory, config.proto)
  pretrain.ensure_root(store, config, root_from=root_from, log=log)
  evolver = loop.Evolver(config, store, log=log, task_data=task_data)
  start = time.perf_counter()
  state = evolver.run(tasks=tasks)
  wall = time.perf_counter() - start
  paths = store.paths()
  reports = accounting.report(paths, evolver.source.spec)
  system = accounting.system_params(paths, evolver.source.spec)
  return {
      "test": {r.task: r.test_accuracy for r in reports},
      "validation": {r.task: r.validation_accuracy for r in reports},
      "params_per_task": system / max(1, len(paths)),
      "train_steps": int(state.train_steps),
      "train_seconds": evolver.timing.training,
      "wall_seconds": wall,
      "bookkeeping_share": evolver.timing.bookkeeping_share,
      # Of the bookkeeping: writing the history and TensorBoard events (mtsys.evolution.events).
      "recording_share": evolver.timing.recording_share,
  }


def run_baselines(config, directory: str, tasks, methods, log, root_from=None) -> dict:
  """method -> per-task test accuracy, params per task and compute, for one seed."""
  from mtsys.train import baselines
  rows = baselines.run(config, directory, methods=methods, tasks=tasks, log=log,
                       root_from=root_from)
  out = {}
  for r in rows:
    m = out.setdefault(r.method, {"test": {}, "validation": {}, "params_per_task": 0.0,
                                  "train_steps": 0, "train_seconds": 0.0})
    m["test"][r.task] = r.test_accuracy
    m["validation"][r.task] = r.validation_accuracy
    m["params_per_task"] = r.params_per_task
    m["train_steps"] += r.train_steps
    m["train_seconds"] += r.train_seconds
    m["replicas"] = r.replicas
    # The first replica alone: what one training run of the method gives (1/replicas the steps).
    one = out.setdefault(f"{r.method}{ONE_REPLICA}", {"test": {}, "params_per_task": 0.0,
                                                       "train_steps": 0, "train_seconds": 0.0})
    one["test"][r.task] = r.single_replica_test_accuracy
    one["params_per_task"] = r.params_per_task
    one["train_steps"] += r.train_steps // max(1, r.replicas)
    one["train_seconds"] += r.train_seconds / max(1, r.replicas)
  return out


ONE_REPLICA = "@1replica"


@dataclasses.dataclass(frozen=True)
class Job:
  """One run of benchmarks/quality.py, picklable for `benchmarks.workers`: an evolution run at
  `scale_factor`, or (`scale_factor` None) one seed's baselines, from the root in `root_dir`."""
  config_text: str
  config_path: str
  seed_index: int
  seed_offset: int
  scale_factor: Optional[float]
  directory: str
  root_dir: str
  tasks: Optional[Sequence[str]]
  methods: Sequence[str]
  task_data: Optional[dict] = None  # loaded by the job when None (datasets do not pickle)
  name: str = ""  # what the run tries (tuning.py: a shape or a learning rate)

  @property
  def label(self) -> str:
    kind = self.name or ("baselines" if self.scale_factor is None
                         else f"evolution@{self.scale_factor:g}")
    return f"seed {self.seed_index + 1} {kind}"


def make_root(config, directory: str, log) -> str:
  """A system holding only `config`'s root (pretrained when the config says so); every job
  copies it, so the seeds vary evolution's and the baselines' randomness, not the root."""
  from mtsys.system import store as mstore
  from mtsys.train import pretrain
  pretrain.ensure_root(mstore.Store.create(directory, config.proto), config, log=log)
  return directory


def run_job(job: Job) -> dict:
  """Runs `job` (in a worker process or this one): `run_evolution`'s dict, or
  `run_baselines`' {method: dict}."""
  import keras
  from mtsys.config import loader
  from mtsys.system import store as mstore
  keras.backend.clear_session()
  config = with_seeds(loader.parse(job.config_text, job.config_path), job.seed_offset,
                      job.scale_factor)
  log = lambda msg: print(f"    [{job.label}] {msg}", flush=True)
  root = mstore.Store.open(job.root_dir)
  if job.scale_factor is None:
    return run_baselines(config, job.directory, job.tasks, job.methods, lambda msg: None,
                         root_from=root)
  task_data = job.task_data
  if task_data is None:
    from mtsys.evolution import preflight
    task_data = preflight.load_tasks(config, job.tasks or [t.name for t in config.tasks])
  return run_evolution(config, job.directory, job.tasks, task_data, log, root_from=root)


def summarize(runs) -> dict:
  """Per-seed runs of one method -> Table 1's figures."""
  import numpy as np
  tasks = list(runs[0]["test"])
  averages = [float(np.mean([r["test"][t] for t in tasks])) for r in runs]
  avg, std = mean_std(averages)
  out = {
      "max_test_accuracy": max(averages), "avg_test_accuracy": avg, "std_test_accuracy": std,
      "per_seed_avg_test_accuracy": averages,
      "per_task_test_accuracy": {t: float(np.mean([r["test"][t] for r in runs])) for t in tasks},
      "params_per_task": float(np.mean([r["params_per_task"] for r in runs])),
      "train_steps": float(np.mean([r["train_steps"] for r in runs])),
      "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
  }
  if "bookkeeping_share" in runs[0]:
    out["bookkeeping_share"] = float(np.mean([r["bookkeeping_share"] for r in runs]))
    out["recording_share"] = float(np.mean([r["recording_share"] for r in runs]))
    out["wall_seconds"] = float(np.mean([r["wall_seconds"] for r in runs]))
  return out
