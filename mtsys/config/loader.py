"""Loading and validating `SystemConfig` text protos.

A config is validated once, here, into a `Config`: every later stage can trust it. Any problem is
one `ConfigError` whose message names the file, the field and what was expected, e.g.

    chars-lite.textproto: task[2].num_classes: expected a positive integer, got 0
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from typing import Mapping

from google.protobuf import text_format

from mtsys import errors
from mtsys.config import checkpoints
from mtsys.config import hparams as hp
from mtsys.config import names
from mtsys.config import vit_sizes
from mtsys.protos import mtsys_pb2

_SHIPPED_DIR = os.path.dirname(os.path.abspath(__file__))
_SUFFIX = ".textproto"
_STRATEGIES = ("one_device", "mirrored", "multi_worker_mirrored", "tpu")
_BASELINE_METHODS = ("full_finetune", "multi_head", "residual_adapters")


ConfigError = errors.ConfigError  # a config that cannot be used: names file, field, expectation


@dataclasses.dataclass(frozen=True)
class Config:
  """A validated config. `proto` has every default filled in; treat it as read-only."""

  path: str
  proto: mtsys_pb2.SystemConfig
  arch: vit_sizes.VitArch
  search_space: Mapping[str, hp.HParam]

  @property
  def name(self) -> str:
    return self.proto.name

  @property
  def tasks(self) -> tuple:
    return tuple(self.proto.task)

  def task(self, name: str) -> mtsys_pb2.TaskSpec:
    for t in self.proto.task:
      if t.name == name:
        return t
    raise errors.UnknownTaskError(
        f"Unknown task '{name}'; expected one of {[t.name for t in self.proto.task]}.")


def shipped_names() -> list[str]:
  """Names of the configs shipped in mtsys/config (usable as `--config=NAME`)."""
  return sorted(f[:-len(_SUFFIX)] for f in os.listdir(_SHIPPED_DIR) if f.endswith(_SUFFIX))


def resolve(path_or_name: str) -> str:
  """Maps a shipped config name to its file; passes paths through."""
  import tensorflow as tf  # for gs:// configs; imported late so `--help` stays fast
  if tf.io.gfile.exists(path_or_name) and not tf.io.gfile.isdir(path_or_name):
    return path_or_name
  shipped = os.path.join(_SHIPPED_DIR, path_or_name + _SUFFIX)
  if "/" not in path_or_name and os.path.exists(shipped):
    return shipped
  raise ConfigError(f"Config '{path_or_name}' is neither a file nor a shipped config; "
                    f"expected a path or one of {shipped_names()}.")


def load(path_or_name: str, root_checkpoint: str = "") -> Config:
  """Reads, parses and validates a config file or shipped config name.

  `root_checkpoint` (the jobs' --root_checkpoint) replaces the config's `root.checkpoint`.
  """
  import tensorflow as tf
  path = resolve(path_or_name)
  with tf.io.gfile.GFile(path, "r") as f:
    text = f.read()
  return parse(text, path, root_checkpoint)


def parse(text: str, path: str = "<string>", root_checkpoint: str = "") -> Config:
  """Parses and validates config text; `path` is only used in messages."""
  label = os.path.basename(path)
  proto = mtsys_pb2.SystemConfig()
  try:
    text_format.Parse(text, proto)
  except text_format.ParseError as e:
    raise ConfigError(f"{label}:{e.GetLine()}:{e.GetColumn()}: {_explain_parse_error(e)}"
                      ) from None
  if root_checkpoint:
    proto.root.checkpoint = root_checkpoint
  return _validate(proto, label, path)


def _explain_parse_error(e: text_format.ParseError) -> str:
  # str(e) starts with "line:column : "; the caller puts the position next to the file name.
  msg = re.sub(r"^\d+:\d+ : ", "", str(e))
  m = re.search(r'Message type "mtsys\.(\w+)" has no field named "(\w+)"', msg)
  if m:
    fields = [f.name for f in getattr(mtsys_pb2, m.group(1)).DESCRIPTOR.fields]
    close = difflib.get_close_matches(m.group(2), fields, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    msg += f" Expected one of {sorted(fields)}{hint}"
  return msg


def _validate(proto: mtsys_pb2.SystemConfig, label: str, path: str) -> Config:
  def fail(field: str, expected: str, got) -> None:
    raise ConfigError(f"{label}: {field}: expected {expected}, got {got!r}")

  def positive(msg, field: str, prefix: str, default=None):
    value = getattr(msg, field)
    if value == 0 and default is not None:
      setattr(msg, field, default)
    elif value <= 0:
      fail(f"{prefix}{field}", "a positive integer", value)

  proto = _copy(proto)
  if not proto.name:
    proto.name = os.path.splitext(label)[0]

  arch = _validate_root(proto.root, fail)

  ev = proto.evolution
  for field, default in (("task_iterations", 2), ("generations", 4), ("children_per_generation", 2),
                         ("epochs_per_child", 2), ("max_batches_per_epoch", 100),
                         ("batch_size", 64)):
    positive(ev, field, "evolution.", default)
  if ev.score.scale_factor == 0:
    ev.score.scale_factor = 1.0
  if not 0 < ev.score.scale_factor <= 1:
    fail("evolution.score.scale_factor", "a value in (0, 1]", ev.score.scale_factor)
  if not 0 <= ev.score.flops_factor <= 1:
    fail("evolution.score.flops_factor", "a value in [0, 1]", ev.score.flops_factor)

  bl = proto.baselines
  # muNet eq. 4: baselines get the training budget evolution gives each task.
  positive(bl, "epochs", "baselines.", ev.epochs_per_child * ev.generations * ev.task_iterations)
  positive(bl, "max_batches_per_epoch", "baselines.", ev.max_batches_per_epoch)
  positive(bl, "batch_size", "baselines.", ev.batch_size)
  positive(bl, "adapter_dim", "baselines.", 32)
  if bl.replicas < 0:
    fail("baselines.replicas", "0 (one per child of a generation) or a positive count",
         bl.replicas)
  if bl.learning_rate < 0 or not math.isfinite(bl.learning_rate):
    fail("baselines.learning_rate", "0 (the search space's default learning_rate) or a positive "
         "learning rate", bl.learning_rate)
  for m, lr in sorted(bl.method_learning_rate.items()):
    if m not in _BASELINE_METHODS:
      fail(f"baselines.method_learning_rate[{m!r}]", f"a method of {list(_BASELINE_METHODS)}", m)
    if not (lr > 0 and math.isfinite(lr)):
      fail(f"baselines.method_learning_rate[{m!r}]", "a positive learning rate", lr)
  for i, m in enumerate(bl.methods):
    if m not in _BASELINE_METHODS:
      fail(f"baselines.methods[{i}]", f"one of {list(_BASELINE_METHODS)}", m)
  if not bl.methods:
    bl.methods.extend(_BASELINE_METHODS)

  dist = proto.distribution
  if not dist.strategy:
    dist.strategy = "one_device"
  if dist.strategy not in _STRATEGIES:
    fail("distribution.strategy", f"one of {list(_STRATEGIES)}", dist.strategy)
  if dist.num_gpus < 0:
    fail("distribution.num_gpus", "a non-negative integer", dist.num_gpus)

  space = _validate_search_space(proto, arch, fail)

  if not proto.task:
    fail("task", "at least one task", "none")
  seen = set()
  for i, task in enumerate(proto.task):
    _validate_task(task, f"task[{i}].", fail)
    if task.name in seen:
      fail(f"task[{i}].name", "a name not used by another task", task.name)
    seen.add(task.name)
  _validate_pretrain(proto.root, seen, space, fail, positive)

  return Config(path=path, proto=proto, arch=arch, search_space=space)


def _validate_pretrain(root: mtsys_pb2.RootModel, task_names, space, fail, positive) -> None:
  if not root.HasField("pretrain"):
    return
  if root.checkpoint:
    fail("root.pretrain", "either root.checkpoint or root.pretrain, not both", root.checkpoint)
  pre = root.pretrain
  if not pre.HasField("task"):
    fail("root.pretrain.task", "the pretraining task { name: ... num_classes: ... source }", "none")
  _validate_task(pre.task, "root.pretrain.task.", fail)
  if pre.task.name in task_names:
    fail("root.pretrain.task.name", "a name not used by a task of the system", pre.task.name)
  for field, default in (("epochs", 10), ("max_batches_per_epoch", 200), ("batch_size", 64)):
    positive(pre, field, "root.pretrain.", default)
  values = {name: _value_of(v) for name, v in pre.hparams.items()}
  for name, value in sorted(values.items()):
    if name not in space:
      fail(f"root.pretrain.hparams['{name}']", f"a hyperparameter name, one of {sorted(space)}",
           name)
    if not isinstance(value, _PY_TYPE[space[name].kind]):
      fail(f"root.pretrain.hparams['{name}']", f"a {space[name].kind} value", value)
  if "image_size" in values and values["image_size"] != root.image_size:
    fail("root.pretrain.hparams['image_size']", f"root.image_size={root.image_size}",
         values["image_size"])


def _copy(proto):
  out = type(proto)()
  out.CopyFrom(proto)
  return out


def _validate_root(root: mtsys_pb2.RootModel, fail) -> vit_sizes.VitArch:
  if root.checkpoint and root.HasField("pretrain"):
    fail("root.pretrain", "either root.checkpoint or root.pretrain, not both", root.checkpoint)
  if root.checkpoint:
    checkpoints.resolve_root(root, fail)
  if root.HasField("custom"):
    c = root.custom
    for field in ("patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim"):
      if getattr(c, field) <= 0 and not (field == "num_layers" and getattr(c, field) == 0):
        fail(f"root.custom.{field}", "a positive integer", getattr(c, field))
    if c.hidden_size % c.num_heads:
      fail("root.custom.hidden_size", f"a multiple of num_heads={c.num_heads}", c.hidden_size)
    if c.layer_norm_epsilon < 0:
      fail("root.custom.layer_norm_epsilon", "a positive number (0: 1e-6)", c.layer_norm_epsilon)
    arch = vit_sizes.VitArch(c.patch_size, c.hidden_size, c.num_layers, c.num_heads, c.mlp_dim,
                             gelu_approximate=c.gelu_approximate,
                             # float32 in the proto: 1e-6 reads back as 9.99999997e-07
                             layer_norm_epsilon=float(f"{c.layer_norm_epsilon:.7g}") or 1e-6)
  elif root.vit:
    try:
      arch = vit_sizes.parse(root.vit)
    except ValueError as e:
      fail("root.vit", f"a ViT name like 'Ti/16' ({e})", root.vit)
  else:
    fail("root.vit", f"a ViT name such as 'Ti/16' (sizes {vit_sizes.names()}) or root.custom",
         "")
  if root.num_blocks < 0 or root.num_blocks > arch.num_layers:
    fail("root.num_blocks", f"0 (all) to {arch.num_layers}", root.num_blocks)
  if root.num_blocks:
    arch = dataclasses.replace(arch, num_layers=root.num_blocks)
  if root.image_size <= 0 or root.image_size % arch.patch_size:
    fail("root.image_size", f"a positive multiple of the patch size {arch.patch_size}",
         root.image_size)
  if root.channels == 0:
    root.channels = 3
  if root.channels not in (1, 3):
    fail("root.channels", "1 or 3", root.channels)
  return arch


# The Python type of an HParamValue's oneof field, by hyperparameter kind (bool is not a float).
_PY_TYPE = {hp.NUMBER: float, hp.FLAG: bool, hp.CHOICE: str}


def _value_of(v: mtsys_pb2.HParamValue):
  kind = v.WhichOneof("kind")
  return None if kind is None else getattr(v, kind)


def _validate_search_space(proto, arch, fail) -> dict:
  munet = proto.evolution.parent_sampling == mtsys_pb2.EvolutionConfig.MUNET
  space = hp.munet_search_space() if munet else hp.mu2net_search_space()
  for i, spec in enumerate(proto.search_space.param):
    field = f"search_space.param[{i}]"
    known = hp.KNOWN.get(spec.name)
    if known is None:
      fail(f"{field}.name", f"one of {sorted(hp.KNOWN)}", spec.name)
    values = [_value_of(v) for v in spec.values]
    if not values:
      fail(f"{field}.values", f"a non-empty list of values for '{spec.name}'", [])
    for v in values:
      if not isinstance(v, _PY_TYPE[known.kind]):
        fail(f"{field}.values", f"{known.kind} values for '{spec.name}'", v)
    if known.kind == hp.NUMBER and any(a >= b for a, b in zip(values, values[1:])):
      fail(f"{field}.values", f"values of '{spec.name}' sorted ascending without repeats", values)
    if len(set(values)) != len(values):
      fail(f"{field}.values", f"values of '{spec.name}' without repeats", values)
    if spec.name == "image_size" and any(v <= 0 or v % arch.patch_size for v in values):
      fail(f"{field}.values", f"positive multiples of the patch size {arch.patch_size}", values)
    default = _value_of(spec.default_value)
    if default is None and spec.name == "image_size":
      default = float(proto.root.image_size)
    if default is None:
      default = known.default if known.default in values else None
    if default not in values:
      fail(f"{field}.default_value", f"one of {values}", default)
    space[spec.name] = hp.HParam(spec.name, known.kind, tuple(values), default, known.doc)
  root = proto.root
  if "image_size" not in space:  # default: one patch to twice the root's size
    space["image_size"] = hp.HParam(
        "image_size", hp.NUMBER, hp.image_size_values(arch.patch_size, root.image_size),
        float(root.image_size), hp.KNOWN["image_size"].doc)
  return space


def _validate_task(task: mtsys_pb2.TaskSpec, prefix: str, fail) -> None:
  try:
    names.check_task_name(task.name)
  except ValueError:
    fail(f"{prefix}name", "a task name of letters, digits and '_-.' in '/'-separated segments "
         "(like 'emnist/digits'), each starting with a letter or digit", task.name)
  if task.num_classes <= 0:
    fail(f"{prefix}num_classes", "a positive integer", task.num_classes)
  if task.channels not in (0, 1, 3):
    fail(f"{prefix}channels", "0 (from the data), 1 or 3", task.channels)
  source = task.WhichOneof("source")
  if source is None:
    fail(f"{prefix}source", "one of tfds { ... }, files { ... } or builtin { ... }", "none")
  if source == "tfds":
    if not task.tfds.name:
      fail(f"{prefix}tfds.name", "a TFDS dataset name like 'cmaterdb/bangla'", "")
    for split in ("train_split", "validation_split", "test_split"):
      if not getattr(task.tfds, split):
        fail(f"{prefix}tfds.{split}", "a TFDS split string like 'train[5%:]'", "")
  elif source == "files":
    f = task.files
    given = [k for k in ("npz", "folder", "tfrecord") if getattr(f, k)]
    if len(given) != 1:
      fail(f"{prefix}files", "exactly one of npz, folder or tfrecord", given or "none")
    for split in ("validation", "test"):
      frac = getattr(f, f"{split}_fraction")
      if not 0 <= frac < 1:
        fail(f"{prefix}files.{split}_fraction", "a fraction in [0, 1)", frac)
      if frac and getattr(f, split):
        fail(f"{prefix}files.{split}", f"either {split} files or {split}_fraction, not both",
             getattr(f, split))
      if not frac and not getattr(f, split):
        fail(f"{prefix}files.{split}", f"{split} files or {split}_fraction > 0", "neither")
    if f.validation_fraction + f.test_fraction >= 1:
      fail(f"{prefix}files", "validation_fraction + test_fraction < 1",
           f.validation_fraction + f.test_fraction)
  elif source == "builtin" and not task.builtin.name:
    fail(f"{prefix}builtin.name", "the name of a built-in dataset", "")
  acc = task.access
  if acc.visibility == mtsys_pb2.Access.GROUPS and not acc.groups:
    fail(f"{prefix}access.groups", "at least one group with visibility GROUPS", [])
  if acc.groups and acc.visibility != mtsys_pb2.Access.GROUPS:
    fail(f"{prefix}access.visibility", "GROUPS when groups are given",
         mtsys_pb2.Access.Visibility.Name(acc.visibility))
