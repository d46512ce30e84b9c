"""The effective sample size of the weights, and the guard that watches it.

The guard is forced to fire through the real entry point by a V whose output
activation is sigmoid(z - 200): every weight underflows to exactly 0 in
float32, the most extreme collapse of w / Σw (ESS 0), and V cannot recover
(its gradient vanishes too). The activation is a test-only gin configurable,
bound as `WeightNet.output_activation = @vanishing_sigmoid`.
"""

import json

import gin
import numpy as np
import pytest
import tensorflow as tf

from helpers import call_main
from mwn_tf.runner import exit_codes
from mwn_tf.sample_weights import effective_sample_size


@gin.configurable("vanishing_sigmoid")
def vanishing_sigmoid(z):
  return tf.sigmoid(z - 200.0)


COLLAPSED_V = ["WeightNet.output_activation = @vanishing_sigmoid"]
# smoke.gin at 8 steps, no exports; a window of 3 steps.
SHORT = ["train_eval.train_steps = 8", "train_eval.export = False",
         "train_eval.sample_every_n_epochs = 0",
         "train_eval.collapse_window_steps = 3"]


def _main(model_dir, bindings, capsys):
  gin.clear_config()  # main() finalizes (locks) the config it parsed
  return call_main(["--gin_file=gin/smoke.gin", f"--model_dir={model_dir}"] +
                   [f"--gin_param={b}" for b in bindings], capsys)


def _warnings(caplog):
  """The guard's warning lines (absl WARNING records: main prints them on
  stderr as "warning: ...", pytest captures the records)."""
  return [r.getMessage() for r in caplog.records
          if "sample weights collapsed at" in r.getMessage()]


def _results(model_dir):
  return json.loads((model_dir / "results.json").read_text())


# ------------------------------------------------------------------ scalar --
@pytest.mark.parametrize("weights,want", [
    ([0.3] * 8, 1.0),                         # uniform
    ([0.0] * 7 + [0.9], 1 / 8),               # one sample takes all
    ([1.0, 1.0, 0.0, 0.0], 0.5),              # (2)² / (4·2)
    ([1.0, 2.0, 3.0], 36 / (3 * 14)),         # (6)² / (3·14)
    ([0.0] * 4, 0.0),                         # nothing is trained on
])
def test_effective_sample_size_by_hand(weights, want):
  w = tf.constant(weights, tf.float32)
  assert float(effective_sample_size(w)) == pytest.approx(want, rel=1e-6)
  # Scale-free: the same for w, w / n and w / Σw.
  assert float(effective_sample_size(w * 1e-3)) == pytest.approx(want,
                                                                 rel=1e-5)


# ------------------------------------------------------------------- guard --
def test_a_forced_collapse_warns_once_and_is_recorded(tmp_path, capsys,
                                                      caplog):
  status, _, err = _main(tmp_path / "run", SHORT + COLLAPSED_V, capsys)
  assert status == 0, err
  (line,) = _warnings(caplog)
  assert "at step 3" in line and "averaged 0.000" in line
  assert "train_eval.normalize_weights = 'none'" in line
  results = _results(tmp_path / "run")
  assert results["finished"]
  assert results["weight_collapse"] == {
      "step": 3, "ess": 0.0, "threshold": 0.35, "window_steps": 3,
      "action": "warn"}
  assert all(h["train"]["weight_ess"] == 0.0 for h in results["history"])


def test_a_healthy_run_does_not_warn(tmp_path, capsys, caplog):
  status, _, err = _main(tmp_path / "run", SHORT, capsys)
  assert status == 0, err
  assert not _warnings(caplog)
  results = _results(tmp_path / "run")
  assert results["weight_collapse"] is None
  assert results["weight_ess_lowest"]["ess"] > 0.9
  assert results["history"][-1]["train"]["weight_ess"] > 0.9


def test_stop_checkpoints_exits_5_and_resumes(tmp_path, capsys, caplog):
  run = tmp_path / "run"
  status, _, err = _main(run, SHORT + COLLAPSED_V + [
      "train_eval.on_weight_collapse = 'stop'"], capsys)
  assert status == exit_codes.COLLAPSED == 5
  assert len(_warnings(caplog)) == 1
  assert "stopped at step 3: the sample weights collapsed" in err
  assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith(
      "ckpt-3")
  results = _results(run)
  assert not results["finished"] and results["steps"] == 3
  assert results["weight_collapse"]["action"] == "stop"
  # Rerun with the advice taken (a healthy V, warn): it continues from step 3
  # and keeps the record of the collapse.
  status, _, err = _main(run, SHORT, capsys)
  assert status == 0, err
  assert len(_warnings(caplog)) == 1  # the first session's
  results = _results(run)
  assert results["finished"] and results["steps"] == 8
  assert results["weight_collapse"]["step"] == 3


def test_reset_v_reinitialises_and_trains_on(tmp_path, capsys, caplog):
  status, _, err = _main(tmp_path / "run", SHORT + COLLAPSED_V + [
      "train_eval.on_weight_collapse = 'reset_v'"], capsys)
  assert status == 0, err
  lines = _warnings(caplog)
  # V stays collapsed (it is the activation), so each full window resets.
  assert [l.split(":")[0].rsplit(" ", 1)[1] for l in lines] == ["3", "6"]
  assert all("re-initialising V" in l for l in lines)
  record = _results(tmp_path / "run")["weight_collapse"]
  assert record["step"] == 3 and record["resets"] == 2


def test_bad_guard_settings_name_the_binding(tmp_path, capsys, caplog):
  for binding, text in (
      ("train_eval.on_weight_collapse = 'halt'", "on_weight_collapse must be"),
      ("train_eval.collapse_ess_threshold = 1.5", "collapse_ess_threshold"),
      ("train_eval.collapse_window_steps = 0", "collapse_window_steps")):
    status, _, err = _main(tmp_path / "run", [binding], capsys)
    assert status == 2 and text in err
    assert not (tmp_path / "run").exists()
