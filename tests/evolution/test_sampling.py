"""Parent sampling (µ2Net 3.1, muNet): 0.5^#selections acceptance, the fallbacks in order,
determinism under a seeded generator."""

import collections

import numpy as np
import pytest

from mtsys.evolution import sampling
from mtsys.protos import mtsys_pb2

_DRAWS = 20000


def _paths(*scored):
  return [mtsys_pb2.PathSpec(id=pid, score=score) for pid, score in scored]


def _frequencies(draw, n=_DRAWS, seed=0):
  rng = np.random.default_rng(seed)
  counts = collections.Counter(draw(rng).id for _ in range(n))
  return {k: v / n for k, v in counts.items()}


def _close(freq, expected, tol=0.015):
  assert set(freq) <= set(expected), freq
  for pid, p in expected.items():
    assert abs(freq.get(pid, 0.0) - p) < tol, (pid, freq, expected)


def test_unselected_best_scorer_is_always_taken():
  population = _paths(("low", 0.2), ("best", 0.9), ("mid", 0.5))
  others = _paths(("o", 0.99))
  rng = np.random.default_rng(0)
  assert {sampling.sample_mu2net(population, others, {}, rng).id for _ in range(50)} == {"best"}


def test_acceptance_is_half_to_the_number_of_selections():
  # Visited by decreasing score: best (1 selection: 1/2), mid (2: 1/4), low (0: 1).
  population = _paths(("low", 0.2), ("best", 0.9), ("mid", 0.5))
  selections = {"best": 1, "mid": 2}
  freq = _frequencies(lambda rng: sampling.sample_mu2net(population, [], selections, rng))
  _close(freq, {"best": 0.5, "mid": 0.5 * 0.25, "low": 0.5 * 0.75})


def test_falls_back_to_other_tasks_paths_in_random_order():
  # The population rejects (almost surely); the others are visited in a random order:
  # o1 (1 selection) is taken with 1/2 if visited first, o2 (0) always when visited.
  population = _paths(("tired", 0.9))
  others = _paths(("o1", 0.1), ("o2", 0.8))
  selections = {"tired": 60, "o1": 1}
  freq = _frequencies(lambda rng: sampling.sample_mu2net(population, others, selections, rng))
  _close(freq, {"o1": 0.5 * 0.5, "o2": 0.5 + 0.5 * 0.5})
  # Unselected others are equally likely: the order is random, not by score.
  freq = _frequencies(lambda rng: sampling.sample_mu2net(population, others, {"tired": 60}, rng))
  _close(freq, {"o1": 0.5, "o2": 0.5})


def test_final_fallback_is_uniform_over_everything():
  population = _paths(("a", 0.9), ("b", 0.5))
  others = _paths(("c", 0.1), ("d", 0.3))
  selections = {k: 80 for k in "abcd"}
  freq = _frequencies(lambda rng: sampling.sample_mu2net(population, others, selections, rng))
  _close(freq, {k: 0.25 for k in "abcd"})


def test_empty_population_goes_to_the_others_and_nothing_fails():
  # The others step: "y" (99 selections) is rejected and "x" (0) always accepted, whatever the
  # order; the uniform fallback would give "y" half the time.
  others = _paths(("x", 0.0), ("y", 0.5))
  selections = {"y": 99}
  assert {sampling.sample_mu2net([], others, selections, np.random.default_rng(seed)).id
          for seed in range(50)} == {"x"}
  # Every candidate rejected: the uniform fallback still returns one.
  others = _paths(("x", 0.0))
  assert sampling.sample_mu2net([], others, {"x": 99}, np.random.default_rng(0)).id == "x"
  with pytest.raises(ValueError, match="No parent to sample"):
    sampling.sample_mu2net([], [], {}, np.random.default_rng(0))


def test_seeded_generator_gives_the_same_parents():
  population = _paths(("a", 0.9), ("b", 0.5), ("c", 0.7))
  others = _paths(("o1", 0.1), ("o2", 0.8), ("o3", 0.4))
  selections = {"a": 2, "b": 1, "c": 3, "o1": 1}

  def run(seed):
    rng = np.random.default_rng(seed)
    return [sampling.sample_mu2net(population, others, selections, rng).id for _ in range(200)]

  assert run(7) == run(7)
  assert run(7) != run(8)
  rng = np.random.default_rng(3)
  munet = [sampling.sample_munet([], population, others, selections, rng)[0].id
           for _ in range(100)]
  rng = np.random.default_rng(3)
  assert munet == [sampling.sample_munet([], population, others, selections, rng)[0].id
                   for _ in range(100)]


def test_munet_tries_every_seed_once_uniformly_before_its_own_paths():
  """Algorithm 1 lines 11-13: an untried seed is drawn uniformly and marked as a seed."""
  seeds = _paths(("root", float("-inf")), ("s1", 0.3), ("s2", 0.2))
  active = _paths(("own", 0.9))
  rng = np.random.default_rng(0)
  selections, tried = {}, []
  for _ in range(3):
    parent, is_seed = sampling.sample_munet(seeds, active, seeds, selections, rng)
    assert is_seed
    tried.append(parent.id)
    selections[parent.id] = 1
  assert sorted(tried) == ["root", "s1", "s2"]  # each once, none twice
  parent, is_seed = sampling.sample_munet(seeds, active, seeds, selections, rng)
  assert not is_seed
  # Which seed comes first is uniform.
  freq = _frequencies(lambda r: sampling.sample_munet(seeds, active, seeds, {}, r)[0])
  _close(freq, {"root": 1 / 3, "s1": 1 / 3, "s2": 1 / 3})


def test_munet_then_walks_its_own_paths_by_decay_and_falls_back_to_everything():
  # Seeds all tried: "a" (1 selection) accepted with 1/2, then "b" with 1/2, else uniform over
  # a, b and the system's "s": P(a) = 1/2 + 1/4 * 1/3, P(b) = 1/4 + 1/4 * 1/3, P(s) = 1/4 * 1/3.
  seeds = _paths(("s", 0.1))
  active = _paths(("b", 0.1), ("a", 0.9))
  selections = {"a": 1, "b": 1, "s": 1}
  freq = _frequencies(lambda r: sampling.sample_munet(seeds, active, seeds, selections, r)[0])
  _close(freq, {"a": 1 / 2 + 1 / 12, "b": 1 / 4 + 1 / 12, "s": 1 / 12})
  with pytest.raises(ValueError, match="population and the system are empty"):
    sampling.sample_munet([], [], [], {}, np.random.default_rng(0))
