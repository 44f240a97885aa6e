"""The `bin/group_tasks.py report` job: tables, groupings and loss-versus-budget curves of a
`train` output directory (OUT), as text, JSON and PNG.

What it reads from OUT (whatever is there; a method whose files are missing is skipped and the
report says so):

| file | used for |
|---|---|
| `VAL.csv`, `TEST.csv` | the truth: every fully trained candidate (required) |
| `{esa,hoa,tag}/VAL.csv` | each approximation's short-trained or predicted losses |
| `tag/affinity.json` | TAG's inter-task affinity table |

What it writes to REPORT_DIR (default OUT/report): `report.txt` (also printed), `report.json`,
`loss_vs_budget.png` and `pairwise.png` (`report_plots`).

Methods, at every budget: `exact`, the proven optimum of the selection on the true VAL.csv;
`esa`, `hoa`, `tag`, the selection on the method's own CSV, whose chosen networks are then
evaluated in the truth (their cost is paid; each task is served by the chosen network with the
best TRUE validation loss, as the deployed grouping would be, so the optimum's validation loss
is a lower bound of every method's); `random`, the mean over seeded draws of random groupings
(partitions of the tasks into candidate networks of total cost <= budget, each step choosing
uniformly among the next groups that leave the rest coverable); `all_task`, the one network
solving every task; `independent`, one full-size single-task network per task. The last two
have a fixed cost and are reported at the budgets that afford them. A method's `gap` at a budget
is (its test loss - the optimum's) / the optimum's; `<method>_gap_mean` / `_max` summarise the
sweep (null when never measurable). The same on validation loss, `<method>_validation_gap_mean`
/ `_max`, measures the selection alone: the optimum's validation loss is the least by
construction, so these are never negative, while a test gap also carries how differently the
two splits rank groupings (a method can beat the validation optimum on test by chance).

Table 2 (Standley et al.): entry [s][t] = 100 * (L_pair({s,t}, t) - L_single(t)) / L_single(t),
test losses, against the full-size single (`pairwise`) and, like the paper, the half-size one
(`pairwise_vs_half`); negative: training with s helps t. Table 3 (`pair_affinity`): the mean of
Table 2 and its transpose. TAG's affinity is reported as stored (positive: helps).

Local paths are read and written directly; URLs through tf.io.gfile (`mtsys.system.fileio`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from fractions import Fraction
from typing import Callable, Optional, Sequence

import numpy as np

from mtsys import errors
from mtsys import faults as mfaults
from mtsys.grouping import candidates_csv
from mtsys.grouping import selection
from mtsys.system import fileio

APPROXIMATIONS = ("esa", "hoa", "tag")
BASELINES = ("random", "all_task", "independent")
METHODS = ("exact",) + APPROXIMATIONS + BASELINES
MAX_RANDOM_TASKS = 12  # the random sampler's table has 2^n rows, filled in about 3^n steps
_join = fileio.join


@dataclasses.dataclass(frozen=True)
class Options:
  """What `bin/group_tasks.py report` asks for."""

  output_dir: str
  budgets: Sequence[Fraction]
  report_dir: Optional[str] = None  # None: OUTPUT_DIR/report
  seed: int = 0  # the random groupings'
  random_draws: int = 100


# --- I/O ----------------------------------------------------------------------------------------

def _exists(path: str) -> bool:
  return fileio.tf.io.gfile.exists(path) if "://" in path else os.path.exists(path)


def _write(path: str, data: bytes) -> None:
  if "://" in path:
    fileio.tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
    fileio.write_atomic(path, data, mfaults.Injector())
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)


def load_truth(output_dir: str):
  """(validation, test) candidates of OUT's fully trained networks."""
  if not output_dir or not _exists(output_dir):
    raise errors.DataFileNotFoundError(
        f"Output directory {output_dir!r} does not exist; expected the --output_dir of "
        "`bin/group_tasks.py train`")
  val, test = _join(output_dir, "VAL.csv"), _join(output_dir, "TEST.csv")
  for path in (val, test):
    if not _exists(path):
      raise errors.DataFileNotFoundError(
          f"No candidates: {path} does not exist; expected the fully trained candidates of "
          f"`bin/group_tasks.py train --output_dir={output_dir}`")
  validation = candidates_csv.read(val)
  return validation, candidates_csv.read_test(test, validation)


def _masks(c: selection.Candidates) -> list[int]:
  solved = ~np.isnan(c.losses)
  return [sum(1 << int(t) for t in np.flatnonzero(row)) for row in solved]


