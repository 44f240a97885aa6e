"""Dumps and summaries: text proto and JSON parse back into the same SystemState, private tasks
stay out unless asked for, summary rows carry the knowledge accounting's figures, and nothing
in the system directory changes."""

import json

import numpy as np
import pytest
from google.protobuf import json_format
from google.protobuf import text_format

from mtsys import errors
from mtsys.evolution import accounting
from mtsys.inspect import dump
from mtsys.inspect import view
from mtsys.protos import mtsys_pb2
from mtsys.system import store as mstore


def _parse_text(text):
  return text_format.Parse(text, mtsys_pb2.SystemState())


def test_text_proto_and_json_parse_back_into_the_dumped_state(evolved, digest):
  before = digest(evolved)
  system = view.open_system(evolved)
  for include_private in (False, True):
    expected = view.SystemView.of(system, include_private).shown_state()
    text = dump.dump(system, include_private=include_private)
    assert _parse_text(text) == expected
    as_json = dump.dump(system, fmt="json", include_private=include_private)
    assert json_format.Parse(as_json, mtsys_pb2.SystemState()) == expected
    assert json.loads(as_json)["schema_version"] == mstore.SCHEMA_VERSION
  assert digest(evolved) == before


def test_the_full_dump_is_the_stores_snapshot(evolved):
  system = view.open_system(evolved)
  snapshot = system.snapshot()
  dumped = _parse_text(dump.dump(system, include_private=True))
  assert {p.task: p for p in dumped.paths} == {p.task: p for p in snapshot.paths}
  assert list(dumped.components) == list(snapshot.components)  # lineage, ACLs, trained_on
  assert dumped.config == snapshot.config
  # The lineage is there: every clone names its ancestor and the task that made it.
  clones = [c for c in dumped.components if c.cloned_from]
  assert clones and all(c.created_by_task for c in clones)


def test_private_tasks_are_left_out_unless_asked_for(evolved):
  system = view.open_system(evolved)
  text = dump.dump(system)
  state = _parse_text(text)
  assert [p.task for p in state.paths] == ["a", "b"]
  assert [t.name for t in state.config.task] == ["a", "b"]
  assert all(c.access.public for c in state.components)
  assert not any(c.created_by_task == "s" or "s" in c.trained_on for c in state.components)
  assert text.splitlines()[1] == ("# 1 private task(s) left out (include private tasks with "
                                  "--include_private).")
  shown = _parse_text(dump.dump(system, include_private=True))
  assert [p.task for p in shown.paths] == ["a", "b", "s"]
  assert any(not c.access.public and c.created_by_task == "s" for c in shown.components)


def test_one_tasks_dump_holds_its_path_and_components(evolved):
  system = view.open_system(evolved)
  state = _parse_text(dump.dump(system, task="b"))
  path = system.read_path("b")
  assert list(state.paths) == [path]
  assert [c.id for c in state.components] == list(dict.fromkeys(path.component_ids))
  assert [t.name for t in state.config.task] == ["b"]
  assert state.components[0] == system.read_component_spec(path.component_ids[0])
  private = _parse_text(dump.dump(system, task="s", fmt="textproto", include_private=True))
  assert [p.task for p in private.paths] == ["s"]


def test_unknown_and_private_tasks_are_errors_naming_them(evolved):
  system = view.open_system(evolved)
  with pytest.raises(errors.UnknownTaskError) as e:
    dump.dump(system, task="nope")
  assert str(e.value) == "Unknown task 'nope'; expected one of ['a', 'b']."
  with pytest.raises(errors.UnknownTaskError) as e:
    dump.dump(system, task="s")
  assert str(e.value) == ("Task 's' is private; include private tasks (--include_private) to "
                          "see it.")
  with pytest.raises(ValueError, match=r"Unknown format 'xml'; expected one of \['textproto', "
                     r"'json'\]\."):
    dump.dump(system, fmt="xml")


