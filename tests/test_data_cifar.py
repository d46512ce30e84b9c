"""CIFAR-10/100 loaders under tfds.testing.mock_data (no network)."""

import math
import os

import gin
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import mwn_tf.data

MEAN = np.array([125.3, 123.0, 113.9]) / 255  # The paper's constants.
STD = np.array([63.0, 62.1, 66.7]) / 255
N_MOCK = 1000  # Mock examples per split (random labels, ~100 per class).


def _raw(name, split):
  """The mocked split read straight from TFDS, independent of mwn_tf."""
  ds = tfds.load(name, split=split, shuffle_files=False)
  chunks = list(tfds.as_numpy(ds.batch(4096)))
  return {k: np.concatenate([c[k] for c in chunks]) for k in ("image",
                                                              "label")}


@pytest.fixture(scope="module")
def flip():
  with tfds.testing.mock_data(num_examples=N_MOCK):
    d = mwn_tf.data.get("cifar10", num_meta=100, noise_type="flip",
                        noise_rate=0.4, seed=0)
    return d, _raw("cifar10", "train"), _raw("cifar10", "test")


def _denormalise(images):
  return (images * STD + MEAN) * 255.0


def _is_window(aug, source, pad=4):
  """aug [32, 32, 3] (0..255 floats) is a crop of the reflect-padded
  source, possibly flipped left-right; returns (offset_y, offset_x, flip)."""
  padded = np.pad(source.astype(np.float64), [(pad, pad), (pad, pad), (0, 0)],
                  mode="reflect")
  for flipped in (False, True):
    img = aug[:, ::-1] if flipped else aug
    for dy in range(2 * pad + 1):
      for dx in range(2 * pad + 1):
        if np.allclose(padded[dy:dy + 32, dx:dx + 32], img, atol=1e-2):
          return dy, dx, flipped
  return None


def test_pipeline_contract_and_augmentation(flip):
  d, train_raw, _ = flip
  assert d.image_shape == (32, 32, 3) and d.num_classes == 10
  assert d.num_meta == 100 and d.num_train == N_MOCK - 100
  train_batch, meta_batch = next(iter(d.train_and_meta(32)))
  assert train_batch["image"].shape == (32, 32, 32, 3)
  assert train_batch["image"].dtype == tf.float32
  assert meta_batch["image"].shape == (32, 32, 32, 3)
  lo, hi = (0 - MEAN) / STD, (1 - MEAN) / STD
  for batch in (train_batch, meta_batch):
    images = batch["image"].numpy()
    assert np.all(images >= lo - 1e-5) and np.all(images <= hi + 1e-5)
    windows = [_is_window(_denormalise(img), train_raw["image"][i])
               for img, i in zip(images, batch["index"].numpy())]
    assert all(w is not None for w in windows), "not a pad/crop/flip"
    # Random crops and flips, not the identity every time.
    assert len(set(windows)) > 1
  # Meta labels are the clean source labels.
  np.testing.assert_array_equal(meta_batch["label"],
                                train_raw["label"][meta_batch["index"]])


def test_test_split_is_not_augmented(flip):
  d, _, test_raw = flip
  images, index, labels = [], [], []
  for batch in d.test(300):
    images.append(batch["image"].numpy())
    index.append(batch["index"].numpy())
    labels.append(batch["label"].numpy())
    assert not batch["is_noisy"].numpy().any()
  images, index = np.concatenate(images), np.concatenate(index)
  assert index.size == N_MOCK
  want = (test_raw["image"][index] / 255.0 - MEAN) / STD
  np.testing.assert_allclose(images, want, atol=1e-5)
  np.testing.assert_array_equal(np.concatenate(labels),
                                test_raw["label"][index])


def test_flip_noise_on_train_only(flip):
  d, train_raw, _ = flip
  train, meta = d.arrays["train"], d.arrays["meta"]
  np.testing.assert_array_equal(train["clean_label"],
                                train_raw["label"][train["index"]])
  n, r = train["label"].size, 0.4
  realised = np.mean(train["label"] != train["clean_label"])
  assert realised == d.realised_noise_rate
  assert abs(realised - r) <= 5 * math.sqrt(r * (1 - r) / n)
  c = d.transition_matrix
  # Every observed label is the clean one or that class's single flip target.
  assert np.all(c[train["clean_label"], train["label"]] > 0)
  assert not set(meta["index"]) & set(train["index"])
  np.testing.assert_array_equal(meta["label"],
                                train_raw["label"][meta["index"]])
  np.testing.assert_array_equal(np.bincount(meta["label"]), [10] * 10)


