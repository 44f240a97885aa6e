r"""µ3Net's scaling measurement (issue #12, item 5): the single program against one agent per task.

    .venv/bin/python benchmarks/agents.py            # chars-lite, 2 tasks, 3 task-set iterations
    .venv/bin/python benchmarks/agents.py --quick    # smoke run (the numbers mean nothing)

Three runs of the same config (same tasks, task-set iterations, generations, children and
training steps per task), each from a copy of one root made beforehand (pretraining is not
timed), each a real process of the shipped entry points:

- `sequential`: `bin/evolve.py` pinned to ONE core, TensorFlow's intra- and inter-op threads 1;
- `agents`: one `bin/agent.py` per task, synchronised, each pinned to its own core with the same
  thread settings (weak scaling, as µ3Net measures it: the same work per task, one core each);
- `strong`: `bin/evolve.py` free to use both cores (TensorFlow's default threads).

Wall time is the processes' wall time from start to end (TensorFlow's import included both ways)
divided by the task-set iterations. `speedup` = sequential / agents (µ3Net: 6.64x with 8 agents,
83% of linear; target at least 1.8 with 2); `strong_speedup` = strong / agents. Test accuracy
per task-set iteration is what each run's log says after each task's active phase.
`store_ops_share` = the agents' time reading and writing the store (their coordination I/O and
the store's own reads and writes) / their wall time (target under 2%). `gc_reclaimed_bytes`:
what the agents' own collections and a final `bin/gc.py`-equivalent collection reclaimed.

Prints a table, and as the LAST line one JSON object with the figures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

from absl import app
from absl import flags

from benchmarks import quality_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "chars-lite", "Config file or shipped config name.")
flags.DEFINE_list("tasks", ["digits", "latin_upper"], "The two (or more) tasks.")
flags.DEFINE_integer("task_iterations", 3, "Task-set iterations of every run.")
flags.DEFINE_bool("quick", False, "Smoke run: tiny budgets, 1 task-set iteration.")
flags.DEFINE_string("work_dir", None,
                    "Keep the system directories and logs here instead of a temporary directory.")

_PHASE_LINE = re.compile(r"^Task '(?P<task>[^']+)' iteration (?P<n>\d+): .* test "
                         r"(?P<test>[0-9.]+), \d+ components$", re.M)


def _pinned(cores, argv):
  """A command running `argv` pinned to `cores` (None: unpinned)."""
  if cores is None:
    return argv
  code = ("import os, sys; os.sched_setaffinity(0, %r); os.execv(sys.executable, "
          "[sys.executable] + sys.argv[1:])" % (set(cores),))
  return [sys.executable, "-c", code, *argv[1:]]


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


def _start(argv, log_file, start, ends):
  """Starts `argv` with its output teed to `log_file`; records into `ends[(task, n)]` the time
  (since `start`) its log said task `task` finished iteration n. Returns (process, thread)."""
  proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)

  def pump():
    with open(log_file, "w") as log:
      for line in proc.stdout:
        log.write(line)
        m = _PHASE_LINE.match(line.rstrip("\n"))
        if m:
          ends[(m["task"], int(m["n"]))] = time.perf_counter() - start
  thread = threading.Thread(target=pump, daemon=True)
  thread.start()
  return proc, thread


def _iteration_ends(ends, tasks, iterations):
  """Seconds from the start until every task finished task-set iteration n, for each n."""
  return [max(ends[(t, n)] for t in tasks) for n in range(1, iterations + 1)]


def _accuracy_by_iteration(logs, tasks, iterations):
  """Average test accuracy over `tasks` after each task-set iteration, from the runs' logs."""
  found = {}
  for text in logs:
    for m in _PHASE_LINE.finditer(text):
      found[(m["task"], int(m["n"]))] = float(m["test"])
  out = []
  for n in range(1, iterations + 1):
    values = [found[(t, n)] for t in tasks if (t, n) in found]
    if len(values) != len(tasks):
      raise RuntimeError(f"The logs lack task-set iteration {n} of {tasks}: found {found}.")
    out.append(round(sum(values) / len(values), 4))
  return out


def _train_steps(system_dir, tasks):
  from mtsys.system import history
  steps = {t: 0 for t in tasks}
  for record in history.read(system_dir):
    if record.task in steps:
      steps[record.task] += int(record.metrics.train_steps)
  return steps


