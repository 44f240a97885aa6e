"""Cluster manifests that start one mtsys agent per task on a scheduler the user already has.

`bin/launch_agents.py --emit=k8s|slurm` writes these instead of starting processes. Both
schedulers start N copies of ONE command that differ only in an index the scheduler puts in the
environment (`JOB_COMPLETION_INDEX` in a Kubernetes Indexed Job, `SLURM_ARRAY_TASK_ID` in a
Slurm array job). The command carries every task (`--tasks=a,b,c --task_index_env=VAR`) and
the agent picks its own with `task_for_index`, so a manifest holds one command however many
tasks there are, and index i always runs task i.

Retries follow the agent's exit-status contract: 0 is done, 2 is bad input (an unknown task, an
incompatible system: retrying cannot help), anything else is a crash worth retrying.
- Kubernetes: `restartPolicy: Never` with `backoffLimitPerIndex` (each index retried on its own,
  so one crashing agent does not use up the others' retries) and a `podFailurePolicy` that fails
  an index at once on exit code 2. Both need Kubernetes 1.29 or newer (GA in 1.33).
- Slurm has no per-exit-code retry: the script retries the agent in a shell loop.

`parallelism` equals `completions`: in synchronised mode every agent waits at the store's
barrier for all the others, so they must be able to run at the same time.

The agents need a gs:// system directory (`check`), or for Slurm an absolute path on a
filesystem the nodes share (NFS, Lustre: POSIX hard links give the store its exclusive
creates): they run on other machines, which do not share the launcher's disk. Agents on gs://
need the object store's create-only precondition (`ifGenerationMatch=0`), not implemented yet:
such an agent refuses to start, before any write, saying so (`mtsys.jobs.agent`). A local --config file is passed as an absolute path to Slurm (whose
nodes usually share the login node's filesystem) and refused for Kubernetes. The YAML is
written with PyYAML when it is installed (it comes with tf-models-official), else as JSON, which
is valid YAML too.

`agent_flags` (the agent's command line) and `task_for_index` (the agent's side of the index)
live here because local agents and manifests share them; `launch_agents` re-exports both.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from mtsys import errors
from mtsys.config import loader

if TYPE_CHECKING:
  from mtsys.jobs.launch_agents import Options

K8S_INDEX_ENV = "JOB_COMPLETION_INDEX"
SLURM_INDEX_ENV = "SLURM_ARRAY_TASK_ID"
CONTAINER_NAME = "agent"
# Pods of an Indexed Job are named <job>-<index>-<random>; 52 leaves room within DNS's 63.
_MAX_JOB_NAME = 52
_JOB_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENT_PROGRAM = os.path.join(_REPO, "bin", "agent.py")


class LaunchError(errors.UserError, ValueError):
  """Launcher input that cannot work; the message names the value and what was expected."""


def task_for_index(tasks: Sequence[str], environ: Mapping[str, str], var: str) -> str:
  """The task of a scheduler-started agent: `tasks[int(environ[var])]`.

  Raises LaunchError naming the variable and the valid range when it is unset, not an integer
  or out of range (a UserError: the agent exits 2 and the scheduler does not retry)."""
  if not tasks:
    raise LaunchError("--tasks is empty; expected the comma-separated tasks of all agents.")
  expected = (f"expected an index into --tasks, 0-{len(tasks) - 1} ({len(tasks)} tasks), as "
              f"the scheduler sets it ({K8S_INDEX_ENV} in a Kubernetes Indexed "
              f"Job, {SLURM_INDEX_ENV} in a Slurm array)")
  raw = environ.get(var)
  if raw is None:
    raise LaunchError(f"Environment variable {var} is not set; {expected}.")
  try:
    index = int(raw.strip())
  except ValueError:
    raise LaunchError(f"Environment variable {var}={raw!r} is not an integer; {expected}."
                      ) from None
  if not 0 <= index < len(tasks):
    raise LaunchError(f"Environment variable {var}={index} is out of range; {expected}.")
  return tasks[index]


def agent_flags(options: Options, task_flags: Sequence[str], config: str = "") -> list[str]:
  """The agent's flags: config, system, `task_flags`, then the optional pass-throughs."""
  flags = [f"--config={config or options.config}", f"--system_dir={options.system_dir}",
           *task_flags]
  if options.root_checkpoint:
    flags.append(f"--root_checkpoint={_checkpoint_for_agents(options)}")
  if options.mode:
    flags.append(f"--mode={options.mode}")
  if options.task_iterations is not None:
    flags.append(f"--task_iterations={options.task_iterations}")
  if options.barrier_timeout_s is not None:
    flags.append(f"--barrier_timeout_s={options.barrier_timeout_s:g}")
  return flags


