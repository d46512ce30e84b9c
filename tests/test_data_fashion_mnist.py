"""Fashion-MNIST: the IDX parser and its errors on generated files, then the
real 70,000 images from Debian's dataset-fashion-mnist (skipped with the
package name when absent, failing under CI), and TFDS where it is prepared."""

import gzip
import hashlib
import os

import numpy as np
import pytest
import tensorflow as tf

import mwn_tf.data
from mwn_tf.data import cifar
from mwn_tf.data import fashion_mnist as fm
import real_data

# sha256 of the DECOMPRESSED IDX files of dataset-fashion-mnist
# 0.0~git20200523.55506a9-1 (the Zalando release; Debian recompresses the .gz,
# so the content, not the .gz, is what to pin).
CONTENT_SHA256 = {
    "train-images-idx3-ubyte.gz":
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz":
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz":
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz":
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def idx_bytes(array: np.ndarray) -> bytes:
  """The IDX encoding of a uint8 array (magic 0x0000080<rank>, big-endian)."""
  header = bytes([0, 0, 8, array.ndim]) + b"".join(
      int(d).to_bytes(4, "big") for d in array.shape)
  return header + np.ascontiguousarray(array, np.uint8).tobytes()


def write_idx_set(folder, n_train=300, n_test=50, seed=0):
  """Four gzipped IDX files of random images; labels cycle over 10 classes.

  Returns:
    {'train': (images [n, 28, 28], labels [n]), 'test': (...)}.
  """
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, n in (("train", n_train), ("test", n_test)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    for name, array in zip(fm.FILES[split], (images, labels)):
      with gzip.open(os.path.join(folder, name), "wb") as f:
        f.write(idx_bytes(array))
    arrays[split] = (images, labels)
  return arrays


@pytest.fixture
def tiny(tmp_path):
  return str(tmp_path), write_idx_set(str(tmp_path))


def _collect(ds):
  out = {}
  for batch in ds:
    for k, v in batch.items():
      out.setdefault(k, []).append(v.numpy())
  return {k: np.concatenate(v) for k, v in out.items()}


# --- The parser, on generated files ---

def test_read_idx_round_trip_gzipped_and_plain(tmp_path):
  images = np.random.default_rng(1).integers(0, 256, (7, 28, 28),
                                             dtype=np.uint8)
  plain = tmp_path / "x-idx3-ubyte"
  plain.write_bytes(idx_bytes(images))
  packed = tmp_path / "x-idx3-ubyte.gz"
  packed.write_bytes(gzip.compress(idx_bytes(images)))
  for path in (plain, packed):
    out = fm.read_idx(str(path), rank=3)
    assert out.dtype == np.uint8 and out.shape == (7, 28, 28)
    np.testing.assert_array_equal(out, images)
  labels = np.array([3, 1, 4], np.uint8)
  (tmp_path / "y.gz").write_bytes(gzip.compress(idx_bytes(labels)))
  np.testing.assert_array_equal(fm.read_idx(str(tmp_path / "y.gz"), 1),
                                labels)


@pytest.mark.parametrize("content,rank,message", [
    (idx_bytes(np.zeros((2, 28, 28), np.uint8))[:-5], 3, "truncated"),
    (idx_bytes(np.zeros((2, 28, 28), np.uint8)) + b"x", 3, "garbled"),
    (b"\x00\x00\x08", 3, "truncated IDX file"),
    (idx_bytes(np.zeros((4,), np.uint8)), 3, "magic number 0x00000801"),
    (idx_bytes(np.zeros((2, 28, 28), np.uint8)), 1, "expected 0x00000801"),
    (b"\x00\x00\x0d\x03" + bytes(12), 3, "magic number 0x00000d03"),
])
def test_malformed_idx_is_one_line_naming_the_file(tmp_path, content, rank,
                                                   message):
  path = tmp_path / "bad-idx.gz"
  path.write_bytes(gzip.compress(content))
  with pytest.raises(fm.IdxError) as error:
    fm.read_idx(str(path), rank)
  text = str(error.value)
  assert "\n" not in text and text.startswith(str(path)) and message in text


def test_not_gzip_is_one_line_naming_the_file(tmp_path):
  path = tmp_path / "train-images-idx3-ubyte.gz"
  path.write_bytes(b"this is not gzip data")
  with pytest.raises(fm.IdxError, match="not a readable IDX file") as error:
    fm.read_idx(str(path), 3)
  assert str(error.value).startswith(str(path))
  assert "\n" not in str(error.value)


def test_images_and_labels_must_match(tmp_path):
  write_idx_set(str(tmp_path), n_train=30, n_test=10)
  with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
    f.write(idx_bytes(np.zeros((9,), np.uint8)))
  with pytest.raises(fm.IdxError, match="holds .* images but .* 9 labels"):
    fm.load_idx(str(tmp_path))


def test_labels_out_of_range(tmp_path):
  write_idx_set(str(tmp_path), n_train=30, n_test=10)
  with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
    f.write(idx_bytes(np.full((10,), 10, np.uint8)))
  with pytest.raises(fm.IdxError, match=r"label 10 is not in \[0, 10\)"):
    fm.load_idx(str(tmp_path))


# --- The loader, on generated files ---

def test_loader_contract_on_generated_files(tiny):
  folder, arrays = tiny
  data = mwn_tf.data.get("fashion_mnist", idx_dir=folder, num_meta=50,
                         noise_type="uniform", noise_rate=0.6, seed=3)
  assert data.name == "fashion_mnist" and data.image_shape == (28, 28, 1)
  assert (data.num_train, data.num_meta, data.num_test) == (250, 50, 50)
  assert list(data.meta_class_counts) == [5] * 10
  assert data.class_names[0] == "T-shirt/top" and len(data.class_names) == 10
  train = _collect(data.train_for_eval(64))
  meta = _collect(data.meta_eval(64))
  test = _collect(data.test(64))
  images, labels = arrays["train"]
  # index -> the example's position in the IDX file; images are standardised.
  expected = ((images[train["index"]][..., None] / 255.0 - fm.MEAN[0]) /
              fm.STD[0])
  np.testing.assert_allclose(train["image"], expected, rtol=1e-5, atol=1e-5)
  assert train["image"].dtype == np.float32
  np.testing.assert_array_equal(train["clean_label"], labels[train["index"]])
  np.testing.assert_array_equal(train["is_noisy"],
                                train["label"] != train["clean_label"])
  assert 0.3 < train["is_noisy"].mean() < 0.75  # 54% expected
  np.testing.assert_array_equal(meta["label"], labels[meta["index"]])
  assert not set(meta["index"]) & set(train["index"])
  np.testing.assert_array_equal(test["index"], np.arange(50))
  np.testing.assert_array_equal(test["label"], arrays["test"][1])


def test_num_train_is_a_seeded_balanced_subset(tiny):
  folder, arrays = tiny
  kwargs = dict(idx_dir=folder, num_meta=50, num_train=100)
  a = mwn_tf.data.get("fashion_mnist", seed=0, **kwargs)
  again = mwn_tf.data.get("fashion_mnist", seed=0, **kwargs)
  other = mwn_tf.data.get("fashion_mnist", seed=1, **kwargs)
  assert a.num_train == 100 and a.num_meta == 50
  assert list(a.class_counts) == [10] * 10
  idx = a.arrays["train"]["index"]
  np.testing.assert_array_equal(idx, again.arrays["train"]["index"])
  assert set(idx) != set(other.arrays["train"]["index"])
  assert not set(idx) & set(a.arrays["meta"]["index"])
  np.testing.assert_array_equal(a.arrays["train"]["clean_label"],
                                arrays["train"][1][idx])
  images = _collect(a.train_for_eval(64))
  source = arrays["train"][0][images["index"]][..., None]
  np.testing.assert_allclose(images["image"],
                             (source / 255.0 - fm.MEAN[0]) / fm.STD[0],
                             rtol=1e-5, atol=1e-5)


def test_long_tail_and_default_meta_sizes(tiny):
  folder, _ = tiny
  data = mwn_tf.data.get("fashion_mnist", idx_dir=folder,
                         imbalance_factor=10.0)
  assert data.num_meta == 100  # 10 per class by default for the long tail
  assert list(data.class_counts) == [20, 15, 11, 9, 7, 5, 4, 3, 2, 2]
  with pytest.raises(ValueError, match="fashion_mnist.num_meta = 1000 asks 100 per class"):
    mwn_tf.data.get("fashion_mnist", idx_dir=folder, noise_type="uniform",
                    noise_rate=0.2)  # noise default: 1000 meta images


def _crop_and_flip(out, plain):
  """(dy, dx, flipped) such that `out` is `plain` shifted by (dy, dx) in the
  interior (reflect-pad 2 + crop) and maybe mirrored; None if none fits."""
  for flipped in (False, True):
    o = out[:, ::-1] if flipped else out
    for dy in range(-2, 3):
      for dx in range(-2, 3):
        if np.allclose(o[2:26, 2:26], plain[2 + dy:26 + dy, 2 + dx:26 + dx]):
          return dy, dx, flipped
  return None


def test_augmentation_is_crop_and_flip_on_train_only(tiny):
  folder, arrays = tiny
  data = mwn_tf.data.get("fashion_mnist", idx_dir=folder, num_meta=50,
                         augment=True)
  assert data.summary()["augment"]
  image = tf.constant(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28, 1))
  plain = fm._eval_fn(image).numpy()  # pylint: disable=protected-access
  found = []
  for s in range(12):
    out = fm._train_fn(image, tf.constant([s, 0], tf.int64)).numpy()  # pylint: disable=protected-access
    assert out.shape == (28, 28, 1) and out.dtype == np.float32
    found.append(_crop_and_flip(out, plain))
  assert None not in found
  assert {f[2] for f in found} == {False, True}  # both flipped and not
  assert any(f[:2] != (0, 0) for f in found)  # some crops move the image
  # Train batches are augmented; the test split never is.
  train = next(iter(data.train_and_meta(32)))[0]
  source = arrays["train"][0][train["index"].numpy()][..., None]
  unaugmented = (source / 255.0 - fm.MEAN[0]) / fm.STD[0]
  assert not np.allclose(train["image"].numpy(), unaugmented, atol=1e-5)
  test = _collect(data.test(50))
  np.testing.assert_allclose(
      test["image"], (arrays["test"][0][..., None] / 255.0 - fm.MEAN[0]) /
      fm.STD[0], rtol=1e-5, atol=1e-5)


# --- Bad settings and missing data: one line naming the fix ---

def test_missing_data_names_the_package_and_the_binding(tmp_path):
  with pytest.raises(FileNotFoundError) as error:
    mwn_tf.data.get("fashion_mnist", idx_dir=str(tmp_path / "nowhere"),
                    data_dir=str(tmp_path / "tfds"), download=False)
  # One line (gin appends where it was called from on lines of its own).
  text = str(error.value).splitlines()[0]
  assert "apt-get install dataset-fashion-mnist" in text
  assert "fashion_mnist.idx_dir" in text
  with pytest.raises(FileNotFoundError,
                     match="apt-get install dataset-fashion-mnist.*"
                     "fashion_mnist.idx_dir"):
    mwn_tf.data.get("fashion_mnist", source="idx", idx_dir=str(tmp_path))


@pytest.mark.parametrize("kwargs,message", [
    (dict(source="web"), "fashion_mnist.source must be one of auto, idx, "
     "tfds"),
    (dict(num_train=105), "num_train must be a positive multiple"),
    (dict(num_train=0), "num_train must be a positive multiple"),
    (dict(num_train=59010), "lower num_train to at most 59000"),
    (dict(noise_type="hierarchical", noise_rate=0.2), "superclasses"),
    (dict(num_meta=15), "fashion_mnist.num_meta = 15 must be a positive multiple"),
])
def test_bad_settings(tiny, kwargs, message):
  folder, _ = tiny
  with pytest.raises(ValueError, match=message):
    mwn_tf.data.get("fashion_mnist", idx_dir=folder, **kwargs)


@pytest.mark.slow
def test_missing_data_through_the_entry_point_exits_2(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, "-m", "mwn_tf.main",
       "--gin_file=gin/fashion_mnist_uniform_40.gin", f"--model_dir={run}",
       f"--gin_param=fashion_mnist.idx_dir = '{tmp_path / 'none'}'",
       f"--gin_param=fashion_mnist.data_dir = '{tmp_path / 'tfds'}'",
       "--gin_param=fashion_mnist.download = False"],
      cwd=repo, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines()
            if l.startswith("mwn_tf.main: error:")]
  assert len(errors) == 1
  assert "apt-get install dataset-fashion-mnist" in errors[0]
  assert "fashion_mnist.idx_dir" in errors[0]
  assert "Traceback" not in proc.stderr
  # main.py's writability probe makes the folder before loading; nothing in it.
  assert not run.exists() or not os.listdir(run)


