"""The sub-commands of `bin/group_tasks.py` (Standley et al. task grouping).

    bin/group_tasks.py select --candidates=VAL.csv [--test_candidates=TEST.csv] \\
        --budgets=1:5:0.5 [--tasks=a,b,c] [--results_json=PATH]

    bin/group_tasks.py train --config=chars-lite --output_dir=OUT [--method=exact|esa|hoa|tag]

    bin/group_tasks.py report --output_dir=OUT --budgets=1:6:0.5 [--report_dir=DIR] [--seed=N]

`select` reads candidate tables (`candidates_csv`), chooses the proven-optimal networks for
every budget (`selection`), prints a table and writes one JSON object per budget. `train`
trains the candidate networks (`mtsys.grouping.train_lib`) into OUT, whose `VAL.csv` and
`TEST.csv` `select` then reads. `report` compares the methods OUT holds with the exact optimum
(Tables 2 and 3, groupings and loss-versus-budget curves: `mtsys.grouping.report`).

`--budgets` is `START:STOP:STEP` (both ends included; the step must divide STOP - START) or a
comma list; budgets are exact decimals, so 0.1 steps do not drift.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from fractions import Fraction
from typing import Callable, Optional, Sequence

from mtsys import errors
from mtsys.grouping import candidates_csv
from mtsys.grouping import selection

MAX_BUDGETS = 10_000


class UsageError(errors.UserError, ValueError):
  """A command line that asks for something the sub-command does not do."""


@dataclasses.dataclass
class Options:
  """What `bin/group_tasks.py`'s flags ask for (see their help texts); None: not given."""

  candidates: Optional[str] = None
  test_candidates: Optional[str] = None
  budgets: Optional[str] = None
  tasks: Optional[Sequence[str]] = None
  results_json: Optional[str] = None
  config: Optional[str] = None  # train: a config file or shipped name
  root_checkpoint: Optional[str] = None  # train: replaces the config's root.checkpoint
  # train: `mtsys.grouping.train_lib.Options` without the flags above (None: not `train`).
  train: Optional[object] = None
  output_dir: Optional[str] = None  # report: the train output directory read
  report_dir: Optional[str] = None  # report: where its files go (None: OUTPUT_DIR/report)
  seed: Optional[int] = None  # report: the random groupings' seed (None: 0)
  save_system: Optional[str] = None  # select: write the grouping at `save_budget` as a system
  save_budget: Optional[str] = None


def parse_budgets(spec: str) -> list[Fraction]:
  """`START:STOP:STEP` (both ends included) or `B1,B2,...` as exact fractions."""
  def bad(why):
    return UsageError(f"Invalid --budgets={spec}: {why}; expected START:STOP:STEP (e.g. "
                      "1:5:0.5, both ends included) or a comma list (e.g. 1,2.5,4)")

  text = spec.strip()
  if not text:
    raise bad("no budget")
  try:
    if ":" in text:
      parts = text.split(":")
      if len(parts) != 3:
        raise bad(f"{len(parts)} fields")
      start, stop, step = (selection.exact(p.strip()) for p in parts)
      if stop < start:
        raise bad(f"STOP {selection.fmt(stop)} is below START {selection.fmt(start)}")
      count = (stop - start) / step
      if count.denominator != 1:
        raise bad(f"STEP {selection.fmt(step)} does not divide STOP - START = "
                  f"{selection.fmt(stop - start)}")
      if count >= MAX_BUDGETS:
        raise bad(f"{int(count) + 1} budgets, more than {MAX_BUDGETS}")
      return [start + i * step for i in range(int(count) + 1)]
    return [selection.exact(p.strip()) for p in text.split(",")]
  except selection.SelectionError as e:
    raise bad(str(e)) from None


