"""Mutations (muNet 2.1, µ2Net 3.2): clones get new ids, frozen components keep the parent's,
heads are cloned for the same task and fresh for another, structural mutations give paths that
build, and hyperparameters only move to neighbouring values."""

import numpy as np
import pytest

from mtsys.config import hparams as hp
from mtsys.config import loader
from mtsys.evolution import mutations
from mtsys.system import component_source
from mtsys.protos import mtsys_pb2
from mtsys.system import assembly
from mtsys.system import paths as mpaths
from mtsys.system import root as mroot
from mtsys.system import store as mstore

_CONFIG = """
root { vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 2 seed: 3 }
task { name: "a" num_classes: 3 files { npz: "/unused/a.npz" validation_fraction: 0.2 test_fraction: 0.2 } }
task { name: "b" num_classes: 5 files { npz: "/unused/b.npz" validation_fraction: 0.2 test_fraction: 0.2 } }
task { name: "p" num_classes: 3 access { visibility: PRIVATE }
       files { npz: "/unused/p.npz" validation_fraction: 0.2 test_fraction: 0.2 } }
"""
_KIND_ORDER = ("patch_embedding", "class_token", "position_embedding")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """A store with the root and a path for task "a": root + an adapter after the top block + head,
  its own components saved with (non-zero) optimizer slots."""
  config = loader.parse(_CONFIG)
  store = mstore.Store.create(str(tmp_path_factory.mktemp("mut") / "system"), config.proto)
  for spec, weights in mroot.make_root(config):
    store.write_component(spec, weights)
  root_ids = mroot.root_ids(config)
  rng = np.random.default_rng(0)
  task_a = config.task("a")
  hidden = config.arch.hidden_size
  planned = [assembly.PlannedComponent(store.read_component_spec(c)) for c in root_ids]
  for spec, weights in (mroot.new_adapter("a", hidden, 8, 5, mroot.task_access(task_a), seed=1),
                        mroot.new_head(task_a, hidden, 5, mroot.task_access(task_a))):
    planned.append(assembly.PlannedComponent(spec, weights, None, trainable=True))
  own = [p for p in planned if p.trainable]
  trained = mpaths.Trained(
      {p.spec.id: [w + rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in p.weights]
       for p in own},
      {p.spec.id: [rng.normal(0, 1, w.shape).astype(w.dtype) for w in p.weights] for p in own},
      steps=10)
  path = mpaths.commit(store, "a", planned, trained, path_id="a.path.1",
                       hparams=hp.defaults(config.search_space),
                       metrics=mtsys_pb2.PathMetrics(), score=0.5)
  space = mutations.per_action_space(config.search_space)
  return dict(config=config, store=store, path=path, root_ids=root_ids, space=space,
              source=component_source.ComponentSource(store))


def _mu(env, **probs):
  """Per-action µ: only the named actions happen, each with the given probability."""
  values = hp.defaults(env["space"])
  for action in mutations.ACTIONS:
    values[mutations.PER_ACTION_PREFIX + action] = probs.get(action, 0.0)
  return values


def _mutate(env, task="a", parent=None, seed=0, addition=mtsys_pb2.EvolutionConfig.RANDOM,
            **probs):
  parent = parent or env["path"]
  rng = np.random.default_rng(seed)
  root_blocks = [c for c in env["root_ids"] if ".transformer_block." in c]
  return mutations.mutate(parent, _mu(env, **probs), env["config"].task(task), env["space"],
                          env["config"].arch, env["source"], rng,
                          new_block_seed=lambda: int(rng.integers(2**31)),
                          addition=addition, root_blocks=root_blocks)


def _check_builds(env, child, task="a"):
  """The child is a well-formed path that builds and predicts the task's classes."""
  kinds = [p.spec.kind for p in child.planned]
  assert tuple(kinds[:3]) == _KIND_ORDER and kinds[-1] == "head"
  assert set(kinds[3:-1]) <= {"transformer_block", "residual_adapter"}
  for prev, cur in zip(kinds[3:-1], kinds[4:-1]):
    assert not (prev == cur == "residual_adapter"), kinds
  assert len(set(p.spec.id for p in child.planned)) == len(child.planned)
  size = int(child.hparams["image_size"])
  model, _ = assembly.build_path_model(child.planned, size, 1)
  out = model(np.zeros((2, size, size, 1), np.float32), training=False)
  assert tuple(out.shape) == (2, env["config"].task(task).num_classes)
  return kinds


