"""Access control (µ2Net 3.4) as a property of whole evolutions.

Randomised tiny evolutions of a PRIVATE task and two tasks sharing the ACL group "g" (orders,
seeds and sampling modes vary) must never let a task use a component it may not use, and never
let a component trained on the private task (or on a group task) reach a task outside its
audience — not in the system's paths, not in any saved active population, not in any child
planned by a mutation, kept or not."""


import numpy as np
import pytest
import tensorflow as tf

from mtsys import testing
from mtsys.config import loader
from mtsys.evolution import access as maccess
from mtsys.evolution import loop
from mtsys.evolution import mutations
from mtsys.protos import mtsys_pb2
from mtsys.system import admin
from mtsys.system import assembly
from mtsys.system import paths as mpaths
from mtsys.system import root as mroot
from mtsys.system import store as mstore
from mtsys.train import evaluate
from mtsys.train import trainer

_PUBLIC, _PRIVATE, _GROUPS = (mtsys_pb2.Access.PUBLIC, mtsys_pb2.Access.PRIVATE,
                              mtsys_pb2.Access.GROUPS)

# (seed, tasks in order as (name, access text), evolution extras). The private task comes first,
# in the middle and last, so its path exists while the others evolve and the other way round.
_RUNS = [
    (11, [("priv", "PRIVATE"), ("g1", 'GROUPS groups: "g"'), ("g2", 'GROUPS groups: "g"')], ""),
    (12, [("g1", 'GROUPS groups: "g"'), ("priv", "PRIVATE"),
          ("g2", 'GROUPS groups: "g" groups: "x"')], "parent_sampling: MUNET"),
    (13, [("g2", 'GROUPS groups: "g"'), ("g1", 'GROUPS groups: "g"'), ("priv", "PRIVATE")],
     "mutation_probability: PER_ACTION"),
]


def _npz(directory, name, seed):
  return testing.write_band_npz(str(directory), name, seed, n=120)


def _config(directory, seed, tasks, extra):
  # A high mutation rate, so children clone, add and insert a lot: more chances to leak.
  text = [f"""
  root {{ vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: {seed} }}
  evolution {{ task_iterations: 1 generations: 2 children_per_generation: 2 epochs_per_child: 1
              max_batches_per_epoch: 2 batch_size: 16 seed: {seed} {extra} }}
  search_space {{ param {{ name: "mutation_prob" values [{{number: 0.3}}, {{number: 0.4}}]
                          default_value {{number: 0.3}} }}
                  param {{ name: "crop" values [{{flag: false}}] default_value {{flag: false}} }} }}
  """]
  for i, (name, access) in enumerate(tasks):
    text.append(f'task {{ name: "{name}" num_classes: 3 access {{ visibility: {access} }} '
                f'files {{ npz: "{_npz(directory, name, i)}" validation_fraction: 0.2 '
                'test_fraction: 0.2 } }')
  return loader.parse("\n".join(text))


def _knowledge_visible_to(owner: mtsys_pb2.TaskSpec, task: mtsys_pb2.TaskSpec) -> bool:
  """May `task` benefit from what `owner` put into the system (its trained weights)?"""
  vis = owner.access.visibility
  if owner.name == task.name or vis in (_PUBLIC, mtsys_pb2.Access.VISIBILITY_UNSPECIFIED):
    return True
  if vis == _PRIVATE:
    return False
  return bool(set(owner.access.groups) & maccess.task_groups(task))


class _Checker:
  """Checks every path, population and component the evolution produces."""

  def __init__(self, config):
    self.tasks = {t.name: t for t in config.tasks}
    self.paths_checked = 0
    self.components_checked = 0
    self.children_checked = 0
    self.used_by = {}  # component id -> tasks whose paths (or children) used it
    self.trained_on = {}  # component id -> tasks it was trained on (as last seen)

  def component(self, spec: mtsys_pb2.ComponentSpec, where: str) -> None:
    """Everyone the component's access admits may see every task it was trained on."""
    self.components_checked += 1
    for task in self.tasks.values():
      if maccess.may_use(spec.access, task):
        for owner in spec.trained_on:
          assert _knowledge_visible_to(self.tasks[owner], task), (
              f"{where}: component {spec.id} trained on {owner!r} is usable by {task.name!r}: "
              f"access {spec.access}")

  def path(self, task_name: str, specs, where: str) -> None:
    task = self.tasks[task_name]
    self.paths_checked += 1
    for spec in specs:
      assert maccess.may_use(spec.access, task), (
          f"{where}: task {task_name!r} uses component {spec.id} with access {spec.access}")
      for owner in spec.trained_on:
        assert _knowledge_visible_to(self.tasks[owner], task), (
            f"{where}: task {task_name!r} uses {spec.id}, trained on {owner!r}")
      self.component(spec, where)
      self.used_by.setdefault(spec.id, set()).add(task_name)
      self.trained_on.setdefault(spec.id, set()).update(spec.trained_on)


