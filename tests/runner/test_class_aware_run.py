"""`train_eval.weight_net = 'class_aware'` through the entry point: the
cluster map in results.json, a weighting curve per cluster, and bad values
refused in one line before anything is written."""

import csv
import json

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator as ea

from helpers import call_main
from helpers import refused_line

CLASS_AWARE = "--gin_param=train_eval.weight_net = 'class_aware'"


@pytest.fixture(scope="module")
def class_aware_run(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("class_aware")
  capsys = _Capture()
  status, _, err = call_main(
      ["--gin_file=gin/smoke.gin", f"--model_dir={model_dir}", CLASS_AWARE,
       # A long tail, so the classes' counts fall in three groups.
       "--gin_param=digits.imbalance_factor = 10"], capsys)
  assert status == 0, err
  return model_dir


class _Capture:
  """What `call_main` needs of pytest's capsys, for a module fixture."""

  def readouterr(self):
    return "", ""


def test_results_record_the_setting_and_the_cluster_map(class_aware_run):
  results = json.loads((class_aware_run / "results.json").read_text())
  assert results["finished"]
  assert results["settings"]["weight_net"] == "class_aware"
  assert results["settings"]["weight_net_clusters"] == 3
  assert results["hparams"]["weight_net"] == "class_aware"
  clusters = results["class_clusters"]
  counts = np.array(clusters["class_counts"])
  cluster_map = np.array(clusters["cluster_map"])
  assert clusters["source"] == "k-means" and len(cluster_map) == 10
  assert set(cluster_map) == {0, 1, 2}
  # Cluster 0 holds the most frequent classes, cluster 2 the rarest.
  assert counts[cluster_map == 0].min() > counts[cluster_map == 2].max()
  assert [c["classes"] for c in clusters["clusters"]] == [
      int(np.sum(cluster_map == c)) for c in range(3)]
  # The counts are those of the labels trained on (the noisy ones).
  assert counts.sum() == results["data"]["num_train"]


def test_one_weighting_curve_per_cluster(class_aware_run):
  with open(class_aware_run / "weight_curve.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["loss", "weight_cluster_0", "weight_cluster_1",
                           "weight_cluster_2"]
  weights = np.array([[float(r[k]) for k in list(r)[1:]] for r in rows])
  assert ((weights > 0) & (weights < 1)).all()
  assert not np.allclose(weights[:, 0], weights[:, 1])  # separate heads
  results = json.loads((class_aware_run / "results.json").read_text())
  assert all(len(row) == 4 for row in results["history"][-1]["curve"])
  acc = ea.EventAccumulator(str(class_aware_run),
                            size_guidance={ea.TENSORS: 0})
  acc.Reload()
  tags = set(acc.Tags()["tensors"])
  assert {f"meta/weight_at_loss/1/cluster_{c}" for c in range(3)} <= tags
  assert "meta/weighting_function" in tags


@pytest.mark.parametrize("bindings,fix", [
    (["train_eval.weight_net = 'cmw'"], "train_eval.weight_net must be one "
     "of 'mlp', 'class_aware', got 'cmw'."),
    (["train_eval.weight_net_clusters = 0"], "train_eval.weight_net_clusters "
     "must be an integer >= 1, got 0."),
    (["train_eval.weight_net = 'class_aware'",
      "train_eval.weight_net_cluster_map = (0, 2)"],
     "train_eval.weight_net_cluster_map must be None (k-means) or a tuple"),
    (["train_eval.weight_net = 'class_aware'",
      "train_eval.weight_net_cluster_map = (0, 1, 1)"],
     "train_eval.weight_net_cluster_map must have one cluster id per class "
     "(10 classes), got 3 ('digits')."),
    (["train_eval.weight_net_cluster_map = (0, 1)"],
     "train_eval.weight_net_cluster_map is read only with "
     "train_eval.weight_net = 'class_aware'"),
])
def test_a_bad_class_aware_setting_is_one_line_before_anything_is_written(
    tmp_path, capsys, bindings, fix):
  line, _ = refused_line(tmp_path, capsys, bindings)
  assert fix in line


def test_a_given_map_is_used(tmp_path, capsys):
  cluster_map = (1, 0, 0, 0, 0, 0, 0, 0, 0, 1)
  status, _, err = call_main(
      ["--gin_file=gin/smoke.gin", f"--model_dir={tmp_path}", CLASS_AWARE,
       f"--gin_param=train_eval.weight_net_cluster_map = {cluster_map}",
       "--gin_param=train_eval.train_steps = 1",
       "--gin_param=train_eval.export = False"], capsys)
  assert status == 0, err
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["class_clusters"]["cluster_map"] == list(cluster_map)
  assert results["class_clusters"]["source"] == (
      "train_eval.weight_net_cluster_map")
  assert results["settings"]["weight_net_cluster_map"] == list(cluster_map)
