"""Behaviours the papers' reference code has and mtsys pins: a lineage keeps training its own
components, scores follow the current sharing, muNet tries each seed once unmutated, and the
muNet/µ2Net switch changes how the loop samples and accepts."""

import numpy as np
import pytest

from mtsys import testing
from mtsys.config import loader
from mtsys.evolution import loop
from mtsys.evolution import mutations
from mtsys.evolution import scoring
from mtsys.system import store as mstore


def _config(directory, tasks, mode="MU2NET", generations=2, children=2):
  parts = [f"""
  root {{ vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 5 }}
  evolution {{ task_iterations: 1 generations: {generations}
              children_per_generation: {children} epochs_per_child: 1
              max_batches_per_epoch: 2 batch_size: 16 seed: 3 parent_sampling: {mode} }}
  """]
  for i, name in enumerate(tasks):
    npz = testing.write_band_npz(str(directory), name, i, n=90)
    parts.append(f'task {{ name: "{name}" num_classes: 3 files {{ npz: "{npz}" '
                 'validation_fraction: 0.2 test_fraction: 0.2 } }')
  return loader.parse("\n".join(parts))


def _evolve(config, directory, tasks=None):
  store = mstore.Store.create(str(directory), config.proto)
  reports = []
  evolver = loop.Evolver.with_root(config, store, log=lambda m: None, on_child=reports.append)
  evolver.run(tasks=tasks)
  return store, evolver, reports


@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory):
  """A µ2Net system with tasks a and b evolved (b may reuse a's components)."""
  work = tmp_path_factory.mktemp("fidelity")
  config = _config(work, ["a", "b"])
  store, evolver, reports = _evolve(config, work / "system")
  return config, store, evolver, reports


def test_own_lineage_components_are_cloned_and_other_tasks_stay_frozen(two_tasks):
  config, store, evolver, _ = two_tasks
  a = store.read_path("a")
  system = store.paths()
  locked = evolver.sharing.locked(system, "b")
  # From b's point of view a's components and the root are locked; nothing else is.
  assert all(locked(c) for c in a.component_ids)
  own = [c for c in store.read_path("b").component_ids if not locked(c)]
  assert own, "b's path should hold components of its own"
  hparams = {name: p.default for name, p in evolver.space.items()}
  hparams.update({k: 0.0 for k in hparams if k.startswith("mutation_prob")})  # µ = 0
  task_b = config.task("b")
  rng = np.random.default_rng(0)
  child = mutations.mutate(store.read_path("b"), hparams, task_b, evolver.space, config.arch,
                           evolver.source, rng, new_block_seed=lambda: 1, locked=locked)
  by_origin = {p.spec.cloned_from if p.trainable else p.spec.id: p for p in child.planned}
  compared = 0
  for cid in store.read_path("b").component_ids[:-1]:  # the head is always cloned
    planned = by_origin[cid]
    assert planned.trainable == (cid in own), cid
    compared += 1
  assert compared == len(store.read_path("b").component_ids) - 1
  # With every component locked (the old behaviour) µ = 0 clones nothing but the head.
  frozen = mutations.mutate(store.read_path("b"), hparams, task_b, evolver.space, config.arch,
                            evolver.source, rng, new_block_seed=lambda: 1)
  assert [p.trainable for p in frozen.planned] == [False] * (len(frozen.planned) - 1) + [True]


def test_scores_follow_the_current_sharing(two_tasks):
  config, store, evolver, _ = two_tasks
  a = store.read_path("a")
  alone = scoring.users_by_component({"a": a})
  shared = scoring.users_by_component({"a": a, "x": a})  # another task adopts all of a's path
  original = evolver.ev.score.scale_factor
  evolver.ev.score.scale_factor = 0.3
  try:
    lone = evolver.sharing.rescored(a, "a", alone).score
    both = evolver.sharing.rescored(a, "a", shared).score
  finally:
    evolver.ev.score.scale_factor = original
  assert both > lone  # half the parameters are accounted to the other task
  q = a.metrics.validation_accuracy
  params = sum(store.read_component_spec(c).param_count for c in a.component_ids)
  assert lone == pytest.approx(q * 0.3 ** (params / evolver.sharing.root_params))
  assert both == pytest.approx(q * 0.3 ** (params / 2 / evolver.sharing.root_params))


def test_flops_are_counted_at_the_paths_image_size(two_tasks):
  _, store, evolver, _ = two_tasks
  specs = [store.read_component_spec(c) for c in store.read_path("a").component_ids]
  at8, at4 = scoring.path_flops(specs, 8, 1), scoring.path_flops(specs, 4, 1)
  assert at8 == sum(s.flops for s in specs)  # the native size: the stored figures
  assert 0 < at4 < at8


def test_mu2net_counts_selections_across_phases_and_accepts_ties(tmp_path):
  config = _config(tmp_path, ["a"])
  config.proto.evolution.task_iterations = 2
  store, _, reports = _evolve(config, tmp_path / "system")
  state = store.read_evolution_state()
  assert state.iterations_done["a"] == 2
  # The counts of the task's surviving path outlive the phases that made them.
  kept = {k: v for k, v in state.selections.items() if k.startswith("a|")}
  assert kept and all(k.split("|")[1] == store.read_path("a").id or k == "a|root" for k in kept)
  assert all(r.kept == (r.score >= r.parent_score) for r in reports)


def test_munet_tries_every_seed_once_unmutated_then_its_own_paths(tmp_path):
  config = _config(tmp_path, ["a", "b"], mode="MUNET", generations=2, children=2)
  assert config.search_space["mutation_prob"].values == (0.1,)  # µ fixed at 0.1
  store, _, reports = _evolve(config, tmp_path / "system")
  b = [r for r in reports if r.task == "b"]
  # b's seeds: the root and a's path; tried first, once each, with no mutation but the head.
  seeds = [r for r in b if "seed (unmutated)" in r.mutations]
  assert sorted(r.parent_id for r in seeds) == sorted(["root", store.read_path("a").id])
  assert [r.index + 2 * r.generation for r in seeds] == [0, 1]
  assert all(len(r.mutations) <= 2 for r in seeds)  # "seed (unmutated)" and "new head"
  assert all(r.kept == (r.score > r.parent_score) for r in reports)  # muNet: strictly better


def test_the_mode_switch_changes_the_loop_not_only_the_hyperparameters(tmp_path):
  for sub in ("m", "u"):
    (tmp_path / sub).mkdir()
  munet = _config(tmp_path / "m", ["a"], mode="MUNET", generations=1, children=2)
  mu2net = _config(tmp_path / "u", ["a"], mode="MU2NET", generations=1, children=2)
  _, _, m_reports = _evolve(munet, tmp_path / "m" / "system")
  _, _, u_reports = _evolve(mu2net, tmp_path / "u" / "system")
  assert "seed (unmutated)" in m_reports[0].mutations
  assert not any("seed (unmutated)" in r.mutations for r in u_reports)