def select(options: Options, *, out: Callable[[str], None] = print,
           engine: str = "auto") -> list[selection.Selection]:
  """The `select` sub-command: returns the selections (also printed and written as JSON)."""
  for name in ("config", "root_checkpoint"):
    if getattr(options, name) is not None:
      raise UsageError(f"select does not use --{name}; its input is --candidates=CSV")
  if not options.candidates:
    raise UsageError("select needs --candidates=CSV: the candidate networks' validation losses")
  if not options.budgets:
    raise UsageError("select needs --budgets, e.g. --budgets=1:5:0.5 or --budgets=1,2,3")
  budgets = parse_budgets(options.budgets)
  if bool(options.save_system) != bool(options.save_budget):
    raise UsageError("--save_system and --save_budget go together: expected both or neither.")
  save_budget = parse_budgets(options.save_budget)[0] if options.save_budget else None
  if save_budget is not None and save_budget not in budgets:
    budgets = sorted(budgets + [save_budget])
  candidates_file, test_file = options.candidates, options.test_candidates
  if os.path.isdir(candidates_file):  # a `train` output directory
    candidates_file = os.path.join(options.candidates, "VAL.csv")
    if not test_file and os.path.exists(os.path.join(options.candidates, "TEST.csv")):
      test_file = os.path.join(options.candidates, "TEST.csv")
  if save_budget is not None:
    from mtsys.grouping import save
    root = save.candidates_root(options.candidates)  # fails before any selection work
  validation = candidates_csv.read(candidates_file)
  test = None
  if test_file:
    test = candidates_csv.read_test(test_file, validation)
  results = selection.select(validation, budgets, tasks=options.tasks, test=test, engine=engine)
  tasks = list(results[0].assignment)
  unit = selection.cost_grid(validation.costs)
  out(f"Exact network selection for {len(tasks)} tasks [{', '.join(tasks)}] from "
      f"{len(validation.names)} candidates in {options.candidates} (cost grid "
      f"{selection.fmt(unit)}; proven optimal at every budget)"
      + (f"; test losses from {options.test_candidates}" if test is not None else ""))
  out(selection.format_table(results))
  out("")
  out(selection.format_per_task(results))
  if options.results_json:
    write_json(options.results_json, [r.to_json() for r in results])
    out(f"Results written to {options.results_json}")
  if save_budget is not None:
    chosen = next(r for r in results if r.budget == save_budget)
    out(f"Saving the grouping at budget {selection.fmt(save_budget)} "
        f"({', '.join(chosen.networks)}) as a system at {options.save_system}:")
    save.save(root, chosen.assignment, options.save_system, log=out)
    out(f"Saved: inspect, export and serve it like any system "
        f"(bin/inspect_system.py summary --system_dir={options.save_system}).")
  return results


def write_json(path: str, payload) -> None:
  """Writes `payload` as indented JSON: locally by a temporary file renamed into place (no
  TensorFlow import); URLs through the store's `fileio.write_json` (tf.io.gfile)."""
  if "://" in path:
    from mtsys.system import fileio  # pylint: disable=g-import-not-at-top
    fileio.write_json(path, payload)
    return
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=parent, prefix=os.path.basename(path) + ".tmp-")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(payload, f, indent=2)
      f.write("\n")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def train(options: Options, *, out: Callable[[str], None] = print) -> dict:
  """Trains the candidates `options.train` asks for (`mtsys.grouping.train_lib.run`)."""
  if not options.config:
    raise UsageError("train needs --config: expected a config file or a shipped config name.")
  if options.train is None or not getattr(options.train, "output_dir", None):
    raise UsageError("train needs --output_dir: expected the directory the candidates go to.")
  from mtsys.config import loader
  from mtsys.grouping import train_lib  # TensorFlow: only for train
  config = loader.load(options.config, root_checkpoint=options.root_checkpoint or "")
  budgets = parse_budgets(options.budgets) if options.budgets else ()
  train_options = dataclasses.replace(options.train, tasks=options.tasks, budgets=budgets,
                                      results_json=options.results_json)
  return train_lib.run(config, train_options, out)


def report(options: Options, *, out: Callable[[str], None] = print) -> dict:
  """The `report` sub-command (`mtsys.grouping.report.run`): returns the report's JSON object."""
  unused = [f"--{name}" for name in ("config", "root_checkpoint", "candidates",
                                     "test_candidates", "tasks", "results_json")
            if getattr(options, name)]
  if unused:
    raise UsageError(f"report does not use {', '.join(unused)}; it reads every task and method "
                     "of --output_dir")
  if not options.output_dir:
    raise UsageError("report needs --output_dir: expected the directory `train` wrote")
  if not options.budgets:
    raise UsageError("report needs --budgets, e.g. --budgets=1:6:0.5")
  from mtsys.grouping import report as mreport
  return mreport.run(mreport.Options(
      output_dir=options.output_dir, budgets=parse_budgets(options.budgets),
      report_dir=options.report_dir, seed=0 if options.seed is None else options.seed), out)


# Sub-command name -> function(options, *, out).
COMMANDS = {
    "select": select,
    "train": train,
    "report": report,
}


def run(args: Sequence[str], options: Options, *, out: Callable[[str], None] = print):
  """Runs the sub-command named by `args` (the positional command-line arguments)."""
  known = ", ".join(COMMANDS)
  if len(args) != 1:
    got = " ".join(args) if args else "none"
    raise UsageError(f"Expected one sub-command, one of [{known}]; got {got}")
  if args[0] not in COMMANDS:
    raise UsageError(f"Unknown sub-command '{args[0]}'; expected one of [{known}]")
  return COMMANDS[args[0]](options, out=out)
