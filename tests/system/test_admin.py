"""Administrative operations: removing a task (its private knowledge goes, nobody else's
predictions change) and forking a system (shares the write-once components, never writes to the
source), on a local directory and on TensorFlow's ram:// filesystem."""

import uuid

import numpy as np
import pytest
import tensorflow as tf

from mtsys import errors
from mtsys import testing
from mtsys.config import loader
from mtsys.protos import mtsys_pb2
from mtsys.system import admin
from mtsys.system import assembly
from mtsys.system import paths as mpaths
from mtsys.system import root as mroot
from mtsys.system import store as mstore

_BATCH = np.random.default_rng(0).random((5, 8, 8, 1)).astype(np.float32)
_TASKS = (("pub", "PUBLIC"), ("user", "PUBLIC"), ("priv", "PRIVATE"), ("g1", "GROUPS"))


def _npz(directory, name, seed):
  return testing.write_band_npz(str(directory), name, seed, n=90)


def _config(directory, tasks=_TASKS, evolution=""):
  text = ['root { vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 3 }', evolution]
  for i, (name, visibility) in enumerate(tasks):
    groups = ' groups: "g"' if visibility == "GROUPS" else ""
    text.append(f'task {{ name: "{name}" num_classes: 3 access {{ visibility: {visibility}{groups} }}'
                f' files {{ npz: "{_npz(directory, name, i)}" validation_fraction: 0.2'
                ' test_fraction: 0.2 } }')
  return loader.parse("\n".join(text))


@pytest.fixture(params=["local", "ram"])
def base(request, tmp_path):
  if request.param == "local":
    return str(tmp_path)
  return f"ram://mtsys-admin-{uuid.uuid4().hex}"


class _System:
  """Writes hand-made paths into a store, so every assertion about sharing can be exact."""

  def __init__(self, store, config, seed=1):
    self.config, self.store = config, store
    self.rng = np.random.default_rng(seed)
    self.root_ids = mroot.root_ids(config)
    self.hidden = config.arch.hidden_size
    self.orphan = None

  @classmethod
  def create(cls, root, config):
    store = mstore.Store.create(root, config.proto)
    for spec, weights in mroot.make_root(config):
      store.write_component(spec, weights)
    return cls(store, config)

  def task(self, name):
    return self.config.task(name)

  def component(self, cid):
    return self.store.read_component_spec(cid)

  def clone(self, cid, task):
    spec = self.store.read_component_spec(cid)
    weights = [w + self.rng.normal(0, 0.1, w.shape).astype(w.dtype)
               for w in self.store.read_weights(spec)]
    return mpaths.clone(spec, weights, self.store.read_optimizer_slots(spec), task,
                        mroot.task_access(self.task(task)))

  def head(self, task):
    spec, weights = mroot.new_head(self.task(task), self.hidden, 5,
                                   mroot.task_access(self.task(task)))
    weights = [w + self.rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in weights]
    return assembly.PlannedComponent(spec, weights, None, trainable=True)

  def adapter(self, task):
    spec, weights = mroot.new_adapter(task, self.hidden, 8, 5, mroot.task_access(self.task(task)),
                                      seed=4)
    return assembly.PlannedComponent(spec, weights, None, trainable=True)

  def frozen(self, cid):
    spec = self.store.read_component_spec(cid)
    return assembly.PlannedComponent(spec, self.store.read_weights(spec), None, trainable=False)

  def embeddings(self):
    return [self.frozen(c) for c in self.root_ids[:3]]

  def commit(self, task, planned, write_path=True, score=0.5):
    trained = mpaths.Trained({p.spec.id: p.weights for p in planned if p.trainable},
                             {p.spec.id: [np.zeros_like(w) for w in p.weights]
                              for p in planned if p.trainable}, steps=10)
    mpaths.write_components(self.store, task, planned, trained)
    path = mpaths.make_path(task, planned, path_id=f"{task}.path.{uuid.uuid4().hex[:6]}",
                            hparams={"image_size": 8.0}, metrics=mtsys_pb2.PathMetrics(),
                            score=score)
    if write_path:
      self.store.write_path(path)
    return path


