"""One HTML page about a system: the summary table, both graphs, the plots and links to dumps.

`write_report(system_dir, output_dir)` writes into `output_dir`:

| file | holds |
|---|---|
| `index.html` | the page; every picture embedded as a `data:` URI, no script or style from elsewhere, so it opens from disk with no network (and can be mailed alone) |
| `system_graph.svg`, `knowledge_flow.svg` | the two graphs full size; the page's pictures link to them (hovering a node shows its details) |
| `system.textproto`, `system.json` | the SystemState as `dump.dump` writes it |
| `summary.json` | the summary table's rows (`dump.format_summary`'s JSON) |

`index.html` is written last, each file replaced whole (`fileio.write_atomic`). Private
tasks are left out unless `include_private`, as everywhere in `mtsys.inspect`. Every name and
text from the system is HTML-escaped. The page's one inline script only records, once the page
has loaded, each picture's natural width in a `data-natural-width` attribute (a headless browser
test reads it: `tests/inspect/test_report.py`).

The system is only read. The output directory must lie outside the system directory (so the
system's layout stays what `mtsys.system.store` documents); `check_output_dir` says so before
anything is read or written, which `bin/evolve.py --report_dir` does before its run.
"""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
import tempfile
from typing import Callable, Optional, Sequence, Union

import tensorflow as tf

from mtsys import errors
from mtsys import faults as mfaults
from mtsys.inspect import dump
from mtsys.inspect import graphs
from mtsys.inspect import plots
from mtsys.inspect import view as mview
from mtsys.system import fileio
from mtsys.system import store as mstore

INDEX = "index.html"
SYSTEM_GRAPH = "system_graph.svg"
KNOWLEDGE_FLOW = "knowledge_flow.svg"

# Plot file stem -> its caption, in page order (see mtsys.inspect.plots).
_PLOTS = {
    "params_per_task": "Activated and added parameters of every sampled child, as a share of "
                       "the system's parameters, over the run (µ2Net Figure 2).",
    "best_score": "Each task's best score over its generations (all its active phases).",
    "hparams": "Share of children sampled with each hyperparameter value (muNet Figure 8, "
               "µ3Net Figure 6).",
    "mutation_probs": "Share of children with each mutation probability µ, per action when "
                      "per-action µ is on (µ3Net Figure 7).",
    "tradeoff": "Average test accuracy against parameters per task: the system, labelled with "
                "its scale factor, and its baselines (muNet Figure 3).",
}


# Small graphs are shown larger than Graphviz's natural size (72 pt = 96 px), so labels stay
# legible; larger ones fit the page's width.
_GRAPH_ZOOM = 1.5
_SMALL_GRAPH_PX = 700
_SVG_WIDTH = re.compile(rb'<svg\b[^>]*?\swidth="([0-9.]+)pt"')


class OutputDirError(errors.UserError):
  """A report or plots directory that cannot be written where asked."""


def _inside(path: str, directory: str) -> bool:
  """True when `path` is `directory` or lies below it (symbolic links resolved locally)."""
  if "://" in path or "://" in directory:
    path, directory = mstore.normalize_root(path), mstore.normalize_root(directory)
    return path == directory or path.startswith(directory + "/")
  path, directory = os.path.realpath(path), os.path.realpath(directory)
  return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def check_output_dir(output_dir: str, system_dirs: Sequence[str] = (),
                     what: str = "report") -> None:
  """Checks that `output_dir` can be made or written and is outside every system directory.

  Nothing is created. Object-store URLs are only checked against the system directories (they
  have no directories to check; a failed write says why).

  Raises:
    OutputDirError: naming `output_dir` and what is wrong with it.
  """
  if not output_dir:
    raise OutputDirError(f"Expected a directory to write the {what} to, got '{output_dir}'.")
  for system_dir in system_dirs:
    if _inside(output_dir, system_dir):
      raise OutputDirError(
          f"Cannot write the {what} to {output_dir}: it is inside the system directory "
          f"{system_dir}; choose a directory outside it.")
  if "://" in output_dir:
    return
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise OutputDirError(f"Cannot write the {what} to {output_dir}: it is not a directory.")
  existing = os.path.abspath(output_dir)
  while not os.path.exists(existing):  # the nearest existing ancestor, where it would be made
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise OutputDirError(f"Cannot write the {what} to {output_dir}: {existing} is not a "
                         "directory.")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise OutputDirError(f"Cannot write the {what} to {output_dir}: directory {existing} is "
                         "not writable.")


