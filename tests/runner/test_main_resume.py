"""Kill -9 mid-run, rerun the same command: it resumes from the checkpoint and
ends where an uninterrupted run ends.

The helpers (the command, the comparison) are in tests/helpers.py; the
uninterrupted run is conftest.py's `smoke_reference`, shared with
tests/runner/test_robustness.py and tests/runner/test_recovery.py.
"""

import json
import os
import signal
import subprocess
import time

import pytest
import tensorflow as tf

from helpers import ENV
from helpers import REFERENCE_BINDINGS
from helpers import REFERENCE_STEPS
from helpers import REPO
from helpers import assert_matches_reference
from helpers import command
from helpers import rerun


@pytest.mark.slow
def test_sigkill_then_rerun_matches_an_uninterrupted_run(tmp_path,
                                                         smoke_reference):
  killed = tmp_path / "killed"
  state_file = killed / "checkpoints" / "checkpoint"
  proc = subprocess.Popen(command(killed, REFERENCE_BINDINGS), cwd=REPO,
                          env=ENV, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while not state_file.exists() and proc.poll() is None:
    assert time.time() < deadline, "no checkpoint within 240 s"
    time.sleep(0.02)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "finished before the kill"
  saved = tf.train.latest_checkpoint(str(killed / "checkpoints"))
  killed_at = int(saved.rsplit("-", 1)[1])
  assert 0 < killed_at < REFERENCE_STEPS
  results = killed / "results.json"
  assert not results.exists() or not json.loads(results.read_text())[
      "finished"]

  assert f"Resuming from {saved}" in rerun(killed, REFERENCE_BINDINGS)
  reference_dir, reference = smoke_reference
  assert_matches_reference(killed, reference_dir, reference)