def _build(root, config):
  """pub: root with a cloned block; user: pub's block (public knowledge) frozen + own head;
  priv: pub's block cloned (private copy) + a private adapter + head, plus an orphan it made;
  g1 (group g): root + head."""
  s = _System.create(root, config)
  emb = s.embeddings()
  block = s.root_ids[3]
  pub = s.commit("pub", emb + [s.clone(block, "pub"), s.head("pub")])
  pub_block = pub.component_ids[3]
  s.commit("user", emb + [s.frozen(pub_block), s.head("user")])
  s.commit("priv", emb + [s.clone(pub_block, "priv"), s.adapter("priv"), s.head("priv")])
  orphan = s.adapter("priv")
  s.commit("priv", [orphan], write_path=False)
  s.commit("g1", emb + [s.frozen(block), s.head("g1")])
  s.orphan = orphan.spec.id
  return s


def _predictions(store, task):
  path = store.read_path(task)
  model, _ = assembly.build_path_model(mpaths.load_frozen(store, path), 8, 1)
  return np.asarray(model(_BATCH, training=False))


def _used(store):
  return mstore.component_ids_of(store.paths().values())


# ------------------------------------------------------------------------------ remove_task
def test_remove_private_task_removes_its_knowledge_only(base, tmp_path):
  s = _build(f"{base}/system", _config(tmp_path))
  store = s.store
  before = {t: _predictions(store, t) for t in ("pub", "user", "g1")}
  priv_path = store.read_path("priv")
  priv_own = set(priv_path.trained_component_ids) | {s.orphan}
  assert all(s.component(c).access.tasks == ["priv"] for c in priv_own)
  shared_before = {c: s.component(c) for c in store.component_ids() if c not in priv_own}
  store.write_evolution_state(mtsys_pb2.EvolutionState(iterations_done={"priv": 2, "pub": 1}))

  report = admin.remove_task(store, "priv")

  assert report.removed_path_id == priv_path.id
  assert sorted(report.removed_components) == sorted(priv_own)
  assert report.removed_from_config and not report.kept_in_use
  # Its path, components, config entry and evolution record are gone ...
  assert store.read_path("priv") is None and sorted(store.paths()) == ["g1", "pub", "user"]
  assert not priv_own & set(store.component_ids())
  for cid in priv_own:
    assert not tf.io.gfile.exists(f"{store.root}/components/{cid}")
  assert [t.name for t in store.read_state().config.task] == ["pub", "user", "g1"]
  assert dict(store.read_evolution_state().iterations_done) == {"pub": 1}
  # ... everything else is untouched (the public block priv had cloned from stays), and the other
  # tasks predict bit-identically.
  assert {c: s.component(c) for c in store.component_ids()} == shared_before
  for task, expected in before.items():
    np.testing.assert_array_equal(_predictions(store, task), expected)
  assert not any("priv" in s.component(c).trained_on for c in store.component_ids())


def test_remove_public_task_keeps_knowledge_others_use(base, tmp_path):
  s = _build(f"{base}/system", _config(tmp_path))
  store = s.store
  before = {t: _predictions(store, t) for t in ("user", "priv", "g1")}
  pub = store.read_path("pub")
  pub_block, pub_head = pub.component_ids[3], pub.component_ids[4]
  before_user_head = store.read_path("user").component_ids[-1]

  report = admin.remove_task(store, "pub")

  # Its head is gone; its trained block stays: "user" uses it (public knowledge) ...
  assert report.removed_components == [pub_head] and report.kept_in_use == [pub_block]
  assert store.has_component(pub_block) and not store.has_component(pub_head)
  assert store.read_component_spec(pub_block).trained_on["pub"] == 10
  # ... and every remaining task predicts exactly as before.
  for task, expected in before.items():
    np.testing.assert_array_equal(_predictions(store, task), expected)
  # Removing its last user later removes that user's own components only: the block is public
  # knowledge created by a task that is gone, and the root is nobody's to remove.
  report = admin.remove_task(store, "user")
  assert report.removed_components == [before_user_head]
  assert store.has_component(pub_block) and set(s.root_ids) <= set(store.component_ids())
  np.testing.assert_array_equal(_predictions(store, "priv"), before["priv"])


