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

from mtsys import data as mdata
from mtsys import errors
from mtsys import faults as mfaults
from mtsys.config import hparams as hp
from mtsys.config import loader
from mtsys.protos import mtsys_pb2
from mtsys.system import assembly
from mtsys.system import compat
from mtsys.system import lock as mlock
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
  # Replicas trained (the row's accuracies are the best one's on validation), and the first
  # replica's test accuracy: the single-replica figure.
  replicas: int = 1
  single_replica_test_accuracy: float = 0.0

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def plan(method: str, store: mstore.Store, config: loader.Config, task: mtsys_pb2.TaskSpec,
         root_specs: Sequence[mtsys_pb2.ComponentSpec], adapter_dim: int,
         seed: int) -> list[assembly.PlannedComponent]:
  """The components of `method`'s path for `task`, new ones trainable (the head from an
  imported root's head template, when the root has one)."""
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
  h_spec, h_weights = mroot.new_head(task, arch.hidden_size, tokens, access,
                                     mroot.head_template(store, config.proto.root))
  planned.append(assembly.PlannedComponent(h_spec, h_weights, None, trainable=True))
  return planned


def run(config: loader.Config, output_dir: str, *, methods: Optional[Sequence[str]] = None,
        tasks: Optional[Sequence[str]] = None, strategy: Optional[tf.distribute.Strategy] = None,
        verbose: int = 0, log: Callable[[str], None] = print,
        root_from: Optional[mstore.Store] = None,
        faults: Optional[mfaults.Injector] = None) -> list[BaselineResult]:
  """Trains every requested baseline on every requested task; returns one result per pair.

  Every method starts from the same root: `root_from`'s (an evolved system) when given and
  present there, else the config's random or pretrained root (pretrained once per process).

  Everything is checked before the first write: methods, every task's data, the root's source
  and, for method systems that exist already, their compatibility with `config`.

  Resumable: a (method, task) whose path is stored with this budget's steps is not trained again
  (its row comes from the stored path), so a rerun after a kill continues where it stopped. A
  task's components that no path uses (a commit a kill interrupted, or a path trained with
  another budget and replaced) are deleted before and after training it.
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
  directories = {m: f"{output_dir.rstrip('/')}/{m}" for m in methods}
  for directory in directories.values():
    try:
      compat.check_compatible(mstore.Store.open(directory).read_state().config, config)
    except mstore.SystemNotFoundError:
      pass
  budget = trainer.Budget(bl.epochs, bl.max_batches_per_epoch, bl.batch_size)
  hparams = hp.defaults(config.search_space)
  if bl.learning_rate:
    hparams["learning_rate"] = float(bl.learning_rate)
  seed = int(bl.seed)
  faults = faults or mfaults.Injector()

  results = []
  for method in methods:
    method_hparams = dict(hparams)
    if method in bl.method_learning_rate:
      method_hparams["learning_rate"] = float(bl.method_learning_rate[method])
    with mlock.acquire(directories[method]):
      results.extend(_run_method(method, directories[method], config, task_specs, task_data,
                                 budget, method_hparams, seed, strategy, verbose, log,
                                 root_from, faults))
    if root_from is None:  # the first method made the root: the others copy it
      root_from = mstore.Store.open(directories[method])
  return results


def _run_method(method, directory, config, task_specs, task_data, budget, hparams, seed,
                strategy, verbose, log, root_from, faults) -> list[BaselineResult]:
  """One method's system: made or continued (under its run lock), every task trained once."""
  bl, root = config.proto.baselines, config.proto.root
  with faults.phase_of(mfaults.BASELINES):
    store = mstore.Store.create(directory, config.proto, faults=faults)
    for path in store.sweep_leftovers():  # we hold the lock: an interrupted run's leftovers
      log(f"Removed {path}, left by an interrupted run.")
    store.write_config(config.proto)
  root_specs = pretrain.ensure_root(store, config, root_from=root_from, strategy=strategy,
                                    log=log)
  method_rows = []
  replicas = replica_count(config)
  # Replicas (and tasks with as many classes) share a structure: each reuses the compiled model
  # of the one before, which trains exactly like a new one (tests/train/test_trainer_reuse.py)
  # and saves the seconds of building and tracing it.
  cache = trainer.ModelCache()
  for i, task in enumerate(task_specs):
    data = task_data[task.name]
    steps = replicas * budget.epochs * budget.steps_per_epoch(data.sizes["train"])
    stored = store.read_path(task.name)
    if (stored is not None and stored.author == f"baselines/{method}"
        and stored.metrics.train_steps == steps
        and stored.hparams["learning_rate"].number == hparams["learning_rate"]):
      log(f"[{method}] task {i + 1}/{len(task_specs)} '{task.name}': trained already")
      method_rows.append(_stored_row(store, method, stored))
      continue
    log(f"[{method}] task {i + 1}/{len(task_specs)} '{task.name}': training {replicas} "
        f"replica(s) x {budget.epochs} epochs x {budget.steps_per_epoch(data.sizes['train'])}"
        f" batches of {budget.batch_size}")
    with faults.phase_of(mfaults.BASELINES):
      _drop_unused(store, task.name)
    trained = []  # (planned, result) per replica
    for r in range(replicas):
      planned = plan(method, store, config, task, root_specs, bl.adapter_dim, seed + 7919 * r)
      trained.append((planned, trainer.train_path(
          planned, data, hparams, budget, image_size=root.image_size, channels=root.channels,
          strategy=strategy, seed=seed + r, evaluate_test=True, verbose=verbose,
          cache=cache)))
    # The best replica on validation (its best epoch, kept by train_path); ties: the first.
    planned, result = max(trained, key=lambda pr: pr[1].validation_accuracy)
    metrics = mtsys_pb2.PathMetrics(
        validation_accuracy=result.validation_accuracy, test_accuracy=result.test_accuracy,
        total_params=sum(p.spec.param_count for p in planned),
        flops=sum(p.spec.flops for p in planned),
        train_steps=sum(r.total_steps for _, r in trained),
        train_seconds=sum(r.train_seconds for _, r in trained),
        replica_test_accuracy=[r.test_accuracy for _, r in trained])
    with faults.phase_of(mfaults.BASELINES):
      path = mpaths.commit(
          store, task.name, planned,
          mpaths.Trained(result.weights, result.optimizer_slots, result.best_steps),
          path_id=f"{method}.{task.name}", hparams=hparams, metrics=metrics,
          score=result.validation_accuracy, author=f"baselines/{method}",
          class_names=data.class_names)
      _drop_unused(store, task.name)  # a replaced path's components
    log(f"[{method}] '{task.name}': validation {result.validation_accuracy:.4f}, "
        f"test {result.test_accuracy:.4f} (best of {replicas}), {metrics.train_seconds:.1f}s")
    method_rows.append(_stored_row(store, method, path))
  system_params = sum(s.param_count for s in root_specs if method != "full_finetune")
  system_params += sum(r.added_params for r in method_rows)
  for r in method_rows:
    r.params_per_task = system_params / len(method_rows)
  return method_rows


