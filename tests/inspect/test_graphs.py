"""Graphviz pictures: the system graph (muNet Figure 2) and the knowledge flow (Figures 6-7) of
an evolved system and of a 60-task synthetic one, and what `render` writes and refuses.

These tests need Graphviz's `dot` (CI installs it, bin/setup_env.sh); without it they fail,
they do not skip."""

import os
import re
import shutil
import time

import pytest
from PIL import Image

from mtsys.evolution import accounting
from mtsys.inspect import graphs
from mtsys.inspect import view

_EDGE = re.compile(r'^\s*("(?:[^"\\]|\\.)*"|[\w.]+) -> ("(?:[^"\\]|\\.)*"|[\w.]+) \[(.*)\]$')
_NODE = re.compile(r'^\s*("(?:[^"\\]|\\.)*"|[\w.]+) \[(.*)\]$')


def _parse_dot(source):
  """(node name -> its attribute text, [(tail, head)], (tail, head) -> its attribute text) of
  a DOT source."""
  nodes, edges, edge_attrs = {}, [], {}
  for line in source.splitlines():
    edge = _EDGE.match(line)
    if edge:
      tail, head, attrs = edge.group(1).strip('"'), edge.group(2).strip('"'), edge.group(3)
      edges.append((tail, head))
      edge_attrs[tail, head] = attrs
      continue
    node = _NODE.match(line)
    if node and node.group(1) not in ("graph", "node", "edge"):
      nodes[node.group(1).strip('"')] = node.group(2)
  return nodes, edges, edge_attrs


def _expected_system_graph(paths):
  """(node names, distinct edges) of the system graph of `paths`, computed independently."""
  nodes, edges = set(), set()
  for task, path in paths.items():
    chain = [f"input/{task}"] + list(path.component_ids)
    nodes.update(chain)
    edges.update(zip(chain, chain[1:]))
  return nodes, edges


def test_graphviz_dot_is_installed():
  assert shutil.which("dot"), ("Graphviz's dot is missing: apt-get install graphviz "
                               "(bin/setup_env.sh does it when run as root).")


def test_system_graph_of_an_evolved_system(evolved, tmp_path, digest):
  before = digest(evolved)
  system = view.open_system(evolved)
  graph = graphs.system_graph(system)
  nodes, edges, edge_attrs = _parse_dot(graph.source)
  paths = {t: p for t, p in system.paths().items() if t != "s"}
  want_nodes, want_edges = _expected_system_graph(paths)
  assert set(nodes) == want_nodes and len(nodes) == len(want_nodes)
  assert sorted(edges) == sorted(want_edges)  # one edge per pair, one colour per task on it
  colours = graphs.task_colours(view.SystemView.of(system))
  for (tail, head), attrs in edge_attrs.items():
    tasks = [t for t, p in paths.items()
             if (tail, head) in zip([f"input/{t}"] + list(p.component_ids), p.component_ids)]
    assert f'color="{":".join(colours[t] for t in tasks)}"' in attrs, (tail, head)
  edge_colours = [re.search(r'(?:^| )color="([^"]+)"', a).group(1) for a in edge_attrs.values()]
  assert any(":" in c for c in edge_colours), "tasks should share components (multi-coloured edges)"
  for cid, attrs in nodes.items():
    if cid.startswith("root."):
      assert f'fillcolor="{graphs.ROOT_GREY}"' in attrs, cid
      spec = system.read_component_spec(cid)
      trained = sum(1 for s in spec.trained_on.values() if s > 0)
      assert f"({trained})" in attrs
    elif not cid.startswith("input/"):
      creator = system.read_component_spec(cid).created_by_task
      assert f'fillcolor="{colours[creator]}"' in attrs, cid
  for task, path in paths.items():
    head = nodes[path.component_ids[-1]]
    assert f'label="{task}\\n{path.metrics.validation_accuracy:.3f}"' in head
    assert "shape=box" in head
  assert not any(system.read_component_spec(c).created_by_task == "s"
                 for c in nodes if not c.startswith("input/"))
  out = graphs.render(graph, str(tmp_path / "system.svg"))
  assert open(out).read().lstrip().startswith("<?xml")
  with_private, _, _ = _parse_dot(graphs.system_graph(system, include_private=True).source)
  assert "input/s" in with_private and system.read_path("s").component_ids[-1] in with_private
  assert digest(evolved) == before