def test_remove_task_clears_its_active_phase(base, tmp_path):
  s = _build(f"{base}/system", _config(tmp_path))
  store = s.store
  emb = s.embeddings()
  child = s.commit("priv", emb + [s.head("priv")], write_path=False)  # kept child, mid-phase
  store.write_evolution_state(mtsys_pb2.EvolutionState(
      iterations_done={"priv": 1, "g1": 1}, task="priv", generations_done=1,
      population=[store.read_path("priv"), child], selections={child.id: 2},
      children_trained=7, train_steps=70))

  report = admin.remove_task(store, "priv")

  assert report.cleared_active_phase
  evo = store.read_evolution_state()
  assert not evo.task and not evo.population and not evo.selections
  assert evo.generations_done == 0 and dict(evo.iterations_done) == {"g1": 1}
  assert (evo.children_trained, evo.train_steps) == (7, 70)  # the compute record stays
  assert not set(child.component_ids[3:]) & set(store.component_ids())


def test_remove_task_keeps_what_another_active_population_uses(base, tmp_path):
  s = _build(f"{base}/system", _config(tmp_path))
  store = s.store
  pub = store.read_path("pub")
  pub_head = pub.component_ids[4]
  # "user" is mid-phase with a kept child that reuses pub's block; pub's path is its parent.
  emb = s.embeddings()
  child = s.commit("user", emb + [s.frozen(pub.component_ids[3]), s.head("user")],
                   write_path=False)
  store.write_evolution_state(mtsys_pb2.EvolutionState(
      task="user", generations_done=1, population=[child], selections={pub.id: 1, child.id: 1}))
  # A component pub created that only the in-flight child uses must survive too.
  orphan_for_child = s.head("pub")
  s.commit("pub", [orphan_for_child], write_path=False)
  evo = store.read_evolution_state()
  evo.population[0].component_ids.append(orphan_for_child.spec.id)  # (structure irrelevant here)
  store.write_evolution_state(evo)

  report = admin.remove_task(store, "pub")

  assert report.removed_components == [pub_head]
  assert sorted(report.kept_in_use) == sorted([pub.component_ids[3], orphan_for_child.spec.id])
  evo = store.read_evolution_state()
  assert evo.task == "user" and len(evo.population) == 1
  assert dict(evo.selections) == {child.id: 1}  # the removed path is no parent any more
  assert all(store.has_component(c) for c in evo.population[0].component_ids)


def test_unknown_task_fails_before_anything_is_touched(base, tmp_path):
  s = _build(f"{base}/system", _config(tmp_path))
  store = s.store
  evo = mtsys_pb2.EvolutionState(iterations_done={"pub": 1})
  store.write_evolution_state(evo)
  ids, paths, state = store.component_ids(), store.paths(), store.read_state()
  with pytest.raises(ValueError, match=r"Unknown task 'x'; expected one of "
                                       r"\['pub', 'user', 'priv', 'g1'\]"):
    admin.remove_task(store, "x")
  assert store.component_ids() == ids and store.paths() == paths
  assert store.read_state() == state and store.read_evolution_state() == evo


def test_remove_task_known_only_by_its_path(base, tmp_path):
  """A task dropped from the config but still with a path (and re-running after a crash)."""
  s = _build(f"{base}/system", _config(tmp_path))
  store = s.store
  config = mtsys_pb2.SystemConfig()
  config.CopyFrom(store.read_state().config)
  kept = [t for t in config.task if t.name != "g1"]
  del config.task[:]
  config.task.extend(kept)
  store.write_config(config)
  head = store.read_path("g1").component_ids[-1]
  report = admin.remove_task(store, "g1")
  assert report.removed_components == [head] and not report.removed_from_config
  assert "g1" not in store.paths() and store.removed_tasks() == ["g1"]
  again = admin.remove_task(store, "g1")  # a finished removal: nothing more to do
  assert again.already_removed and not again.removed_components


# ------------------------------------------------------------------------------------- fork
def _own_files(root):
  return tf.io.gfile.exists(f"{root}/components")


