r"""Tuning runs for a config's defaults (issue #10, item 6): evolution's budget shape and the
baselines' learning rate, both chosen on validation accuracy, on seeds the quality benchmark does
not report.

    .venv/bin/python benchmarks/tuning.py                   # chars-lite, 1 seed (offset 100)
    .venv/bin/python benchmarks/tuning.py --quick           # smoke run, about 2 minutes
    .venv/bin/python benchmarks/tuning.py --shapes=2x2x2x4,2x4x2x2 --learning_rates=0.02,0.05

Runtime on 2 idle CPU cores with chars-lite: about 4 minutes per budget shape and 5 minutes per
learning rate in one process, so about 30 minutes for the defaults (3 shapes, 3 learning rates,
1 seed); the runs go to `--workers` one-core processes as in benchmarks/quality.py (there about
2.6x as fast on 2 cores), so expect well under half that.

- Budget shapes `TxGxCxE` (task iterations x generations x children x epochs per child) that
  keep the config's total child-epochs per task: more generations or children with fewer steps
  each, against fewer and longer children. Each is one evolution run at scale factor 1.
- Baseline learning rates, from the search space's `learning_rate` list (the list evolution
  mutates over): every baseline method is trained at each (`baselines.learning_rate`), with the
  config's equal budget and replicas, so the baselines get the same tuning effort.
- Validation size: evolution keeps the best of many candidates on the validation split and so
  overestimates its own quality there more than a baseline does; the per-task table prints each
  method's optimism (validation minus test accuracy) beside the task's validation size.

Prints the tables, the choices (highest average validation accuracy; test accuracy is printed
but chooses nothing), and as the LAST line one JSON object with the figures.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app
from absl import flags

from benchmarks import quality_lib
from benchmarks import workers

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "chars-lite", "Config file or shipped config name.")
flags.DEFINE_integer("seeds", 1, "Repetitions; seed i uses the config's seeds + seed_offset + i.")
flags.DEFINE_integer("seed_offset", 100,
                     "Added to every seed; keep it clear of the seeds quality.py reports (0..).")
flags.DEFINE_list("shapes", ["2x2x2x4", "2x4x2x2", "2x2x4x2"],
                  "Evolution budget shapes TxGxCxE (task iterations x generations x children "
                  "per generation x epochs per child).")
flags.DEFINE_list("learning_rates", ["0.01", "0.02", "0.05"],
                  "Baseline learning rates to try: values of the search space's learning_rate "
                  "(empty: no baselines).")
flags.DEFINE_list("tasks", None, "Only these tasks (default: all of the config's).")
flags.DEFINE_list("methods", None, "Baseline methods (default: the config's).")
flags.DEFINE_integer("workers", len(workers.cores()), workers.FLAG_HELP, lower_bound=1)
flags.DEFINE_bool("quick", False, "Smoke run: 1 task, tiny budgets (the numbers mean nothing).")
flags.DEFINE_string("work_dir", None,
                    "Keep the system directories here instead of a deleted temporary directory.")


def parse_shape(text: str) -> tuple:
  """'2x4x2x2' -> (2, 4, 2, 2); anything else raises naming the value and the form."""
  parts = text.lower().split("x")
  if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
    raise ValueError(f"Budget shape {text!r}: expected TxGxCxE, four positive integers such as "
                     "2x2x2x4.")
  return tuple(int(p) for p in parts)


def _shaped(config, shape):
  t, g, c, e = shape

  def edit(proto):
    ev = proto.evolution
    ev.task_iterations, ev.generations, ev.children_per_generation, ev.epochs_per_child = t, g, c, e
    ev.score.scale_factor = 1.0
  return quality_lib.edited(config, edit)


def _with_learning_rate(config, lr):
  def edit(proto):
    proto.baselines.learning_rate = lr
    proto.baselines.ClearField("method_learning_rate")  # every method at `lr`
  return quality_lib.edited(config, edit)


def _avg(values) -> float:
  values = list(values)
  return sum(values) / len(values)


def main(argv):
  del argv
  from mtsys.config import loader
  from mtsys.evolution import preflight
  config = loader.load(FLAGS.config)
  shapes = [parse_shape(s) for s in FLAGS.shapes]
  rates = [float(r) for r in FLAGS.learning_rates]
  allowed = config.search_space["learning_rate"].values
  for r in rates:
    if r not in allowed:
      raise app.UsageError(f"--learning_rates: {r:g} is not in the search space's learning_rate "
                           f"list {list(allowed)}.")
  if FLAGS.quick:
    config = quality_lib.quick(config)
    shapes, rates = [(1, 1, 2, 1), (1, 2, 1, 1)], rates[:2]
  ev = config.proto.evolution
  total = ev.task_iterations * ev.generations * ev.children_per_generation * ev.epochs_per_child
  for s in shapes:
    if s[0] * s[1] * s[2] * s[3] != total:
      print(f"Note: shape {'x'.join(map(str, s))} trains {s[0] * s[1] * s[2] * s[3]} "
            f"child-epochs per task, the config {total}.", flush=True)
  tasks = list(FLAGS.tasks) if FLAGS.tasks else None
  if FLAGS.quick and not tasks:
    tasks = [t.name for t in config.tasks][:1]
  task_names = tasks or [t.name for t in config.tasks]
  task_data = preflight.load_tasks(config, task_names)
  methods = list(FLAGS.methods) if FLAGS.methods else list(config.proto.baselines.methods)
  if FLAGS.quick:
    methods = methods[:1]
  if not rates:  # --learning_rates= : evolution's shapes only
    methods = []
  if not shapes and not rates:
    raise app.UsageError("--shapes and --learning_rates are both empty; expected at least one "
                         "shape or learning rate to try.")
  seeds = 1 if FLAGS.quick else FLAGS.seeds
  print(f"'{config.name}': {len(task_names)} tasks, seed offsets {FLAGS.seed_offset}.."
        f"{FLAGS.seed_offset + seeds - 1}, shapes {['x'.join(map(str, s)) for s in shapes]}, "
        f"baseline learning rates {rates}, methods {methods}", flush=True)

  work = FLAGS.work_dir or tempfile.mkdtemp(prefix="mtsys-tuning-")
  from google.protobuf import text_format
  results: dict = {}  # (seed index, the job's name) -> its run
  start = time.perf_counter()
  try:
    root_dir = quality_lib.make_root(config, os.path.join(work, "root"),
                                     lambda msg: print(f"    {msg}", flush=True))
    jobs = []  # each runs with its seed set here (seed offset 0 in the job)
    for i in range(seeds):
      seeded = quality_lib.with_seeds(config, FLAGS.seed_offset + i)
      shared = dict(config_path=config.path, seed_index=i, seed_offset=0, root_dir=root_dir,
                    tasks=tasks, methods=methods,
                    task_data=task_data if FLAGS.workers == 1 else None)
      for shape in shapes:
        name = "x".join(map(str, shape))
        jobs.append(quality_lib.Job(
            text_format.MessageToString(_shaped(seeded, shape).proto), scale_factor=1.0,
            directory=os.path.join(work, f"seed{i}", f"evolution-{name}"),
            name=f"evolution {name}", **shared))
      for lr in rates:
        jobs.append(quality_lib.Job(
            text_format.MessageToString(_with_learning_rate(seeded, lr).proto),
            scale_factor=None, directory=os.path.join(work, f"seed{i}", f"baselines-lr{lr:g}"),
            name=f"baselines at learning rate {lr:g}", **shared))
    print(f"{len(jobs)} runs, {FLAGS.workers} at a time", flush=True)
    for job, r in workers.run(jobs, quality_lib.run_job, FLAGS.workers):
      results[(job.seed_index, job.name)] = r
      if job.scale_factor is not None:
        print(f"[{job.label}] validation {_avg(r['validation'].values()):.4f}, "
              f"test {_avg(r['test'].values()):.4f}, {r['wall_seconds']:.0f}s", flush=True)
        continue
      for m, mr in r.items():
        if not m.endswith(quality_lib.ONE_REPLICA):
          print(f"[{job.label}] {m}: validation {_avg(mr['validation'].values()):.4f}, "
                f"test {_avg(mr['test'].values()):.4f}", flush=True)
  finally:
    if not FLAGS.work_dir:
      shutil.rmtree(work, ignore_errors=True)
  evolution: dict = {}  # shape -> [run], in seed order
  baselines: dict = {}  # (method, lr) -> [run], in seed order
  for i in range(seeds):
    for shape in shapes:
      name = "x".join(map(str, shape))
      evolution.setdefault(name, []).append(results[(i, f"evolution {name}")])
    for lr in rates:
      for m, r in results[(i, f"baselines at learning rate {lr:g}")].items():
        if not m.endswith(quality_lib.ONE_REPLICA):
          baselines.setdefault((m, lr), []).append(r)
  elapsed = time.perf_counter() - start

  def figures(runs):
    val = _avg(_avg(r["validation"][t] for t in task_names) for r in runs)
    test = _avg(_avg(r["test"][t] for t in task_names) for r in runs)
    optimism = {t: _avg(r["validation"][t] - r["test"][t] for r in runs) for t in task_names}
    return {"avg_validation_accuracy": val, "avg_test_accuracy": test, "optimism": optimism}

  shape_figures = {name: figures(runs) for name, runs in evolution.items()}
  rate_figures = {m: {f"{lr:g}": figures(baselines[(m, lr)]) for lr in rates} for m in methods}
  best_shape = max(shape_figures, key=lambda n: shape_figures[n]["avg_validation_accuracy"],
                   default=None)
  best_rate = {m: float(max(rates, key=lambda lr: rate_figures[m][f"{lr:g}"][
      "avg_validation_accuracy"])) for m in methods}

  print()
  print("Evolution budget shapes (T x G x C x E), scale factor 1: average over tasks and seeds")
  print(f"{'shape':<12}{'validation':>12}{'test':>10}")
  for name, f in shape_figures.items():
    mark = "  <- chosen" if name == best_shape else ""
    print(f"{name:<12}{f['avg_validation_accuracy']:>12.4f}{f['avg_test_accuracy']:>10.4f}{mark}")
  print()
  print("Baseline learning rates: average over tasks and seeds (best of replicas)")
  print(f"{'method':<20}{'lr':>8}{'validation':>12}{'test':>10}")
  for m in methods:
    for lr in rates:
      f = rate_figures[m][f"{lr:g}"]
      mark = "  <- chosen" if lr == best_rate[m] else ""
      print(f"{m:<20}{lr:>8g}{f['avg_validation_accuracy']:>12.4f}"
            f"{f['avg_test_accuracy']:>10.4f}{mark}")
  print()
  print("Optimism (validation - test accuracy) by task, at the chosen settings")
  chosen = {"evolution " + best_shape: shape_figures[best_shape]["optimism"]} if best_shape else {}
  for m in methods:
    chosen[f"{m} lr={best_rate[m]:g}"] = rate_figures[m][f"{best_rate[m]:g}"]["optimism"]
  width = max(len(k) for k in chosen) + 2
  print(f"{'task':<14}{'validation n':>13}" + "".join(k.rjust(width) for k in chosen))
  for t in task_names:
    print(f"{t:<14}{task_data[t].sizes['validation']:>13}" +
          "".join(f"{v[t]:+.4f}".rjust(width) for v in chosen.values()))
  print(f"Total wall time {elapsed / 60:.1f} min")
  print(json.dumps({
      "benchmark": "tuning", "config": config.name, "quick": bool(FLAGS.quick),
      "tasks": task_names, "seeds": seeds, "seed_offset": FLAGS.seed_offset,
      "chosen_shape": best_shape, "chosen_learning_rate": best_rate,
      "validation_sizes": {t: int(task_data[t].sizes["validation"]) for t in task_names},
      "shapes": shape_figures, "learning_rates": rate_figures, "wall_seconds": elapsed,
  }))


if __name__ == "__main__":
  app.run(main)
