"""Mutations (muNet 2.1, µ2Net 3.2 and 4, µ3Net 4): a parent path -> a child plan.

Every possible action is sampled independently with probability µ (the parent's `mutation_prob`;
one µ per action in µ2Net+ mode, `mutation_prob/<action>`; or, in µ3Net's PER_TARGET mode, one µ
per hyperparameter, `mutation_prob/hparam/<name>`, and per clonable layer,
`mutation_prob/clone/<target>`, beside the per-action ones for the other actions):

- hparam: each hyperparameter moves to a neighbouring value in its sorted list (µ included, so
  the mutation rate tunes itself; `image_size` too, the position embedding interpolating);
- remove_block: the top transformer block (and its adapter) is dropped;
- add_block (layer addition; `evolution.layer_addition`): a block is put on top of the path's
  blocks: below the root's depth the root's next pretrained block, shared frozen unless the clone
  action fires (µ3Net 4), above it (or always, in RANDOM mode: µ2Net 5.1's layer-less root) a new
  randomly initialised block; muNet has no layer addition;
- insert_adapter: a fresh (identity) residual adapter after a transformer block;
- clone: any component becomes a trainable copy, with the optimizer state of the ancestor that
  last trained it. The head is always cloned, or made fresh when the task differs.

Which components a child may keep training (the reference's locks): a component another task's
path uses, or the root's, is *locked*: shared frozen unless the clone action fires. Any other
component of the parent (the task's own lineage: what it created and no other task adopted) is
always cloned, so a lineage keeps training its own components for the whole phase instead of
freezing them after one child. Clones are copies (copy-on-write), so the parent is never altered
and a locked component never changes.

A muNet seed parent tried for the first time is left unmutated: only its head trains.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from mtsys.config import hparams as hp
from mtsys.protos import mtsys_pb2
from mtsys.system import assembly
from mtsys.system import component_source
from mtsys.system import paths as mpaths
from mtsys.system import root as mroot

ACTIONS = ("hparam", "remove_block", "add_block", "insert_adapter", "clone")
PER_ACTION_PREFIX = "mutation_prob/"
_EV = mtsys_pb2.EvolutionConfig


# µ3Net's per-action µ range (section 4, Figure 5: learned clone rates span 0.02-0.30).
PER_ACTION_VALUES = tuple(round(0.02 * i, 2) for i in range(1, 16))


def per_action_space(space: Mapping[str, hp.HParam]) -> dict[str, hp.HParam]:
  """`space` with one µ per action (µ2Net+) replacing the shared `mutation_prob`.

  Each per-action µ takes µ3Net's range 0.02-0.30 unless the config set `mutation_prob`'s values
  itself (then those); its default is the shared µ's default when in range.
  """
  mu = space["mutation_prob"]
  values = mu.values
  if values == hp.KNOWN["mutation_prob"].values:  # not set by the config
    values = PER_ACTION_VALUES
  default = mu.default if mu.default in values else min(values, key=lambda v: abs(v - mu.default))
  out = {k: v for k, v in space.items() if k != "mutation_prob"}
  for action in ACTIONS:
    name = PER_ACTION_PREFIX + action
    out[name] = dataclasses.replace(mu, name=name, values=tuple(values), default=default,
                                    doc=f"probability of each '{action}' action")
  return out


def clone_targets(num_blocks: int) -> list[str]:
  """The clonable layers that get their own µ in PER_TARGET mode (µ3Net Figure 5: per depth)."""
  return (["patch_embedding", "class_token", "position_embedding"]
          + [f"transformer_block/{i}" for i in range(num_blocks)])


def per_target_space(space: Mapping[str, hp.HParam], num_blocks: int) -> dict[str, hp.HParam]:
  """`per_action_space(space)` plus one µ per hyperparameter and per clonable layer (µ3Net 4,
  Figures 5 and 7: µ conditioned on each hyperparameter mutation and each clonable layer).

  Layers without a µ of their own (adapters, blocks above the root's depth, heads) use the
  clone action's µ; the µ hyperparameters themselves mutate with the hparam action's µ."""
  out = per_action_space(space)
  base = out[PER_ACTION_PREFIX + "clone"]
  names = [n for n in space if n != "mutation_prob"]
  for name in names:
    key = f"{PER_ACTION_PREFIX}hparam/{name}"
    out[key] = dataclasses.replace(base, name=key, doc=f"probability of mutating '{name}'")
  for target in clone_targets(num_blocks):
    key = f"{PER_ACTION_PREFIX}clone/{target}"
    out[key] = dataclasses.replace(base, name=key, doc=f"probability of cloning {target}")
  return out


def mutation_space(space: Mapping[str, hp.HParam], mode: int,
                   num_blocks: int) -> dict[str, hp.HParam]:
  """The searched hyperparameters for an `EvolutionConfig.MutationProbability` mode."""
  if mode == _EV.PER_TARGET:
    return per_target_space(space, num_blocks)
  if mode == _EV.PER_ACTION:
    return per_action_space(space)
  return dict(space)


def mutation_probability(hparams: Mapping[str, hp.Value], action: str,
                         target: Optional[str] = None) -> float:
  """µ of `action` (on `target`: a hyperparameter name or a clone target), the most specific
  one the hyperparameters hold: per target, per action, then the shared `mutation_prob`."""
  if action not in ACTIONS:
    raise ValueError(f"Unknown mutation '{action}'; expected one of {list(ACTIONS)}.")
  if target is not None:
    specific = hparams.get(f"{PER_ACTION_PREFIX}{action}/{target}")
    if specific is not None:
      return float(specific)
  return float(hparams.get(PER_ACTION_PREFIX + action, hparams.get("mutation_prob", 0.2)))


ComponentSource = component_source.ComponentSource  # lives in mtsys.system: a store cache


def layer_addition(evolution: mtsys_pb2.EvolutionConfig, root_blocks: int) -> int:
  """The effective `EvolutionConfig.LayerAddition` (never UNSPECIFIED) for a root's depth."""
  if evolution.layer_addition != _EV.LAYER_ADDITION_UNSPECIFIED:
    return evolution.layer_addition
  if evolution.parent_sampling == _EV.MUNET:
    return _EV.OFF
  return _EV.RANDOM if root_blocks == 0 else _EV.ROOT_THEN_RANDOM


@dataclasses.dataclass
class Child:
  """A child plan: its components in order, hyperparameters, parent and what was mutated."""

  planned: list
  hparams: dict
  parent: mtsys_pb2.PathSpec
  mutations: list


def _frozen(source: ComponentSource, cid: str) -> assembly.PlannedComponent:
  return assembly.PlannedComponent(source.spec(cid), source.weights(cid), None, trainable=False)


def _is_block(p: assembly.PlannedComponent) -> bool:
  return p.spec.kind == "transformer_block"


def _resize_position_embedding(p: assembly.PlannedComponent,
                               grid: int) -> assembly.PlannedComponent:
  """A cloned position embedding trains at the child's image size: resize its grid once."""
  layer = assembly.instantiate(p.spec)
  if layer.grid_size == grid:
    return p
  layer.build((None, 1 + layer.grid_size ** 2, layer.hidden_size))
  layer.set_weights(list(p.weights))
  resized = layer.resized(grid)
  spec = mtsys_pb2.ComponentSpec()
  spec.CopyFrom(p.spec)
  spec.config_json = assembly.component_config_json(resized)
  spec.param_count = resized.param_count()
  # Momentum of the old grid does not fit the new one; it starts from zero.
  return assembly.PlannedComponent(spec, [np.array(w) for w in resized.get_weights()], None,
                                   trainable=True)


def mutate(parent: mtsys_pb2.PathSpec, parent_hparams: Mapping[str, hp.Value],
           task: mtsys_pb2.TaskSpec, space: Mapping[str, hp.HParam], arch,
           source: ComponentSource, rng: np.random.Generator,
           new_block_seed: Callable[[], int],
           locked: Optional[Callable[[str], bool]] = None,
           unmutated: bool = False,
           addition: int = _EV.RANDOM,
           root_blocks: Sequence[str] = (),
           head_template: Optional[mroot.HeadTemplate] = None) -> Child:
  """Samples a child of `parent` for `task` (see the module docstring).

  Args:
    locked: component id -> whether the child must share it frozen unless cloned by mutation;
      None locks every component.
    unmutated: a muNet seed's first trial: no mutation, only the head trains.
    addition: an effective `EvolutionConfig.LayerAddition` (see `layer_addition`).
    root_blocks: the root's transformer-block ids in order (ROOT_THEN_RANDOM adds them).
    head_template: an imported root's (`root.head_template`): new heads start from its norm.
  """
  access = mroot.task_access(task)
  done = []
  if unmutated:
    return _head_only(parent, parent_hparams, task, space, arch, source, access, head_template)

  # Hyperparameters: missing ones (e.g. added to the space later) start at their defaults.
  hparams = {name: parent_hparams.get(name, p.default) for name, p in space.items()}
  mu = dict(hparams)  # the parent's rates decide this child's mutations
  for name, p in space.items():
    target = None if name.startswith(PER_ACTION_PREFIX) else name
    if p.values and rng.random() < mutation_probability(mu, "hparam", target):
      options = p.neighbours(hparams[name]) if hparams[name] in p.values else p.values
      if options:
        new = options[int(rng.integers(len(options)))]
        done.append(f"{name}: {hparams[name]} -> {new}")
        hparams[name] = new

  body = [_frozen(source, cid) for cid in parent.component_ids]
  head = body.pop() if body and body[-1].spec.kind == "head" else None
  image_size = int(hparams["image_size"])
  tokens = (image_size // arch.patch_size) ** 2 + 1

  blocks = [i for i, p in enumerate(body) if _is_block(p)]
  if blocks and rng.random() < mutation_probability(mu, "remove_block"):
    del body[blocks[-1]:]  # the top block and anything after it (its adapter)
    done.append("remove_block")
  # The draw is made in every mode, so switching layer addition off changes nothing else.
  if rng.random() < mutation_probability(mu, "add_block") and addition != _EV.OFF:
    depth = sum(1 for p in body if _is_block(p))
    if addition == _EV.ROOT_THEN_RANDOM and depth < len(root_blocks):
      body.append(_frozen(source, root_blocks[depth]))
      done.append(f"add_block {root_blocks[depth]}")
    else:
      block = mroot.new_block(arch, new_block_seed())
      block.build((None, tokens, arch.hidden_size))
      spec = mroot.spec_for(block, mroot.new_component_id(task.name, "transformer_block"),
                            input_shape=(tokens, arch.hidden_size), created_by_task=task.name,
                            access=access)
      body.append(assembly.PlannedComponent(spec, [np.array(w) for w in block.get_weights()],
                                            None, trainable=True))
      done.append("add_block")

  i = 0
  while i < len(body):
    nxt = body[i + 1] if i + 1 < len(body) else None
    if (_is_block(body[i]) and not (nxt and nxt.spec.kind == "residual_adapter")
        and rng.random() < mutation_probability(mu, "insert_adapter")):
      spec, weights = mroot.new_adapter(task.name, arch.hidden_size, int(hparams["adapter_dim"]),
                                        tokens, access, seed=int(rng.integers(2**31)))
      body.insert(i + 1, assembly.PlannedComponent(spec, weights, None, trainable=True))
      done.append(f"insert_adapter(dim={int(hparams['adapter_dim'])}) after {body[i].spec.id}")
      i += 1
    i += 1

  block_index = 0
  for i, p in enumerate(body):
    target = p.spec.kind
    if _is_block(p):
      target, block_index = f"transformer_block/{block_index}", block_index + 1
    if p.trainable:
      continue
    own = locked is not None and not locked(p.spec.id)
    if own or rng.random() < mutation_probability(mu, "clone", target):
      body[i] = mpaths.clone(p.spec, source.weights(p.spec.id), source.slots(p.spec.id),
                             task.name, access)
      if not own:  # the lineage's own components are cloned silently: that is no mutation
        done.append(f"clone {p.spec.id}")
      if p.spec.kind == "position_embedding":
        body[i] = _resize_position_embedding(body[i], image_size // arch.patch_size)

  if head is not None and parent.task == task.name:
    head = mpaths.clone(head.spec, head.weights, source.slots(head.spec.id), task.name, access)
  else:
    spec, weights = mroot.new_head(task, arch.hidden_size, tokens, access, head_template)
    head = assembly.PlannedComponent(spec, weights, None, trainable=True)
    done.append("new head")
  body.append(head)
  return Child(planned=body, hparams=hparams, parent=parent, mutations=done)


def _head_only(parent, parent_hparams, task, space, arch, source, access,
               head_template) -> Child:
  """The parent as it is, frozen, with a trainable head (cloned, or new for another task)."""
  hparams = {name: parent_hparams.get(name, p.default) for name, p in space.items()}
  body = [_frozen(source, cid) for cid in parent.component_ids]
  head = body.pop() if body and body[-1].spec.kind == "head" else None
  done = ["seed (unmutated)"]
  if head is not None and parent.task == task.name:
    head = mpaths.clone(head.spec, head.weights, source.slots(head.spec.id), task.name, access)
  else:
    tokens = (int(hparams["image_size"]) // arch.patch_size) ** 2 + 1
    spec, weights = mroot.new_head(task, arch.hidden_size, tokens, access, head_template)
    head = assembly.PlannedComponent(spec, weights, None, trainable=True)
    done.append("new head")
  body.append(head)
  return Child(planned=body, hparams=hparams, parent=parent, mutations=done)