def replica_count(config: loader.Config) -> int:
  """Replicas per baseline task: `baselines.replicas`, by default the evolution's children per
  generation (muNet eq. 4)."""
  bl, ev = config.proto.baselines, config.proto.evolution
  return max(1, bl.replicas or ev.children_per_generation)


def _stored_row(store: mstore.Store, method: str, path: mtsys_pb2.PathSpec) -> BaselineResult:
  """The result row of a stored baseline path (params_per_task filled in by the caller)."""
  m = path.metrics
  added = sum(store.read_component_spec(c).param_count for c in path.trained_component_ids)
  replicas = list(m.replica_test_accuracy) or [m.test_accuracy]
  return BaselineResult(
      task=path.task, method=method, test_accuracy=m.test_accuracy,
      validation_accuracy=m.validation_accuracy, params_per_task=0.0,
      path_params=m.total_params, added_params=added, train_steps=m.train_steps,
      train_seconds=m.train_seconds, replicas=len(replicas),
      single_replica_test_accuracy=replicas[0])


def _drop_unused(store: mstore.Store, task: str) -> None:
  """Deletes the components `task` created that no stored path uses."""
  in_use = mstore.component_ids_of(store.paths().values())
  for cid in store.component_ids():
    if cid not in in_use and store.read_component_spec(cid).created_by_task == task:
      store.delete_component(cid)


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
