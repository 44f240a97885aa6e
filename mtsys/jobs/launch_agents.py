"""The agent launcher behind `bin/launch_agents.py` (issue #12): one agent per task.

Agents (`bin/agent.py`) extend one system through the shared store and through nothing else, so
the launcher is a supervisor, not a coordinator: it starts them, shows their progress, restarts
the ones that crash and stops them all; no agent depends on it.

Local mode (`run`): one process per task on this machine, supervised by
`mtsys.jobs.agent_supervisor` (pinning, restarts, stopping, the progress display). Each agent
gets a contiguous share of the launcher's cores (sizes differ by at most one; with more agents
than cores one core each, wrapping) and TensorFlow's intra-op threads are set to that share
(inter-op to 1); `gpus` are shared out the same way via CUDA_VISIBLE_DEVICES (without `gpus` the
environment's setting is left as it is). SIGINT / SIGTERM handlers are installed by `run` and
restored when it returns.

Cluster mode (`agent_manifests.emit`): writes a Kubernetes Indexed Job or a Slurm array
script running the same agents against a gs:// system directory.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Callable, Mapping, Optional, Sequence

from mtsys import errors
from mtsys.config import loader
from mtsys.jobs import agent_manifests
from mtsys.jobs import agent_supervisor

EMIT_TARGETS = ("k8s", "slurm")
MODES = ("sync", "async")

# Shared with the manifests; the agent imports task_for_index from here.
LaunchError = agent_manifests.LaunchError
agent_flags = agent_manifests.agent_flags
task_for_index = agent_manifests.task_for_index
AGENT_PROGRAM = agent_manifests.AGENT_PROGRAM


@dataclasses.dataclass
class Options:
  """What `bin/launch_agents.py`'s flags ask for (see their help texts)."""

  config: str  # as the user gave it (path or shipped name): passed on to the agents
  system_dir: str
  tasks: Optional[Sequence[str]] = None
  mode: Optional[str] = None
  task_iterations: Optional[int] = None
  barrier_timeout_s: Optional[float] = None
  gpus: Sequence[str] = ()
  log_dir: str = "agent_logs"
  refresh_s: float = 10.0
  max_restarts: int = 3
  restart_delay_s: float = 2.0
  stop_grace_s: float = 30.0
  emit: Optional[str] = None
  emit_output: Optional[str] = None
  image: Optional[str] = None
  job_name: Optional[str] = None
  cpus_per_agent: int = 1
  agent_command: Optional[str] = None
  # Passed to the agents (the config they load is the one --config names, with this root).
  root_checkpoint: Optional[str] = None


def _share(items: Sequence, count: int, i: int) -> tuple:
  if not items:
    return ()
  if len(items) < count:
    return (items[i % len(items)],)
  base, extra = divmod(len(items), count)
  start = i * base + min(i, extra)
  return tuple(items[start:start + base + (1 if i < extra else 0)])


def plan(tasks: Sequence[str], cpus: Sequence[int],
         gpus: Sequence[str] = ()) -> list[agent_supervisor.Slot]:
  """Each task's contiguous share of `cpus` (sorted) and `gpus` (in the given order)."""
  cpus = sorted(cpus)
  return [agent_supervisor.Slot(task, _share(cpus, len(tasks), i),
                                _share(list(gpus), len(tasks), i))
          for i, task in enumerate(tasks)]


def default_agent_argv(task: str, flags: Sequence[str]) -> list[str]:
  """`python bin/agent.py FLAGS` with this interpreter (tests inject a fake agent instead)."""
  del task
  return [sys.executable, AGENT_PROGRAM, *flags]


def _at_least(flag: str, value, minimum, expected: str) -> None:
  if value is not None and not value >= minimum:
    raise LaunchError(f"Invalid --{flag}={value}; expected {expected}.")