def check(output_dir: str, system_dirs: Sequence[str] = ()) -> None:
  """Everything `write_report` needs before it reads the system: a writable `output_dir`
  outside the system directories, and Graphviz's `dot` (GraphvizNotFoundError says how to
  install it)."""
  check_output_dir(output_dir, system_dirs)
  if shutil.which("dot") is None:
    raise graphs._graphviz_missing()  # pylint: disable=protected-access


def write_report(system: Union[str, mstore.Store], output_dir: str,
                 include_private: bool = False,
                 log: Callable[[str], None] = lambda message: None) -> str:
  """Writes the report of `system` (a directory, opened read-only, or a Store) into
  `output_dir` (made if missing); returns the path of its `index.html`.

  Args:
    log: told about every plot left out and why (the page lists them too).

  Raises:
    OutputDirError, GraphvizNotFoundError: before anything is read (`check`).
    SystemNotFoundError: no system at `system`, before anything is written.
    UserError: a file of the report cannot be written.
  """
  root = system if isinstance(system, str) else system.root
  check(output_dir, [root])
  store = mview.open_system(system) if isinstance(system, str) else system
  sysview = mview.SystemView.of(store, include_private)
  rows = dump.summary(sysview, include_private)
  files = {
      SYSTEM_GRAPH: graphs.system_graph(sysview, include_private).pipe(format="svg"),
      KNOWLEDGE_FLOW: graphs.knowledge_flow(sysview, include_private).pipe(format="svg"),
      "system.textproto": dump.dump(sysview, fmt="textproto",
                                    include_private=include_private).encode("utf-8"),
      "system.json": dump.dump(sysview, fmt="json",
                               include_private=include_private).encode("utf-8"),
      "summary.json": dump.format_summary(rows, "json").encode("utf-8"),
  }
  skipped = []

  def skip(message: str) -> None:
    skipped.append(message)
    log(message)

  with tempfile.TemporaryDirectory(prefix="mtsys-report-") as tmp:
    written = plots.write_plots([store], tmp, include_private=include_private, log=skip)
    pictures = {os.path.splitext(os.path.basename(p))[0]: fileio.read(p) for p in written}
  page = render(sysview, rows, files[SYSTEM_GRAPH], files[KNOWLEDGE_FLOW], pictures, skipped)
  faults = mfaults.Injector()
  try:
    tf.io.gfile.makedirs(output_dir)
    for name, data in files.items():
      fileio.write_atomic(fileio.join(output_dir, name), data, faults)
    index = fileio.join(output_dir, INDEX)
    fileio.write_atomic(index, page.encode("utf-8"), faults)  # last: the report is complete
  except (tf.errors.OpError, errors.StoreAccessError) as e:
    raise OutputDirError(f"Cannot write the report to {output_dir}: "
                         f"{getattr(e, 'message', None) or e}") from e
  return index


# ------------------------------------------------------------------------------------ the page

def _e(value) -> str:
  return html.escape(str(value), quote=True)


def _data_uri(mime: str, data: bytes) -> str:
  return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _svg_width(svg: bytes) -> Optional[int]:
  """The width (px) to show a Graphviz SVG at, or None to show it at its natural size."""
  match = _SVG_WIDTH.search(svg[:2000])
  if match is None:
    return None
  natural = float(match.group(1)) * 96 / 72
  return round(natural * _GRAPH_ZOOM) if natural < _SMALL_GRAPH_PX else None


def _figure(name: str, mime: str, data: bytes, caption: str, href: Optional[str] = None) -> str:
  width = _svg_width(data) if mime == "image/svg+xml" else None
  size = f' width="{width}"' if width else ""
  image = (f'<img class="picture" id="img-{_e(name)}" alt="{_e(caption)}"{size} '
           f'src="{_data_uri(mime, data)}">')
  if href:
    image = f'<a href="{_e(href)}" title="Open full size">{image}</a>'
  return f'<figure>{image}<figcaption>{_e(caption)}</figcaption></figure>'


