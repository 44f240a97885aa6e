"""Graphviz pictures of a system: its graph (muNet Figure 2, µ2Net Figure 3) and its knowledge
flow (muNet Figures 6-7).

The graphs are `graphviz.Digraph` objects (the `graphviz` package only writes DOT text); turning
them into .png/.svg needs Graphviz's `dot` program (Debian: `apt-get install graphviz`), which
`render` checks for before writing anything. A .dot file needs no Graphviz.

Each task has one colour from a qualitative palette that cycles (18 colours); it stays the same
with or without private tasks. System graphs of up to `_BOTTOM_UP_MAX_TASKS` tasks are drawn
bottom-up like the papers' figures; larger ones left to right, so task names stay horizontal and
the picture grows in height (about 0.4 inch per task) rather than in width. Knowledge-flow graphs
of as many tasks are laid out by `fdp` (springs), larger ones by `circo` (each group of tasks
that share knowledge on a circle).
"""

from __future__ import annotations

import os
import shutil
from typing import Optional

import graphviz
import tensorflow as tf

from mtsys import errors
from mtsys import faults as mfaults
from mtsys.evolution import accounting
from mtsys.inspect import view as mview
from mtsys.system import fileio

# matplotlib's tab20 without its greys (grey is for the root): the dark tones, then the light.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
           "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
ROOT_GREY = "#c8c8c8"
# Picture formats by file extension; ".dot" is the graph's DOT source.
FORMATS = {".svg": "svg", ".png": "png", ".dot": "dot"}
_BOTTOM_UP_MAX_TASKS = 12
_KIND_LABELS = {"patch_embedding": "PE", "class_token": "CLS", "position_embedding": "POS",
                "transformer_block": "T", "residual_adapter": "A", "head": "H"}
_FONT = "Helvetica"


class GraphvizNotFoundError(errors.UserError):
  """Graphviz's `dot` program, which draws .png and .svg pictures, is not installed."""


class OutputError(errors.UserError):
  """A picture cannot be written where asked."""


def task_colours(system: mview.SystemView, extra=()) -> dict:
  """task -> palette colour, by the task's place in the system (stable across views)."""
  return {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(system.task_order(extra))}


def _rgb(colour: str) -> tuple:
  return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def _font_colour(fill: str) -> str:
  r, g, b = _rgb(fill)
  return "white" if 0.299 * r + 0.587 * g + 0.114 * b < 140 else "black"


def _darker(colour: str, factor: float = 0.7) -> str:
  """`colour` darkened, so text in the palette's light tones stays readable on white."""
  return "#" + "".join(f"{int(c * factor):02x}" for c in _rgb(colour))


def _base_graph(name: str, rankdir: str) -> graphviz.Digraph:
  graph = graphviz.Digraph(name, engine="dot")
  graph.attr(rankdir=rankdir, nodesep="0.12", ranksep="0.35", fontname=_FONT,
             outputorder="edgesfirst", bgcolor="white", pad="0.2")
  graph.attr("node", fontname=_FONT, fontsize="9", style="filled", penwidth="0.6",
             height="0.22", width="0.3", margin="0.04,0.02")
  graph.attr("edge", arrowhead="none", arrowsize="0.5")
  return graph


def _component_label(spec, block_index: Optional[int]) -> str:
  kind = _KIND_LABELS.get(spec.kind, spec.kind)
  if block_index is not None:
    kind += str(block_index)
  trained = sum(1 for steps in spec.trained_on.values() if steps > 0)
  return f"{kind} ({trained})"


def _tooltip(spec) -> str:
  trained = ", ".join(f"{t} {s}" for t, s in sorted(spec.trained_on.items())) or "nothing"
  origin = f"cloned from {spec.cloned_from}" if spec.cloned_from else "fresh"
  by = spec.created_by_task or "the root"
  return (f"{spec.id} ({spec.kind}, {spec.param_count:,} params, {origin}, made by {by}); "
          f"trained on: {trained}")


