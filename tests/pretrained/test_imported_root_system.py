"""A system grown from an imported root (issue #14): evolution, baselines, grouping and export
run from `root { checkpoint }` unchanged; the stored root is the checkpoint's function, with its
provenance and zero momentum; new heads start from the pretrained final norm; a source file
imported on the fly gives the same components as an imported directory; GC keeps the head
template."""

import json
import os

import numpy as np
import pytest

from mtsys import errors
from mtsys import testing
from mtsys.config import loader
from mtsys.evolution import loop
from mtsys.export import exporter
from mtsys.pretrained import root_dir
from mtsys.pretrained import testing as ptesting
from mtsys.system import gc as mgc
from mtsys.system import paths as mpaths
from mtsys.system import root as mroot
from mtsys.system import store as mstore
from mtsys.train import baselines
from mtsys.train import pretrain


def _ckpt():
  # 1-channel 8x8 images as the band tasks have; the original ViT's [-1, 1] input.
  return ptesting.random_checkpoint(patch=4, hidden=16, layers=2, heads=2, mlp=32, image=8,
                                    channels=1, gelu_approximate=True, seed=3,
                                    source_kind="vit_npz", source_file="random.npz",
                                    source_sha256="ab" * 32)


def _tasks(tmp_path, names=("a", "b")):
  return testing.band_tasks_textproto(
      str(tmp_path), [os.path.basename(testing.write_band_npz(str(tmp_path), n, i))[:-4]
                      for i, n in enumerate(names)])


def _config(tmp_path, root_text):
  return loader.parse(f"""
    root {{ {root_text} }}
    evolution {{ task_iterations: 1 generations: 1 children_per_generation: 2
                epochs_per_child: 1 max_batches_per_epoch: 3 batch_size: 16 seed: 1 }}
    baselines {{ epochs: 1 max_batches_per_epoch: 2 batch_size: 16 }}
    {_tasks(tmp_path)}""", str(tmp_path / "imported.textproto"))


@pytest.fixture(name="imported")
def _imported(tmp_path):
  directory = str(tmp_path / "root")
  root_dir.write(_ckpt(), directory)
  return directory


def test_evolution_from_an_imported_root_keeps_its_function_and_exports(tmp_path, imported):
  config = _config(tmp_path, f'checkpoint: "{imported}"')
  assert config.arch.gelu_approximate and config.proto.root.image_size == 8
  store = mstore.Store.create(str(tmp_path / "system"), config.proto)
  loop.Evolver.with_root(config, store, log=lambda m: None).run()

  # The stored root: the imported components, provenance kept, no optimizer slots.
  source = root_dir.RootFiles(imported)
  stored_ids = mroot.stored_root_ids(config)
  assert stored_ids[-1] == mroot.HEAD_TEMPLATE_ID and len(stored_ids) == 3 + 2 + 1
  for cid in stored_ids:
    spec = store.read_component_spec(cid)
    assert (spec.provenance.source_kind, spec.provenance.sha256) == ("vit_npz", "ab" * 32)
    assert not spec.optimizer_file
    original = source.read_weights(source.read_component_spec(cid))
    compared = [np.array_equal(a, b) for a, b in zip(store.read_weights(spec), original,
                                                     strict=True)]
    assert compared and all(compared)

  # Both tasks have paths whose first component applies the [-1, 1] normalisation.
  paths = store.paths()
  assert sorted(paths) == ["a", "b"]
  first = json.loads(store.read_component_spec(paths["a"].component_ids[0]).config_json)
  assert first["input_scale"] == [2.0] and first["input_offset"] == [-1.0]

  # Export runs from it, and checks its outputs against the library's.
  result = exporter.export(store.root, str(tmp_path / "serving"), "imported",
                           log=lambda m: None)
  assert result.tasks == ["a", "b"] and result.compared_outputs > 0

  # Garbage collection keeps the head template (no path uses it).
  mgc.collect(store.root, log=lambda m: None)
  assert store.has_component(mroot.HEAD_TEMPLATE_ID)


def test_new_heads_start_from_the_pretrained_norm(tmp_path, imported):
  config = _config(tmp_path, f'checkpoint: "{imported}"')
  store = mstore.Store.create(str(tmp_path / "system"), config.proto)
  pretrain.ensure_root(store, config, log=lambda m: None)
  template = mroot.head_template(store, config.proto.root)
  t_spec, t_weights = template
  task = config.task("a")
  spec, weights = mroot.new_head(task, 16, 5, mroot.task_access(task), template)
  named = dict(zip(spec.weight_names, weights, strict=True))
  t_named = dict(zip(t_spec.weight_names, t_weights, strict=True))
  norm = [n for n in named if "/norm/" in n]
  assert len(norm) == 2
  for n in norm:
    t = [v for k, v in t_named.items() if k.endswith(n.split("/", 1)[1])]
    assert len(t) == 1 and np.array_equal(named[n], t[0])
    assert np.any(named[n] != (1.0 if n.endswith("gamma") else 0.0))  # pretrained, not fresh
  dense = [v for n, v in named.items() if "/dense/" in n]
  assert len(dense) == 2 and all(not np.any(v) for v in dense)
  assert dense[0].shape == (16, 3)


