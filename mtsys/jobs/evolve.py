"""The evolution job behind `bin/evolve.py`: check, lock, clean up, evolve, report, export.

Order of a run (each step before the next; the store's protocol: `mtsys.system.store`,
`mtsys.system.recovery`):

1. Every check (`preflight.check`): config, every task's and the pretraining task's data, the root
   source, the system directory's and a fork source's compatibility, removed tasks. A failure
   here leaves the directory exactly as it was.
2. The run lock (`mtsys.system.lock`), held to the end: a second run stops at once.
3. The fork, when asked (or its continuation when the directory is that fork already).
4. Clean-up of what an interrupted run left: temporary files, manifest-less component
   directories, task removals a kill interrupted.
5. The config is stored, the root made if missing, then the active phases run; baselines, the
   export and the HTML report (`mtsys.inspect.report`) follow when asked. The report's directory
   and Graphviz are checked with step 1.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional, Sequence

from mtsys import faults as mfaults
from mtsys.config import loader
from mtsys.protos import mtsys_pb2
from mtsys.system import fileio


@dataclasses.dataclass
class Options:
  """What `bin/evolve.py`'s flags ask for (see their help texts)."""

  system_dir: str
  distribution: mtsys_pb2.DistributionConfig
  cpu_devices: int = 0
  tasks: Optional[Sequence[str]] = None
  task_iterations: Optional[int] = None
  with_baselines: bool = False
  remove_task: Optional[str] = None
  readd_task: Sequence[str] = ()
  fork_from: Optional[str] = None
  results_json: Optional[str] = None
  export_base: Optional[str] = None
  export_model_name: Optional[str] = None
  report_dir: Optional[str] = None


def _report_child(out: Callable[[str], None]):
  def report(r) -> None:
    status = "kept" if r.kept else "pruned"
    parent = "-" if r.parent_score == float("-inf") else f"{r.parent_score:.3f}"
    out(f"  [{r.task} iter {r.task_iteration + 1} gen {r.generation + 1} child {r.index + 1}] "
        f"val {r.validation_accuracy:.3f} score {r.score:.3f} (parent {parent}) {status:<6} "
        f"best {r.best_score:.3f}  {r.seconds:.1f}s  {'; '.join(r.mutations)}")
  return report


def remove_task(system_dir: str, task: str, *, faults: Optional[mfaults.Injector] = None,
                out: Callable[[str], None] = print) -> None:
  """`--remove_task`: removes `task` from the system, then from its baseline systems
  (`<system_dir>/baselines/<method>/`), each under its run lock, and says what it did.

  A rerun after a kill finishes the job: the main system then reports the task removed
  already, and the baselines are still checked and cleaned."""
  from mtsys.system import admin
  from mtsys.system import lock
  from mtsys.system import store as mstore
  system = mstore.Store.open(system_dir, faults)
  with lock.acquire(system_dir):  # held through the baselines, as a run holds it
    report = admin.sweep_then_remove(system, task, out)
    baselines = admin.remove_task_from_baselines(fileio.join(system_dir, "baselines"), task,
                                                 system.faults, log=out)
    if report.already_removed and not baselines:
      out(f"Task '{task}' was removed already; nothing to do.")
    elif report.already_removed:
      out(f"Task '{task}' was removed from the system already; finished its baselines' removal.")
    else:
      out(f"Removed task '{report.task}': {len(report.removed_components)} components deleted, "
          f"{len(report.kept_in_use)} kept because other tasks use them.")
    if report.retained_in_sources:
      # A fork cannot delete what it reads from its sources: say so (private data may remain).
      out(f"{len(report.retained_in_sources)} of its components stay readable in this fork's "
          f"component sources {system.component_sources}; remove the task there too to delete "
          "them.")
    for method, done in baselines:
      out(f"Removed task '{task}' from the {method} baseline: "
          f"{len(done.removed_components)} components deleted.")


def _check_report_dir(options: Options) -> None:
  """Fails before any write when the report could not be written at the end."""
  if options.report_dir:
    from mtsys.inspect import report
    report.check(options.report_dir,
                 [options.system_dir] + ([options.fork_from] if options.fork_from else []))