def _rows_by_mask(c: selection.Candidates) -> dict:
  """mask -> row indices, cheapest first."""
  out = {}
  for row, mask in enumerate(_masks(c)):
    out.setdefault(mask, []).append(row)
  return {m: sorted(rows, key=lambda r: c.costs[r]) for m, rows in out.items()}


# --- Tables 2 and 3 -----------------------------------------------------------------------------

def pairwise(val: selection.Candidates, test: selection.Candidates, half: bool = False):
  """Table 2 from the test losses: matrix[s][t] (None where a network is missing), with row,
  column and overall means; `half`: against the half-size singles (the cheapest single row,
  when cheaper than the full one). None without any entry."""
  by_mask, n = _rows_by_mask(val), len(val.tasks)
  matrix = [[None] * n for _ in range(n)]
  for t in range(n):
    singles = by_mask.get(1 << t, [])  # cheapest first
    if half:
      cheaper = len(singles) > 1 and val.costs[singles[0]] < val.costs[singles[-1]]
      reference = singles[0] if cheaper else None
    else:
      reference = singles[-1] if singles else None
    if reference is None or not test.losses[reference, t] > 0:
      continue
    single = test.losses[reference, t]
    for s in range(n):
      pair = by_mask.get((1 << t) | (1 << s), []) if s != t else []
      if pair:  # the dearest: the full-size pair network
        matrix[s][t] = 100.0 * (test.losses[pair[-1], t] - single) / single
  values = [v for row in matrix for v in row if v is not None]
  if not values:
    return None
  return {"tasks": list(val.tasks), "matrix": matrix,
          "row_mean": [_mean(row) for row in matrix],
          "column_mean": [_mean([row[t] for row in matrix]) for t in range(n)],
          "mean": _mean(values),
          "reference": "half-size single" if half else "full-size single"}


def pair_affinity(table: Optional[dict]) -> Optional[dict]:
  """Table 3: [s][t] for s < t, the mean of Table 2's [s][t] and [t][s]."""
  if table is None:
    return None
  m, n = table["matrix"], len(table["tasks"])
  upper = [[_mean([m[s][t], m[t][s]]) if t > s and None not in (m[s][t], m[t][s]) else None
            for t in range(n)] for s in range(n)]
  return {"tasks": table["tasks"], "matrix": upper}


def read_affinity(path: str, tasks: Sequence[str]) -> dict:
  """TAG's affinity.json, reordered to `tasks` when it has the same ones."""
  try:
    data = json.loads(candidates_csv.read_text(path))
    names, z = list(data["tasks"]), np.asarray(data["affinity"], np.float64)
    if z.shape != (len(names), len(names)):
      raise ValueError(f"affinity of shape {z.shape} for {len(names)} tasks")
  except (ValueError, KeyError, TypeError) as e:
    raise errors.DataError(f"{path}: unreadable affinity table ({e}); expected JSON with "
                           "'tasks' and an n x n 'affinity'") from None
  if sorted(names) == sorted(tasks):
    order = [names.index(t) for t in tasks]
    names, z = list(tasks), z[np.ix_(order, order)]
  return {"tasks": names, "matrix": z.tolist(), "kappa": data.get("kappa"),
          "lookaheads": data.get("lookaheads"), "source": path}


# --- Curves -------------------------------------------------------------------------------------

def evaluate(names: Sequence[str], val, test) -> dict:
  """The true losses of the networks `names`: each task served by the chosen network with the
  least true validation loss. Losses are None when a network is not among the truth's."""
  missing = [n for n in names if n not in val.names]
  if missing:
    return {"validation_loss": None, "test_loss": None, "missing": missing}
  rows = [val.names.index(n) for n in names]
  assignment, vals, tests = {}, [], []
  for t, task in enumerate(val.tasks):
    solving = [r for r in rows if not math.isnan(val.losses[r, t])]
    if not solving:
      raise errors.DataError(f"Networks {list(names)} were chosen to serve task '{task}', but "
                             "none of them solves it in the output directory's VAL.csv")
    best = min(solving, key=lambda r: val.losses[r, t])
    assignment[task] = val.names[best]
    vals.append(val.losses[best, t])
    tests.append(test.losses[best, t])
  return {"validation_loss": math.fsum(vals), "test_loss": math.fsum(tests),
          "assignment": assignment, "missing": []}


def exact_curve(val, test, budgets) -> list[dict]:
  """The optimum at every budget (InfeasibleBudgetError below the cheapest cover)."""
  return [dict(s.to_json(), missing=[])
          for s in selection.select(val, budgets, test=test)]


