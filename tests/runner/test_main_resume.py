"""Kill -9 mid-run, rerun the same command: it resumes from the checkpoint and
ends where an uninterrupted run ends.

The helpers (the command, the uninterrupted reference, the comparison) are in
tests/helpers.py, shared with tests/runner/test_robustness.py.
"""

import json
import os
import signal
import subprocess
import time

import pytest
import tensorflow as tf

from helpers import ENV
from helpers import REPO
from helpers import assert_matches_reference
from helpers import command
from helpers import reference_run
from helpers import rerun


@pytest.mark.slow
def test_sigkill_then_rerun_matches_an_uninterrupted_run(tmp_path):
  killed = tmp_path / "killed"
  state_file = killed / "checkpoints" / "checkpoint"
  proc = subprocess.Popen(command(killed), cwd=REPO, env=ENV,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while not state_file.exists() and proc.poll() is None:
    assert time.time() < deadline, "no checkpoint within 240 s"
    time.sleep(0.02)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "finished before the kill"
  saved = tf.train.latest_checkpoint(str(killed / "checkpoints"))
  killed_at = int(saved.rsplit("-", 1)[1])
  assert 0 < killed_at < 111
  results = killed / "results.json"
  assert not results.exists() or not json.loads(results.read_text())[
      "finished"]

  assert f"Resuming from {saved}" in rerun(killed)
  reference = reference_run(tmp_path / "reference")
  assert reference["steps"] == 111
  assert_matches_reference(killed, tmp_path / "reference", reference)
