"""Detection metrics, ranking, figures and CLI of `mwn_tf.analyze` on
generated run folders in the runner's file formats."""

import csv
import itertools
import json
import logging as std_logging
import os

from absl import flags
import numpy as np
import pytest
from matplotlib import image as mpl_image
import tensorflow as tf

from fake_runs import write_run
from helpers import REPO
from mwn_tf import analyze
from mwn_tf.analysis import detection
from mwn_tf.analysis import report as report_lib
from mwn_tf.analysis import sources
from mwn_tf.analysis import suspects
from mwn_tf.analysis.detection import AnalysisError


def _samples(weight, noisy, label=None, loss=None, clean_label=None):
  n = len(weight)
  noisy = np.asarray(noisy, bool)
  label = np.zeros(n, int) if label is None else np.asarray(label)
  if clean_label is None:
    # A clean label that differs exactly where the sample is noisy.
    clean_label = np.where(noisy, label + 1, label)
  return detection.samples_from_arrays(
      {"index": np.arange(n) + 100, "label": label,
       "clean_label": np.asarray(clean_label),
       "loss": np.arange(n, dtype=float) if loss is None else loss,
       "weight": np.asarray(weight, float)}, "test")


def _pairwise_auroc(noisy, weight):
  """P(a corrupted sample weighs less than a clean one), ties count 1/2."""
  bad, good = weight[noisy], weight[~noisy]
  wins = [(b < g) + 0.5 * (b == g) for b, g in itertools.product(bad, good)]
  return float(np.mean(wins))


# ---------------------------------------------------------------- detection
def test_perfect_separation():
  noisy = np.array([1, 0, 0, 1, 0, 1, 0, 0], bool)
  report = detection.detection_report(
      _samples(np.where(noisy, 0.1, 0.9), noisy), rank_by="weight")
  overall = report["overall"]
  assert overall["auroc"] == 1.0 and overall["average_precision"] == 1.0
  assert report["rates"]["at_realised_rate"] == {"rate": 3 / 8, "k": 3}
  flags_ = overall["at_realised_rate"]
  assert flags_["precision"] == 1.0 and flags_["recall"] == 1.0
  assert flags_["flagged"] == flags_["true_positives"] == 3
  assert overall["mean_weight_noisy"] == pytest.approx(0.1)


def test_reversed_weights_give_auroc_zero():
  noisy = np.array([1, 0, 0, 1, 0, 1, 0, 0], bool)
  report = detection.detection_report(
      _samples(np.where(noisy, 0.9, 0.1), noisy), rank_by="weight")
  assert report["overall"]["auroc"] == 0.0
  assert report["overall"]["at_realised_rate"]["precision"] == 0.0
  assert report["overall"]["at_realised_rate"]["recall"] == 0.0


def test_mixed_case_by_hand_and_nominal_rate():
  # Weights ascending; corrupted at positions 0 and 2. Pairs (corrupted,
  # clean) with the corrupted one lighter: 0.1 beats all 4, 0.3 beats 3 of
  # 4, so AUROC = 7/8. The k = 2 lightest are positions 0 and 1: one hit.
  weight = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
  noisy = np.array([1, 0, 1, 0, 0, 0], bool)
  report = detection.detection_report(_samples(weight, noisy),
                                      nominal_rate=0.5, flag_rate=0.1,
                                      rank_by="weight")
  overall = report["overall"]
  assert overall["auroc"] == pytest.approx(7 / 8)
  assert overall["at_realised_rate"]["precision"] == 0.5
  assert overall["at_realised_rate"]["recall"] == 0.5
  # Nominal 0.5: k = 3 lightest = positions 0, 1, 2: 2 hits of 3 flags.
  assert report["rates"]["at_nominal_rate"]["k"] == 3
  assert overall["at_nominal_rate"]["precision"] == pytest.approx(2 / 3)
  assert overall["at_nominal_rate"]["recall"] == 1.0
  # 0.1 * 6 rounds to k = 1: position 0, a hit.
  assert overall["at_flag_rate"]["flagged"] == 1
  assert overall["at_flag_rate"]["precision"] == 1.0
  assert overall["at_flag_rate"]["recall"] == 0.5
  # Average precision: hits at ranks 1 and 3 -> (1/1 + 2/3) / 2.
  assert overall["average_precision"] == pytest.approx((1 + 2 / 3) / 2)


