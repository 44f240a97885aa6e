"""The `bin/group_tasks.py train` job: train the candidate networks of a task set, or an
approximation's (ESA, HOA, TAG), and write the candidate CSVs the selection reads.

Everything is checked before the first write (method, tasks, budgets, the trunk's source, the
tasks' data, an output directory trained with other settings); then the output directory's run
lock is taken and training goes candidate by candidate, one progress line each.

Output directory (OUT) layout (the candidate areas: `mtsys.grouping.candidates`):

| path | what |
|---|---|
| `root/` | a system holding the root the candidates' trunks start from (pretrained once when the config asks; absent with `trunk_from`) |
| `candidates/<network>/`, `candidates/<network>.json`, `VAL.csv`, `TEST.csv` | fully trained candidates (exact; HOA's and TAG's singles and pairs; the networks an approximation chose) |
| `esa/` | ESA's short-trained candidates (an area of its own) and their CSVs |
| `hoa/VAL.csv`, `hoa/TEST.csv` | HOA's measured and predicted candidates |
| `tag/` | TAG's all-task network (an area), `affinity.json`, predicted `VAL.csv` / `TEST.csv` |
| `<method>/chosen.json` | with `budgets`: the networks the selection chose per budget, trained fully into OUT |

Budget per candidate: `epochs` x at most `max_batches_per_epoch` batches of `batch_size` (an
epoch of a group as long as that of its largest task), by default the config's `baselines`
budget, which defaults to the evolution's budget per task (muNet eq. 4); learning rate by
default the config's full fine-tuning baseline rate (a candidate fine-tunes its whole trunk).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
from typing import Callable, Optional, Sequence

from mtsys import errors
from mtsys import faults as mfaults
from mtsys.config import hparams as hp
from mtsys.config import loader
from mtsys.protos import mtsys_pb2
from mtsys.system import fileio

METHODS = ("exact", "esa", "hoa", "tag")
_join = fileio.join


@dataclasses.dataclass
class Options:
  """What `bin/group_tasks.py train`'s flags ask for."""

  output_dir: str
  method: str = "exact"  # one of METHODS
  tasks: Optional[Sequence[str]] = None  # default: the config's tasks
  trunk_from: Optional[str] = None  # "SYSTEM_DIR:TASK"; default: the config's root
  epochs: int = 0  # 0: the config's baselines.epochs
  max_batches_per_epoch: int = 0  # 0: baselines.max_batches_per_epoch
  batch_size: int = 0  # 0: baselines.batch_size
  learning_rate: float = 0.0  # 0: baselines' full_finetune rate, else the search space default
  seed: Optional[int] = None  # None: baselines.seed
  esa_fraction: float = 0.2  # ESA: the share of the budget a candidate trains for
  tag_every: int = 10  # TAG: steps between lookaheads
  # Approximations: select at these budgets (numbers, e.g. `cli_lib.parse_budgets`' fractions),
  # then train the chosen networks fully.
  budgets: Sequence[float] = ()
  distribution: Optional[mtsys_pb2.DistributionConfig] = None
  verbose: int = 0  # 1: a line per epoch of every candidate
  results_json: Optional[str] = None


# (validation CSV path, budgets) -> {budget: chosen network names}
Choose = Callable[[str, Sequence[float]], dict]


