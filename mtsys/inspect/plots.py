"""The papers' plots of one or more systems, as PNG files (matplotlib, drawn on an Agg canvas).

| file | shows | read from | like |
|---|---|---|---|
| `params_per_task.png` | activated and added parameters of every sampled child as % of the system's parameters, over the run | history | µ2Net Figure 2 |
| `tradeoff.png` | average test accuracy vs. parameters per task: one point per system, labelled with its scale factor, and one per baseline stored under a system's `baselines/` | paths | muNet Figure 3 |
| `hparams.png` | share of children sampled with each hyperparameter value, per system | history | muNet Figure 8, µ3Net Figure 6 |
| `mutation_probs.png` | share of children with each µ, per action when per-action µ is on | history | µ3Net Figure 7 |
| `best_score.png` | the active population's best score per task over the task's generations | history | - |

`write_plots` makes them all; each has its own function too. Given several systems, the
per-system plots (`params_per_task`, `best_score`) are written once per system, named
`<plot>-<label>.png` (label: the directory's name). A system without history (made before
mtsys kept one) gets no history plots: `write_plots` says so through `log` and goes on. Private
tasks (visibility PRIVATE or GROUPS) are left out of every plot unless `include_private`; the
trade-off then averages over the other tasks. Nothing is written to the systems.

Figures are made with `matplotlib.figure.Figure`, not pyplot: no global figure state, no
interactive backend.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
import os
from typing import Callable, Mapping, Sequence, Union

import numpy as np
import tensorflow as tf
from matplotlib import colormaps
from matplotlib import ticker
from matplotlib.figure import Figure

from mtsys import errors
from mtsys.evolution import accounting
from mtsys.protos import mtsys_pb2
from mtsys.system import fileio
from mtsys.system import history
from mtsys.system import store as mstore

_MU = "mutation_prob"
_PRIVATE = (mtsys_pb2.Access.PRIVATE, mtsys_pb2.Access.GROUPS)
_LEGEND_MAX = 12  # tasks named in a legend; more are told apart by colour only


@dataclasses.dataclass
class TradeoffPoint:
  """One system on the quality/size plane."""

  label: str
  params_per_task: float
  avg_test_accuracy: float
  baseline: bool = False


# ------------------------------------------------------------------------------- entry point

def write_plots(stores: Sequence[Union[str, mstore.Store]], output_dir: str,
                include_private: bool = False,
                log: Callable[[str], None] = print) -> list[str]:
  """Writes every plot the systems allow into `output_dir`; returns the files written.

  Args:
    stores: systems (Store objects or directories), read only.
    output_dir: made if missing (local or a tf.io.gfile URL).
    include_private: plot private tasks too.
    log: told about every plot skipped and why (e.g. a system without history).

  Raises:
    SystemNotFoundError: a directory without a system.
    UserError: `output_dir` cannot be written.
  """
  systems = [s if isinstance(s, mstore.Store) else mstore.Store.open(s) for s in stores]
  labels = _labels(systems)
  several = len(systems) > 1
  written, with_history = [], {}
  for label, store in zip(labels, systems):
    hidden = set() if include_private else private_tasks(store)
    records = [r for r in history.read(store) if r.task not in hidden]
    if not records:
      log(f"No history in {store.root} (a system made before mtsys kept one, or never evolved): "
          "skipping its history plots.")
      continue
    with_history[label] = records
    suffix = f"-{label}" if several else ""
    written.append(plot_params_per_task(
        records, _out(output_dir, f"params_per_task{suffix}.png"), title=label))
    written.append(plot_best_score(records, _out(output_dir, f"best_score{suffix}.png"),
                                   title=label))
  if with_history:
    written.append(plot_hparams(with_history, _out(output_dir, "hparams.png")))
    if any(r.mutation_probs for rs in with_history.values() for r in rs):
      written.append(plot_mutation_probs(with_history, _out(output_dir, "mutation_probs.png")))
    else:
      log("No mutation probabilities in the history: skipping mutation_probs.png.")
  points = [p for label, store in zip(labels, systems)
            for p in tradeoff_points(store, label if several else "", include_private)]
  if len(points) >= 2:
    written.append(plot_tradeoff(points, _out(output_dir, "tradeoff.png")))
  else:
    log("The quality/size trade-off needs two or more systems (or baselines) with evaluated "
        f"paths; found {len(points)}: skipping tradeoff.png.")
  return written


def private_tasks(store: mstore.Store) -> set[str]:
  """The tasks of the store's config whose details stay hidden unless asked for."""
  return {t.name for t in store.read_state().config.task if t.access.visibility in _PRIVATE}


