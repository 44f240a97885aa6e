r"""Inspects a system without changing it: proto dumps, a per-task summary, Graphviz pictures,
the papers' plots and an HTML report.

    python bin/inspect_system.py summary --system_dir=out/chars-lite
    python bin/inspect_system.py dump --system_dir=out/chars-lite --format=json
    python bin/inspect_system.py dump --system_dir=out/chars-lite --task=digits
    python bin/inspect_system.py graph --system_dir=out/chars-lite --output=system.svg
    python bin/inspect_system.py flow --system_dir=out/chars-lite --output=flow.png
    python bin/inspect_system.py plots --system_dir=out/chars-lite --output_dir=plots
    python bin/inspect_system.py report --system_dir=out/chars-lite --output_dir=report

The sub-command comes first. .png and .svg pictures and the report need Graphviz's `dot`
(apt-get install graphviz); .dot files do not. The report is one page, report/index.html, that
opens from disk. Private tasks are left out unless --include_private. (Named inspect_system.py:
bin/inspect.py would shadow Python's inspect module.)
"""

from __future__ import annotations

import os
import sys

# The repo root replaces bin/ on the path, so bin/ scripts cannot shadow standard modules.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import flags

from bin import common
from mtsys import errors
from mtsys.inspect import cli_lib

__doc__ += "\nSub-commands:\n" + cli_lib.usage() + "\n"  # what --help prints first

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("system_dir", [], "The system directory to inspect (local or gs://); "
                          "it is only read. plots: repeat it to compare systems (the quality/"
                          "size trade-off).")
flags.DEFINE_string("task", None, "dump: only this task's path and its components.")
flags.DEFINE_string("format", None, "dump: textproto (default) or json; summary: table "
                    "(default) or json.")
flags.DEFINE_string("output", None, "graph, flow: the picture to write, FILE.svg, FILE.png or "
                    "FILE.dot (DOT source).")
flags.DEFINE_string("output_dir", None, "plots: the directory to write the PNGs to; report: "
                    "the directory to write index.html and the dumps it links to. Made if "
                    "missing; must lie outside the system directories.")
flags.DEFINE_bool("include_private", False, "Also show private tasks (visibility PRIVATE or "
                  "GROUPS) and the components only they may use.")


def _say(text: str) -> None:
  try:
    common.say(text)
  except BrokenPipeError:  # `... | head` stopped reading: stop quietly, as `cat` does
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit flush
    sys.exit(141)  # 128 + SIGPIPE


def main(argv):
  if len(argv) > 2:
    raise errors.UserError(f"Expected one sub-command, got {argv[1:]}.")
  options = cli_lib.Options(
      system_dirs=FLAGS.system_dir, task=FLAGS.task, format=FLAGS.format, output=FLAGS.output,
      output_dir=FLAGS.output_dir, include_private=FLAGS.include_private)
  cli_lib.run(argv[1] if len(argv) > 1 else None, options, out=_say)


if __name__ == "__main__":
  common.run(main)
