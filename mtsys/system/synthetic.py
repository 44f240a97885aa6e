"""Systems with random weights and known structure, written through the store like trained ones.

For tests and benchmarks of what consumes systems (export, serving): building a 32-task system
by evolution takes an hour on a CPU; this takes seconds and gives every path an exactly known
shape: the config's root, the top `cloned_blocks` blocks cloned and perturbed per task, an
optional residual adapter, and a random head (a zero head would predict uniformly, hiding bugs).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from mtsys.config import hparams as hp
from mtsys.config import loader
from mtsys.protos import mtsys_pb2
from mtsys.system import assembly
from mtsys.system import paths as mpaths
from mtsys.system import root as mroot
from mtsys.system import store as mstore


def make_system(system_dir: str, config: loader.Config, *, seed: int = 0,
                cloned_blocks: int = 1, adapter_dim: int = 0,
                image_sizes: Optional[Mapping[str, int]] = None,
                class_names: Optional[Mapping[str, Sequence[str]]] = None,
                tasks: Optional[Sequence[str]] = None) -> mstore.Store:
  """Creates (or extends) the system at `system_dir` with a random path per task.

  Args:
    system_dir: A new or existing system directory made with `config`.
    config: The system's config; its root is written if the store does not hold it.
    seed: Seeds the perturbations of cloned components and the heads.
    cloned_blocks: How many of the root's top transformer blocks each task clones.
    adapter_dim: When > 0, a residual adapter of this inner size follows the blocks.
    image_sizes: Task -> image size (a multiple of the patch size); default the root's.
    class_names: Task -> its class names, recorded in its path; default none.
    tasks: The tasks to give paths; default all of the config's.

  Returns:
    The store.
  """
  store = mstore.Store.create(system_dir, config.proto)
  root_ids = mroot.root_ids(config)
  if not all(store.has_component(c) for c in root_ids):
    for spec, weights in mroot.make_root(config):
      if not store.has_component(spec.id):
        store.write_component(spec, weights)
  rng = np.random.default_rng(seed)
  blocks = [c for c in root_ids if ".transformer_block." in c]
  if not 0 <= cloned_blocks <= len(blocks):
    raise ValueError(f"cloned_blocks={cloned_blocks}: the root has {len(blocks)} blocks.")
  arch, root = config.arch, config.proto.root
  for name in tasks or [t.name for t in config.tasks]:
    task = config.task(name)
    size = int((image_sizes or {}).get(name, root.image_size))
    tokens = (size // arch.patch_size) ** 2 + 1
    access = mroot.task_access(task)
    planned = []
    for cid in root_ids:
      spec = store.read_component_spec(cid)
      if cid in blocks[len(blocks) - cloned_blocks:]:
        weights = [w + rng.normal(0, 0.02, w.shape).astype(w.dtype)
                   for w in store.read_weights(spec)]
        planned.append(mpaths.clone(spec, weights, None, name, access))
      else:
        planned.append(assembly.PlannedComponent(spec, None))
    if adapter_dim:
      spec, weights = mroot.new_adapter(name, arch.hidden_size, adapter_dim, tokens, access,
                                        seed=int(rng.integers(1 << 30)))
      weights = [w + rng.normal(0, 0.02, w.shape).astype(w.dtype) for w in weights]
      planned.append(assembly.PlannedComponent(spec, weights, None, trainable=True))
    spec, weights = mroot.new_head(task, arch.hidden_size, tokens, access)
    weights = [rng.normal(0, 0.5, w.shape).astype(w.dtype) for w in weights]
    planned.append(assembly.PlannedComponent(spec, weights, None, trainable=True))
    own = {p.spec.id: p.weights for p in planned if p.trainable}
    hparams = hp.defaults(config.search_space)
    hparams["image_size"] = float(size)
    mpaths.commit(
        store, name, planned,
        mpaths.Trained(weights=own, optimizer_slots={c: None for c in own}, steps=0),
        path_id=f"synthetic.{name}", hparams=hparams,
        metrics=mtsys_pb2.PathMetrics(total_params=sum(p.spec.param_count for p in planned)),
        score=0.0, author="synthetic", class_names=list((class_names or {}).get(name, ())))
  return store