def test_fork_shares_components_and_never_writes_the_source(base, tmp_path):
  s = _build(f"{base}/src", _config(tmp_path))
  src = s.store
  src.write_evolution_state(mtsys_pb2.EvolutionState(iterations_done={"pub": 1, "priv": 1}))
  src_ids, src_paths = src.component_ids(), src.paths()
  src_evo = src.read_evolution_state()

  dst = admin.fork(f"{base}/src", f"{base}/dst")

  # dst: own system.pb naming its source, copies of the paths and the evolution state, and no
  # component file.
  assert not _own_files(f"{base}/dst")
  state = mstore.Store.open(f"{base}/dst").read_state()
  assert list(state.component_sources) == [mstore.normalize_root(f"{base}/src")]
  assert state.config == src.read_state().config
  assert dst.paths() == src_paths and dst.read_evolution_state() == src_evo
  assert dst.component_ids() == src_ids
  for cid in src_ids:
    assert dst.has_component(cid) and not dst.holds_component(cid)
    spec = dst.read_component_spec(cid)
    assert spec == src.read_component_spec(cid)
    for a, b in zip(dst.read_weights(spec), src.read_weights(spec)):
      np.testing.assert_array_equal(a, b)
    slots, src_slots = dst.read_optimizer_slots(spec), src.read_optimizer_slots(spec)
    assert (slots is None) == (src_slots is None)
    if slots is not None:
      assert len(slots) == len(src_slots)
      for a, b in zip(slots, src_slots):
        np.testing.assert_array_equal(a, b)
  for task in src_paths:  # a fork predicts exactly as its source
    np.testing.assert_array_equal(_predictions(dst, task), _predictions(src, task))

  # A new component and path in the fork: only the fork has them.
  f = _System(mstore.Store.open(f"{base}/dst"), s.config, seed=5)
  new_path = f.commit("user", f.embeddings() + [f.clone(s.root_ids[3], "user"), f.head("user")])
  new_ids = set(new_path.component_ids[3:])
  assert all(f.store.holds_component(c) for c in new_ids)
  assert src.component_ids() == src_ids and src.paths() == src_paths
  assert not new_ids & set(mstore.Store.open(f"{base}/src").component_ids())
  assert set(f.store.component_ids()) == set(src_ids) | new_ids
  assert f.store.read_path("user").id == new_path.id != src.read_path("user").id

  # Ids stay unique across the fork: a source's component cannot be written again in the fork.
  spec = src.read_component_spec(s.root_ids[0])
  with pytest.raises(FileExistsError, match="already exists in .*src; components are write-once"):
    f.store.write_component(spec, src.read_weights(spec))

  # Evolution-style GC in the fork (loop._finish_phase: delete what no path uses) removes the
  # fork's own garbage and never touches the source.
  orphan = f.head("user")
  f.commit("user", [orphan], write_path=False)
  in_use = _used(f.store)
  for cid in f.store.component_ids():
    if cid not in in_use:
      f.store.delete_component(cid)  # a no-op for components that live in the source
  assert not f.store.has_component(orphan.spec.id)
  src_again = mstore.Store.open(f"{base}/src")
  assert src_again.component_ids() == src_ids and src_again.paths() == src_paths
  assert src_again.read_evolution_state() == src_evo
  for task in src_paths:
    np.testing.assert_array_equal(_predictions(src_again, task), _predictions(src, task))
  for task in set(src_paths) - {"user"}:
    np.testing.assert_array_equal(_predictions(f.store, task), _predictions(src, task))

  # Removing a task in the fork: its private components are the source's, so they stay there.
  priv_own = set(src.read_path("priv").trained_component_ids)
  report = admin.remove_task(f.store, "priv")
  assert set(report.retained_in_sources) >= priv_own and not set(report.removed_components) & priv_own
  assert src_again.read_path("priv") is not None and priv_own <= set(src_again.component_ids())


def test_fork_of_a_fork_and_detach(base, tmp_path):
  s = _build(f"{base}/a", _config(tmp_path))
  b = admin.fork(f"{base}/a", f"{base}/b")
  a_ids = s.store.component_ids()
  fb = _System(b, s.config, seed=7)
  fb.commit("g1", fb.embeddings() + [fb.clone(s.root_ids[3], "g1"), fb.head("g1")])
  b_ids = b.component_ids()
  c = admin.fork(f"{base}/b", f"{base}/c")
  assert c.component_sources == [mstore.normalize_root(f"{base}/b"),
                                 mstore.normalize_root(f"{base}/a")]
  assert c.component_ids() == b.component_ids() and c.paths() == b.paths()
  expected = {t: _predictions(b, t) for t in b.paths()}

  copied = admin.detach(c)
  assert set(copied) == _used(c) | set(s.root_ids)
  assert c.component_sources == [] and mstore.Store.open(f"{base}/c").component_sources == []
  assert sorted(c.component_ids()) == sorted(copied)
  for cid in copied:
    assert c.holds_component(cid) and c.read_component_spec(cid) == b.read_component_spec(cid)
  for task, want in expected.items():
    np.testing.assert_array_equal(_predictions(c, task), want)
  assert admin.detach(c) == []
  # Detaching copied; the sources are as they were.
  assert mstore.Store.open(f"{base}/a").component_ids() == a_ids
  assert mstore.Store.open(f"{base}/b").component_ids() == b_ids


