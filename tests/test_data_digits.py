"""Registry, gin bindings and the DataSplits pipelines on sklearn digits."""

import json
import math

import gin
import numpy as np
import pytest
from sklearn import datasets as sk_datasets
import tensorflow as tf

import mwn_tf.data
from mwn_tf.data import DataSplits

KEYS = {"image": tf.float32, "label": tf.int32, "clean_label": tf.int32,
        "index": tf.int64, "is_noisy": tf.bool}


@pytest.fixture(scope="module")
def noisy():
  return mwn_tf.data.get("digits", noise_type="uniform", noise_rate=0.4,
                         seed=0)


def _collect(ds):
  out = {k: [] for k in KEYS}
  for batch in ds:
    for k in KEYS:
      out[k].append(batch[k].numpy())
  return {k: np.concatenate(v) for k, v in out.items()}


def test_registry_names_and_unknown():
  assert {"digits", "cifar10", "cifar100", "cifar10_n", "cifar100_n",
          "clothing1m", "folder", "npz"} <= set(mwn_tf.data.names())
  with pytest.raises(ValueError, match=r"Unknown dataset 'mnist'; known "
                     r"datasets: cifar10, cifar100, cifar100_n, cifar10_n, "
                     r"clothing1m, digits, fashion_mnist, folder, npz"):
    mwn_tf.data.get("mnist")


def test_contract_attributes(noisy):
  assert isinstance(noisy, DataSplits)
  assert noisy.name == "digits" and noisy.num_classes == 10
  assert noisy.image_shape == (8, 8, 1)
  assert (noisy.num_train, noisy.num_meta, noisy.num_test) == (1197, 100, 500)
  assert noisy.num_train + noisy.num_meta + noisy.num_test == 1797
  assert noisy.transition_matrix.shape == (10, 10)
  assert noisy.class_counts.sum() == noisy.num_train
  summary = noisy.summary()
  json.dumps(summary)  # Serialisable.
  for key in ("noise_type", "noise_rate", "realised_noise_rate",
              "imbalance_factor", "class_counts", "seed", "num_meta"):
    assert key in summary
  assert summary["noise_rate"] == 0.4
  train = noisy.arrays["train"]
  assert summary["realised_noise_rate"] == np.mean(
      train["label"] != train["clean_label"])


def test_fixed_stratified_test_split_and_meta(noisy):
  other = mwn_tf.data.get("digits", seed=5)
  np.testing.assert_array_equal(noisy.arrays["test"]["index"],
                                other.arrays["test"]["index"])
  target = sk_datasets.load_digits().target
  test_idx = noisy.arrays["test"]["index"]
  # Stratified: every class's test share is within one image of 500/1797.
  for c in range(10):
    share = np.sum(target[test_idx] == c)
    assert abs(share - 500 * np.sum(target == c) / 1797) <= 1
  meta, train = noisy.arrays["meta"], noisy.arrays["train"]
  assert not set(meta["index"]) & set(train["index"])
  assert not set(meta["index"]) & set(test_idx)
  np.testing.assert_array_equal(meta["label"], target[meta["index"]])
  np.testing.assert_array_equal(np.bincount(meta["label"]), [10] * 10)
  np.testing.assert_array_equal(train["clean_label"], target[train["index"]])


def test_train_and_meta_contract(noisy):
  ds = noisy.train_and_meta(64, meta_batch_size=32)
  assert isinstance(ds, tf.data.Dataset)
  batches = list(ds)
  assert len(batches) == noisy.steps_per_epoch(64) == 1197 // 64
  train_batch, meta_batch = batches[0]
  for batch, size in ((train_batch, 64), (meta_batch, 32)):
    assert set(batch) == set(KEYS)
    for k, dtype in KEYS.items():
      assert batch[k].dtype == dtype
      assert batch[k].shape[0] == size
    assert batch["image"].shape == (size, 8, 8, 1)
  images = train_batch["image"].numpy()
  assert images.min() >= 0.0 and images.max() <= 1.0
  np.testing.assert_array_equal(
      train_batch["is_noisy"],
      train_batch["label"] != train_batch["clean_label"])
  assert not meta_batch["is_noisy"].numpy().any()
  # One epoch visits distinct training examples only; none from the meta set.
  seen = np.concatenate([t["index"].numpy() for t, _ in batches])
  assert len(set(seen)) == seen.size
  assert set(seen) <= set(noisy.arrays["train"]["index"])
  metas = np.concatenate([m["index"].numpy() for _, m in batches])
  assert set(metas) <= set(noisy.arrays["meta"]["index"])
  # The meta stream repeats past one pass of the 100-image meta set.
  assert metas.size > 100