class _CheckingStore(mstore.Store):
  """A store that checks everything evolution persists, as it is written."""

  checker: _Checker

  def write_component(self, spec, weights, optimizer_slots=None):
    self.checker.component(spec, "write_component")
    return super().write_component(spec, weights, optimizer_slots)

  def write_path(self, spec):
    super().write_path(spec)  # first, so a missing component fails as it would anyway
    self.checker.path(spec.task, [self.read_component_spec(c) for c in spec.component_ids],
                      f"system path {spec.id}")

  def write_evolution_state(self, state):
    # The active population holds the active task's paths (muNet's also the root and other
    # tasks' paths, as parents): all of them must be usable by the active task.
    for path in state.population:
      self.checker.path(state.task, [self.read_component_spec(c) for c in path.component_ids],
                        f"population of {state.task!r}, path {path.id} of {path.task!r}")
    super().write_evolution_state(state)


@pytest.mark.parametrize("seed, tasks, extra", _RUNS, ids=[f"seed{r[0]}" for r in _RUNS])
def test_no_task_ever_uses_knowledge_it_may_not(tmp_path, monkeypatch, seed, tasks, extra):
  config = _config(tmp_path, seed, tasks, extra)
  checker = _Checker(config)

  real_mutate = mutations.mutate

  def checked_mutate(parent, parent_hparams, task, *args, **kwargs):
    child = real_mutate(parent, parent_hparams, task, *args, **kwargs)
    checker.children_checked += 1
    # Every child, kept or not: what it reads frozen and what it cloned or created.
    checker.path(task.name, [p.spec for p in child.planned], f"child of {parent.id}")
    assert child.planned[-1].spec.kind == "head" and child.planned[-1].trainable
    return child

  monkeypatch.setattr(mutations, "mutate", checked_mutate)
  store = _CheckingStore.create(str(tmp_path / "system"), config.proto)
  store.checker = checker
  loop.Evolver.with_root(config, store, log=lambda m: None).run()

  # The whole finished system, once more: every path and every component.
  final = store.paths()
  assert set(final) == {t for t, _ in tasks}
  assert all(final[t].task == t for t in final)
  for task, path in final.items():
    checker.path(task, [store.read_component_spec(c) for c in path.component_ids],
                 f"final path of {task!r}")
  for cid in store.component_ids():
    checker.component(store.read_component_spec(cid), "final component")
  # Nothing trained on the private task is used by another task's path, ever ...
  for cid, users in checker.used_by.items():
    if "priv" in checker.trained_on[cid]:
      assert users == {"priv"}, (cid, users)
  # ... and the property was really exercised: the private task trained components of its own,
  # which the system holds, and the other tasks' children were planned while they existed.
  priv_own = [c for c in final["priv"].component_ids
              if "priv" in store.read_component_spec(c).trained_on]
  assert priv_own
  assert checker.children_checked == 3 * 2 * 2 and checker.paths_checked > 12

  # µ2Net 3.4: the private dataset's knowledge can be removed later by removing its components;
  # the other tasks predict bit-identically afterwards.
  batch = np.random.default_rng(seed).random((4, 8, 8, 1)).astype(np.float32)
  before = {t: _predictions(store, t, batch) for t in final if t != "priv"}
  report = admin.remove_task(store, "priv")
  assert set(priv_own) <= set(report.removed_components) and not report.kept_in_use
  assert not [c for c in store.component_ids()
              if "priv" in store.read_component_spec(c).trained_on]
  for task, expected in before.items():
    np.testing.assert_array_equal(_predictions(store, task, batch), expected)


# -------------------------------------------------- the same property over many random evolutions
_CASES = 50


def _fake_training(self, children, task):
  """Stands in for training: the planned weights come back as trained, with a random score.

  Everything else of the loop runs for real (sampling, mutations, cloning, commits, populations,
  the end of phases), so the access property is checked on 50 evolutions in seconds.
  """
  del task
  results = []
  for child, seed in children:
    own = {p.spec.id: list(p.weights) for p in child.planned if p.trainable}
    score = float(np.random.default_rng(seed).random())
    results.append((trainer.TrainResult(
        validation_accuracy=score, best_epoch=0, steps_per_epoch=1, best_steps=1, total_steps=1,
        train_seconds=0.0, overhead_seconds=0.0, history=[], weights=own,
        optimizer_slots={c: None for c in own}), 0.0))
  return results


