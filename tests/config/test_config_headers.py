"""The commands in the shipped configs' header comments are real: every flag they pass is one the
script they run defines (as its `--helpfull` lists it), and absl accepts each whole command
(`--only_check_args`: required flags present, values of the right type)."""

import concurrent.futures
import functools
import os
import re
import shlex
import subprocess
import sys

import pytest

from mtsys.config import loader

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
_TIMEOUT_S = 300

# The first word of a command: python, python3, .venv/bin/python, ...
_PYTHON = re.compile(r"^(?:\S*/)?python[0-9.]*$")
_ENTRY_POINT = re.compile(r"^bin/\w+\.py$")
# Something that looks like a flag in prose: every such line must be part of a parsed command,
# so a command written in a form this test does not understand fails instead of going unchecked.
_FLAG_LIKE = re.compile(r"(?<![\w-])--[A-Za-z]")
# A flag in absl's help: "  --name: ...", "  --[no]name: ...", "  -v,--verbosity: ...".
_HELP_ENTRY = re.compile(r"^\s+(?:-(\S+),)?--(\[no\])?([^\s:]+):")


def _header_lines(path):
  """The config's leading comment block, without the '#'s, continuation lines joined.

  Returns (text, first line number) pairs.
  """
  with open(path) as f:
    raw = f.read().splitlines()
  lines = []
  for number, line in enumerate(raw, 1):
    if not line.startswith("#"):
      break
    lines.append((line[1:], number))
  joined = []
  pending, start = None, None
  for text, number in lines:
    if pending is None:
      pending, start = "", number
    if text.rstrip().endswith("\\"):
      pending += text.rstrip()[:-1] + " "
      continue
    joined.append((pending + text, start))
    pending = None
  assert pending is None, f"{path}:{start}: a continued line ends the header"
  return joined


def _commands(path):
  """The header's commands as (argv after the interpreter, line number), e.g.
  (["bin/evolve.py", "--config=mccb", ...], 5). Fails on a flag-like line it cannot parse."""
  commands = []
  for text, number in _header_lines(path):
    words = text.split()
    if words and _PYTHON.match(words[0]):
      argv = shlex.split(text, comments=True)[1:]
      assert argv and argv[0].endswith(".py"), (
          f"{path}:{number}: expected `python SCRIPT.py ...`, got {text.strip()!r}")
      commands.append((argv, number))
    else:
      assert not _FLAG_LIKE.search(text), (
          f"{path}:{number}: mentions a flag outside a `python SCRIPT.py ...` command, so this "
          f"test cannot check it: {text.strip()!r}")
  return commands


def _flags_of(argv):
  """(name as written without dashes, has an `=value`) for each flag of a command's argv."""
  flags = []
  for arg in argv[1:]:
    if arg == "--":
      break
    if arg.startswith("-") and len(arg) > 1:
      name, eq, _ = arg.lstrip("-").partition("=")
      flags.append((name, bool(eq)))
  return flags


def _run(argv):
  """Runs `python argv...` from the repository root."""
  return subprocess.run([sys.executable, os.path.join(_REPO, argv[0])] + list(argv[1:]),
                        capture_output=True, text=True, timeout=_TIMEOUT_S, cwd=_REPO, env=_ENV)


@functools.lru_cache(maxsize=None)
def _prefetched():
  """Every subprocess the tests below need, run concurrently once: each of them spends seconds
  importing TensorFlow. argv tuple -> CompletedProcess. A config whose header does not parse is
  left out (its own tests report it)."""
  argvs = set()
  for name in loader.shipped_names():
    try:
      _, commands = _config_commands(name)
    except AssertionError:
      continue
    for argv, _ in commands:
      if os.path.isfile(os.path.join(_REPO, argv[0])):
        argvs.add((argv[0], "--helpfull"))
        argvs.add(tuple(argv) + ("--only_check_args",))
  with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
    return dict(zip(argvs, pool.map(_run, argvs)))


def _run_cached(argv):
  argv = tuple(argv)
  done = _prefetched().get(argv)
  return done if done is not None else _run(argv)


