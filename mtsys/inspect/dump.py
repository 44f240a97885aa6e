"""Proto dumps and the per-task summary of a system.

`dump` writes the SystemState (`proto/mtsys.proto`): the config, every component with its lineage
(`cloned_from`, `created_by_task`), ACL (`access`), size and knowledge record (`trained_on`:
training steps per task over all its ancestors), and every task's path with its metrics. The
derived knowledge accounting (activated, added and accounted parameters, knowledge shares) is
what `summary` computes from it with `mtsys.evolution.accounting`, so the dump holds only what
is stored and parses back into an equal message.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional, Sequence

from google.protobuf import json_format
from google.protobuf import text_format

from mtsys.evolution import accounting
from mtsys.inspect import view as mview

DUMP_FORMATS = ("textproto", "json")
SUMMARY_FORMATS = ("table", "json")


def dump(source: mview.Source, task: Optional[str] = None, fmt: str = "textproto",
         include_private: bool = False) -> str:
  """The system (or one task's path and its components) as a text proto or JSON.

  Args:
    source: a Store or a SystemState.
    task: only this task's path, its components and its TaskSpec; None for everything.
    fmt: "textproto" (parses back with `text_format.Parse`; a leading comment says what was
      left out) or "json" (`json_format`, proto field names).
    include_private: also show private tasks and the components only they may use.

  Returns:
    The text, ending with a newline.

  Raises:
    UnknownTaskError: `task` has no path, or is private and `include_private` is off.
  """
  mview.check_format(fmt, DUMP_FORMATS)
  system = mview.SystemView.of(source, include_private)
  state = system.shown_state(task)
  if fmt == "json":
    return json_format.MessageToJson(state, preserving_proto_field_name=True, indent=2) + "\n"
  what = f"task '{task}' of" if task else "SystemState of"
  lines = [f"# mtsys {what} {system.where or 'an in-memory system'}"]
  if system.hidden_tasks and task is None:
    lines.append(f"# {len(system.hidden_tasks)} private task(s) left out "
                 "(include private tasks with --include_private).")
  return "\n".join(lines) + "\n" + text_format.MessageToString(state, as_utf8=True)


@dataclasses.dataclass(frozen=True)
class TaskSummary:
  """One task's row: `accounting.TaskReport`'s figures plus where it is in evolution."""

  task: str
  validation_accuracy: float
  test_accuracy: float
  score: float
  # The generation of its active phase that made the path (0-based), and the active phases
  # (task iterations) the task has completed; None when the system does not record them.
  generation: int
  task_iterations: Optional[int]
  num_components: int
  activated_params: int
  added_params: int
  accounted_params: float
  flops: int
  # Tasks whose training the path's components' ancestors received, biggest share first.
  ancestor_tasks: list
  # task -> share (0..1) of the path's training spent on that task (accounting.knowledge_shares).
  knowledge: dict
  # 1 - the task's own share: how much of the path's training came from other tasks.
  knowledge_transfer: float

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def summary(source: mview.Source, include_private: bool = False) -> list[TaskSummary]:
  """One row per shown task with a path, in task order (see `mtsys.inspect.view`)."""
  system = mview.SystemView.of(source, include_private)
  # Accounting over every path, hidden ones included: that is how the system scores them.
  reports = {r.task: r for r in accounting.report(system.all_paths, system.specs.__getitem__)}
  rows = []
  for task, path in system.paths.items():
    r = reports[task]
    rows.append(TaskSummary(
        task=task, validation_accuracy=r.validation_accuracy, test_accuracy=r.test_accuracy,
        score=r.score, generation=path.generation, task_iterations=system.iterations.get(task),
        num_components=r.num_components, activated_params=r.activated_params,
        added_params=r.added_params, accounted_params=r.accounted_params, flops=r.flops,
        ancestor_tasks=[t for t in r.knowledge if t != task], knowledge=dict(r.knowledge),
        knowledge_transfer=1.0 - r.own_share))
  return rows


def format_summary(rows: Sequence[TaskSummary], fmt: str = "table",
                   hidden_tasks: int = 0) -> str:
  """The rows as a fixed-width table (ending with averages) or a JSON list.

  `hidden_tasks`: how many private tasks were left out; the table says so in its last line.
  """
  mview.check_format(fmt, SUMMARY_FORMATS)
  if fmt == "json":
    return json.dumps([r.to_json() for r in rows], indent=2) + "\n"
  width = max([len("task")] + [len(r.task) for r in rows]) + 2
  header = (f"{'task':<{width}}{'valid':>7}{'test':>7}{'gen':>5}{'iters':>6}{'comps':>6}"
            f"{'params':>10}{'added':>10}{'accounted':>11}{'MFLOPs':>9}{'transfer':>9}"
            "  knowledge from other tasks")
  rule = "-" * len(header)
  lines = [header, rule]
  for r in rows:
    others = ", ".join(f"{t} {s:.0%}" for t, s in r.knowledge.items() if t != r.task and s >= 0.01)
    iters = "-" if r.task_iterations is None else str(r.task_iterations)
    lines.append(f"{r.task:<{width}}{r.validation_accuracy:>7.3f}{r.test_accuracy:>7.3f}"
                 f"{r.generation:>5}{iters:>6}{r.num_components:>6}{r.activated_params:>10,}"
                 f"{r.added_params:>10,}{r.accounted_params:>11,.0f}{r.flops / 1e6:>9.2f}"
                 f"{r.knowledge_transfer:>9.0%}  {others or '-'}")
  if rows:
    n = len(rows)
    lines.append(rule)
    lines.append(f"{'average':<{width}}{sum(r.validation_accuracy for r in rows) / n:>7.3f}"
                 f"{sum(r.test_accuracy for r in rows) / n:>7.3f}{'':>17}"
                 f"{sum(r.activated_params for r in rows) / n:>10,.0f}"
                 f"{sum(r.added_params for r in rows) / n:>10,.0f}"
                 f"{sum(r.accounted_params for r in rows) / n:>11,.0f}"
                 f"{sum(r.flops for r in rows) / n / 1e6:>9.2f}"
                 f"{sum(r.knowledge_transfer for r in rows) / n:>9.0%}")
  else:
    lines.append("(no task has a path yet)")
  if hidden_tasks:
    lines.append(f"({hidden_tasks} private task(s) not shown; include them with "
                 "--include_private)")
  return "\n".join(lines) + "\n"
