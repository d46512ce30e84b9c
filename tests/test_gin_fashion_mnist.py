"""gin/fashion_mnist_*.gin: what each binds and the data each gives on the
real Fashion-MNIST files; every file runs end to end through `python -m
mwn_tf.main`, and the sweep's pipeline (train, then `python -m
mwn_tf.analyze`) is checked on one of them, in test_gin_end_to_end.py. Also
fmnist_cnn, the model they train."""

import os

from mwn_tf import data as data_lib

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from mwn_tf import models
from mwn_tf.runner import train_eval  # noqa: F401  registers every configurable
from mwn_tf.models.batch_norm import MetaBatchNormalization
import real_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {
    # file: (noise_type, noise_rate, imbalance_factor, num_meta); the base
    # file (included by the others) alone trains on clean labels.
    "base_fashion_mnist.gin": (None, None, None, None),
    "fashion_mnist_uniform_40.gin": ("uniform", 0.4, None, None),
    "fashion_mnist_uniform_60.gin": ("uniform", 0.6, None, None),
    "fashion_mnist_flip_40.gin": ("flip", 0.4, None, None),
    "fashion_mnist_longtail_50.gin": (None, None, 50.0, 100),
    "fashion_mnist_longtail_50_flip_40.gin": ("flip", 0.4, 50.0, 100),
}
# Added after a setting's file for a quick check; not a results recipe.
QUICK = "fashion_mnist_quick.gin"


def parse(name):
  if REPO not in gin.config._LOCATION_PREFIXES:  # pylint: disable=protected-access
    gin.add_config_file_search_path(REPO)
  gin.parse_config_file(os.path.join("gin", name), skip_unknown=False)


def query(binding):
  try:
    return gin.query_parameter(binding)
  except ValueError:
    return None


def test_every_fashion_mnist_gin_file_is_listed():
  shipped = {n for n in os.listdir(os.path.join(REPO, "gin"))
             if "fashion_mnist" in n}
  assert shipped == set(SETTINGS) | {QUICK}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_bindings(name):
  parse(name)
  noise_type, rate, factor, num_meta = SETTINGS[name]
  assert query("train_eval.dataset") == "fashion_mnist"
  assert query("train_eval.model") == "fmnist_cnn"
  assert query("fashion_mnist.noise_type") == noise_type
  assert query("fashion_mnist.noise_rate") == rate
  assert query("fashion_mnist.imbalance_factor") == factor
  assert query("fashion_mnist.num_meta") == num_meta
  # The scale recipe: 20,000 noisy images, a 0.42M-parameter classifier.
  assert query("fashion_mnist.num_train") == 20000
  assert query("fmnist_cnn.filters") == (32, 64)
  assert query("fmnist_cnn.hidden_units") == (128,)
  assert query("train_eval.normalize_weights") == "sum"
  assert query("train_eval.learning_rate") == 0.1  # the paper's
  # The paper's schedule, x0.1 at 80/120 and 100/120 of the run, rounded.
  epochs = query("train_eval.epochs")
  decay = query("train_eval.lr_decay_epochs")
  assert [round(epochs * f) for f in (80 / 120, 100 / 120)] == list(decay)
  # About 2,400 steps of batch 100 in every setting (the long tail has
  # fewer images, so more epochs).
  if name != "base_fashion_mnist.gin":
    splits = _loaded(name)
    steps = epochs * splits.steps_per_epoch(100)
    assert 2200 <= steps <= 2400, steps
  # MW-Net.py's defaults are kept for everything else.
  for unbound in ("momentum", "weight_decay", "batch_size", "meta_batch_size",
                  "meta_optimizer", "meta_learning_rate",
                  "meta_weight_decay"):
    assert query(f"train_eval.{unbound}") is None, unbound


def _loaded(name):
  """The DataSplits `name` gives on the real files (no training)."""
  real_data.require_fashion_mnist()
  return data_lib.get("fashion_mnist", seed=0)


@pytest.mark.parametrize("name", sorted(set(SETTINGS) - {
    "base_fashion_mnist.gin"}))
