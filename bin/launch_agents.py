r"""Starts one agent (bin/agent.py) per task of a system and watches them, or writes the cluster
manifests that start them on a scheduler.

    python bin/launch_agents.py --config=chars-lite --system_dir=out/chars-lite-agents

Each agent runs on its own share of this machine's cores (and of --gpus), logs to
LOG_DIR/<task>.log (--log_dir, default agent_logs) and is restarted when it crashes; a progress
line per agent is printed every --refresh_s seconds; Ctrl-C stops them all. Exit status: 0 when
every agent finished, 1 when one failed, 2 on bad input, 128 + N when stopped by signal N.

    python bin/launch_agents.py --config=chars-lite --system_dir=gs://BUCKET/system \
        --emit=k8s --image=IMAGE --cpus_per_agent=4 --emit_output=agents.yaml
    python bin/launch_agents.py --config=chars-lite --system_dir=gs://BUCKET/system \
        --emit=slurm --cpus_per_agent=4 --emit_output=agents.sbatch

write a Kubernetes Indexed Job / a Slurm array script instead, one task per index.
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
flags.DEFINE_string(
    "config", None,
    f"A SystemConfig text proto file, or the name of a shipped config {loader.shipped_names()}.")
flags.DEFINE_string(
    "root_checkpoint", None,
    "Passed to the agents: replaces the config's root.checkpoint (a root directory made by "
    "bin/import_root.py, or a checkpoint imported on the fly); gs:// for --emit=k8s.")
flags.DEFINE_string("system_dir", None,
                    "The system directory the agents share (local, or gs:// for --emit); the "
                    "agents create it if new.")
flags.DEFINE_list("tasks", None, "Start agents for these tasks only (default: all of the "
                  "config's), one agent per task.")
flags.DEFINE_enum("mode", None, ["sync", "async"],
                  "Passed to the agents: synchronised task-set iterations (their default) or "
                  "fully asynchronous.")
flags.DEFINE_integer("task_iterations", None, "Passed to the agents: task iterations per task; "
                     "default: the config's.")
flags.DEFINE_float("barrier_timeout_s", None,
                   "Passed to the agents: how long a synchronised agent waits for the others.")
flags.DEFINE_list("gpus", [], "GPUs (CUDA_VISIBLE_DEVICES indices) to share out among the local "
                  "agents, e.g. 0,1,2,3; default: the environment's setting, unchanged.")
# --log_dir is absl.logging's flag (which writes no files unless asked): reused, not redefined,
# as the directory of the agents' logs (LOG_DIR/<task>.log; Slurm: LOG_DIR/<job>-<index>.log).
FLAGS.set_default("log_dir", "agent_logs")
FLAGS["log_dir"].help = ("Directory of the agents' logs: <task>.log for local agents, "
                         "<job>-<index>.log in a Slurm script.")
flags.declare_key_flag("log_dir")
flags.DEFINE_float("refresh_s", 10.0, "Seconds between two progress displays.")
flags.DEFINE_integer("max_restarts", 3, "Restarts of a crashed agent (any exit status but 0 "
                     "and 2, or a signal) before it counts as failed; exit status 2 (bad input) "
                     "is never retried.")
flags.DEFINE_float("restart_delay_s", 2.0, "Seconds to wait before restarting a crashed agent.")
flags.DEFINE_float("stop_grace_s", 30.0, "On Ctrl-C / SIGTERM: seconds the agents get to stop "
                   "after SIGTERM before SIGKILL (a second Ctrl-C kills at once).")
flags.DEFINE_string("emit", None, "Write, rather than run, the manifest that starts the agents "
                    "on a cluster, one task per index: k8s (a Kubernetes Indexed Job) or slurm "
                    "(a Slurm array script). Needs a gs:// --system_dir.")
flags.DEFINE_string("emit_output", None, "Where --emit writes the manifest; default: stdout.")
flags.DEFINE_string("image", None, "--emit=k8s: the container image, with mtsys installed and "
                    "bin/agent.py in its working directory.")
flags.DEFINE_string("job_name", None, "--emit: the job's name; default: mtsys-<config name>.")
flags.DEFINE_integer("cpus_per_agent", 1, "--emit: CPUs per agent (pod request and limit, "
                     "--cpus-per-task, and the agent's TensorFlow threads).")
flags.DEFINE_string("agent_command", None,
                    "--emit: the command that starts bin/agent.py on the cluster; default: "
                    "'python bin/agent.py' (k8s, in the image's working directory), this "
                    "interpreter and checkout (slurm: nodes sharing this filesystem).")
flags.mark_flags_as_required(["config", "system_dir"])


def main(argv):
  del argv
  config = loader.load(FLAGS.config, root_checkpoint=FLAGS.root_checkpoint or "")
  from mtsys.jobs import launch_agents
  options = launch_agents.Options(
      config=FLAGS.config, system_dir=FLAGS.system_dir, tasks=FLAGS.tasks, mode=FLAGS.mode,
      task_iterations=FLAGS.task_iterations, barrier_timeout_s=FLAGS.barrier_timeout_s,
      gpus=FLAGS.gpus, log_dir=FLAGS.log_dir, refresh_s=FLAGS.refresh_s,
      max_restarts=FLAGS.max_restarts, restart_delay_s=FLAGS.restart_delay_s,
      stop_grace_s=FLAGS.stop_grace_s, emit=FLAGS.emit, emit_output=FLAGS.emit_output,
      image=FLAGS.image, job_name=FLAGS.job_name, cpus_per_agent=FLAGS.cpus_per_agent,
      agent_command=FLAGS.agent_command, root_checkpoint=FLAGS.root_checkpoint)
  return launch_agents.run(config, options, out=common.say)


if __name__ == "__main__":
  common.run(main)
