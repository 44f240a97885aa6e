"""Cheaper inputs for the network selection: ESA, HOA (Standley et al. 5.3) and TAG (Fifty et al.).

Each writes a candidate CSV pair (`VAL.csv`, `TEST.csv`, the format of
`mtsys.grouping.candidates`) under its own directory of the output directory, for the selection
to choose from; the networks it chooses are then trained fully (`train_chosen`) into the output
directory's own candidate area, where the exact method would train them too.

- ESA, early stopping (5.3.1): every candidate trains for `fraction` of the full budget (the
  paper: 20%) in `esa/`; `esa/VAL.csv` holds those short-trained losses.
- HOA, higher order from lower order (5.3.2): only singles, half-size singles and pairs train (in
  the shared area); a larger group's loss on task t is predicted as the mean of t's losses in the
  group's pairs: L(G, t) = mean over s in G, s != t, of L({t, s}, t). (The paper's worked example
  prints a = (0.1 + 0.6) / 2 for a's losses 0.1 and 0.5; its own rule gives (0.1 + 0.5) / 2.)
- TAG, inter-task affinity (Fifty et al. 2021): one all-task network trains in `tag/` with a
  lookahead every few steps (`mtsys.grouping.networks`), giving Z[s, t], the relative decrease of
  t's loss after a trunk step on s's gradient alone, averaged over training. Singles and half-size
  singles train for real (n + n/2 small networks: they anchor every task's loss scale, which
  affinities cannot give, and half-size losses are not predictable from a full-size network).

TAG's mapping from affinities to losses, a first-order model of training: in a group each
member's gradient step changes t's loss by the factor (1 - Z[s, t]), so over training the log
loss moves with the summed affinity onto t, R(G, t) = sum over s in G, s != t, of Z[s, t]:

    L(G, t) = L({t}, t) * exp(-kappa * R(G, t))

with one scale kappa for all tasks, fitted (least squares through the origin) so that the
all-task network's measured losses are reproduced from the singles': log(L({t}) / L(T, t)) =
kappa * R(T, t). kappa may come out negative (more affinity, more loss: the tasks compete in this
setting); with no affinity at all every group is predicted at its singles' losses. Singles,
half-size singles and the all-task network keep their measured losses. Test losses are predicted
with the same kappa from the singles' test losses.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Callable, Mapping, Sequence

import numpy as np

from mtsys import errors
from mtsys.grouping import candidates as mcand
from mtsys.system import fileio
from mtsys.train import trainer

SPLITS = ("validation", "test")
# (validation CSV path, budgets) -> {budget: the chosen networks' names}: the exact selection.
Choose = Callable[[str, Sequence[float]], Mapping[float, Sequence[str]]]

_join = fileio.join


# --- ESA ----------------------------------------------------------------------------------------

def esa_budget(budget: trainer.Budget, fraction: float) -> trainer.Budget:
  """`fraction` of `budget`'s steps: whole epochs when that leaves at least one, else one epoch
  of that share of the batches."""
  if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
    raise errors.ConfigError(f"Invalid ESA fraction {fraction!r}: expected a value in (0, 1].")
  epochs = budget.epochs * fraction
  if epochs >= 1:
    return trainer.Budget(int(round(epochs)), budget.max_batches_per_epoch, budget.batch_size)
  return trainer.Budget(1, max(1, int(round(budget.max_batches_per_epoch * epochs))),
                        budget.batch_size)


# --- HOA ----------------------------------------------------------------------------------------

def hoa_losses(pair_losses: Mapping[frozenset, Mapping[str, float]],
               group: Sequence[str]) -> dict:
  """Predicted {task: loss} of a group of 3+ tasks from its pairs' losses (module doc)."""
  out = {}
  for t in group:
    losses = [pair_losses[frozenset((t, s))][t] for s in group if s != t]
    out[t] = float(np.mean(losses))
  return out


def hoa_rows(records: Mapping[str, dict], tasks: Sequence[str], split: str) -> list:
  """Candidate rows (network, cost, {task: loss}): measured for every trained candidate of up to
  two tasks, predicted for every larger group."""
  rows, pairs = _measured_rows(records, tasks, split, max_size=2), {}
  for r in records.values():
    if len(r["tasks"]) == 2:
      pairs[frozenset(r["tasks"])] = {t: m[split]["loss"] for t, m in r["metrics"].items()}
  for cand in mcand.enumerate_candidates(tasks, halves=False):
    if len(cand.tasks) > 2:
      rows.append((cand.name, cand.cost, hoa_losses(pairs, cand.tasks)))
  return rows