def _labels(systems: Sequence[mstore.Store]) -> list[str]:
  """File-name-safe, distinct labels: each system directory's name."""
  out = []
  for i, store in enumerate(systems):
    base = "".join(c if c.isalnum() or c in "_.-" else "_" for c in
                   os.path.basename(store.root.rstrip("/"))) or f"system{i}"
    out.append(base if base not in out else f"{base}-{i}")
  return out


def _out(output_dir: str, name: str) -> str:
  return fileio.join(output_dir, name)


def _save(figure: Figure, path: str) -> str:
  """Writes `figure` as a PNG at `path` (any tf.io.gfile location); returns `path`."""
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
  try:
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    with tf.io.gfile.GFile(path, "wb") as f:
      f.write(buffer.getvalue())
  except (tf.errors.OpError, OSError) as e:
    raise errors.UserError(f"Cannot write the plot {path}: "
                           f"{getattr(e, 'message', None) or e}") from e
  return path


def _colors(n: int) -> list:
  cmap = colormaps["tab10" if n <= 10 else "tab20"]
  return [cmap(i % cmap.N) for i in range(n)]


# ------------------------------------------------------------------- µ2Net Figure 2

def plot_params_per_task(records: Sequence[mtsys_pb2.ChildRecord], path: str,
                         title: str = "") -> str:
  """Activated and added parameters of each sampled child as % of the system's parameters
  (at the end of its generation), in sampling order, with a moving average; dotted lines mark
  each task's first child."""
  records = [r for r in records if r.system_params > 0]
  x = np.arange(1, len(records) + 1)
  figure = Figure(figsize=(9, 4.5))
  ax = figure.subplots()
  window = max(1, len(records) // 20)
  for values, name, color in () if not records else (
      ([r.metrics.total_params for r in records], "activated", "tab:blue"),
      ([r.added_params for r in records], "added", "tab:orange")):
    share = 100.0 * np.asarray(values, float) / np.asarray([r.system_params for r in records])
    ax.scatter(x, share, s=8, color=color, alpha=0.3)
    smooth = np.convolve(share, np.ones(window) / window, mode="valid")
    ax.plot(x[window - 1:], smooth, color=color,
            label=f"{name} parameters per task (mean of {window})" if window > 1 else
            f"{name} parameters per task")
  first = {}
  for i, r in enumerate(records, start=1):
    first.setdefault(r.task, i)
  for task, i in first.items():
    ax.axvline(i, color="grey", linestyle=":", linewidth=0.8)
    if len(first) <= _LEGEND_MAX:
      ax.text(i, 0.98, f" {task}", transform=ax.get_xaxis_transform(), rotation=90,
              va="top", ha="left", fontsize=8, color="dimgrey")
  ax.set_xlabel("sampled child models")
  ax.set_ylabel("% of the system's parameters")
  ax.set_ylim(bottom=0)
  ax.legend(loc="upper right", fontsize=8)
  ax.set_title(f"Activated and added parameters per task{': ' + title if title else ''}")
  return _save(figure, path)


# ------------------------------------------------------------------- best score per task

def plot_best_score(records: Sequence[mtsys_pb2.ChildRecord], path: str,
                    title: str = "") -> str:
  """Each task's best score at the end of each of its generations (all phases in order)."""
  best = collections.defaultdict(dict)  # task -> (iteration, generation) -> best score
  for r in records:
    if math.isfinite(r.best_score):
      key = (r.task_iteration, r.generation)
      best[r.task][key] = max(best[r.task].get(key, -math.inf), r.best_score)
  figure = Figure(figsize=(9, 4.5))
  ax = figure.subplots()
  for (task, by_gen), color in zip(best.items(), _colors(len(best))):
    ys = [by_gen[k] for k in sorted(by_gen)]
    ax.plot(range(1, len(ys) + 1), ys, marker="o", markersize=3, color=color, label=task)
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  ax.set_xlabel("generation of the task (all its active phases)")
  ax.set_ylabel("best score")
  if 0 < len(best) <= _LEGEND_MAX:
    ax.legend(fontsize=8, loc="lower right")
  ax.set_title(f"Best score per task{': ' + title if title else ''}")
  return _save(figure, path)


# ----------------------------------------------------- muNet Figure 8, µ3Net Figures 6-7

def _distributions(records_by_system: Mapping[str, Sequence[mtsys_pb2.ChildRecord]], path: str,
                   names: Sequence[str], values_of, title: str) -> str:
  """One panel per name: the share of each system's children per value, bars side by side."""
  cols = min(4, max(1, len(names)))
  rows = max(1, math.ceil(len(names) / cols))
  figure = Figure(figsize=(3.2 * cols, 2.6 * rows))
  axes = np.atleast_1d(figure.subplots(rows, cols, squeeze=False).ravel())
  systems = list(records_by_system)
  colors = _colors(len(systems))
  for ax, name in zip(axes, names):
    counts = {s: collections.Counter(v for r in records_by_system[s]
                                     for v in values_of(r, name)) for s in systems}
    values = sorted({v for c in counts.values() for v in c}, key=_order)
    width = 0.8 / len(systems)
    for j, s in enumerate(systems):
      total = max(1, sum(counts[s].values()))
      ax.bar(np.arange(len(values)) + (j - (len(systems) - 1) / 2) * width,
             [counts[s][v] / total for v in values], width=width, color=colors[j], label=s)
    ax.set_xticks(range(len(values)), [_fmt(v) for v in values], rotation=45, fontsize=7)
    ax.set_title(name, fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
  for ax in axes[len(names):]:
    ax.set_visible(False)
  if len(systems) > 1:
    axes[0].legend(fontsize=7)
  figure.suptitle(title)
  figure.tight_layout()
  return _save(figure, path)


def _order(v):
  return (0, float(v), "") if isinstance(v, (int, float)) else (1, 0.0, str(v))


def _fmt(v) -> str:
  return f"{v:g}" if isinstance(v, float) else str(v)


def plot_hparams(records_by_system: Mapping[str, Sequence[mtsys_pb2.ChildRecord]],
                 path: str) -> str:
  """Distribution of the sampled hyperparameter values over children (µ apart)."""
  names = sorted({n for rs in records_by_system.values() for r in rs for n in r.hparams
                  if not n.startswith(_MU)})

  def values_of(r, name):
    value = r.hparams.get(name)
    kind = value.WhichOneof("kind") if value is not None else None
    return [getattr(value, kind)] if kind else []

  return _distributions(records_by_system, path, names, values_of,
                        "Sampled hyperparameters (share of children)")


def plot_mutation_probs(records_by_system: Mapping[str, Sequence[mtsys_pb2.ChildRecord]],
                        path: str) -> str:
  """Distribution of µ over children: one panel per action (per-action µ) or one shared."""
  names = sorted({n for rs in records_by_system.values() for r in rs for n in r.mutation_probs})

  def values_of(r, name):
    return [round(r.mutation_probs[name], 6)] if name in r.mutation_probs else []

  return _distributions(records_by_system, path, names, values_of,
                        "Mutation probabilities µ (share of children)")


# ------------------------------------------------------------------- muNet Figure 3

def tradeoff_points(store: mstore.Store, label: str = "",
                    include_private: bool = False) -> list[TradeoffPoint]:
  """The store's point (labelled with its scale factor, after `label` if given) and one per
  baseline system under its `baselines/`; none for a system without paths."""
  out = []
  point = _point(store, include_private)
  if point is not None:
    scale = store.read_state().config.evolution.score.scale_factor or 1.0
    point.label = f"{label + ' ' if label else ''}s={scale:g}"
    out.append(point)
  base = fileio.join(store.root, "baselines")
  if tf.io.gfile.isdir(base):
    for method in sorted(m.rstrip("/") for m in tf.io.gfile.listdir(base)):
      directory = fileio.join(base, method)
      if tf.io.gfile.exists(fileio.join(directory, "system.pb")):
        point = _point(mstore.Store.open(directory), include_private)
        if point is not None:
          point.label, point.baseline = f"{label + ' ' if label else ''}{method}", True
          out.append(point)
  return out


def _point(store: mstore.Store, include_private: bool):
  hidden = set() if include_private else private_tasks(store)
  paths = {t: p for t, p in store.paths().items() if t not in hidden}
  if not paths:
    return None
  params = accounting.system_params(paths, store.read_component_spec) / len(paths)
  accuracy = float(np.mean([p.metrics.test_accuracy for p in paths.values()]))
  return TradeoffPoint("", params, accuracy)


def plot_tradeoff(points: Sequence[TradeoffPoint], path: str) -> str:
  """Average test accuracy against parameters per task, one labelled point per system."""
  figure = Figure(figsize=(6.5, 4.5))
  ax = figure.subplots()
  for baseline, marker, color, name in ((False, "o", "tab:blue", "evolved"),
                                        (True, "s", "tab:grey", "baseline")):
    chosen = [p for p in points if p.baseline == baseline]
    if chosen:
      ax.scatter([p.params_per_task for p in chosen], [p.avg_test_accuracy for p in chosen],
                 marker=marker, color=color, label=name)
    for p in chosen:
      ax.annotate(p.label, (p.params_per_task, p.avg_test_accuracy), fontsize=8,
                  textcoords="offset points", xytext=(4, 4))
  ax.set_xscale("log")
  ax.set_xlabel("parameters per task")
  ax.set_ylabel("average test accuracy")
  ax.legend(fontsize=8)
  ax.set_title("Quality / size trade-off")
  return _save(figure, path)
