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

import numpy as np
import pytest
import tensorflow as tf

from helpers import BINDINGS
from helpers import ENV
from helpers import REFERENCE_BINDINGS
from helpers import REFERENCE_STEPS
from helpers import REPO
from helpers import assert_matches_reference
from helpers import call_main
from helpers import command
from helpers import final_variables
from helpers import flags
from helpers import reference_run
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


@pytest.mark.slow
def test_a_run_cut_mid_epoch_continues_to_more_train_steps(tmp_path, capsys):
  """train_steps = 45 ends 8 steps into epoch 2 (37 steps per epoch), which
  is recorded as done; rerun with train_steps = 60, the run continues that
  epoch from step 45 and ends as a run of 60 steps from the start."""
  bindings = [b for b in BINDINGS if not b.startswith("train_eval.train_steps")]
  run = tmp_path / "run"
  status, _, err = call_main(flags(run, bindings + [
      "train_eval.train_steps = 45"]), capsys)
  assert status == 0, err[-3000:]
  first = json.loads((run / "results.json").read_text())
  assert first["finished"] and first["epochs_done"] == 2, first["steps"]

  longer = bindings + ["train_eval.train_steps = 60"]
  status, out, err = call_main(flags(run, longer), capsys)
  assert status == 0, err[-3000:]
  assert "already finished" not in out
  after = json.loads((run / "results.json").read_text())
  assert after["session"]["steps"] == 15  # Continued, not started over.
  assert [h["step"] for h in after["history"]] == [37, 60]
  # The same parameters and test accuracies as an uninterrupted run of 60
  # steps. The continued epoch's train/meta running means cover steps 46-60
  # only (its checkpoint was written after the evaluation reused the
  # metrics), so only epoch 1's are compared.
  reference = reference_run(tmp_path / "reference", longer)
  assert [h["step"] for h in reference["history"]] == [37, 60]
  for got, want in zip(after["history"], reference["history"]):
    assert got["test"]["accuracy"] == pytest.approx(
        want["test"]["accuracy"], abs=0.0021)  # 1/500
  for part in ("train", "meta"):
    for key, val in reference["history"][0][part].items():
      assert after["history"][0][part][key] == pytest.approx(val, rel=1e-4)
  want_vars = final_variables(tmp_path / "reference")
  got_vars = final_variables(run)
  assert want_vars.keys() == got_vars.keys() and len(want_vars) > 10
  for name, want in want_vars.items():
    np.testing.assert_allclose(got_vars[name], want, rtol=1e-4, atol=1e-6,
                               err_msg=name)
