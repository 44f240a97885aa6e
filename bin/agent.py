r"""Runs one task's agent: µ3Net's asynchronous multiagent extension of one shared system.

    python bin/agent.py --config=chars-lite --system_dir=out/agents-system --task=digits

Start one agent per task (`bin/launch_agents.py` starts them all, or writes Kubernetes / Slurm
manifests for clusters); each extends the same system through the store only. Rerun the same
command after a crash or kill, on any machine that sees the store: it resumes its task.
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
flags.adopt_module_key_flags(common)
flags.DEFINE_string("system_dir", None,
                    "The shared system directory (local; created by the first agent if new).")
flags.DEFINE_string("task", None, "The task this agent evolves (one agent per task).")
flags.DEFINE_list("tasks", None,
                  "With --task_index_env instead of --task: the agent runs "
                  "TASKS[int($TASK_INDEX_ENV)] (a scheduler's array or completion index).")
flags.DEFINE_string("task_index_env", None,
                    "Environment variable holding this agent's index into --tasks "
                    "(JOB_COMPLETION_INDEX on Kubernetes, SLURM_ARRAY_TASK_ID on Slurm).")
flags.DEFINE_enum("mode", "sync", ["sync", "async"],
                  "sync: start task-set iteration n only after every synchronised agent "
                  "finished n-1 (µ3Net's speed-up figures); async: never wait.")
flags.DEFINE_integer("task_iterations", None,
                     "Active iterations of this task in total; default: the config's.")
flags.DEFINE_integer("seed", None, "Overrides evolution.seed.")
flags.DEFINE_float("barrier_timeout_s", 3600.0,
                   "Seconds to wait at a barrier before failing with the agents still missing.")
flags.DEFINE_float("lease_ttl_s", 60.0,
                   "Lifetime of the task's lease, renewed every third of it; a dead agent's "
                   "lease is taken over after it plus the 30 s clock-skew allowance.")
flags.DEFINE_float("lease_wait_s", None,
                   "Seconds to wait for a task lease another agent holds; default: the ttl + "
                   "the clock skew + 10 s.")
flags.mark_flags_as_required(["config", "system_dir"])


def main(argv):
  del argv
  common.apply_thread_flags()
  config = common.load_config()
  if FLAGS.seed is not None:
    config.proto.evolution.seed = FLAGS.seed
  from mtsys.jobs import agent  # Heavy imports after flag parsing.
  options = agent.Options(
      system_dir=FLAGS.system_dir,
      task=agent.task_from_flags(FLAGS.task, FLAGS.tasks, FLAGS.task_index_env, os.environ),
      distribution=common.distribution(config), cpu_devices=FLAGS.cpu_devices,
      mode=FLAGS.mode, task_iterations=FLAGS.task_iterations,
      barrier_timeout_s=FLAGS.barrier_timeout_s, lease_ttl_s=FLAGS.lease_ttl_s,
      lease_wait_s=FLAGS.lease_wait_s, results_json=FLAGS.results_json)
  agent.run(config, options, faults=common.fault_injector(), out=common.say)


if __name__ == "__main__":
  common.run(main)
