"""Many processes race on the same keys of one store, with fixed seeds and a bounded run: exclusive
component creates of the same ids, fenced path commits under short leases that they take over
from each other, lease renewals and releases, in-flight records, and garbage collections
running all the while. Then the invariants: every create had exactly one winner, each task's
path is the commit of its highest token, every path's components exist and verify, and no
component a live in-flight record names was deleted."""

import hashlib
import io
import json
import multiprocessing
import os
import random
import time
import traceback

import numpy as np

from mtsys.config import loader
from mtsys.protos import mtsys_pb2
from mtsys.system import fenced_paths
from mtsys.system import fileio
from mtsys.system import gc
from mtsys.system import inflight
from mtsys.system import leases
from mtsys.system import records
from mtsys.system import store as mstore

_CONFIG = """
root { vit: "tiny/4" image_size: 8 channels: 1 num_blocks: 1 seed: 3 }
task { name: "t0" num_classes: 3 files { npz: "x.npz" validation_fraction: 0.2
       test_fraction: 0.2 } }
"""
RACERS, SECONDS, MAX_OPS, SEED = 6, 3.0, 300, 20261129
SHARED = [f"stress.shared.{k}" for k in range(16)]
TASKS = ["t0", "t1"]
SKEW = 0.01  # one machine, one clock


def _npz(value):
  buf = io.BytesIO()
  np.savez(buf, w0000=np.full(3, value, np.float32))
  return buf.getvalue()