def test_clone_never_reuses_an_id_and_keeps_weights_and_momentum(env):
  store, parent = env["store"], env["path"]
  child = _mutate(env, clone=1.0)
  parent_ids = set(parent.component_ids)
  assert all(p.trainable for p in child.planned)
  for p, pid in zip(child.planned, parent.component_ids):
    assert p.spec.id not in parent_ids and not store.has_component(p.spec.id)
    assert p.spec.cloned_from == pid and p.spec.created_by_task == "a"
    src = store.read_component_spec(pid)
    assert dict(p.spec.trained_on) == dict(src.trained_on)  # the knowledge record is inherited
    src_weights = store.read_weights(src)
    assert len(p.weights) == len(src_weights) > 0, pid
    for w, s in zip(p.weights, src_weights):
      np.testing.assert_array_equal(w, s)
    slots = store.read_optimizer_slots(src)
    if slots is None:
      assert p.optimizer_slots is None
    else:  # the momentum of the ancestor that trained it last
      assert p.optimizer_slots is not None and len(p.optimizer_slots) == len(slots) > 0, pid
      for m, s in zip(p.optimizer_slots, slots):
        np.testing.assert_array_equal(m, s)
    assert not p.spec.weights_sha256 and not p.spec.weights_file
  assert [f"clone {c}" for c in parent.component_ids[:-1]] == child.mutations
  # Every clone, again: always fresh ids.
  again = _mutate(env, clone=1.0, seed=0)
  assert not {p.spec.id for p in again.planned} & {p.spec.id for p in child.planned}
  _check_builds(env, child)


def test_frozen_components_keep_the_parents_ids_and_the_head_is_cloned(env):
  parent = env["path"]
  child = _mutate(env)
  assert [p.spec.id for p in child.planned[:-1]] == list(parent.component_ids[:-1])
  assert not any(p.trainable for p in child.planned[:-1])
  head = child.planned[-1]
  assert head.trainable and head.spec.id != parent.component_ids[-1]
  assert head.spec.cloned_from == parent.component_ids[-1]
  assert head.optimizer_slots is not None
  assert child.hparams == _mu(env) and child.mutations == []
  _check_builds(env, child)


def test_head_is_fresh_for_another_task(env):
  parent = env["path"]
  child = _mutate(env, task="b")
  head = child.planned[-1]
  assert head.trainable and head.spec.cloned_from == "" and head.optimizer_slots is None
  assert head.spec.created_by_task == "b" and "a" not in head.spec.trained_on
  assert assembly.instantiate(head.spec).num_classes == 5
  assert child.mutations == ["new head"]
  assert [p.spec.id for p in child.planned[:-1]] == list(parent.component_ids[:-1])
  _check_builds(env, child, task="b")
  # From the root path (no head at all) too.
  root_path = mtsys_pb2.PathSpec(id="root", task="", component_ids=env["root_ids"])
  child = _mutate(env, task="a", parent=root_path)
  assert child.planned[-1].spec.cloned_from == "" and child.mutations == ["new head"]
  _check_builds(env, child)


def test_private_task_clones_are_private(env):
  child = _mutate(env, task="p", clone=1.0)
  for p in child.planned:
    assert not p.spec.access.public and list(p.spec.access.tasks) == ["p"], p.spec.id
  child = _mutate(env, task="b", clone=1.0)
  assert all(p.spec.access.public for p in child.planned)


def test_remove_block_drops_the_top_block_and_its_adapter(env):
  parent = env["path"]
  child = _mutate(env, remove_block=1.0)
  kinds = _check_builds(env, child)
  assert kinds == ["patch_embedding", "class_token", "position_embedding", "transformer_block",
                   "head"]
  assert [p.spec.id for p in child.planned[:4]] == list(parent.component_ids[:4])
  assert child.mutations == ["remove_block"]
  # Down to no block at all: still a valid path.
  no_blocks = mtsys_pb2.PathSpec(id="x", task="a", component_ids=env["root_ids"][:4] +
                                 [parent.component_ids[-1]])
  child = _mutate(env, parent=no_blocks, remove_block=1.0)
  assert _check_builds(env, child)[3:] == ["head"]
  # With no block left, there is nothing to remove.
  blockless = mtsys_pb2.PathSpec(id="y", task="a", component_ids=env["root_ids"][:3] +
                                 [parent.component_ids[-1]])
  child = _mutate(env, parent=blockless, remove_block=1.0)
  assert child.mutations == [] and _check_builds(env, child)[3:] == ["head"]