# --- The real files (Debian's dataset-fashion-mnist) ---

@pytest.fixture(scope="module")
def real():
  folder = real_data.require_fashion_mnist()
  return folder, fm.load_idx(folder)


def test_real_files_checksums(real):
  folder, _ = real
  for name, digest in CONTENT_SHA256.items():
    with gzip.open(os.path.join(folder, name), "rb") as f:
      assert hashlib.sha256(f.read()).hexdigest() == digest, name


def test_real_shapes_dtypes_and_class_counts(real):
  _, arrays = real
  for split, n in (("train", 60000), ("test", 10000)):
    images, labels = arrays[split]
    assert images.shape == (n, 28, 28, 1) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert list(np.bincount(labels, minlength=10)) == [n // 10] * 10
  # The normalisation constants are the training images' statistics.
  pixels = arrays["train"][0].astype(np.float64) / 255.0
  assert pixels.mean() == pytest.approx(fm.MEAN[0], abs=1e-4)
  assert pixels.std() == pytest.approx(fm.STD[0], abs=1e-4)


def test_real_splits_through_the_registry(real):
  folder, arrays = real
  data = mwn_tf.data.get("fashion_mnist", noise_type="uniform",
                         noise_rate=0.4, seed=0)
  assert data.config["idx_dir"] == folder
  assert (data.num_train, data.num_meta, data.num_test) == (59000, 1000,
                                                           10000)
  assert list(data.meta_class_counts) == [100] * 10
  assert list(data.class_counts) == [5900] * 10
  assert data.realised_noise_rate == pytest.approx(0.36, abs=0.01)
  train = data.arrays["train"]
  np.testing.assert_array_equal(train["clean_label"],
                                arrays["train"][1][train["index"]])
  sized = mwn_tf.data.get("fashion_mnist", num_train=10000, seed=0)
  assert sized.num_train == 10000 and list(sized.class_counts) == [1000] * 10
  batch = next(iter(data.test(100)))
  assert tuple(batch["image"].shape) == (100, 28, 28, 1)
  np.testing.assert_allclose(
      batch["image"].numpy(),
      (arrays["test"][0][:100] / 255.0 - fm.MEAN[0]) / fm.STD[0], atol=1e-5)


def test_tfds_gives_the_same_examples(real, tmp_path):
  _, arrays = real
  try:
    cifar.prepare_builder("fashion_mnist", None, download=False)
  except FileNotFoundError as e:
    pytest.skip(f"TFDS fashion_mnist is not prepared here ({e}); nothing to "
                "compare the IDX files with (no network to download it).")
  tfds_arrays = fm.load(source="tfds", download=False)
  for split in ("train", "test"):
    a_img, a_lab = arrays[split]
    b_img, b_lab = tfds_arrays[split]
    assert a_img.shape == b_img.shape and a_img.dtype == b_img.dtype
    a, b = fm.canonical_order(a_img, a_lab), fm.canonical_order(b_img, b_lab)
    np.testing.assert_array_equal(a_img[a], b_img[b])
    np.testing.assert_array_equal(a_lab[a], b_lab[b])


def test_absent_files_skip_but_fail_under_ci(monkeypatch):
  monkeypatch.delenv("CI", raising=False)
  with pytest.raises(pytest.skip.Exception,
                     match="apt-get install dataset-fashion-mnist"):
    real_data.require(False, "Fashion-MNIST",
                      "apt-get install dataset-fashion-mnist")
  monkeypatch.setenv("CI", "true")
  with pytest.raises(pytest.fail.Exception,
                     match="CI is set.*apt-get install dataset-fashion"):
    real_data.require(False, "Fashion-MNIST",
                      "apt-get install dataset-fashion-mnist")
  real_data.require(True, "Fashion-MNIST", "unused")  # present: runs
