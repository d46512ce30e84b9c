"""`mwn_tf.benchmark.over_training`: the signals and per-epoch curves it
makes from checkpoint passes (the passes themselves run in
test_detection's end-to-end --over_training test)."""

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from mwn_tf.benchmark import over_training

# Three checkpoints x four samples; samples 2 and 3 are corrupted.
PASSES = {
    "steps": np.array([10, 20, 30]), "epochs": np.array([0.5, 1.0, 1.5]),
    "loss": np.array([[1.0, 2.0, 3.0, 0.5],
                      [3.0, 2.0, 1.0, 4.0],
                      [0.5, 0.5, 2.0, 3.0]]),
    "weight": np.array([[0.4, 0.3, 0.2, 0.9],
                        [0.1, 0.2, 0.3, 0.0],
                        [0.5, 0.5, 0.1, 0.1]]),
    "meta_accuracy": np.array([0.5, 0.9, 0.9]), "seconds": 1.0}
TABLE = {"known": np.array([True, True, True, True]),
         "is_noisy": np.array([False, False, True, True])}


def test_signals_average_over_the_checkpoints_and_take_the_best_meta_epoch():
  out = over_training.signals("mwn", PASSES, mwn=True)
  assert set(out) == {"mwn_loss_mean", "mwn_weight_mean", "mwn_loss@best_meta"}
  np.testing.assert_allclose(out["mwn_loss_mean"], [1.5, 1.5, 2.0, 2.5])
  # Low weight = suspect: the score is the negated mean weight.
  np.testing.assert_allclose(out["mwn_weight_mean"],
                             [-1 / 3, -1 / 3, -0.2, -1 / 3])
  # Meta accuracy ties at 0.9: the earlier checkpoint's loss.
  np.testing.assert_array_equal(out["mwn_loss@best_meta"], PASSES["loss"][1])


def test_a_baseline_has_no_weight_signal():
  assert set(over_training.signals("baseline", PASSES, mwn=False)) == {
      "baseline_loss_mean", "baseline_loss@best_meta"}


@pytest.mark.parametrize("mwn", [True, False])
def test_curves_give_each_checkpoints_own_auroc(mwn):
  rows = over_training.curves(PASSES, TABLE, mwn)
  assert [(r["epoch"], r["step"], r["meta_accuracy"]) for r in rows] == [
      (0.5, 10, 0.5), (1.0, 20, 0.9), (1.5, 30, 0.9)]
  for row, loss, weight in zip(rows, PASSES["loss"], PASSES["weight"]):
    assert row["loss_auroc"] == pytest.approx(
        sk_metrics.roc_auc_score(TABLE["is_noisy"], loss))
    if mwn:
      assert row["weight_auroc"] == pytest.approx(
          sk_metrics.roc_auc_score(TABLE["is_noisy"], -weight))
    else:
      assert "weight_auroc" not in row