def run(config: loader.Config, options: Options, out: Callable[[str], None] = print, *,
        faults: Optional[mfaults.Injector] = None, choose: Optional[Choose] = None) -> dict:
  """Trains what `options.method` needs; returns a summary (also written to `results_json`).

  `choose` (approximations with `budgets`): the selection, by default
  `mtsys.grouping.selection` on the method's validation CSV.

  Raises:
    ConfigError, UnknownTaskError, DataError, SystemNotFoundError, IncompatibleSystemError:
      before anything is written, naming the bad value.
  """
  # Heavy (TensorFlow) imports only once the options are known to be sensible.
  _check_options(config, options)
  from mtsys.evolution import preflight
  from mtsys.grouping import approximations
  from mtsys.grouping import candidates as mcand
  from mtsys.grouping import networks
  from mtsys.system import compat
  from mtsys.system import lock as mlock
  from mtsys.system import store as mstore
  from mtsys.train import pretrain
  from mtsys.train import trainer

  t0 = time.perf_counter()
  faults = faults or mfaults.Injector()
  order = [t.name for t in config.tasks]
  tasks = list(options.tasks or order)
  mcand.enumerate_candidates(tasks)  # an empty or repeated task list
  task_data = preflight.load_tasks(config, tasks)  # unknown tasks, bad data
  tasks.sort(key=order.index)  # one name per network, whatever order the tasks are given in
  least = 1.0 if len(tasks) > 1 else 0.5  # the all-task network; a half-size single
  low = [b for b in options.budgets if b < least]
  if low:
    raise errors.ConfigError(
        f"Budget {low[0]:g} is below the cheapest covering solution: serving all {len(tasks)} "
        f"task(s) {tasks} costs at least {least:g}.")
  trunk = networks.path_trunk(options.trunk_from) if options.trunk_from else None
  blocks = trunk.num_blocks if trunk else config.arch.num_layers
  if blocks < 2:
    raise errors.ConfigError(
        f"Half-size candidates keep the first half of the trunk's transformer blocks; the trunk "
        f"({options.trunk_from or 'root'}) has {blocks}: expected at least 2.")
  if trunk is None:
    pretrain.check_root_source(config)
  bl = config.proto.baselines
  budget = trainer.Budget(options.epochs or int(bl.epochs),
                          options.max_batches_per_epoch or int(bl.max_batches_per_epoch),
                          options.batch_size or int(bl.batch_size))
  hparams = hp.defaults(config.search_space)
  hparams["learning_rate"] = float(options.learning_rate or bl.method_learning_rate.get(
      "full_finetune", 0) or bl.learning_rate or hparams["learning_rate"])
  seed = int(bl.seed if options.seed is None else options.seed)
  settings = networks.Settings(budget, hparams, seed, {t: 1009 * order.index(t) for t in tasks})
  signature = {"epochs": budget.epochs, "max_batches_per_epoch": budget.max_batches_per_epoch,
               "batch_size": budget.batch_size, "learning_rate": hparams["learning_rate"],
               "seed": seed, "trunk": options.trunk_from or "root"}
  short = approximations.esa_budget(budget, options.esa_fraction)
  short_signature = dict(signature, epochs=short.epochs,
                         max_batches_per_epoch=short.max_batches_per_epoch,
                         esa_fraction=options.esa_fraction)
  root_dir = options.output_dir.rstrip("/")
  areas = {"": signature, "esa": short_signature, "tag": signature}
  for sub, sig in areas.items():
    mcand.check_area(_join(root_dir, sub) if sub else root_dir, sig)
  if trunk is None:
    try:
      stored = mstore.Store.open(_join(root_dir, "root")).read_state().config
      compat.check_compatible(stored, config)
    except mstore.SystemNotFoundError:
      pass

  with mlock.acquire(root_dir):
    for sub in areas:
      mcand.sweep(_join(root_dir, sub) if sub else root_dir, faults)
    if trunk is None:
      store = mstore.Store.create(_join(root_dir, "root"), config.proto, faults=faults)
      store.sweep_leftovers()
      pretrain.ensure_root(store, config, log=out)
      trunk = networks.root_trunk(store, config)

    def job(sub: str, job_settings, sig) -> mcand.Job:
      return mcand.Job(_join(root_dir, sub) if sub else root_dir, config, trunk, task_data,
                       job_settings, sig, author=f"grouping/{options.method}", faults=faults)

    full = job("", settings, signature)
    kwargs = dict(log=out, verbose=bool(options.verbose))
    out(f"Task grouping '{options.method}' of {len(tasks)} task(s) {tasks} in {root_dir}: trunk "
        f"{trunk.source} ({trunk.num_blocks} blocks), {budget.epochs} epoch(s) x <= "
        f"{budget.max_batches_per_epoch} batches of {budget.batch_size}, learning rate "
        f"{hparams['learning_rate']:g}")
    if options.method == "exact":
      cands = mcand.enumerate_candidates(tasks)
      records = mcand.train_all(full, cands, tasks, **kwargs)
      summary = {"validation_csv": _join(root_dir, "VAL.csv"),
                 "test_csv": _join(root_dir, "TEST.csv"),
                 **approximations.cost_of(records, [c.name for c in cands])}
    elif options.method == "esa":
      short_settings = dataclasses.replace(settings, budget=short)
      summary = approximations.run_esa(job("esa", short_settings, short_signature), tasks,
                                       **kwargs)
    elif options.method == "hoa":
      summary = approximations.run_hoa(full, _join(root_dir, "hoa"), tasks, **kwargs)
    else:
      summary = approximations.run_tag(full, job("tag", settings, signature), tasks,
                                       every=options.tag_every, **kwargs)
    if options.method != "exact" and options.budgets:
      summary.update(chosen_training=approximations.train_chosen(
          full, _join(root_dir, options.method), summary["validation_csv"], tasks,
          choose or select_from_csv, options.budgets, **kwargs))
  exact_cost = sum(mcand.train_cost(c, budget.epochs * budget.steps_per_epoch(
      max(task_data[t].sizes["train"] for t in c.tasks)))
      for c in mcand.enumerate_candidates(tasks))
  result = {"method": options.method, "output_dir": root_dir, "tasks": tasks,
            "trunk": options.trunk_from or "root", **summary,
            "exact_train_cost": exact_cost,
            "cost_share": summary["train_cost"] / exact_cost,
            "seconds": time.perf_counter() - t0}
  out(f"Done in {result['seconds']:.1f}s: {summary['networks']} network(s) trained or reused, "
      f"training cost {result['cost_share']:.1%} of the exact method's; candidates in "
      f"{summary['validation_csv']} and {summary['test_csv']}")
  if options.results_json:
    fileio.write_json(options.results_json, result)
    out(f"Results written to {options.results_json}")
  return result


