"""Bring-your-own .npz through the shared meta / noise / long-tail machinery."""

import json
import math

import gin
import numpy as np
import pytest

import mwn_tf.data

import helpers

K = 6


def _write(path, gray=False, drop=None, superclass=False, n=600, m=60):
  rng = np.random.default_rng(0)
  shape = (12, 12) if gray else (12, 12, 3)
  arrays = {
      "x_train": rng.integers(0, 256, (n,) + shape, dtype=np.uint8),
      "y_train": np.arange(n) % K,
      "x_test": rng.integers(0, 256, (m,) + shape, dtype=np.uint8),
      "y_test": np.arange(m) % K,
      "class_names": np.array([f"class_{i}" for i in range(K)]),
  }
  if superclass:
    arrays["superclass"] = np.array([0, 0, 0, 1, 1, 1])
  if drop:
    del arrays[drop]
  np.savez(path, **arrays)
  return arrays


def _collect(ds):
  out = {}
  for batch in ds:
    for k, v in batch.items():
      out.setdefault(k, []).append(v.numpy())
  return {k: np.concatenate(v) for k, v in out.items()}


def test_round_trip_with_noise_and_long_tail(tmp_path):
  path = str(tmp_path / "data.npz")
  src = _write(path)
  d = mwn_tf.data.get("npz", path=path, num_meta=60, noise_type="uniform",
                      noise_rate=0.5, imbalance_factor=4, seed=2)
  assert d.num_classes == K and d.image_shape == (12, 12, 3)
  assert d.class_names == [f"class_{i}" for i in range(K)]
  train, meta = d.arrays["train"], d.arrays["meta"]
  assert not set(train["index"]) & set(meta["index"])
  np.testing.assert_array_equal(meta["label"], src["y_train"][meta["index"]])
  np.testing.assert_array_equal(np.bincount(meta["label"]), [10] * K)
  np.testing.assert_array_equal(train["clean_label"],
                                src["y_train"][train["index"]])
  n_max = 100 - 10
  want = [math.floor(n_max * 0.25 ** (i / (K - 1))) for i in range(K)]
  np.testing.assert_array_equal(d.class_counts, want)
  # Test split: untouched, standardised with x_train's per-channel stats.
  flat = src["x_train"].reshape(-1, 3) / 255.0
  mean, std = flat.mean(axis=0), flat.std(axis=0)
  test = _collect(d.test(25))
  np.testing.assert_array_equal(test["index"], np.arange(60))
  np.testing.assert_allclose(test["image"],
                             (src["x_test"] / 255.0 - mean) / std, atol=1e-4)
  # No augmentation by default: a train batch equals the eval transform.
  batch, _ = next(iter(d.train_and_meta(16)))
  np.testing.assert_allclose(
      batch["image"].numpy(),
      (src["x_train"][batch["index"].numpy()] / 255.0 - mean) / std, atol=1e-4)


def test_gray_images_get_a_channel_and_augment(tmp_path):
  path = str(tmp_path / "gray.npz")
  _write(path, gray=True)
  d = mwn_tf.data.get("npz", path=path, augment=True, standardize=False)
  assert d.image_shape == (12, 12, 1) and d.num_meta == 10 * K
  batch, meta = next(iter(d.train_and_meta(32)))
  assert batch["image"].shape == (32, 12, 12, 1)
  assert meta["image"].shape == (32, 12, 12, 1)
  plain = _collect(d.train_for_eval(600))
  by_index = dict(zip(plain["index"], plain["image"]))
  same = [np.array_equal(img, by_index[i]) for img, i in
          zip(batch["image"].numpy(), batch["index"].numpy())]
  assert not all(same)  # Augmented.
  assert batch["image"].numpy().min() >= 0 and batch["image"].numpy().max() <= 1