def test_data(name):
  parse(name)
  noise_type, rate, factor, num_meta = SETTINGS[name]
  summary = _loaded(name).summary(include_matrix=False)
  assert summary["image_shape"] == [28, 28, 1]
  assert summary["num_test"] == 10000
  assert summary["num_meta"] == (num_meta or 1000)
  counts = summary["class_counts"]
  if factor:
    # n_max = 2,000 of the 20,000 subset, down to 2,000 / 50 = 40.
    assert counts[0] == 2000 and counts[-1] == 40
    assert all(a >= b for a, b in zip(counts, counts[1:]))
  else:
    assert counts == [2000] * 10
  assert summary["noise_type"] == (noise_type or "none")


def test_quick_variant_shrinks_any_setting():
  parse("fashion_mnist_flip_40.gin")
  parse(QUICK)
  assert query("fashion_mnist.noise_type") == "flip"  # the setting's
  assert query("fashion_mnist.num_train") == 5000
  assert query("train_eval.epochs") == 3
  assert query("train_eval.lr_decay_epochs") == (2,)


# --- fmnist_cnn ---

def test_fmnist_cnn_layers_and_parameter_count():
  model = models.get("fmnist_cnn", num_classes=10, input_shape=(28, 28, 1))
  bns = [l for l in model.layers if isinstance(l, MetaBatchNormalization)]
  assert [bn.name for bn in bns] == ["bn1", "bn2"]
  assert all(bn.momentum == pytest.approx(0.9) and
             bn.epsilon == pytest.approx(1e-5) for bn in bns)
  assert model.get_layer("flatten").output.shape[1:] == (7 * 7 * 32,)
  # conv 3*3*1*16, bn 2*16, conv 3*3*16*32, bn 2*32, dense 1568*10 + 10.
  trainable = 144 + 32 + 4608 + 64 + 15690
  assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == (
      trainable)
  assert sum(int(np.prod(v.shape)) for v in model.non_trainable_variables) == (
      2 * 16 + 2 * 32)  # moving mean and variance


def test_fmnist_cnn_forward_and_stateless_call_agree():
  model = models.get("fmnist_cnn", num_classes=10, input_shape=(28, 28, 1),
                     filters=(4, 8))
  x = tf.constant(np.random.default_rng(0).normal(size=(5, 28, 28, 1)),
                  tf.float32)
  for training in (False, True):
    y = model(x, training=training)
    assert tuple(y.shape) == (5, 10) and y.dtype == tf.float32
    logits, _ = model.stateless_call(
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables], x,
        training=training)
    np.testing.assert_allclose(logits.numpy(), y.numpy(), rtol=1e-5,
                               atol=1e-5)
  assert isinstance(model, keras.Model)


def test_fmnist_cnn_results_recipe_has_a_hidden_bn_layer():
  """The scale recipe's classifier: (32, 64) channels, a 128-unit hidden
  Dense -> BN -> ReLU, about 0.42M parameters."""
  model = models.get("fmnist_cnn", num_classes=10, input_shape=(28, 28, 1),
                     filters=(32, 64), hidden_units=(128,))
  bns = [l.name for l in model.layers
         if isinstance(l, MetaBatchNormalization)]
  assert bns == ["bn1", "bn2", "dense_bn1"]
  assert model.get_layer("dense1").kernel.shape == (7 * 7 * 64, 128)
  assert model.get_layer("dense1").bias is None  # BN's beta is the bias
  # conv 9*32, bn 2*32, conv 9*32*64, bn 2*64, dense 3136*128, bn 2*128,
  # logits 128*10 + 10.
  trainable = 288 + 64 + 18432 + 128 + 401408 + 256 + 1290
  assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == (
      trainable)
  logits, _ = model.stateless_call(
      [v.value for v in model.trainable_variables],
      [v.value for v in model.non_trainable_variables],
      tf.zeros((2, 28, 28, 1)), training=True)
  assert tuple(logits.shape) == (2, 10)
