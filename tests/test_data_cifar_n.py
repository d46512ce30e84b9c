"""CIFAR-10N / CIFAR-100N loaders and gin files under tfds.testing.mock_data.

The mock (cifar_n_fake.py) replaces the TFDS splits with data whose human
labels differ from the clean ones on a known set of images, so the realised
noise rate and the meta set are checked against numbers computed here, not
by the loader.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

import mwn_tf.data

import cifar_n_fake
from cifar_n_fake import N_TEST, N_TRAIN

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def manual_dir(tmp_path):
  return cifar_n_fake.write_manual_files(tmp_path / "manual")


def _get(name, manual_dir, **kwargs):
  k = 10 if name == "cifar10_n" else 100
  with tfds.testing.mock_data(as_dataset_fn=cifar_n_fake.fake_cifar_n(k)):
    return mwn_tf.data.get(name, manual_dir=manual_dir, **kwargs)


@pytest.mark.parametrize("label_set", ["worse_label", "aggre_label",
                                       "random_label1", "random_label2",
                                       "random_label3"])
def test_cifar10n_label_sets(manual_dir, label_set):
  d = _get("cifar10_n", manual_dir, label_set=label_set)
  clean_all = np.arange(N_TRAIN) * 7 % 10
  human_all = cifar_n_fake.human(label_set, clean_all, 10)
  train, meta = d.arrays["train"], d.arrays["meta"]
  # Meta: the paper's 1000 = 100 per class, clean labels, out of train.
  assert d.num_meta == 1000 and d.num_train == N_TRAIN - 1000
  np.testing.assert_array_equal(np.bincount(meta["label"]), [100] * 10)
  np.testing.assert_array_equal(meta["label"], clean_all[meta["index"]])
  assert not set(meta["index"]) & set(train["index"])
  # Train: the chosen human labels, the clean ones kept.
  np.testing.assert_array_equal(train["label"], human_all[train["index"]])
  np.testing.assert_array_equal(train["clean_label"],
                                clean_all[train["index"]])
  want = np.mean(human_all[train["index"]] != clean_all[train["index"]])
  assert want > 0 and d.realised_noise_rate == pytest.approx(want)
  s = d.summary()
  assert s["label_set"] == label_set and s["noise_rate"] is None
  assert s["expected_noise_rate"] is None and s["transition_matrix"] is None
  assert s["realised_noise_rate_measured_on"] == "all 1000 training samples"
  assert s["noise_rate_full_train_split"] == pytest.approx(
      np.mean(human_all != clean_all))


def test_cifar100n_noisy_label_and_meta(manual_dir):
  d = _get("cifar100_n", manual_dir)
  assert d.summary()["label_set"] == "noisy_label" and d.num_classes == 100
  clean_all = np.arange(N_TRAIN) * 7 % 100
  human_all = cifar_n_fake.human("noise_label", clean_all, 100)
  train = d.arrays["train"]
  np.testing.assert_array_equal(np.bincount(d.arrays["meta"]["label"]),
                                [10] * 100)
  np.testing.assert_array_equal(train["label"], human_all[train["index"]])
  assert d.realised_noise_rate == pytest.approx(
      np.mean(train["label"] != train["clean_label"]))


def test_batches_flag_the_noisy_samples(manual_dir):
  d = _get("cifar10_n", manual_dir, label_set="worse_label", num_meta=100)
  train_batch, meta_batch = next(iter(d.train_and_meta(64)))
  label = train_batch["label"].numpy()
  clean = train_batch["clean_label"].numpy()
  np.testing.assert_array_equal(train_batch["is_noisy"].numpy(),
                                label != clean)
  assert train_batch["is_noisy"].numpy().any()
  assert not meta_batch["is_noisy"].numpy().any()
  assert train_batch["image"].shape == (64, 32, 32, 3)
  # The test split is CIFAR's with its clean labels, never the -1 of TFDS.
  labels = np.concatenate([b["label"].numpy() for b in d.test(100)])
  np.testing.assert_array_equal(labels, np.arange(N_TEST) * 7 % 10)


def test_clean_label_set_is_noise_free(manual_dir):
  d = _get("cifar10_n", manual_dir, label_set="clean_label", num_meta=100)
  assert d.realised_noise_rate == 0.0


def test_meta_set_follows_the_seed(manual_dir):
  a = _get("cifar10_n", manual_dir, num_meta=100, seed=0)
  b = _get("cifar10_n", manual_dir, num_meta=100, seed=1)
  c = _get("cifar10_n", manual_dir, num_meta=100, seed=0)
  np.testing.assert_array_equal(a.arrays["meta"]["index"],
                                c.arrays["meta"]["index"])
  assert set(a.arrays["meta"]["index"]) != set(b.arrays["meta"]["index"])


@pytest.mark.parametrize("name,bad,choices", [
    ("cifar10_n", "noisy_label", "'aggre_label', 'random_label1'"),
    ("cifar100_n", "worse_label", "'noisy_label', 'clean_label'"),
])
def test_unknown_label_set_lists_the_choices(name, bad, choices):
  with pytest.raises(ValueError, match=f"{name}.label_set = '{bad}' is not "
                     f"one of {choices}"):
    mwn_tf.data.get(name, label_set=bad)


def test_missing_manual_file_named_before_any_download(tmp_path, monkeypatch):
  def no_download(self, *args, **kwargs):
    raise AssertionError("download_and_prepare must not run")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                      no_download)
  folder = tmp_path / "downloads" / "manual"
  folder.mkdir(parents=True)
  (folder / "side_info_cifar10N.csv").write_text("")
  with pytest.raises(FileNotFoundError) as e:
    mwn_tf.data.get("cifar10_n", data_dir=str(tmp_path))
  # Gin appends "In call to configurable" lines; the message is the first.
  message = str(e.value).splitlines()[0]
  assert f"TFDS manual folder {folder} lacks CIFAR-10_human_annotations.csv, "\
         "image_order_c10.npy." in message
  assert "cifar10_n.manual_dir" in message and "cifar10_n.data_dir" in message


# ----------------------------------------------------------------- end to end
# Each CIFAR-N gin file trains through the entry point in
# tests/test_gin_end_to_end.py, which checks its human labels, meta set,
# exports (class names, raw pixels) and analysis.


@pytest.mark.slow
def test_missing_manual_file_exits_2_in_one_line(tmp_path):
  """A real process: one error line, no traceback, nothing downloaded."""
  proc = subprocess.run(
      [sys.executable, "-m", "mwn_tf.main",
       "--gin_file=gin/cifar100n_noisy.gin",
       f"--model_dir={tmp_path / 'run'}",
       f"--gin_param=cifar100_n.data_dir = '{tmp_path / 'tfds'}'"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert proc.returncode == 2, proc.stderr
  errors = [l for l in proc.stderr.splitlines()
            if l.startswith("mwn_tf.main: error:")]
  assert len(errors) == 1 and "Traceback" not in proc.stderr
  manual = os.path.join(str(tmp_path / "tfds"), "downloads", "manual")
  assert f"TFDS manual folder {manual} lacks CIFAR-100_human_annotations.csv" \
         in errors[0]
  assert "cifar100_n.data_dir" in errors[0]
  assert not os.path.exists(tmp_path / "tfds" / "downloads" / "extracted")
