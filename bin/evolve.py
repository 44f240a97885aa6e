r"""Evolves one multitask system over a config's tasks (muNet / µ2Net), resumably.

    python bin/evolve.py --config=chars-lite --system_dir=out/chars-lite-system \
        --with_baselines --results_json=out/chars-lite-system/results.json \
        --report_dir=out/chars-lite-report

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

FLAGS = flags.FLAGS
common.define_config_flags()
common.define_strategy_flags()
common.define_thread_flags()
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
flags.DEFINE_string("report_dir", None,
                    "When given, write an HTML report of the system at the end (summary, "
                    "graphs, plots, dumps; see bin/inspect_system.py report) to "
                    "REPORT_DIR/index.html, outside the system directory. Needs Graphviz.")
flags.mark_flags_as_required(["config", "system_dir"])


def main(argv):
  del argv
  common.apply_thread_flags()
  config = common.load_config()
  if FLAGS.seed is not None:
    config.proto.evolution.seed = FLAGS.seed
  from mtsys.jobs import evolve  # Heavy (TensorFlow) imports after flag parsing.
  options = evolve.Options(
      system_dir=FLAGS.system_dir, distribution=common.distribution(config),
      cpu_devices=FLAGS.cpu_devices, tasks=FLAGS.tasks, task_iterations=FLAGS.task_iterations,
      with_baselines=FLAGS.with_baselines, remove_task=FLAGS.remove_task,
      readd_task=FLAGS.readd_task, fork_from=FLAGS.fork_from, results_json=FLAGS.results_json,
      export_base=FLAGS.export_base, export_model_name=FLAGS.export_model_name,
      report_dir=FLAGS.report_dir)
  evolve.run(config, options, faults=common.fault_injector(), out=common.say)


if __name__ == "__main__":
  common.run(main)
