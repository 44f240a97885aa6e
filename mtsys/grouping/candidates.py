"""Training the candidate networks of a task set (Standley et al. section 5.1), resumably.

The candidates are one full-size network per non-empty task subset (2^n - 1) plus the n
half-size single-task networks (`enumerate_candidates`; HOA and TAG ask only for the groups up to
size 2 or 1). Each is trained by `mtsys.grouping.networks` and recorded with its per-task
validation and test loss and accuracy and its inference cost in units of one full network (the
paper's SNT: 1, or 0.5 for a half-size one; the selection is exact on that declared grid).

Names. A candidate is named by its tasks in the task list's order, joined by '+' (a task's '/' as
'~', `names.task_file_stem`), with '@half' for a half-size one: 'digits', 'digits+greek',
'digits@half'. Neither '+' nor '@' may occur in a task name, so names are unambiguous.

Layout of an area (the output directory, or its `esa/` for early-stopped candidates):

| file | holds | written |
|---|---|---|
| `candidates/<network>/` | the trained network as an mtsys system (`mtsys.system.store`): its trunk and heads are components, one path per task sharing the trunk | components, then the paths |
| `candidates/<network>.json` | the candidate's record: tasks, cost, per-task metrics, steps, seconds, settings | atomically, LAST: the candidate is complete once it exists |
| `VAL.csv`, `TEST.csv` | every complete candidate's per-task validation / test loss, in the candidate CSV format (`network,cost,<task>,...`, an empty cell where a candidate does not solve a task) | atomically, after each completed candidate |

Resuming: a candidate whose record exists is skipped; a system directory without a record (a
run killed mid-candidate) is deleted and that candidate alone is trained again. Records also
hold the settings they were trained with; `check_area` refuses an area trained otherwise, before
any write.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
from typing import Callable, Iterable, Mapping, Optional, Sequence

import tensorflow as tf

from mtsys import errors
from mtsys import faults as mfaults
from mtsys.config import loader
from mtsys.config import names
from mtsys.protos import mtsys_pb2
from mtsys.grouping import networks
from mtsys.system import fileio
from mtsys.system import paths as mpaths
from mtsys.system import store as mstore

HALF_SUFFIX = "@half"
_join = fileio.join


@dataclasses.dataclass(frozen=True)
class Candidate:
  """A candidate network: the tasks it solves, and whether it is a half-size one."""

  tasks: tuple
  half: bool = False

  @property
  def name(self) -> str:
    return network_name(self.tasks, self.half)

  @property
  def cost(self) -> float:
    return 0.5 if self.half else 1.0


def network_name(tasks: Sequence[str], half: bool = False) -> str:
  return "+".join(names.task_file_stem(t) for t in tasks) + (HALF_SUFFIX if half else "")


def enumerate_candidates(tasks: Sequence[str], max_size: Optional[int] = None,
                         halves: bool = True) -> list[Candidate]:
  """Singles, the half-size singles, then pairs, triples, ... up to `max_size` (default all).

  Raises:
    ConfigError: no tasks, or a task named twice.
  """
  tasks = list(tasks)
  if not tasks:
    raise errors.ConfigError("Task grouping needs at least one task; got an empty task list.")
  repeated = sorted({t for t in tasks if tasks.count(t) > 1})
  if repeated:
    raise errors.ConfigError(f"Tasks named more than once: {repeated}; expected each once.")
  out = [Candidate((t,)) for t in tasks]
  if halves:
    out += [Candidate((t,), half=True) for t in tasks]
  for size in range(2, min(len(tasks), max_size or len(tasks)) + 1):
    out += [Candidate(group) for group in itertools.combinations(tasks, size)]
  return out


# --- Records and CSVs ---------------------------------------------------------------------------

def system_dir(area: str, name: str) -> str:
  return _join(area, "candidates", name)


def record_file(area: str, name: str) -> str:
  return _join(area, "candidates", name + ".json")


def read_records(area: str) -> dict:
  """Every complete candidate's record in `area`, by network name."""
  base = _join(area, "candidates")
  if not tf.io.gfile.isdir(base):
    return {}
  out = {}
  for entry in sorted(tf.io.gfile.listdir(base)):
    if entry.endswith(".json"):
      record = json.loads(fileio.read(_join(base, entry)))
      out[record["network"]] = record
  return out


