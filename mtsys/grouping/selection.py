"""Exact network selection (Standley et al. 2020, section 5.2), for every budget of a sweep.

Given candidate networks, each solving some tasks with a validation loss per task and an
inference cost (in SNT: 1 for a full-size network, 0.5 for a half-size one), choose networks of
total cost <= budget such that every task is solved by at least one of them, minimising the sum
over tasks of the task's best (lowest) loss among the chosen networks. Each task is then served
by that best network; a chosen network serves exactly the tasks it is best at.

The answer is proven optimal, not searched for heuristically: `selection_kernel` solves the
problem exactly by a dynamic program over task subsets (its docstring has the proof and the
cost: about 3^n steps for n tasks and all 2^n - 1 subsets as candidates, every budget at once),
instead of the authors' branch and bound, which is hard-coded to 5 tasks and blows up past 7.

Costs live on a grid: its unit is the greatest common divisor of the candidates' costs taken as
exact decimals (0.5 for costs {1, 0.5}), and a budget b allows floor(b / unit) units. Costs that
need a grid finer than `MAX_GRID_STEPS` steps for the largest cost (0.333 beside 1) are refused:
the tables grow with the number of steps. Among equally good answers the cheapest is reported,
so a budget larger than needed reports the cost actually used.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from mtsys import errors
from mtsys.grouping import selection_kernel

MAX_GRID_STEPS = 64
# The tables have 2^n rows and the search takes about 3^n steps: 20 tasks take about a minute
# on 2 cores, 24 would take hours and gigabytes.
MAX_TASKS = 24
Budget = Union[Fraction, float, int, str]


class SelectionError(errors.UserError, ValueError):
  """A selection that cannot be made as asked (bad budget, task list or cost grid)."""


class InfeasibleBudgetError(SelectionError):
  """A budget below the cost of the cheapest set of candidates that serves every task."""


def fmt(value: Union[Fraction, float]) -> str:
  """A cost or budget as people write it: 1, 1.5, 0.25."""
  return f"{float(value):.12g}"


def exact(value: Budget, what: str = "budget") -> Fraction:
  """`value` as an exact fraction (a float by its shortest decimal: 0.1 is 1/10)."""
  try:
    if isinstance(value, (float, np.floating)):
      if not math.isfinite(value):
        raise ValueError(value)
      value = repr(float(value))
    result = Fraction(value)
  except (ValueError, TypeError, ZeroDivisionError):
    raise SelectionError(f"Invalid {what} {value!r}: expected a positive number") from None
  if result <= 0:
    raise SelectionError(f"Invalid {what} {fmt(result)}: expected a positive number")
  return result


@dataclasses.dataclass(frozen=True, eq=False)
class Candidates:
  """Candidate networks: `names[i]` costs `costs[i]` and has loss `losses[i, t]` on `tasks[t]`.

  NaN in `losses` means the network does not solve the task. Validated on construction: unique
  tasks and networks, positive finite costs, finite non-negative losses, every network solving
  some task and every task solved by some network (messages name the bad value).
  """

  tasks: tuple[str, ...]
  names: tuple[str, ...]
  costs: np.ndarray
  losses: np.ndarray

  def __post_init__(self):
    object.__setattr__(self, "tasks", tuple(self.tasks))
    object.__setattr__(self, "names", tuple(self.names))
    object.__setattr__(self, "costs", np.asarray(self.costs, np.float64))
    object.__setattr__(self, "losses", np.asarray(self.losses, np.float64))
    _validate(self)

  def column(self, task: str) -> int:
    return self.tasks.index(task)


def _first(flags: np.ndarray):
  return tuple(int(i) for i in np.argwhere(flags)[0])


def _validate(c: Candidates) -> None:
  if not c.tasks:
    raise SelectionError("Empty task list: candidates need at least one task")
  if len(set(c.tasks)) != len(c.tasks):
    dup = next(t for t in c.tasks if c.tasks.count(t) > 1)
    raise errors.DataError(f"Duplicate task '{dup}' in the candidates' tasks")
  shape = (len(c.names), len(c.tasks))
  if c.losses.shape != shape or c.costs.shape != shape[:1]:
    raise errors.DataError(f"Candidate losses of shape {c.losses.shape} and costs of shape "
                           f"{c.costs.shape}; expected {shape} and {shape[:1]}")
  if not c.names:
    raise errors.DataError("No candidate networks")
  if len(set(c.names)) != len(c.names):
    seen = set()
    dup = next(n for n in c.names if n in seen or seen.add(n))
    raise errors.DataError(f"Duplicate network '{dup}'")
  bad = ~(np.isfinite(c.costs) & (c.costs > 0))
  if bad.any():
    i, = _first(bad)
    raise errors.DataError(f"Invalid cost {float(c.costs[i])!r} for network '{c.names[i]}': "
                           "expected a positive finite number")
  solved = ~np.isnan(c.losses)
  bad = solved & ~(np.isfinite(c.losses) & (c.losses >= 0))
  if bad.any():
    i, t = _first(bad)
    raise errors.DataError(f"Invalid loss {float(c.losses[i, t])!r} for network "
                           f"'{c.names[i]}', task '{c.tasks[t]}': expected a finite non-negative "
                           "number")
  if not solved.any(axis=1).all():
    i, = _first(~solved.any(axis=1))
    raise errors.DataError(f"Network '{c.names[i]}' solves no task")
  if not solved.any(axis=0).all():
    t, = _first(~solved.any(axis=0))
    raise errors.DataError(f"Task '{c.tasks[t]}' is solved by no candidate network")


def cost_grid(costs: Sequence[float]) -> Fraction:
  """The grid unit of `costs`: the greatest common divisor of the costs as exact decimals.

  Raises:
    SelectionError: the grid needs more than MAX_GRID_STEPS steps for the largest cost.
  """
  values = sorted({exact(float(c), "cost") for c in np.unique(np.asarray(costs, np.float64))})
  denominator = math.lcm(*(v.denominator for v in values))
  unit = Fraction(math.gcd(*(int(v * denominator) for v in values)), denominator)
  if values[-1] / unit > MAX_GRID_STEPS:
    shown = ", ".join(fmt(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
    raise SelectionError(
        f"Candidate costs [{shown}] are not on a usable cost grid: their common unit would be "
        f"{fmt(unit)}, {values[-1] / unit} steps for the largest cost; expected at most "
        f"{MAX_GRID_STEPS} steps (SNT costs such as 1 and 0.5 have unit 0.5)")
  return unit


@dataclasses.dataclass(frozen=True)
class Selection:
  """The optimal choice at one budget; losses are totals (and per task) of one assignment."""

  budget: Fraction
  cost: Fraction
  networks: tuple[str, ...]  # in candidate order
  serves: Mapping[str, tuple[str, ...]]  # network -> the tasks it serves (is best at)
  assignment: Mapping[str, str]  # task -> network
  validation_losses: Mapping[str, float]
  validation_loss: float
  test_losses: Optional[Mapping[str, float]] = None
  test_loss: Optional[float] = None

  def to_json(self) -> dict:
    return {
        "budget": float(self.budget),
        "cost": float(self.cost),
        "networks": list(self.networks),
        "serves": {k: list(v) for k, v in self.serves.items()},
        "assignment": dict(self.assignment),
        "validation_loss": self.validation_loss,
        "validation_losses": dict(self.validation_losses),
        "test_loss": self.test_loss,
        "test_losses": None if self.test_losses is None else dict(self.test_losses),
    }


def _task_columns(candidates: Candidates, tasks: Optional[Sequence[str]]) -> list[int]:
  if tasks is None:
    return list(range(len(candidates.tasks)))
  tasks = list(tasks)
  if not tasks:
    raise SelectionError("Empty task list: expected at least one of the candidates' tasks "
                         f"[{', '.join(candidates.tasks)}]")
  for task in tasks:
    if task not in candidates.tasks:
      raise errors.UnknownTaskError(
          f"Unknown task '{task}'; expected one of [{', '.join(candidates.tasks)}]")
    if tasks.count(task) > 1:
      raise SelectionError(f"Task '{task}' is listed twice")
  return [candidates.column(t) for t in tasks]


def select(candidates: Candidates, budgets: Sequence[Budget], *,
           tasks: Optional[Sequence[str]] = None, test: Optional[Candidates] = None,
           engine: str = "auto") -> list[Selection]:
  """The proven-optimal choice of networks for each budget, in the order of `budgets`.

  Args:
    candidates: the candidates with their validation losses (what is minimised).
    budgets: total cost limits (in the candidates' cost unit).
    tasks: the tasks to serve (default: all of the candidates'); a network's losses on other
      tasks are ignored, and networks solving none of them are left out.
    test: the same networks (same names, same order) with test losses: reported for the same
      assignment of tasks to networks.
    engine: `selection_kernel.ENGINES` ("auto": compiled from 11 tasks on, if numba is installed).

  Raises:
    InfeasibleBudgetError: a budget is below the cheapest set of networks serving every task.
    UnknownTaskError, SelectionError, DataError: bad tasks, budgets, costs or test candidates.
  """
  budgets = [exact(b) for b in budgets]
  if not budgets:
    raise SelectionError("No budget: expected at least one")
  columns = _task_columns(candidates, tasks)
  names = [candidates.tasks[t] for t in columns]
  if len(names) > MAX_TASKS:
    raise SelectionError(f"{len(names)} tasks are too many for the exact selection: expected at "
                         f"most {MAX_TASKS} (its tables have 2^n rows); choose a subset of tasks")
  test_columns = _test_columns(candidates, test, names)
  # No copies of the full table when all tasks are served (a million rows at n = 20): the
  # kernel reads only the losses inside each network's task set, never the NaNs.
  losses = candidates.losses
  if columns != list(range(len(candidates.tasks))):
    losses = losses[:, columns]
  masks = np.zeros(len(losses), np.int64)
  for t in range(len(columns)):
    masks |= (~np.isnan(losses[:, t])).astype(np.int64) << t
  rows = np.flatnonzero(masks)
  if rows.size < masks.size:
    losses, masks = losses[rows], masks[rows]
  if np.bitwise_or.reduce(masks) != (1 << len(columns)) - 1:  # not for validated candidates
    raise errors.DataError(f"A task of [{', '.join(names)}] is solved by no candidate network")

  unit = cost_grid(candidates.costs[rows])
  class_units, classes = np.unique(_units(candidates.costs[rows], unit), return_inverse=True)
  budget_units = [int(b // unit) for b in budgets]

  def fill(max_units):
    return selection_kernel.solve(len(names), masks, classes.astype(np.int64),
                                  class_units.astype(np.int64), losses, max_units,
                                  engine=engine)

  table = fill(max(budget_units))
  least = table.min_cover_units()
  infeasible = [b for b, k in zip(budgets, budget_units) if least is None or k < least]
  if infeasible:
    if least is None:  # not within the largest budget: fill the table up to every budget
      least = fill(len(names) * int(class_units.max())).min_cover_units()
    plural = "s" if len(infeasible) > 1 else ""
    raise InfeasibleBudgetError(
        f"Budget{plural} {', '.join(fmt(b) for b in infeasible)} "
        f"{'are' if plural else 'is'} below the cheapest covering solution: serving all "
        f"{len(names)} tasks [{', '.join(names)}] costs at least {fmt(least * unit)}")

  out = []
  for budget, k in zip(budgets, budget_units):
    blocks = [(int(rows[r]), mask) for r, mask in table.blocks_at(k)]
    out.append(_selection(candidates, test, columns, test_columns, budget, unit, blocks))
  return out


def _units(costs: np.ndarray, unit: Fraction) -> np.ndarray:
  """Costs in grid units, by their distinct values (fast for a million candidates)."""
  values, inverse = np.unique(costs, return_inverse=True)
  per_value = np.array([int(exact(float(v), "cost") / unit) for v in values], np.int64)
  return per_value[inverse]


def _test_columns(candidates: Candidates, test: Optional[Candidates],
                  names: Sequence[str]) -> Optional[list[int]]:
  if test is None:
    return None
  if test.names != candidates.names:
    raise SelectionError("Test candidates must list the validation candidates' networks in the "
                         "same order (candidates_csv.read_test aligns them)")
  for name in names:
    if name not in test.tasks:
      raise errors.DataError(f"The test candidates have no column for task '{name}'")
  return [test.column(name) for name in names]


def _selection(candidates, test, columns, test_columns, budget, unit, blocks) -> Selection:
  """The report of one optimal partition: every task goes to its best chosen network (its
  block's network unless another chosen one is strictly better, which exact optimality rules
  out up to rounding)."""
  chosen = sorted({row for row, _ in blocks})
  block_row = {}
  for row, mask in blocks:
    for t in range(len(columns)):
      if (mask >> t) & 1:
        block_row[t] = row
  assignment, val, tst = {}, {}, {}
  for t, col in enumerate(columns):
    best = block_row[t]
    for row in chosen:
      loss = candidates.losses[row, col]
      if loss < candidates.losses[best, col]:
        best = row
    task = candidates.tasks[col]
    assignment[task] = best
    val[task] = float(candidates.losses[best, col])
    if test is not None:
      tst[task] = float(test.losses[best, test_columns[t]])
  used = sorted(set(assignment.values()))
  cost = sum((exact(float(candidates.costs[row]), "cost") for row in used), Fraction(0))
  serves = {candidates.names[row]: tuple(task for task, r in assignment.items() if r == row)
            for row in used}
  return Selection(
      budget=budget, cost=cost, networks=tuple(candidates.names[row] for row in used),
      serves=serves, assignment={task: candidates.names[r] for task, r in assignment.items()},
      validation_losses=val, validation_loss=math.fsum(val.values()),
      test_losses=tst if test is not None else None,
      test_loss=math.fsum(tst.values()) if test is not None else None)


def format_table(selections: Sequence[Selection]) -> str:
  """A text table: per budget its cost, total losses and networks with the tasks they serve."""
  has_test = any(s.test_loss is not None for s in selections)
  header = ["budget", "cost", "val loss"] + (["test loss"] if has_test else []) + [
      "networks (tasks served)"]
  lines = []
  for s in selections:
    cells = [fmt(s.budget), fmt(s.cost), f"{s.validation_loss:.6g}"]
    if has_test:
      cells.append("-" if s.test_loss is None else f"{s.test_loss:.6g}")
    cells.append("  ".join(f"{net}: {' '.join(tasks)}" for net, tasks in s.serves.items()))
    lines.append(cells)
  widths = [max(len(r[i]) for r in lines + [header]) for i in range(len(header) - 1)]
  text = []
  for r in [header] + lines:
    text.append("  ".join(c.rjust(w) for c, w in zip(r, widths)) + "  " + r[-1])
  return "\n".join(text)


def format_per_task(selections: Sequence[Selection]) -> str:
  """A text table of each task's validation (test) loss per budget, from its serving network."""
  tasks = list(selections[0].assignment) if selections else []
  header = ["task"] + [f"budget {fmt(s.budget)}" for s in selections]
  rows = []
  for task in tasks:
    cells = [task]
    for s in selections:
      cell = f"{s.validation_losses[task]:.4g}"
      if s.test_losses is not None:
        cell += f" ({s.test_losses[task]:.4g})"
      cells.append(cell)
    rows.append(cells)
  widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
  title = "Per-task validation loss" + (
      " (test loss)" if selections and selections[0].test_losses is not None else "")
  return "\n".join([title] + ["  ".join([r[0].ljust(widths[0])] +
                                        [c.rjust(w) for c, w in zip(r[1:], widths[1:])])
                              for r in [header] + rows])