def _summary_table(sysview: mview.SystemView, rows: Sequence[dump.TaskSummary]) -> str:
  if not rows:
    return '<p class="note">No task has a path yet.</p>'
  colours = graphs.task_colours(sysview)
  head = ("<tr><th>task</th><th>valid</th><th>test</th><th>score</th><th>gen</th>"
          "<th>iters</th><th>comps</th><th>params</th><th>added</th><th>accounted</th>"
          "<th>MFLOPs</th><th>transfer</th><th class=\"text\">knowledge from other tasks</th>"
          "</tr>")
  body = []
  for r in rows:
    others = ", ".join(f"{t} {s:.0%}" for t, s in r.knowledge.items()
                       if t != r.task and s >= 0.01) or "-"
    iters = "-" if r.task_iterations is None else r.task_iterations
    body.append(
        f'<tr class="task-row" data-task="{_e(r.task)}">'
        f'<td class="task"><span class="swatch" style="background:{colours[r.task]}"></span>'
        f'{_e(r.task)}</td><td>{r.validation_accuracy:.3f}</td><td>{r.test_accuracy:.3f}</td>'
        f'<td>{r.score:.3f}</td><td>{r.generation}</td><td>{iters}</td>'
        f'<td>{r.num_components}</td><td>{r.activated_params:,}</td><td>{r.added_params:,}</td>'
        f'<td>{r.accounted_params:,.0f}</td><td>{r.flops / 1e6:.2f}</td>'
        f'<td>{r.knowledge_transfer:.0%}</td><td class="text">{_e(others)}</td></tr>')
  n = len(rows)

  def mean(field):
    return sum(getattr(r, field) for r in rows) / n

  foot = (f'<tr class="average-row"><td class="task">average</td>'
          f'<td>{mean("validation_accuracy"):.3f}</td><td>{mean("test_accuracy"):.3f}</td>'
          f'<td>{mean("score"):.3f}</td><td></td><td></td><td></td>'
          f'<td>{mean("activated_params"):,.0f}</td><td>{mean("added_params"):,.0f}</td>'
          f'<td>{mean("accounted_params"):,.0f}</td><td>{mean("flops") / 1e6:.2f}</td>'
          f'<td>{mean("knowledge_transfer"):.0%}</td><td></td></tr>')
  return (f'<table id="summary-table"><thead>{head}</thead><tbody>{"".join(body)}</tbody>'
          f'<tfoot>{foot}</tfoot></table>')


def render(sysview: mview.SystemView, rows: Sequence[dump.TaskSummary], system_svg: bytes,
           flow_svg: bytes, pictures: dict, skipped: Sequence[str]) -> str:
  """The page's HTML: `pictures` maps plot names (`params_per_task`, ...) to PNG bytes;
  `skipped` lists why plots were left out."""
  state = sysview.state
  name = state.config.name or "system"
  shown = {c for p in sysview.paths.values() for c in p.component_ids}
  params = sum(sysview.specs[c].param_count for c in shown)
  where = sysview.where or "an in-memory system"
  notes = []
  if sysview.hidden_tasks:
    notes.append(f"{len(sysview.hidden_tasks)} private task(s) not shown; include them with "
                 "--include_private.")
  plot_figures = [_figure(stem, "image/png", pictures[stem], caption)
                  for stem, caption in _PLOTS.items() if stem in pictures]
  plot_figures += [_figure(stem, "image/png", data, stem)
                   for stem, data in sorted(pictures.items()) if stem not in _PLOTS]
  skipped_html = "".join(f"<li>{_e(s)}</li>" for s in skipped)
  tensorboard = fileio.join(sysview.where, "tensorboard") if sysview.where else ""
  links = [(SYSTEM_GRAPH, "the system graph, full size"),
           (KNOWLEDGE_FLOW, "the knowledge-flow graph, full size"),
           ("system.textproto", "the SystemState as a text proto (text_format.Parse reads it)"),
           ("system.json", "the SystemState as JSON"),
           ("summary.json", "the table above as JSON")]
  return _PAGE.format(
      title=_e(f"mtsys report: {name}"), name=_e(name), where=_e(where),
      tasks=len(rows), components=len(shown), params=f"{params:,}",
      notes="".join(f'<p class="note">{_e(n)}</p>' for n in notes),
      table=_summary_table(sysview, rows),
      system_graph=_figure("system-graph", "image/svg+xml", system_svg,
                           "Each task's route from its input to its head (with its validation "
                           "accuracy); components filled with the colour of the task that "
                           "trained them, grey for the root. T1 (2): the path's second "
                           "transformer block, whose ancestors were trained on 2 tasks "
                           "(muNet Figure 2).", href=SYSTEM_GRAPH),
      flow=_figure("knowledge-flow", "image/svg+xml", flow_svg,
                   "An edge's width and label give the share of the target task's training "
                   "that came from the source task (muNet Figures 6-7).", href=KNOWLEDGE_FLOW),
      plots="".join(plot_figures) or '<p class="note">No plots.</p>',
      skipped=f'<p>Not drawn:</p><ul class="skipped">{skipped_html}</ul>' if skipped else "",
      links="".join(f'<li><a href="{_e(f)}">{_e(f)}</a>: {_e(d)}</li>' for f, d in links),
      tensorboard=(f'<p>Training curves: <code>tensorboard --logdir {_e(tensorboard)}</code>'
                   '</p>' if tensorboard else ""))


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
  color: #222; background: #f4f5f7; margin: 0; }}
