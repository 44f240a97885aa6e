"""In-flight records: one checksummed record per task, renewed by publishing again, live until
expiry plus the clock skew, refused to a superseded holder, and corrupt files reported by name
(never skipped: what they protect cannot be known)."""

import os

import pytest

from mtsys import errors
from mtsys.protos import mtsys_pb2
from mtsys.system import fileio
from mtsys.system import inflight
from mtsys.system import leases
from mtsys.system import records

T0 = 1_000_000.0
TASK = "emnist/digits"


class FakeClock:

  def __init__(self, now=T0):
    self.now = now

  def __call__(self):
    return self.now


def test_publish_writes_a_checksummed_record_named_for_the_task(tmp_path):
  record = inflight.publish(str(tmp_path), TASK, "host/1/t", 3, ["b", "a", "b"], 10.0,
                            FakeClock())
  path = tmp_path / "inflight" / "emnist~digits.pb"
  assert inflight.record_path(str(tmp_path), TASK) == str(path)
  stored = records.parse(path.read_bytes(), str(path), mtsys_pb2.InflightRecord(),
                         legacy_ok=False)
  assert stored == record == mtsys_pb2.InflightRecord(
      task=TASK, holder="host/1/t", token=3, expiry=T0 + 10, component_ids=["a", "b"])
  assert os.listdir(path.parent) == ["emnist~digits.pb"]  # no temporary left
  assert inflight.read_all(str(tmp_path)) == [record]


def test_renewing_moves_the_expiry_and_live_ids_honour_the_skew(tmp_path):
  root, clock = str(tmp_path), FakeClock()
  inflight.publish(root, TASK, "h", 1, ["x"], 10.0, clock)
  inflight.publish(root, "other", "g", 1, ["y"], 100.0, clock)
  assert inflight.live_ids(root, T0 + 39.9, max_clock_skew_s=30) == {"x", "y"}
  assert inflight.live_ids(root, T0 + 40.0, max_clock_skew_s=30) == {"y"}  # expiry + skew
  assert inflight.live_ids(root, T0 + 10.0, max_clock_skew_s=0) == {"y"}
  clock.now = T0 + 35  # renewed before anyone saw it expire
  renewed = inflight.publish(root, TASK, "h", 1, ["x"], 10.0, clock)
  assert renewed.expiry == T0 + 45
  assert inflight.live_ids(root, T0 + 70, max_clock_skew_s=30) == {"x", "y"}


def test_a_superseded_holder_can_neither_publish_nor_clear(tmp_path):
  root = str(tmp_path)
  inflight.publish(root, TASK, "new", 5, ["n"], 10.0, FakeClock())
  with pytest.raises(leases.LeaseLost, match="written under token 5 by new, higher than this "
                     "holder's 4"):
    inflight.publish(root, TASK, "old", 4, ["o"], 10.0, FakeClock())
  with pytest.raises(leases.LeaseLost):
    inflight.clear(root, TASK, token=4)
  assert [r.component_ids for r in inflight.read_all(root)] == [["n"]]
  assert inflight.clear(root, TASK, token=5) is True
  assert inflight.clear(root, TASK) is False
  assert inflight.read_all(root) == []


def test_corrupt_records_are_reported_naming_each_file(tmp_path):
  root = str(tmp_path)
  inflight.publish(root, "a", "h", 1, ["x"], 10.0, FakeClock())
  inflight.publish(root, "b", "h", 1, ["y"], 10.0, FakeClock())
  bad = tmp_path / "inflight" / "a.pb"
  data = bytearray(bad.read_bytes())
  data[-1] ^= 0xFF
  bad.write_bytes(bytes(data))
  (tmp_path / "inflight" / "c.pb").write_bytes(b"")
  (tmp_path / "inflight" / "b.pb.tmp-0123").write_bytes(b"junk")  # a killed writer's: ignored
  with pytest.raises(inflight.CorruptRecordError) as raised:
    inflight.live_ids(root, T0)
  message = str(raised.value)
  assert f"Checksum mismatch in {bad}" in message
  assert f"{tmp_path}/inflight/c.pb is empty" in message
  assert "b.pb" not in message  # neither the sound record nor the temporary leftover
  assert isinstance(raised.value, errors.CorruptFileError)
  # The next publish of the damaged task replaces it whole.
  inflight.publish(root, "a", "h", 1, ["x"], 10.0, FakeClock())
  (tmp_path / "inflight" / "c.pb").unlink()
  assert inflight.live_ids(root, T0) == {"x", "y"}


def test_a_record_under_another_tasks_name_is_corrupt(tmp_path):
  root = str(tmp_path)
  inflight.publish(root, "a", "h", 1, ["x"], 10.0, FakeClock())
  os.rename(tmp_path / "inflight" / "a.pb", tmp_path / "inflight" / "b.pb")
  with pytest.raises(inflight.CorruptRecordError, match="holds the in-flight record of task 'a'"):
    inflight.read_all(root)


def test_bad_arguments_are_refused(tmp_path):
  with pytest.raises(ValueError, match="ttl must be positive"):
    inflight.publish(str(tmp_path), TASK, "h", 1, ["x"], 0.0)
  with pytest.raises(ValueError, match="Invalid component id '../x'"):
    inflight.publish(str(tmp_path), TASK, "h", 1, ["../x"], 1.0)
  with pytest.raises(ValueError, match="Invalid task name"):
    inflight.publish(str(tmp_path), "../t", "h", 1, ["x"], 1.0)
  assert not os.path.exists(tmp_path / "inflight" / "emnist~digits.pb")


def test_publishing_needs_no_tensorflow(tmp_path):
  import subprocess
  import sys
  script = ("import sys; from mtsys.system import inflight; "
            f"inflight.publish({str(tmp_path)!r}, 't', 'h', 1, ['x'], 5.0); "
            "print(sorted(inflight.live_ids(" + repr(str(tmp_path)) + ", 0.0)), "
            "'tensorflow' in sys.modules)")
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  done = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True,
                        timeout=60, check=False)
  assert done.returncode == 0, done.stderr
  assert done.stdout.split() == ["['x']", "False"]
  assert fileio.TMP_MARK not in "".join(os.listdir(tmp_path / "inflight"))
