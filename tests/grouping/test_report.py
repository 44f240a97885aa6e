"""The task grouping report on a synthetic `train` output directory of three tasks whose numbers
are known by hand: Table 2 entries, TAG's affinity table, the exact optimum as the least
validation loss of every method at every budget, approximations evaluated in the truth (and said
to be missing when their chosen networks were not trained), the baselines, gaps, the JSON, the
PNGs (decoded, not blank), bad input refused by name, and `bin/group_tasks.py report`."""

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import image as mimage

from mtsys import errors
from mtsys.grouping import cli_lib
from mtsys.grouping import report
from mtsys.grouping import report_plots
from mtsys.grouping import selection

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TASKS = ("a", "b", "c")
# The truth's validation losses; test losses are twice these, so the validation optimum is the
# test optimum too and every test figure below is 2x a validation figure.
_TRUTH = {
    "a": (1, {"a": 1.0}), "b": (1, {"b": 2.0}), "c": (1, {"c": 4.0}),
    "a@half": (0.5, {"a": 1.2}), "b@half": (0.5, {"b": 2.4}), "c@half": (0.5, {"c": 4.4}),
    "a+b": (1, {"a": 0.9, "b": 2.4}), "a+c": (1, {"a": 1.1, "c": 3.6}),
    "b+c": (1, {"b": 1.9, "c": 4.2}), "a+b+c": (1, {"a": 1.05, "b": 2.1, "c": 3.9}),
}
_BUDGETS = [1, 1.5, 2, 2.5, 3]
# The optimum's validation loss per budget, by hand: a+b+c (7.05) until two full networks fit,
# then a+c with b+c (1.1 + 1.9 + 3.6 = 6.6); a third network gains nothing (a+b's a 0.9 with
# a+c and b+c: 0.9 + 1.9 + 3.6 = 6.4 at 3).
_OPTIMUM = [7.05, 7.05, 6.6, 6.6, 6.4]


def _csv(rows, tasks=_TASKS):
  lines = [",".join(["network", "cost", *tasks])]
  for name, (cost, losses) in rows.items():
    lines.append(",".join([name, str(cost)] + [repr(losses[t]) if t in losses else ""
                                               for t in tasks]))
  return "\n".join(lines) + "\n"


def _scaled(rows, factor):
  return {n: (c, {t: v * factor for t, v in losses.items()}) for n, (c, losses) in rows.items()}


def _make_out(root, *, drop=(), methods=None, affinity=True):
  """OUT with the truth (less `drop`), each method's VAL.csv {method: {network: losses}}
  overriding the truth's rows, and tag/affinity.json (tasks in another order)."""
  out = root / "out"
  out.mkdir(parents=True)
  truth = {n: r for n, r in _TRUTH.items() if n not in drop}
  (out / "VAL.csv").write_text(_csv(truth))
  (out / "TEST.csv").write_text(_csv(_scaled(truth, 2)))
  for method, overrides in (methods or {}).items():
    (out / method).mkdir()
    rows = dict(_TRUTH)
    rows.update({n: (_TRUTH[n][0], losses) for n, losses in overrides.items()})
    (out / method / "VAL.csv").write_text(_csv(rows))
  if affinity:
    (out / "tag").mkdir(exist_ok=True)
    # Stored order c, a, b: z[i][j], the step on task i, the loss of task j.
    (out / "tag" / "affinity.json").write_text(json.dumps({
        "tasks": ["c", "a", "b"], "kappa": 0.5, "lookaheads": 40,
        "affinity": [[0.0, 0.03, -0.01], [0.02, 0.0, 0.05], [0.04, -0.02, 0.0]]}))
  return str(out)


# HOA overestimates the all-task network and so keeps it at every budget; TAG likes b+c.
_HOA = {"a+b+c": {"a": 0.5, "b": 0.5, "c": 0.5}}
_TAG = {"b+c": {"b": 0.1, "c": 0.1}}


def _build(tmp_path, budgets=_BUDGETS, seed=0, **kwargs):
  kwargs.setdefault("methods", {"hoa": _HOA, "tag": _TAG})
  out = _make_out(tmp_path, **kwargs)
  return report.build(report.Options(out, [selection.exact(b) for b in budgets], seed=seed))


