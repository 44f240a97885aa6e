"""Pretraining the root (RootModel.pretrain): what it records, that it runs once, that an
evolution and its baselines share it, and the config errors."""

import numpy as np
import pytest

from mtsys import testing
from mtsys.config import loader
from mtsys.evolution import loop
from mtsys.system import root as mroot
from mtsys.system import store as mstore
from mtsys.train import baselines
from mtsys.train import pretrain
from mtsys.train import trainer


def _text(directory, pretrain_block=None, tasks=("a",)):
  def npz(name, seed):
    return testing.write_band_npz(str(directory), name, seed, n=180)

  if pretrain_block is None:
    pretrain_block = f"""
      pretrain {{
        task {{ name: "pre/bands" num_classes: 3
               files {{ npz: "{npz('pre', 99)}" validation_fraction: 0.2
                       test_fraction: 0.2 }} }}
        epochs: 3 max_batches_per_epoch: 6 batch_size: 16
        hparams {{ key: "learning_rate" value {{ number: 0.05 }} }}
      }}"""
  parts = [f"""
  root {{ vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 5 {pretrain_block} }}
  evolution {{ task_iterations: 1 generations: 1 children_per_generation: 1
              epochs_per_child: 1 max_batches_per_epoch: 2 batch_size: 16 seed: 1 }}
  baselines {{ methods: ["multi_head", "full_finetune"] epochs: 1 }}
  """]
  for i, name in enumerate(tasks):
    parts.append(f'task {{ name: "{name}" num_classes: 3 files {{ npz: "{npz(name, i)}"'
                 ' validation_fraction: 0.2 test_fraction: 0.2 } }')
  return "\n".join(parts)


def _count_training(monkeypatch):
  calls = []
  real = trainer.train_path

  def counting(*args, **kwargs):
    calls.append(1)
    return real(*args, **kwargs)

  monkeypatch.setattr(trainer, "train_path", counting)
  return calls


def test_pretrained_root_records_its_training_and_differs_from_random(tmp_path, monkeypatch):
  config = loader.parse(_text(tmp_path))
  calls = _count_training(monkeypatch)
  logged = []
  got = pretrain.root_components(config, log=logged.append)
  random_root = mroot.make_root(config)
  assert [s.id for s, _, _ in got] == [s.id for s, _ in random_root] == mroot.root_ids(config)
  for (spec, weights, slots), (_, random_weights) in zip(got, random_root):
    assert spec.trained_on["pre/bands"] > 0
    assert spec.access.public
    assert len(slots) == len(weights)
    assert any(not np.array_equal(w, r) for w, r in zip(weights, random_weights)), spec.id
  assert calls == [1]
  assert any("epoch 3/3" in line for line in logged)
  # Without `pretrain` the root is the random one, untouched.
  plain = loader.parse(_text(tmp_path, pretrain_block=""))
  for (spec, weights, slots), (_, random_weights) in zip(pretrain.root_components(plain),
                                                          mroot.make_root(plain)):
    assert not spec.trained_on and slots is None
    assert all(np.array_equal(w, r) for w, r in zip(weights, random_weights))


def test_evolution_writes_the_pretrained_root_once_and_baselines_share_it(tmp_path, monkeypatch):
  config = loader.parse(_text(tmp_path))
  store = mstore.Store.create(str(tmp_path / "system"), config.proto)
  loop.Evolver.with_root(config, store, log=lambda m: None).run()
  for cid in mroot.root_ids(config):
    spec = store.read_component_spec(cid)
    assert spec.trained_on["pre/bands"] > 0
    assert store.read_optimizer_slots(spec) is not None

  # A resumed or extended run never pretrains again: the store has the root.
  def fail(*args, **kwargs):
    raise AssertionError("pretrained again")

  monkeypatch.setattr(pretrain, "_pretrain", fail)
  loop.Evolver.with_root(config, store, log=lambda m: None)

  # Baselines copy the evolved system's root (no training of their own root either).
  baselines.run(config, str(tmp_path / "baselines"), log=lambda m: None, root_from=store)
  for method in ("multi_head", "full_finetune"):
    other = mstore.Store.open(str(tmp_path / "baselines" / method))
    for cid in mroot.root_ids(config):
      a, b = store.read_component_spec(cid), other.read_component_spec(cid)
      assert a.trained_on == b.trained_on
      assert all(np.array_equal(x, y) for x, y in zip(store.read_weights(a),
                                                      other.read_weights(b)))


@pytest.mark.parametrize("block, field, expected", [
    ('pretrain { epochs: 1 }', "root.pretrain.task", "the pretraining task"),
    ('pretrain { task { name: "a" num_classes: 3 builtin { name: "sklearn_digits" } } }',
     "root.pretrain.task.name", "a name not used by a task of the system"),
    ('pretrain { task { name: "p" num_classes: 0 builtin { name: "sklearn_digits" } } }',
     "root.pretrain.task.num_classes", "a positive integer"),
    ('pretrain { task { name: "p" num_classes: 10 builtin { name: "sklearn_digits" } }'
     ' epochs: -1 }', "root.pretrain.epochs", "a positive integer"),
    ('pretrain { task { name: "p" num_classes: 10 builtin { name: "sklearn_digits" } }'
     ' hparams { key: "learning_rat" value { number: 0.1 } } }',
     "root.pretrain.hparams['learning_rat']", "a hyperparameter name"),
    ('pretrain { task { name: "p" num_classes: 10 builtin { name: "sklearn_digits" } }'
     ' hparams { key: "nesterov" value { number: 1 } } }',
     "root.pretrain.hparams['nesterov']", "a flag value"),
    ('checkpoint: "/ckpt" pretrain { task { name: "p" num_classes: 10'
     ' builtin { name: "sklearn_digits" } } }',
     "root.pretrain", "either root.checkpoint or root.pretrain"),
])
def test_bad_pretrain_blocks_name_the_field(tmp_path, block, field, expected):
  with pytest.raises(loader.ConfigError) as e:
    loader.parse(_text(tmp_path, pretrain_block=block))
  assert f"{field}: expected {expected}" in str(e.value)


def test_shipped_chars_lite_pretrains_on_symbols_no_task_uses():
  config = loader.load("chars-lite")
  pre = config.proto.root.pretrain
  assert pre.task.builtin.name == "glyphs_symbols"
  task_sources = {t.builtin.name for t in config.proto.task}
  assert pre.task.builtin.name not in task_sources


def test_a_partial_root_left_by_a_killed_run_is_replaced_whole(tmp_path):
  """A run killed while writing the root left 2 components of another root (pretraining is not
  deterministic); the rerun deletes them and writes one consistent root."""
  text = ('root { vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: %d }\n'
          'task { name: "t" num_classes: 3 files { npz: "x.npz" validation_fraction: 0.2 '
          'test_fraction: 0.2 } }\n')
  config, other = loader.parse(text % 5), loader.parse(text % 6)
  store = mstore.Store.create(str(tmp_path / "system"), config.proto)
  for spec, weights in mroot.make_root(other)[:2]:  # what the killed run managed to write
    store.write_component(spec, weights)
  messages = []
  pretrain.ensure_root(store, config, log=messages.append)
  assert messages == ["Removing a partial root left by an interrupted run (2 of 4 components); "
                      "writing the whole root again."]
  compared = 0
  for spec, weights in mroot.make_root(config):
    for got, want in zip(store.read_weights(store.read_component_spec(spec.id)), weights,
                         strict=True):
      np.testing.assert_array_equal(got, want)
      compared += 1
  assert compared > 4