def _check_options(config: loader.Config, options: Options) -> None:
  """The checks that need no data: method, budget numbers, ESA fraction, TAG period, strategy."""
  if options.method not in METHODS:
    raise errors.ConfigError(f"Unknown grouping method '{options.method}'; expected one of "
                             f"{list(METHODS)}.")
  if options.tasks is not None and not list(options.tasks):
    raise errors.ConfigError("Empty task list: expected at least one task of "
                             f"{[t.name for t in config.tasks]}.")
  for name in ("epochs", "max_batches_per_epoch", "batch_size", "tag_every"):
    value = getattr(options, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise errors.ConfigError(f"Invalid {name}={value!r}: expected a positive integer (or 0 "
                               "for the default).")
  if not options.tag_every:
    raise errors.ConfigError("Invalid tag_every=0: expected a positive number of steps.")
  if not (isinstance(options.learning_rate, (int, float)) and options.learning_rate >= 0
          and math.isfinite(options.learning_rate)):
    raise errors.ConfigError(f"Invalid learning_rate={options.learning_rate!r}: expected a "
                             "positive number (or 0 for the default).")
  if not (isinstance(options.esa_fraction, (int, float)) and 0 < options.esa_fraction <= 1):
    raise errors.ConfigError(f"Invalid esa_fraction={options.esa_fraction!r}: expected a value "
                             "in (0, 1].")
  for b in options.budgets:
    if not (isinstance(b, numbers.Real) and math.isfinite(b) and b > 0):
      raise errors.ConfigError(f"Invalid budget {b!r}: expected a positive number.")
  strategy = (options.distribution.strategy if options.distribution is not None
              else config.proto.distribution.strategy) or "one_device"
  if strategy != "one_device":
    raise errors.ConfigError(f"Task grouping trains each candidate on one device; strategy "
                             f"'{strategy}' is not supported (expected 'one_device').")


def select_from_csv(validation_csv: str, budgets: Sequence[float]) -> dict:
  """The default `Choose`: `mtsys.grouping.selection` on a candidate CSV -> {budget: names}."""
  from mtsys.grouping import candidates_csv
  from mtsys.grouping import selection
  chosen = selection.select(candidates_csv.read(validation_csv), list(budgets))
  return {float(b): list(s.networks) for b, s in zip(budgets, chosen)}
