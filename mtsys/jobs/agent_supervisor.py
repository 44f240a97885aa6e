"""Local agents of `bin/launch_agents.py` (`mtsys.jobs.launch_agents.run`): the processes.

`Supervisor` starts one agent process per slot, watches, restarts, displays and stops them.
- Pinning: a child starts through a tiny trampoline (`python -c`) that sets its affinity to its
  slot's cores, asks for SIGTERM when the launcher dies (PR_SET_PDEATHSIG: no orphans even after
  `kill -9` of the launcher), then execs the agent; affinity survives exec, so every thread the
  agent makes stays on its cores. (`preexec_fn` would run Python between fork and exec: unsafe
  once TensorFlow's threads exist.) TensorFlow's intra-op threads are set to the slot's share
  (inter-op to 1), and its `gpus` go to CUDA_VISIBLE_DEVICES.
- Exit statuses (the agent's contract): 0 done; 2 bad input, failed at once (retrying cannot
  help); anything else, or a signal, is a crash: restarted after `restart_delay_s`, at most
  `max_restarts` times per agent, the reason and the log's last lines printed. A restarted agent
  resumes from the store.
- Stopping: each agent leads its own process group, so a terminal's Ctrl-C reaches only the
  launcher, which stops them in order: SIGTERM to every group, up to `stop_grace_s`, then
  SIGKILL. A second Ctrl-C / SIGTERM skips the grace period (`stop_requests` installs the
  handlers and restores them when its block ends).
- Progress is read from the store (one EvolutionState per task), never from the logs; a store
  the agents have not created yet shows "starting".
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Optional, Sequence

from mtsys import errors
from mtsys.config import loader
from mtsys.config import names
from mtsys.jobs import agent_manifests

_POLL_S = 0.1
_TAIL_LINES = 5
# argv: cpus ("0,1"), the launcher's pid, then the agent's argv. PR_SET_PDEATHSIG is 1.
_TRAMPOLINE = (
    "import ctypes, os, signal, sys\n"
    "cpus = [int(c) for c in sys.argv[1].split(',') if c]\n"
    "if cpus and hasattr(os, 'sched_setaffinity'):\n  os.sched_setaffinity(0, cpus)\n"
    "try:\n  ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)\n"
    "except (OSError, AttributeError):\n  pass\n"
    "if os.getppid() != int(sys.argv[2]):\n  sys.exit('launcher gone before the agent started')\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n")


@contextlib.contextmanager
def stop_requests(enabled: bool):
  """Yields a list that SIGINT / SIGTERM append their number to while the block runs."""
  requests: list[int] = []
  if not enabled or threading.current_thread() is not threading.main_thread():
    yield requests
    return
  previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  for s in previous:
    signal.signal(s, lambda signum, frame: requests.append(signum))
  try:
    yield requests
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


@dataclasses.dataclass(frozen=True)
class Slot:
  """One agent's task and hardware share."""

  task: str
  cpus: tuple[int, ...]
  gpus: tuple[str, ...] = ()


def read_progress(system_dir: str, tasks: Sequence[str]) -> dict:
  """task -> (its agent's EvolutionState, its committed path's score or None); {} while the
  agents have not created the store yet."""
  from mtsys.system import store as mstore  # TensorFlow: imported once there is a display
  try:
    store = mstore.Store.open(system_dir)
  except errors.SystemNotFoundError:
    return {}
  progress = {}
  for task in tasks:
    path = store.read_path(task)
    progress[task] = (store.read_evolution_state(task=task),
                      path.score if path is not None else None)
  return progress