def test_knowledge_flow_of_an_evolved_system(evolved):
  system = view.open_system(evolved)
  graph = graphs.knowledge_flow(system)
  nodes, edges, _ = _parse_dot(graph.source)
  paths = {t: p for t, p in system.paths().items() if t != "s"}
  want = []
  for task, path in paths.items():
    shares = accounting.knowledge_shares([system.read_component_spec(c)
                                          for c in path.component_ids])
    want += [(src, task, share) for src, share in shares.items() if share >= 0.01]
  assert sorted(edges) == sorted((s, t) for s, t, _ in want)
  assert set(paths) <= set(nodes)
  for src, task, share in want:
    assert re.search(rf'{src} -> {task} \[label="{share:.0%}"', graph.source), (src, task)
  assert not any("s" in e for e in edges)


def test_a_60_task_system_is_drawn_in_time(synthetic, tmp_path):
  state = synthetic(60, private=(7,))
  shown = {p.task: p for p in state.paths if p.task != "task07"}
  graph = graphs.system_graph(state)
  nodes, edges, _ = _parse_dot(graph.source)
  want_nodes, want_edges = _expected_system_graph(shown)
  assert len(nodes) == len(want_nodes) and set(nodes) == want_nodes
  assert len(edges) == len(want_edges) and set(edges) == want_edges
  assert 'rankdir=LR' in graph.source  # many tasks: left to right, names horizontal
  start = time.perf_counter()
  output = graphs.render(graph, str(tmp_path / "system60.png"))
  assert time.perf_counter() - start < 30  # the bound; it takes about a second
  width, height = Image.open(output).size
  # Readable: about 0.4 inch (40 px) per task, not a thumbnail or a poster.
  assert 600 <= width <= 4000 and 60 * 25 <= height <= 60 * 80, (width, height)
  flow = graphs.knowledge_flow(state)
  flow_nodes, flow_edges, _ = _parse_dot(flow.source)
  assert set(flow_nodes) == set(shown)
  start = time.perf_counter()
  width, height = Image.open(graphs.render(flow, str(tmp_path / "flow60.png"))).size
  assert time.perf_counter() - start < 30
  assert 500 <= width <= 5000 and 500 <= height <= 5000, (width, height)
  assert len(flow_edges) >= len(shown)  # at least each task's own share


def test_colours_cycle_and_stay_with_their_task(synthetic):
  state = synthetic(40, private=(1,))
  hidden = graphs.task_colours(view.SystemView.of(state))
  shown = graphs.task_colours(view.SystemView.of(state, include_private=True))
  assert hidden == shown
  assert shown["task00"] == shown[f"task{len(graphs.PALETTE):02d}"] == graphs.PALETTE[0]
  assert graphs.ROOT_GREY not in graphs.PALETTE


def test_render_writes_by_extension(synthetic, tmp_path):
  graph = graphs.system_graph(synthetic(3))
  assert open(graphs.render(graph, str(tmp_path / "g.dot"))).read() == graph.source
  with open(graphs.render(graph, str(tmp_path / "g.png")), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert sorted(os.listdir(tmp_path)) == ["g.dot", "g.png"]  # no temporary files left


def test_render_refuses_bad_outputs_and_writes_nothing(synthetic, tmp_path, monkeypatch):
  graph = graphs.system_graph(synthetic(3))
  with pytest.raises(ValueError) as e:
    graphs.render(graph, str(tmp_path / "g.jpg"))
  assert str(e.value) == (f"Unknown picture format '.jpg' of {tmp_path}/g.jpg; expected a file "
                          "name ending in one of ['.svg', '.png', '.dot'].")
  with pytest.raises(graphs.OutputError) as e:
    graphs.render(graph, str(tmp_path / "missing" / "g.svg"))
  assert str(e.value) == (f"Cannot write the picture to {tmp_path}/missing/g.svg: directory "
                          f"{tmp_path}/missing does not exist.")
  (tmp_path / "file").write_text("")
  with pytest.raises(graphs.OutputError, match="file is not a directory"):
    graphs.render(graph, str(tmp_path / "file" / "g.svg"))
  (tmp_path / "d.png").mkdir()
  with pytest.raises(graphs.OutputError, match="d.png: it is a directory"):
    graphs.render(graph, str(tmp_path / "d.png"))
  monkeypatch.setenv("PATH", str(tmp_path / "empty"))
  with pytest.raises(graphs.GraphvizNotFoundError) as e:
    graphs.render(graph, str(tmp_path / "g.png"))
  assert "apt-get install graphviz" in str(e.value) and "`dot`" in str(e.value)
  graphs.render(graph, str(tmp_path / "g.dot"))  # DOT source needs no Graphviz
  assert sorted(os.listdir(tmp_path)) == ["d.png", "file", "g.dot"]


def test_an_empty_system_draws_a_note(synthetic):
  state = synthetic(0)
  assert 'label="no task has a path yet"' in graphs.system_graph(state).source
  assert 'label="no task has a path yet"' in graphs.knowledge_flow(state).source