def _evolve(config_file, system_dir, tasks, iterations, cores, threads, log_file):
  argv = [sys.executable, os.path.join(_REPO, "bin", "evolve.py"), f"--config={config_file}",
          f"--system_dir={system_dir}", f"--tasks={','.join(tasks)}",
          f"--task_iterations={iterations}"]
  if threads:
    argv += [f"--intra_op_threads={threads}", f"--inter_op_threads={threads}"]
  start, ends = time.perf_counter(), {}
  proc, thread = _start(_pinned(cores, argv), log_file, start, ends)
  code = proc.wait()
  thread.join()
  seconds = time.perf_counter() - start
  text = open(log_file).read()
  if code:
    raise RuntimeError(f"{' '.join(argv)} failed ({code}):\n{text[-3000:]}")
  return seconds, [text], _iteration_ends(ends, tasks, iterations)


def _agents(config_file, system_dir, tasks, iterations, work):
  procs, logs, results, ends = [], [], [], {}
  start = time.perf_counter()
  for i, task in enumerate(tasks):
    results.append(os.path.join(work, f"agent-{i}.json"))
    logs.append(os.path.join(work, f"agent-{i}.log"))
    argv = [sys.executable, os.path.join(_REPO, "bin", "agent.py"), f"--config={config_file}",
            f"--system_dir={system_dir}", f"--task={task}", f"--task_iterations={iterations}",
            "--mode=sync", "--intra_op_threads=1", "--inter_op_threads=1",
            f"--results_json={results[-1]}"]
    cores = [sorted(os.sched_getaffinity(0))[i % len(os.sched_getaffinity(0))]]
    procs.append(_start(_pinned(cores, argv), logs[-1], start, ends))
  codes = []
  for proc, thread in procs:
    codes.append(proc.wait())
    thread.join()
  seconds = time.perf_counter() - start
  texts = [open(f).read() for f in logs]
  for task, code, text in zip(tasks, codes, texts):
    if code:
      raise RuntimeError(f"The agent of {task} failed ({code}):\n{text[-3000:]}")
  summaries = [json.load(open(f)) for f in results]
  return seconds, texts, summaries, _iteration_ends(ends, tasks, iterations)