def default_job_name(config_name: str) -> str:
  """A valid job name from a config's name ('chars-lite' -> 'mtsys-chars-lite')."""
  stem = re.sub(r"[^a-z0-9]+", "-", config_name.lower()).strip("-")
  return ("mtsys-" + stem)[:_MAX_JOB_NAME].rstrip("-") if stem else "mtsys-agents"


def check_job_name(name: str) -> str:
  """Returns `name` if Kubernetes and Slurm both accept it as a job name, else raises."""
  if len(name) > _MAX_JOB_NAME or not _JOB_NAME_RE.match(name):
    raise LaunchError(
        f"Invalid --job_name '{name}': expected 1-{_MAX_JOB_NAME} lowercase letters, digits and "
        "'-', starting and ending with a letter or digit (a Kubernetes DNS label).")
  return name


def _dump_yaml(doc: dict) -> str:
  try:
    import yaml
  except ImportError:
    return json.dumps(doc, indent=2) + "\n"
  return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def kubernetes_job(*, name: str, image: str, argv: Sequence[str], num_tasks: int, cpus: int,
                   max_restarts: int, header: Sequence[str] = ()) -> str:
  """A batch/v1 Indexed Job running `argv` once per task index (0 .. num_tasks-1).

  Args:
    name: the Job's name (`check_job_name`).
    image: the container image; `argv` runs in its working directory.
    argv: the agent's command line, with `--task_index_env=JOB_COMPLETION_INDEX`.
    num_tasks: completions and parallelism: one pod per task, all at once.
    cpus: CPU request and limit of each pod.
    max_restarts: retries per index (`backoffLimitPerIndex`).
    header: comment lines put above the manifest (without "# ").
  """
  labels = {"app.kubernetes.io/name": "mtsys-agent", "app.kubernetes.io/instance": name}
  doc = {
      "apiVersion": "batch/v1",
      "kind": "Job",
      "metadata": {"name": name, "labels": labels},
      "spec": {
          "completionMode": "Indexed",
          "completions": num_tasks,
          "parallelism": num_tasks,
          "backoffLimitPerIndex": max_restarts,
          "podFailurePolicy": {"rules": [{
              "action": "FailIndex",
              "onExitCodes": {"containerName": CONTAINER_NAME, "operator": "In", "values": [2]},
          }]},
          "template": {
              "metadata": {"labels": dict(labels)},  # a copy: no YAML anchor
              "spec": {
                  "restartPolicy": "Never",
                  "containers": [{
                      "name": CONTAINER_NAME,
                      "image": image,
                      "command": list(argv),
                      "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
                      "resources": {"requests": {"cpu": str(cpus)},
                                    "limits": {"cpu": str(cpus)}},
                  }],
              },
          },
      },
  }
  return "".join(f"# {line}\n" for line in header) + _dump_yaml(doc)


def slurm_script(*, name: str, argv: Sequence[str], num_tasks: int, cpus: int,
                 max_restarts: int, log_dir: str, restart_delay_s: float,
                 header: Sequence[str] = ()) -> str:
  """A Slurm array batch script running `argv` once per array index (0 .. num_tasks-1).

  `argv` carries `--task_index_env=SLURM_ARRAY_TASK_ID`; each array task logs to
  `<log_dir>/<name>-<index>.log` (Slurm does not create `log_dir`). The agent is retried up to
  `max_restarts` times unless it exits 0 or 2.
  """
  delay = f"{restart_delay_s:g}"
  lines = ["#!/bin/bash"]
  lines += [f"# {line}" for line in header]
  lines += [
      f"#SBATCH --job-name={name}",
      f"#SBATCH --array=0-{num_tasks - 1}",
      "#SBATCH --ntasks=1",
      f"#SBATCH --cpus-per-task={cpus}",
      f"#SBATCH --output={log_dir.rstrip('/')}/%x-%a.log",
      "",
      "# The agent's exit status: 0 done, 2 bad input (not retried), anything else a crash,",
      f"# retried up to {max_restarts} times.",
      "export PYTHONUNBUFFERED=1",
      "restarts=0",
      "while true; do",
      f"  {shlex.join(argv)}",
      "  status=$?",
      f'  if [ "$status" -eq 0 ] || [ "$status" -eq 2 ] || [ "$restarts" -ge {max_restarts} ]; '
      "then",
      '    exit "$status"',
      "  fi",
      "  restarts=$((restarts + 1))",
      f'  echo "agent exited with status $status; restart $restarts of {max_restarts} in '
      f'{delay} s" >&2',
      f"  sleep {delay}",
      "done",
  ]
  return "\n".join(lines) + "\n"


