"""Exact network selection: the optimum at every budget of a sweep equals brute force over all
candidate subsets (n <= 5) and an integer program solved by scipy.optimize.milp (n <= 10) on
seeded random instances, the returned choice is feasible and its reported losses are its own;
the compiled and interpreted kernels agree bit for bit; bad input is refused by name; and
`bin/group_tasks.py select` end to end."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import optimize
from scipy import sparse

from mtsys import errors
from mtsys.grouping import cli_lib
from mtsys.grouping import selection
from mtsys.grouping import selection_kernel

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _instance(n, seed, *, num_random=None, costs=(1.0,), singles=(0.5,)):
  """Random candidates: the all-task network, all subsets (or `num_random` random ones) at
  random costs from `costs`, and a small single-task network per task at each cost of
  `singles` (the half-size ones of the paper)."""
  rng = np.random.default_rng(seed)
  full = (1 << n) - 1
  if num_random is None:
    masks = list(range(1, full + 1))
  else:
    masks = sorted({full} | set(int(m) for m in rng.integers(1, full + 1, num_random)))
  rows, names, cost = [], [], []
  for mask in masks:
    rows.append([rng.uniform(0.1, 1.0) if (mask >> t) & 1 else np.nan for t in range(n)])
    names.append(f"net{mask}")
    cost.append(float(rng.choice(costs)) if mask != full else max(costs))
  for size in singles:
    for t in range(n):
      rows.append([rng.uniform(0.2, 1.2) if u == t else np.nan for u in range(n)])
      names.append(f"single{t}@{size}")
      cost.append(size)
  return selection.Candidates(tasks=[f"t{t}" for t in range(n)], names=names, costs=cost,
                              losses=np.array(rows))


def _sweep(n):
  return [x / 2 for x in range(2, 2 * n + 1)]


def _check_feasible(c, result):
  """The choice fits the budget, serves every task by a chosen network solving it, and the
  reported losses are that choice's: each task's best among the chosen networks."""
  rows = [c.names.index(name) for name in result.networks]
  assert sum(c.costs[r] for r in rows) == pytest.approx(float(result.cost), abs=1e-12)
  assert result.cost <= result.budget
  best = np.nanmin(c.losses[rows], axis=0)
  assert not np.isnan(best).any()
  assert result.validation_loss == pytest.approx(float(best.sum()), abs=1e-9)
  for t, task in enumerate(c.tasks):
    net = result.assignment[task]
    assert net in result.networks and task in result.serves[net]
    assert result.validation_losses[task] == c.losses[c.names.index(net), t] == best[t]


def _brute_force(c, budgets):
  """(optimal loss, least cost among optimal choices) per budget, over all 2^N subsets."""
  num = len(c.names)
  assert num <= 20
  losses = np.where(np.isnan(c.losses), np.inf, c.losses)
  best = np.full((1, len(c.tasks)), np.inf)
  cost = np.zeros(1)
  for j in range(num):  # subsets with bit j are the ones without it, plus network j
    best = np.concatenate([best, np.minimum(best, losses[j])])
    cost = np.concatenate([cost, cost + c.costs[j]])
  total = best.sum(axis=1)
  out = []
  for b in budgets:
    ok = cost <= b + 1e-9
    opt = total[ok].min()
    out.append((opt, cost[ok & (total <= opt + 1e-9)].min()))
  return out


def _milp(c, budget):
  """The optimum by a binary program: x_m (network chosen), y_mt (task t served by m)."""
  num, n = c.losses.shape
  pairs = np.argwhere(~np.isnan(c.losses))
  e = len(pairs)
  objective = np.concatenate([np.zeros(num), c.losses[pairs[:, 0], pairs[:, 1]]])
  cover = sparse.coo_array((np.ones(e), (pairs[:, 1], num + np.arange(e))), shape=(n, num + e))
  link = sparse.coo_array((np.concatenate([np.ones(e), -np.ones(e)]),
                           (np.concatenate([np.arange(e)] * 2),
                            np.concatenate([num + np.arange(e), pairs[:, 0]]))),
                          shape=(e, num + e))
  spend = sparse.coo_array(np.concatenate([c.costs, np.zeros(e)])[None, :])
  res = optimize.milp(
      objective, integrality=np.ones(num + e), bounds=optimize.Bounds(0, 1),
      constraints=[optimize.LinearConstraint(cover, 1, 1),
                   optimize.LinearConstraint(link, -np.inf, 0),
                   optimize.LinearConstraint(spend, -np.inf, budget + 1e-9)],
      options={"mip_rel_gap": 0})
  assert res.success, res.message
  chosen = np.flatnonzero(res.x[:num] > 0.5)
  return float(np.nanmin(c.losses[chosen], axis=0).sum())


@pytest.mark.parametrize("n, seed, num_random, costs, singles", [
    (1, 0, None, (1.0,), (0.5,)),
    (3, 1, None, (1.0,), (0.5,)),
    (4, 2, None, (1.0,), (0.5,)),  # all 15 subsets + 4 halves: 2^19 subsets
    (5, 3, 12, (1.0,), (0.5,)),
    (5, 4, 13, (0.5, 1.0, 1.5), (0.5,)),
    (5, 5, 13, (0.25, 0.75, 1.0), (0.5,)),
    (4, 6, 9, (1.0,), (0.25, 0.5)),  # two single-task sizes: a knapsack per task set
    (5, 7, 16, (1.0, 1.5), ()),  # no single-task class
    (4, 8, 0, (1.0,), (0.5, 1.0)),  # the all-task network and single-task ones only
    (4, 9, 8, (1.0,), (0.5, 1.5)),  # single-task networks dearer than group ones
])
def test_optimum_equals_brute_force_at_every_budget(n, seed, num_random, costs, singles):
  c = _instance(n, seed, num_random=num_random, costs=costs, singles=singles)
  budgets = [b for b in _sweep(n) + [n + 0.75] if b >= max(costs)]  # the all-task network fits
  results = selection.select(c, budgets)
  for result, (opt, least_cost) in zip(results, _brute_force(c, budgets)):
    assert abs(result.validation_loss - opt) <= 1e-9, result.budget
    assert float(result.cost) == pytest.approx(least_cost)  # the cheapest optimal choice
    _check_feasible(c, result)


@pytest.mark.parametrize("n, seed, num_random, costs", [
    (6, 10, None, (1.0,)),  # all 63 subsets + 6 halves
    (8, 11, 90, (1.0,)),
    (9, 13, 80, (0.5, 1.0, 1.5)),
    (10, 12, 120, (1.0,)),
])
def test_optimum_equals_milp_at_every_budget(n, seed, num_random, costs):
  c = _instance(n, seed, num_random=num_random, costs=costs)
  budgets = [b for b in _sweep(n) if b >= max(costs)]
  for result, budget in zip(selection.select(c, budgets), budgets):
    assert abs(result.validation_loss - _milp(c, budget)) <= 1e-9, budget
    _check_feasible(c, result)


def test_compiled_and_interpreted_kernels_agree_exactly():
  pytest.importorskip("numba")
  for n, seed, costs, singles in ((7, 20, (0.5, 1.0, 1.5), (0.5,)), (9, 21, (1.0,), (0.25, 0.5)),
                                  (8, 22, (1.0, 2.0), ())):
    c = _instance(n, seed, num_random=70, costs=costs, singles=singles)
    budgets = [b for b in _sweep(n) if b >= max(costs)]
    compiled = selection.select(c, budgets, engine="numba")
    interpreted = selection.select(c, budgets, engine="python")
    assert [r.to_json() for r in compiled] == [r.to_json() for r in interpreted]


def test_table_answers_every_budget_from_one_fill():
  c = _instance(5, 30)
  table = selection_kernel.solve(
      5, np.arange(1, 32, dtype=np.int64), np.zeros(31, np.int64), np.array([2], np.int64),
      np.nan_to_num(c.losses[:31]), 10, engine="python")
  assert table.min_cover_units() == 2
  values = [table.optimum(k) for k in range(11)]
  assert values[:2] == [math.inf, math.inf]
  assert all(a >= b for a, b in zip(values[2:], values[3:]))  # more budget never hurts


def test_larger_budgets_report_the_cost_actually_needed():
  # Two tasks whose joint network is best for both: nothing better exists at any budget.
  c = selection.Candidates(tasks=["a", "b"], names=["ab", "a", "b"], costs=[1, 1, 1],
                           losses=[[0.1, 0.2], [0.5, np.nan], [np.nan, 0.6]])
  result, = selection.select(c, [5])
  assert result.networks == ("ab",) and result.cost == 1
  assert result.serves == {"ab": ("a", "b")}
  assert result.validation_loss == pytest.approx(0.3)


def test_a_network_serves_only_the_tasks_it_is_best_at():
  c = selection.Candidates(tasks=["a", "b", "c"], names=["abc", "bc", "a/2"],
                           costs=[1, 1, 0.5],
                           losses=[[0.2, 0.9, 0.9], [np.nan, 0.3, 0.3], [0.25, np.nan, np.nan]])
  two, = selection.select(c, [2])
  assert two.networks == ("abc", "bc")
  assert two.serves == {"abc": ("a",), "bc": ("b", "c")}
  assert two.assignment == {"a": "abc", "b": "bc", "c": "bc"}
  one_and_half, = selection.select(c, [1.5])  # a/2 + bc is better than abc alone
  assert one_and_half.networks == ("bc", "a/2")
  assert one_and_half.validation_loss == pytest.approx(0.85)


def test_task_subset_ignores_other_tasks_and_their_networks():
  c = _instance(5, 40)
  sub = ["t1", "t3", "t4"]
  restricted_rows = [i for i in range(len(c.names))
                     if not np.isnan(c.losses[i, [1, 3, 4]]).all()]
  restricted = selection.Candidates(
      tasks=sub, names=[c.names[i] for i in restricted_rows], costs=c.costs[restricted_rows],
      losses=c.losses[np.ix_(restricted_rows, [1, 3, 4])])
  budgets = _sweep(3)
  got = selection.select(c, budgets, tasks=sub)
  want = selection.select(restricted, budgets)
  assert [r.to_json() for r in got] == [r.to_json() for r in want]


def test_test_losses_are_of_the_same_assignment():
  c = _instance(4, 50)
  test = selection.Candidates(tasks=c.tasks, names=c.names, costs=c.costs,
                              losses=c.losses * 2 + 1)
  for result in selection.select(c, _sweep(4), test=test):
    for task, net in result.assignment.items():
      row, col = c.names.index(net), c.tasks.index(task)
      assert result.test_losses[task] == test.losses[row, col]
    assert result.test_loss == pytest.approx(sum(result.test_losses.values()))
    assert result.test_loss == pytest.approx(2 * result.validation_loss + 4)


def test_budget_below_the_cheapest_covering_solution_names_both():
  c = _instance(3, 60, num_random=4)
  with pytest.raises(selection.InfeasibleBudgetError) as err:
    selection.select(c, [0.5, 1, 2])
  assert str(err.value) == ("Budget 0.5 is below the cheapest covering solution: serving all "
                            "3 tasks [t0, t1, t2] costs at least 1")
  # No all-task network: covering needs 1.5 at least (a pair and a half-size single).
  c = selection.Candidates(tasks=["a", "b", "c"], names=["ab", "c/2", "bc"], costs=[1, 0.5, 1],
                           losses=[[0.1, 0.2, np.nan], [np.nan, np.nan, 0.3],
                                   [np.nan, 0.2, 0.3]])
  with pytest.raises(selection.InfeasibleBudgetError) as err:
    selection.select(c, [1, 1.25, 1.5])
  assert str(err.value) == ("Budgets 1, 1.25 are below the cheapest covering solution: serving "
                            "all 3 tasks [a, b, c] costs at least 1.5")
  with pytest.raises(selection.InfeasibleBudgetError, match="costs at least 1.5$"):
    selection.select(c, [1])  # the least cost is above every budget asked for


def test_bad_tasks_budgets_and_grids_are_refused_by_name():
  c = _instance(3, 70)
  with pytest.raises(errors.UnknownTaskError) as err:
    selection.select(c, [1], tasks=["t0", "tx"])
  assert str(err.value) == "Unknown task 'tx'; expected one of [t0, t1, t2]"
  with pytest.raises(selection.SelectionError) as err:
    selection.select(c, [1], tasks=[])
  assert str(err.value) == ("Empty task list: expected at least one of the candidates' tasks "
                            "[t0, t1, t2]")
  with pytest.raises(selection.SelectionError, match="^Invalid budget -1: expected a positive"):
    selection.select(c, [-1])
  with pytest.raises(selection.SelectionError, match="^Invalid budget nan: expected a positive"):
    selection.select(c, [float("nan")])
  many = [f"t{i}" for i in range(25)]
  wide = selection.Candidates(tasks=many, names=["all"], costs=[1], losses=np.ones((1, 25)))
  with pytest.raises(selection.SelectionError, match="^25 tasks are too many for the exact "
                     "selection: expected at most 24"):
    selection.select(wide, [1])
  odd = selection.Candidates(tasks=["a"], names=["x", "y"], costs=[1, 0.333],
                             losses=[[0.1], [0.2]])
  with pytest.raises(selection.SelectionError) as err:
    selection.select(odd, [1])
  assert str(err.value) == (
      "Candidate costs [0.333, 1] are not on a usable cost grid: their common unit would be "
      "0.001, 1000 steps for the largest cost; expected at most 64 steps (SNT costs such as 1 "
      "and 0.5 have unit 0.5)")


@pytest.mark.parametrize("losses, costs, message", [
    ([[-0.1, 0.2]], [1], "Invalid loss -0.1 for network 'n0', task 'a': expected a finite "
     "non-negative number"),
    ([[np.inf, 0.2]], [1], "Invalid loss inf for network 'n0', task 'a': expected a finite "
     "non-negative number"),
    ([[0.1, 0.2]], [0], "Invalid cost 0.0 for network 'n0': expected a positive finite number"),
    ([[np.nan, np.nan]], [1], "Network 'n0' solves no task"),
    ([[0.1, np.nan]], [1], "Task 'b' is solved by no candidate network"),
])
def test_bad_candidates_are_refused_by_name(losses, costs, message):
  with pytest.raises(errors.DataError) as err:
    selection.Candidates(tasks=["a", "b"], names=["n0"], costs=costs, losses=losses)
  assert str(err.value) == message


# ------------------------------------------------------------------------------------------
# bin/group_tasks.py select

_VAL = """network,cost,seg,depth,normals
all,1,0.40,0.30,0.50
seg+depth,1,0.35,0.25,
depth+normals,1,,0.28,0.45
seg,1,0.38,,
normals,1,,,0.42
seg/2,0.5,0.45,,
depth/2,0.5,,0.33,
normals/2,0.5,,,0.47
"""


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def _test_csv(val_text, scale=1.1):
  lines = val_text.strip().splitlines()
  out = [lines[0]]
  for line in reversed(lines[1:]):  # another row order: rows are matched by network
    cells = line.split(",")
    out.append(",".join(cells[:2] + [f"{float(v) * scale:.4f}" if v else "" for v in cells[2:]]))
  return "\n".join(out) + "\n"


def test_select_command_prints_and_writes_every_budget(tmp_path):
  val = _write(tmp_path, "val.csv", _VAL)
  test = _write(tmp_path, "test.csv", _test_csv(_VAL))
  out = tmp_path / "out" / "grouping.json"
  done = subprocess.run(
      [sys.executable, os.path.join(_REPO, "bin", "group_tasks.py"), "select",
       f"--candidates={val}", f"--test_candidates={test}", "--budgets=1:3:0.5",
       f"--results_json={out}"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
  assert done.returncode == 0, done.stderr[-3000:]
  records = json.loads(out.read_text())
  assert [r["budget"] for r in records] == [1, 1.5, 2, 2.5, 3]
  for r in records:
    for key in ("budget", "networks", "cost", "validation_loss", "test_loss", "assignment"):
      assert key in r, key
    assert r["cost"] <= r["budget"]
    assert sorted(r["assignment"]) == ["depth", "normals", "seg"]
    assert r["test_loss"] == pytest.approx(1.1 * r["validation_loss"], abs=1e-3)
  assert records[0]["networks"] == ["all"]
  assert records[0]["validation_loss"] == pytest.approx(1.2)
  # 1.5: seg+depth with normals/2 (0.35 + 0.25 + 0.47) beats 'all' (1.2)
  assert records[1]["assignment"] == {"seg": "seg+depth", "depth": "seg+depth",
                                      "normals": "normals/2"}
  assert records[1]["validation_loss"] == pytest.approx(1.07)
  assert records[2]["networks"] == ["seg+depth", "normals"]
  assert records[2]["validation_loss"] == pytest.approx(1.02)
  assert "networks (tasks served)" in done.stdout
  assert "seg+depth: seg depth  normals/2: normals" in done.stdout
  assert f"Results written to {out}" in done.stdout


def test_select_command_error_is_one_line_with_status_2(tmp_path):
  val = _write(tmp_path, "val.csv", _VAL)
  done = subprocess.run(
      [sys.executable, os.path.join(_REPO, "bin", "group_tasks.py"), "select",
       f"--candidates={val}", "--budgets=0.5:2:0.5"],
      capture_output=True, text=True, timeout=300, cwd=tmp_path)
  assert done.returncode == 2, done.stderr[-3000:]
  assert done.stderr.strip().splitlines()[-1] == (
      "Error: Budget 0.5 is below the cheapest covering solution: serving all 3 tasks "
      "[seg, depth, normals] costs at least 1")
  assert "Traceback" not in done.stderr


def _run(tmp_path, **options):
  options.setdefault("candidates", _write(tmp_path, "val.csv", _VAL))
  options.setdefault("budgets", "1:2:0.5")
  lines = []
  return cli_lib.run(["select"], cli_lib.Options(**options), out=lines.append), lines


def test_select_bad_input_errors_name_the_value(tmp_path):
  with pytest.raises(errors.UnknownTaskError) as err:
    _run(tmp_path, tasks=["seg", "edges"])
  assert str(err.value) == "Unknown task 'edges'; expected one of [seg, depth, normals]"
  with pytest.raises(selection.SelectionError, match=r"^Empty task list: expected at least one"):
    _run(tmp_path, tasks=[])
  no_normals = "".join(line.rsplit(",", 1)[0] + "\n" for line in _VAL.splitlines())
  missing = _write(tmp_path, "test.csv", no_normals)
  with pytest.raises(errors.DataError) as err:
    _run(tmp_path, test_candidates=missing)
  assert str(err.value) == (f"{missing}: missing task 'normals': no column for it, and the "
                            "validation candidates have one")
  nan = _write(tmp_path, "nan.csv", _VAL.replace("seg,1,0.38", "seg,1,nan"))
  with pytest.raises(errors.DataError) as err:
    _run(tmp_path, candidates=nan)
  assert str(err.value).startswith(f"{nan}: row 5 (network 'seg'): bad loss 'nan' for task "
                                   "'seg'; expected a non-negative number")
  negative = _write(tmp_path, "neg.csv", _VAL.replace("0.33", "-0.33"))
  with pytest.raises(errors.DataError) as err:
    _run(tmp_path, candidates=negative)
  assert str(err.value).startswith(f"{negative}: row 8 (network 'depth/2'): bad loss '-0.33' "
                                   "for task 'depth'")
  with pytest.raises(selection.InfeasibleBudgetError, match=r"^Budget 0.5 is below"):
    _run(tmp_path, budgets="0.5,1")


def test_select_parses_budget_ranges_and_lists(tmp_path):
  results, lines = _run(tmp_path, budgets="1:2:0.5")
  assert [r.budget for r in results] == [1, 1.5, 2]
  assert [float(b) for b in cli_lib.parse_budgets("0.1:0.3:0.1")] == [0.1, 0.2, 0.3]
  assert [float(b) for b in cli_lib.parse_budgets("2, 1,3.5")] == [2, 1, 3.5]
  assert lines[0].startswith("Exact network selection for 3 tasks [seg, depth, normals] from 8 "
                             "candidates")
  for spec, why in [("1:5:0.3", "STEP 0.3 does not divide STOP - START = 4"),
                    ("5:1:0.5", "STOP 1 is below START 5"), ("1:5", "2 fields"),
                    ("", "no budget"), ("1,x", "Invalid budget 'x': expected a positive number"),
                    ("0:5:1", "Invalid budget 0: expected a positive number")]:
    with pytest.raises(cli_lib.UsageError) as err:
      cli_lib.parse_budgets(spec)
    assert str(err.value).startswith(f"Invalid --budgets={spec}: {why}; expected START:STOP:STEP")


def test_unknown_and_unimplemented_sub_commands_are_usage_errors(tmp_path):
  with pytest.raises(cli_lib.UsageError, match=r"^Unknown sub-command 'pick'; expected one of "
                     r"\[select, train, report\]$"):
    cli_lib.run(["pick"], cli_lib.Options())
  with pytest.raises(cli_lib.UsageError, match="^Expected one sub-command"):
    cli_lib.run([], cli_lib.Options())
  with pytest.raises(cli_lib.UsageError, match="^report needs --output_dir"):
    cli_lib.run(["report"], cli_lib.Options())
  with pytest.raises(cli_lib.UsageError, match=r"^train needs --config: expected a config file"):
    cli_lib.run(["train"], cli_lib.Options())
  with pytest.raises(cli_lib.UsageError, match="^select needs --candidates"):
    cli_lib.run(["select"], cli_lib.Options(budgets="1"))