def _commit(env, child, task="a"):
  """Stores the child's own components as if trained; returns its PathSpec (not the task's path)."""
  own = [p for p in child.planned if p.trainable]
  trained = mpaths.Trained({p.spec.id: list(p.weights) for p in own},
                           {p.spec.id: [np.zeros_like(w) for w in p.weights] for p in own}, 1)
  mpaths.write_components(env["store"], task, child.planned, trained)
  return mpaths.make_path(task, child.planned, path_id=f"{task}.path.tmp", hparams=child.hparams,
                          metrics=mtsys_pb2.PathMetrics(), score=0.1)


def test_add_block_puts_a_new_trainable_block_on_top(env):
  child = _mutate(env, add_block=1.0)
  kinds = _check_builds(env, child)
  assert kinds[-2] == "transformer_block" and len(kinds) == len(env["path"].component_ids) + 1
  block = child.planned[-2]
  assert block.trainable and block.spec.created_by_task == "a" and block.spec.cloned_from == ""
  assert block.spec.access.public and not block.spec.trained_on
  assert child.mutations == ["add_block"]
  private = _mutate(env, task="p", add_block=1.0).planned[-2]
  assert list(private.spec.access.tasks) == ["p"] and not private.spec.access.public


def test_layer_addition_below_the_root_depth_adds_the_roots_next_pretrained_block(env):
  ev = mtsys_pb2.EvolutionConfig
  shallow = mtsys_pb2.PathSpec(id="s", task="a", component_ids=env["root_ids"][:4] +
                               [env["path"].component_ids[-1]])  # the root's block 0 only
  child = _mutate(env, parent=shallow, addition=ev.ROOT_THEN_RANDOM, add_block=1.0)
  _check_builds(env, child)
  added = child.planned[-2]
  assert added.spec.id == env["root_ids"][4] and not added.trainable  # shared, frozen
  assert child.mutations == [f"add_block {env['root_ids'][4]}"]
  # At the root's depth (the stored path has both root blocks) the block is a new random one.
  deep = _mutate(env, addition=ev.ROOT_THEN_RANDOM, add_block=1.0)
  assert deep.planned[-2].trainable and deep.planned[-2].spec.id not in env["root_ids"]
  assert deep.mutations == ["add_block"]
  # RANDOM adds a random block below the root's depth too; OFF adds nothing at all.
  random = _mutate(env, parent=shallow, addition=ev.RANDOM, add_block=1.0)
  assert random.planned[-2].trainable and random.mutations == ["add_block"]
  off = _mutate(env, parent=shallow, addition=ev.OFF, add_block=1.0)
  assert [p.spec.id for p in off.planned[:-1]] == list(shallow.component_ids[:-1])
  assert off.mutations == []


def test_layer_addition_defaults_follow_the_mode():
  ev = mtsys_pb2.EvolutionConfig
  assert mutations.layer_addition(ev(parent_sampling=ev.MUNET), 3) == ev.OFF
  assert mutations.layer_addition(ev(parent_sampling=ev.MU2NET), 3) == ev.ROOT_THEN_RANDOM
  assert mutations.layer_addition(ev(), 0) == ev.RANDOM  # µ2Net's layer-less root
  assert mutations.layer_addition(ev(parent_sampling=ev.MUNET, layer_addition=ev.RANDOM),
                                  3) == ev.RANDOM