def test_a_directory_without_a_system_is_an_error(tmp_path):
  with pytest.raises(errors.SystemNotFoundError,
                     match=f"No mtsys system at {tmp_path}/none .missing .*system.pb"):
    view.open_system(str(tmp_path / "none"))
  assert not (tmp_path / "none").exists()


def test_the_inspectors_store_refuses_to_write(evolved, digest):
  before = digest(evolved)
  system = view.open_system(evolved)
  with pytest.raises(RuntimeError, match="read-only; refusing to write_path"):
    system.write_path(system.read_path("a"))
  with pytest.raises(RuntimeError, match="read-only; refusing to write_component"):
    system.write_component(mtsys_pb2.ComponentSpec(id="x", kind="head"), [np.zeros(2)])
  with pytest.raises(RuntimeError, match="read-only; refusing to _migrate"):  # the first step
    mstore.Store._write_pb(system, system._path_file("a"), system.read_path("a"))
  assert digest(evolved) == before


def test_summary_rows_carry_the_accounting(evolved):
  system = view.open_system(evolved)
  reports = {r.task: r for r in accounting.report(system.paths(), system.read_component_spec)}
  rows = dump.summary(system)
  assert [r.task for r in rows] == ["a", "b"]
  for row in rows:
    r, path = reports[row.task], system.read_path(row.task)
    specs = [system.read_component_spec(c) for c in path.component_ids]
    # Hidden tasks still share components: accounting over every path, as scores are.
    assert row.accounted_params == pytest.approx(r.accounted_params)
    assert row.activated_params == r.activated_params == sum(s.param_count for s in specs)
    assert row.added_params == sum(s.param_count for s in specs if s.created_by_task == row.task)
    assert row.flops == sum(s.flops for s in specs)
    assert row.validation_accuracy == path.metrics.validation_accuracy
    assert row.test_accuracy == path.metrics.test_accuracy
    assert row.generation == path.generation and row.task_iterations == 1
    assert row.knowledge == r.knowledge and sum(row.knowledge.values()) == pytest.approx(1.0)
    assert row.knowledge_transfer == pytest.approx(1.0 - r.knowledge.get(row.task, 0.0))
    assert row.ancestor_tasks == [t for t in r.knowledge if t != row.task]
  everyone = dump.summary(system, include_private=True)
  assert [r.task for r in everyone] == ["a", "b", "s"]
  assert everyone[:2] == rows


def test_summary_formats(evolved):
  system = view.open_system(evolved)
  rows = dump.summary(system)
  table = dump.format_summary(rows, hidden_tasks=1).splitlines()
  assert table[0].split()[:6] == ["task", "valid", "test", "gen", "iters", "comps"]
  assert [line.split()[0] for line in table[2:4]] == ["a", "b"]
  assert table[5].startswith("average")
  assert table[-1] == "(1 private task(s) not shown; include them with --include_private)"
  assert f"{rows[0].validation_accuracy:.3f}" in table[2]
  as_json = json.loads(dump.format_summary(rows, "json"))
  assert as_json == [r.to_json() for r in rows]
  assert as_json[1]["knowledge"] == rows[1].knowledge
  assert dump.format_summary([]).splitlines()[-1] == "(no task has a path yet)"
  with pytest.raises(ValueError, match=r"Unknown format 'csv'; expected one of \['table', "
                     r"'json'\]\."):
    dump.format_summary(rows, "csv")


def test_in_memory_systems_are_inspected_alike(synthetic):
  state = synthetic(6, private=(2,))
  text = dump.dump(state)
  assert text.startswith("# mtsys SystemState of an in-memory system\n")
  assert [p.task for p in _parse_text(text).paths] == [
      "task00", "task01", "task03", "task04", "task05"]
  rows = dump.summary(state, include_private=True)
  assert len(rows) == 6 and all(r.task_iterations is None for r in rows)
