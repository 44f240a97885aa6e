"""Candidates (`bin/group_tasks.py train`): one per task subset plus half-size singles, with
costs 1 / 0.5, the candidate CSVs, each candidate a system of paths sharing a trunk, a rerun
after a failure mid-candidate retraining only what is missing, and bad input refused before any
write."""

from __future__ import annotations

import json
import os
import types

import numpy as np
import pytest

from mtsys import errors
from mtsys import faults as mfaults
from mtsys import testing
from mtsys.config import loader
from mtsys.grouping import candidates as mcand
from mtsys.grouping import candidates_csv
from mtsys.grouping import train_lib
from mtsys.protos import mtsys_pb2
from mtsys.system import store as mstore
from mtsys.train import evaluate

_CONFIG = """
name: "grp"
root {{ vit: "tiny/4" image_size: 8 channels: 1 num_blocks: {blocks} seed: 5 }}
baselines {{ epochs: 1 max_batches_per_epoch: 2 batch_size: 16 seed: 1 }}
{tasks}"""
_NAMES = ["a", "b", "c", "a@half", "b@half", "c@half", "a+b", "a+c", "b+c", "a+b+c"]


def _config(directory, blocks=2):
  for i, name in enumerate("abc"):
    testing.write_band_npz(str(directory), name, i + 1, n=60)
  return loader.parse(_CONFIG.format(d=directory, blocks=blocks,
                                      tasks=testing.band_tasks_textproto(directory, "abc")))