def _write_report(options: Options, out: Callable[[str], None]) -> None:
  if options.report_dir:
    from mtsys.inspect import report
    out("")
    out(f"Report: {report.write_report(options.system_dir, options.report_dir)}")


def run(config: loader.Config, options: Options, *,
        faults: Optional[mfaults.Injector] = None,
        out: Callable[[str], None] = print) -> list[dict]:
  """Runs the evolution job; returns the results rows (also written to `results_json`)."""
  faults = faults or mfaults.Injector()
  _check_report_dir(options)
  if options.remove_task:
    remove_task(options.system_dir, options.remove_task, faults=faults, out=out)
    _write_report(options, out)
    return []
  from mtsys.evolution import accounting  # Heavy (TensorFlow) imports.
  from mtsys.evolution import loop
  from mtsys.evolution import preflight
  from mtsys.system import admin
  from mtsys.system import lock
  from mtsys.system import store as mstore
  from mtsys.train import pretrain
  from mtsys.train import strategy as mstrategy
  if options.cpu_devices:
    mstrategy.split_cpu(options.cpu_devices)
  system_dir = options.system_dir
  names = list(options.tasks or [t.name for t in config.tasks])
  task_data, existing = preflight.check(config, system_dir, names, fork_from=options.fork_from,
                                        readd=options.readd_task)
  with lock.acquire(system_dir):  # held until the run ends (kill -9 frees it too)
    if options.fork_from and admin.is_fork_of(system_dir, options.fork_from):
      # Rerunning the same command continues the fork, as any rerun continues a run.
      out(f"{system_dir} is already a fork of {options.fork_from}: continuing it.")
    elif options.fork_from:
      existing = admin.fork(options.fork_from, system_dir, faults)
      out(f"Forked {options.fork_from} into {system_dir}.")
    store = existing or mstore.Store.create(system_dir, config.proto, faults=faults)
    store.faults = faults
    # We hold the run lock: nobody else writes here, so what an interrupted run left can go.
    for path in store.sweep_leftovers():
      out(f"Removed {path}, left by an interrupted run.")
    for report in admin.finish_removals(store):
      out(f"Finished removing task '{report.task}', which an interrupted run had begun.")
    store.write_config(config.proto, removed_tasks=[
        t for t in store.removed_tasks() if t not in options.readd_task])
    strategy = mstrategy.make_strategy(options.distribution)
    devices = (list(strategy.extended.worker_devices) if strategy.num_replicas_in_sync > 1
               else [])
    pretrain.ensure_root(store, config, strategy=strategy, log=out)  # pretrains if asked
    evolver = loop.Evolver(config, store, strategy=strategy, devices=devices,
                           on_child=_report_child(out), task_data=task_data, log=out)
    ev = config.proto.evolution
    out(f"Evolving '{config.name}' in {system_dir}: {ev.generations} generations x "
        f"{ev.children_per_generation} children per active phase, "
        f"{options.task_iterations or ev.task_iterations} task iterations, "
        f"{len(names)} tasks")
    evolver.run(tasks=options.tasks, task_iterations=options.task_iterations)

    paths = store.paths()
    reports = accounting.report(paths, evolver.source.spec)
    out("")
    out(f"Evolved system '{config.name}' ({len(paths)} tasks):")
    out(accounting.format_table(reports, accounting.system_params(paths, evolver.source.spec)))
    results = [{"method": "evolution", **r.to_json()} for r in reports]
    if options.with_baselines:
      from mtsys.train import baselines
      rows = baselines.run(config, os.path.join(system_dir, "baselines"), tasks=options.tasks,
                           strategy=strategy, root_from=store, faults=faults, log=out)
      out("")
      out("Baselines with an equal training budget per task (muNet eq. 4):")
      out(baselines.format_table(rows))
      results += [r.to_json() for r in rows]
    if options.results_json:
      # One object per task (and method): evolution rows first, then any baselines.
      fileio.write_json(options.results_json, results)
      out(f"Results written to {options.results_json}")
  if options.export_base:
    from mtsys import export
    out("")
    result = export.export(system_dir, options.export_base,
                           options.export_model_name or config.name or "mtsys",
                           tasks=options.tasks)
    out(export.format_summary(result))
  _write_report(options, out)
  return results

