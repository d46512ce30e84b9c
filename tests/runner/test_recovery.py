"""Recovery that loses no more than it must, through the real entry
point in subprocesses: a lost or garbled checkpoint state file, a truncated
newest checkpoint, two runs on one model_dir, SIGTERM / SIGINT, a full disk,
and settings refused up front.

Every run is the smoke config of helpers.REFERENCE_BINDINGS (2 epochs of
37 steps, a checkpoint every 5 steps, 3 kept); a run that was interrupted
and rerun with the same command must end equal to the uninterrupted one,
conftest.py's `smoke_reference`.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from mwn_tf.runner import exit_codes
from mwn_tf.runner import run_dir
from mwn_tf.runner.settings import ConfigError
import helpers as resume
from helpers import error_lines
import killed_runs

BINDINGS, STEPS = resume.REFERENCE_BINDINGS, resume.REFERENCE_STEPS

# `python -c FILL_DISK <mwn_tf.main flags>` with MWN_FULL_AFTER=ckpt-<n>: once
# checkpoint <n> is saved, files may no longer grow beyond 1000 bytes (a
# file-size rlimit: writes fail with EFBIG, as ENOSPC on a full disk, and
# needs neither root nor a mount; SIGXFSZ is ignored so the write returns
# the error instead of killing the process).
FILL_DISK = r'''
import os, resource, signal, sys
import tensorflow as tf
target = os.environ["MWN_FULL_AFTER"]
real = tf.train.CheckpointManager.save


def save(self, *args, **kwargs):
  path = real(self, *args, **kwargs)
  if path and path.endswith("/" + target):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
    print(f"DISK FULL after {path}", file=sys.stderr, flush=True)
  return path


tf.train.CheckpointManager.save = save
sys.argv = ["mwn_tf.main"] + sys.argv[1:]
from mwn_tf import main
main.run()
'''


# `python -c PAUSE <mwn_tf.main flags>` with MWN_PAUSE="ckpt-<n>@<file>":
# after saving checkpoint <n> the run waits (holding model_dir) until <file>
# exists, so a second command surely meets a live first run.
PAUSE = r'''
import os, sys, time
import tensorflow as tf
target, go = os.environ["MWN_PAUSE"].split("@", 1)
real = tf.train.CheckpointManager.save


def save(self, *args, **kwargs):
  path = real(self, *args, **kwargs)
  if path and path.endswith("/" + target):
    print(f"PAUSED after {path}", file=sys.stderr, flush=True)
    deadline = time.time() + 600
    while not os.path.exists(go) and time.time() < deadline:
      time.sleep(0.05)
  return path


tf.train.CheckpointManager.save = save
sys.argv = ["mwn_tf.main"] + sys.argv[1:]
from mwn_tf import main
main.run()
'''


# `python -c HOLD <mwn_tf.main flags>`: once a signal has been served (the
# checkpoint written), the run holds for a minute before it would exit 3, so
# a second signal surely finds it still running.
HOLD = r'''
import sys, time
from mwn_tf.runner import stopping
real = stopping.Stopped.__init__


def init(self, *args, **kwargs):
  print("HOLDING before exit", file=sys.stderr, flush=True)
  time.sleep(60)
  real(self, *args, **kwargs)


stopping.Stopped.__init__ = init
sys.argv = ["mwn_tf.main"] + sys.argv[1:]
from mwn_tf import main
main.run()
'''


# `python -c SELF_TERM <mwn_tf.main flags>`: the run sends itself SIGTERM
# once its first checkpoint is saved (as a preempting scheduler would).
SELF_TERM = r'''
import os, signal, sys
import tensorflow as tf
real = tf.train.CheckpointManager.save


def save(self, *args, **kwargs):
  path = real(self, *args, **kwargs)
  os.kill(os.getpid(), signal.SIGTERM)
  return path


tf.train.CheckpointManager.save = save
sys.argv = ["mwn_tf.main"] + sys.argv[1:]
from mwn_tf import main
main.run()
'''


def run_main(model_dir, bindings=BINDINGS, extra=(), prefix=None, env=None):
  """Runs the entry point to its end; returns the CompletedProcess."""
  cmd = (prefix or [sys.executable, "-m", "mwn_tf.main"]) + resume.flags(
      model_dir, bindings) + list(extra)
  return subprocess.run(cmd, cwd=resume.REPO, env=env or resume.ENV,
                        capture_output=True, text=True, timeout=600)


def one_error_line(stderr):
  assert "Traceback" not in stderr, stderr[-3000:]
  (line,) = error_lines(stderr)
  return line


def pid_alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  return True


@pytest.fixture(scope="module")
def killed_at_52(tmp_path_factory):
  """A run SIGKILLed right after saving ckpt-52 (mid-epoch 2), with
  ckpt-42, ckpt-47 and ckpt-52 kept. Tests work on copies."""
  model_dir = tmp_path_factory.mktemp("killed") / "run"
  killed_runs.killed_run(model_dir, "saved@ckpt-52")
  assert killed_runs.recorded(model_dir) == ["ckpt-42", "ckpt-47", "ckpt-52"]
  return model_dir


def copy_of(model_dir, tmp_path):
  shutil.copytree(model_dir, tmp_path / "run")
  return tmp_path / "run"


# ----------------------------------------------------------------------------
# 1. The state file is a hint: lost, garbled, or naming a damaged checkpoint.
# ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing", "garbage", "empty"])
def test_lost_or_garbled_state_file_resumes_from_the_newest_checkpoint(
    tmp_path, killed_at_52, smoke_reference, damage):
  run = copy_of(killed_at_52, tmp_path)
  state = run / "checkpoints" / "checkpoint"
  if damage == "missing":
    state.unlink()
  else:
    state.write_text("model_checkpoint_path: ckpt-\x00\x01 garbage\n"
                     if damage == "garbage" else "")
  # The killed holder's lock file stays, naming it, but its lock died with
  # it: the rerun is not refused.
  holder = int(re.search(r"PID (\d+)", (run / ".lock").read_text())[1])
  assert not pid_alive(holder)

  proc = run_main(run)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"Resuming from {run / 'checkpoints' / 'ckpt-52'}: " in proc.stderr
  assert "Removing" not in proc.stderr and "Cannot restore" not in proc.stderr
  assert "Rewrote" in proc.stderr
  ref_dir, ref_results = smoke_reference
  resume.assert_matches_reference(run, ref_dir, ref_results)
  killed_runs.assert_nothing_left_over(run)


@pytest.mark.slow
def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(
    tmp_path, killed_at_52, smoke_reference):
  run = copy_of(killed_at_52, tmp_path)
  ckpts = run / "checkpoints"
  os.truncate(ckpts / "ckpt-52.data-00000-of-00001", 1000)

  proc = run_main(run)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # The skip is said, with the reason, and the older one is used.
  assert re.search(rf"Cannot restore {re.escape(str(ckpts / 'ckpt-52'))} "
                   r"\(IndexError: Read less bytes than requested\)",
                   proc.stderr), proc.stderr[-3000:]
  assert "skipped the newer ckpt-52" in proc.stderr
  assert f"Resuming from {ckpts / 'ckpt-47'}: " in proc.stderr
  ref_dir, ref_results = smoke_reference
  resume.assert_matches_reference(run, ref_dir, ref_results)
  # The damaged files are left as they were, for the user to look at; the
  # resumed run saved steps 50, 55, ... and never reads them again.
  assert os.path.getsize(ckpts / "ckpt-52.data-00000-of-00001") == 1000
  left = {re.sub(r"\.(index|data-.*)$", "", n) for n in os.listdir(ckpts)
          if n.startswith("ckpt-")}
  assert left == set(killed_runs.recorded(run)) | {"ckpt-52"}


def test_unrecorded_complete_checkpoint_and_garbage_are_handled(tmp_path):
  """In-process, without training: restore prefers the newest complete
  checkpoint even if the state file does not name it, skips a damaged
  newer one, rewrites the state file so the manager rotates all of them,
  and deletes none."""
  directory = tmp_path / "checkpoints"
  variable = tf.Variable(0.0)
  checkpoint = tf.train.Checkpoint(v=variable)
  manager = tf.train.CheckpointManager(checkpoint, str(directory), 3)
  for step in (1, 2, 3):
    variable.assign(float(step))
    manager.save(checkpoint_number=step)
  # ckpt-3 complete but not recorded; ckpt-4 an index with no data.
  tf.compat.v1.train.update_checkpoint_state(
      str(directory), str(directory / "ckpt-2"),
      [str(directory / "ckpt-1"), str(directory / "ckpt-2")])
  (directory / "ckpt-4.index").write_bytes(
      (directory / "ckpt-3.index").read_bytes())
  files = set(os.listdir(directory))
  variable.assign(-1.0)
  manager, restored = run_dir_restore(checkpoint, tmp_path)
  assert restored == str(directory / "ckpt-3") and variable.numpy() == 3.0
  assert set(os.listdir(directory)) == files
  assert [os.path.basename(p) for p in manager.checkpoints] == [
      "ckpt-1", "ckpt-2", "ckpt-3"]
  manager.save(checkpoint_number=5)  # rotates ckpt-1 out, as it should
  assert not (directory / "ckpt-1.index").exists()
  assert (directory / "ckpt-2.index").exists()


def run_dir_restore(checkpoint, model_dir):
  from mwn_tf.runner import checkpointing  # pylint: disable=g-import-not-at-top
  directory = run_dir.checkpoint_dir(str(model_dir))
  return checkpointing.restore(checkpoint, str(model_dir), directory, 3)


# ----------------------------------------------------------------------------
# 2. One run per model_dir.
# ----------------------------------------------------------------------------
def test_the_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
  with run_dir.lock(str(tmp_path)):
    text = (tmp_path / run_dir.LOCK).read_text()
    assert re.fullmatch(rf"host \S+, PID {os.getpid()}, since \d{{4}}-\d\d-"
                        r"\d\d \d\d:\d\d:\d\d UTC\n", text)
    with pytest.raises(ConfigError) as error:
      with run_dir.lock(str(tmp_path)):
        pass
    assert f"in use by another run (host" in str(error.value)
    assert f"PID {os.getpid()}" in str(error.value)
    assert "another --model_dir" in str(error.value)
    with run_dir.lock(str(tmp_path), take=False):  # a non-chief worker
      pass
  with run_dir.lock(str(tmp_path)):  # released at the end of the block
    pass


@pytest.mark.slow
def test_a_second_run_on_the_same_model_dir_exits_2_and_changes_nothing(
    tmp_path, smoke_reference):
  run, go = tmp_path / "run", tmp_path / "go"
  err_path = tmp_path / "first.stderr"
  with open(err_path, "w") as err:
    first = subprocess.Popen(
        [sys.executable, "-c", PAUSE] + resume.flags(run, BINDINGS),
        cwd=resume.REPO, env=dict(resume.ENV, MWN_PAUSE=f"ckpt-10@{go}"),
        stdout=subprocess.DEVNULL, stderr=err)
  try:
    deadline = time.time() + 300
    while "PAUSED after" not in err_path.read_text():
      assert first.poll() is None and time.time() < deadline
      time.sleep(0.05)
    # (The paused run's summary writer may flush on its own timer.)
    files = lambda: {n: None if n.startswith("events.") else (
        run / n).stat().st_mtime_ns for n in os.listdir(run)}
    before = files()
    # Another learning rate, as a user would mix two runs.
    second = run_main(run, BINDINGS + ["train_eval.learning_rate = 0.05"])
    assert first.poll() is None
    assert second.returncode == exit_codes.CONFIG, second.stderr[-3000:]
    line = one_error_line(second.stderr)
    assert f"{run} is in use by another run (host " in line
    assert f"PID {first.pid}, since " in line
    assert "Removing" not in second.stderr
    assert files() == before
  finally:
    go.touch()
  assert first.wait(timeout=600) == 0, err_path.read_text()[-3000:]
  # One run's files only: one events file, and the uninterrupted result.
  events = [n for n in os.listdir(run) if n.endswith(".v2")]
  assert len(events) == 1, events
  ref_dir, ref_results = smoke_reference
  resume.assert_matches_reference(run, ref_dir, ref_results)


# ----------------------------------------------------------------------------
# 3. SIGTERM and SIGINT: finish the step, checkpoint, exit 3; rerun resumes.
# ----------------------------------------------------------------------------
def start_and_signal(model_dir, signum, times=1, prefix=None, extra=(),
                     ack="received: stopping"):
  """Starts the command (after `prefix` instead of `python -m mwn_tf.main`),
  sends `signum` once a checkpoint exists (and again, `times` - 1 more
  times, once `ack` is on stderr); returns (return code, stderr)."""
  err_path = model_dir.parent / f"{model_dir.name}.stderr"
  cmd = (prefix or [sys.executable, "-m", "mwn_tf.main"]) + resume.flags(
      model_dir, BINDINGS) + list(extra)
  with open(err_path, "w") as err:
    proc = subprocess.Popen(cmd, cwd=resume.REPO, env=resume.ENV,
                            stdout=subprocess.DEVNULL, stderr=err)
  state = model_dir / "checkpoints" / "checkpoint"
  deadline = time.time() + 300
  while not state.exists():
    assert proc.poll() is None and time.time() < deadline
    time.sleep(0.02)
  for i in range(times):
    os.kill(proc.pid, signum)
    while i + 1 < times and ack not in err_path.read_text():
      assert proc.poll() is None and time.time() < deadline
      time.sleep(0.01)
  proc.wait(timeout=300)
  return proc.returncode, err_path.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_with_a_checkpoint_and_the_rerun_matches(
    tmp_path, smoke_reference, signum):
  run = tmp_path / "run"
  status, err = start_and_signal(run, signum)
  name = signal.Signals(signum).name
  assert status == exit_codes.STOPPED, err[-3000:]
  assert "Traceback" not in err
  (line,) = [l for l in err.splitlines() if l.startswith("mwn_tf.main:")]
  match = re.fullmatch(rf"mwn_tf.main: stopped by {name} at step (\d+); "
                       r"rerun the same command to resume", line)
  assert match, line
  step = int(match[1])
  assert 0 < step < STEPS
  # The step it stopped at is checkpointed, whether or not it was due.
  assert killed_runs.recorded(run)[-1] == f"ckpt-{step}"
  if (run / "results.json").exists():
    assert not json.loads((run / "results.json").read_text())["finished"]

  log = resume.rerun(run, BINDINGS)
  assert f"Resuming from {run / 'checkpoints' / f'ckpt-{step}'}: " in log
  ref_dir, ref_results = smoke_reference
  resume.assert_matches_reference(run, ref_dir, ref_results)
  killed_runs.assert_nothing_left_over(run)


@pytest.mark.slow
def test_a_stop_ends_with_exactly_the_documented_line(tmp_path):
  run = tmp_path / "run"
  proc = run_main(run, ["train_eval.train_steps = 4",
                        "train_eval.checkpoint_every_n_steps = 1",
                        "train_eval.export = False"],
                  prefix=[sys.executable, "-c", SELF_TERM])
  assert proc.returncode == exit_codes.STOPPED, proc.stderr[-3000:]
  lines = proc.stderr.splitlines()
  received = [i for i, l in enumerate(lines) if "SIGTERM received" in l]
  assert received, proc.stderr[-3000:]
  # After the acknowledgement, one line: no "In call to configurable".
  assert lines[received[0] + 1:] == [
      "mwn_tf.main: stopped by SIGTERM at step 1; rerun the same command "
      "to resume"], proc.stderr[-3000:]


@pytest.mark.slow
def test_a_second_signal_exits_at_once(tmp_path):
  run = tmp_path / "run"
  status, err = start_and_signal(run, signal.SIGTERM, times=2,
                                 prefix=[sys.executable, "-c", HOLD],
                                 ack="HOLDING before exit")
  assert status == -signal.SIGTERM, err[-3000:]
  assert "SIGTERM received: stopping after the current step" in err
  assert "stopped by SIGTERM at step" not in err
  # Killed inside HOLD's sleep (a blocking call, like a long TF op): the
  # served stop would have printed its line and exited 3 after it.
  assert err.rstrip().endswith("HOLDING before exit")


# Mirrored over the CPU split into 2 logical devices (launch/cpu_devices.py,
# as launch/multi_gpu.sh's dry run): 2 replicas, one process.
MIRRORED = [sys.executable, os.path.join(resume.REPO, "launch",
                                         "cpu_devices.py"), "2"]


@pytest.mark.slow
def test_sigterm_under_mirrored_strategy(tmp_path):
  run = tmp_path / "run"
  status, err = start_and_signal(run, signal.SIGTERM, prefix=MIRRORED,
                                 extra=["--strategy=mirrored"])
  assert status == exit_codes.STOPPED, err[-3000:]
  step = int(re.search(r"stopped by SIGTERM at step (\d+);", err)[1])
  assert killed_runs.recorded(run)[-1] == f"ckpt-{step}"
  proc = run_main(run, prefix=MIRRORED, extra=["--strategy=mirrored"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"Resuming from {run / 'checkpoints' / f'ckpt-{step}'}: " in (
      proc.stderr)
  assert json.loads((run / "results.json").read_text())["steps"] == STEPS


# ----------------------------------------------------------------------------
# 4. A write that fails (disk full): one line, exit 4, checkpoint kept.
# ----------------------------------------------------------------------------
@pytest.mark.slow
def test_disk_full_exits_4_keeping_the_last_checkpoint(tmp_path,
                                                      smoke_reference):
  run = tmp_path / "run"
  proc = run_main(run, prefix=[sys.executable, "-c", FILL_DISK],
                  env=dict(resume.ENV, MWN_FULL_AFTER="ckpt-20"))
  assert "DISK FULL after" in proc.stderr
  assert proc.returncode == exit_codes.WRITE_FAILED, proc.stderr[-3000:]
  line = one_error_line(proc.stderr)
  assert re.search(rf"cannot write {re.escape(str(run))}/\S+: File too large "
                   r"\(\d+\.\d MiB free there\); the last good checkpoint, "
                   r"ckpt-20, is kept: free some space", line), line
  assert killed_runs.recorded(run)[-1] == "ckpt-20"
  saved = resume.final_variables(run)
  assert len(saved) > 10

  log = resume.rerun(run, BINDINGS)  # space freed: no limit any more
  assert f"Resuming from {run / 'checkpoints' / 'ckpt-20'}: " in log
  ref_dir, ref_results = smoke_reference
  resume.assert_matches_reference(run, ref_dir, ref_results)
  killed_runs.assert_nothing_left_over(run)


def test_write_errors_outside_model_dir_are_not_called_disk_full(tmp_path):
  inside = tf.errors.ResourceExhaustedError(
      None, None, f"{tmp_path}/checkpoints/ckpt-5_temp/part; No space left "
      f"on device")
  error = run_dir.write_error(inside, str(tmp_path))
  assert str(error).startswith(f"cannot write {tmp_path}/checkpoints/ckpt-5_"
                               f"temp/part: No space left on device (")
  assert "no checkpoint was written yet" in str(error)
  oom = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating")
  assert run_dir.write_error(oom, str(tmp_path)) is None
  assert run_dir.write_error(OSError(28, "No space left on device",
                                     "/data/x"), str(tmp_path)) is None
  assert run_dir.write_error(ValueError("x"), str(tmp_path)) is None


# ----------------------------------------------------------------------------
# 5. Refused up front, in one line, exit 2.
# ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("binding,message", [
    ("digits.num_meta = 0", "dataset 'digits': digits.num_meta = 0 must be a "
     "positive multiple of the 10 classes"),
    ("digits.num_meta = 15", "digits.num_meta = 15 must be a positive "
     "multiple of the 10 classes (the meta set is class-balanced); bind e.g. "
     "digits.num_meta = 10."),
    ("train_eval.learning_rate = 1e999", "train_eval.learning_rate must be a "
     "finite number > 0, got inf."),
    ("digits.imbalance_factor = 1e999", "imbalance_factor must be >= 1 (1 = "
     "balanced) and finite, got inf."),
    ("train_eval.meta_learning_rate = -1e-3", "train_eval.meta_learning_rate "
     "must be a finite number > 0, got -0.001."),
])
def test_bad_settings_exit_2_before_anything_is_written(tmp_path, binding,
                                                        message):
  run = tmp_path / "run"
  proc = run_main(run, ["train_eval.train_steps = 2", binding])
  assert proc.returncode == exit_codes.CONFIG, proc.stderr[-3000:]
  assert message in one_error_line(proc.stderr)
  assert not run.exists() or not os.listdir(run)


@pytest.mark.slow
def test_shortening_a_finished_run_is_refused_in_epochs(tmp_path,
                                                       smoke_reference):
  ref_dir, _ = smoke_reference
  run = copy_of(ref_dir, tmp_path)
  before = killed_runs.snapshot(run)
  proc = run_main(run, [b for b in BINDINGS if "epochs" not in b] +
                  ["train_eval.epochs = 1"])
  assert proc.returncode == exit_codes.CONFIG, proc.stderr[-3000:]
  assert one_error_line(proc.stderr).endswith(
      f"the run in {run} has 2 epochs done (step {STEPS}), more than "
      f"train_eval.epochs = 1; bind train_eval.epochs >= 2 to continue it, "
      f"or use another --model_dir.")
  after = killed_runs.snapshot(run)
  # Only the lock file's holder line changed.
  assert {k: v for k, v in after.items() if k != run_dir.LOCK} == {
      k: v for k, v in before.items() if k != run_dir.LOCK}


@pytest.mark.slow
def test_every_exit_code_is_documented():
  # The exit-status table of "Checkpoints and resuming".
  page = open(os.path.join(resume.REPO, "docs", "recovery.md")).read()
  usage = subprocess.run([sys.executable, "-m", "mwn_tf.main", "--help"],
                         cwd=resume.REPO, env=resume.ENV, capture_output=True,
                         text=True, timeout=300).stdout
  # 5: collapsed weights; 6: a multi-worker peer died or hung.
  assert set(exit_codes.MEANINGS) == {0, 1, 2, 3, 4, 5, 6}
  for code in exit_codes.MEANINGS:
    assert re.search(rf"^\s*{code}  \S", usage, re.M), (code, usage)
    assert re.search(rf"^\| {code} \| \S", page, re.M), code
  assert exit_codes.describe().count("\n") == len(exit_codes.MEANINGS) - 1


# ----------------------------------------------------------------------------
# 3b. SIGTERM to the chief of a two-worker MultiWorkerMirroredStrategy run.
# ----------------------------------------------------------------------------
# Two TF processes at nice 19 on a 2-core machine shared with a training run
# took 514 s to their first checkpoint (measured): the limits below only catch
# a hang, they assume nothing about the machine's speed.
CLUSTER_DEADLINE_S = 1800


def start_cluster(model_dir, logs, bindings=BINDINGS):
  """Two workers on 127.0.0.1 running the command; returns the Popens.

  Each is the leader of its own process group (start_new_session), so the
  `cluster` fixture can kill it with everything it started."""
  sockets = [socket.socket() for _ in range(2)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  procs = []
  for i in range(2):
    config = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}"
                                                for p in ports]},
                         "task": {"type": "worker", "index": i}})
    with open(logs[i], "w") as err:
      procs.append(subprocess.Popen(
          resume.command(model_dir, bindings) + ["--strategy=multi_worker"],
          cwd=resume.REPO, env=dict(resume.ENV, TF_CONFIG=config,
                                    CUDA_VISIBLE_DEVICES=""),
          stdout=subprocess.DEVNULL, stderr=err, start_new_session=True))
  return procs


@pytest.fixture
def cluster():
  """`start_cluster`, whose processes (and their process groups) are all
  SIGKILLed at the end of the test whatever happened (a SIGSTOPped one
  included); then none may be left."""
  started = []

  def start(*args, **kwargs):
    procs = start_cluster(*args, **kwargs)
    started.extend(procs)
    return procs

  try:
    yield start
  finally:
    for p in started:
      try:
        os.killpg(p.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass  # Exited, and so did its group.
    for p in started:
      p.wait(timeout=60)
  left = []
  for p in started:
    try:
      os.killpg(p.pid, 0)
      left.append(p.pid)
    except ProcessLookupError:
      pass
  assert not left, f"processes of groups {left} outlived the test"


def wait_all(procs, timeout=CLUSTER_DEADLINE_S):
  deadline = time.time() + timeout
  return [p.wait(timeout=max(1, deadline - time.time())) for p in procs]


def wait_for_checkpoint(run, procs, logs):
  """Waits until the chief has written a checkpoint, every worker alive."""
  state = run / "checkpoints" / "checkpoint"
  deadline = time.time() + CLUSTER_DEADLINE_S
  while not state.exists():
    codes = [p.poll() for p in procs]
    assert codes == [None] * len(procs) and time.time() < deadline, (
        codes, [log.read_text()[-3000:] for log in logs])
    time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_to_the_chief_stops_every_worker_at_one_step(tmp_path,
                                                             cluster):
  run = tmp_path / "run"
  logs = [tmp_path / f"worker{i}.stderr" for i in range(2)]
  procs = cluster(run, logs)
  wait_for_checkpoint(run, procs, logs)
  os.kill(procs[0].pid, signal.SIGTERM)
  codes = wait_all(procs)
  errs = [log.read_text() for log in logs]
  assert codes == [exit_codes.STOPPED] * 2, [e[-3000:] for e in errs]
  chief = re.search(r"stopped by SIGTERM at step (\d+);", errs[0])
  worker = re.search(r"stopped by a signal to another worker at step (\d+);",
                     errs[1])
  assert chief and worker and chief[1] == worker[1], errs
  step = int(chief[1])
  assert killed_runs.recorded(run)[-1] == f"ckpt-{step}"

  codes = wait_all(cluster(run, logs))
  errs = [log.read_text() for log in logs]
  assert codes == [0, 0], [e[-3000:] for e in errs]
  for err in errs:
    assert f"Resuming from {run / 'checkpoints' / f'ckpt-{step}'}: " in err
  assert json.loads((run / "results.json").read_text())["steps"] == STEPS


# A collective timeout much shorter than the default (600 s), so a hung peer
# is noticed quickly; still far above a step of this tiny run.
PEER_TIMEOUT_S = 60


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSTOP])
def test_a_worker_whose_chief_was_killed_exits_6(tmp_path, cluster, how):
  """SIGKILL: the chief is gone (its connections close); SIGSTOP: it hangs
  (they stay open, only the collective timeout ends the wait)."""
  run = tmp_path / "run"
  logs = [tmp_path / f"worker{i}.stderr" for i in range(2)]
  procs = cluster(run, logs, BINDINGS + [
      f"train_eval.collective_timeout_s = {PEER_TIMEOUT_S}"])
  wait_for_checkpoint(run, procs, logs)
  os.kill(procs[0].pid, how)
  # The timeout, and time for the error to reach Python and the process to
  # exit on a loaded machine.
  code = procs[1].wait(timeout=PEER_TIMEOUT_S + 300)
  err = logs[1].read_text()
  assert code == exit_codes.PEER_LOST, err[-3000:]
  line = one_error_line(err)
  what = (f"waited more than {PEER_TIMEOUT_S} s "
          f"(train_eval.collective_timeout_s)"
          if how == signal.SIGSTOP else "another worker is gone")
  assert what in line and line.endswith(
      "stop every worker and rerun the same command on all of them to resume "
      "from the last checkpoint (raise train_eval.collective_timeout_s if a "
      "worker is only slow)."), line


# `python -c BLOCKED`: inside `SignalStop`, the main thread blocks in a
# TensorFlow op that never returns (a dequeue from an empty queue), as a
# worker does in an all-reduce whose peer is gone.
BLOCKED = r'''
import sys
import tensorflow as tf
from mwn_tf.runner import stopping
queue = tf.queue.FIFOQueue(1, tf.int32)
with stopping.SignalStop():
  print("BLOCKING", file=sys.stderr, flush=True)
  queue.dequeue()
'''


@pytest.mark.slow  # starts a Python process
def test_a_second_signal_ends_a_process_blocked_in_an_op(tmp_path):
  err_path = tmp_path / "stderr"
  with open(err_path, "w") as err:
    proc = subprocess.Popen([sys.executable, "-c", BLOCKED], cwd=resume.REPO,
                            env=resume.ENV, stderr=err,
                            start_new_session=True)
  try:
    def wait_for(text):
      deadline = time.time() + 600
      while text not in err_path.read_text():
        assert proc.poll() is None and time.time() < deadline, (
            err_path.read_text()[-3000:])
        time.sleep(0.05)

    wait_for("BLOCKING")
    proc.send_signal(signal.SIGTERM)
    # Python's handler cannot run; the watcher thread says it got it.
    wait_for("SIGTERM received: stopping after the current step")
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert err_path.read_text().rstrip().endswith(
        "SIGTERM received again while blocked in an op: stopping at once, "
        "without a checkpoint; rerun the same command to resume from the "
        "last one.")
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
