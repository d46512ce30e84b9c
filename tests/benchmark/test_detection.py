"""`python -m mwn_tf.bench --task=detection` end to end: tiny MW-Net and
baseline runs of gin/smoke.gin (digits) made through `mwn_tf.main`, then the
benchmark through its real command line, its numbers checked against the
runs' own files and scikit-learn."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from helpers import call_main
from helpers import ENV
from helpers import REPO
from mwn_tf.analysis import detection as analysis_detection
from mwn_tf.benchmark import detection

# A few steps each; no checkpoints or exports: only sample_weights.npz and
# results.json are read.
RUN_BINDINGS = ["train_eval.train_steps = 12",
                "train_eval.checkpoint_every_n_steps = 0",
                "train_eval.summary_every_n_steps = 0",
                "train_eval.sample_every_n_epochs = 0",
                "train_eval.export = False"]


def _smoke_runs(root, bindings):
  """A finished MW-Net run and a baseline run of smoke.gin, seed 0, under
  `bindings`: method -> model_dir."""
  out = {}
  for method in ("mwn", "baseline"):
    model_dir = str(root / method)
    status, _, err = call_main(
        ["--gin_file=gin/smoke.gin", f"--model_dir={model_dir}"] +
        [f"--gin_param={b}" for b in bindings +
         [f"train_eval.method = '{method}'"]], _NoCapture())
    assert status == 0, err
    out[method] = model_dir
  return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A finished MW-Net run and a baseline run of smoke.gin, seed 0."""
  return _smoke_runs(tmp_path_factory.mktemp("runs"), RUN_BINDINGS)


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
  """MW-Net and baseline runs of smoke.gin, seed 0, that keep a checkpoint
  every 4 of their 12 steps (for --over_training)."""
  return _smoke_runs(tmp_path_factory.mktemp("kept"), [
      b for b in RUN_BINDINGS if "checkpoint_every" not in b] + [
          "train_eval.checkpoint_every_n_steps = 4",
          "train_eval.max_checkpoints_to_keep = 5"])


class _NoCapture:
  """`call_main`'s capsys, for a module fixture (pytest's is per test)."""

  def readouterr(self):
    return "", ""


def _bench(*flags):
  return subprocess.run(
      [sys.executable, "-m", "mwn_tf.bench", "--task=detection",
       "--gin_file=gin/smoke.gin"] + list(flags),
      cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)


def _roc(noisy, score):
  return sk_metrics.roc_auc_score(noisy, score)