class _Racer:
  """One process: an agent of its own task r<i> (its in-flight record), racing for t0/t1."""

  def __init__(self, root, index, start_at):
    self.root, self.i, self.me = root, index, f"r{index}"
    self.rng = random.Random(SEED + index)
    self.store = mstore.Store.open(root)
    self.holder = f"{leases.holder_id()}/{self.me}"
    self.own = leases.acquire(root, self.me, self.holder, 600.0)  # its record's token
    self.held, self.private = set(), []  # ids its record protects; its own components
    self.out = {"wins": [], "losses": [], "commits": [], "deleted": [], "stats": {}}
    self.start_at = start_at

  def count(self, what):
    self.out["stats"][what] = self.out["stats"].get(what, 0) + 1

  def publish(self):
    inflight.publish(self.root, self.me, self.holder, self.own.token, self.held, 600.0)

  def create_shared(self):
    cid = self.rng.choice(SHARED)
    if cid in self.out["wins"] or cid in self.out["losses"]:
      return
    self.held.add(cid)
    self.publish()  # named before it is written: see mtsys.system.gc
    cdir = f"{self.root}/components/{cid}"
    os.makedirs(cdir, exist_ok=True)
    data = _npz(self.i)
    weights = f"weights.{self.me}.npz"
    with open(f"{cdir}/{weights}", "wb") as f:
      f.write(data)
    spec = mtsys_pb2.ComponentSpec(id=cid, kind="residual_adapter", created_by_task=self.me,
                                   weights_file=weights,
                                   weights_sha256=hashlib.sha256(data).hexdigest())
    try:
      fileio.create_exclusive(f"{cdir}/MANIFEST.pb", records.frame(spec.SerializeToString()))
      self.out["wins"].append(cid)
    except fileio.AlreadyExists:
      self.out["losses"].append(cid)
      os.unlink(f"{cdir}/{weights}")
      self.held.discard(cid)

  def create_private(self):
    cid = f"stress.{self.me}.{len(self.private)}"
    self.held.add(cid)
    self.publish()
    self.store.write_component(
        mtsys_pb2.ComponentSpec(id=cid, kind="residual_adapter", created_by_task=self.me),
        [np.full(3, len(self.private), np.float32)])
    self.private.append(cid)

  def commit(self):
    task = self.rng.choice(TASKS)
    try:
      lease = leases.acquire(self.root, task, self.holder, self.rng.uniform(0.03, 0.15),
                             max_clock_skew_s=SKEW)
    except leases.LeaseHeld:
      self.count("lease_held")
      return
    chosen = self.rng.sample(self.private[-4:], min(2, len(self.private)))
    other = fenced_paths.read_path(self.store, self.rng.choice(TASKS))
    if other is not None and other.component_ids:
      chosen.append(self.rng.choice(list(other.component_ids)))  # another racer's, maybe
    self.held |= set(chosen)
    self.publish()
    bad = gc.unusable(self.store, chosen)
    if bad:  # collected meanwhile: sample again (here: give up this commit)
      self.held -= set(bad)
      self.count("unusable")
      return
    for _ in range(self.rng.randint(1, 3)):
      path = mtsys_pb2.PathSpec(id=f"{self.me}.{len(self.out['commits'])}", task=task,
                                component_ids=chosen)
      try:
        if self.rng.random() < 0.5:
          lease = leases.renew(lease)
        token, seq = fenced_paths.commit_path(self.store, path, lease)
        self.out["commits"].append([task, token, seq, path.id])
      except leases.LeaseLost:
        self.count("lease_lost")
        break
      time.sleep(self.rng.uniform(0, 0.05))
    if self.rng.random() < 0.5:  # the path protects them now
      self.held -= set(chosen) - set(self.out["wins"])
      self.publish()
    if self.rng.random() < 0.7:
      leases.release(lease)
    else:
      self.count("walked_away")  # the next holder waits out expiry + skew

  def collect(self):
    try:
      report = gc.collect(self.root, max_clock_skew_s=SKEW, log=lambda line: None,
                          only_created_by=self.me if self.rng.random() < 0.3 else None)
    except gc.GcBusy:
      self.count("gc_busy")
      return
    self.count("gc_runs")
    self.out["deleted"] += report.deleted

  def drop(self):
    mine = [c for c in self.held if c.startswith(f"stress.{self.me}.")]
    for cid in self.rng.sample(mine, len(mine) // 2):
      self.held.discard(cid)
    self.publish()

  def run(self):
    ops = [(self.create_shared, 3), (self.create_private, 2), (self.commit, 3),
           (self.collect, 2), (self.drop, 1)]
    while time.time() < self.start_at:
      time.sleep(0.001)
    end_at = self.start_at + SECONDS
    for _ in range(MAX_OPS):
      if time.time() > end_at:
        break
      op = self.rng.choices([o for o, _ in ops], [w for _, w in ops])[0]
      op()
      self.count(op.__name__)
    self.publish()  # the final record names exactly what it holds
    self.out["held"] = sorted(self.held)
    return self.out


def _race(root, index, start_at, result):
  try:
    out = _Racer(root, index, start_at).run()
  except BaseException:  # pylint: disable=broad-except
    out = {"error": traceback.format_exc()}
  with open(result, "w") as f:
    json.dump(out, f)


def test_racing_processes_keep_every_invariant(tmp_path):
  root = str(tmp_path / "system")
  mstore.Store.create(root, loader.parse(_CONFIG).proto)
  start = time.time()
  start_at = start + 0.5
  context = multiprocessing.get_context("fork")  # TensorFlow is imported once, here
  procs = [context.Process(target=_race, args=(root, i, start_at, str(tmp_path / f"r{i}.json")))
           for i in range(RACERS)]
  for p in procs:
    p.start()
  for p in procs:
    p.join(60)
    assert p.exitcode == 0
  outs = []
  for i in range(RACERS):
    with open(tmp_path / f"r{i}.json") as f:
      outs.append(json.load(f))
    assert "error" not in outs[-1], outs[-1].get("error")
  seconds = time.time() - start
  store = mstore.Store.open(root)

  # Every create had exactly one winner, and the manifest is the winner's.
  attempted = {c for o in outs for c in o["wins"] + o["losses"]}
  for cid in attempted:
    winners = [i for i, o in enumerate(outs) if cid in o["wins"]]
    assert len(winners) == 1, (cid, winners)
    assert store.read_component_spec(cid).weights_file == f"weights.r{winners[0]}.npz"
    assert cid not in {d for o in outs for d in o["deleted"]}

  # Each task's path is its highest token's last commit; the mirror says the same.
  commits = [c for o in outs for c in o["commits"]]
  for task in TASKS:
    mine = sorted((token, seq, pid) for t, token, seq, pid in commits if t == task)
    if not mine:
      continue
    assert fenced_paths.highest(root, task) == mine[-1][:2]
    assert fenced_paths.read_path(store, task).id == mine[-1][2] == store.read_path(task).id
    assert leases.current(root, task).token >= mine[-1][0]

  # Every path's components exist and verify (mirrors and highest commits).
  verified = 0
  for task in TASKS:
    for path in (store.read_path(task), fenced_paths.read_path(store, task)):
      for cid in (path.component_ids if path is not None else ()):
        store.read_weights(store.read_component_spec(cid))
        verified += 1

  # No component a live in-flight record names was deleted.
  final_records = inflight.read_all(root)
  assert len(final_records) == RACERS
  now = time.time()
  named = {c for r in final_records if inflight.is_live(r, now, SKEW) for c in r.component_ids}
  assert named == {c for o in outs for c in o["held"]}
  assert all(store.has_component(c) for c in named)
  assert not named & {d for o in outs for d in o["deleted"]}
  # A last collection after the race deletes nothing that a path or a record uses.
  final = gc.collect(root, max_clock_skew_s=SKEW, log=lambda line: None)
  assert not (named | {c for task in TASKS for p in (store.read_path(task),) if p
                       for c in p.component_ids}) & set(final.deleted)
  assert not [d for d in os.listdir(f"{root}/components")
              if os.path.exists(gc.tombstone_path(root, d))]

  # The race was real: contention on every kind of key, within the bounds.
  stats = {}
  for o in outs:
    for k, v in o["stats"].items():
      stats[k] = stats.get(k, 0) + v
  print(f"\nstress: {seconds:.1f} s, {len(attempted)} shared creates, {len(commits)} commits, "
        f"{sum(len(o['deleted']) for o in outs)} deleted, {verified} path components verified, "
        f"{stats}")
  assert len(attempted) >= 8 and sum(len(o["losses"]) for o in outs) > 0
  assert len(commits) >= 10 and len({pid for *_, pid in commits}) == len(commits)
  assert stats.get("lease_held", 0) > 0 and stats.get("gc_runs", 0) >= 3
  assert sum(len(o["deleted"]) for o in outs) > 0 and verified > 0
  assert seconds < 30