def system_graph(source: mview.Source, include_private: bool = False,
                 rankdir: Optional[str] = None) -> graphviz.Digraph:
  """The system graph: one coloured route per task from its input through its components to
  its head (muNet Figure 2, µ2Net Figure 3).

  Nodes: a triangle per task's input, one node per component some shown path uses, labelled
  with its kind (T1: the path's second transformer block) and, in brackets, the number of
  tasks whose training it and its ancestors received (its `trained_on`); filled with the colour
  of the task that created it (trained it), grey for root components. Heads are boxes with the
  task's name and validation accuracy. Edges: one per consecutive pair of components any path
  uses, drawn as parallel lines, one in each colour of the tasks whose route it is.

  Args:
    source: a Store or a SystemState.
    include_private: also draw private tasks and their components.
    rankdir: Graphviz rankdir; default "BT" up to 12 tasks, "LR" beyond.
  """
  system = mview.SystemView.of(source, include_private)
  paths = system.paths
  colours = task_colours(system)
  rankdir = rankdir or ("BT" if len(paths) <= _BOTTOM_UP_MAX_TASKS else "LR")
  graph = _base_graph("system", rankdir)
  if not paths:
    graph.attr(label="no task has a path yet")
    return graph
  shown = {c for p in paths.values() for c in p.component_ids}
  graph.attr(label=f"{system.state.config.name or 'system'}: {len(paths)} tasks, {len(shown)} "
             f"components, {sum(system.specs[c].param_count for c in shown):,} parameters",
             labelloc="t", fontsize="11")
  # Edge (tail, head) -> the tasks routed through it, in task order.
  routes: dict = {}
  inputs, heads, blocks = [], [], {}
  for task, path in paths.items():
    chain = [f"input/{task}"] + list(path.component_ids)
    inputs.append(task)
    heads.append(path.component_ids[-1])
    for tail, head in zip(chain, chain[1:]):
      routes.setdefault((tail, head), []).append(task)
    depth = 0
    for cid in path.component_ids:
      if system.specs[cid].kind == "transformer_block":
        blocks.setdefault(cid, depth)
        depth += 1
  head_task = {p.component_ids[-1]: t for t, p in paths.items()}
  bottom_up = rankdir == "BT"
  with graph.subgraph(name="inputs") as sub:
    sub.attr(rank="min")
    for task in inputs:
      sub.node(f"input/{task}", label=task, shape="house" if bottom_up else "rarrow",
               fillcolor=colours[task], fontcolor=_font_colour(colours[task]),
               tooltip=f"input of {task}")
  with graph.subgraph(name="heads") as sub:
    sub.attr(rank="max")
    for cid in heads:
      task = head_task[cid]
      accuracy = paths[task].metrics.validation_accuracy
      sub.node(cid, label=f"{task}\\n{accuracy:.3f}" if bottom_up else f"{task}  {accuracy:.3f}",
               shape="box", fillcolor=colours[task], fontcolor=_font_colour(colours[task]),
               tooltip=_tooltip(system.specs[cid]))
  seen = set(heads)
  for task, path in paths.items():
    for cid in path.component_ids:
      if cid in seen:
        continue
      seen.add(cid)
      spec = system.specs[cid]
      fill = colours.get(spec.created_by_task, ROOT_GREY) if spec.created_by_task else ROOT_GREY
      graph.node(cid, label=_component_label(spec, blocks.get(cid)), shape="ellipse",
                 fillcolor=fill, fontcolor=_font_colour(fill), tooltip=_tooltip(spec))
  width = f"{max(0.6, min(1.6, 16 / len(paths))):.2f}"
  for (tail, head), tasks in routes.items():
    graph.edge(tail, head, color=":".join(colours[t] for t in tasks), penwidth=width,
               tooltip=", ".join(tasks))
  return graph


