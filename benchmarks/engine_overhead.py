r"""What the training engine costs on top of Keras, on the built-in chars-lite benchmark.

    .venv/bin/python benchmarks/engine_overhead.py            # about 3-5 minutes on 2 CPU cores
    .venv/bin/python benchmarks/engine_overhead.py --quick    # a smoke run, 1-2 minutes

Three figures, each measured with the shipped config (`--config`), its built-in data, the root
from `mtsys.system.root.make_root`, paths planned like `mtsys.train.baselines.plan`, and the
config's strategy as the command-line tools make it (`distribution`, default one device):

1. `fit_throughput_ratio` (target >= 0.95): training examples/s of a path trained through
   `mtsys.train.trainer.train_path`, divided by examples/s of the same path architecture
   (`assembly.build_path_model`, same frozen components) trained by a plain `keras.Model.fit`
   on the same tf.data pipeline (`mtsys.data.make_dataset` with the options mtsys sets on it),
   with Keras' own SGD, CosineDecay schedule (same values) and loss. Throughput is measured
   inside training epochs (from the end of each epoch's first step to the end of its last), so
   validation and start-up are excluded on both sides. `--throughput_repeats` short runs of each
   go back to back in pairs (alternating which goes first); the figure is the median of the
   pairs' ratios, for the path (head only or full fine-tuning) where it is lower.
2. `head_only_step_ratio` (frozen layers must make training cheaper, so < 1): the median
   training step time of a path whose only trainable component is its head, divided by that of
   full fine-tuning (every component trainable), both through `train_path`.
3. `child_fixed_cost_share` (target < 0.10): for children trained with the config's default
   child budget (`evolution.epochs_per_child` x `evolution.max_batches_per_epoch` batches of
   `evolution.batch_size`) on the task with the most training data, the share of a child's wall
   time (the whole `train_path` call) that is not spent in training steps: assembly, loading
   weights, compiling and tracing, dataset set-up, validation after every epoch, keeping the best
   epoch's weights. Training-step time is the sum of the steady step intervals plus, for the
   first step of each epoch, the median step time. Children are trained the way the evolution
   engine trains them, one after another in one process with a `trainer.ModelCache`: the headline
   is the aggregate over a mix of four path kinds (head only, residual adapters, top block + head,
   full fine-tuning) once each structure's model is compiled (`warm`). Reported alongside: the
   part of it spent at epoch ends (`child_validation_share`: validation over the whole
   validation split, which is model compute, plus the best-epoch snapshot), and the first child
   of a structure (`child_fixed_cost_share_cold`, also what every child costs with `cache=None`).

Every figure is a median over repeated runs after a warm-up run. The last line of the output is
one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtsys import data as mdata  # noqa: E402
from mtsys.config import hparams as hp  # noqa: E402
from mtsys.config import loader  # noqa: E402
from mtsys.system import assembly  # noqa: E402
from mtsys.system import paths as mpaths  # noqa: E402
from mtsys.system import root as mroot  # noqa: E402
from mtsys.system import store as mstore  # noqa: E402
from mtsys.train import baselines  # noqa: E402
from mtsys.train import strategy as mstrategy  # noqa: E402

TARGETS = {"fit_throughput_ratio": ">= 0.95", "head_only_step_ratio": "< 1",
           "child_fixed_cost_share": "< 0.10"}
KINDS = ("head_only", "adapters", "top_block", "full")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="chars-lite", help="A shipped config name or a file.")
  p.add_argument("--task", default=None,
                 help="Task to train on (default: the config's task with the most training data).")
  p.add_argument("--repeats", type=int, default=5, help="Timed runs per measurement (median).")
  p.add_argument("--throughput_repeats", type=int, default=12,
                 help="Back-to-back pairs of throughput runs (mtsys, Keras) per path.")
  p.add_argument("--throughput_epochs", type=int, default=1,
                 help="Epochs per throughput run.")
  p.add_argument("--throughput_steps", type=int, default=100,
                 help="Steps per throughput epoch (at most one pass over the task's data).")
  p.add_argument("--quick", action="store_true",
                 help="Smoke run: 1 repeat, 2 throughput runs of 30 steps, fewer child kinds.")
  p.add_argument("--trainer_file", default=None,
                 help="Measure another version of mtsys/train/trainer.py (e.g. an older commit's, "
                      "saved to a file) instead of the installed one.")
  args = p.parse_args(argv)
  if args.quick:
    args.repeats, args.throughput_repeats, args.throughput_steps = 1, 2, 30
  if min(args.repeats, args.throughput_repeats, args.throughput_epochs,
         args.throughput_steps) < 1:
    p.error("--repeats, --throughput_repeats, --throughput_epochs and --throughput_steps must "
            "be positive")
  return args


def load_trainer(path):
  if not path:
    from mtsys.train import trainer
    return trainer
  spec = importlib.util.spec_from_file_location("trainer_under_test", path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up
  spec.loader.exec_module(module)
  return module


class StepTimer(keras.callbacks.Callback):
  """Wall-clock time at the end of every training step, per epoch."""

  def __init__(self):
    super().__init__()
    self.epochs = []
    self.epoch_ends = []
    self.train_begin = self.train_end = None

  def on_train_begin(self, logs=None):
    self.train_begin = time.perf_counter()

  def on_train_end(self, logs=None):
    self.train_end = time.perf_counter()

  def on_epoch_begin(self, epoch, logs=None):
    self.epochs.append([time.perf_counter()])

  def on_epoch_end(self, epoch, logs=None):
    # mtsys' validation and best-epoch snapshot (or Keras' validation) run before this.
    self.epoch_ends.append(time.perf_counter())

  def on_train_batch_end(self, batch, logs=None):
    self.epochs[-1].append(time.perf_counter())

  def intervals(self):
    """Steady step intervals (the first step of each epoch, which starts its iterator, is out)."""
    return [b - a for e in self.epochs for a, b in zip(e[1:-1], e[2:])]

  def steps(self):
    return sum(len(e) - 1 for e in self.epochs)

  def first_steps(self):
    return len(self.epochs)

  def first_step_times(self):
    return [e[1] - e[0] for e in self.epochs if len(e) > 1]

  def epoch_end_times(self):
    return [end - e[-1] for e, end in zip(self.epochs, self.epoch_ends)]

  def epoch_throughputs(self, batch_size):
    return [batch_size * (len(e) - 2) / (e[-1] - e[1]) for e in self.epochs if len(e) > 3]


@dataclasses.dataclass
class Setup:
  config: loader.Config
  store: mstore.Store
  root_specs: list
  task: object
  task_data: mdata.TaskData
  hparams: dict
  image_size: int
  channels: int
  strategy: object

  def plan(self, kind, seed=1):
    method = {"head_only": "multi_head", "adapters": "residual_adapters",
              "full": "full_finetune"}.get(kind)
    if method is not None:
      return baselines.plan(method, self.store, self.config, self.task, self.root_specs, 32, seed)
    if kind == "top_block":  # a typical mutation: the last block cloned, a new head
      planned = baselines.plan("multi_head", self.store, self.config, self.task,
                               self.root_specs, 32, seed)
      last = max(i for i, p in enumerate(planned) if p.spec.kind == "transformer_block")
      p = planned[last]
      planned[last] = mpaths.clone(p.spec, p.weights, None, self.task.name,
                                   mroot.task_access(self.task))
      return planned
    raise ValueError(kind)


def make_setup(args, workdir) -> Setup:
  config = loader.load(args.config)
  store = mstore.Store.create(os.path.join(workdir, "system"), config.proto)
  # The random root: its weights do not change speed, and it skips the config's pretraining.
  root_specs = [store.write_component(spec, weights) for spec, weights in mroot.make_root(config)]
  data = {t.name: mdata.load_task(t) for t in config.tasks}
  name = args.task or max(data, key=lambda n: data[n].sizes["train"])
  hparams = hp.defaults(config.search_space)
  # The config's strategy, as bin/evolve.py and bin/baselines.py make it (default: one device).
  strategy = mstrategy.make_strategy(config.proto.distribution)
  return Setup(config, store, root_specs, config.task(name), data[name], hparams,
               config.proto.root.image_size, config.proto.root.channels, strategy)


# --- 1 + 2: throughput against plain Keras, head-only against full fine-tuning ----------------

def plain_keras_model(setup, planned, total_steps):
  """The same architecture compiled the way a plain Keras user would, with Keras' own SGD and
  cosine schedule set to the values mtsys uses."""
  model, _ = assembly.build_path_model(planned, setup.image_size, setup.channels)
  h = setup.hparams
  assert h.get("lr_schedule", "cosine") == "cosine", "the plain side implements the cosine one"
  warmup = min(int(round(float(h["warmup_ratio"]) * total_steps)), total_steps - 1)
  schedule = keras.optimizers.schedules.CosineDecay(
      0.0, max(1, total_steps - warmup), warmup_target=float(h["learning_rate"]),
      warmup_steps=warmup)
  optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=float(h["momentum"]),
                                   nesterov=bool(h["nesterov"]), global_clipnorm=1.0)
  model.compile(optimizer=optimizer,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
  return model


def throughput(setup, trainer, args, log):
  bs = setup.config.proto.evolution.batch_size
  steps = min(args.throughput_steps, -(-setup.task_data.sizes["train"] // bs))
  budget = trainer.Budget(args.throughput_epochs, steps, bs)
  total = budget.epochs * budget.steps_per_epoch(setup.task_data.sizes["train"])
  cache = trainer.ModelCache() if hasattr(trainer, "ModelCache") else None
  extra = {"cache": cache} if cache is not None else {}
  common = dict(batch_size=bs, image_size=setup.image_size, channels=setup.channels,
                hparams=setup.hparams, seed=1)
  out = {}
  for kind in ("head_only", "full"):
    planned = setup.plan(kind)
    plain = plain_keras_model(setup, planned, total)
    engine_tp, plain_tp, engine_step = [], [], []
    # Many short runs, each pair back to back: other processes' load drifts slower than that.
    for r in range(args.throughput_repeats + 1):  # run 0 warms both up; the order alternates
      for side in (("engine", "plain") if r % 2 else ("plain", "engine")):
        timer = StepTimer()
        if side == "engine":
          trainer.train_path(setup.plan(kind), setup.task_data, setup.hparams, budget,
                             image_size=setup.image_size, channels=setup.channels, seed=1,
                             strategy=setup.strategy, callbacks=[timer], **extra)
        else:
          train_ds = mdata.make_dataset(setup.task_data, "train", training=True, repeat=True,
                                        drop_remainder=True, **common)
          if hasattr(trainer, "_input_options"):  # the same input pipeline as mtsys'
            train_ds = train_ds.with_options(trainer._input_options())
          val_ds = mdata.make_dataset(setup.task_data, "validation", training=False, **common)
          plain.fit(train_ds, epochs=budget.epochs, steps_per_epoch=steps,
                    validation_data=val_ds, callbacks=[timer], verbose=0)
        if r == 0:
          continue
        tp = float(np.median(timer.epoch_throughputs(bs)))
        (engine_tp if side == "engine" else plain_tp).append(tp)
        if side == "engine":
          engine_step.append(float(np.median(timer.intervals())))
    # Each repeat's two runs are back to back: their ratio is least affected by load drift.
    out[kind] = dict(engine_examples_per_s=float(np.median(engine_tp)),
                     keras_examples_per_s=float(np.median(plain_tp)),
                     ratio=float(np.median(np.array(engine_tp) / np.array(plain_tp))),
                     step_ms=1000 * float(np.median(engine_step)))
    log(f"  {kind:10s} mtsys {out[kind]['engine_examples_per_s']:8.0f} ex/s   keras.fit "
        f"{out[kind]['keras_examples_per_s']:8.0f} ex/s   ratio {out[kind]['ratio']:.3f}   "
        f"step {out[kind]['step_ms']:.2f} ms")
  return out


# --- 3: fixed cost per child --------------------------------------------------------------------

def child_costs(setup, trainer, args, log):
  ev = setup.config.proto.evolution
  budget = trainer.Budget(ev.epochs_per_child, ev.max_batches_per_epoch, ev.batch_size)
  kinds = KINDS if not args.quick else ("head_only", "full")
  has_cache = hasattr(trainer, "ModelCache")
  cache = trainer.ModelCache() if has_cache else None
  runs = {k: {"cold": [], "warm": []} for k in kinds}

  def child(kind, use_cache, seed):
    timer = StepTimer()
    extra = {"cache": cache} if use_cache and has_cache else {}
    planned = setup.plan(kind, seed=seed)
    start = time.perf_counter()
    result = trainer.train_path(planned, setup.task_data, setup.hparams, budget,
                                image_size=setup.image_size, channels=setup.channels,
                                seed=seed, strategy=setup.strategy, callbacks=[timer], **extra)
    end = time.perf_counter()
    total = end - start
    step = float(np.median(timer.intervals()))
    train = sum(timer.intervals()) + timer.first_steps() * step
    before_fit = timer.train_begin - start
    first = sum(timer.first_step_times()) - timer.first_steps() * step
    epoch_ends = sum(timer.epoch_end_times())
    return dict(total_s=total, train_s=train, fixed_s=total - train, step_s=step,
                setup_s=before_fit, first_steps_s=first, epoch_ends_s=epoch_ends,
                other_s=total - train - before_fit - first - epoch_ends,
                steps=timer.steps(), reused=bool(getattr(result, "reused_model", False)))

  # Cold: a new structure each time (cache=None builds and compiles). Warm: cache hits.
  child("head_only", False, 0)  # warms TensorFlow, the data pipeline and the process up
  for r in range(args.repeats):
    for kind in kinds:
      if r < max(2, args.repeats // 2):
        runs[kind]["cold"].append(child(kind, False, 10 + r))
      if has_cache:
        if r == 0:
          child(kind, True, 99)  # compiles this structure into the cache
        runs[kind]["warm"].append(child(kind, True, 20 + r))

  out = {}
  for kind in kinds:
    row = {}
    for mode, rs in runs[kind].items():
      if not rs:
        continue
      med = {k: float(np.median([x[k] for x in rs]))
             for k in ("total_s", "train_s", "fixed_s", "step_s", "setup_s", "first_steps_s",
                       "epoch_ends_s", "other_s")}
      med["share"] = float(np.median([x["fixed_s"] / x["total_s"] for x in rs]))
      med["steps"] = rs[0]["steps"]
      med["reused"] = all(x["reused"] for x in rs)
      row[mode] = med
    out[kind] = row
    for mode, m in row.items():
      log(f"  {kind:10s} {mode:5s} {m['total_s']:6.3f} s = {m['train_s']:6.3f} s training "
          f"({m['steps']} x {1000 * m['step_s']:5.2f} ms) + {m['fixed_s']:6.3f} s fixed "
          f"[{m['setup_s']:.3f} setup, {m['first_steps_s']:.3f} first steps, "
          f"{m['epoch_ends_s']:.3f} validation+snapshots, {m['other_s']:.3f} other]  "
          f"share {m['share']:.3f}")
  return out, budget


def aggregate_part(rows, mode, part):
  """The share of the mix's total child time spent in `part` ("fixed" or one part of it)."""
  spent = [r[mode][f"{part}_s"] for r in rows.values() if mode in r]
  total = [r[mode]["total_s"] for r in rows.values() if mode in r]
  return float(sum(spent) / sum(total)) if total else None