@functools.lru_cache(maxsize=None)
def _defined_flags(script):
  """(every flag name, the boolean ones) that `script --helpfull` lists; one run per script."""
  done = _run_cached([script, "--helpfull"])
  lines = done.stdout.splitlines()
  assert "flags:" in lines, (
      f"{script} --helpfull printed no flag list (exit {done.returncode}):\n"
      f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
  names, booleans = set(), set()
  for line in lines[lines.index("flags:") + 1:]:
    match = _HELP_ENTRY.match(line)
    if match:
      short, no, name = match.groups()
      names.add(name)
      if short:
        names.add(short)
      if no:
        booleans.add(name)
  # absl's own flags are always there: proves the parse found the list.
  assert {"helpfull", "only_check_args"} <= names and "helpfull" in booleans, (
      script, sorted(names))
  return frozenset(names), frozenset(booleans)


def _flag_error(script, name, has_value):
  """Why `--name` is not a flag of `script`, or None when it is."""
  names, booleans = _defined_flags(script)
  if name in names:
    return None
  if name.startswith("no") and name[2:] in booleans and not has_value:
    return None  # --noflag, the false form of a boolean.
  return f"{script} has no flag --{name} (its flags: {sorted(names)})"


@functools.lru_cache(maxsize=None)
def _config_commands(name):
  """A shipped config's file and header commands; at least one runs a bin/ entry point."""
  path = loader.resolve(name)
  commands = _commands(path)
  assert any(_ENTRY_POINT.match(argv[0]) for argv, _ in commands), (
      f"{path}: the header shows no `python bin/<job>.py ...` command")
  return path, commands


def test_configs_are_shipped():
  assert loader.shipped_names(), "no shipped configs: the tests below would check nothing"


@pytest.mark.parametrize("name", loader.shipped_names())
def test_header_flags_are_defined_by_the_script(name):
  """Each command's script exists and defines each flag; a bin/ job's command has flags (at
  least --config) and runs this config. Other scripts (benchmarks/) may take no flags."""
  path, commands = _config_commands(name)
  errors = []
  for argv, number in commands:
    script = argv[0]
    if not os.path.isfile(os.path.join(_REPO, script)):
      errors.append(f"{path}:{number}: no script {script}")
      continue
    flags = _flags_of(argv)
    if _ENTRY_POINT.match(script):
      # Every entry point needs --config: a command without flags was not parsed right.
      assert flags, f"{path}:{number}: no flags found in {argv}"
    for flag, has_value in flags:
      error = _flag_error(script, flag, has_value)
      if error:
        errors.append(f"{path}:{number}: {error}")
    for arg, following in zip(argv[1:], argv[2:] + [None]):
      value = arg.partition("=")[2] if arg.startswith("--config=") else (
          following if arg == "--config" else name)
      if value != name:
        errors.append(f"{path}:{number}: the {name} config's command passes --config={value}")
  assert not errors, "\n".join(errors)


@pytest.mark.parametrize("name", loader.shipped_names())
def test_header_commands_pass_absl_flag_checks(name):
  path, commands = _config_commands(name)
  failures = []
  for argv, number in commands:
    done = _run_cached(argv + ["--only_check_args"])
    if done.returncode != 0:
      failures.append(f"{path}:{number}: `python {shlex.join(argv)}` exits {done.returncode}:\n"
                      f"{done.stderr[-2000:]}")
  assert not failures, "\n".join(failures)


def test_header_parsing(tmp_path):
  """The parser joins continued lines, keeps --noflag forms, and flags what it cannot read."""
  config = tmp_path / "demo.textproto"
  config.write_text("# demo: a config.\n"
                    "#\n"
                    "#   python bin/evolve.py --config=demo \\\n"
                    "#       --system_dir=/tmp/demo --nowith_baselines   # a comment\n"
                    "#   .venv/bin/python bin/baselines.py --config=demo --output_dir /tmp/b\n"
                    "# muNet's prose, with an apostrophe.\n"
                    "# proto-file: proto/mtsys.proto\n"
                    "\n"
                    "# python bin/evolve.py --not_in_the_header\n"
                    "task { }\n")
  commands = _commands(str(config))
  assert commands == [
      (["bin/evolve.py", "--config=demo", "--system_dir=/tmp/demo", "--nowith_baselines"], 3),
      (["bin/baselines.py", "--config=demo", "--output_dir", "/tmp/b"], 5),
  ]
  assert _flags_of(commands[0][0]) == [
      ("config", True), ("system_dir", True), ("nowith_baselines", False)]
  config.write_text("# Run it with `bazel run //bin:evolve -- --config=demo`.\n")
  with pytest.raises(AssertionError, match="outside a `python SCRIPT.py ...` command"):
    _commands(str(config))


def test_flag_check_catches_wrong_flags():
  """The known bug this test exists for, and the boolean forms."""
  assert _flag_error("bin/evolve.py", "system_dir", True) is None
  assert _flag_error("bin/evolve.py", "with_baselines", False) is None
  assert _flag_error("bin/evolve.py", "nowith_baselines", False) is None
  assert "no flag --output_dir" in _flag_error("bin/evolve.py", "output_dir", True)
  # Only booleans have a --no form, and it takes no value.
  assert "no flag --nosystem_dir" in _flag_error("bin/evolve.py", "nosystem_dir", False)
  assert _flag_error("bin/evolve.py", "nowith_baselines", True) is not None
  assert _flag_error("bin/baselines.py", "output_dir", True) is None
