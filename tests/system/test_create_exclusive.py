"""fileio.create_exclusive: a file is created once, whole, by exactly one of any number of racing
processes; the second create names the path and leaves the first content; object stores are
refused with the reason; kills leave only a temporary file. Also fileio.write_atomic_durable."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from mtsys import errors
from mtsys import faults
from mtsys.system import fileio

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(script, *args, timeout=30):
  return subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=_REPO,
                        capture_output=True, text=True, timeout=timeout, check=False)


def test_creates_once_then_names_the_path_and_keeps_the_first_content(tmp_path):
  path = str(tmp_path / "MANIFEST.pb")
  fileio.create_exclusive(path, b"first")
  with pytest.raises(fileio.AlreadyExists) as raised:
    fileio.create_exclusive(path, b"second")
  assert str(raised.value) == (
      f"{path} already exists: another writer created it first (an exclusive create writes a "
      "file only if it is absent).")
  assert raised.value.path == path
  assert isinstance(raised.value, errors.StoreError) and isinstance(raised.value,
                                                                    FileExistsError)
  with open(path, "rb") as f:
    assert f.read() == b"first"
  assert os.listdir(tmp_path) == ["MANIFEST.pb"]  # no temporary file left either time


@pytest.mark.parametrize("path", ["gs://bucket/sys/leases/a/000000000001.pb",
                                  "s3://bucket/x", "ram://x/y"])
def test_object_stores_are_refused_with_the_reason(path):
  with pytest.raises(fileio.ExclusiveCreateUnsupportedError) as raised:
    fileio.create_exclusive(path, b"data")
  assert str(raised.value) == (
      f"Cannot create {path} exclusively: tf.io.gfile has no create-if-absent, and on an "
      "object store an exclusive create needs the store's create-only precondition "
      "(ifGenerationMatch=0 on GCS), which is not implemented yet; use a local directory.")
  assert isinstance(raised.value, errors.StoreError)


def test_a_missing_directory_is_an_access_error_and_leaves_nothing(tmp_path):
  with pytest.raises(errors.StoreAccessError, match=r"^Cannot write .*missing/f\.tmp-"):
    fileio.create_exclusive(str(tmp_path / "missing" / "f"), b"data")
  assert os.listdir(tmp_path) == []


_KILLED = ("import sys\n"
           "from mtsys import faults\n"
           "from mtsys.system import fileio\n"
           "injector = faults.Injector(faults.ROOT_WRITE, int(sys.argv[2]))\n"
           "with injector.phase_of(faults.ROOT_WRITE):\n"
           "  fileio.create_exclusive(sys.argv[1], b'0123456789', injector)\n")


@pytest.mark.parametrize("point,tmp_content", [(1, b"01234"), (2, b"0123456789")])
def test_a_kill_leaves_only_a_temporary_file(tmp_path, point, tmp_content):
  path = tmp_path / "f"
  done = _run(_KILLED, path, point)
  assert done.returncode == -signal.SIGKILL, done.stderr
  assert f"{faults.MARKER} SIGKILL at {faults.ROOT_WRITE} point {point}" in done.stderr
  (leftover,) = os.listdir(tmp_path)  # no target: readers never see a partial file
  assert re.fullmatch(r"f\.tmp-[0-9a-f]{32}", leftover)
  assert (tmp_path / leftover).read_bytes() == tmp_content
  fileio.create_exclusive(str(path), b"next")  # the leftover does not get in the way
  assert path.read_bytes() == b"next"


def test_write_atomic_durable_replaces_whole_and_leaves_no_temporary(tmp_path):
  path = str(tmp_path / "f")
  fileio.write_atomic_durable(path, b"old")
  fileio.write_atomic_durable(path, b"new")
  assert os.listdir(tmp_path) == ["f"]
  with open(path, "rb") as f:
    assert f.read() == b"new"
  fileio.write_atomic_durable("ram://durable/f", b"remote")  # object stores: write_atomic
  assert fileio.read("ram://durable/f") == b"remote"


def test_the_local_primitives_do_not_import_tensorflow():
  done = _run("import sys\n"
              "from mtsys.system import fileio, leases\n"
              "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
  assert done.returncode == 0, done.stderr


_RACER = ("import json, sys, time\n"
          "from mtsys.system import fileio\n"
          "directory, me, count, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), "
          "float(sys.argv[4])\n"
          "while time.time() < start_at:\n"
          "  time.sleep(0.001)\n"
          "won = []\n"
          "for i in range(count):\n"
          "  try:\n"
          "    fileio.create_exclusive(f'{directory}/f{i}', me.encode())\n"
          "    won.append(i)\n"
          "  except fileio.AlreadyExists:\n"
          "    pass\n"
          "print(json.dumps(won))\n")


def test_racing_processes_create_each_path_exactly_once(tmp_path):
  racers, count = 6, 300
  start_at = time.time() + 1.0  # every racer started and waiting: they create in lockstep
  procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(tmp_path), f"racer{i}",
                             str(count), str(start_at)], cwd=_REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(racers)]
  wins = {}
  for i, proc in enumerate(procs):
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    for n in json.loads(out):
      assert n not in wins, f"f{n} created by racer{wins[n]} and racer{i}"
      wins[n] = i
  assert sorted(wins) == list(range(count))  # exactly one winner per path
  for n, winner in wins.items():
    assert (tmp_path / f"f{n}").read_bytes() == f"racer{winner}".encode()
  assert sorted(os.listdir(tmp_path)) == sorted(f"f{n}" for n in range(count))  # no temps
