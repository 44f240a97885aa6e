"""Shared fixtures for the trainer tests."""

import numpy as np
import pytest


@pytest.fixture(scope="session")
def thirds_npz(tmp_path_factory):
  """A factory: `(seed, n)` -> path of an .npz holding a learnable 3-class task (which third of
  the 8x8 image is bright), written once per (seed, n)."""
  written = {}

  def make(seed, n):
    if (seed, n) not in written:
      rng = np.random.default_rng(seed)
      labels = rng.integers(0, 3, n)
      images = rng.integers(0, 60, (n, 8, 8), dtype=np.uint8)
      for i, c in enumerate(labels):
        images[i, :, c * 3:c * 3 + 2] += 180
      path = tmp_path_factory.mktemp("data") / "thirds.npz"
      np.savez(path, image=images, label=labels)
      written[seed, n] = str(path)
    return written[seed, n]

  return make