def test_random_case_matches_pairwise_count_with_ties():
  rng = np.random.default_rng(3)
  noisy = rng.random(300) < 0.35
  # Coarse weights: many ties, which AUROC must count as one half.
  weight = np.round(np.where(noisy, rng.random(300) * 0.7,
                             0.3 + rng.random(300) * 0.7), 1)
  report = detection.detection_report(_samples(weight, noisy),
                                      rank_by="weight")
  assert report["overall"]["auroc"] == pytest.approx(
      _pairwise_auroc(noisy, weight), abs=1e-12)
  # Flags follow rank_order (ties: higher loss first, loss = position).
  k = int(noisy.sum())
  order = np.lexsort((-np.arange(300.0), weight))[:k]
  assert report["overall"]["at_realised_rate"]["true_positives"] == int(
      noisy[order].sum())


def test_per_class_uses_observed_labels_and_global_flags():
  # Class 0: V separates perfectly; class 1: reversed.
  label = np.array([0, 0, 0, 0, 1, 1, 1, 1])
  noisy = np.array([1, 0, 0, 0, 1, 0, 0, 0], bool)
  weight = np.array([0.1, 0.5, 0.6, 0.7, 0.9, 0.2, 0.3, 0.4])
  report = detection.detection_report(_samples(weight, noisy, label=label),
                                      rank_by="weight")
  per = report["per_class"]
  assert set(per) == {"0", "1"}
  assert per["0"]["auroc"] == 1.0 and per["1"]["auroc"] == 0.0
  # k = 2 over all samples: weights 0.1 (class 0, hit) and 0.2 (class 1).
  assert per["0"]["at_realised_rate"] == {
      "flagged": 1, "true_positives": 1, "precision": 1.0, "recall": 1.0}
  assert per["1"]["at_realised_rate"] == {
      "flagged": 1, "true_positives": 0, "precision": 0.0, "recall": 0.0}
  assert per["1"]["n"] == 4 and per["1"]["n_noisy"] == 1


def test_undefined_metrics_are_none_and_unknown_labels_excluded():
  # Clothing1M-style: clean labels known for only some samples (-1 else).
  label = np.array([0, 0, 1, 1, 2, 2])
  clean = np.array([0, 1, 1, -1, -1, -1])
  report = detection.detection_report(_samples(
      [0.9, 0.1, 0.8, 0.0, 0.0, 0.0], None, label=label, clean_label=clean),
      rank_by="weight")
  assert report["num_samples"] == 6 and report["num_known"] == 3
  assert report["overall"]["auroc"] == 1.0
  # Class 1 has one known sample, clean: no AUROC, no precision.
  assert report["per_class"]["1"]["auroc"] is None
  assert report["per_class"]["1"]["at_realised_rate"]["precision"] is None
  assert "2" not in report["per_class"]
  assert detection.detection_report(detection.samples_from_arrays(
      {"index": [0, 1], "label": [0, 1], "loss": [1.0, 2.0],
       "weight": [0.5, 0.4]}, "x")) is None
  assert "AUROC" in detection.format_report(report)


def test_ranking_csv_order_and_contents(tmp_path):
  samples = _samples([0.5, 0.2, 0.2, 0.9], [0, 1, 0, 0],
                     loss=np.array([1.0, 3.0, 4.0, 0.5]))
  path = str(tmp_path / "ranking.csv")
  detection.write_ranking(samples, path, rank_by="weight")
  with open(path) as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["rank", "index", "label", "clean_label",
                           "is_noisy", "loss", "weight"]
  # Equal weights 0.2: the higher loss (4.0, index 102) is more suspicious.
  assert [int(r["index"]) for r in rows] == [102, 101, 100, 103]
  assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
  assert rows[1]["is_noisy"] == "1" and rows[1]["clean_label"] == "1"
  assert float(rows[0]["loss"]) == 4.0 and float(rows[3]["weight"]) == 0.9