def test_table2_is_the_pair_networks_relative_test_loss_change(tmp_path):
  r = _build(tmp_path)
  t2, m = r["pairwise"], r["pairwise"]["matrix"]
  assert t2["tasks"] == list(_TASKS)
  # Row: trained with; column: the task measured. a with b: (0.9 - 1.0) / 1.0 (test: both x2).
  assert m[1][0] == pytest.approx(100 * (2 * 0.9 - 2 * 1.0) / (2 * 1.0))  # -10%
  assert m[0][1] == pytest.approx(100 * (2.4 - 2.0) / 2.0)  # b with a: +20%
  assert m[2][1] == pytest.approx(100 * (1.9 - 2.0) / 2.0)  # b with c: -5%
  assert [m[t][t] for t in range(3)] == [None, None, None]
  assert t2["row_mean"][0] == pytest.approx((20 + 100 * (3.6 - 4) / 4) / 2)  # a helps c
  assert t2["column_mean"][0] == pytest.approx((-10 + 10) / 2)
  assert t2["mean"] == pytest.approx(np.mean([-10, 10, 20, -5, -10, 5]))
  # The paper's comparison: against the half-size singles; a with b: (0.9 - 1.2) / 1.2.
  assert r["pairwise_vs_half"]["matrix"][1][0] == pytest.approx(-25)
  # Table 3: the mean of Table 2 and its transpose, upper triangle only.
  t3 = r["pair_affinity"]["matrix"]
  assert t3[0][1] == pytest.approx((-10 + 20) / 2)
  assert t3[1][2] == pytest.approx((-5 + 5) / 2)
  assert t3[1][0] is None and t3[0][0] is None


def test_tag_affinity_is_read_in_the_truths_task_order(tmp_path):
  r = _build(tmp_path)
  tag = r["tag_affinity"]
  assert tag["tasks"] == ["a", "b", "c"]
  assert tag["kappa"] == 0.5 and tag["lookaheads"] == 40
  # Stored row a (index 1): [c 0.02, a 0, b 0.05] -> in order a, b, c: [0, 0.05, 0.02].
  assert tag["matrix"][0] == [0.0, 0.05, 0.02]
  assert tag["matrix"][2] == [0.03, -0.01, 0.0]  # stored row c: [c 0, a 0.03, b -0.01]


def test_exact_curve_is_optimal_and_below_every_methods_validation_loss(tmp_path):
  r = _build(tmp_path, budgets=_BUDGETS + [3.5, 4])
  exact = r["methods"]["exact"]
  assert [e["validation_loss"] for e in exact[:5]] == pytest.approx(_OPTIMUM)
  assert [e["test_loss"] for e in exact[:5]] == pytest.approx([2 * v for v in _OPTIMUM])
  compared = 0
  for method, entries in r["methods"].items():
    for e, best in zip(entries, exact):
      if e.get("validation_loss") is not None:
        assert best["validation_loss"] <= e["validation_loss"] + 1e-12, (method, e["budget"])
        compared += 1
  assert set(r["methods"]) == {"exact", "hoa", "tag", "random", "all_task", "independent"}
  assert compared >= 6 * 5
  validation_gaps = [g for m in r["gaps"].values() for g in m["validation_per_budget"]
                     if g is not None]
  assert len(validation_gaps) >= 5 * 5 and min(validation_gaps) >= -1e-12


def test_approximations_choose_on_their_csv_and_are_measured_in_the_truth(tmp_path):
  r = _build(tmp_path)
  hoa, tag = r["methods"]["hoa"], r["methods"]["tag"]
  for e in hoa:  # its predicted all-task network wins everywhere
    assert e["networks"] == ["a+b+c"]
    assert e["predicted_validation_loss"] == pytest.approx(1.5)
    assert e["validation_loss"] == pytest.approx(7.05)
    assert e["test_loss"] == pytest.approx(14.1)
  assert r["gaps"]["hoa"]["per_budget"] == pytest.approx(
      [(14.1 - 2 * o) / (2 * o) for o in _OPTIMUM])
  assert r["hoa_gap_mean"] == pytest.approx(np.mean([(14.1 - 2 * o) / (2 * o) for o in _OPTIMUM]))
  assert r["hoa_gap_max"] == pytest.approx((14.1 - 12.8) / 12.8)
  # On validation loss too: the selection alone, measured against the least validation loss.
  assert r["gaps"]["hoa"]["validation_per_budget"] == pytest.approx(
      [(7.05 - o) / o for o in _OPTIMUM])
  assert r["hoa_validation_gap_max"] == pytest.approx((7.05 - min(_OPTIMUM)) / min(_OPTIMUM))
  assert r["hoa_validation_gap_mean"] == pytest.approx(np.mean([(7.05 - o) / o for o in _OPTIMUM]))
  # TAG at 1.5: b+c with a@half (cost 1.5), each task served by its best TRUE network.
  assert tag[1]["networks"] == ["a@half", "b+c"] and tag[1]["cost"] == 1.5
  assert tag[1]["assignment"] == {"a": "a@half", "b": "b+c", "c": "b+c"}
  assert tag[1]["test_loss"] == pytest.approx(2 * (1.2 + 1.9 + 4.2))
  assert r["tag_gap_max"] == max(r["gaps"]["tag"]["per_budget"])
  assert r["esa_gap_mean"] is None and "esa" in r["skipped"]