def check(config: loader.Config, options: Options) -> list[str]:
  """Every check, before anything starts or is written; returns the agents' tasks in order."""
  known = [t.name for t in config.tasks]
  tasks = list(options.tasks or known)
  if not tasks:
    raise LaunchError(f"Config '{config.name}' defines no tasks; expected at least one.")
  for i, task in enumerate(tasks):
    if task not in known:
      raise errors.UnknownTaskError(
          f"Unknown task '{task}' in --tasks; expected tasks of config '{config.name}': {known}.")
    if task in tasks[:i]:
      raise LaunchError(f"Task '{task}' is listed twice in --tasks={','.join(tasks)}; expected "
                        "each task once (one agent per task).")
  if options.emit and options.emit not in EMIT_TARGETS:
    raise LaunchError(f"Unknown --emit value '{options.emit}'; expected one of "
                      f"{list(EMIT_TARGETS)}, or no --emit to run the agents on this machine.")
  if options.mode is not None and options.mode not in MODES:
    raise LaunchError(f"Unknown --mode '{options.mode}'; expected one of {list(MODES)}.")
  for flag in ("task_iterations", "cpus_per_agent"):
    _at_least(flag, getattr(options, flag), 1, "a positive integer")
  _at_least("max_restarts", options.max_restarts, 0, "0 or more")
  for flag in ("barrier_timeout_s", "refresh_s"):
    _at_least(flag, getattr(options, flag), 1e-3, "a positive number of seconds")
  for flag in ("stop_grace_s", "restart_delay_s"):
    _at_least(flag, getattr(options, flag), 0, "0 or more seconds")
  if options.job_name is not None:
    agent_manifests.check_job_name(options.job_name)
  if options.emit:
    agent_manifests.check(options)
  else:
    for flag in ("image", "emit_output", "job_name"):
      if getattr(options, flag):
        raise LaunchError(f"--{flag}={getattr(options, flag)} only applies with --emit; "
                          f"expected --emit={'|'.join(EMIT_TARGETS)} or no --{flag}.")
    gpus = list(options.gpus)
    if any(not g.strip() for g in gpus) or len(set(gpus)) != len(gpus):
      raise LaunchError(f"Invalid --gpus={','.join(gpus)}; expected distinct device indices "
                        "(or UUIDs) as CUDA_VISIBLE_DEVICES lists them, e.g. 0,1,2,3.")
    if os.path.exists(options.log_dir) and not os.path.isdir(options.log_dir):
      raise LaunchError(f"--log_dir={options.log_dir} is a file; expected a directory.")
  return tasks


def run(config: loader.Config, options: Options, *, out: Callable[[str], None] = print,
        agent_argv: Callable[[str, Sequence[str]], list[str]] = default_agent_argv,
        cpus: Optional[Sequence[int]] = None, environ: Optional[Mapping[str, str]] = None,
        handle_signals: bool = True) -> int:
  """Runs the launcher; returns its exit status: 0 when every agent finished (or the manifest
  was written), 1 when one failed, 128 + the signal's number when stopped by one.

  Args:
    agent_argv: (task, flags) -> the command that starts an agent with those flags.
    cpus: the cores to share out; default: this process's affinity.
    environ: the agents' base environment; default: this process's.
    handle_signals: stop the agents on SIGINT / SIGTERM (handlers restored on return).
  """
  tasks = check(config, options)
  if options.emit:
    agent_manifests.emit(options, config.name, tasks, out)
    return 0
  if agent_argv is default_agent_argv and not os.path.isfile(AGENT_PROGRAM):
    raise LaunchError(f"The agent program {AGENT_PROGRAM} does not exist; expected mtsys's "
                      "bin/agent.py next to this library.")
  if cpus is None:  # no affinity outside Linux: every core, unpinned
    cpus = (os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity")
            else range(os.cpu_count() or 1))
  slots = plan(tasks, cpus, options.gpus)
  os.makedirs(options.log_dir, exist_ok=True)
  with agent_supervisor.stop_requests(handle_signals) as requests:
    return agent_supervisor.Supervisor(
        config, options, slots, out=out, agent_argv=agent_argv,
        environ=dict(os.environ if environ is None else environ), stop_requests=requests).run()