def knowledge_flow(source: mview.Source, include_private: bool = False,
                   min_share: float = 0.01) -> graphviz.Digraph:
  """The knowledge-flow graph (muNet Figures 6-7): a node per task, an edge from each task whose
  training a target task's path received, its width and label the share of the path's training
  (`accounting.knowledge_shares`) spent on the source task; a loop for the task's own share.

  Sources that are not tasks with a shown path (the root's pretraining task, removed tasks) are
  grey. Shares below `min_share` are left out, so large systems stay readable.
  """
  system = mview.SystemView.of(source, include_private)
  paths = system.paths
  shares = {t: accounting.knowledge_shares([system.specs[c] for c in p.component_ids])
            for t, p in paths.items()}
  sources = {s for k in shares.values() for s, v in k.items() if v >= min_share}
  colours = task_colours(system, sources)
  # Few tasks: fdp, a spring layout that keeps edges and their labels apart. Many: circo, each
  # group of tasks sharing knowledge on a circle, as the papers' figures are drawn (dot would
  # stack unconnected groups in one long column, and its `pack` drops edge labels).
  small = len(paths) <= _BOTTOM_UP_MAX_TASKS
  graph = graphviz.Digraph("knowledge_flow", engine="fdp" if small else "circo")
  graph.attr(fontname=_FONT, outputorder="edgesfirst", bgcolor="white", pad="0.2",
             overlap="false", splines="true", sep="+6")
  if small:
    graph.attr(K="1.5")  # fdp's ideal edge length (inches)
  graph.attr("node", fontname=_FONT, fontsize="10", style="filled", penwidth="0.6",
             height="0.3", margin="0.06,0.03")
  graph.attr("edge", arrowhead="normal", fontname=_FONT, fontsize="8")
  if not paths:
    graph.attr(label="no task has a path yet")
    return graph
  for task in paths:
    graph.node(task, label=task, shape="box", fillcolor=colours[task],
               fontcolor=_font_colour(colours[task]), tooltip=task)
  for extra in sorted(sources - set(paths)):
    graph.node(extra, label=extra, shape="box", fillcolor=ROOT_GREY, style="filled,dashed",
               tooltip=f"{extra} (no path in the system)")
  for target, knowledge in shares.items():
    for src, share in knowledge.items():
      if share < min_share:
        continue
      colour = colours[src] if src in paths else "#888888"
      graph.edge(src, target, label=f"{share:.0%}", penwidth=f"{0.5 + 5 * share:.2f}",
                 arrowsize=f"{0.4 + 0.6 * share:.2f}", color=colour, fontcolor=_darker(colour),
                 tooltip=f"{share:.1%} of {target}'s training came from {src}")
  return graph


def check_output(output: str) -> str:
  """Checks that `render` can write a picture to `output`; returns its format.

  Raises:
    UnknownFormatError (a ValueError): an extension other than .svg, .png, .dot.
    OutputError: the directory of `output` does not exist, is not a directory or is not
      writable, or `output` is a directory.
    GraphvizNotFoundError: .svg/.png asked for and Graphviz's `dot` is not installed.
  """
  ext = os.path.splitext(output)[1].lower()
  if ext not in FORMATS:
    raise mview.UnknownFormatError(
        f"Unknown picture format '{ext or output}' of {output}; expected a file name ending in "
        f"one of {list(FORMATS)}.")
  if tf.io.gfile.isdir(output):
    raise OutputError(f"Cannot write the picture to {output}: it is a directory.")
  if "://" not in output:  # object stores have no directories to check; a failed write says why
    parent = os.path.dirname(output) or "."
    if os.path.exists(parent) and not os.path.isdir(parent):
      raise OutputError(f"Cannot write the picture to {output}: {parent} is not a directory.")
    if not os.path.isdir(parent):
      raise OutputError(f"Cannot write the picture to {output}: directory {parent} does not "
                        "exist.")
    if not os.access(parent, os.W_OK):
      raise OutputError(f"Cannot write the picture to {output}: directory {parent} is not "
                        "writable.")
  if ext != ".dot" and shutil.which("dot") is None:
    raise _graphviz_missing()
  return FORMATS[ext]


def render(graph: graphviz.Digraph, output: str) -> str:
  """Writes `graph` to `output` as .svg, .png or .dot (its DOT source), by the extension.

  Nothing is written when anything fails: the checks (`check_output`) come first, and the file
  is written to a temporary name and renamed into place. Returns `output`.
  """
  fmt = check_output(output)
  if fmt == "dot":
    data = graph.source.encode("utf-8")
  else:
    try:
      data = graph.pipe(format=fmt)
    except graphviz.ExecutableNotFound as e:
      raise _graphviz_missing() from e
  fileio.write_atomic(output, data, mfaults.Injector())
  return output


def _graphviz_missing() -> GraphvizNotFoundError:
  return GraphvizNotFoundError(
      "Graphviz's `dot` program was not found on PATH; it draws .png and .svg pictures. "
      "Install it (Debian/Ubuntu: apt-get install graphviz; see the README's \"Inspect a "
      "system\"), or write a .dot file instead.")