def test_chosen_networks_missing_from_the_truth_are_reported_not_guessed(tmp_path):
  r = _build(tmp_path, drop=("b+c",))
  assert not r["exact_complete"] and r["candidates"] == 9 and r["expected_candidates"] == 10
  tag = r["methods"]["tag"][1]
  assert tag["missing"] == ["b+c"]
  assert tag["test_loss"] is None and tag["validation_loss"] is None
  assert r["gaps"]["tag"]["per_budget"][1] is None
  text = report_plots.text(r)
  assert "INCOMPLETE" in text
  assert "a@half b+c: not trained fully in the output directory (b+c)" in text


def test_random_grouping_is_seeded_and_only_the_all_task_network_fits_budget_one(tmp_path):
  r1, r2, r3 = (_build(tmp_path / name, seed=seed) for name, seed in (("1", 7), ("2", 7),
                                                                          ("3", 8)))
  rand = r1["methods"]["random"]
  assert rand == r2["methods"]["random"]
  assert [e["test_loss"] for e in rand] != [e["test_loss"] for e in r3["methods"]["random"]]
  assert rand[0]["test_loss"] == pytest.approx(14.1) and rand[0]["test_loss_std"] == pytest.approx(0, abs=1e-12)
  assert rand[0]["example_networks"] == ["a+b+c"]
  for e in rand:
    assert e["draws"] == 100 and e["cost"] <= e["budget"]
  assert rand[-1]["test_loss_std"] > 0  # several groupings fit budget 3


def test_all_task_and_independent_networks_at_the_budgets_they_fit(tmp_path):
  r = _build(tmp_path, budgets=[1, 2, 3])
  all_task, independent = r["methods"]["all_task"], r["methods"]["independent"]
  assert [e["test_loss"] for e in all_task] == pytest.approx([14.1] * 3)
  assert [e["test_loss"] for e in independent] == [None, None, pytest.approx(14.0)]
  assert independent[2]["networks"] == ["a", "b", "c"] and independent[2]["cost"] == 3
  assert r["all_task_gap_mean"] == pytest.approx(
      np.mean([(14.1 - 14.1) / 14.1, (14.1 - 13.2) / 13.2, (14.1 - 12.8) / 12.8]))


def test_run_writes_text_json_and_non_blank_pngs(tmp_path):
  out = _make_out(tmp_path, methods={"hoa": _HOA, "tag": _TAG})
  lines = []
  r = report.run(report.Options(out, [selection.exact(b) for b in _BUDGETS]), lines.append)
  report_dir = os.path.join(out, "report")
  data = json.loads(open(os.path.join(report_dir, "report.json")).read())
  for key in ("hoa_gap_mean", "hoa_gap_max", "tag_gap_mean", "tag_gap_max",
              "hoa_validation_gap_mean", "tag_validation_gap_max", "methods", "gaps",
              "pairwise", "pair_affinity", "tag_affinity", "budgets", "tasks", "skipped"):
    assert key in data, key
  assert data["hoa_gap_mean"] == pytest.approx(r["hoa_gap_mean"])
  assert len(data["methods"]["exact"]) == len(_BUDGETS)
  text = open(os.path.join(report_dir, "report.txt")).read()
  assert text.rstrip("\n") == "\n".join(lines[:-1])
  assert "Skipped esa: no " in text and "Table 2" in text and "Table 3" in text
  hoa_line = next(line for line in text.splitlines() if line.strip().startswith("hoa  test "))
  assert f"validation {r['hoa_validation_gap_mean']:+.2%}" in hoa_line
  assert "TAG affinity" in text and "Chosen groupings per budget" in text
  assert sorted(os.path.basename(p) for p in r["files"]["plots"]) == [
      "loss_vs_budget.png", "pairwise.png"]
  for path in r["files"]["plots"]:
    pixels = mimage.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(pixels[..., :3].std()) > 0.01, path  # not a blank canvas
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 20, path


