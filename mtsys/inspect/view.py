"""What an inspector sees of a system: one snapshot, private tasks left out unless asked for.

A task is *private* when its TaskSpec's visibility is PRIVATE or GROUPS, or when its path uses a
component that is not public (components trained on a private task are never public: access
never widens along a clone, `mtsys.system.paths.clone`). Hidden unless `include_private`: private
tasks' TaskSpecs, paths and summary rows, and every component that is not public. Public tasks
never use such components, so their figures are complete either way; their accounted
parameters still count the private tasks sharing their components (as scores do), so they do
not change with `include_private`.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence, Union

from mtsys import errors
from mtsys.protos import mtsys_pb2
from mtsys.system import store as mstore

_Access = mtsys_pb2.Access


class UnknownFormatError(errors.UserError, ValueError):
  """An output format (or picture file extension) mtsys.inspect cannot write."""


def check_format(fmt: str, allowed: Sequence[str], what: str = "format") -> None:
  """Raises UnknownFormatError unless `fmt` is one of `allowed`."""
  if fmt not in allowed:
    raise UnknownFormatError(f"Unknown {what} '{fmt}'; expected one of {list(allowed)}.")


# The Store's public methods that write, and the primitives every write goes through.
_WRITERS = ("write_config", "set_component_sources", "sweep_leftovers", "write_evolution_state",
            "write_path", "delete_path", "write_component", "materialize_component",
            "delete_component", "_migrate", "_write_atomic", "_write_plain", "_remove")


class ReadOnlyStore(mstore.Store):
  """A Store whose writing methods raise before touching anything (some create directories
  before their first write primitive): inspecting can never change a system directory."""


def _refusing(name: str):
  def refuse(self, *args, **kwargs):
    raise RuntimeError(f"mtsys.inspect opened {self.root} read-only; refusing to {name}.")
  refuse.__name__ = name
  return refuse


for _name in _WRITERS:
  setattr(ReadOnlyStore, _name, _refusing(_name))


def open_system(system_dir: str) -> ReadOnlyStore:
  """Opens the system at `system_dir` read-only; SystemNotFoundError when there is none."""
  return ReadOnlyStore.open(system_dir)


Source = Union[mstore.Store, mtsys_pb2.SystemState]


class SystemView:
  """A snapshot of a system and the part of it an inspector may show.

  Attributes:
    state: the whole SystemState (nothing hidden).
    include_private: whether private tasks and non-public components are shown.
    where: the system directory, or "" for an in-memory state.
    iterations: completed active phases per task (EvolutionState), {} when unknown.
  """

  def __init__(self, state: mtsys_pb2.SystemState, include_private: bool = False, *,
               where: str = "", iterations: Optional[Mapping[str, int]] = None):
    self.state = state
    self.include_private = include_private
    self.where = where
    self.iterations = dict(iterations or {})
    self.specs = {c.id: c for c in state.components}
    self.task_specs = {t.name: t for t in state.config.task}
    all_paths = {p.task: p for p in state.paths}
    # Config order first (it is the order tasks joined the system), then the others by name.
    order = [t for t in self.task_specs if t in all_paths]
    self.all_paths = {t: all_paths[t] for t in order + sorted(set(all_paths) - set(order))}
    for path in self.all_paths.values():
      for cid in path.component_ids:
        if cid not in self.specs:
          raise errors.MissingComponentError(
              f"The path of task '{path.task}' names component '{cid}', which is not in the "
              f"system{' at ' + where if where else ''}.")
    self.private_tasks = sorted(t for t in set(self.task_specs) | set(self.all_paths)
                                if self._private(t))

  @classmethod
  def of(cls, source: Source, include_private: bool = False) -> "SystemView":
    """The view of a Store (read now) or of an in-memory SystemState."""
    if isinstance(source, SystemView):
      return cls(source.state, include_private, where=source.where, iterations=source.iterations)
    if isinstance(source, mstore.Store):
      return cls(source.snapshot(), include_private, where=source.root,
                 iterations=source.read_evolution_state().iterations_done)
    if isinstance(source, mtsys_pb2.SystemState):
      return cls(source, include_private)
    raise TypeError(f"Expected a Store or a SystemState, got {type(source).__name__}.")

  def _private(self, task: str) -> bool:
    spec = self.task_specs.get(task)
    if spec is not None and spec.access.visibility in (_Access.PRIVATE, _Access.GROUPS):
      return True
    path = self.all_paths.get(task)
    return path is not None and any(not self.specs[c].access.public for c in path.component_ids)

  def shows_task(self, task: str) -> bool:
    return self.include_private or task not in self.private_tasks

  def shows_component(self, spec: mtsys_pb2.ComponentSpec) -> bool:
    return self.include_private or spec.access.public

  @property
  def hidden_tasks(self) -> list[str]:
    """The private tasks left out of this view (none with `include_private`)."""
    return [] if self.include_private else list(self.private_tasks)

  @property
  def paths(self) -> dict[str, mtsys_pb2.PathSpec]:
    """The shown tasks' paths, in task order."""
    return {t: p for t, p in self.all_paths.items() if self.shows_task(t)}

  def task_order(self, extra: Iterable[str] = ()) -> list[str]:
    """Every task name (config order, then paths', then `extra`), for stable colours: the
    same task keeps its colour whether or not private tasks are shown."""
    names = list(self.task_specs) + [t for t in self.all_paths if t not in self.task_specs]
    return names + sorted(set(extra) - set(names))

  def path_of(self, task: str) -> mtsys_pb2.PathSpec:
    """The shown path of `task`; UnknownTaskError naming the tasks that have one."""
    if task in self.all_paths and not self.shows_task(task):
      raise errors.UnknownTaskError(
          f"Task '{task}' is private; include private tasks (--include_private) to see it.")
    if task not in self.all_paths:
      known = list(self.paths)
      where = f" in {self.where}" if self.where else ""
      if task in self.task_specs:
        raise errors.UnknownTaskError(
            f"Task '{task}' has no path{where} yet; tasks with a path: {known}.")
      raise errors.UnknownTaskError(f"Unknown task '{task}'; expected one of {known}.")
    return self.all_paths[task]

  def shown_state(self, task: Optional[str] = None) -> mtsys_pb2.SystemState:
    """The SystemState restricted to what is shown, or to one task's path and its components
    (the config then lists only that task)."""
    out = mtsys_pb2.SystemState()
    out.CopyFrom(self.state)
    if task is not None:
      path = self.path_of(task)
      keep_tasks = {task}
      keep_components = list(dict.fromkeys(path.component_ids))
      paths = [path]
    else:
      keep_tasks = {t for t in self.task_specs if self.shows_task(t)}
      keep_components = [c.id for c in self.state.components if self.shows_component(c)]
      paths = list(self.paths.values())
    out.config.ClearField("task")
    out.config.task.extend(t for t in self.state.config.task if t.name in keep_tasks)
    out.ClearField("components")
    out.components.extend(self.specs[c] for c in keep_components)
    out.ClearField("paths")
    out.paths.extend(paths)
    return out
