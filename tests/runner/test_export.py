"""Atomic SavedModel export: loads with plain TF, reproduces the model."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from mwn_tf.runner import export
from mwn_tf import models
from mwn_tf.weight_net import WeightNet


@pytest.fixture(scope="module")
def nets():
  keras.utils.set_random_seed(1)
  classifier = models.get("small_cnn", num_classes=10, input_shape=(8, 8, 1))
  return classifier, WeightNet()


def test_classifier_export_reproduces_probabilities(nets, tmp_path):
  classifier, _ = nets
  path = export.export_classifier(classifier, str(tmp_path / "classifier"))
  loaded = tf.saved_model.load(path)
  images = np.random.default_rng(0).random((5, 8, 8, 1), np.float32)
  expected = tf.nn.softmax(classifier(images, training=False)).numpy()
  got = loaded.serve(images)["probabilities"].numpy()
  assert got.shape == (5, 10)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)
  # The serving signature (TF Serving, saved_model_cli) says the same.
  sig = loaded.signatures["serving_default"]
  np.testing.assert_allclose(
      sig(images=tf.constant(images))["probabilities"].numpy(), expected,
      rtol=1e-5, atol=1e-6)


def test_weight_net_export_takes_both_loss_shapes(nets, tmp_path):
  _, weight_net = nets
  path = export.export_weight_net(weight_net, str(tmp_path / "weight_net"))
  loaded = tf.saved_model.load(path)
  losses = np.linspace(0.0, 8.0, 9, dtype=np.float32)
  expected = weight_net(losses[:, None]).numpy()
  flat = loaded.serve(losses)["weights"].numpy()
  column = loaded.serve(losses[:, None])["weights"].numpy()
  assert flat.shape == (9,) and column.shape == (9, 1)
  np.testing.assert_allclose(flat, expected[:, 0], rtol=1e-6)
  np.testing.assert_allclose(column, expected, rtol=1e-6)


def test_export_replaces_atomically_and_survives_a_crash(nets, tmp_path,
                                                         monkeypatch):
  classifier, weight_net = nets
  path = str(tmp_path / "weight_net")
  export.export_weight_net(weight_net, path)
  before = sorted(os.listdir(path))

  def crash(self, filepath, **kwargs):
    os.makedirs(filepath)  # half-written: a folder with nothing useful
    raise RuntimeError("killed mid-write")

  # ExportArchive() returns a format-specific subclass: patch that one.
  monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", crash)
  with pytest.raises(RuntimeError, match="killed mid-write"):
    export.export_weight_net(weight_net, path)
  monkeypatch.undo()
  # The previous export is untouched and still loads.
  assert sorted(os.listdir(path)) == before
  loaded = tf.saved_model.load(path)  # Keep a reference while calling it.
  assert loaded.serve(np.ones([2], np.float32))["weights"].shape == (2,)
  # The next export cleans the leftover and replaces the old one.
  assert any(".tmp-" in e for e in os.listdir(tmp_path))
  export.export_weight_net(weight_net, path)
  assert sorted(os.listdir(tmp_path)) == ["weight_net"]


def test_clean_stale_restores_an_export_moved_aside(nets, tmp_path):
  _, weight_net = nets
  path = str(tmp_path / "weight_net")
  export.export_weight_net(weight_net, path)
  # A kill between the two renames leaves only the moved-aside old copy.
  os.rename(path, path + ".old-deadbeef")
  export.clean_stale(path)
  assert sorted(os.listdir(tmp_path)) == ["weight_net"]
  tf.saved_model.load(path)


def test_write_file_atomically(tmp_path):
  path = str(tmp_path / "results.json")
  export.write_file_atomically(path, "one")
  export.write_file_atomically(path, b"two")
  assert open(path).read() == "two"
  assert os.listdir(tmp_path) == ["results.json"]


def test_remove_stale_files_takes_only_killed_atomic_writes(tmp_path):
  export.write_file_atomically(str(tmp_path / "results.json"), "done")
  for name in ("results.json.tmp-0123abcd", "curve.csv.tmp-89abcdef"):
    (tmp_path / name).write_text("half")
  for name in ("notes.tmp-later.txt", "a.tmp-0123abcd.bak"):  # not ours
    (tmp_path / name).write_text("keep")
  (tmp_path / "classifier.tmp-0123abcd").mkdir()  # an export's: clean_stale
  export.remove_stale_files(str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == [
      "a.tmp-0123abcd.bak", "classifier.tmp-0123abcd", "notes.tmp-later.txt",
      "results.json"]