def main(argv):
  del argv
  from google.protobuf import text_format
  from mtsys.config import loader
  from mtsys.system import gc
  from mtsys.system import store as mstore
  from mtsys.train import pretrain
  config = loader.load(FLAGS.config)
  tasks, iterations = list(FLAGS.tasks), FLAGS.task_iterations
  if FLAGS.quick:
    config = quality_lib.quick(config)
    iterations = 1
  config = quality_lib.edited(config, lambda p: setattr(p.evolution, "task_iterations",
                                                        iterations))
  for task in tasks:
    config.task(task)  # unknown names fail here
  work = FLAGS.work_dir or tempfile.mkdtemp(prefix="mtsys-agents-bench-")
  os.makedirs(work, exist_ok=True)
  config_file = os.path.join(work, "config.textproto")
  with open(config_file, "w") as f:
    f.write(text_format.MessageToString(config.proto))
  config = loader.load(config_file)
  print(f"Work directory {work}; making the shared root (not timed)...", flush=True)
  seed_dir = os.path.join(work, "seed")
  shutil.rmtree(seed_dir, ignore_errors=True)
  pretrain.ensure_root(mstore.Store.create(seed_dir, config.proto), config,
                       log=lambda line: None)

  def fresh(name):
    path = os.path.join(work, name)
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(seed_dir, path)
    return path

  first_core = sorted(os.sched_getaffinity(0))[0]
  runs = {}
  print("sequential: bin/evolve.py on one core, 1 thread...", flush=True)
  directory = fresh("sequential")
  seconds, logs, ends = _evolve(config_file, directory, tasks, iterations, [first_core], 1,
                                os.path.join(work, "sequential.log"))
  runs["sequential"] = {"seconds": seconds, "ends": ends, "accuracy": _accuracy_by_iteration(
      logs, tasks, iterations), "steps": _train_steps(directory, tasks)}
  print(f"agents: {len(tasks)} x bin/agent.py, one core and 1 thread each...", flush=True)
  directory = fresh("agents")
  seconds, logs, summaries, ends = _agents(config_file, directory, tasks, iterations, work)
  final = gc.collect(directory, log=lambda line: None)
  runs["agents"] = {"seconds": seconds, "ends": ends, "accuracy": _accuracy_by_iteration(
      logs, tasks, iterations), "steps": _train_steps(directory, tasks),
      "store_share": sum(s["store_seconds"] for s in summaries) / sum(
          s["seconds"] for s in summaries),
      "gc_bytes": sum(s["gc_reclaimed_bytes"] for s in summaries) + final.reclaimed_bytes,
      # Each agent's time in its loop minus its waits at barriers: how balanced the tasks are.
      "busy": {s["task"]: s["seconds"] - s.get("barrier_seconds", 0.0) for s in summaries}}
  print("strong: bin/evolve.py free on every core...", flush=True)
  directory = fresh("strong")
  seconds, logs, ends = _evolve(config_file, directory, tasks, iterations, None, 0,
                                os.path.join(work, "strong.log"))
  runs["strong"] = {"seconds": seconds, "ends": ends, "accuracy": _accuracy_by_iteration(
      logs, tasks, iterations), "steps": _train_steps(directory, tasks)}

  per_iter = {k: v["seconds"] / iterations for k, v in runs.items()}
  # Iterations after the first: without process start-up (TensorFlow's import, data, root),
  # which the agents pay once each, the single program once.
  steady = ({k: (v["ends"][-1] - v["ends"][0]) / (iterations - 1) for k, v in runs.items()}
            if iterations > 1 else per_iter)
  busy = sorted(runs["agents"]["busy"].values())
  print("")
  print(f"{'run':<12} {'wall s':>8} {'s/iter':>8}  test accuracy per task-set iteration  "
        "train steps per task")
  for name, run in runs.items():
    print(f"{name:<12} {run['seconds']:>8.1f} {per_iter[name]:>8.1f}  "
          f"{str(run['accuracy']):<36} {run['steps']}")
  figures = {
      "speedup": round(per_iter["sequential"] / per_iter["agents"], 3),
      "strong_speedup": round(per_iter["strong"] / per_iter["agents"], 3),
      "sequential_avg_test_accuracy": runs["sequential"]["accuracy"],
      "agents_avg_test_accuracy": runs["agents"]["accuracy"],
      "strong_avg_test_accuracy": runs["strong"]["accuracy"],
      "store_ops_share": round(runs["agents"]["store_share"], 5),
      "train_steps_per_task": {"sequential": runs["sequential"]["steps"],
                               "agents": runs["agents"]["steps"],
                               "strong": runs["strong"]["steps"]},
      "gc_reclaimed_bytes": int(runs["agents"]["gc_bytes"]),
      "seconds_per_iteration": {k: round(v, 2) for k, v in per_iter.items()},
      "steady_speedup": round(steady["sequential"] / steady["agents"], 3),
      "steady_seconds_per_iteration": {k: round(v, 2) for k, v in steady.items()},
      "iteration_end_seconds": {k: [round(e, 1) for e in v["ends"]] for k, v in runs.items()},
      # Slowest agent's busy time / fastest's: synchronised agents wait for the slowest, so
      # 2 agents can reach at most 1 + fastest/slowest of linear speed-up.
      "agent_imbalance": round(busy[-1] / busy[0], 3),
      "task_iterations": iterations, "tasks": tasks, "quick": FLAGS.quick,
      "speedup_target_met": per_iter["sequential"] / per_iter["agents"] >= 1.8,
      "store_ops_target_met": runs["agents"]["store_share"] < 0.02,
  }
  print(f"\nsteady state (iterations 2..n): speedup {figures['steady_speedup']}; agents' "
        f"imbalance (slowest / fastest busy time) {figures['agent_imbalance']}")
  print(f"speedup {figures['speedup']} (target >= 1.8), strong speedup "
        f"{figures['strong_speedup']}, store ops {100 * figures['store_ops_share']:.2f}% "
        "(target < 2%)")
  if not FLAGS.work_dir:
    shutil.rmtree(work, ignore_errors=True)
  print(json.dumps(figures))


if __name__ == "__main__":
  app.run(main)
