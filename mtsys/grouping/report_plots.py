"""How the task grouping report (`report`) looks: its text tables and its PNG figures.

Every function takes the report's JSON object (`report.build`) and returns text or PNG bytes;
nothing here reads or writes files. Figures are `matplotlib.figure.Figure` objects drawn on an Agg
canvas, not pyplot: no global figure state, no interactive backend (as `mtsys.inspect.plots`).

| figure | shows |
|---|---|
| `loss_vs_budget.png` | total test loss per budget of every method (the paper's Figure 2) |
| `pairwise.png` | Table 2 as a heat map, and TAG's affinity when there is one |
"""

from __future__ import annotations

import io
import math
from typing import Optional, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

LABELS = {"exact": "exact optimum", "esa": "ESA (early stopping)",
          "hoa": "HOA (higher order)", "tag": "TAG (affinity)", "random": "random grouping",
          "all_task": "one all-task network", "independent": "independent networks"}
_ANNOTATE_MAX = 10  # tasks whose heat map cells get their values written in
_APPROXIMATIONS = ("esa", "hoa", "tag")


def _off_diagonal(matrix: list) -> list:
  """`matrix` with None on the diagonal: a task's effect on itself is no inter-task affinity."""
  return [[None if i == j else v for j, v in enumerate(row)] for i, row in enumerate(matrix)]


def _fmt_budget(value: float) -> str:
  return f"{value:.12g}"


def _cell(value: Optional[float], spec: str) -> str:
  return "-" if value is None else format(value, spec)


def _grid(rows: Sequence[Sequence[str]], first_left: bool = True) -> list[str]:
  """Rows of cells as right-aligned columns (the first column left-aligned)."""
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  return ["  ".join(c.ljust(w) if i == 0 and first_left else c.rjust(w)
                    for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]


def matrix_text(table: dict, spec: str = "+.2f", suffix: str = "%",
                means: bool = True) -> list[str]:
  """A task x task table; with `means`, a mean column and row (Table 2's "Average")."""
  tasks, m = table["tasks"], table["matrix"]
  header = [""] + list(tasks) + (["mean"] if means else [])
  rows = [header]
  for s, task in enumerate(tasks):
    cells = [_cell(v, spec) + (suffix if v is not None else "") for v in m[s]]
    if means:
      cells.append(_cell(table["row_mean"][s], spec) + (
          suffix if table["row_mean"][s] is not None else ""))
    rows.append([task] + cells)
  if means:
    rows.append(["mean"] + [_cell(v, spec) + (suffix if v is not None else "")
                            for v in table["column_mean"] + [table["mean"]]])
  return _grid(rows)


def _upper_text(table: dict) -> list[str]:
  """Table 3's layout: rows tasks[:-1], columns tasks[1:], the upper triangle."""
  tasks, m = table["tasks"], table["matrix"]
  rows = [[""] + list(tasks[1:])]
  for s in range(len(tasks) - 1):
    rows.append([tasks[s]] + ["" if t <= s else _cell(m[s][t], "+.2f") + (
        "%" if m[s][t] is not None else "") for t in range(1, len(tasks))])
  return _grid(rows)


def _curve_text(report: dict, key: str) -> list[str]:
  methods = list(report["methods"])
  rows = [["budget"] + methods]
  for i, b in enumerate(report["budgets"]):
    rows.append([_fmt_budget(b)] + [_cell(report["methods"][m][i].get(key), ".4f")
                                    for m in methods])
  return _grid(rows, first_left=False)


def _served(entry: dict) -> str:
  serves = entry.get("serves")
  if serves is None and entry.get("assignment"):
    serves = {}
    for task, net in entry["assignment"].items():
      serves.setdefault(net, []).append(task)
  if serves is None:
    return " ".join(entry.get("networks") or [])
  idle = [n for n in entry.get("networks") or [] if n not in serves]
  return "  ".join([f"{net}: {' '.join(tasks)}" for net, tasks in serves.items()] +
                   [f"{net}: (none)" for net in idle])


def _groupings_text(report: dict) -> list[str]:
  lines = []
  for method, entries in report["methods"].items():
    if method == "random":
      continue
    lines.append(f"{LABELS[method]} ({method})")
    rows = [["budget", "cost", "test loss", "networks (tasks served)"]]
    for e in entries:
      if e.get("infeasible"):
        what = f"({e['infeasible']})"
      elif e.get("missing"):
        what = (f"{' '.join(e['networks'])}: not trained fully in the output directory "
                f"({', '.join(e['missing'])}); `train --method={method} --budgets=...` trains "
                "the chosen networks")
      else:
        what = _served(e)
      cost = _cell(e.get("cost"), ".12g")
      rows.append([_fmt_budget(e["budget"]), cost, _cell(e.get("test_loss"), ".4f"), what])
    body = _grid([r[:3] for r in rows], first_left=False)
    lines += [f"  {b}  {r[3]}" for b, r in zip(body, rows)]
  return lines


def text(report: dict) -> str:
  """The whole report as text: header, Tables 2 and 3, curves, gaps, groupings."""
  tasks = report["tasks"]
  lines = [f"Task grouping report of {report['output_dir']}: {len(tasks)} tasks "
           f"[{', '.join(tasks)}]; {report['candidates']} of {report['expected_candidates']} "
           "candidates trained fully" + (
               "" if report["exact_complete"] else
               " (INCOMPLETE: 'exact' is the optimum over the trained candidates only)")]
  for what, why in report["skipped"].items():
    lines.append(f"Skipped {what}: {why}")
  for key, title in (
      ("pairwise", "Table 2: % change of each task's test loss when trained in a pair network "
       "instead of alone on a full-size network"),
      ("pairwise_vs_half", "Table 2 against half-size single-task networks (the paper's "
       "equal-cost comparison)")):
    if report[key] is not None:
      lines += ["", title, "(row: trained with; column: the task measured; negative: the "
                "partner helps)"] + matrix_text(report[key])
  if report["pair_affinity"] is not None:
    lines += ["", "Table 3: pair affinity, the mean of Table 2 and its transpose (negative: "
              "the pair helps each other)"] + _upper_text(report["pair_affinity"])
  tag = report["tag_affinity"]
  if tag is not None:
    kappa = "" if tag.get("kappa") is None else f", kappa {tag['kappa']:.4g}"
    lines += ["", f"TAG affinity ({tag['source']}{kappa}; row: the task stepped on; column: "
              "the task measured; % decrease of its loss, positive: the step helps)"]
    lines += matrix_text({"tasks": tag["tasks"], "matrix": _off_diagonal(
        [[100 * v for v in row] for row in tag["matrix"]])}, means=False)
  lines += ["", "Total test loss per budget (lower is better)"] + _curve_text(report, "test_loss")
  lines += ["", "Total validation loss per budget (the exact optimum's is the least)"]
  lines += _curve_text(report, "validation_loss")
  lines += ["", "Gap to the exact optimum's loss over the budgets (mean / max), test and "
            "validation"]
  for method, g in report["gaps"].items():
    if g["budgets_measured"]:
      lines.append(f"  {method:>12}  test {g['mean']:+.2%} / {g['max']:+.2%}, validation "
                   f"{g['validation_mean']:+.2%} / {g['validation_max']:+.2%} "
                   f"({g['budgets_measured']} of {len(report['budgets'])} budgets)")
    else:
      lines.append(f"  {method:>12}  - (no budget measurable)")
  lines += ["", "Chosen groupings per budget"] + _groupings_text(report)
  return "\n".join(lines)


def _png(figure: Figure) -> bytes:
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
  return buffer.getvalue()


def loss_vs_budget(report: dict) -> bytes:
  """Total test loss against budget, one line per method (the paper's Figure 2)."""
  budgets = np.asarray(report["budgets"])
  figure = Figure(figsize=(8, 4.5))
  ax = figure.subplots()
  colors = colormaps["tab10"]
  for i, (method, entries) in enumerate(report["methods"].items()):
    y = np.array([math.nan if e.get("test_loss") is None else e["test_loss"] for e in entries])
    if np.isnan(y).all():
      continue
    exact = method == "exact"
    label = LABELS[method] + (f" (mean of {entries[0].get('draws')})"
                              if method == "random" else "")
    # Dashed approximations and dotted baselines stay visible where they coincide.
    style = "-" if exact else "--" if method in _APPROXIMATIONS else ":"
    ax.plot(budgets, y, marker="o", markersize=4 if exact else 3, linewidth=2.5 if exact else 1.5,
            linestyle=style, color="black" if exact else colors(i % 10), label=label,
            zorder=3 if exact else 2)
    if method == "random":
      std = np.array([e.get("test_loss_std") or 0.0 for e in entries])
      ax.fill_between(budgets, y - std, y + std, color=colors(i % 10), alpha=0.15, linewidth=0)
  ax.set_xlabel("inference budget (units of one full-size network)")
  ax.set_ylabel("total test loss")
  ax.set_title(f"Task grouping: {len(report['tasks'])} tasks")
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=8)
  return _png(figure)


