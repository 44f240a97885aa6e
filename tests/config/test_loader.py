"""Config loading: shipped configs load, and every kind of bad config fails with one message
naming the file, the field and what was expected."""

import pytest

from mtsys.config import loader

_TASK = 'task { name: "a" num_classes: 3 builtin { name: "sklearn_digits" } }'
_ROOT = 'root { vit: "tiny/4" image_size: 16 channels: 1 }'


def _parse(text):
  return loader.parse(text, "/some/dir/my.textproto")


@pytest.mark.parametrize("name", loader.shipped_names())
def test_shipped_configs_load(name):
  config = loader.load(name)
  assert config.tasks
  assert config.search_space["image_size"].default == config.proto.root.image_size


def test_chars_lite_defaults_follow_munet_eq4():
  config = loader.load("chars-lite")
  ev = config.proto.evolution
  assert config.proto.baselines.epochs == (
      ev.epochs_per_child * ev.generations * ev.task_iterations)
  assert config.proto.root.image_size % config.arch.patch_size == 0
  assert config.proto.root.channels == 1 and config.arch.num_layers >= 1
  assert config.search_space["flip"].default is False


def test_unknown_shipped_name_lists_known_ones():
  with pytest.raises(loader.ConfigError, match=r"neither a file nor a shipped config.*chars-lite"):
    loader.load("no-such-config")


def test_typo_names_file_field_and_suggestion():
  with pytest.raises(loader.ConfigError) as e:
    _parse(_ROOT + ' task { nme: "a" }')
  msg = str(e.value)
  assert msg.startswith("my.textproto:")
  assert '"nme"' in msg and "did you mean 'name'?" in msg


def test_wrong_type_names_line():
  with pytest.raises(loader.ConfigError, match=r"^my.textproto:1:31: .*integer"):
    _parse('task { name: "a" num_classes: "many" }')


@pytest.mark.parametrize("text, field, expected", [
    (_ROOT, "task", "at least one task"),
    ('root { vit: "tiny/4" image_size: 18 }' + _TASK, "root.image_size",
     "a positive multiple of the patch size 4, got 18"),
    ('root { image_size: 16 }' + _TASK, "root.vit", "a ViT name"),
    ('root { vit: "huge/4" image_size: 16 }' + _TASK, "root.vit", "Unknown ViT size 'huge'"),
    ('root { vit: "tiny/4" image_size: 16 num_blocks: 9 }' + _TASK, "root.num_blocks",
     "0 (all) to 3, got 9"),
    (_ROOT + 'task { name: "a" num_classes: 0 builtin { name: "x" } }', "task[0].num_classes",
     "a positive integer, got 0"),
    (_ROOT + 'task { name: "../etc" num_classes: 2 builtin { name: "x" } }', "task[0].name",
     "a task name"),
    (_ROOT + 'task { name: "a" num_classes: 2 }', "task[0].source", "one of tfds"),
    (_ROOT + _TASK + _TASK, "task[1].name", "not used by another task"),
    (_ROOT + 'task { name: "a" num_classes: 2 files { npz: "x.npz" } }',
     "task[0].files.validation", "validation files or validation_fraction > 0"),
    (_ROOT + 'task { name: "a" num_classes: 2 files { npz: "x.npz" validation_fraction: 0.6 '
     'test_fraction: 0.5 } }', "task[0].files", "validation_fraction + test_fraction < 1"),
    (_ROOT + 'task { name: "a" num_classes: 2 tfds { name: "mnist" train_split: "train" } }',
     "task[0].tfds.validation_split", "a TFDS split string"),
    (_ROOT + 'distribution { strategy: "gpu" }' + _TASK, "distribution.strategy",
     "one of ['one_device'"),
    (_ROOT + 'evolution { score { scale_factor: 1.5 } }' + _TASK,
     "evolution.score.scale_factor", "(0, 1]"),
    (_ROOT + 'search_space { param { name: "momentum" values [{number: 0.9}, {number: 0.5}] } }'
     + _TASK, "search_space.param[0].values", "sorted ascending"),
    (_ROOT + 'search_space { param { name: "momentum" } }' + _TASK,
     "search_space.param[0].values", "a non-empty list"),
    (_ROOT + 'search_space { param { name: "momentun" values {number: 0.9} } }' + _TASK,
     "search_space.param[0].name", "one of ["),
    (_ROOT + 'search_space { param { name: "nesterov" values {number: 1} } }' + _TASK,
     "search_space.param[0].values", "flag values for 'nesterov'"),
    (_ROOT + 'search_space { param { name: "momentum" values [{number: 0.5}, {number: 0.6}] '
     'default_value {number: 0.7} } }' + _TASK, "search_space.param[0].default_value",
     "one of [0.5, 0.6]"),
    (_ROOT + 'task { name: "a" num_classes: 2 builtin { name: "x" } access { groups: "g" } }',
     "task[0].access.visibility", "GROUPS"),
])
def test_bad_config_message(text, field, expected):
  with pytest.raises(loader.ConfigError) as e:
    _parse(text)
  msg = str(e.value)
  assert msg.startswith(f"my.textproto: {field}: expected "), msg
  assert expected in msg, msg


def test_search_space_override_keeps_other_defaults():
  config = _parse(_ROOT + 'search_space { param { name: "momentum" values [{number: 0.8}, '
                  '{number: 0.9}] default_value {number: 0.8} } }' + _TASK)
  assert config.search_space["momentum"].values == (0.8, 0.9)
  assert config.search_space["momentum"].default == 0.8
  assert config.search_space["learning_rate"].default == 0.01


def test_munet_parent_sampling_selects_munet_search_space():
  config = _parse(_ROOT + 'evolution { parent_sampling: MUNET }' + _TASK)
  assert "lr_schedule" in config.search_space
  assert "lr_schedule" not in loader.parse(_ROOT + _TASK).search_space


def test_config_proto_is_a_copy():
  config = _parse(_ROOT + _TASK)
  assert config.proto.name == "my"  # from the file name
  assert config.task("a").num_classes == 3
  with pytest.raises(ValueError, match="Unknown task 'b'; expected one of \\['a'\\]"):
    config.task("b")


def test_image_sizes_can_be_set_in_the_search_space():
  """The default range (one patch to twice the root's size) can be narrowed by a config."""
  text = _ROOT + _TASK + (' search_space { param { name: "image_size" values [{number: 8},'
                          ' {number: 16}, {number: 24}] } }')
  space = loader.parse(text).search_space["image_size"]
  assert space.values == (8.0, 16.0, 24.0) and space.default == 16.0
  with pytest.raises(ValueError, match=r"search_space.param\[0\].values.*multiples of the "
                                       r"patch size 4"):
    loader.parse(_ROOT + _TASK + ' search_space { param { name: "image_size" values '
                 '[{number: 6}] } }')