def test_baselines_run_from_an_imported_root(tmp_path, imported):
  config = _config(tmp_path, f'checkpoint: "{imported}"')
  results = baselines.run(config, str(tmp_path / "baselines"), methods=["full_finetune"],
                          tasks=["a"], log=lambda m: None)
  assert [(r.method, r.task) for r in results] == [("full_finetune", "a")]
  system = mstore.Store.open(str(tmp_path / "baselines" / "full_finetune"))
  assert system.has_component(mroot.HEAD_TEMPLATE_ID)


def test_a_source_file_imported_on_the_fly_gives_the_same_root(tmp_path, imported):
  ckpt = _ckpt()
  npz = tmp_path / "tiny.npz"
  np.savez(npz, **ckpt.params)
  custom = ('custom { patch_size: 4 hidden_size: 16 num_layers: 2 num_heads: 2 mlp_dim: 32 '
            'gelu_approximate: true }')
  on_the_fly = _config(tmp_path, f'checkpoint: "{npz}" {custom} image_size: 8 channels: 1')
  from_dir = _config(tmp_path, f'checkpoint: "{imported}"')
  a = pretrain.root_components(on_the_fly)
  b = pretrain.root_components(from_dir)
  assert [s.id for s, _, _ in a] == [s.id for s, _, _ in b] == mroot.stored_root_ids(from_dir)
  for (sa, wa, _), (sb, wb, _) in zip(a, b):
    assert sa.config_json == sb.config_json
    assert sa.provenance.source_kind == "vit_npz" and sa.provenance.sha256
    compared = [np.allclose(x, y, atol=0) for x, y in zip(wa, wb, strict=True)]
    assert compared and all(compared)


def test_on_the_fly_shapes_must_match_the_named_size(tmp_path):
  npz = tmp_path / "tiny.npz"
  np.savez(npz, **_ckpt().params)
  config = _config(tmp_path, f'checkpoint: "{npz}" custom {{ patch_size: 4 hidden_size: 16 '
                   'num_layers: 3 num_heads: 2 mlp_dim: 32 } image_size: 8 channels: 1')
  with pytest.raises(errors.CheckpointError) as e:
    pretrain.check_root_source(config)
  assert str(e.value) == (
      f"Checkpoint {npz} has the shapes of patch 4, hidden 16, 2 blocks, 2 heads, MLP 32; "
      "root.custom names patch 4, hidden 16, 3 blocks, 2 heads, MLP 32.")


def test_num_blocks_copies_the_first_blocks_of_an_imported_root(tmp_path, imported):
  config = _config(tmp_path, f'checkpoint: "{imported}" num_blocks: 1')
  assert config.arch.num_layers == 1
  store = mstore.Store.create(str(tmp_path / "system"), config.proto)
  specs = pretrain.ensure_root(store, config, log=lambda m: None)
  assert [s.id for s in specs] == mroot.root_ids(config)  # capped to the first block
  assert not store.has_component("root.transformer_block.1")


def test_grouping_candidates_grow_from_an_imported_root(tmp_path, imported):
  from mtsys.grouping import candidates as mcand  # pylint: disable=import-outside-toplevel
  from mtsys.grouping import train_lib  # pylint: disable=import-outside-toplevel
  config = _config(tmp_path, f'checkpoint: "{imported}"')
  out = str(tmp_path / "grouping")
  train_lib.run(config, train_lib.Options(output_dir=out), lambda m: None)
  records = mcand.read_records(out)
  assert sorted(records) == ["a", "a+b", "a@half", "b", "b@half"]
  # Each candidate's heads started from the imported root's norm: their systems hold the
  # imported patch embedding's normalisation in every path.
  system = mstore.Store.open(os.path.join(out, "candidates", "a+b"))
  for task, path in system.paths().items():
    first = json.loads(system.read_component_spec(path.component_ids[0]).config_json)
    assert first["input_scale"] == [2.0], task


def test_bin_evolve_takes_the_root_from_root_checkpoint(tmp_path, imported):
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  config = tmp_path / "tiny.textproto"
  config.write_text(f"""
    root {{ image_size: 8 }}
    evolution {{ task_iterations: 1 generations: 1 children_per_generation: 1
                epochs_per_child: 1 max_batches_per_epoch: 2 batch_size: 16 seed: 1 }}
    {_tasks(tmp_path, names=("a",))}""")
  system = tmp_path / "system"
  done = subprocess.run(
      [sys.executable, os.path.join(repo, "bin", "evolve.py"), f"--config={config}",
       f"--system_dir={system}", f"--root_checkpoint={imported}"],
      capture_output=True, text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert done.returncode == 0, done.stderr[-3000:]
  store = mstore.Store.open(str(system))
  assert store.read_state().config.root.checkpoint == imported
  spec = store.read_component_spec("root.transformer_block.0")
  assert spec.provenance.source_kind == "vit_npz" and json.loads(spec.config_json)[
      "gelu_approximate"] is True
  assert list(store.paths()) == ["a"]