def pairwise(report: dict) -> Optional[bytes]:
  """Heat maps of Table 2 and of TAG's affinity (what exists); None without either."""
  panels = []
  if report["pairwise"] is not None:
    panels.append(("Table 2: % test loss change in a pair (negative helps)",
                   report["pairwise"]["tasks"], report["pairwise"]["matrix"], "RdBu_r",
                   "trained with"))
  if report["tag_affinity"] is not None:
    tag = report["tag_affinity"]
    panels.append(("TAG affinity: % loss decrease (positive helps)", tag["tasks"],
                   _off_diagonal([[100 * v for v in row] for row in tag["matrix"]]), "RdBu",
                   "trunk step on"))
  if not panels:
    return None
  figure = Figure(figsize=(5.5 * len(panels), 4.8))
  for ax, (title, tasks, matrix, cmap, rows) in zip(
      np.atleast_1d(figure.subplots(1, len(panels))), panels):
    m = np.array([[math.nan if v is None else v for v in row] for row in matrix], np.float64)
    top = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 0.0
    top = top or 1.0
    image = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=-top, vmax=top)
    figure.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(tasks)), tasks, fontsize=8)
    ax.set_xlabel("task measured", fontsize=8)
    ax.set_ylabel(rows, fontsize=8)
    ax.set_title(title, fontsize=9)
    if len(tasks) <= _ANNOTATE_MAX:
      for (i, j), v in np.ndenumerate(m):
        if math.isfinite(v):
          ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=7,
                  color="white" if abs(v) > 0.6 * top else "black")
  return _png(figure)