def progress_cells(progress, task: str, iterations: int, generations: int) -> tuple[str, ...]:
  """(iteration, generation, best score) of one agent's display line; "-" where unknown.

  The iteration is the one in progress (or the last completed one between active phases), the
  generation the completed generations of the active phase, the best score the population's
  best (else the committed path's)."""
  state, path_score = progress or (None, None)
  if state is None or not state.ByteSize():
    return ("-", "-", "-" if path_score is None else f"{path_score:.3f}")
  done = state.iterations_done.get(task, 0)
  active = state.task == task
  scores = [p.score for p in state.population if p.task in ("", task)]
  best = max(scores) if scores else path_score
  return (f"{min(done + active, iterations)}/{iterations}",
          f"{state.generations_done}/{generations}" if active else "-",
          "-" if best is None else f"{best:.3f}")


def _describe_exit(code: int) -> str:
  if code >= 0:
    return f"exit code {code}"
  try:
    return f"killed by {signal.Signals(-code).name}"
  except ValueError:
    return f"killed by signal {-code}"


def _tail(path: str, lines: int = _TAIL_LINES) -> list[str]:
  try:
    with open(path, "rb") as f:
      f.seek(max(0, os.path.getsize(path) - 8192))
      text = f.read().decode("utf-8", "replace")
  except OSError:
    return []
  return [line for line in text.splitlines() if line.strip()][-lines:]


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
  try:
    os.killpg(proc.pid, signum)  # the agent leads its group: its own children get it too
  except (ProcessLookupError, PermissionError):
    pass


@dataclasses.dataclass
class _Agent:
  slot: Slot
  log_path: str
  proc: Optional[subprocess.Popen] = None
  status: str = "starting"  # running, restarting, done, failed, stopped
  restarts: int = 0
  reason: str = ""
  restart_at: float = 0.0