# --- TAG ----------------------------------------------------------------------------------------

def received_affinity(affinity: np.ndarray, tasks: Sequence[str], group: Sequence[str],
                      task: str) -> float:
  """R(G, t): the summed affinity of the group's other tasks onto `task`."""
  j = list(tasks).index(task)
  return float(sum(affinity[list(tasks).index(s), j] for s in group if s != task))


def tag_scale(affinity: np.ndarray, tasks: Sequence[str], single: Mapping[str, float],
              joint: Mapping[str, float]) -> float:
  """kappa: least squares of log(single / joint) = kappa * R(T, t) over the tasks."""
  r = np.array([received_affinity(affinity, tasks, tasks, t) for t in tasks])
  y = np.array([math.log(max(single[t], 1e-12) / max(joint[t], 1e-12)) for t in tasks])
  denominator = float(np.dot(r, r))
  return float(np.dot(r, y) / denominator) if denominator > 0 else 0.0


def tag_losses(affinity: np.ndarray, tasks: Sequence[str], single: Mapping[str, float],
               kappa: float, group: Sequence[str]) -> dict:
  """Predicted {task: loss} of `group` (module doc)."""
  return {t: single[t] * math.exp(-kappa * received_affinity(affinity, tasks, group, t))
          for t in group}


def tag_rows(records: Mapping[str, dict], joint: dict, tasks: Sequence[str], split: str,
             kappa: float) -> list:
  """Measured singles, half-size singles and all-task network; every other group predicted."""
  affinity = np.array(joint["affinity"])
  rows = _measured_rows(records, tasks, split, max_size=1)
  single = {r["tasks"][0]: r["metrics"][r["tasks"][0]][split]["loss"] for r in records.values()
            if len(r["tasks"]) == 1 and not r["half"]}
  for cand in mcand.enumerate_candidates(tasks, halves=False):
    if len(cand.tasks) == len(tasks) and len(tasks) > 1:
      rows.append((cand.name, cand.cost, {t: m[split]["loss"]
                                          for t, m in joint["metrics"].items()}))
    elif len(cand.tasks) > 1:
      rows.append((cand.name, cand.cost,
                   tag_losses(affinity, tasks, single, kappa, cand.tasks)))
  return rows


# --- Orchestration ------------------------------------------------------------------------------

def _measured_rows(records, tasks, split, max_size) -> list:
  order = {c.name: i for i, c in enumerate(mcand.enumerate_candidates(tasks, max_size))}
  chosen = sorted((r for r in records.values() if r["network"] in order),
                  key=lambda r: order[r["network"]])
  return [(r["network"], r["cost"], {t: m[split]["loss"] for t, m in r["metrics"].items()})
          for r in chosen]


def write_rows(directory: str, rows: Mapping[str, list], tasks: Sequence[str],
               job: mcand.Job) -> dict:
  """VAL.csv / TEST.csv of {split: rows} in `directory`; returns their paths."""
  out = {}
  for split, name in (("validation", "VAL.csv"), ("test", "TEST.csv")):
    out[split] = _join(directory, name)
    mcand.write_file(out[split], mcand.csv_text(rows[split], tasks).encode(), job.faults)
  return out


def cost_of(records: Mapping[str, dict], names: Sequence[str]) -> dict:
  """Training cost (`candidates.train_cost`), seconds and count of the named records."""
  used = [records[n] for n in names]
  return {"train_cost": sum(r["train_cost"] for r in used),
          "train_seconds": sum(r["seconds"] for r in used), "networks": len(used)}


def run_esa(short: mcand.Job, tasks: Sequence[str], *, log=print, verbose: bool = False) -> dict:
  """Every candidate for a short budget (in `short.area`): VAL.csv / TEST.csv there."""
  cands = mcand.enumerate_candidates(tasks)
  records = mcand.train_all(short, cands, tasks, log=log, verbose=verbose)
  return {"validation_csv": _join(short.area, "VAL.csv"), "test_csv": _join(short.area, "TEST.csv"),
          **cost_of(records, [c.name for c in cands])}