def test_hierarchical_with_superclass_array(tmp_path):
  path = str(tmp_path / "h.npz")
  _write(path, superclass=True, n=3000)
  d = mwn_tf.data.get("npz", path=path, noise_type="hierarchical",
                      noise_rate=0.4)
  c = d.transition_matrix
  np.testing.assert_allclose(c[0], [0.6, 0.2, 0.2, 0, 0, 0])
  train = d.arrays["train"]
  np.testing.assert_array_equal(train["label"] // 3, train["clean_label"] // 3)


def test_gin_path_binding(tmp_path):
  path = str(tmp_path / "g.npz")
  _write(path)
  gin.clear_config()
  try:
    gin.parse_config([f"npz.path = '{path}'", "npz.num_meta = 30",
                      "npz.seed = 5", "mwn_tf.data.get.name = 'npz'"])
    d = mwn_tf.data.get()
  finally:
    gin.clear_config()
  assert d.num_meta == 30 and d.seed == 5 and d.summary()["path"] == path


def test_missing_key_names_file_and_key(tmp_path):
  path = str(tmp_path / "bad.npz")
  _write(path, drop="y_test")
  with pytest.raises(ValueError, match=r"bad\.npz has no array 'y_test'"):
    mwn_tf.data.get("npz", path=path)


def test_missing_file_and_path():
  with pytest.raises(FileNotFoundError, match="npz file /no/such.npz does not"):
    mwn_tf.data.get("npz", path="/no/such.npz")
  with pytest.raises(ValueError, match="bind npz.path"):
    mwn_tf.data.get("npz")


def test_a_corrupt_file_is_named_not_an_npz_archive_by_the_cli(tmp_path,
                                                               capsys):
  path = tmp_path / "corrupt.npz"
  path.write_bytes(np.random.default_rng(0).bytes(2000))
  model_dir = tmp_path / "run"
  status, _, err = helpers.call_main(
      ["--gin_file=gin/smoke.gin", f"--model_dir={model_dir}",
       "--gin_param=train_eval.dataset = 'npz'",
       f"--gin_param=npz.path = '{path}'"], capsys)
  assert status == 2
  (line,) = helpers.error_lines(err)
  assert f"npz.path = '{path}' is not a readable .npz archive" in line
  assert "pickle" not in err and "Traceback" not in err
  assert not model_dir.exists()


@pytest.mark.parametrize("content", ["npy", "objects", "truncated"])
def test_other_unreadable_files_name_npz_path(tmp_path, content):
  path = str(tmp_path / "data.npz")
  if content == "npy":
    with open(path, "wb") as f:
      np.save(f, np.zeros(3))
  elif content == "objects":
    _write(path)
    arrays = dict(np.load(path))
    arrays["class_names"] = np.array([object()] * K, dtype=object)
    np.savez(path, **arrays)
  else:
    _write(path)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
  with pytest.raises(ValueError, match="is not a readable .npz archive") as e:
    mwn_tf.data.get("npz", path=path)
  assert "allow_pickle" not in str(e.value)


def test_hierarchical_without_superclass(tmp_path):
  path = str(tmp_path / "flat.npz")
  _write(path)
  with pytest.raises(ValueError, match=r"flat\.npz has none"):
    mwn_tf.data.get("npz", path=path, noise_type="hierarchical",
                    noise_rate=0.2)


@pytest.mark.slow
def test_readme_npz_command(tmp_path, capsys):
  """docs/datasets.md's `npz` row: smoke.gin on a user's own arrays, end to
  end."""
  path = str(tmp_path / "mine.npz")
  _write(path)
  model_dir = tmp_path / "run"
  status, out, err = helpers.call_main(
      ["--gin_file=gin/smoke.gin", f"--model_dir={model_dir}",
       "--gin_param=train_eval.dataset = 'npz'",
       f"--gin_param=npz.path = '{path}'",
       "--gin_param=train_eval.model = 'small_cnn'"], capsys)
  assert status == 0, err[-2000:]
  results = json.loads((model_dir / "results.json").read_text())
  assert results["finished"] and results["dataset"] == "npz"
  assert results["data"]["image_shape"] == [12, 12, 3]


def test_review_file_excludes_and_relabels_training_samples_only(tmp_path):
  path = tmp_path / "d.npz"
  _write(path)
  plain = mwn_tf.data.get("npz", path=str(path), noise_type="uniform",
                          noise_rate=0.4)
  train = plain.arrays["train"]
  out, fix = int(train["index"][0]), int(train["index"][1])
  new = (int(train["label"][1]) + 1) % K
  review = tmp_path / "review.csv"
  review.write_text("rank,index,file,action\n"
                    f"1,{out},,exclude\n2,{fix},,relabel:class_{new}\n"
                    f"3,{int(train['index'][2])},,keep\n")
  data = mwn_tf.data.get("npz", path=str(path), noise_type="uniform",
                         noise_rate=0.4, review_file=str(review))
  reviewed = data.arrays["train"]
  assert data.num_train == plain.num_train - 1
  assert out not in reviewed["index"]
  row = list(reviewed["index"]).index(fix)
  assert reviewed["label"][row] == reviewed["clean_label"][row] == new
  assert data.summary()["review"] == {"file": str(review), "excluded": 1,
                                      "relabelled": 1}
  assert data.realised_noise_rate == pytest.approx(
      np.mean(reviewed["label"] != reviewed["clean_label"]))
  for split in ("meta", "test"):
    for key in ("label", "clean_label", "index"):
      np.testing.assert_array_equal(data.arrays[split][key],
                                    plain.arrays[split][key])
  # A meta sample cannot be reviewed: one line naming the binding.
  meta = int(plain.arrays["meta"]["index"][0])
  review.write_text(f"index,action\n{meta},exclude\n")
  with pytest.raises(ValueError, match=r"^npz.review_file = .*line 2 names "
                     rf"index {meta}, which is not in the training split"):
    mwn_tf.data.get("npz", path=str(path), noise_type="uniform",
                    noise_rate=0.4, review_file=str(review))