class Supervisor:
  """Starts, watches, restarts, displays and stops the local agents of one
  `mtsys.jobs.launch_agents.run` (`options`: its `Options`)."""

  def __init__(self, config: loader.Config, options, slots: Sequence[Slot], *, out,
               agent_argv, environ: dict, stop_requests: list[int]):
    self.options, self.out, self.agent_argv, self.environ = options, out, agent_argv, environ
    self.requests = stop_requests
    self.iterations = options.task_iterations or config.proto.evolution.task_iterations
    self.generations = config.proto.evolution.generations
    self.agents = [_Agent(slot, os.path.join(options.log_dir,
                                             names.task_file_stem(slot.task) + ".log"))
                   for slot in slots]
    self.started = time.monotonic()

  def run(self) -> int:
    try:
      for agent in self.agents:
        self._start(agent)
      next_display = time.monotonic() + self.options.refresh_s
      while not self.requests and any(a.status in ("running", "restarting")
                                      for a in self.agents):
        time.sleep(_POLL_S)
        now = time.monotonic()
        for agent in self.agents:
          self._poll(agent, now)
        if now >= next_display and not self.requests:
          self._display("Agents")
          next_display = now + self.options.refresh_s
    finally:
      self._stop_all()  # also after a bug here: no agent outlives its launcher
    self._display("Summary")
    failed = [a.slot.task for a in self.agents if a.status == "failed"]
    counts = collections.Counter(a.status for a in self.agents)
    self.out(f"{len(self.agents)} agents: {counts['done']} done, {len(failed)} failed"
             f"{' ' + str(failed) if failed else ''}, {counts['stopped']} stopped; logs in "
             f"{self.options.log_dir}.")
    if self.requests:
      return 128 + self.requests[0]
    return 1 if failed else 0

  def _start(self, agent: _Agent) -> None:
    slot = agent.slot
    flags = agent_manifests.agent_flags(self.options, [f"--task={slot.task}"]) + [
        f"--intra_op_threads={len(slot.cpus)}", "--inter_op_threads=1"]
    argv = list(self.agent_argv(slot.task, flags))
    env = dict(self.environ, PYTHONUNBUFFERED="1")
    if slot.gpus:
      env["CUDA_VISIBLE_DEVICES"] = ",".join(slot.gpus)
    cpus = ",".join(map(str, slot.cpus))
    with open(agent.log_path, "ab") as log:
      log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} launch_agents: start "
                f"{agent.restarts + 1} of task '{slot.task}' on cpus [{cpus}]"
                f"{' gpus [' + ','.join(slot.gpus) + ']' if slot.gpus else ''}: "
                f"{shlex.join(argv)}\n".encode())
      log.flush()
      agent.proc = subprocess.Popen(
          [sys.executable, "-c", _TRAMPOLINE, cpus, str(os.getpid()), *argv],
          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
          start_new_session=True)
    agent.status = "running"
    self.out(f"Started agent '{slot.task}' (pid {agent.proc.pid}, cpus [{cpus}]"
             f"{', gpus [' + ','.join(slot.gpus) + ']' if slot.gpus else ''}), log "
             f"{agent.log_path}")

  def _poll(self, agent: _Agent, now: float) -> None:
    if agent.status == "restarting" and now >= agent.restart_at:
      self._start(agent)
    if agent.status != "running" or agent.proc.poll() is None:
      return
    code, pid, task = agent.proc.returncode, agent.proc.pid, agent.slot.task
    if code == 0:
      agent.status = "done"
      self.out(f"Agent '{task}' finished.")
      return
    if code == 2:
      agent.status, agent.reason = "failed", "bad input (exit code 2), not retried"
      what = f"failed: {agent.reason}"
    elif agent.restarts < self.options.max_restarts:
      agent.restarts += 1
      agent.status, agent.restart_at = "restarting", now + self.options.restart_delay_s
      what = (f"died: {_describe_exit(code)}; restarting it ({agent.restarts}/"
              f"{self.options.max_restarts}) in {self.options.restart_delay_s:g} s")
    else:
      agent.status = "failed"
      agent.reason = f"{_describe_exit(code)} after {agent.restarts} restarts"
      what = f"failed: {agent.reason}"
    tail = "".join(f"\n    | {line}" for line in _tail(agent.log_path))
    self.out(f"Agent '{task}' (pid {pid}) {what}. Last lines of {agent.log_path}:{tail}")

  def _stop_all(self) -> None:
    live = [a for a in self.agents if a.status == "running" and a.proc.poll() is None]
    for agent in self.agents:
      if agent.status in ("restarting", "starting"):
        agent.status = "stopped"
    if not live:
      return
    grace, asked = self.options.stop_grace_s, len(self.requests)
    self.out(f"Stopping {len(live)} agents: SIGTERM, then SIGKILL after {grace:g} s.")
    for agent in live:
      _signal_group(agent.proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while (any(a.proc.poll() is None for a in live) and time.monotonic() < deadline
           and len(self.requests) <= asked):  # another Ctrl-C: no more waiting
      time.sleep(_POLL_S)
    for agent in live:
      if agent.proc.poll() is None:
        _signal_group(agent.proc, signal.SIGKILL)
        agent.proc.wait()
      agent.status = "done" if agent.proc.returncode == 0 else "stopped"

  def _display(self, title: str) -> None:
    tasks = [a.slot.task for a in self.agents]
    try:
      progress = read_progress(self.options.system_dir, tasks)
    except Exception as e:  # pylint: disable=broad-except
      # A display must never take the agents down (a transient gs:// error, a file mid-update).
      progress = {}
      self.out(f"(progress unavailable: {type(e).__name__}: {e})")
    rows = [("task", "iteration", "generation", "best", "status", "restarts")]
    for agent in self.agents:
      cells = progress_cells(progress.get(agent.slot.task), agent.slot.task, self.iterations,
                             self.generations)
      status = {"restarting": f"restarting ({agent.restarts})",
                "failed": f"failed: {agent.reason}"}.get(agent.status, agent.status)
      state = progress.get(agent.slot.task, (None,))[0]
      if status == "running" and (state is None or not state.ByteSize()):
        status = "starting"  # no store, or no state of this agent's yet
      rows.append((agent.slot.task, *cells, status, str(agent.restarts)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    elapsed = int(time.monotonic() - self.started)
    self.out(f"{title} after {elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d} "
             f"({self.options.system_dir}):")
    for row in rows:
      self.out("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
