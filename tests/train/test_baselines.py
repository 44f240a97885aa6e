"""muNet's baselines at an equal budget: C replicas per task, the best on validation kept, every
replica's test accuracy recorded, and a rerun that trains nothing again."""

import numpy as np
import pytest

from mtsys import testing
from mtsys.config import loader
from mtsys.system import fsck
from mtsys.system import store as mstore
from mtsys.train import baselines
from mtsys.train import trainer


def _config(directory, replicas):
  npz = testing.write_band_npz(str(directory), "a", 0, n=90)
  return loader.parse(f"""
  root {{ vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 5 }}
  evolution {{ task_iterations: 1 generations: 1 children_per_generation: 3 epochs_per_child: 1
              max_batches_per_epoch: 2 batch_size: 16 seed: 1 }}
  baselines {{ methods: ["multi_head"] {f"replicas: {replicas}" if replicas else ""} }}
  task {{ name: "a" num_classes: 3 files {{ npz: "{npz}" validation_fraction: 0.2
         test_fraction: 0.2 }} }}
  """)


def test_replicas_default_to_the_children_per_generation_and_the_best_is_kept(tmp_path,
                                                                              monkeypatch):
  config = _config(tmp_path, replicas=0)
  assert baselines.replica_count(config) == 3  # muNet eq. 4: C replicas
  results = []
  real = trainer.train_path

  def recording(*args, **kwargs):
    results.append(real(*args, **kwargs))
    return results[-1]

  monkeypatch.setattr(trainer, "train_path", recording)
  (row,) = baselines.run(config, str(tmp_path / "out"), log=lambda m: None)
  assert len(results) == 3 and row.replicas == 3
  best = max(results, key=lambda r: r.validation_accuracy)
  assert row.validation_accuracy == pytest.approx(best.validation_accuracy)
  assert row.test_accuracy == pytest.approx(best.test_accuracy)
  assert row.single_replica_test_accuracy == pytest.approx(results[0].test_accuracy)
  assert row.train_steps == sum(r.total_steps for r in results)
  store = mstore.Store.open(str(tmp_path / "out" / "multi_head"))
  path = store.read_path("a")
  assert list(path.metrics.replica_test_accuracy) == pytest.approx(
      [r.test_accuracy for r in results])
  assert fsck.check(store).ok  # only the kept replica's components are stored
  # A rerun trains nothing and reports the same row from the store.
  (again,) = baselines.run(config, str(tmp_path / "out"), log=lambda m: None)
  assert len(results) == 3 and again == row


def test_replicas_reuse_one_compiled_model_and_train_exactly_as_new_ones(tmp_path, monkeypatch):
  config = _config(tmp_path, replicas=2)
  caches, pairs = [], []
  real = trainer.train_path

  def twice(*args, cache=None, **kwargs):  # each replica trained again without the cache
    caches.append(cache)
    pairs.append((real(*args, cache=cache, **kwargs), real(*args, **kwargs)))
    return pairs[-1][0]

  monkeypatch.setattr(trainer, "train_path", twice)
  baselines.run(config, str(tmp_path / "out"), log=lambda m: None)
  assert len(pairs) == 2 and caches[0] is not None and caches[1] is caches[0]
  assert caches[0].hits == 1  # the second replica reused the first one's model
  compared = 0
  for reused, fresh in pairs:
    assert reused.validation_accuracy == fresh.validation_accuracy
    assert reused.test_accuracy == fresh.test_accuracy
    assert sorted(reused.weights) == sorted(fresh.weights)
    for cid in fresh.weights:
      for a, b in zip(reused.weights[cid], fresh.weights[cid], strict=True):
        np.testing.assert_array_equal(a, b)
        compared += 1
  assert compared > 0


def test_one_replica_when_the_config_says_so(tmp_path):
  assert baselines.replica_count(_config(tmp_path, replicas=1)) == 1


def _record_learning_rates(monkeypatch) -> list:
  """The learning rate of every replica `trainer.train_path` trains, in order."""
  seen = []
  real = trainer.train_path

  def recording(planned, data, hparams, *args, **kwargs):
    seen.append(hparams["learning_rate"])
    return real(planned, data, hparams, *args, **kwargs)

  monkeypatch.setattr(trainer, "train_path", recording)
  return seen


def test_the_baselines_learning_rate_overrides_the_search_space_default(tmp_path, monkeypatch):
  config = _config(tmp_path, replicas=1)
  config.proto.baselines.learning_rate = 0.005
  seen = _record_learning_rates(monkeypatch)
  baselines.run(config, str(tmp_path / "out"), log=lambda m: None)
  assert seen == [0.005]
  path = mstore.Store.open(str(tmp_path / "out" / "multi_head")).read_path("a")
  assert path.hparams["learning_rate"].number == 0.005  # recorded with the path


def test_a_methods_own_learning_rate_wins_and_a_changed_one_retrains(tmp_path, monkeypatch):
  config = _config(tmp_path, replicas=1)
  config.proto.baselines.learning_rate = 0.005
  config.proto.baselines.method_learning_rate["multi_head"] = 0.05
  seen = _record_learning_rates(monkeypatch)
  baselines.run(config, str(tmp_path / "out"), log=lambda m: None)
  baselines.run(config, str(tmp_path / "out"), log=lambda m: None)  # stored: not retrained
  assert seen == [0.05]
  config.proto.baselines.method_learning_rate["multi_head"] = 0.02
  baselines.run(config, str(tmp_path / "out"), log=lambda m: None)  # another rate: retrained
  assert seen == [0.05, 0.02]


def _parse_baselines(directory, baselines_text):
  """A one-task config with `baselines { <baselines_text> }`, parsed (and so validated)."""
  npz = testing.write_band_npz(str(directory), "a", 0, n=90)
  return loader.parse(f"""
  root {{ vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 5 }}
  baselines {{ {baselines_text} }}
  task {{ name: "a" num_classes: 3 files {{ npz: "{npz}" validation_fraction: 0.2
         test_fraction: 0.2 }} }}
  """)


def test_a_method_learning_rate_for_an_unknown_method_is_refused(tmp_path):
  with pytest.raises(loader.ConfigError, match=r"baselines\.method_learning_rate\['adapters'\]: "
                     r"expected a method of \['full_finetune', 'multi_head', "
                     r"'residual_adapters'\], got 'adapters'"):
    _parse_baselines(tmp_path, 'method_learning_rate { key: "adapters" value: 0.1 }')


def test_a_negative_learning_rate_is_refused_naming_the_field(tmp_path):
  with pytest.raises(loader.ConfigError, match=r"baselines\.learning_rate: expected 0 \(the "
                     r"search space's default learning_rate\) or a positive learning rate, "
                     r"got -0\.1"):
    _parse_baselines(tmp_path, "learning_rate: -0.1")
