"""The agent launcher (issue #12, item 2) against a tiny fake agent: pinning and flags per agent,
restarts with their reason, exit status 2 never retried, SIGTERM (and a killed launcher) leave no
agent behind, the progress display read from the store, and the cluster manifests rendered and
resolved per index (the Slurm script is also run by bash, with the fake agent)."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import yaml

from mtsys import errors
from mtsys.config import loader
from mtsys.jobs import agent_supervisor
from mtsys.jobs import launch_agents
from mtsys.protos import mtsys_pb2
from mtsys.system import store as mstore

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CONFIG_FILE = os.path.join(_REPO, "mtsys", "config", "chars-lite.textproto")

# argv: RECORD_DIR BEHAVIOUR AGENT_FLAGS... Records what it was started with, then behaves.
_FAKE_AGENT = r"""
import json, os, signal, sys, time
record_dir, behaviour, *argv = sys.argv[1:]
flags = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
if "task" in flags:
  task = flags["task"]
else:
  sys.path.insert(0, REPO)
  from mtsys.jobs import launch_agents
  task = launch_agents.task_for_index(flags["tasks"].split(","), os.environ,
                                      flags["task_index_env"])
stem = task.replace("/", "~")
record = os.path.join(record_dir, f"{stem}.{os.getpid()}.json")
with open(record + ".tmp", "w") as f:
  json.dump({"task": task, "argv": argv, "pid": os.getpid(),
             "cpus": sorted(os.sched_getaffinity(0)),
             "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}, f)
os.rename(record + ".tmp", record)
kind, _, arg = behaviour.partition(":")
marker = os.path.join(record_dir, stem + ".crashed")
if kind == "crash_once" and not os.path.exists(marker):
  open(marker, "w").close()
  print(f"boom-{task}", flush=True)
  if arg == "SIGKILL":
    os.kill(os.getpid(), signal.SIGKILL)
  sys.exit(int(arg))
if kind == "crash":
  print(f"boom-{task}", flush=True)
  sys.exit(1)
if kind == "bad":
  print(f"Error: bad input for {task}", flush=True)
  sys.exit(2)
if kind == "stubborn":
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
while kind in ("hang", "stubborn"):
  time.sleep(1)
if kind == "sleep":
  time.sleep(float(arg))
print(f"done-{task}", flush=True)
""".replace("REPO", repr(_REPO))


@pytest.fixture(scope="module")
def config():
  return loader.load("chars-lite")


@pytest.fixture
def fake(tmp_path):
  """(argv builder for behaviours by task, record dir)."""
  script = tmp_path / "fake_agent.py"
  script.write_text(_FAKE_AGENT)
  records = tmp_path / "records"
  records.mkdir()

  def builder(behaviours):
    return lambda task, flags: [sys.executable, str(script), str(records),
                                behaviours.get(task, "ok"), *flags]
  return builder, records


def _records(directory):
  return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


def _options(tmp_path, **kwargs):
  values = dict(config="chars-lite", system_dir=str(tmp_path / "system"),
                log_dir=str(tmp_path / "logs"), refresh_s=60.0, restart_delay_s=0.0,
                stop_grace_s=5.0)
  values.update(kwargs)
  return launch_agents.Options(**values)


def _flags(argv):
  return dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)


def test_plan_splits_cores_contiguously_and_wraps_when_agents_outnumber_them():
  slots = launch_agents.plan(["a", "b", "c"], [6, 0, 1, 2, 3, 4, 5], ["0", "1", "2", "3"])
  assert [s.cpus for s in slots] == [(0, 1, 2), (3, 4), (5, 6)]
  assert [s.gpus for s in slots] == [("0", "1"), ("2",), ("3",)]
  wrapped = launch_agents.plan(["a", "b", "c"], [0, 1], ["7"])
  assert [s.cpus for s in wrapped] == [(0,), (1,), (0,)]
  assert [s.gpus for s in wrapped] == [("7",), ("7",), ("7",)]
  assert [s.gpus for s in launch_agents.plan(["a"], [0])] == [()]


def test_agents_are_pinned_get_their_flags_gpus_and_a_log_per_task(tmp_path, fake):
  if len(os.sched_getaffinity(0)) < 2:
    pytest.skip("needs 2 cores")
  cores = sorted(os.sched_getaffinity(0))[:2]
  text = open(_CONFIG_FILE).read().replace('name: "digits"', 'name: "hand/digits"')
  config = loader.parse(text, _CONFIG_FILE)  # a task name with "/": its log is hand~digits.log
  tasks = ["hand/digits", "latin_upper", "greek"]
  builder, records = fake
  options = _options(tmp_path, tasks=tasks, mode="async", task_iterations=2,
                     barrier_timeout_s=5, gpus=["0", "1", "2", "3"])
  lines = []
  code = launch_agents.run(config, options, out=lines.append, agent_argv=builder({}),
                           cpus=cores)
  assert code == 0, lines
  by_task = {r["task"]: r for r in _records(records)}
  assert sorted(by_task) == sorted(tasks)
  expected = {"hand/digits": ([cores[0]], "0,1"), "latin_upper": ([cores[1]], "2"),
              "greek": ([cores[0]], "3")}
  for task, (cpus, cuda) in expected.items():
    record = by_task[task]
    assert (record["cpus"], record["cuda"]) == (cpus, cuda), task
    assert _flags(record["argv"]) == {
        "config": "chars-lite", "system_dir": options.system_dir, "task": task,
        "mode": "async", "task_iterations": "2", "barrier_timeout_s": "5",
        "intra_op_threads": "1", "inter_op_threads": "1"}
  logs = sorted(os.listdir(options.log_dir))
  assert logs == ["greek.log", "hand~digits.log", "latin_upper.log"]
  assert "done-hand/digits" in (tmp_path / "logs" / "hand~digits.log").read_text()
  assert any(line.startswith("3 agents: 3 done, 0 failed") for line in lines), lines


def test_a_crashed_agent_is_restarted_with_the_reason_logged(tmp_path, fake, config):
  builder, records = fake
  options = _options(tmp_path, tasks=["digits", "greek"], max_restarts=3)
  lines = []
  code = launch_agents.run(config, options, out=lines.append, agent_argv=builder(
      {"digits": "crash_once:SIGKILL", "greek": "crash_once:1"}), cpus=[0])
  assert code == 0, lines
  text = "\n".join(lines)
  assert "Agent 'digits' (pid" in text
  assert "died: killed by SIGKILL; restarting it (1/3) in 0 s. Last lines of" in text
  assert "died: exit code 1; restarting it (1/3)" in text
  assert "| boom-digits" in text and "| boom-greek" in text
  runs = [r["task"] for r in _records(records)]
  assert sorted(runs) == ["digits", "digits", "greek", "greek"]
  summary = lines[lines.index(next(l for l in lines if l.startswith("Summary"))):]
  assert [l.split()[0] for l in summary[2:4]] == ["digits", "greek"]
  assert all(l.split()[-2:] == ["done", "1"] for l in summary[2:4]), summary


def test_exit_status_2_fails_at_once_and_restarts_are_bounded(tmp_path, fake, config):
  builder, records = fake
  options = _options(tmp_path, tasks=["digits", "greek", "latin_upper"], max_restarts=1)
  lines = []
  code = launch_agents.run(config, options, out=lines.append, agent_argv=builder(
      {"digits": "bad", "greek": "crash"}), cpus=[0])
  assert code == 1
  text = "\n".join(lines)
  assert ("Agent 'digits' (pid" in text
          and "failed: bad input (exit code 2), not retried. Last lines of" in text)
  assert "| Error: bad input for digits" in text
  assert "failed: exit code 1 after 1 restarts" in text
  runs = sorted(r["task"] for r in _records(records))
  assert runs == ["digits", "greek", "greek", "latin_upper"]  # 2 not retried, 1 retried once
  assert "3 agents: 1 done, 2 failed ['digits', 'greek']" in text


def test_display_shows_progress_from_the_store_and_starting_without_a_state(tmp_path, fake,
                                                                           config):
  system_dir = str(tmp_path / "system")
  store = mstore.Store.create(system_dir, config.proto)
  state = mtsys_pb2.EvolutionState(task="digits", generations_done=1)
  state.iterations_done["digits"] = 1
  state.population.add(task="digits", score=0.5)
  state.population.add(task="digits", score=0.75)
  store.write_evolution_state(state, task="digits")
  builder, _ = fake
  options = _options(tmp_path, tasks=["digits", "greek"], task_iterations=3, refresh_s=0.3)
  lines = []
  code = launch_agents.run(config, options, out=lines.append,
                           agent_argv=builder({"digits": "sleep:2", "greek": "sleep:2"}),
                           cpus=[0])
  assert code == 0
  blocks = [i for i, line in enumerate(lines) if line.startswith("Agents after")]
  assert blocks, lines
  header, digits, greek = (lines[blocks[0] + k].split() for k in (1, 2, 3))
  assert header == ["task", "iteration", "generation", "best", "status", "restarts"]
  assert digits == ["digits", "2/3", "1/2", "0.750", "running", "0"]
  assert greek == ["greek", "-", "-", "-", "starting", "0"]


def test_progress_before_the_store_exists_is_starting(tmp_path):
  assert agent_supervisor.read_progress(str(tmp_path / "none"), ["digits"]) == {}
  assert agent_supervisor.progress_cells(None, "digits", 3, 2) == ("-", "-", "-")
  between = mtsys_pb2.EvolutionState()
  between.iterations_done["digits"] = 1
  assert agent_supervisor.progress_cells((between, 0.625), "digits", 3, 2) == ("1/3", "-", "0.625")


_DRIVER = r"""
import sys
sys.path.insert(0, REPO)
from mtsys.config import loader
from mtsys.jobs import launch_agents
fake, records, system_dir, log_dir = sys.argv[1:]
config = loader.parse(open(CONFIG).read(), CONFIG)
behaviours = {"digits": "hang", "greek": "stubborn"}
options = launch_agents.Options(config="chars-lite", system_dir=system_dir, log_dir=log_dir,
                                tasks=["digits", "greek"], refresh_s=600, stop_grace_s=1)
sys.exit(launch_agents.run(config, options, agent_argv=lambda task, flags: [
    sys.executable, fake, records, behaviours[task], *flags]))
""".replace("REPO", repr(_REPO)).replace("CONFIG", repr(_CONFIG_FILE))


def _alive(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
  except FileNotFoundError:
    return False


def _start_launcher(tmp_path, fake):
  _, records = fake
  driver = tmp_path / "driver.py"
  driver.write_text(_DRIVER)
  proc = subprocess.Popen([sys.executable, str(driver), str(tmp_path / "fake_agent.py"),
                           str(records), str(tmp_path / "system"), str(tmp_path / "logs")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.monotonic() + 30
  while len(_records(records)) < 2 and time.monotonic() < deadline and proc.poll() is None:
    time.sleep(0.05)
  pids = [r["pid"] for r in _records(records)]
  assert len(pids) == 2 and all(_alive(p) for p in pids), proc.poll()
  return proc, pids


def _wait_gone(pids, seconds):
  deadline = time.monotonic() + seconds
  while any(_alive(p) for p in pids) and time.monotonic() < deadline:
    time.sleep(0.05)
  return [p for p in pids if _alive(p)]


def test_sigterm_stops_every_agent_within_the_grace_period(tmp_path, fake):
  proc, pids = _start_launcher(tmp_path, fake)
  started = time.monotonic()
  proc.send_signal(signal.SIGTERM)
  output, _ = proc.communicate(timeout=60)
  assert proc.returncode == 128 + signal.SIGTERM, output
  assert time.monotonic() - started < 30
  assert _wait_gone(pids, 5) == []
  assert "Stopping 2 agents: SIGTERM, then SIGKILL after 1 s." in output
  assert "2 agents: 0 done, 0 failed" in output


def test_a_killed_launcher_leaves_no_orphans(tmp_path, fake):
  proc, pids = _start_launcher(tmp_path, fake)
  proc.kill()
  proc.wait()
  # PR_SET_PDEATHSIG sent SIGTERM: the plain agent goes, the one ignoring SIGTERM cannot.
  hang, stubborn = sorted(_records(fake[1]), key=lambda r: r["task"])
  assert _wait_gone([hang["pid"]], 10) == []
  os.kill(stubborn["pid"], signal.SIGKILL)
  assert _wait_gone(pids, 10) == []


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(tasks=["digits", "nope"]), errors.UnknownTaskError,
     "Unknown task 'nope' in --tasks; expected tasks of config 'chars-lite': ['digits', "),
    (dict(tasks=["digits", "digits"]), launch_agents.LaunchError,
     "Task 'digits' is listed twice in --tasks=digits,digits"),
    (dict(emit="helm"), launch_agents.LaunchError,
     "Unknown --emit value 'helm'; expected one of ['k8s', 'slurm']"),
    (dict(emit="k8s", system_dir="gs://b/s"), launch_agents.LaunchError,
     "--emit=k8s needs --image: expected the container image"),
    (dict(emit="k8s", image="i", system_dir="LOCAL"), launch_agents.LaunchError,
     "--system_dir=LOCAL is not a gs:// directory; --emit=k8s expected one"),
    (dict(emit="slurm", system_dir="relative/sys"), launch_agents.LaunchError,
     "--system_dir=relative/sys is not a gs:// directory; --emit=slurm expected one "
     "(gs://BUCKET/PATH, or for Slurm an absolute path on a filesystem every node shares)"),
    (dict(emit="k8s", image="i", system_dir="gs://b/s", config=_CONFIG_FILE),
     launch_agents.LaunchError, f"--config={_CONFIG_FILE} is a local file, which the pods"),
    (dict(image="i"), launch_agents.LaunchError, "--image=i only applies with --emit"),
    (dict(max_restarts=-1), launch_agents.LaunchError,
     "Invalid --max_restarts=-1; expected 0 or more."),
    (dict(gpus=["0", "0"]), launch_agents.LaunchError, "Invalid --gpus=0,0; expected distinct"),
    (dict(emit="k8s", image="i", system_dir="gs://b/s", job_name="Bad_Name"),
     launch_agents.LaunchError, "Invalid --job_name 'Bad_Name'"),
    (dict(emit="k8s", image="i", system_dir="gs://b/s", root_checkpoint="roots/vit"),
     launch_agents.LaunchError,
     "--root_checkpoint=roots/vit is a local path, which the pods cannot read; expected a gs://"),
])
def test_bad_input_names_the_value_before_anything_starts(tmp_path, fake, config, kwargs,
                                                          error, message):
  builder, records = fake
  if kwargs.get("system_dir") == "LOCAL":
    kwargs["system_dir"] = str(tmp_path / "system")
    message = message.replace("LOCAL", kwargs["system_dir"])
  options = _options(tmp_path, **kwargs)
  with pytest.raises(error) as raised:
    launch_agents.run(config, options, agent_argv=builder({}), cpus=[0])
  assert message in str(raised.value)
  assert not os.path.exists(options.log_dir) and _records(records) == []


def test_the_root_checkpoint_reaches_every_agent_as_an_absolute_or_remote_path(tmp_path, fake,
                                                                               config):
  builder, records = fake
  options = _options(tmp_path, tasks=["digits", "greek"], root_checkpoint="roots/vit")
  assert launch_agents.run(config, options, out=lambda line: None, agent_argv=builder({}),
                           cpus=[0]) == 0
  seen = [_flags(r["argv"])["root_checkpoint"] for r in _records(records)]
  assert seen == [os.path.abspath("roots/vit")] * 2
  path = tmp_path / "agents.yaml"
  options = _options(tmp_path, tasks=_TASKS, emit="k8s", image="i", system_dir="gs://b/s",
                     emit_output=str(path), root_checkpoint="gs://b/roots/vit")
  assert launch_agents.run(config, options, out=lambda line: None) == 0
  (container,) = yaml.safe_load(path.read_text())["spec"]["template"]["spec"]["containers"]
  assert _flags(container["command"])["root_checkpoint"] == "gs://b/roots/vit"


def test_task_for_index_resolves_and_names_a_bad_index():
  tasks = ["a", "b", "c"]
  assert [launch_agents.task_for_index(tasks, {"I": str(i)}, "I") for i in range(3)] == tasks
  for environ, message in [({}, "Environment variable I is not set; expected an index into "
                                "--tasks, 0-2 (3 tasks)"),
                           ({"I": "x"}, "Environment variable I='x' is not an integer"),
                           ({"I": "3"}, "Environment variable I=3 is out of range")]:
    with pytest.raises(launch_agents.LaunchError) as raised:
      launch_agents.task_for_index(tasks, environ, "I")
    assert message in str(raised.value)


_TASKS = ["digits", "latin_upper", "greek"]


def test_kubernetes_indexed_job_runs_task_i_at_completion_index_i(tmp_path, config):
  path = tmp_path / "agents.yaml"
  options = _options(tmp_path, tasks=_TASKS, emit="k8s", image="gcr.io/p/mtsys:1",
                     system_dir="gs://bucket/sys", emit_output=str(path), cpus_per_agent=2,
                     mode="sync", max_restarts=4)
  lines = []
  assert launch_agents.run(config, options, out=lines.append) == 0
  assert lines == [f"Wrote {path}; Start: kubectl apply -f {path}  (Kubernetes >= 1.29)"]
  job = yaml.safe_load(path.read_text())
  assert (job["apiVersion"], job["kind"], job["metadata"]["name"]) == (
      "batch/v1", "Job", "mtsys-chars-lite")
  spec = job["spec"]
  assert (spec["completionMode"], spec["completions"], spec["parallelism"],
          spec["backoffLimitPerIndex"]) == ("Indexed", 3, 3, 4)
  assert spec["podFailurePolicy"]["rules"] == [{"action": "FailIndex", "onExitCodes": {
      "containerName": "agent", "operator": "In", "values": [2]}}]
  pod = spec["template"]["spec"]
  assert pod["restartPolicy"] == "Never"
  (container,) = pod["containers"]
  assert container["image"] == "gcr.io/p/mtsys:1"
  assert container["resources"]["limits"] == {"cpu": "2"}
  command = container["command"]
  assert command[:2] == ["python", "bin/agent.py"]
  flags = _flags(command)
  assert flags == {"config": "chars-lite", "system_dir": "gs://bucket/sys",
                   "tasks": "digits,latin_upper,greek",
                   "task_index_env": "JOB_COMPLETION_INDEX", "mode": "sync",
                   "intra_op_threads": "2", "inter_op_threads": "1"}
  resolved = [launch_agents.task_for_index(flags["tasks"].split(","),
                                           {"JOB_COMPLETION_INDEX": str(i)},
                                           flags["task_index_env"])
              for i in range(spec["completions"])]
  assert resolved == _TASKS


def _slurm(tmp_path, loaded, fake_command=None, **kwargs):
  options = _options(tmp_path, tasks=_TASKS, emit="slurm", system_dir="gs://bucket/sys",
                     cpus_per_agent=2, max_restarts=2, agent_command=fake_command, **kwargs)
  lines = []
  assert launch_agents.run(loaded, options, out=lines.append) == 0
  return "\n".join(lines) + "\n"


def test_slurm_array_script_runs_task_i_at_array_index_i(tmp_path, config):
  script = _slurm(tmp_path, config, config=_CONFIG_FILE)
  sbatch = dict(line[len("#SBATCH "):].split("=", 1) for line in script.splitlines()
                if line.startswith("#SBATCH "))
  assert sbatch == {"--job-name": "mtsys-chars-lite", "--array": "0-2", "--ntasks": "1",
                    "--cpus-per-task": "2", "--output": f"{tmp_path}/logs/%x-%a.log"}
  (command,) = [shlex.split(line) for line in script.splitlines() if "agent.py" in line]
  assert command[:2] == [sys.executable, launch_agents.AGENT_PROGRAM]
  flags = _flags(command)
  assert (flags["config"], flags["task_index_env"]) == (_CONFIG_FILE, "SLURM_ARRAY_TASK_ID")
  first, last = map(int, sbatch["--array"].split("-"))
  resolved = [launch_agents.task_for_index(flags["tasks"].split(","),
                                           {"SLURM_ARRAY_TASK_ID": str(i)},
                                           flags["task_index_env"])
              for i in range(first, last + 1)]
  assert resolved == _TASKS
  assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


@pytest.mark.parametrize("behaviour, status, runs", [
    ("ok", 0, 1), ("crash_once:1", 0, 2), ("bad", 2, 1), ("crash", 1, 3)])
def test_slurm_script_retries_crashes_but_not_bad_input(tmp_path, fake, config, behaviour,
                                                        status, runs):
  _, records = fake
  fake_command = shlex.join([sys.executable, str(tmp_path / "fake_agent.py"), str(records),
                             behaviour])
  script = _slurm(tmp_path, config, fake_command, restart_delay_s=0)
  done = subprocess.run(["bash", "-s"], input=script, text=True, capture_output=True,
                        env=dict(os.environ, SLURM_ARRAY_TASK_ID="1"), timeout=60)
  assert done.returncode == status, done.stderr
  assert [r["task"] for r in _records(records)] == ["latin_upper"] * runs