def write_file(path: str, data: bytes, faults: mfaults.Injector) -> None:
  """Replaces `path` atomically, making its directory first."""
  tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
  fileio.write_atomic(path, data, faults)


def sweep(area: str, faults: mfaults.Injector) -> None:
  """Deletes the temporary files a killed run left in `area` (call holding the run lock)."""
  for directory in (area, _join(area, "candidates")):
    if tf.io.gfile.isdir(directory):
      for entry in tf.io.gfile.listdir(directory):
        if fileio.TMP_MARK in entry:
          fileio.remove(_join(directory, entry.rstrip("/")), faults)


def check_area(area: str, settings: Mapping[str, object]) -> None:
  """Raises IncompatibleSystemError when `area` holds candidates trained with other settings."""
  for name, record in read_records(area).items():
    if record.get("settings") != dict(settings):
      differ = {k: (record.get("settings", {}).get(k), v) for k, v in settings.items()
                if record.get("settings", {}).get(k) != v}
      raise errors.IncompatibleSystemError(
          f"{area} holds candidate '{name}' trained with other settings (stored, asked): "
          f"{differ}; use another output directory or the same settings.")


def csv_text(rows: Iterable[tuple], tasks: Sequence[str]) -> str:
  """The candidate CSV: header `network,cost,<task>,...`; rows (network, cost, {task: loss})."""
  out = io.StringIO()
  out.write(",".join(["network", "cost", *tasks]) + "\n")
  for network, cost, losses in rows:
    cells = [repr(float(losses[t])) if t in losses else "" for t in tasks]
    out.write(",".join([network, repr(float(cost)), *cells]) + "\n")
  return out.getvalue()


def write_csvs(area: str, records: Mapping[str, dict], tasks: Sequence[str],
               faults: Optional[mfaults.Injector] = None) -> None:
  """VAL.csv and TEST.csv of the records whose tasks are all in `tasks`, atomically."""
  faults = faults or mfaults.Injector()
  chosen = [r for r in records.values() if set(r["tasks"]) <= set(tasks)]
  chosen.sort(key=lambda r: (len(r["tasks"]), r["half"],
                             [tasks.index(t) for t in r["tasks"]]))
  for split, file in (("validation", "VAL.csv"), ("test", "TEST.csv")):
    rows = [(r["network"], r["cost"], {t: m[split]["loss"] for t, m in r["metrics"].items()})
            for r in chosen]
    write_file(_join(area, file), csv_text(rows, tasks).encode(), faults)


def train_cost(cand: Candidate, steps: int, lookaheads: int = 0) -> float:
  """Training cost in full-network batch passes: a training step of a k-task network is k
  (times the cost 0.5 for a half-size one); a TAG lookahead is k gradient passes and k * k
  forward passes, a forward pass counted as a third of a training pass."""
  k = len(cand.tasks)
  return steps * k * cand.cost + lookaheads * (k + k * k / 3)


# --- Training -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Job:
  """What every candidate of one area shares."""

  area: str
  config: loader.Config
  trunk: networks.Trunk
  task_data: Mapping[str, object]
  settings: networks.Settings
  # Stored in each record and compared on resume (`check_area`).
  signature: Mapping[str, object]
  author: str = "grouping/candidates"
  faults: mfaults.Injector = dataclasses.field(default_factory=mfaults.Injector)