def test_access_property_over_50_seeded_random_evolutions(tmp_path, monkeypatch):
  monkeypatch.setattr(loop.Evolver, "_train_children", _fake_training)
  monkeypatch.setattr(evaluate, "evaluate_path", lambda *args, **kwargs: 0.5)
  visibilities = ["PUBLIC", "PRIVATE", 'GROUPS groups: "g"', 'GROUPS groups: "h"',
                  'GROUPS groups: "g" groups: "h"']
  extras = ["", "parent_sampling: MUNET", "mutation_probability: PER_ACTION"]
  real_mutate = mutations.mutate
  checked = {"cases": 0, "children": 0, "private_components": 0}
  for case in range(_CASES):
    rng = np.random.default_rng(1000 + case)
    names = ["t0", "t1", "t2"]
    tasks = [(n, visibilities[int(rng.integers(len(visibilities)))]) for n in names]
    tasks = [tasks[i] for i in rng.permutation(len(tasks))]
    config = _config(tmp_path, 1000 + case, tasks, extras[case % len(extras)])
    checker = _Checker(config)

    def checked_mutate(parent, parent_hparams, task, *args, checker=checker, **kwargs):
      child = real_mutate(parent, parent_hparams, task, *args, **kwargs)
      checker.children_checked += 1
      checker.path(task.name, [p.spec for p in child.planned], f"child of {parent.id}")
      return child

    monkeypatch.setattr(mutations, "mutate", checked_mutate)
    store = _CheckingStore.create(str(tmp_path / f"system{case}"), config.proto)
    store.checker = checker
    loop.Evolver.with_root(config, store, log=lambda m: None).run()
    for task, path in store.paths().items():
      checker.path(task, [store.read_component_spec(c) for c in path.component_ids],
                   f"final path of {task!r}")
    for cid in store.component_ids():
      spec = store.read_component_spec(cid)
      checker.component(spec, "final component")
      checked["private_components"] += not spec.access.public
    assert checker.children_checked == 3 * 2 * 2
    checked["cases"] += 1
    checked["children"] += checker.children_checked
  # The property was exercised on restricted knowledge, not only on public components.
  assert checked["cases"] == _CASES and checked["children"] == _CASES * 12
  assert checked["private_components"] > _CASES


def _predictions(store, task, batch):
  path = store.read_path(task)
  size = int(mpaths.hparams_from_proto(path.hparams)["image_size"])
  model, _ = assembly.build_path_model(mpaths.load_frozen(store, path), size, 1)
  return np.asarray(model(tf.image.resize(batch, (size, size)), training=False))


# ------------------------------------------------------------------------ unit tests of the rules
def _task(name, visibility=_PUBLIC, groups=()):
  return mtsys_pb2.TaskSpec(name=name, num_classes=2,
                            access=mtsys_pb2.Access(visibility=visibility, groups=list(groups)))


def test_may_use():
  pub, priv = _task("pub"), _task("priv", _PRIVATE)
  g1, g2, h = _task("g1", _GROUPS, ["g"]), _task("g2", _GROUPS, ["g", "x"]), _task("h", _GROUPS, ["h"])
  everyone = (pub, priv, g1, g2, h)
  public = mroot.task_access(pub)
  assert public.public and all(maccess.may_use(public, t) for t in everyone)
  unspecified = mroot.task_access(_task("u", mtsys_pb2.Access.VISIBILITY_UNSPECIFIED))
  assert unspecified.public  # "treated as PUBLIC"
  private = mroot.task_access(priv)
  assert [t.name for t in everyone if maccess.may_use(private, t)] == ["priv"]
  group = mroot.task_access(g1)
  assert [t.name for t in everyone if maccess.may_use(group, t)] == ["g1", "g2"]
  assert not maccess.may_use(mtsys_pb2.ComponentAccess(), pub)  # nobody: an empty ACL
  specs = {"r": mtsys_pb2.ComponentSpec(id="r", access=public),
           "p": mtsys_pb2.ComponentSpec(id="p", access=private)}
  assert maccess.path_allowed(["r", "p"], specs, priv)
  assert not maccess.path_allowed(["r", "p"], specs, pub)
  assert maccess.path_allowed(["r"], specs, pub)


def test_access_never_widens_along_clones():
  tasks = [_task("pub"), _task("priv", _PRIVATE), _task("g1", _GROUPS, ["g"]),
           _task("g2", _GROUPS, ["g", "x"])]
  accesses = [mroot.task_access(t) for t in tasks] + [mtsys_pb2.ComponentAccess()]
  for parent in accesses:
    for cloner in tasks:
      if not maccess.may_use(parent, cloner):
        continue
      spec = mtsys_pb2.ComponentSpec(id="c", kind="head", access=parent)
      new = mpaths.clone(spec, [], None, cloner.name, mroot.task_access(cloner)).spec.access
      assert maccess.may_use(new, cloner)
      for other in tasks:  # whoever may use the clone could use the parent and the cloner's work
        if maccess.may_use(new, other):
          assert maccess.may_use(parent, other) and maccess.may_use(
              mroot.task_access(cloner), other), (parent, cloner.name, other.name, new)