@pytest.mark.slow
def test_detection_task_end_to_end(runs, tmp_path):
  output = str(tmp_path / "out" / "detection.json")
  proc = _bench("--seed=0", "--folds=2", "--fold_epochs=1",
                f"--mwn_run={runs['mwn']}",
                f"--baseline_run={runs['baseline']}", f"--output={output}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.load(open(output))
  assert set(result["signals"]) == set(detection.SIGNALS)
  # digits: 1797 - 500 test - 100 meta; 40% uniform noise.
  assert result["num_samples"] == result["num_known"] == 1197
  mwn = analysis_detection.load_samples(
      os.path.join(runs["mwn"], "sample_weights.npz"))
  base = analysis_detection.load_samples(
      os.path.join(runs["baseline"], "sample_weights.npz"))
  noisy = mwn.label != mwn.clean_label
  assert result["num_noisy"] == int(noisy.sum())
  probs = np.load(str(tmp_path / "out" / "detection_pred_probs.npz"))
  np.testing.assert_array_equal(probs["index"], mwn.index)
  pred = probs["pred_probs"]
  assert pred.shape == (1197, 10) and np.isfinite(pred).all()
  np.testing.assert_allclose(pred.sum(-1), 1.0, atol=1e-6)
  # Every signal's AUROC, from the runs' files and the probabilities.
  self_confidence = pred[np.arange(1197), mwn.label]
  want = {"cleanlab": -self_confidence, "mwn_weight": -mwn.weight,
          "mwn_loss": mwn.loss, "baseline_loss": base.loss}
  for name, score in want.items():
    m = result["signals"][name]
    assert m["auroc"] == pytest.approx(_roc(noisy, score), abs=1e-9), name
    assert m["average_precision"] == pytest.approx(
        sk_metrics.average_precision_score(noisy, score), abs=1e-9), name
    top = np.lexsort((mwn.index, -score))[:int(noisy.sum())]
    assert m["precision_at_k"] == pytest.approx(noisy[top].mean()), name
    assert m["k"] == int(noisy.sum())
  for name in ("mwn_loss+weight", "mwn_loss+cleanlab"):
    assert 0.0 <= result["signals"][name]["auroc"] <= 1.0
  # Cost: the folds' steps for cleanlab (2 folds of ~598 images, batch 16,
  # 1 epoch), the runs' own for theirs, nothing extra.
  fold_steps = [f["steps"] for f in result["fold_runs"]]
  assert fold_steps == [f["n_train"] // 16 for f in result["fold_runs"]]
  assert sum(f["n_held"] for f in result["fold_runs"]) == 1197
  cost = {name: m["cost"] for name, m in result["signals"].items()}
  assert cost["cleanlab"]["steps"] == cost["cleanlab"]["extra_steps"] == sum(
      fold_steps)
  assert cost["mwn_loss"]["steps"] == 12 and cost["mwn_loss"][
      "extra_steps"] == 0
  assert cost["baseline_loss"]["steps"] == 12
  assert cost["mwn_loss+cleanlab"]["steps"] == 12 + sum(fold_steps)
  issues = result["find_label_issues"]
  assert 0 <= issues["true_positives"] <= issues["flagged"] <= 1197
  # The markdown: a row per signal, printed and written.
  table = open(str(tmp_path / "out" / "detection.md")).read()
  rows = [l for l in table.splitlines() if l.startswith("| ")][1:]
  assert sorted(r.split(" | ")[0][2:] for r in rows) == sorted(
      detection.SIGNALS)
  assert table.strip() in proc.stdout


@pytest.mark.slow
def test_other_seed_is_refused_before_anything_is_written(runs, tmp_path):
  output = tmp_path / "out.json"
  proc = _bench("--seed=1", "--folds=0", f"--mwn_run={runs['mwn']}",
                f"--output={output}")
  assert proc.returncode == 2
  errors = [l for l in proc.stderr.splitlines() if "error" in l]
  assert len(errors) == 1 and errors[0].startswith(
      f"mwn_tf.bench: error: --mwn_run={runs['mwn']}: its sample_weights.npz "
      "holds other labels than --gin_file/--gin_param/--seed rebuild")
  assert not output.exists()


@pytest.mark.slow  # runs the real command in a process
@pytest.mark.parametrize("flags, message", [
    (["--gin_param=digits.noise_rate = 'high'"],
     "mwn_tf.bench: error: dataset 'digits': could not convert string to "
     "float: 'high'"),
    (["--gin_param=digits.no_such = 1"],
     "mwn_tf.bench: error: --gin_param='digits.no_such = 1'"),
    (["--folds=0"], "mwn_tf.bench: error: nothing to score"),
    (["--folds=0", "--mwn_run=/no/such/run"],
     "mwn_tf.bench: error: --mwn_run=/no/such/run is not a folder"),
])
def test_bad_input_exits_2_in_one_line(flags, message, tmp_path):
  output = tmp_path / "out.json"
  proc = _bench(*flags, f"--output={output}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert lines[-1].startswith(message), proc.stderr[-2000:]
  assert sum("error" in l for l in lines) == 1
  assert not output.exists()


@pytest.mark.slow
def test_over_training_scores_every_kept_checkpoint(kept, tmp_path):
  output = str(tmp_path / "detection.json")
  proc = _bench("--seed=0", "--folds=0", "--over_training",
                f"--mwn_run={kept['mwn']}",
                f"--baseline_run={kept['baseline']}", f"--output={output}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.load(open(output))
  signals = result["signals"]
  steps_per_epoch = json.load(open(os.path.join(
      kept["mwn"], "results.json")))["steps_per_epoch"]
  for run in ("mwn", "baseline"):
    rows = result["over_training"][run]
    assert [r["step"] for r in rows] == [4, 8, 12]
    assert [r["epoch"] for r in rows] == [
        round(s / steps_per_epoch, 3) for s in (4, 8, 12)]
    assert all(0.0 <= r["meta_accuracy"] <= 1.0 for r in rows)
    # The last checkpoint is the run's end: restored and scored again, it
    # gives the run's own final sample_weights.npz.
    assert rows[-1]["loss_auroc"] == pytest.approx(
        signals[f"{run}_loss"]["auroc"], abs=1e-6)
    # The loss at the epoch most accurate on the meta set (the first such).
    best = max(rows, key=lambda r: r["meta_accuracy"])
    assert signals[f"{run}_loss@best_meta"]["auroc"] == pytest.approx(
        best["loss_auroc"], abs=1e-12)
    mean = signals[f"{run}_loss_mean"]["cost"]
    assert mean["steps"] == 12 and mean["extra_steps"] == 0
    assert mean["extra_seconds"] > 0
  mwn_rows = result["over_training"]["mwn"]
  assert mwn_rows[-1]["weight_auroc"] == pytest.approx(
      signals["mwn_weight"]["auroc"], abs=1e-6)
  assert "mwn_weight_mean" in signals
  assert "baseline_weight_mean" not in signals
  assert "weight_auroc" not in result["over_training"]["baseline"][0]
  table = open(str(tmp_path / "detection.md")).read()
  assert table.count("kept checkpoints") == 2
  assert table.strip() in proc.stdout


@pytest.mark.slow
def test_over_training_refuses_a_run_without_kept_checkpoints(runs,
                                                               tmp_path):
  output = tmp_path / "out.json"
  proc = _bench("--seed=0", "--folds=0", "--over_training",
                f"--mwn_run={runs['mwn']}", f"--output={output}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if "error" in l]
  assert len(errors) == 1 and errors[0].startswith(
      f"mwn_tf.bench: error: --mwn_run={runs['mwn']} kept "), errors
  assert "train_eval.max_checkpoints_to_keep = N" in errors[0]
  assert not output.exists()
