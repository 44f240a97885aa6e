"""Every command the documentation shows runs as written: the commands in the shipped configs'
header comments and in README.md's ```sh blocks name scripts that exist and pass only flags those
scripts define (as absl's `--helpfull`, or an argparse script's `--help`, lists them); absl accepts
each bin/ command whole (`--only_check_args`: required flags present, values of the right type);
and every relative link and image in the README points at a file in the repository."""

import concurrent.futures
import functools
import os
import re
import shlex
import subprocess
import sys
import urllib.parse

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
# A flag in argparse's help: "--name NAME", "-h, --help".
_ARGPARSE_FLAG = re.compile(r"(?<![\w-])--([A-Za-z][\w-]*)")
# [text](target) or ![alt](target), with an optional "title".
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# README.md: the code blocks read as shell commands.
_SH_INFO = {"sh", "bash", "shell"}
# Programs whose flags are not ours to check (matched on the basename of the first word).
_SKIPPED = {"bash", "sh", "source", "sudo", "apt-get", "pip", "pip3", "bazel", "docker", "curl",
            "grpcurl", "tensorboard"}
_OPERATORS, _REDIRECTIONS = {"&&", "||", ";", "|", "&"}, {">", ">>", "<"}


def _join_continued(lines, where, end):
  """(text, line number) pairs with lines ending in a backslash joined to the next; `where` and
  `end` name the file and the block for the error when a continued line is last."""
  joined, pending, start = [], None, None
  for text, number in lines:
    if pending is None:
      pending, start = "", number
    if text.rstrip().endswith("\\"):
      pending += text.rstrip()[:-1] + " "
      continue
    joined.append((pending + text, start))
    pending = None
  assert pending is None, f"{where}:{start}: a continued line ends the {end}"
  return joined


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
  return _join_continued(lines, path, "header")