def _cluster_config(options: Options) -> str:
  """The --config the cluster's agents get: remote paths and shipped names as they are."""
  if "://" in options.config or not os.path.isfile(options.config):
    return options.config
  return _path_for_agents("config", options.config, options.emit, "file",
                          f"a shipped config name {loader.shipped_names()} or a gs:// path")


def _path_for_agents(flag: str, path: str, emit, what: str, expected: str) -> str:
  """A path flag as the agents get it: remote paths as they are, local ones absolute (the agents
  may start elsewhere; Slurm nodes are assumed to share this filesystem); pods cannot read a
  local path at all."""
  if "://" in path:
    return path
  if emit == "k8s":
    raise LaunchError(f"--{flag}={path} is a local {what}, which the pods cannot read; expected "
                      f"{expected}.")
  return os.path.abspath(path)


def _checkpoint_for_agents(options: Options) -> str:
  return _path_for_agents("root_checkpoint", options.root_checkpoint, options.emit, "path",
                          "a gs:// path")


def check(options: Options) -> None:
  """The checks of --emit's input, before anything is written."""
  if options.root_checkpoint:
    _checkpoint_for_agents(options)
  shared_fs = options.emit == "slurm" and os.path.isabs(options.system_dir)
  if not options.system_dir.startswith("gs://") and not shared_fs:
    raise LaunchError(
        f"--system_dir={options.system_dir} is not a gs:// directory; --emit={options.emit} "
        "expected one (gs://BUCKET/PATH"
        + (", or for Slurm an absolute path on a filesystem every node shares" if
           options.emit == "slurm" else "") +
        "): the agents run on other machines, which do not share this machine's disk.")
  if options.emit == "k8s" and not options.image:
    raise LaunchError("--emit=k8s needs --image: expected the container image (with mtsys "
                      "and its dependencies) whose working directory holds bin/agent.py.")
  if options.gpus:
    raise LaunchError(f"--gpus={','.join(options.gpus)} only applies to local agents; "
                      "expected no --gpus with --emit.")
  _cluster_config(options)


def emit(options: Options, config_name: str, tasks: Sequence[str],
         out: Callable[[str], None] = print) -> str:
  """Writes the manifest `options.emit` names to `options.emit_output` (else prints it);
  returns its text. `check(options)` must have passed."""
  var = K8S_INDEX_ENV if options.emit == "k8s" else SLURM_INDEX_ENV
  flags = agent_flags(options, [f"--tasks={','.join(tasks)}", f"--task_index_env={var}"],
                      _cluster_config(options))
  flags += [f"--intra_op_threads={options.cpus_per_agent}", "--inter_op_threads=1"]
  if options.agent_command:
    program = shlex.split(options.agent_command)
  elif options.emit == "k8s":
    program = ["python", "bin/agent.py"]  # in the image's working directory
  else:
    program = [sys.executable, AGENT_PROGRAM]  # Slurm nodes usually share the login's disk
  name = options.job_name or default_job_name(config_name)
  target = options.emit_output or "FILE"
  header = [f"mtsys agents for config '{config_name}' against {options.system_dir}: index i "
            f"runs task i of {list(tasks)}."]
  common = dict(name=name, argv=program + flags, num_tasks=len(tasks),
                cpus=options.cpus_per_agent, max_restarts=options.max_restarts)
  if options.emit == "k8s":
    header.append(f"Start: kubectl apply -f {target}  (Kubernetes >= 1.29)")
    text = kubernetes_job(image=options.image, header=header, **common)
  else:
    header.append(f"Start: mkdir -p {options.log_dir} && sbatch {target}")
    text = slurm_script(log_dir=options.log_dir, restart_delay_s=options.restart_delay_s,
                        header=header, **common)
  if options.emit_output:
    with open(options.emit_output, "w") as f:
      f.write(text)
    out(f"Wrote {options.emit_output}; {header[-1]}")
  else:
    out(text.rstrip("\n"))
  return text