def test_labels_and_images_match_source(noisy):
  digits = sk_datasets.load_digits()
  got = _collect(noisy.train_for_eval(256))
  train = noisy.arrays["train"]
  np.testing.assert_array_equal(got["index"], train["index"])
  assert np.all(np.diff(got["index"]) > 0)  # Source order, no shuffle.
  np.testing.assert_array_equal(got["label"], train["label"])
  np.testing.assert_array_equal(got["clean_label"], digits.target[got["index"]])
  np.testing.assert_allclose(got["image"][..., 0],
                             digits.images[got["index"]] / 16.0)
  test = _collect(noisy.test(128))  # 500 = 3 * 128 + 116: remainder kept.
  assert test["index"].size == 500 and not test["is_noisy"].any()
  np.testing.assert_array_equal(test["label"], digits.target[test["index"]])


def test_epochs_reshuffle_deterministically():
  def first_epochs(seed):
    ds = mwn_tf.data.get("digits", seed=seed).train_and_meta(100)
    return [np.concatenate([t["index"].numpy() for t, _ in ds])
            for _ in range(2)]
  a, b, c = first_epochs(1), first_epochs(1), first_epochs(2)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[0], a[1])  # A new order every epoch.
  assert not np.array_equal(a[0], c[0])


def test_determinism_of_arrays():
  kw = dict(noise_type="flip", noise_rate=0.3, imbalance_factor=5)
  a = mwn_tf.data.get("digits", seed=3, **kw)
  b = mwn_tf.data.get("digits", seed=3, **kw)
  c = mwn_tf.data.get("digits", seed=4, **kw)
  for split in ("train", "meta"):
    for k in ("label", "index"):
      np.testing.assert_array_equal(a.arrays[split][k], b.arrays[split][k])
      assert not np.array_equal(a.arrays[split][k], c.arrays[split][k])


def test_long_tail_counts_on_digits():
  d = mwn_tf.data.get("digits", imbalance_factor=10, num_meta=50)
  target = sk_datasets.load_digits().target
  clean = mwn_tf.data.get("digits", num_meta=50)
  avail = np.bincount(clean.arrays["train"]["clean_label"], minlength=10)
  n_max = avail.min()  # Documented: smallest per-class count after meta.
  want = [math.floor(n_max * 0.1 ** (i / 9)) for i in range(10)]
  np.testing.assert_array_equal(d.class_counts, want)
  np.testing.assert_array_equal(
      np.bincount(target[d.arrays["train"]["index"]], minlength=10), want)
  assert d.num_test == 500  # Test untouched.


def test_gin_binds_every_setting():
  gin.parse_config([
      "mwn_tf.data.get.name = 'digits'",
      "digits.num_meta = 50",
      "digits.noise_type = 'flip2'",
      "digits.noise_rate = 0.2",
      "digits.imbalance_factor = 2.0",
      "digits.seed = 7",
      "digits.test_size = 400",
  ])
  d = mwn_tf.data.get()
  s = d.summary()
  assert (s["dataset"], s["num_meta"], s["noise_type"], s["noise_rate"],
          s["imbalance_factor"], s["seed"], s["num_test"]) == (
              "digits", 50, "flip2", 0.2, 2.0, 7, 400)
  # Explicit keyword arguments win over gin bindings.
  assert mwn_tf.data.get(seed=8).seed == 8


def test_batch_larger_than_train_message():
  d = mwn_tf.data.get("digits")
  with pytest.raises(ValueError, match="larger than the 1197 training"):
    d.train_and_meta(5000)


@pytest.mark.parametrize("kwargs,message", [
    (dict(noise_type="uniform", noise_rate=2.0), r"must be in \[0, 1\]"),
    (dict(noise_type="pairflip", noise_rate=0.2), "Unknown noise_type"),
    (dict(noise_type="hierarchical", noise_rate=0.2),
     "digits has none"),
    (dict(imbalance_factor=0.1), "imbalance_factor must be >= 1"),
    (dict(num_meta=5000), "lower digits.num_meta to at most"),
])
def test_bad_inputs(kwargs, message):
  with pytest.raises(ValueError, match=message):
    mwn_tf.data.get("digits", **kwargs)