def _disagreeing():
  """Loss ranks the corrupted positions 0 and 2 first; V's weight does not
  (position 0 weighs the most)."""
  noisy = np.array([1, 0, 1, 0, 0, 0], bool)
  return _samples([0.9, 0.1, 0.2, 0.8, 0.7, 0.6], noisy,
                  loss=np.array([5.0, 1.0, 4.0, 0.5, 0.2, 3.0])), noisy


def test_default_ranking_is_the_loss_and_every_ranking_is_scored():
  samples, noisy = _disagreeing()
  assert detection.DEFAULT_RANK_BY == "loss"
  report = detection.detection_report(samples)
  assert report["rank_by"] == "loss" and report["rule"].startswith(
      "high loss => corrupted label")
  overall = report["overall"]
  assert overall["auroc"] == 1.0 and overall["average_precision"] == 1.0
  assert overall["at_realised_rate"]["true_positives"] == 2
  signals = overall["signals"]
  assert set(signals) == set(detection.RANKINGS)
  assert signals["loss"] == {"auroc": 1.0, "average_precision": 1.0,
                             "precision_at_k": 1.0, "k": 2}
  # Weight: position 2 (0.2) is lighter than 3 of the 4 clean samples,
  # position 0 (0.9) than none: 3/8. Its 2 lightest: positions 1, 2.
  assert signals["weight"]["auroc"] == pytest.approx(3 / 8)
  assert signals["weight"]["precision_at_k"] == 0.5
  # loss+weight: loss ranks [6, 3, 5, 2, 1, 4], 1 - weight ranks
  # [1, 6, 5, 2, 3, 4]; means [3.5, 4.5, 5, 2, 2, 4]: position 2 beats all
  # 4 clean samples, position 0 beats 2 of them; the top 2 are 2 and 1.
  np.testing.assert_allclose(
      detection.suspicion(samples.weight, samples.loss, "loss+weight"),
      [3.5, 4.5, 5, 2, 2, 4])
  assert signals["loss+weight"]["auroc"] == pytest.approx(6 / 8)
  assert signals["loss+weight"]["precision_at_k"] == 0.5
  # The report under another ranking scores that one, same signals.
  by_weight = detection.detection_report(samples, rank_by="weight")
  assert by_weight["overall"]["auroc"] == pytest.approx(3 / 8)
  assert by_weight["overall"]["signals"] == signals
  assert "--rank_by=loss" in detection.format_report(report)
  with pytest.raises(AnalysisError, match="rank_by must be one of"):
    detection.detection_report(samples, rank_by="cleanlab")


def test_ranking_csv_and_suspects_follow_rank_by(tmp_path):
  samples, _ = _disagreeing()
  orders = {}
  for rank_by in detection.RANKINGS:
    path = str(tmp_path / f"{rank_by}.csv")
    detection.write_ranking(samples, path, rank_by)
    with open(path) as f:
      orders[rank_by] = [int(r["index"]) for r in csv.DictReader(f)]
    rows = suspects.suspect_rows(samples, None, None, rank_by)
    assert [r["index"] for r in rows] == orders[rank_by]
  # Loss, highest first; weight, lowest first; the mean ranks, highest
  # first (ties 2, 2 at positions 3 and 4: the lower weight first).
  assert orders["loss"] == [100, 102, 105, 101, 103, 104]
  assert orders["weight"] == [101, 102, 105, 104, 103, 100]
  assert orders["loss+weight"] == [102, 101, 105, 100, 104, 103]
  default = suspects.suspect_rows(samples, None, None)
  assert [r["index"] for r in default] == orders["loss"]
  # The most trusted of class 0: the lowest loss / the highest weight.
  assert samples.index[suspects.trusted_by_class(samples, 1)][0] == 104
  assert samples.index[suspects.trusted_by_class(samples, 1,
                                                 "weight")][0] == 100


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("weight"), "has no array 'weight'"),
    (lambda a: a.update(loss=np.array([1.0, np.nan, 2.0])), "NaN or inf"),
    (lambda a: a.update(index=np.array([1, 1, 2])), "duplicate"),
    (lambda a: a.update(label=np.array([0, 1])), "'label' must have shape"),
])
def test_sample_table_validation(change, message):
  arrays = {"index": np.arange(3), "label": np.zeros(3, int),
            "loss": np.ones(3), "weight": np.ones(3)}
  change(arrays)
  with pytest.raises(AnalysisError, match=message):
    detection.samples_from_arrays(arrays, "f.npz")


