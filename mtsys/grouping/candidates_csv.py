"""Candidate tables as CSV: what `bin/group_tasks.py select` reads.

    network,cost,seg,depth,normals
    all,1,0.41,0.22,0.30
    seg+depth,1,0.43,0.20,
    normals-half,0.5,,,0.31

One row per candidate network: its name (unique), its inference cost in units of one full
network (SNT: 1 full size, 0.5 half size) and its loss on each task it solves; an empty cell
means it does not solve that task. A test file has the same layout and the same networks (rows
are matched by `network`, in any order) and gives the test losses of the same networks.

Every problem is a `DataError` (or `UnknownTaskError`) naming the file, the row (as a line
number of the file, the header being line 1), the network and the value: NaN, infinite or
negative losses, bad costs, duplicate networks or tasks, rows of the wrong length, a test file
missing a task or a network. Local paths are read directly; URLs (gs://, ...) through
`tf.io.gfile`, imported only then, so selecting from a local file starts without TensorFlow.
"""

from __future__ import annotations

import csv
import io
import math
import os

import numpy as np

from mtsys import errors
from mtsys.grouping import selection

HEADER = ("network", "cost")


def read_text(path: str) -> str:
  """The text of a local file or a URL (tf.io.gfile); DataFileNotFoundError when missing."""
  if "://" in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if not tf.io.gfile.exists(path):
      raise errors.DataFileNotFoundError(f"Candidates file {path} does not exist")
    with tf.io.gfile.GFile(path, "r") as f:
      return f.read()
  if not os.path.exists(path):
    raise errors.DataFileNotFoundError(f"Candidates file {path} does not exist")
  if os.path.isdir(path):
    raise errors.DataError(f"Candidates file {path} is a directory; expected a CSV file")
  with open(path, newline="", encoding="utf-8") as f:
    return f.read()


def read(path: str) -> selection.Candidates:
  """The candidates of the CSV file at `path` (validated; see the module doc)."""
  return parse(read_text(path), path)


def read_test(path: str, validation: selection.Candidates) -> selection.Candidates:
  """The test candidates at `path`, aligned with `validation` (same networks, tasks, order)."""
  text = read_text(path)
  # The columns first: a missing column would otherwise show as rows that solve no task.
  _check_tasks(_header(csv.reader(io.StringIO(text)), path)[2:], validation, path)
  return align(parse(text, path), validation, path)


def _header(reader, source: str) -> list[str]:
  for header in reader:
    if any(cell.strip() for cell in header):
      return [cell.strip() for cell in header]
  raise errors.DataError(
      f"{source}: empty file; expected a header '{','.join(HEADER)},<task>,...'")


def parse(text: str, source: str) -> selection.Candidates:
  """Candidates from CSV text; `source` names it in error messages."""
  reader = csv.reader(io.StringIO(text))
  header = _header(reader, source)
  if tuple(header[:2]) != HEADER:
    raise errors.DataError(f"{source}: header starts with '{','.join(header[:2])}'; expected "
                           f"'{','.join(HEADER)},<task>,...'")
  tasks = header[2:]
  if not tasks:
    raise errors.DataError(f"{source}: empty task list: the header names no task column after "
                           f"'{','.join(HEADER)}'")
  for i, task in enumerate(tasks):
    if not task:
      raise errors.DataError(f"{source}: header column {i + 3} has no task name")
    if tasks.index(task) != i:
      raise errors.DataError(f"{source}: duplicate task column '{task}'")
  names, costs, losses, lines = [], [], [], {}
  for cells in reader:
    if not any(cell.strip() for cell in cells):
      continue
    line = reader.line_num
    cells = [cell.strip() for cell in cells]
    if len(cells) != len(header):
      raise errors.DataError(f"{source}: row {line} has {len(cells)} cells; expected "
                             f"{len(header)} (network, cost and {len(tasks)} tasks)")
    name = cells[0]
    if not name:
      raise errors.DataError(f"{source}: row {line} has no network name")
    if name in lines:
      raise errors.DataError(
          f"{source}: duplicate network '{name}' (rows {lines[name]} and {line})")
    lines[name] = line
    where = f"{source}: row {line} (network '{name}')"
    costs.append(_number(cells[1], f"{where}: bad cost '{cells[1]}'; expected a positive "
                         "number", positive=True))
    row = []
    for task, cell in zip(tasks, cells[2:]):
      row.append(math.nan if not cell else _number(
          cell, f"{where}: bad loss '{cell}' for task '{task}'; expected a non-negative number, "
          "or an empty cell where the network does not solve the task", positive=False))
    if all(math.isnan(v) for v in row):
      raise errors.DataError(f"{where} solves no task: every loss cell is empty")
    names.append(name)
    losses.append(row)
  if not names:
    raise errors.DataError(f"{source}: no candidate rows after the header")
  losses = np.array(losses, np.float64)
  for t, task in enumerate(tasks):
    if np.isnan(losses[:, t]).all():
      raise errors.DataError(f"{source}: task '{task}' is solved by no network (its column is "
                             "empty)")
  return selection.Candidates(tasks=tasks, names=names, costs=costs, losses=losses)


def _number(text: str, message: str, *, positive: bool) -> float:
  try:
    value = float(text)
  except ValueError:
    raise errors.DataError(message) from None
  if not math.isfinite(value) or value < 0 or (positive and value == 0):
    raise errors.DataError(message)
  return value


def _check_tasks(tasks, validation: selection.Candidates, source: str) -> None:
  """A test file's task columns are the validation candidates' tasks (in any order)."""
  for task in tasks:
    if task not in validation.tasks:
      raise errors.UnknownTaskError(
          f"{source}: unknown task '{task}'; expected one of the validation candidates' tasks "
          f"[{', '.join(validation.tasks)}]")
  for task in validation.tasks:
    if task not in tasks:
      raise errors.DataError(f"{source}: missing task '{task}': no column for it, and the "
                             "validation candidates have one")


def align(test: selection.Candidates, validation: selection.Candidates,
          source: str) -> selection.Candidates:
  """`test` reordered to `validation`'s networks and tasks, after checking they match: the same
  tasks, networks, costs, and the same tasks solved by each network."""
  _check_tasks(test.tasks, validation, source)
  position = {name: i for i, name in enumerate(test.names)}
  for name in test.names:
    if name not in validation.names:
      raise errors.DataError(
          f"{source}: network '{name}' is not among the validation candidates")
  for name in validation.names:
    if name not in position:
      raise errors.DataError(f"{source}: missing network '{name}' of the validation candidates")
  rows = np.array([position[name] for name in validation.names], np.int64)
  cols = np.array([test.column(task) for task in validation.tasks], np.int64)
  costs = test.costs[rows]
  losses = test.losses[np.ix_(rows, cols)]
  for i, name in enumerate(validation.names):
    if selection.exact(costs[i], "cost") != selection.exact(validation.costs[i], "cost"):
      raise errors.DataError(
          f"{source}: network '{name}' costs {selection.fmt(costs[i])} here and "
          f"{selection.fmt(validation.costs[i])} in the validation candidates")
  differ = np.isnan(losses) != np.isnan(validation.losses)
  if differ.any():
    i, t = (int(v) for v in np.argwhere(differ)[0])
    here, there = ("no loss", "one") if np.isnan(losses[i, t]) else ("a loss", "none")
    raise errors.DataError(
        f"{source}: network '{validation.names[i]}' has {here} for task "
        f"'{validation.tasks[t]}' here and {there} in the validation candidates")
  return selection.Candidates(tasks=validation.tasks, names=validation.names, costs=costs,
                              losses=losses)
