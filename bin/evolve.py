r"""Evolves one multitask system over a config's tasks (muNet / µ2Net), resumably.

    python bin/evolve.py --config=chars-lite --system_dir=out/chars-lite-system \
        --with_baselines --results_json=out/chars-lite-system/results.json

Rerun the same command after a crash or kill: it continues from the last completed generation.
Add tasks to the config (or pass a larger --task_iterations) and rerun to extend the system.
"""

from __future__ import annotations

import os
import sys

# The repo root replaces bin/ on the path, so bin/inspect.py cannot shadow the inspect module.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import flags

from bin import common
from mtsys.config import loader

FLAGS = flags.FLAGS
common.define_config_flags()
common.define_strategy_flags()
# --help lists the shared flags too, not only --helpfull.
flags.adopt_module_key_flags(common)
flags.DEFINE_string("system_dir", None, "The system directory (local or gs://); created if new.")
flags.DEFINE_integer("task_iterations", None,
                     "Active iterations each task should have had in total; default: the "
                     "config's. Rerun with a larger number to keep improving the system.")
flags.DEFINE_integer("seed", None, "Overrides evolution.seed.")
flags.DEFINE_list("tasks", None, "Only evolve these tasks (default: all of the config's).")
flags.DEFINE_bool("with_baselines", False,
                  "Also train muNet's baselines with an equal training budget (muNet eq. 4) "
                  "into SYSTEM_DIR/baselines and print them next to the evolved system.")
flags.DEFINE_string("remove_task", None,
                    "Remove this task from the system (its path and every component only it may "
                    "use; other tasks' predictions are unchanged) and exit.")
flags.DEFINE_list("readd_task", [],
                  "Evolve these removed tasks again, from scratch (a run whose config lists a "
                  "removed task stops otherwise).")
flags.DEFINE_string("fork_from", None,
                    "Create --system_dir as a fork of this system directory (a cheap copy sharing "
                    "its write-once components), then evolve the fork.")
flags.DEFINE_string("export_base", None,
                    "When given, export the evolved system at the end as a TF Serving model "
                    "version under EXPORT_BASE/MODEL/ (see bin/export.py) and print the commands "
                    "that serve and query it.")
flags.DEFINE_string("export_model_name", None,
                    "Model name of the export; default: the config's name.")
flags.mark_flags_as_required(["config", "system_dir"])


def _report_child(r) -> None:
  status = "kept" if r.kept else "pruned"
  parent = "-" if r.parent_score == float("-inf") else f"{r.parent_score:.3f}"
  print(f"  [{r.task} iter {r.task_iteration + 1} gen {r.generation + 1} child {r.index + 1}] "
        f"val {r.validation_accuracy:.3f} score {r.score:.3f} (parent {parent}) {status:<6} "
        f"best {r.best_score:.3f}  {r.seconds:.1f}s  {'; '.join(r.mutations)}", flush=True)


def main(argv):
  del argv
  config = loader.load(FLAGS.config)
  if FLAGS.seed is not None:
    config.proto.evolution.seed = FLAGS.seed
  from mtsys.evolution import accounting  # Heavy (TensorFlow) imports after flag parsing.
  from mtsys.evolution import loop
  from mtsys.system import store as mstore
  from mtsys.train import strategy as mstrategy
  if FLAGS.cpu_devices:
    mstrategy.split_cpu(FLAGS.cpu_devices)
  from mtsys.system import admin
  from mtsys.system import lock
  if FLAGS.remove_task:
    system = mstore.Store.open(FLAGS.system_dir)
    run_lock = lock.acquire(FLAGS.system_dir)
    report = admin.remove_task(system, FLAGS.remove_task)
    print(f"Removed task '{report.task}': {len(report.removed_components)} components deleted, "
          f"{len(report.kept_in_use)} kept because other tasks use them.")
    if report.retained_in_sources:
      # A fork cannot delete what it reads from its sources: say so (private data may remain).
      print(f"{len(report.retained_in_sources)} of its components stay readable in this fork's "
            f"component sources {system.component_sources}; remove the task there too to delete "
            "them.")
    run_lock.release()
    return
  # Bad input (unknown tasks, bad data, an incompatible system, a root that cannot be made)
  # fails before the store is touched.
  task_data, existing = loop.preflight(config, FLAGS.system_dir,
                                       FLAGS.tasks or [t.name for t in config.tasks],
                                       fork_from=FLAGS.fork_from, readd=FLAGS.readd_task)
  run_lock = lock.acquire(FLAGS.system_dir)  # held until the run ends (kill -9 frees it too)
  if FLAGS.fork_from and admin.is_fork_of(FLAGS.system_dir, FLAGS.fork_from):
    # Rerunning the same command continues the fork, as any rerun continues a run.
    print(f"{FLAGS.system_dir} is already a fork of {FLAGS.fork_from}: continuing it.")
  elif FLAGS.fork_from:
    existing = admin.fork(FLAGS.fork_from, FLAGS.system_dir)
    print(f"Forked {FLAGS.fork_from} into {FLAGS.system_dir}.")
  store = existing or mstore.Store.create(FLAGS.system_dir, config.proto)
  # We hold the run lock: nobody else writes here, so what an interrupted run left can go.
  for path in store.sweep_leftovers():
    print(f"Removed {path}, left by an interrupted run.")
  store.write_config(config.proto, removed_tasks=[
      t for t in store.removed_tasks() if t not in FLAGS.readd_task])
  strategy = mstrategy.make_strategy(common.distribution(config))
  devices = list(strategy.extended.worker_devices) if strategy.num_replicas_in_sync > 1 else []
  evolver = loop.Evolver(config, store, strategy=strategy, devices=devices,
                         on_child=_report_child, task_data=task_data)
  ev = config.proto.evolution
  print(f"Evolving '{config.name}' in {FLAGS.system_dir}: {ev.generations} generations x "
        f"{ev.children_per_generation} children per active phase, "
        f"{FLAGS.task_iterations or ev.task_iterations} task iterations, "
        f"{len(FLAGS.tasks or config.tasks)} tasks", flush=True)
  evolver.run(tasks=FLAGS.tasks, task_iterations=FLAGS.task_iterations)

  paths = store.paths()
  reports = accounting.report(paths, evolver.source.spec)
  print()
  print(f"Evolved system '{config.name}' ({len(paths)} tasks):")
  print(accounting.format_table(reports, accounting.system_params(paths, evolver.source.spec)))
  results = [{"method": "evolution", **r.to_json()} for r in reports]
  if FLAGS.with_baselines:
    from mtsys.train import baselines
    rows = baselines.run(config, os.path.join(FLAGS.system_dir, "baselines"),
                         tasks=FLAGS.tasks, strategy=strategy, root_from=store)
    print()
    print("Baselines with an equal training budget per task (muNet eq. 4):")
    print(baselines.format_table(rows))
    results += [r.to_json() for r in rows]
  if FLAGS.results_json:
    # One object per task (and method): evolution rows first, then any baselines.
    common.write_json(FLAGS.results_json, results)
    print(f"Results written to {FLAGS.results_json}")
  run_lock.release()
  if FLAGS.export_base:
    from mtsys import export
    print()
    result = export.export(FLAGS.system_dir, FLAGS.export_base,
                           FLAGS.export_model_name or config.name or "mtsys",
                           tasks=FLAGS.tasks)
    print(export.format_summary(result))


if __name__ == "__main__":
  common.run(main)
