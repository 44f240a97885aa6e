"""muNet's baselines, trained through the same engine as evolved paths (muNet section 3).

- full_finetune: a trainable copy of the whole root plus a head, per task.
- multi_head: the root frozen and shared; only each task's head trains.
- residual_adapters: the root frozen and shared; a residual adapter after every transformer block
  and the head train per task.

Each method grows its own system directory under the output directory, so the baseline systems
can be inspected, exported and served like evolved ones.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from mtsys import errors
from mtsys import data as mdata
from mtsys.config import hparams as hp
from mtsys.config import loader
from mtsys.protos import mtsys_pb2
from mtsys.system import assembly
from mtsys.system import paths as mpaths
from mtsys.system import root as mroot
from mtsys.system import store as mstore
from mtsys.train import pretrain
from mtsys.train import trainer

METHODS = ("full_finetune", "multi_head", "residual_adapters")


@dataclasses.dataclass
class BaselineResult:
  task: str
  method: str
  test_accuracy: float
  validation_accuracy: float
  # Parameters the method's whole system holds, divided by its number of tasks (muNet Table 1).
  params_per_task: float
  # Parameters this task's path uses, and the ones it added to the system.
  path_params: int
  added_params: int
  train_steps: int
  train_seconds: float

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def plan(method: str, store: mstore.Store, config: loader.Config, task: mtsys_pb2.TaskSpec,
         root_specs: Sequence[mtsys_pb2.ComponentSpec], adapter_dim: int,
         seed: int) -> list[assembly.PlannedComponent]:
  """The components of `method`'s path for `task`, new ones trainable."""
  access = mroot.task_access(task)
  arch = config.arch
  tokens = (config.proto.root.image_size // arch.patch_size) ** 2 + 1
  planned = []
  for spec in root_specs:
    weights = store.read_weights(spec)
    if method == "full_finetune":
      planned.append(mpaths.clone(spec, weights, None, task.name, access))
    else:
      planned.append(assembly.PlannedComponent(spec, weights, None, trainable=False))
    if method == "residual_adapters" and spec.kind == "transformer_block":
      a_spec, a_weights = mroot.new_adapter(task.name, arch.hidden_size, adapter_dim, tokens,
                                            access, seed=seed + len(planned))
      planned.append(assembly.PlannedComponent(a_spec, a_weights, None, trainable=True))
  h_spec, h_weights = mroot.new_head(task, arch.hidden_size, tokens, access)
  planned.append(assembly.PlannedComponent(h_spec, h_weights, None, trainable=True))
  return planned


def run(config: loader.Config, output_dir: str, *, methods: Optional[Sequence[str]] = None,
        tasks: Optional[Sequence[str]] = None, strategy: Optional[tf.distribute.Strategy] = None,
        verbose: int = 0, log: Callable[[str], None] = print,
        root_from: Optional[mstore.Store] = None) -> list[BaselineResult]:
  """Trains every requested baseline on every requested task; returns one result per pair.

  Every method starts from the same root: `root_from`'s (an evolved system) when given and
  present there, else the config's random or pretrained root (pretrained once per process).

  Task data is loaded and checked for all tasks before any training starts, so bad data fails
  fast.
  """
  bl = config.proto.baselines
  methods = list(methods or bl.methods)
  for m in methods:
    if m not in METHODS:
      raise errors.ConfigError(f"Unknown baseline method '{m}'; expected one of {list(METHODS)}.")
  task_specs = [config.task(t) for t in tasks] if tasks else list(config.tasks)
  root = config.proto.root
  for t in task_specs:
    mdata.check_image_size(t.name, root.image_size, config.arch.patch_size)
  task_data = {t.name: mdata.load_task(t) for t in task_specs}
  pretrain.check_root_source(config, [root_from])  # before the first store is created
  budget = trainer.Budget(bl.epochs, bl.max_batches_per_epoch, bl.batch_size)
  hparams = hp.defaults(config.search_space)
  seed = int(bl.seed)

  results = []
  for method in methods:
    store = mstore.Store.create(f"{output_dir.rstrip('/')}/{method}", config.proto)
    root_specs = pretrain.ensure_root(store, config, root_from=root_from, strategy=strategy,
                                        log=log)
    method_rows = []
    for i, task in enumerate(task_specs):
      log(f"[{method}] task {i + 1}/{len(task_specs)} '{task.name}': training "
          f"{budget.epochs} epochs x {budget.steps_per_epoch(task_data[task.name].sizes['train'])}"
          f" batches of {budget.batch_size}")
      planned = plan(method, store, config, task, root_specs, bl.adapter_dim, seed)
      result = trainer.train_path(planned, task_data[task.name], hparams, budget,
                                  image_size=root.image_size, channels=root.channels,
                                  strategy=strategy, seed=seed, evaluate_test=True,
                                  verbose=verbose)
      path_params = sum(p.spec.param_count for p in planned)
      added = sum(p.spec.param_count for p in planned if p.trainable)
      metrics = mtsys_pb2.PathMetrics(
          validation_accuracy=result.validation_accuracy, test_accuracy=result.test_accuracy,
          total_params=path_params, flops=sum(p.spec.flops for p in planned),
          train_steps=result.total_steps, train_seconds=result.train_seconds)
      mpaths.commit(store, task.name, planned,
                    mpaths.Trained(result.weights, result.optimizer_slots, result.best_steps),
                    path_id=f"{method}.{task.name}", hparams=hparams, metrics=metrics,
                    score=result.validation_accuracy, author=f"baselines/{method}",
                    class_names=task_data[task.name].class_names)
      log(f"[{method}] '{task.name}': validation {result.validation_accuracy:.4f}, "
          f"test {result.test_accuracy:.4f}, {result.train_seconds:.1f}s")
      method_rows.append(BaselineResult(
          task=task.name, method=method, test_accuracy=result.test_accuracy,
          validation_accuracy=result.validation_accuracy, params_per_task=0.0,
          path_params=path_params, added_params=added, train_steps=result.total_steps,
          train_seconds=result.train_seconds))
    system_params = sum(s.param_count for s in root_specs if method != "full_finetune")
    system_params += sum(r.added_params for r in method_rows)
    for r in method_rows:
      r.params_per_task = system_params / len(method_rows)
    results.extend(method_rows)
  return results


def format_table(results: Sequence[BaselineResult]) -> str:
  """Per-task test accuracy by method, then average, parameters per task and training time."""
  methods = list(dict.fromkeys(r.method for r in results))
  tasks = list(dict.fromkeys(r.task for r in results))
  by = {(r.task, r.method): r for r in results}
  width = max([len("params/task")] + [len(t) for t in tasks]) + 2
  col = max(12, *(len(m) + 2 for m in methods))
  lines = ["test accuracy".ljust(width) + "".join(m.rjust(col) for m in methods)]
  for t in tasks:
    lines.append(t.ljust(width) + "".join(
        (f"{by[(t, m)].test_accuracy:.4f}" if (t, m) in by else "-").rjust(col) for m in methods))
  def row(label, fn):
    cells = []
    for m in methods:
      rs = [r for r in results if r.method == m]
      cells.append(fn(rs).rjust(col))
    return label.ljust(width) + "".join(cells)
  lines.append("-" * (width + col * len(methods)))
  lines.append(row("average", lambda rs: f"{np.mean([r.test_accuracy for r in rs]):.4f}"))
  lines.append(row("params/task", lambda rs: f"{rs[0].params_per_task:,.0f}"))
  lines.append(row("train time (s)", lambda rs: f"{sum(r.train_seconds for r in rs):.1f}"))
  return "\n".join(lines)