main {{ max-width: 1160px; margin: 0 auto; padding: 20px 24px 40px; }}
h1 {{ font-size: 24px; margin: 8px 0 4px; }}
h2 {{ font-size: 18px; margin: 0 0 10px; }}
section {{ background: #fff; border: 1px solid #dde0e4; border-radius: 6px; padding: 16px 20px;
  margin: 16px 0; }}
.meta {{ color: #555; margin: 0; }}
.note {{ color: #7a5b00; background: #fff8e1; border-left: 3px solid #f0c000;
  padding: 6px 10px; }}
nav {{ margin-top: 10px; }}
nav a {{ margin-right: 14px; }}
a {{ color: #1f5fa8; }}
code {{ font: 13px ui-monospace, Menlo, Consolas, monospace; background: #f0f1f3;
  padding: 1px 4px; border-radius: 3px; }}
.scroll {{ overflow-x: auto; }}
table {{ border-collapse: collapse; font-variant-numeric: tabular-nums; white-space: nowrap; }}
th, td {{ padding: 4px 10px; text-align: right; border-bottom: 1px solid #e6e8eb; }}
th {{ background: #f0f2f5; font-weight: 600; }}
th:first-child, td.task, td.text, th.text {{ text-align: left; }}
td.text {{ white-space: normal; min-width: 220px; }}
tbody tr:nth-child(even) {{ background: #fafbfc; }}
tfoot td {{ font-weight: 600; border-top: 2px solid #c8ccd2; }}
.swatch {{ display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 6px; vertical-align: baseline; }}
figure {{ margin: 0 0 18px; }}
figure img {{ display: block; max-width: 100%; height: auto; margin: 0 auto; }}
figcaption {{ color: #555; font-size: 13px; margin: 6px auto 0; max-width: 760px;
  text-align: center; }}
.skipped {{ color: #555; }}
footer {{ color: #888; font-size: 12px; text-align: center; }}
</style>
</head>
<body>
<main>
<header>
<h1>{name}</h1>
<p class="meta">{where} &middot; {tasks} tasks &middot; {components} components &middot;
{params} parameters</p>
{notes}
<nav><a href="#tasks">Tasks</a><a href="#system-graph">System graph</a><a
href="#knowledge-flow">Knowledge flow</a><a href="#plots">Plots</a><a href="#files">Files</a></nav>
</header>
<section id="tasks"><h2>Tasks</h2>
<div class="scroll">{table}</div>
</section>
<section id="system-graph"><h2>System graph</h2>
{system_graph}
</section>
<section id="knowledge-flow"><h2>Knowledge flow</h2>
{flow}
</section>
<section id="plots"><h2>Plots</h2>
{plots}
{skipped}
</section>
<section id="files"><h2>Files</h2>
<ul>{links}</ul>
{tensorboard}
</section>
<footer>Made by mtsys.inspect.report.</footer>
</main>
<script>
window.addEventListener("load", function () {{
  document.querySelectorAll("img").forEach(function (img) {{
    img.setAttribute("data-natural-width", img.naturalWidth);
  }});
  document.body.setAttribute("data-loaded", "true");
}});
</script>
</body>
</html>
"""