def method_curve(predicted: selection.Candidates, val, test, budgets) -> list[dict]:
  """Selection on `predicted` at each budget, the chosen networks evaluated in the truth."""
  out = []
  for b in budgets:
    try:
      s, = selection.select(predicted, [b], tasks=val.tasks)
    except selection.InfeasibleBudgetError as e:
      out.append({"budget": float(b), "networks": None, "cost": None, "validation_loss": None,
                  "test_loss": None, "infeasible": str(e)})
      continue
    entry = {"budget": float(b), "cost": float(s.cost), "networks": list(s.networks),
             "predicted_validation_loss": s.validation_loss}
    entry.update(evaluate(s.networks, val, test))
    out.append(entry)
  return out


def fixed_curve(names: Sequence[str], val, test, budgets) -> list[dict]:
  """A fixed set of networks, reported at the budgets that afford its cost."""
  cost = sum(selection.exact(float(val.costs[val.names.index(n)]), "cost") for n in names)
  truth = evaluate(names, val, test)
  return [dict(truth, budget=float(b), cost=float(cost), networks=list(names)) if cost <= b else
          {"budget": float(b), "cost": float(cost), "networks": list(names),
           "validation_loss": None, "test_loss": None, "infeasible": "over budget"}
          for b in budgets]


def random_curve(val, test, budgets, rng: np.random.Generator, draws: int) -> list[dict]:
  """Mean losses of `draws` random groupings per budget (module doc)."""
  n = len(val.tasks)
  unit = selection.cost_grid(val.costs)
  units = [int(selection.exact(float(c), "cost") / unit) for c in val.costs]
  by_mask, masks = _rows_by_mask(val), _masks(val)
  cover = [0] + [math.inf] * ((1 << n) - 1)  # least units to partition a task set
  for s in range(1, 1 << n):
    low, sub = s & -s, s
    while sub:
      if sub & low and sub in by_mask:
        cover[s] = min(cover[s], units[by_mask[sub][0]] + cover[s ^ sub])
      sub = (sub - 1) & s
  full, out = (1 << n) - 1, []
  for b in budgets:
    left0 = int(b // unit)
    if cover[full] > left0:
      out.append({"budget": float(b), "validation_loss": None, "test_loss": None,
                  "infeasible": "no partition of the tasks into candidates fits"})
      continue
    vals, tests, costs, example = [], [], [], None
    for _ in range(draws):
      rest, left, chosen = full, left0, []
      while rest:
        low, sub, options = rest & -rest, rest, []
        while sub:
          if sub & low:
            options += [r for r in by_mask.get(sub, ()) if units[r] + cover[rest ^ sub] <= left]
          sub = (sub - 1) & rest
        row = options[int(rng.integers(len(options)))]
        chosen.append(row)
        rest, left = rest & ~masks[row], left - units[row]
      vals.append(math.fsum(np.nansum(val.losses[chosen], axis=0)))
      tests.append(math.fsum(np.nansum(test.losses[chosen], axis=0)))
      costs.append(sum(units[r] for r in chosen) * float(unit))
      example = example or [val.names[r] for r in sorted(chosen)]
    out.append({"budget": float(b), "draws": draws, "cost": float(np.mean(costs)),
                "validation_loss": float(np.mean(vals)), "test_loss": float(np.mean(tests)),
                "test_loss_std": float(np.std(tests)), "example_networks": example})
  return out


def gaps(curves: dict) -> dict:
  """Per method: the relative test-loss gap to the optimum per budget, its mean and max; and
  the same on validation loss (`validation_per_budget`, `validation_mean`, `validation_max`)."""
  out = {}
  for method, entries in curves.items():
    if method == "exact":
      continue
    out[method] = {}
    for prefix, key in (("", "test_loss"), ("validation_", "validation_loss")):
      opt = [e[key] for e in curves["exact"]]
      per = [None if e.get(key) is None or not o else (e[key] - o) / o
             for e, o in zip(entries, opt)]
      known = [g for g in per if g is not None]
      out[method].update({f"{prefix}per_budget": per, f"{prefix}mean": _mean(known),
                          f"{prefix}max": max(known) if known else None})
    out[method]["budgets_measured"] = sum(g is not None for g in out[method]["per_budget"])
  return out


def _mean(values) -> Optional[float]:
  values = [v for v in values if v is not None]
  return float(math.fsum(values) / len(values)) if values else None


# --- The job ------------------------------------------------------------------------------------

def build(options: Options) -> dict:
  """Everything the report holds, as the JSON object (no file written)."""
  budgets = list(options.budgets)
  if not budgets:
    raise selection.SelectionError("No budget: expected at least one")
  out_dir = options.output_dir.rstrip("/") if options.output_dir else options.output_dir
  val, test = load_truth(out_dir)
  n, by_mask = len(val.tasks), _rows_by_mask(val)
  expected = (1 << n) - 1 + n
  complete = all(m in by_mask for m in range(1, 1 << n)) and all(
      len(by_mask[1 << t]) > 1 for t in range(n))
  curves, sources, skipped = {"exact": exact_curve(val, test, budgets)}, {}, {}
  sources["exact"] = _join(out_dir, "VAL.csv")
  for method in APPROXIMATIONS:
    path = _join(out_dir, method, "VAL.csv")
    if not _exists(path):
      skipped[method] = f"no {path}"
      continue
    try:
      predicted = candidates_csv.read(path)
    except errors.DataError as e:  # e.g. a run killed before its last candidate: said, not fatal
      skipped[method] = f"unusable ({e})"
      continue
    if sorted(predicted.tasks) != sorted(val.tasks):
      skipped[method] = (f"{path} has tasks [{', '.join(predicted.tasks)}]; the truth has "
                         f"[{', '.join(val.tasks)}]")
      continue
    curves[method], sources[method] = method_curve(predicted, val, test, budgets), path
  if n > MAX_RANDOM_TASKS:
    skipped["random"] = f"{n} tasks; random groupings are drawn for at most {MAX_RANDOM_TASKS}"
  else:
    curves["random"] = random_curve(val, test, budgets, np.random.default_rng(options.seed),
                                    options.random_draws)
  full = by_mask.get((1 << n) - 1)
  if full:
    curves["all_task"] = fixed_curve([val.names[full[0]]], val, test, budgets)
  else:
    skipped["all_task"] = "no candidate solves every task"
  if all(1 << t in by_mask for t in range(n)):
    curves["independent"] = fixed_curve([val.names[by_mask[1 << t][-1]] for t in range(n)],
                                        val, test, budgets)
  else:
    skipped["independent"] = "a task has no single-task candidate"
  table2 = pairwise(val, test)
  tag_affinity = None
  affinity_path = _join(out_dir, "tag", "affinity.json")
  if _exists(affinity_path):
    tag_affinity = read_affinity(affinity_path, val.tasks)
  else:
    skipped["tag_affinity"] = f"no {affinity_path}"
  gap = gaps(curves)
  report = {
      "output_dir": out_dir, "tasks": list(val.tasks), "budgets": [float(b) for b in budgets],
      "seed": options.seed, "random_draws": options.random_draws,
      "candidates": len(val.names), "expected_candidates": expected, "exact_complete": complete,
      "sources": sources, "skipped": skipped,
      "pairwise": table2, "pairwise_vs_half": pairwise(val, test, half=True),
      "pair_affinity": pair_affinity(table2), "tag_affinity": tag_affinity,
      "methods": curves, "gaps": gap}
  for method in METHODS[1:]:
    for stat in ("mean", "max"):
      report[f"{method}_gap_{stat}"] = gap[method][stat] if method in gap else None
      report[f"{method}_validation_gap_{stat}"] = (gap[method][f"validation_{stat}"]
                                                   if method in gap else None)
  return report


def run(options: Options, out: Callable[[str], None] = print) -> dict:
  """Builds the report, prints its text and writes report.txt, report.json and the PNGs."""
  from mtsys.grouping import report_plots  # matplotlib: only when writing
  report = build(options)
  report_dir = options.report_dir or _join(report["output_dir"], "report")
  files = {"text": _join(report_dir, "report.txt"), "json": _join(report_dir, "report.json"),
           "plots": []}
  report["files"] = files
  for name, draw in (("loss_vs_budget.png", report_plots.loss_vs_budget),
                     ("pairwise.png", report_plots.pairwise)):
    png = draw(report)
    if png is not None:
      _write(_join(report_dir, name), png)
      files["plots"].append(_join(report_dir, name))
  text = report_plots.text(report)
  for line in text.splitlines():
    out(line)
  _write(files["text"], (text + "\n").encode())
  _write(files["json"], (json.dumps(report, indent=1) + "\n").encode())
  out(f"Report written to {report_dir}: report.txt, report.json, "
      + ", ".join(p.rsplit("/", 1)[-1] for p in files["plots"]))
  return report