# ---------------------------------------------------------------- run dirs
def _assert_png(path, min_bytes=8000):
  assert os.path.getsize(path) > min_bytes, path
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  image = mpl_image.imread(path)
  assert image.ndim == 3 and min(image.shape[:2]) > 200
  assert image[..., :3].std() > 0.05  # Not a blank canvas.


def test_analyze_run_dir(tmp_path):
  model_dir = str(tmp_path / "run")
  truth = write_run(model_dir)
  out = report_lib.analyze(model_dir)
  # Generated without an operative config: the data cannot be rebuilt to
  # name the samples (a real run always has one), and only that is noted.
  assert out["num_samples"] == 400 and len(out["notes"]) == 1
  assert out["notes"][0].startswith("suspects.csv and review.csv name no "
                                    "files and no contact sheets were drawn")
  report = json.load(open(os.path.join(model_dir, "analysis",
                                       "detection.json")))
  noisy = truth["label"] != truth["clean"]
  # The default ranking is by loss (a high loss counts like a low weight).
  assert report["rank_by"] == "loss"
  assert report["overall"]["auroc"] == pytest.approx(
      _pairwise_auroc(noisy, -truth["loss"].astype(np.float32)), abs=1e-9)
  assert report["overall"]["signals"]["weight"]["auroc"] == pytest.approx(
      _pairwise_auroc(noisy, truth["weight"].astype(np.float32)), abs=1e-9)
  # The configured 0.4 differs from the realised rate: reported as well.
  assert report["rates"]["at_nominal_rate"]["k"] == 160
  assert report["rates"]["at_realised_rate"]["k"] == int(noisy.sum())
  with open(out["ranking_csv"]) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 400
  losses = [float(r["loss"]) for r in rows]
  assert losses == sorted(losses, reverse=True)
  assert int(rows[0]["index"]) == 2 * int(np.argmax(truth["loss"]))
  assert set(out["figures"]) == {"weighting_function", "weight_distribution",
                                 "weight_variation"}
  for path in out["figures"].values():
    _assert_png(path)


def test_weight_variation_from_tensorboard_events(tmp_path):
  model_dir = str(tmp_path / "run")
  write_run(model_dir, history=False, events=True)
  x, clean, noisy, xlabel, where = sources.read_weight_variation(
      sources.find_run_files(model_dir))
  np.testing.assert_array_equal(x, [10, 20, 30])
  np.testing.assert_allclose(clean, [0.6, 0.7, 0.8], rtol=1e-6)
  np.testing.assert_allclose(noisy, [0.4, 0.3, 0.2], rtol=1e-6)
  assert xlabel == "step" and "train/weight_clean" in where


def test_missing_weight_variation_is_a_note(tmp_path):
  model_dir = str(tmp_path / "run")
  write_run(model_dir, history=False)
  out = report_lib.analyze(model_dir, make_figures=True)
  assert "weight_variation" not in out["figures"]
  assert any("weight_variation.png not drawn" in n for n in out["notes"])


def test_ablation_figure_over_several_runs(tmp_path):
  dirs = []
  for name, units, method, acc, seed in (
      ("v100_s0", (100,), "mwn", 0.90, 0), ("v100_s1", (100,), "mwn", 0.92, 1),
      ("v10", (10,), "mwn", 0.88, 0), ("v50x50", (50, 50), "mwn", 0.91, 0),
      ("erm", (100,), "baseline", 0.80, 0)):
    dirs.append(str(tmp_path / name))
    write_run(dirs[-1], units=units, method=method, acc=acc, seed=seed)
  # One run records V's size only in its operative config, as gin writes it.
  results_path = os.path.join(dirs[2], "results.json")
  results = json.load(open(results_path))
  del results["hparams"]
  json.dump(results, open(results_path, "w"))
  with open(os.path.join(dirs[2], "operative_config.gin"), "w") as f:
    f.write("train_eval.weight_net_hidden_units = (10,)\n")
  out = report_lib.analyze(dirs[0], out_dir=str(tmp_path / "out"),
                           ablation_dirs=dirs)
  _assert_png(out["figures"]["ablation"])
  runs = json.load(open(tmp_path / "out" / "ablation.json"))
  assert [r["label"] for r in runs] == ["100", "100", "10", "50-50",
                                        "baseline"]
  assert runs[3]["hidden_units"] == [50, 50]
  assert runs[1]["best_epoch_test_accuracy"] == 0.92