def _header_commands(path):
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
  importing TensorFlow. argv tuple -> CompletedProcess. A config header or README that does not
  parse is left out (its own tests report it)."""
  commands = []
  for name in loader.shipped_names():
    try:
      commands += _config_commands(name)[1]
    except AssertionError:
      continue
  try:
    commands += _readme_commands(_readme())
  except AssertionError:
    pass
  argvs = set()
  for argv, _ in commands:
    if os.path.isfile(os.path.join(_REPO, argv[0])):
      argvs.add((argv[0], "--helpfull"))
      if _ENTRY_POINT.match(argv[0]):
        argvs.add(tuple(argv) + ("--only_check_args",))
      else:
        argvs.add((argv[0], "--help"))  # In case it is an argparse script.
  with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
    return dict(zip(argvs, pool.map(_run, argvs)))


def _run_cached(argv):
  done = _prefetched().get(tuple(argv))
  return done if done is not None else _run(argv)


@functools.lru_cache(maxsize=None)
def _defined_flags(script):
  """(flag names, boolean ones) from absl's `--helpfull` (which exits 1 after printing them), or
  from argparse's `--help` for a script that rejects `--helpfull`."""
  done = _run_cached([script, "--helpfull"])
  lines = done.stdout.splitlines()
  if "flags:" not in lines:
    done = _run_cached([script, "--help"])
    names = set(_ARGPARSE_FLAG.findall(done.stdout))
    assert done.returncode == 0 and "help" in names, (
        f"{script}: neither --helpfull nor --help lists its flags (exit {done.returncode}):\n"
        f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return frozenset(names), frozenset()
  names, booleans = set(), set()
  for line in lines[lines.index("flags:") + 1:]:
    match = _HELP_ENTRY.match(line)
    if match:
      short, no, name = match.groups()
      names.update([name] + ([short] if short else []))
      if no:
        booleans.add(name)
  assert {"helpfull", "only_check_args"} <= names, (script, sorted(names))
  return frozenset(names), frozenset(booleans)


def _flag_error(script, name, has_value):
  """Why `--name` is not a flag of `script`, or None when it is."""
  names, booleans = _defined_flags(script)
  if name in names or (name.startswith("no") and name[2:] in booleans and not has_value):
    return None
  return f"{script} has no flag --{name} (its flags: {sorted(names)})"


def _readme():
  with open(os.path.join(_REPO, "README.md")) as f:
    return f.read()


def _sh_lines(markdown):
  """The lines of the ```sh blocks, continuation lines joined: (text, first line number) pairs."""
  joined, fence, block = [], None, []
  for number, line in enumerate(markdown.splitlines(), 1):
    if line.strip().startswith("```"):
      if fence is not None and fence[0] in _SH_INFO:
        joined += _join_continued(block, "README.md", "code block")
      fence = (line.strip()[3:].strip(), number) if fence is None else None
      block = []
      continue
    if fence is not None and fence[0] in _SH_INFO:
      block.append((line, number))
  assert fence is None, f"README.md:{fence[1]}: a code block is never closed"
  return joined


def _split_commands(text):
  """A shell line's simple commands (split on &&, ||, ;, |, &) as word lists, `# comments` and
  redirections (`> file`) left out."""
  lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
  lexer.whitespace_split = True  # "--config=a" and "host:8500" stay one word.
  commands, words, redirected = [], [], False
  for token in lexer:
    if token in _OPERATORS:
      commands, words = commands + [words], []
    elif token in _REDIRECTIONS:
      redirected = True
    elif redirected:
      redirected = False  # The redirection's target.
    else:
      words.append(token)
  commands.append(words)
  return [words for words in commands if words]


def _readme_commands(markdown):
  """The commands that run a repository script as (argv after the interpreter, line number),
  e.g. (["bin/evolve.py", "--config=chars-lite", ...], 20). `python -m ...` and `python -c ...`
  and the _SKIPPED programs are left out; any other command with a flag-like word fails."""
  commands = []
  for text, number in _sh_lines(markdown):
    for words in _split_commands(text):
      if _PYTHON.match(words[0]):
        argv = words[1:]
        if argv and argv[0] in ("-m", "-c"):
          continue  # A module (pytest) or inline code: no repository script.
        assert argv and argv[0].endswith(".py"), (
            f"README.md:{number}: expected `python SCRIPT.py ...`, got {shlex.join(words)!r}")
        commands.append((argv, number))
      elif os.path.basename(words[0]) not in _SKIPPED:
        assert not any(_FLAG_LIKE.search(word) for word in words), (
            f"README.md:{number}: a flag outside a `python SCRIPT.py ...` command, so this "
            f"test cannot check it (a program not ours? add it to _SKIPPED): {shlex.join(words)!r}")
  return commands


def _links(markdown):
  """(target, line number) of each Markdown link and image outside code blocks and code spans."""
  lines, in_fence = [], False
  for line in markdown.splitlines():
    if line.strip().startswith("```"):
      in_fence = not in_fence
    lines.append("" if in_fence or line.strip().startswith("```") else line)
  text = re.sub(r"`[^`]*`", lambda m: re.sub(r"[^\n]", " ", m.group()), "\n".join(lines))
  return [(m.group(1), text.count("\n", 0, m.start()) + 1) for m in _LINK.finditer(text)]


@functools.lru_cache(maxsize=None)
def _config_commands(name):
  """A shipped config's file and header commands; at least one runs a bin/ entry point."""
  path = loader.resolve(name)
  commands = _header_commands(path)
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
  commands = _header_commands(str(config))
  assert commands == [
      (["bin/evolve.py", "--config=demo", "--system_dir=/tmp/demo", "--nowith_baselines"], 3),
      (["bin/baselines.py", "--config=demo", "--output_dir", "/tmp/b"], 5),
  ]
  assert _flags_of(commands[0][0]) == [
      ("config", True), ("system_dir", True), ("nowith_baselines", False)]
  config.write_text("# Run it with `bazel run //bin:evolve -- --config=demo`.\n")
  with pytest.raises(AssertionError, match="outside a `python SCRIPT.py ...` command"):
    _header_commands(str(config))


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


# The README.

def test_readme_command_flags_are_defined():
  commands = _readme_commands(_readme())
  assert len(commands) >= 10, f"only {len(commands)} script commands found: {commands}"
  errors = []
  for argv, number in commands:
    if not os.path.isfile(os.path.join(_REPO, argv[0])):
      errors.append(f"README.md:{number}: no script {argv[0]}: `python {shlex.join(argv)}`")
      continue
    for flag, has_value in _flags_of(argv):
      error = _flag_error(argv[0], flag, has_value)
      if error:
        errors.append(f"README.md:{number}: `python {shlex.join(argv)}`: {error}")
  assert not errors, "\n".join(errors)
  # The check itself: a wrong flag and a value given to a --no form are caught.
  assert _flag_error("bin/evolve.py", "output_dir", True)
  assert _flag_error("bin/evolve.py", "nowith_baselines", True)


def test_readme_commands_pass_absl_flag_checks():
  failures = []
  for argv, number in _readme_commands(_readme()):
    if _ENTRY_POINT.match(argv[0]) and os.path.isfile(os.path.join(_REPO, argv[0])):
      done = _run_cached(argv + ["--only_check_args"])
      if done.returncode != 0:
        failures.append(f"README.md:{number}: `python {shlex.join(argv)}` exits "
                        f"{done.returncode}:\n{done.stderr[-2000:]}")
  assert not failures, "\n".join(failures)


def test_readme_links_point_at_files():
  links = _links(_readme())
  assert links, "no links found: the check below would check nothing"
  missing = []
  for target, number in links:
    if target.startswith("#") or re.match(r"^[A-Za-z][\w+.-]*:", target):
      continue  # An anchor, or a URL (http:, https:, mailto:).
    path = urllib.parse.unquote(target.split("#")[0].split("?")[0])
    if not os.path.exists(os.path.join(_REPO, path.lstrip("/"))):
      missing.append(f"README.md:{number}: {target} does not exist")
  assert not missing, "\n".join(missing)


def test_readme_parsing():
  """Continued lines, `&&`/`;`/`|` chains, redirections, comments, skipped programs, links."""
  markdown = ("# Demo\n"
              "```sh\n"
              "# A comment mentioning --not_a_flag.\n"
              "bash bin/setup_env.sh && .venv/bin/python bin/evolve.py --config=demo \\\n"
              "    --system_dir=/tmp/d --nowith_baselines   # muNet's defaults\n"
              "python bin/inspect_system.py dump --system_dir=/tmp/d > /tmp/d.textproto\n"
              "python bin/predict.py --server=localhost:8500 a.png | head -1; python3 x.py\n"
              ".venv/bin/python -m pytest tests -q\n"
              "bazel run //bin:evolve -- --config=demo\n"
              "```\n"
              "```\n" "python bin/not_sh.py --ignored\n" "```\n"
              "See ![a graph](figs/g.png), [docs](docs/x.md#part \"title\"), "
              "[a site](https://example.com), [up](#demo), `[code](not/a/link)`.\n")
  assert _readme_commands(markdown) == [
      (["bin/evolve.py", "--config=demo", "--system_dir=/tmp/d", "--nowith_baselines"], 4),
      (["bin/inspect_system.py", "dump", "--system_dir=/tmp/d"], 6),
      (["bin/predict.py", "--server=localhost:8500", "a.png"], 7),
      (["x.py"], 7),
  ]
  assert _flags_of(_readme_commands(markdown)[0][0]) == [
      ("config", True), ("system_dir", True), ("nowith_baselines", False)]
  assert _links(markdown) == [("figs/g.png", 14), ("docs/x.md#part", 14),
                              ("https://example.com", 14), ("#demo", 14)]
  with pytest.raises(AssertionError, match="outside a `python SCRIPT.py ...` command"):
    _readme_commands("```sh\nmake train --epochs=3\n```\n")
  with pytest.raises(AssertionError, match="expected `python SCRIPT.py ...`"):
    _readme_commands("```sh\npython --version\n```\n")
