"""Group networks: per-task outputs and losses, the summed loss reaching the trunk, half-size
trunks, trunks from an evolved system's path, and training with the best epoch kept."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtsys import data as mdata
from mtsys import errors
from mtsys import testing
from mtsys.config import loader
from mtsys.grouping import networks
from mtsys.protos import mtsys_pb2
from mtsys.system import assembly
from mtsys.system import paths as mpaths
from mtsys.system import root as mroot
from mtsys.system import store as mstore
from mtsys.train import trainer

_CONFIG = """
name: "grp"
root {{ vit: "tiny/4" image_size: 8 channels: 1 num_blocks: {blocks} seed: 5 }}
task {{ name: "a" num_classes: 3 files {{ npz: "{d}/a.npz" validation_fraction: 0.2
       test_fraction: 0.2 }} }}
task {{ name: "b/x" num_classes: 5 files {{ npz: "{d}/b.npz" validation_fraction: 0.2
       test_fraction: 0.2 }} }}
"""


def _config(tmp_path, blocks=2):
  for name, seed in (("a", 1), ("b", 2)):
    testing.write_band_npz(str(tmp_path), name, seed, n=60)
  return loader.parse(_CONFIG.format(d=tmp_path, blocks=blocks))


def _trunk(config):
  root = mroot.make_root(config)
  return networks.Trunk(tuple(s for s, _ in root), tuple(w for _, w in root), 8, 1, "root",
                        config.proto.root)


def _batches(config, n=6):
  rng = np.random.default_rng(0)
  return {t.name: (tf.constant(rng.random((n, 8, 8, 1)), tf.float32),
                   tf.constant(rng.integers(0, 3, n), tf.int64)) for t in config.tasks}


def test_group_network_gives_each_task_its_own_head(tmp_path):
  config = _config(tmp_path)
  plan = networks.plan_group(_trunk(config), list(config.tasks))
  net = networks.GroupNetwork(plan)
  batches = _batches(config)
  logits = net({t: x for t, (x, _) in batches.items()})
  assert {t: tuple(v.shape) for t, v in logits.items()} == {"a": (6, 3), "b/x": (6, 5)}
  # Zero-initialised heads: uniform predictions, loss log(num_classes) per task.
  losses = networks.task_losses(net, batches)
  np.testing.assert_allclose([float(losses["a"]), float(losses["b/x"])],
                             [np.log(3), np.log(5)], rtol=1e-5)
  # One trunk shared by the tasks' paths, a head each; everything is a trainable clone.
  assert [p.spec.cloned_from for p in plan.trunk] == mroot.root_ids(config)
  assert len({p.spec.id for p in plan.trunk} | {p.spec.id for p in plan.heads.values()}) == \
      len(plan.trunk) + 2
  assert plan.path("a")[:-1] == plan.path("b/x")[:-1]
  assert all(p.trainable for p in plan.path("a"))


def test_summed_loss_gradient_reaches_the_trunk_as_the_sum_of_task_gradients(tmp_path):
  config = _config(tmp_path)
  net = networks.GroupNetwork(networks.plan_group(_trunk(config), list(config.tasks)))
  rng = np.random.default_rng(1)
  for head in net.head_layers:  # zero heads pass no gradient to the trunk
    head.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in head.get_weights()])
  batches = _batches(config)
  shared = net.trunk.trainable_variables
  with tf.GradientTape(persistent=True) as tape:
    losses = networks.task_losses(net, batches)
    total = losses["a"] + losses["b/x"]
  summed = tape.gradient(total, shared)
  each = [tape.gradient(losses[t], shared) for t in ("a", "b/x")]
  assert all(float(tf.reduce_sum(tf.abs(g))) > 0 for g in summed)
  for g, ga, gb in zip(summed, *each):
    np.testing.assert_allclose(g.numpy(), (ga + gb).numpy(), rtol=1e-4, atol=1e-6)


def test_half_trunk_keeps_the_first_half_of_the_blocks(tmp_path):
  config = _config(tmp_path, blocks=3)
  trunk = _trunk(config)
  half = networks.half_trunk(trunk)
  assert (trunk.num_blocks, half.num_blocks) == (3, 1)
  assert [s.id for s in half.specs] == mroot.root_ids(config)[:4]
  assert half.flops < 0.5 * trunk.flops
  two = networks.half_trunk(_trunk(_config(tmp_path, blocks=2)))
  assert two.num_blocks == 1
  with pytest.raises(errors.ConfigError, match="has 1: expected at least 2"):
    networks.half_trunk(_trunk(_config(tmp_path, blocks=1)))


def test_trunk_from_parses_system_and_task():
  assert networks.parse_trunk_from("out/sys:a") == ("out/sys", "a")
  assert networks.parse_trunk_from("gs://b/sys:emnist/digits") == ("gs://b/sys", "emnist/digits")
  for bad in ("out/sys", "gs://bucket/sys", ":a", "out/sys:"):
    with pytest.raises(errors.ConfigError, match=f"--trunk_from={bad!r}"):
      networks.parse_trunk_from(bad)


def test_trunk_from_an_evolved_path_drops_its_head(tmp_path):
  config = _config(tmp_path)
  store = mstore.Store.create(str(tmp_path / "sys"), config.proto)
  root = mroot.make_root(config)
  for spec, weights in root:
    store.write_component(spec, weights)
  head, head_weights = mroot.new_head(config.task("a"), 64, 5, mroot.task_access(config.task("a")))
  store.write_component(head, head_weights)
  store.write_path(mpaths.make_path("a", [assembly.PlannedComponent(s) for s, _ in root]
                                    + [assembly.PlannedComponent(head)],
                                    path_id="p", hparams={"image_size": 8.0},
                                    metrics=mtsys_pb2.PathMetrics(), score=0.0))
  trunk = networks.path_trunk(f"{tmp_path}/sys:a")
  assert [s.id for s in trunk.specs] == mroot.root_ids(config)
  assert (trunk.image_size, trunk.channels) == (8, 1)
  np.testing.assert_array_equal(trunk.weights[0][0], root[0][1][0])
  with pytest.raises(errors.UnknownTaskError, match="no path for task 'b/x'"):
    networks.path_trunk(f"{tmp_path}/sys:b/x")
  with pytest.raises(errors.SystemNotFoundError, match="nosys"):
    networks.path_trunk(f"{tmp_path}/nosys:a")


def test_train_measures_every_task_and_returns_every_component(tmp_path):
  config = _config(tmp_path)
  plan = networks.plan_group(_trunk(config), list(config.tasks))
  data = {t.name: mdata.load_task(t) for t in config.tasks}
  settings = networks.Settings(trainer.Budget(2, 2, 8), {"learning_rate": 0.05}, seed=3)
  lines = []
  result = networks.train(plan, data, settings, log=lines.append)
  assert set(result.metrics) == {"a", "b/x"}
  for m in result.metrics.values():
    for split in ("validation", "test"):
      assert np.isfinite(m[split]["loss"]) and 0 <= m[split]["accuracy"] <= 1
  ids = [p.spec.id for p in plan.trunk] + [plan.heads[t].spec.id for t in plan.tasks]
  assert sorted(result.weights) == sorted(ids) == sorted(result.optimizer_slots)
  assert (result.steps_per_epoch, result.total_steps) == (2, 4)
  assert result.affinity is None and len(lines) == 2
  # The kept epoch is the one with the lowest summed validation loss, logged per epoch.
  logged = [float(line.split("validation loss ")[1].split()[0]) for line in lines]
  assert result.best_epoch == int(np.argmin(logged))