def test_missing_files_name_the_file_and_command(tmp_path):
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  (model_dir / "results.json").write_text("{}")
  with pytest.raises(AnalysisError,
                     match=r"no sample_weights.npz.*operative_config.gin"
                     r".*python -m mwn_tf.main"):
    report_lib.analyze(str(model_dir))
  with pytest.raises(AnalysisError, match="not a directory"):
    report_lib.analyze(str(tmp_path / "nope"))
  with pytest.raises(AnalysisError, match="has no results.json"):
    report_lib.ablation_figure([str(model_dir.parent)], str(tmp_path / "o"))


# ------------------------------------------------------------------ scoring
@pytest.fixture(scope="module")
def exports(tmp_path_factory):
  """Tiny classifier + V: the runner's exports and plain Keras/tf.Module
  ones (logits out, V taking [b, 1])."""
  import keras  # pylint: disable=g-import-not-at-top
  from mwn_tf.runner import export as export_lib  # pylint: disable=g-import-not-at-top
  from mwn_tf.weight_net import WeightNet  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  # Keras' export lowers the absl logger to WARNING for the whole process;
  # put it back so later tests that capture INFO logs still see them.
  absl_level = std_logging.getLogger("absl").level
  root = tmp_path_factory.mktemp("exports")
  classifier = keras.Sequential([keras.Input((4, 4, 1)),
                                 keras.layers.Flatten(),
                                 keras.layers.Dense(3)])
  weight_net = WeightNet(hidden_units=(6,))
  paths = {"classifier": export_lib.export_classifier(
               classifier, str(root / "classifier")),
           "weight_net": export_lib.export_weight_net(
               weight_net, str(root / "weight_net")),
           "logits": str(root / "logits")}
  classifier.export(paths["logits"], format="tf_saved_model", verbose=False)

  class V(tf.Module):

    def __init__(self, net):
      super().__init__()
      self.net = net  # Tracked, so its variables are saved.

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32)])
    def serve(self, x):
      return {"w": tf.cast(self.net(x), tf.float32)}

  v = V(weight_net)
  paths["module_v"] = str(root / "module_v")
  tf.saved_model.save(v, paths["module_v"], signatures={"serving_default":
                                                          v.serve})
  std_logging.getLogger("absl").setLevel(absl_level)
  return paths, classifier, weight_net


def _score_data(path, n=50, **overrides):
  rng = np.random.default_rng(0)
  arrays = {"x": rng.normal(size=(n, 4, 4)).astype(np.float32),
            "y": rng.integers(0, 3, n), "clean_label": rng.integers(0, 3, n)}
  arrays.update(overrides)
  arrays = {k: v for k, v in arrays.items() if v is not None}
  np.savez(path, **arrays)
  return arrays


@pytest.mark.parametrize("classifier_key, weight_key", [
    ("classifier", "weight_net"), ("logits", "module_v")])
