"""A model_dir written before the runner was split into mwn_tf/runner/
still resumes.

tests/fixtures/old_run_f615b35 is a finished run of the smoke config made by
the code of commit f615b35 (mwn_tf/train.py and callbacks.py, before
mwn_tf/runner/ existed), with `helpers.BINDINGS` but 2 epochs of 37 steps:

    git archive f615b35 mwn_tf gin | tar -x -C /tmp/old && cd /tmp/old
    python -m mwn_tf.main --gin_file=gin/smoke.gin --model_dir=/tmp/old_run \
      --gin_param='train_eval.train_steps = None' \
      --gin_param='train_eval.epochs = 2' \
      --gin_param='train_eval.batch_size = 32' \
      --gin_param='train_eval.checkpoint_every_n_steps = 5' \
      --gin_param='train_eval.summary_every_n_steps = 0' \
      --gin_param='train_eval.sample_every_n_epochs = 0' \
      --gin_param='train_eval.export = False'

It keeps that run's checkpoints (ckpt-67, ckpt-72 mid-epoch 2, ckpt-74),
results.json, operative_config.gin, weight_curve.csv and sample_weights.npz;
its TensorBoard event files (100 KB, not read by a resume) are left out.
"""

import json
import os
import shutil

import gin
import numpy as np
import pytest
import tensorflow as tf

from helpers import BINDINGS
from helpers import REPO
from helpers import SMOKE
from helpers import assert_matches_reference
from helpers import rerun
from mwn_tf.runner import checkpointing
from mwn_tf.runner import declarations
from mwn_tf.runner import run_dir
from mwn_tf.runner import settings

OLD = os.path.join(REPO, "tests", "fixtures", "old_run_f615b35")
TWO_EPOCHS = [b for b in BINDINGS if not b.startswith("train_eval.epochs")
              ] + ["train_eval.epochs = 2"]


def _copy(tmp_path):
  run = tmp_path / "run"
  shutil.copytree(OLD, run)
  return run


def test_the_fixture_is_the_old_finished_run():
  results = run_dir.read_results(OLD)
  assert results["finished"] and results["steps"] == 74
  assert "settings" not in results  # written before the key existed
  assert [os.path.basename(p) for p in run_dir.checkpoints(OLD)] == [
      "ckpt-67", "ckpt-72", "ckpt-74"]


def test_an_old_checkpoint_restores_the_models_for_reading():
  """What the analysis does with a run: rebuild the classifier and V, and
  restore them (not the optimizers) from the newest checkpoint."""
  gin.parse_config_file(SMOKE)
  splits = settings.load_data("digits", 0)
  meta_model = settings.build_model(splits, {
      **{s.name: s.default for s in declarations.SETTINGS}, "model": "mlp",
      "method": "mwn", "weight_net_hidden_units": (8,)})
  path = run_dir.latest_checkpoint(OLD)
  assert path.endswith("ckpt-74")
  checkpointing.restore_models(meta_model, path)
  for prefix, variables in (("classifier", meta_model.classifier.variables),
                            ("weight_net", meta_model.weight_net.variables)):
    assert variables
    for i, v in enumerate(variables):
      np.testing.assert_array_equal(v.numpy(), tf.train.load_variable(
          path, f"{prefix}/{i}/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.mark.slow
def test_an_old_finished_run_continues_to_more_epochs(tmp_path):
  run = _copy(tmp_path)
  old = run_dir.read_results(run)
  stderr = rerun(run, BINDINGS)  # 3 epochs
  assert f"Resuming from {run / 'checkpoints' / 'ckpt-74'}" in stderr
  after = json.loads((run / "results.json").read_text())
  assert after["finished"] and after["steps"] == 111
  assert after["epochs_done"] == after["epochs"] == 3
  assert after["history"][:2] == old["history"]
  assert after["history"][2]["step"] == 111
  assert after["settings"]["epochs"] == 3


@pytest.mark.slow
def test_an_old_run_killed_mid_epoch_ends_as_the_old_code_ended(tmp_path):
  """As if the old run had been killed after ckpt-72 (35 steps into epoch
  2): the new code resumes it and ends where the old code's uninterrupted
  run ended (its history and final variables, in the fixture)."""
  run = _copy(tmp_path)
  ckpts = run / "checkpoints"
  for name in os.listdir(ckpts):
    if name.startswith("ckpt-74."):
      os.remove(ckpts / name)
  # The state file as the old run wrote it after saving ckpt-72: the last
  # entry (ckpt-74 and its timestamp) dropped.
  lines = (ckpts / "checkpoint").read_text().splitlines()
  last_stamp = max(i for i, line in enumerate(lines)
                   if line.startswith("all_model_checkpoint_timestamps"))
  lines = [line.replace('"ckpt-74"', '"ckpt-72"') for i, line in
           enumerate(lines) if i != last_stamp and
           line != 'all_model_checkpoint_paths: "ckpt-74"']
  (ckpts / "checkpoint").write_text("\n".join(lines) + "\n")
  os.remove(run / "results.json")
  stderr = rerun(run, TWO_EPOCHS)
  assert f"Resuming from {ckpts / 'ckpt-72'}" in stderr
  assert "35 steps into the epoch" in stderr
  assert_matches_reference(run, OLD, run_dir.read_results(OLD))
