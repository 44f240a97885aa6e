"""ESA's short budget, HOA's prediction from pairs (Standley et al. 5.3.2), TAG's affinities
(Fifty et al.) and their mapping to predicted losses, and the approximations' runs end to end."""

from __future__ import annotations

import json
import math
import os
import types

import numpy as np
import pytest

from mtsys import data as mdata
from mtsys import errors
from mtsys import testing
from mtsys.config import loader
from mtsys.grouping import approximations as approx
from mtsys.grouping import candidates_csv
from mtsys.grouping import networks
from mtsys.grouping import train_lib
from mtsys.system import root as mroot
from mtsys.train import trainer

_CONFIG = """
name: "grp"
root {{ vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 2 seed: 5 }}
baselines {{ epochs: 1 max_batches_per_epoch: 2 batch_size: 16 seed: 1 }}
{tasks}"""


def _config(directory):
  for i, name in enumerate("abc"):
    testing.write_band_npz(str(directory), name, i + 1, n=60)
  return loader.parse(_CONFIG.format(d=directory, tasks=testing.band_tasks_textproto(directory, "abc")))


def _record(tasks, losses, half=False):
  name = "+".join(tasks) + ("@half" if half else "")
  return name, {"network": name, "tasks": list(tasks), "half": half,
                "cost": 0.5 if half else 1.0,
                "metrics": {t: {"validation": {"loss": v}, "test": {"loss": 2 * v}}
                            for t, v in zip(tasks, losses)}}


def test_esa_budget_is_the_fraction_of_the_steps():
  assert approx.esa_budget(trainer.Budget(16, 80, 16), 0.2) == trainer.Budget(3, 80, 16)
  assert approx.esa_budget(trainer.Budget(2, 80, 16), 0.2) == trainer.Budget(1, 32, 16)
  assert approx.esa_budget(trainer.Budget(1, 2, 16), 0.2) == trainer.Budget(1, 1, 16)
  for bad in (0, 1.5, "x"):
    with pytest.raises(errors.ConfigError, match=f"Invalid ESA fraction {bad!r}"):
      approx.esa_budget(trainer.Budget(1, 2, 16), bad)


def test_hoa_predicts_a_group_loss_as_the_mean_over_its_pairs():
  # The paper's example (5.3.2): a&b 0.1&0.2, b&c 0.3&0.4, a&c 0.5&0.6.
  pairs = {frozenset("ab"): {"a": 0.1, "b": 0.2}, frozenset("bc"): {"b": 0.3, "c": 0.4},
           frozenset("ac"): {"a": 0.5, "c": 0.6}}
  predicted = approx.hoa_losses(pairs, ["a", "b", "c"])
  np.testing.assert_allclose([predicted[t] for t in "abc"], [0.3, 0.25, 0.5])
  records = dict([_record("a", [1.0]), _record("b", [2.0]), _record("c", [3.0]),
                  _record("a", [1.5], half=True), _record("ab", [0.1, 0.2]),
                  _record("bc", [0.3, 0.4]), _record("ac", [0.5, 0.6])])
  rows = approx.hoa_rows(records, ["a", "b", "c"], "test")
  assert [r[0] for r in rows] == ["a", "b", "c", "a@half", "a+b", "a+c", "b+c", "a+b+c"]
  assert rows[4] == ("a+b", 1.0, {"a": 0.2, "b": 0.4})  # measured rows stay as measured
  np.testing.assert_allclose([rows[-1][2][t] for t in "abc"], [0.6, 0.5, 1.0])


def test_tag_mapping_fits_one_scale_to_the_all_task_network():
  tasks = ["a", "b", "c"]
  z = np.array([[0.5, 0.02, 0.0], [0.02, 0.5, 0.01], [0.0, 0.01, 0.5]])
  single = {"a": 1.0, "b": 2.0, "c": 4.0}
  kappa = 10.0  # all-task losses made from the model itself: kappa is recovered exactly
  joint = {t: single[t] * math.exp(-kappa * approx.received_affinity(z, tasks, tasks, t))
           for t in tasks}
  assert approx.received_affinity(z, tasks, ["a", "b"], "b") == 0.02  # only others count
  assert approx.tag_scale(z, tasks, single, joint) == pytest.approx(kappa)
  pair = approx.tag_losses(z, tasks, single, kappa, ["a", "b"])
  assert pair == pytest.approx({"a": math.exp(-0.2), "b": 2 * math.exp(-0.2)})
  # Affinity helps: a's best partner is b (0.02), c (0.0) leaves it at its single loss.
  assert approx.tag_losses(z, tasks, single, kappa, ["a", "c"])["a"] == pytest.approx(1.0)
  assert approx.tag_scale(np.zeros((3, 3)), tasks, single, joint) == 0.0