def test_score_new_data(tmp_path, exports, classifier_key, weight_key):
  paths, classifier, weight_net = exports
  data = _score_data(str(tmp_path / "new.npz"))
  out = report_lib.score(paths[classifier_key], paths[weight_key],
                         str(tmp_path / "new.npz"))
  assert out["out_dir"] == str(tmp_path / "new_scores")
  logits = np.asarray(classifier(data["x"][..., None]), np.float64)
  want_loss = (np.log(np.exp(logits).sum(-1)) -
               logits[np.arange(50), data["y"]])
  want_weight = np.asarray(weight_net(want_loss[:, None].astype(np.float32)))
  with open(out["ranking_csv"]) as f:
    rows = sorted(csv.DictReader(f), key=lambda r: int(r["index"]))
  np.testing.assert_allclose([float(r["loss"]) for r in rows], want_loss,
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose([float(r["weight"]) for r in rows],
                             want_weight.reshape(-1), rtol=1e-5)
  noisy = data["y"] != data["clean_label"]
  assert out["detection"]["overall"]["n_noisy"] == int(noisy.sum())
  assert out["detection"]["overall"]["signals"]["weight"][
      "auroc"] == pytest.approx(_pairwise_auroc(
          noisy, np.array([float(r["weight"]) for r in rows])), abs=1e-9)
  assert out["detection"]["overall"]["auroc"] == pytest.approx(
      _pairwise_auroc(noisy, -np.array([float(r["loss"]) for r in rows])),
      abs=1e-9)
  for path in out["figures"].values():
    _assert_png(path, min_bytes=5000)


def test_score_new_data_with_a_class_aware_v(tmp_path, exports):
  """A class-aware V's export weighs each loss by its label's cluster head,
  and the weighting figure draws one curve per cluster."""
  import keras  # pylint: disable=g-import-not-at-top
  from mwn_tf.runner import export as export_lib  # pylint: disable=g-import-not-at-top
  from mwn_tf.weight_net import ClassAwareWeightNet  # pylint: disable=g-import-not-at-top
  paths, classifier, _ = exports
  keras.utils.set_random_seed(4)
  weight_net = ClassAwareWeightNet((0, 1, 1), hidden_units=(6,))
  v_path = export_lib.export_weight_net(weight_net, str(tmp_path / "v"))
  endpoint = sources.weight_endpoint(v_path)
  assert endpoint.takes_labels and endpoint.cluster_map() == [0, 1, 1]
  grid, curves = sources.weight_curve(endpoint, 4.0, points=9)
  assert curves.shape == (9, 2)  # one column per cluster
  np.testing.assert_allclose(curves[:, 1], weight_net(
      (grid[:, None].astype(np.float32), np.ones(9, np.int32))).numpy()[:, 0],
                             rtol=1e-5)
  data = _score_data(str(tmp_path / "new.npz"))
  out = report_lib.score(paths["classifier"], v_path,
                         str(tmp_path / "new.npz"))
  logits = np.asarray(classifier(data["x"][..., None]), np.float64)
  want_loss = (np.log(np.exp(logits).sum(-1)) -
               logits[np.arange(50), data["y"]])
  want_weight = weight_net((want_loss[:, None].astype(np.float32),
                            data["y"].astype(np.int32))).numpy()[:, 0]
  with open(out["ranking_csv"]) as f:
    rows = sorted(csv.DictReader(f), key=lambda r: int(r["index"]))
  np.testing.assert_allclose([float(r["weight"]) for r in rows], want_weight,
                             rtol=1e-5)
  _assert_png(out["figures"]["weighting_function"])


def test_a_class_aware_curve_csv_reads_a_column_per_cluster(tmp_path):
  path = tmp_path / "weight_curve.csv"
  path.write_text("loss,weight_cluster_0,weight_cluster_1\n"
                  "1,0.5,0.25\n0,0.75,0.5\n")
  loss, weight = sources.read_curve(str(path))
  np.testing.assert_array_equal(loss, [0, 1])
  np.testing.assert_array_equal(weight, [[0.75, 0.5], [0.5, 0.25]])


def _truncate(path, size):
  blob = open(path, "rb").read()
  open(path, "wb").write(blob[:size])


def _flip_byte_in_member(path):
  """Corrupts the stored bytes of the first array inside the zip."""
  blob = bytearray(open(path, "rb").read())
  blob[200] ^= 0xFF
  open(path, "wb").write(bytes(blob))


@pytest.mark.parametrize("make, message", [
    (lambda p: _score_data(p, y=None), r"new.npz has no array 'label' "
     r"\(or 'y'\)"),
    (lambda p: _score_data(p, x=np.zeros((50, 8, 8, 3), np.float32)),
     r"new.npz: images have shape \[50, 8, 8, 3\], but the classifier "
     r"expects \[n, 4, 4, 1\]"),
    (lambda p: _score_data(p, y=np.full(50, 3)), r"'label' has 50 values "
     r"outside \[0, 3\)"),
    (lambda p: _score_data(p, clean_label=np.zeros(7, int)),
     r"'clean_label' must have shape \[50\]"),
    (lambda p: _truncate(p, 300), r"new.npz is not a readable .npz file"),
    (lambda p: _flip_byte_in_member(p), r"Cannot read array 'x' of .*new.npz"),
    (lambda p: np.save(open(p, "wb"), np.zeros(3)), r"single array"),
])
def test_score_input_errors(tmp_path, exports, make, message):
  paths = exports[0]
  path = str(tmp_path / "new.npz")
  _score_data(path)
  make(path)
  with pytest.raises(AnalysisError, match=message):
    report_lib.score(paths["classifier"], paths["weight_net"], path)


def test_not_a_savedmodel(tmp_path, exports):
  _score_data(str(tmp_path / "new.npz"))
  with pytest.raises(AnalysisError, match=r"no saved_model.pb.*export/"
                     r"weight_net"):
    report_lib.score(exports[0]["classifier"], str(tmp_path),
                     str(tmp_path / "new.npz"))


# ---------------------------------------------------------------------- CLI
def _cli(argv):
  fv = flags.FlagValues()
  analyze.define_flags(fv)
  rest = fv(["analyze"] + argv)
  return analyze.run(rest, fv)


@pytest.mark.parametrize("argv, message", [
    (["--batch_size=0"], "batch_size"),
    (["--flag_rate=1.5"], "flag_rate"),
    (["--top=-1"], "top"),
    (["--model_dir=/no/such/dir"], "--model_dir must name an existing folder"),
    (["--ablation_dirs=/no/such/dir"], "every --ablation_dirs entry"),
    (["--data=/no/such.npz"], "--data must name an existing file"),
    (["--source=weights"], "source"),
    (["--rank_by=cleanlab"], "rank_by"),
])
def test_flags_reject_bad_values(argv, message):
  fv = flags.FlagValues()
  analyze.define_flags(fv)
  with pytest.raises(flags.IllegalFlagValueError, match=message):
    fv(["analyze"] + argv)


def test_cli_messages(tmp_path, capsys, exports):
  assert _cli([]) == 1
  assert "--model_dir is required" in capsys.readouterr().err
  assert _cli(["frobnicate"]) == 2
  assert "unknown command 'frobnicate'" in capsys.readouterr().err
  assert _cli(["score", f"--classifier={exports[0]['classifier']}"]) == 1
  assert "`score` needs --weight_net, --data" in capsys.readouterr().err
  model_dir = str(tmp_path / "run")
  write_run(model_dir)
  assert _cli([f"--model_dir={model_dir}", "--top=3", "--nofigures"]) == 0
  out = capsys.readouterr().out
  assert "AUROC" in out and "Most distrusted samples (high loss first" in out
  ranking = os.path.join(model_dir, "analysis", "ranking.csv")
  assert _cli([f"--model_dir={model_dir}", "--top=3", "--nofigures",
               "--rank_by=weight"]) == 0
  out = capsys.readouterr().out
  assert "Most distrusted samples (low weight first" in out
  report = json.load(open(os.path.join(model_dir, "analysis",
                                       "detection.json")))
  assert report["rank_by"] == "weight"
  with open(ranking) as f:
    weights = [float(r["weight"]) for r in csv.DictReader(f)]
  # (This run's V is monotone in the loss, so both orders agree here;
  # test_ranking_csv_and_suspects_follow_rank_by has them differ.)
  assert weights == sorted(weights)
  assert not os.path.exists(os.path.join(model_dir, "analysis",
                                         "weight_variation.png"))


# ------------------------------------------------------------- end to end
@pytest.mark.slow
def test_smoke_run_then_analyze(tmp_path):
  """The real pipeline: train (gin/smoke.gin), then the analyze CLI; the
  samples recomputed from the exports and from the checkpoint agree with
  the runner's sample_weights.npz."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  repo = REPO
  model_dir = str(tmp_path / "smoke")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  subprocess.run([sys.executable, "-m", "mwn_tf.main",
                  "--gin_file=gin/smoke.gin", f"--model_dir={model_dir}"],
                 cwd=repo, env=env, check=True, capture_output=True)
  done = subprocess.run([sys.executable, "-m", "mwn_tf.analyze",
                         f"--model_dir={model_dir}", "--top=3"],
                        cwd=repo, env=env, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  assert "AUROC" in done.stdout and "Most distrusted samples" in done.stdout
  for name in ("ranking.csv", "detection.json", "weighting_function.png",
               "weight_distribution.png", "weight_variation.png"):
    assert os.path.exists(os.path.join(model_dir, "analysis", name)), name
  report = json.load(open(os.path.join(model_dir, "analysis",
                                       "detection.json")))
  assert report["num_known"] == 1197  # digits: 1797 - 500 test - 100 meta.
  files = sources.find_run_files(model_dir)
  stored = detection.load_samples(files.samples)
  for source in ("exports", "checkpoint"):
    again, _ = sources.recompute_samples(files, source)
    np.testing.assert_array_equal(again.index, stored.index)
    np.testing.assert_array_equal(again.label, stored.label)
    np.testing.assert_array_equal(again.clean_label, stored.clean_label)
    np.testing.assert_allclose(again.loss, stored.loss, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(again.weight, stored.weight, rtol=1e-4)
    np.testing.assert_array_equal(again.predicted, stored.predicted)
    np.testing.assert_allclose(again.probability, stored.probability,
                               rtol=1e-4)
  # A bad flag value fails fast with one line naming the flag.
  bad = subprocess.run([sys.executable, "-m", "mwn_tf.analyze",
                        f"--model_dir={model_dir}", "--flag_rate=2"],
                       cwd=repo, env=env, capture_output=True, text=True)
  assert bad.returncode == 1 and "--flag_rate=2" in bad.stderr


# ---------------------------------------------------------------- settings
def test_settings_come_from_results_json_before_the_gin_text(tmp_path):
  """Runs record every train_eval argument in results.json's `settings`;
  older runs (none there, e.g. tests/fixtures/old_run_f615b35) fall back to
  hparams and gin."""
  gin_text = ("train_eval.dataset = 'cifar10'\ntrain_eval.seed = 5\n"
              "train_eval.weight_net_hidden_units = (10,)\n")
  new = {"settings": {"dataset": "digits", "model": "mlp", "method": "mwn",
                      "seed": 3, "weight_net_hidden_units": [50, 50]}}
  got = sources.run_settings(new, gin_text)
  assert (got["dataset"], got["seed"], got["model"]) == ("digits", 3, "mlp")
  assert got["weight_net_hidden_units"] == (50, 50)
  old = sources.run_settings({"hparams": {"weight_net_hidden_units": "7"}},
                             gin_text)
  assert (old["dataset"], old["seed"], old["method"]) == ("cifar10", 5, "mwn")
  assert old["weight_net_hidden_units"] == (7,)
  assert sources.run_settings({}, "")["weight_net_hidden_units"] == (100,)
  # The ablation reads V's size from `settings` too.
  model_dir = str(tmp_path / "run")
  write_run(model_dir, units=(100,))
  results = json.load(open(os.path.join(model_dir, "results.json")))
  results["settings"] = {"method": "mwn", "weight_net_hidden_units": [20]}
  json.dump(results, open(os.path.join(model_dir, "results.json"), "w"))
  assert report_lib.describe_run(model_dir)["hidden_units"] == [20]


def test_an_old_run_dir_still_analyses(tmp_path):
  """A model_dir written before results.json had `settings` (the runner of
  f615b35, tests/fixtures/old_run_f615b35): the classifier and V rebuilt
  from its settings and restored from its checkpoint give its stored
  per-sample losses and weights, and the whole analysis runs on it."""
  import shutil  # pylint: disable=g-import-not-at-top
  model_dir = str(tmp_path / "old_run")
  shutil.copytree(os.path.join(REPO, "tests", "fixtures", "old_run_f615b35"),
                  model_dir)
  assert "settings" not in json.load(open(os.path.join(model_dir,
                                                       "results.json")))
  files = sources.find_run_files(model_dir)
  stored = detection.load_samples(files.samples)
  again, _ = sources.recompute_samples(files, "checkpoint")
  np.testing.assert_array_equal(again.index, stored.index)
  np.testing.assert_array_equal(again.label, stored.label)
  np.testing.assert_allclose(again.loss, stored.loss, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(again.weight, stored.weight, rtol=1e-4)
  out = report_lib.analyze(model_dir, source="checkpoint")
  assert out["num_samples"] == 1197 and out["detection"] is not None
  assert set(out["figures"]) == {"weighting_function", "weight_distribution",
                                 "weight_variation", "distrusted_sheet",
                                 "trusted_sheet"}