def run_hoa(full: mcand.Job, directory: str, tasks: Sequence[str], *, log=print,
            verbose: bool = False) -> dict:
  """Singles, half-size singles and pairs (in the shared area), then the predicted CSVs."""
  cands = mcand.enumerate_candidates(tasks, max_size=2)
  records = mcand.train_all(full, cands, tasks, log=log, verbose=verbose)
  paths = write_rows(directory, {s: hoa_rows(records, tasks, s) for s in SPLITS}, tasks, full)
  return {"validation_csv": paths["validation"], "test_csv": paths["test"],
          **cost_of(records, [c.name for c in cands])}


def run_tag(full: mcand.Job, tag: mcand.Job, tasks: Sequence[str], *, every: int, log=print,
            verbose: bool = False) -> dict:
  """Singles and half-size singles (shared area), the all-task network with lookaheads (in
  `tag.area`), then `affinity.json` and the predicted CSVs in `tag.area`."""
  if not isinstance(every, int) or every < 1:
    raise errors.ConfigError(f"Invalid TAG lookahead period {every!r}: expected a positive "
                             "number of steps.")
  singles = mcand.enumerate_candidates(tasks, max_size=1)
  records = mcand.train_all(full, singles, tasks, log=log, verbose=verbose)
  joint_cand = mcand.Candidate(tuple(tasks))
  settings = dataclasses.replace(tag.settings, lookahead_every=every)
  joint = mcand.train_all(tag, [joint_cand], tasks, log=log, verbose=verbose,
                          settings_for=lambda _: settings)[joint_cand.name]
  single = {t: records[mcand.network_name([t])]["metrics"][t]["validation"]["loss"]
            for t in tasks}
  kappa = tag_scale(np.array(joint["affinity"]), tasks, single,
                    {t: m["validation"]["loss"] for t, m in joint["metrics"].items()})
  rows = {s: tag_rows(records, joint, tasks, s, kappa) for s in SPLITS}
  paths = write_rows(tag.area, rows, tasks, tag)
  mcand.write_file(_join(tag.area, "affinity.json"), _affinity_json(joint, tasks, kappa),
                      tag.faults)
  log(f"[tag] affinity (row: the task stepped on; column: the task measured), kappa {kappa:.4g}:")
  for t, row in zip(tasks, joint["affinity"]):
    log(f"  {t:>16} " + " ".join(f"{z:+.4f}" for z in row))
  cost = cost_of(records, [c.name for c in singles])
  cost = {k: cost[k] + v for k, v in cost_of({"j": joint}, ["j"]).items()}
  return {"validation_csv": paths["validation"], "test_csv": paths["test"], "kappa": kappa,
          "affinity_json": _join(tag.area, "affinity.json"), **cost}


def _affinity_json(joint: dict, tasks: Sequence[str], kappa: float) -> bytes:
  return json.dumps({"tasks": list(tasks), "affinity": joint["affinity"], "kappa": kappa,
                     "lookaheads": joint["lookaheads"],
                     "meaning": "affinity[i][j] = mean over lookaheads of 1 - L_j(after a "
                                "trunk step on task i's gradient) / L_j(before)"},
                    indent=1).encode()


def train_chosen(full: mcand.Job, directory: str, validation_csv: str, tasks: Sequence[str],
                 choose: Choose, budgets: Sequence[float], *, log=print,
                 verbose: bool = False) -> dict:
  """Selects on `validation_csv` at every budget, trains the chosen networks fully (shared
  area), and writes `chosen.json` in `directory`: {budget: networks}."""
  chosen = {float(b): list(names) for b, names in choose(validation_csv, budgets).items()}
  wanted = sorted({n for names in chosen.values() for n in names})
  by_name = {c.name: c for c in mcand.enumerate_candidates(tasks)}
  unknown = [n for n in wanted if n not in by_name]
  if unknown:
    raise errors.ConfigError(f"The selection chose networks {unknown} that are not candidates "
                             f"of the tasks {list(tasks)}.")
  log(f"Training the {len(wanted)} chosen network(s) fully: {wanted}")
  records = mcand.train_all(full, [by_name[n] for n in wanted], tasks, log=log, verbose=verbose)
  mcand.write_file(_join(directory, "chosen.json"), json.dumps(
      {"budgets": {repr(b): n for b, n in chosen.items()}}, indent=1).encode(), full.faults)
  return {"chosen": chosen, **cost_of(records, wanted)}
