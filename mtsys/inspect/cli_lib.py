"""The sub-commands of `bin/inspect_system.py`: the library the binary calls with its flags.

A sub-command is a function `(Options, out) -> None` plus one entry in `COMMANDS` naming the
options it reads; adding one needs nothing else (and a flag in the binary if it reads a new
option). Every sub-command only reads the system (`view.open_system`). Text goes to `out`, one
call per output; pictures go to `--output`, plots and reports into `--output_dir`, which must
lie outside the systems read.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

from mtsys import errors


@dataclasses.dataclass(frozen=True)
class Options:
  """What `bin/inspect_system.py`'s flags ask for (see their help texts)."""

  system_dirs: Sequence[str] = ()
  task: Optional[str] = None
  format: Optional[str] = None
  output: Optional[str] = None
  output_dir: Optional[str] = None
  include_private: bool = False


Out = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Command:
  """A sub-command: what it does, and the options (`Options` fields) it reads besides
  `include_private`, which every sub-command takes."""

  run: Callable[[Options, Out], None]
  help: str
  options: tuple = ()
  required: tuple = ()


# Options field -> its flag, for messages.
_FLAGS = {"system_dirs": "--system_dir", "task": "--task", "format": "--format",
          "output": "--output", "output_dir": "--output_dir"}


def _one_dir(options: Options) -> str:
  """The directory of the one system a sub-command reads."""
  if len(options.system_dirs) != 1:
    raise errors.UserError(f"Expected one --system_dir, got {len(options.system_dirs)}: "
                           f"{list(options.system_dirs)}.")
  return options.system_dirs[0]


def _one_system(options: Options):
  """The one system a sub-command reads, opened read-only."""
  from mtsys.inspect import view
  return view.open_system(_one_dir(options))


def _dump(options: Options, out: Out) -> None:
  from mtsys.inspect import dump
  from mtsys.inspect import view
  fmt = options.format or "textproto"
  view.check_format(fmt, dump.DUMP_FORMATS, "--format")
  out(dump.dump(_one_system(options), task=options.task, fmt=fmt,
                include_private=options.include_private).rstrip("\n"))


def _summary(options: Options, out: Out) -> None:
  from mtsys.inspect import dump
  from mtsys.inspect import view
  fmt = options.format or "table"
  view.check_format(fmt, dump.SUMMARY_FORMATS, "--format")
  system = view.SystemView.of(_one_system(options), options.include_private)
  out(dump.format_summary(dump.summary(system, options.include_private), fmt,
                          hidden_tasks=len(system.hidden_tasks)).rstrip("\n"))


def _picture(draw: str) -> Callable[[Options, Out], None]:
  def run(options: Options, out: Out) -> None:
    from mtsys.inspect import graphs
    graphs.check_output(options.output)  # before reading the system: fail fast
    graph = getattr(graphs, draw)(_one_system(options), include_private=options.include_private)
    out(f"Wrote {graphs.render(graph, options.output)}")
  return run


def _plots(options: Options, out: Out) -> None:
  from mtsys.inspect import plots
  from mtsys.inspect import report
  from mtsys.inspect import view
  # Every check before anything is written: the output directory, then every system.
  report.check_output_dir(options.output_dir, options.system_dirs, what="plots")
  systems = [view.open_system(d) for d in options.system_dirs]
  skipped = []
  written = plots.write_plots(systems, options.output_dir,
                              include_private=options.include_private, log=skipped.append)
  for path in written:
    out(f"Wrote {path}")
  for reason in skipped:
    out(f"Skipped: {reason}")


def _report(options: Options, out: Out) -> None:
  from mtsys.inspect import report
  index = report.write_report(_one_dir(options), options.output_dir,
                              include_private=options.include_private)
  out(f"Wrote {index}")


COMMANDS = {
    "dump": Command(_dump, "The SystemState (or one --task's path and components) as a text "
                    "proto or JSON (--format=textproto|json).",
                    options=("system_dirs", "task", "format"), required=("system_dirs",)),
    "summary": Command(_summary, "Per task quality, parameters, FLOPs and knowledge transfer "
                       "(--format=table|json).",
                       options=("system_dirs", "format"), required=("system_dirs",)),
    "graph": Command(_picture("system_graph"), "The system graph (muNet Figure 2) to "
                     "--output=FILE.svg|png|dot.",
                     options=("system_dirs", "output"), required=("system_dirs", "output")),
    "flow": Command(_picture("knowledge_flow"), "The knowledge-flow graph (muNet Figures 6-7) "
                    "to --output=FILE.svg|png|dot.",
                    options=("system_dirs", "output"), required=("system_dirs", "output")),
    "plots": Command(_plots, "The papers' plots (PNG) of one or more --system_dir into "
                     "--output_dir.",
                     options=("system_dirs", "output_dir"),
                     required=("system_dirs", "output_dir")),
    "report": Command(_report, "One HTML page (summary, both graphs, plots, links to dumps) "
                      "written to --output_dir/index.html.",
                      options=("system_dirs", "output_dir"),
                      required=("system_dirs", "output_dir")),
}


def usage() -> str:
  """One line per sub-command, for --help."""
  return "\n".join(f"  {name:<8} {c.help}" for name, c in COMMANDS.items())


def run(command: Optional[str], options: Options, out: Out = print) -> None:
  """Runs sub-command `command` with `options`.

  Raises:
    UserError: an unknown or missing sub-command, an option it does not take or needs, and
      whatever the sub-command raises for bad input (no system, unknown task, bad output).
  """
  if command not in COMMANDS:
    what = f"Unknown sub-command '{command}'" if command else "Missing sub-command"
    raise errors.UserError(f"{what}; expected one of {list(COMMANDS)}.")
  spec = COMMANDS[command]
  for field in _FLAGS:
    given = getattr(options, field)
    if given and field not in spec.options:
      raise errors.UserError(f"{command} does not take {_FLAGS[field]}; it takes "
                             f"{[_FLAGS[f] for f in spec.options] + ['--include_private']}.")
    if not given and field in spec.required:
      raise errors.UserError(f"{command} needs {_FLAGS[field]}.")
  spec.run(options, out)