def main(argv=None):
  args = parse_args(argv)
  trainer = load_trainer(args.trainer_file)
  log = lambda s: print(s, flush=True)  # noqa: E731
  workdir = tempfile.mkdtemp(prefix="engine_overhead.")
  started = time.perf_counter()
  try:
    setup = make_setup(args, workdir)
    ev = setup.config.proto.evolution
    jit = trainer.resolve_jit_compile("auto") if hasattr(trainer, "resolve_jit_compile") else "auto"
    log(f"engine overhead: config {setup.config.name}, task '{setup.task.name}' "
        f"({setup.task_data.sizes['train']} training examples), repeats {args.repeats}, "
        f"jit_compile {jit}, strategy {type(setup.strategy).__name__}, "
        f"TF {tf.__version__}, Keras {keras.__version__}, "
        f"{os.cpu_count()} CPUs, trainer {args.trainer_file or 'mtsys.train.trainer'}")
    log("\n1-2. training throughput, mtsys.train vs plain keras.Model.fit (median of repeats)")
    tp = throughput(setup, trainer, args, log)
    log(f"\n3. fixed cost per child: {ev.epochs_per_child} epochs x "
        f"{ev.max_batches_per_epoch} batches of {ev.batch_size} (the config's child budget); "
        "setup = until the first step starts\n   (data, build/compile or reuse), first steps = "
        "their excess over a steady step (iterator start, tracing), validation+snapshots = "
        "epoch ends")
    children, budget = child_costs(setup, trainer, args, log)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)

  fit_ratio = min(v["ratio"] for v in tp.values())
  head_ratio = tp["head_only"]["step_ms"] / tp["full"]["step_ms"]
  warm = aggregate_part(children, "warm", "fixed")
  cold = aggregate_part(children, "cold", "fixed")
  share = warm if warm is not None else cold
  validation = aggregate_part(children, "warm" if warm is not None else "cold", "epoch_ends")
  figures = {
      "benchmark": "engine_overhead",
      "config": setup.config.name,
      "task": setup.task.name,
      "fit_throughput_ratio": round(fit_ratio, 4),
      "head_only_step_ratio": round(head_ratio, 4),
      "child_fixed_cost_share": round(share, 4),
      "child_fixed_cost_share_cold": round(cold, 4),
      "child_fixed_cost_share_by_path": {
          k: {m: round(v[m]["share"], 4) for m in v} for k, v in children.items()},
      "child_seconds_by_path": {
          k: {m: round(v[m]["total_s"], 3) for m in v} for k, v in children.items()},
      "child_fixed_seconds_by_path": {
          k: {m: round(v[m]["fixed_s"], 3) for m in v} for k, v in children.items()},
      "child_fixed_breakdown_seconds": {
          k: {m: {part: round(v[m][f"{part}_s"], 3)
                  for part in ("setup", "first_steps", "epoch_ends", "other")} for m in v}
          for k, v in children.items()},
      # Of child_fixed_cost_share: the epoch ends (validation on the whole validation split
      # after every epoch, and keeping the best epoch's weights), and everything else.
      "child_validation_share": round(validation, 4),
      "child_fixed_cost_share_excluding_validation": round(share - validation, 4),
      "fit_throughput_ratio_by_path": {k: round(v["ratio"], 4) for k, v in tp.items()},
      "examples_per_s": {k: {"mtsys": round(v["engine_examples_per_s"], 1),
                             "keras": round(v["keras_examples_per_s"], 1)}
                         for k, v in tp.items()},
      "step_ms": {k: round(v["step_ms"], 3) for k, v in tp.items()},
      "child_budget": {"epochs": budget.epochs, "max_batches_per_epoch":
                       budget.max_batches_per_epoch, "batch_size": budget.batch_size},
      "repeats": args.repeats,
      "targets": TARGETS,
      "meets_targets": {
          "fit_throughput_ratio": fit_ratio >= 0.95,
          "head_only_step_ratio": head_ratio < 1.0,
          "child_fixed_cost_share": share < 0.10},
      "seconds": round(time.perf_counter() - started, 1),
  }
  log("\nsummary")
  log(f"  {'figure':44s} {'value':>8s}  target")
  notes = {"child_fixed_cost_share_cold": "(the first child of each structure)",
           "child_validation_share": "(part of child_fixed_cost_share)",
           "child_fixed_cost_share_excluding_validation": "(the rest of it)"}
  for k in ("fit_throughput_ratio", "head_only_step_ratio", "child_fixed_cost_share",
            "child_validation_share", "child_fixed_cost_share_excluding_validation",
            "child_fixed_cost_share_cold"):
    log(f"  {k:44s} {figures[k]:8.3f}  {TARGETS.get(k, notes.get(k, ''))}")
  print(json.dumps(figures, sort_keys=True), flush=True)


if __name__ == "__main__":
  main()