def test_long_tail_with_noise_counts():
  with tfds.testing.mock_data(num_examples=N_MOCK):
    d = mwn_tf.data.get("cifar10", imbalance_factor=10, noise_type="uniform",
                        noise_rate=0.2, seed=1)
    raw = _raw("cifar10", "train")
  assert d.num_meta == 100  # Paper default for long tail: 10 per class.
  n_max = np.bincount(raw["label"], minlength=10).min() - 10
  want = [math.floor(n_max * 0.1 ** (i / 9)) for i in range(10)]
  np.testing.assert_array_equal(d.class_counts, want)
  np.testing.assert_array_equal(
      np.bincount(raw["label"][d.arrays["train"]["index"]], minlength=10), want)
  assert d.num_test == N_MOCK


def test_default_noise_meta_is_1000():
  with tfds.testing.mock_data(num_examples=N_MOCK):
    with pytest.raises(ValueError,
                       match="cifar10.num_meta = 1000 asks 100 per class"):
      mwn_tf.data.get("cifar10", noise_type="uniform", noise_rate=0.4)


def test_no_augmentation_option():
  with tfds.testing.mock_data(num_examples=300):
    d = mwn_tf.data.get("cifar10", num_meta=50, augment=False)
    raw = _raw("cifar10", "train")
  batch, _ = next(iter(d.train_and_meta(16)))
  want = (raw["image"][batch["index"].numpy()] / 255.0 - MEAN) / STD
  np.testing.assert_allclose(batch["image"].numpy(), want, atol=1e-5)


def _fake_cifar100(self, split, **unused_kwargs):
  """2000 examples, 20 per fine class, coarse_label consistent with label."""
  del self, unused_kwargs
  n = 2000
  labels = np.arange(n, dtype=np.int64) % 100
  images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), np.uint8)
  return tf.data.Dataset.from_tensor_slices({
      "image": images, "label": labels, "coarse_label": labels // 5,
      "id": np.array([f"{split}_{i:05d}" for i in range(n)])})


def test_cifar100_hierarchical_via_coarse_label():
  r = 0.4
  with tfds.testing.mock_data(as_dataset_fn=_fake_cifar100):
    d = mwn_tf.data.get("cifar100", noise_type="hierarchical", noise_rate=r)
  assert d.num_meta == 1000 and d.num_classes == 100
  c = d.transition_matrix
  for i in (0, 37, 99):
    for j in range(100):
      want = 1 - r if i == j else (r / 4 if i // 5 == j // 5 else 0.0)
      assert c[i, j] == pytest.approx(want)
  train = d.arrays["train"]
  np.testing.assert_array_equal(train["label"] // 5, train["clean_label"] // 5)
  n = train["label"].size
  realised = np.mean(train["label"] != train["clean_label"])
  assert abs(realised - r) <= 5 * math.sqrt(r * (1 - r) / n)


def test_hierarchical_needs_superclasses():
  with pytest.raises(ValueError, match="cifar10 has none"):
    mwn_tf.data.get("cifar10", noise_type="hierarchical", noise_rate=0.2)


def test_no_network_message(tmp_path, monkeypatch):
  def offline(self, *args, **kwargs):
    raise ConnectionError("[Errno -3] Temporary failure in name resolution")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                      offline)
  with pytest.raises(FileNotFoundError,
                     match=r"(?s)Could not download cifar10 .*ConnectionError"
                     r".*tfds build cifar10"):
    mwn_tf.data.get("cifar10", data_dir=str(tmp_path))


def test_not_prepared_without_download_message(tmp_path):
  with pytest.raises(FileNotFoundError,
                     match=r"cifar100 is not prepared under .* download=False"):
    mwn_tf.data.get("cifar100", data_dir=str(tmp_path), download=False)


def test_gin_names_cifar_settings(tmp_path):
  gin.clear_config()
  try:
    gin.parse_config([
        "mwn_tf.data.get.name = 'cifar10'",
        f"cifar10.data_dir = '{tmp_path}'",
        "cifar10.num_meta = 50",
        "cifar10.noise_type = 'flip2'",
        "cifar10.noise_rate = 0.3",
        "cifar10.imbalance_factor = 2.0",
        "cifar10.seed = 4",
        "cifar10.augment = False",
        "cifar10.download = True",
    ])
    with tfds.testing.mock_data(num_examples=600):
      s = mwn_tf.data.get().summary()
  finally:
    gin.clear_config()
  assert (s["dataset"], s["data_dir"], s["num_meta"], s["noise_type"],
          s["noise_rate"], s["imbalance_factor"], s["seed"], s["augment"]) == (
              "cifar10", str(tmp_path), 50, "flip2", 0.3, 2.0, 4, False)


def test_reference_gin_file_names_real_settings():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  gin.parse_config_file(os.path.join(root, "gin", "data_reference.gin"))
  gin.parse_config(["cifar10.num_meta = 100"])  # The mock has ~100/class.
  with tfds.testing.mock_data(num_examples=N_MOCK):
    d = mwn_tf.data.get()
  assert d.name == "cifar10" and d.augment and d.transition_matrix is None