def test_fork_refuses_a_non_empty_destination_and_a_missing_source(base, tmp_path):
  _build(f"{base}/src", _config(tmp_path))
  admin.fork(f"{base}/src", f"{base}/dst")
  with pytest.raises(errors.IncompatibleSystemError, match="not empty"):
    admin.fork(f"{base}/src", f"{base}/dst")
  assert admin.is_fork_of(f"{base}/dst", f"{base}/src")
  assert not admin.is_fork_of(f"{base}/src", f"{base}/dst")
  assert not admin.is_fork_of(f"{base}/nothing", f"{base}/src")
  with pytest.raises(ValueError, match="into itself"):
    admin.fork(f"{base}/src", f"{base}/src/")
  with pytest.raises(mstore.SystemNotFoundError):
    admin.fork(f"{base}/nothing", f"{base}/dst2")


def test_corrupt_source_component_is_not_copied_by_detach(base, tmp_path):
  s = _build(f"{base}/src", _config(tmp_path))
  dst = admin.fork(f"{base}/src", f"{base}/dst")
  cid = s.root_ids[0]
  path = f"{base}/src/components/{cid}/weights.npz"
  testing.corrupt_file(path)
  with pytest.raises(mstore.CorruptFileError, match=f"Checksum mismatch in {path}"):
    dst.read_weights(dst.read_component_spec(cid))
  with pytest.raises(mstore.CorruptFileError, match="Checksum mismatch"):
    dst.materialize_component(cid)
  assert not dst.holds_component(cid)


def test_evolving_a_fork_never_touches_the_source(tmp_path):
  """The real loop on a fork: its end-of-phase GC deletes components the task created that its
  paths no longer use, which for inherited ones live in the source and must stay there."""
  from mtsys.evolution import loop
  config = _config(tmp_path, tasks=(("pub", "PUBLIC"), ("user", "PUBLIC")), evolution=(
      "evolution { task_iterations: 1 generations: 1 children_per_generation: 2 "
      "epochs_per_child: 1 max_batches_per_epoch: 1 batch_size: 16 seed: 2 }"))
  s = _System.create(str(tmp_path / "src"), config)
  emb = s.embeddings()
  s.commit("pub", emb + [s.clone(s.root_ids[3], "pub"), s.head("pub")], score=0.0)
  s.commit("user", emb + [s.frozen(s.root_ids[3]), s.head("user")])
  src_ids, src_paths = s.store.component_ids(), s.store.paths()
  before = {t: _predictions(s.store, t) for t in src_paths}

  fork = admin.fork(str(tmp_path / "src"), str(tmp_path / "dst"))
  loop.Evolver.with_root(config, fork, log=lambda m: None).run(tasks=["pub"])

  assert fork.read_evolution_state().iterations_done["pub"] == 1
  # The fork's pub path changed (its old one scored 0), so its inherited head, created by pub and
  # living in the source, became garbage for the fork's GC.
  assert fork.read_path("pub").id != src_paths["pub"].id
  src = mstore.Store.open(str(tmp_path / "src"))
  assert src.component_ids() == src_ids and src.paths() == src_paths
  for task, want in before.items():
    np.testing.assert_array_equal(_predictions(src, task), want)
  np.testing.assert_array_equal(_predictions(fork, "user"), before["user"])
  for cid in _used(fork):  # everything the fork uses loads, from wherever it lives
    fork.read_weights(fork.read_component_spec(cid))
  own = set(fork.component_ids()) - set(src_ids)
  assert own <= _used(fork)  # the fork's GC left no garbage of its own