def test_tag_affinity_of_two_identical_tasks_is_positive(tmp_path):
  testing.write_band_npz(str(tmp_path), "a", 1, n=60)
  text = _CONFIG.format(d=tmp_path, tasks=testing.band_tasks_textproto(tmp_path, "abc")).replace('name: "b"', 'name: "same"').replace(
      "b.npz", "a.npz")
  config = loader.parse(text.split('task { name: "c"')[0])
  root = mroot.make_root(config)
  trunk = networks.Trunk(tuple(s for s, _ in root), tuple(w for _, w in root), 8, 1, "root")
  net = networks.GroupNetwork(networks.plan_group(trunk, list(config.tasks)))
  rng = np.random.default_rng(0)
  weights = [rng.normal(size=w.shape).astype(np.float32) for w in net.head_layers[0].weights]
  for head in net.head_layers:  # the same nonzero head twice (zero heads give no trunk step)
    head.set_weights(weights)
  data = mdata.load_task(config.task("a"))
  images, labels = next(iter(mdata.make_dataset(data, "train", batch_size=16, image_size=8,
                                                channels=1, hparams={}, training=False,
                                                seed=0)))
  # Same images, labels and head: the two tasks are one task twice.
  z = networks.lookahead(net)({"a": (images, labels), "same": (images, labels)}, 0.05).numpy()
  assert z.shape == (2, 2) and z[0, 1] > 0 and z[1, 0] > 0
  np.testing.assert_allclose(z, np.full((2, 2), z[0, 0]), rtol=1e-4)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """In one output directory: TAG (choosing a pair and a single at budget 2, so training the
  pair), then HOA (reusing the singles and that pair), then ESA for one task."""
  d = tmp_path_factory.mktemp("approximations")
  config = _config(d)
  out = str(d / "out")
  calls = []

  def choose(csv_path, budgets):
    calls.append((csv_path, list(budgets)))
    return {float(b): ["a+b", "c"] for b in budgets}

  # 2 epochs of 2 steps, a lookahead every 2 steps: at steps 0 (zero heads: no affinity) and 2.
  options = dict(output_dir=out, epochs=2)
  tag = train_lib.run(config, train_lib.Options(method="tag", tag_every=2, budgets=[2.0],
                                                **options), lambda _: None, choose=choose)
  hoa_lines = []
  hoa = train_lib.run(config, train_lib.Options(method="hoa", **options), hoa_lines.append)
  esa = train_lib.run(config, train_lib.Options(method="esa", tasks=["a"], esa_fraction=0.5,
                                                **options), lambda _: None)
  return types.SimpleNamespace(out=out, tag=tag, hoa=hoa, hoa_lines=hoa_lines, esa=esa,
                               calls=calls)


def _read(*parts):
  return json.loads(open(os.path.join(*parts)).read())


def test_tag_run_writes_affinities_and_predicted_candidates(runs):
  out, result = runs.out, runs.tag
  affinity = _read(out, "tag", "affinity.json")
  assert affinity["tasks"] == ["a", "b", "c"] and np.shape(affinity["affinity"]) == (3, 3)
  assert affinity["kappa"] == result["kappa"] and affinity["lookaheads"] == 2
  val = candidates_csv.read(os.path.join(out, "tag", "VAL.csv"))
  candidates_csv.read_test(os.path.join(out, "tag", "TEST.csv"), val)
  assert val.names == ("a", "b", "c", "a@half", "b@half", "c@half", "a+b", "a+c", "b+c",
                       "a+b+c")
  single = {t: _read(out, "candidates", f"{t}.json") for t in "abc"}
  for i, t in enumerate("abc"):  # measured singles; a pair as the mapping predicts
    assert val.losses[i, i] == single[t]["metrics"][t]["validation"]["loss"]
  z = np.array(affinity["affinity"])
  expected = single["a"]["metrics"]["a"]["validation"]["loss"] * math.exp(
      -result["kappa"] * z[1, 0])
  assert val.losses[6, 0] == pytest.approx(expected)
  joint = _read(out, "tag", "candidates", "a+b+c.json")
  assert val.losses[9, 2] == joint["metrics"]["c"]["validation"]["loss"]
  # Cheaper than training every candidate: 6 small networks and one with lookaheads.
  assert result["networks"] == 7 and 0 < result["cost_share"] < 1


def test_approximation_trains_the_chosen_networks_fully(runs):
  assert runs.calls == [(os.path.join(runs.out, "tag", "VAL.csv"), [2.0])]
  assert runs.tag["chosen_training"]["chosen"] == {2.0: ["a+b", "c"]}
  for name in ("a+b", "c"):
    assert os.path.exists(os.path.join(runs.out, "candidates", f"{name}.json"))
  assert not os.path.exists(os.path.join(runs.out, "candidates", "a+b+c.json"))
  assert _read(runs.out, "tag", "chosen.json") == {"budgets": {"2.0": ["a+b", "c"]}}
  # The default choice is the exact selection: at budget 1 only the all-task network covers.
  chosen = train_lib.select_from_csv(os.path.join(runs.out, "tag", "VAL.csv"), [1, 1.5])
  assert chosen[1.0] == ["a+b+c"]
  assert sum(0.5 if n.endswith("@half") else 1.0 for n in chosen[1.5]) <= 1.5


def test_hoa_run_reuses_trained_networks_and_predicts_the_triple(runs):
  trained = [line.split("] ")[1].split(" ")[0] for line in runs.hoa_lines
             if ": training " in line]
  assert trained == ["a+c", "b+c"]  # singles, halves and a+b exist already
  val = candidates_csv.read(os.path.join(runs.out, "hoa", "VAL.csv"))
  assert val.names[-1] == "a+b+c" and runs.hoa["networks"] == 9
  pair = {n: _read(runs.out, "candidates", f"{n}.json")["metrics"] for n in ("a+b", "a+c")}
  assert val.losses[-1, 0] == pytest.approx(np.mean(
      [pair[n]["a"]["validation"]["loss"] for n in pair]))


def test_esa_run_trains_short_candidates_in_its_own_area(runs):
  assert runs.esa["networks"] == 2
  record = _read(runs.out, "esa", "candidates", "a.json")
  assert (record["settings"]["epochs"], record["settings"]["max_batches_per_epoch"]) == (1, 2)
  assert record["train_steps"] == 2
  assert candidates_csv.read(os.path.join(runs.out, "esa", "VAL.csv")).names == ("a", "a@half")