def test_bad_input_is_refused_by_name(tmp_path):
  def run(**kwargs):
    return cli_lib.run(["report"], cli_lib.Options(**kwargs), out=lambda _: None)

  missing = str(tmp_path / "nowhere")
  with pytest.raises(errors.DataFileNotFoundError,
                     match=re.escape(f"Output directory '{missing}' does not exist")):
    run(output_dir=missing, budgets="1:2:0.5")
  (tmp_path / "empty").mkdir()
  with pytest.raises(errors.DataFileNotFoundError, match=r"No candidates: .*empty/VAL.csv does"):
    run(output_dir=str(tmp_path / "empty"), budgets="1")
  out = _make_out(tmp_path)
  with pytest.raises(selection.InfeasibleBudgetError,
                     match=r"^Budget 0.5 is below the cheapest covering solution: serving all 3 "
                           r"tasks \[a, b, c\] costs at least 1$"):
    run(output_dir=out, budgets="0.5:2:0.5")
  with pytest.raises(cli_lib.UsageError, match="report needs --budgets"):
    run(output_dir=out)
  with pytest.raises(cli_lib.UsageError, match="report needs --output_dir"):
    run(budgets="1")
  with pytest.raises(cli_lib.UsageError, match="report does not use --config, --tasks"):
    run(output_dir=out, budgets="1", config="chars-lite", tasks=["a"])
  assert not os.path.exists(os.path.join(out, "report"))


def test_a_method_with_other_tasks_is_skipped_and_said_so(tmp_path):
  out = _make_out(tmp_path, methods={"hoa": _HOA})
  (tmp_path / "out" / "esa").mkdir()
  (tmp_path / "out" / "esa" / "VAL.csv").write_text("network,cost,a,b\na+b,1,0.1,0.2\n")
  r = report.build(report.Options(out, [selection.exact(1)]))
  assert r["skipped"]["esa"].endswith("has tasks [a, b]; the truth has [a, b, c]")
  assert "esa" not in r["methods"] and "hoa" in r["methods"]


def test_a_method_killed_midway_is_skipped_and_said_so(tmp_path):
  out = _make_out(tmp_path, methods={"hoa": _HOA})
  (tmp_path / "out" / "esa").mkdir()
  # A killed ESA run: its CSV has every task's column but no network for c yet.
  (tmp_path / "out" / "esa" / "VAL.csv").write_text("network,cost,a,b,c\na+b,1,0.1,0.2,\n")
  r = report.build(report.Options(out, [selection.exact(1)]))
  assert r["skipped"]["esa"].startswith("unusable (")
  assert "task 'c' is solved by no network" in r["skipped"]["esa"]
  assert "esa" not in r["methods"] and "hoa" in r["methods"]


def test_group_tasks_report_command(tmp_path):
  out = _make_out(tmp_path, methods={"hoa": _HOA, "tag": _TAG})
  script = os.path.join(_REPO, "bin", "group_tasks.py")
  done = subprocess.run(
      [sys.executable, script, "report", f"--output_dir={out}", "--budgets=1:3:0.5",
       f"--report_dir={tmp_path / 'rep'}", "--seed=3"],
      capture_output=True, text=True, timeout=300, cwd=tmp_path)
  assert done.returncode == 0, done.stderr[-3000:]
  data = json.loads((tmp_path / "rep" / "report.json").read_text())
  assert data["budgets"] == [1, 1.5, 2, 2.5, 3] and data["seed"] == 3
  assert data["hoa_gap_max"] == pytest.approx((14.1 - 12.8) / 12.8)
  assert math.isfinite(data["tag_gap_mean"])
  assert (tmp_path / "rep" / "loss_vs_budget.png").stat().st_size > 1000
  assert "Total test loss per budget" in done.stdout
  failed = subprocess.run(
      [sys.executable, script, "report", f"--output_dir={tmp_path / 'none'}", "--budgets=1"],
      capture_output=True, text=True, timeout=300, cwd=tmp_path)
  assert failed.returncode == 2
  assert failed.stderr.strip().splitlines()[-1] == (
      f"Error: Output directory '{tmp_path / 'none'}' does not exist; expected the --output_dir "
      "of `bin/group_tasks.py train`")