def test_insert_adapter_after_every_block_without_one(env):
  child = _mutate(env, insert_adapter=1.0)
  kinds = _check_builds(env, child)
  # The parent: emb, block0, block1, adapter; only block0 lacked an adapter.
  assert kinds[3:] == ["transformer_block", "residual_adapter", "transformer_block",
                       "residual_adapter", "head"]
  adapter = child.planned[4]
  assert adapter.trainable and adapter.spec.created_by_task == "a"
  dim = int(child.hparams["adapter_dim"])
  assert assembly.instantiate(adapter.spec).get_config()["inner_dim"] == dim
  assert child.planned[6].spec.id == env["path"].component_ids[5]  # the existing one stays
  # An adapter is the identity when inserted: the child's output equals the parent's.
  parent = _mutate(env)
  batch = np.random.default_rng(0).random((3, 8, 8, 1)).astype(np.float32)
  m1, _ = assembly.build_path_model(parent.planned, 8, 1)
  m2, _ = assembly.build_path_model(child.planned, 8, 1)
  np.testing.assert_allclose(np.asarray(m2(batch)), np.asarray(m1(batch)), atol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_random_mutations_give_paths_that_build(env, seed):
  probs = {a: 0.5 for a in mutations.ACTIONS}
  child = _mutate(env, task="ab"[seed % 2], seed=seed, **probs)
  _check_builds(env, child, task="ab"[seed % 2])
  # Chained: a child of the (stored) child still builds.
  grandchild = _mutate(env, parent=_commit(env, child, "ab"[seed % 2]), seed=seed + 100, **probs)
  _check_builds(env, grandchild)


def test_cloned_position_embedding_follows_the_image_size(env):
  values = _mu(env, clone=1.0)
  values["image_size"] = 12.0
  rng = np.random.default_rng(0)
  child = mutations.mutate(env["path"], values, env["config"].task("a"), env["space"],
                           env["config"].arch, env["source"], rng, new_block_seed=lambda: 1)
  pos = child.planned[2]
  assert pos.spec.kind == "position_embedding"
  assert assembly.instantiate(pos.spec).grid_size == 3 and pos.optimizer_slots is None
  model, _ = assembly.build_path_model(child.planned, 12, 1)
  assert tuple(model(np.zeros((1, 12, 12, 1), np.float32)).shape) == (1, 3)


def test_hparam_mutations_only_move_to_neighbours(env):
  space = env["config"].search_space  # the shared-µ space, µ included
  start = hp.defaults(space)
  start["mutation_prob"] = 0.3  # the largest µ: many mutations per child
  moved = set()
  for seed in range(40):
    rng = np.random.default_rng(seed)
    child = mutations.mutate(env["path"], start, env["config"].task("a"), space,
                             env["config"].arch, env["source"], rng,
                             new_block_seed=lambda: 1)
    for name, param in space.items():
      old, new = start[name], child.hparams[name]
      if new != old:
        assert new in param.neighbours(old), (name, old, new)
        moved.add(name)
  assert {"mutation_prob", "image_size", "learning_rate", "crop"} <= moved
  # The image size stays a multiple of the patch size, next to the parent's.
  assert space["image_size"].neighbours(8.0) == (4.0, 12.0)


def test_missing_hparams_start_at_their_defaults(env):
  partial = {k: v for k, v in _mu(env).items() if k != "learning_rate"}
  rng = np.random.default_rng(0)
  child = mutations.mutate(env["path"], partial, env["config"].task("a"), env["space"],
                           env["config"].arch, env["source"], rng, new_block_seed=lambda: 1)
  assert child.hparams["learning_rate"] == env["space"]["learning_rate"].default


def test_mutation_probability_lookup():
  assert mutations.mutation_probability({"mutation_prob": 0.3}, "clone") == 0.3
  assert mutations.mutation_probability(
      {"mutation_prob": 0.3, "mutation_prob/clone": 0.1}, "clone") == 0.1
  assert mutations.mutation_probability({}, "hparam") == 0.2
  with pytest.raises(ValueError, match="Unknown mutation 'nope'"):
    mutations.mutation_probability({}, "nope")


def test_per_target_mu_clones_only_its_layer_and_mutates_only_its_hyperparameter(env):
  config = env["config"]
  space = mutations.mutation_space(config.search_space, mtsys_pb2.EvolutionConfig.PER_TARGET,
                                   config.arch.num_layers)
  assert "mutation_prob/hparam/learning_rate" in space
  assert [k for k in space if k.startswith("mutation_prob/clone/")] == [
      "mutation_prob/clone/" + t for t in mutations.clone_targets(config.arch.num_layers)]
  values = {k: (0.0 if k.startswith("mutation_prob") else p.default) for k, p in space.items()}
  values["mutation_prob/clone/transformer_block/1"] = 1.0
  values["mutation_prob/hparam/learning_rate"] = 1.0
  rng = np.random.default_rng(0)
  child = mutations.mutate(env["path"], values, config.task("a"), space, config.arch,
                           env["source"], rng, new_block_seed=lambda: 1)
  parent = list(env["path"].component_ids)
  cloned = [p.spec.cloned_from for p in child.planned[:-1] if p.trainable]
  assert cloned == [parent[4]] and parent[4] == env["root_ids"][4]  # the root's second block
  assert child.mutations[1:] == [f"clone {parent[4]}"]
  assert child.mutations[0].startswith("learning_rate: ")
  changed = [k for k in values if child.hparams[k] != values[k]]
  assert changed == ["learning_rate"]
  # Without a µ of its own a target falls back to its action's, then to the shared µ.
  assert mutations.mutation_probability({"mutation_prob/clone": 0.3}, "clone", "head") == 0.3
  assert mutations.mutation_probability({"mutation_prob": 0.1}, "clone", "class_token") == 0.1