def train_all(job: Job, candidates: Sequence[Candidate], tasks: Sequence[str], *,
              log: Callable[[str], None] = print, verbose: bool = False,
              settings_for: Optional[Callable[[Candidate], networks.Settings]] = None) -> dict:
  """Trains every candidate not complete yet; rewrites the CSVs after each. Returns the area's
  records by name (complete ones included). `settings_for` overrides the settings per candidate
  (TAG's lookahead)."""
  records = read_records(job.area)
  for i, cand in enumerate(candidates):
    prefix = f"[{i + 1}/{len(candidates)}] {cand.name} (cost {cand.cost:g})"
    if cand.name in records:
      log(f"{prefix}: trained already")
      continue
    settings = settings_for(cand) if settings_for else job.settings
    log(f"{prefix}: training {len(cand.tasks)} task(s), {settings.budget.epochs} epoch(s) x "
        f"<= {settings.budget.max_batches_per_epoch} batches of {settings.budget.batch_size}"
        + (f", lookahead every {settings.lookahead_every} steps"
           if settings.lookahead_every else ""))
    record = train_one(job, cand, settings, log=log if verbose else None)
    records[cand.name] = record
    write_csvs(job.area, records, tasks, job.faults)
    log(f"{prefix}: " + ", ".join(
        f"{t} {m['validation']['loss']:.4f}/{m['test']['loss']:.4f}"
        for t, m in record["metrics"].items()) + f" (validation/test loss), "
        f"{record['seconds']:.1f}s")
  write_csvs(job.area, records, tasks, job.faults)
  return records


def train_one(job: Job, cand: Candidate, settings: networks.Settings, *,
              log: Optional[Callable[[str], None]] = None) -> dict:
  """Trains one candidate and stores it (system, then record); returns its record."""
  directory = system_dir(job.area, cand.name)
  fileio.rmtree(directory, job.faults)  # what a killed run left of this candidate
  trunk = networks.half_trunk(job.trunk) if cand.half else job.trunk
  specs = [job.config.task(t) for t in cand.tasks]
  plan = networks.plan_group(trunk, specs)
  result = networks.train(plan, {t: job.task_data[t] for t in cand.tasks}, settings, log=log)
  _store(job, cand, plan, result, settings)
  record = {
      "network": cand.name, "tasks": list(cand.tasks), "cost": cand.cost, "half": cand.half,
      "metrics": result.metrics, "flops": trunk.flops, "blocks": trunk.num_blocks,
      "best_epoch": result.best_epoch, "steps_per_epoch": result.steps_per_epoch,
      "train_steps": result.total_steps,
      "train_cost": train_cost(cand, result.total_steps, result.lookaheads),
      "lookaheads": result.lookaheads, "seconds": result.seconds,
      "settings": dict(job.signature)}
  if result.affinity is not None:
    record["affinity"] = result.affinity.tolist()
  write_file(record_file(job.area, cand.name), json.dumps(record, indent=1).encode(),
             job.faults)
  return record


def _store(job: Job, cand: Candidate, plan: networks.GroupPlan, result: networks.GroupResult,
           settings: networks.Settings) -> None:
  """The candidate as a system: trunk and heads as components, then one path per task."""
  config = mtsys_pb2.SystemConfig()
  config.CopyFrom(job.config.proto)
  if job.trunk.root_config is not None:
    config.root.CopyFrom(job.trunk.root_config)
  store = mstore.Store.create(system_dir(job.area, cand.name), config, faults=job.faults)
  steps = (result.best_epoch + 1) * result.steps_per_epoch
  trained_by = [(p, cand.tasks) for p in plan.trunk]
  trained_by += [(plan.heads[t], (t,)) for t in cand.tasks]
  for p, tasks in trained_by:
    spec = mtsys_pb2.ComponentSpec()
    spec.CopyFrom(p.spec)
    for task in tasks:
      spec.trained_on[task] = spec.trained_on[task] + steps
    store.write_component(spec, result.weights[spec.id], result.optimizer_slots[spec.id])
  hparams = dict(settings.hparams, image_size=float(plan.image_size))
  flops = sum(p.spec.flops for p in plan.trunk)
  for task in cand.tasks:
    planned = plan.path(task)
    m = result.metrics[task]
    metrics = mtsys_pb2.PathMetrics(
        validation_accuracy=m["validation"]["accuracy"], test_accuracy=m["test"]["accuracy"],
        total_params=sum(p.spec.param_count for p in planned),
        flops=flops + plan.heads[task].spec.flops, train_steps=result.total_steps,
        train_seconds=result.seconds)
    store.write_path(mpaths.make_path(
        task, planned, path_id=f"{cand.name}/{task}", hparams=hparams, metrics=metrics,
        score=-m["validation"]["loss"], author=job.author,
        class_names=job.task_data[task].class_names))