class _FailOnce(mfaults.Injector):
  """Raises at the first store write whose description contains `marker`."""

  def __init__(self, marker):
    super().__init__()
    self.marker, self.fired = marker, False

  def point(self, what, partial=None):
    if not self.fired and self.marker in what:
      self.fired = True
      raise RuntimeError(f"injected failure at {what}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A run failing mid-candidate 'a@half' (its components written, not its paths), a rerun, and
  a third run with everything done."""
  d = tmp_path_factory.mktemp("grouping")
  config = _config(d)
  out = str(d / "out")
  options = train_lib.Options(output_dir=out)
  first, second, third = [], [], []
  with pytest.raises(RuntimeError, match="injected failure"):
    train_lib.run(config, options, first.append, faults=_FailOnce("candidates/a@half/paths/"))
  after_failure = mcand.read_records(out)
  csv_after_failure = open(os.path.join(out, "VAL.csv")).read()
  result = train_lib.run(config, options, second.append)
  train_lib.run(config, options, third.append)
  return types.SimpleNamespace(directory=d, config=config, out=out, options=options,
                               first=first, second=second, third=third,
                               after_failure=after_failure, csv_after_failure=csv_after_failure,
                               result=result, records=mcand.read_records(out))


def test_enumerate_candidates_every_subset_and_the_half_size_singles():
  cands = mcand.enumerate_candidates(["a", "b", "c"])
  assert [c.name for c in cands] == _NAMES
  assert [c.cost for c in cands] == [1, 1, 1, 0.5, 0.5, 0.5, 1, 1, 1, 1]
  assert [c.name for c in mcand.enumerate_candidates(["a", "b", "c"], max_size=2)] == _NAMES[:9]
  assert mcand.network_name(["emnist/digits", "b"], half=False) == "emnist~digits+b"
  with pytest.raises(errors.ConfigError, match="empty task list"):
    mcand.enumerate_candidates([])
  with pytest.raises(errors.ConfigError, match=r"\['a'\]"):
    mcand.enumerate_candidates(["a", "b", "a"])


def test_csv_format_has_empty_cells_where_a_network_does_not_solve_a_task():
  text = mcand.csv_text([("a", 1.0, {"a": 0.25}), ("a+b", 1.0, {"a": 0.1, "b": 1 / 3}),
                         ("b@half", 0.5, {"b": 2.0})], ["a", "b"])
  assert text.splitlines() == ["network,cost,a,b", "a,1.0,0.25,", f"a+b,1.0,0.1,{1 / 3!r}",
                               "b@half,0.5,,2.0"]
  parsed = candidates_csv.parse(text, "x.csv")
  assert parsed.names == ("a", "a+b", "b@half") and parsed.losses[1, 1] == 1 / 3


def test_every_candidate_is_recorded_with_its_cost_and_metrics(runs):
  assert sorted(runs.records) == sorted(_NAMES)
  for name, r in runs.records.items():
    assert r["cost"] == (0.5 if name.endswith("@half") else 1.0)
    assert sorted(r["metrics"]) == sorted(r["tasks"])
    for m in r["metrics"].values():
      assert {k: sorted(v) for k, v in m.items()} == {
          "validation": ["accuracy", "loss"], "test": ["accuracy", "loss"]}
  assert runs.records["a@half"]["blocks"] == 1 and runs.records["a"]["blocks"] == 2
  val = candidates_csv.read(os.path.join(runs.out, "VAL.csv"))
  test = candidates_csv.read_test(os.path.join(runs.out, "TEST.csv"), val)
  assert val.tasks == ("a", "b", "c") and val.names == tuple(_NAMES)
  assert list(val.costs) == [r.cost for r in mcand.enumerate_candidates("abc")]
  assert np.isnan(val.losses[_NAMES.index("a+b"), 2])
  assert val.losses[_NAMES.index("a+c"), 0] == runs.records["a+c"]["metrics"]["a"][
      "validation"]["loss"]
  assert test.losses[_NAMES.index("b"), 1] == runs.records["b"]["metrics"]["b"]["test"]["loss"]
  assert runs.result["networks"] == 10 and runs.result["cost_share"] == 1.0


def test_a_candidate_is_a_system_whose_paths_share_the_trunk(runs):
  store = mstore.Store.open(os.path.join(runs.out, "candidates", "a+b"))
  paths = store.paths()
  assert sorted(paths) == ["a", "b"]
  assert paths["a"].component_ids[:-1] == paths["b"].component_ids[:-1]
  assert paths["a"].component_ids[-1] != paths["b"].component_ids[-1]
  trunk = store.read_component_spec(paths["a"].component_ids[0])
  assert sorted(trunk.trained_on) == ["a", "b"] and trunk.cloned_from == "root.patch_embedding"
  assert paths["a"].metrics.validation_accuracy == \
      runs.records["a+b"]["metrics"]["a"]["validation"]["accuracy"]
  images = np.zeros((2, 8, 8, 1), np.uint8)
  assert evaluate.predict_stored(store, "b", images).shape == (2, 3)
  half = mstore.Store.open(os.path.join(runs.out, "candidates", "a@half")).read_path("a")
  assert [c.split(".")[1] for c in half.component_ids] == [
      "patch_embedding", "class_token", "position_embedding", "transformer_block", "head"]


def test_rerun_after_a_failure_trains_only_what_is_missing(runs):
  assert sorted(runs.after_failure) == ["a", "b", "c"]
  assert runs.csv_after_failure.splitlines()[0] == "network,cost,a,b,c"
  assert len(runs.csv_after_failure.splitlines()) == 4  # rewritten after each candidate
  for name in ("a", "b", "c"):
    assert runs.records[name] == runs.after_failure[name]  # not retrained
    assert any(line.startswith("[") and f"] {name} (cost 1): trained already" in line
               for line in runs.second)
  trained = [line for line in runs.second if ": training " in line]
  assert [line.split("] ")[1].split(" ")[0] for line in trained] == _NAMES[3:]
  assert sum("trained already" in line for line in runs.third) == 10
  assert not any(": training " in line for line in runs.third)
  leftovers = [f for _, _, files in os.walk(runs.out) for f in files if ".tmp-" in f]
  assert not leftovers


def test_bad_input_fails_before_any_write(tmp_path, runs):
  config = runs.config
  fresh = str(tmp_path / "fresh")

  def fails(error, match, config=config, **kwargs):
    with pytest.raises(error, match=match):
      train_lib.run(config, train_lib.Options(output_dir=fresh, **kwargs), lambda _: None)
    assert not os.path.exists(fresh)

  fails(errors.UnknownTaskError, "Unknown task 'zz'", tasks=["a", "zz"])
  fails(errors.ConfigError, "Empty task list", tasks=[])
  fails(errors.ConfigError, r"\['a'\]", tasks=["a", "a"])
  fails(errors.ConfigError, "Unknown grouping method 'best'", method="best")
  fails(errors.ConfigError, "--trunk_from='nosystem'", trunk_from="nosystem")
  fails(errors.SystemNotFoundError, "missing_dir", trunk_from=f"{tmp_path}/missing_dir:a")
  fails(errors.ConfigError, "esa_fraction=1.5", method="esa", esa_fraction=1.5)
  fails(errors.ConfigError, "budget -1", method="hoa", budgets=[-1.0])
  fails(errors.ConfigError, "tag_every=0", method="tag", tag_every=0)
  fails(errors.ConfigError, "Budget 0.5 is below the cheapest covering solution", method="hoa",
        budgets=[0.5, 2.0])
  fails(errors.ConfigError, "strategy 'mirrored'",
        distribution=mtsys_pb2.DistributionConfig(strategy="mirrored"))
  fails(errors.ConfigError, "has 1: expected at least 2", config=_config(tmp_path, blocks=1))
  # An output directory trained with another budget is refused, naming what differs.
  before = json.dumps(mcand.read_records(runs.out), sort_keys=True)
  with pytest.raises(errors.IncompatibleSystemError, match=r"'epochs': \(1, 2\)"):
    train_lib.run(config, train_lib.Options(output_dir=runs.out, epochs=2), lambda _: None)
  assert json.dumps(mcand.read_records(runs.out), sort_keys=True) == before


def test_the_grouping_chosen_at_a_budget_is_saved_as_a_system_that_predicts_alike(runs,
                                                                                  tmp_path):
  from mtsys.grouping import cli_lib
  from mtsys.system import fsck
  from mtsys.system import store as mstore
  from mtsys.train import evaluate
  system = str(tmp_path / "grouped")
  lines = []
  results = cli_lib.run(["select"], cli_lib.Options(
      candidates=runs.out, budgets="1:2:0.5", save_system=system, save_budget="2"),
      out=lines.append)
  chosen = next(r for r in results if float(r.budget) == 2.0)
  saved = mstore.Store.open(system)
  assert fsck.check(saved).ok
  assert sorted(saved.paths()) == ["a", "b", "c"]
  batch = np.load(f"{runs.directory}/a.npz")["image"][:8, :, :, None]
  compared = 0
  for task, network in chosen.assignment.items():
    source = mstore.Store.open(os.path.join(runs.out, "candidates", network))
    assert saved.paths()[task] == source.read_path(task)
    assert np.array_equal(evaluate.predict_stored(saved, task, batch),
                          evaluate.predict_stored(source, task, batch))
    compared += 1
  assert compared == 3
  assert any("Saved: inspect, export and serve it" in line for line in lines)
  with pytest.raises(Exception, match=f"--save_system={system} exists and is not empty"):
    cli_lib.run(["select"], cli_lib.Options(
        candidates=runs.out, budgets="2", save_system=system, save_budget="2"))
