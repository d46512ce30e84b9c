"""The real Clothing1M TFDS builder on a tiny fake release (official names)."""

import os

import numpy as np
import pytest
import tensorflow as tf

import mwn_tf.data
from mwn_tf.data import clothing1m
import real_jpeg_release

K = 14
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def _write_jpeg(path, rng, height, width):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  tf.io.write_file(path, tf.io.encode_jpeg(image))


def make_fake_release(root, rng_seed=0):
  """Writes a tiny Clothing1M release; returns the ground truth it wrote."""
  rng = np.random.default_rng(rng_seed)
  keys = {"noisy_train": [f"images/0/{i % 3:02d}/n{i}.jpg" for i in range(28)],
          "clean_train": [f"images/1/00/t{i}.jpg" for i in range(14)],
          "clean_val": [f"images/2/00/v{i}.jpg" for i in range(28)],
          "clean_test": [f"images/3/00/e{i}.jpg" for i in range(14)]}
  noisy = {k: i % K for i, k in enumerate(keys["noisy_train"])}
  clean = {}
  for split in ("clean_train", "clean_val", "clean_test"):
    clean.update({k: (i * 5) % K for i, k in enumerate(keys[split])})
  # 10 noisy-train images also have a clean label; 4 of them disagree.
  for i, k in enumerate(keys["noisy_train"][:10]):
    clean[k] = noisy[k] if i < 6 else (noisy[k] + 1) % K
  for split_keys in keys.values():
    for n, k in enumerate(split_keys):
      _write_jpeg(os.path.join(root, k), rng, 20 + n % 7, 24 + n % 5)
  real_jpeg_release.write_annotations(root, keys, noisy, clean)
  return keys, noisy, clean


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  base = tmp_path_factory.mktemp("c1m")
  manual = str(base / "manual")
  truth = make_fake_release(manual)
  d = mwn_tf.data.get("clothing1m", data_dir=str(base / "tfds"),
                      manual_dir=manual, image_size=16, resize_size=20,
                      shuffle_buffer=64)
  return d, truth, base


def _collect(ds):
  out = {}
  for batch in ds:
    for k, v in batch.items():
      out.setdefault(k, []).append(v.numpy())
  return {k: np.concatenate(v) for k, v in out.items()}


def test_round_trip_train_labels(built):
  d, (keys, noisy, clean), _ = built
  assert (d.num_train, d.num_meta, d.num_test) == (28, 28, 14)
  assert d.num_classes == K and d.image_shape == (16, 16, 3)
  got = _collect(d.train_for_eval(8))
  assert sorted(got["index"]) == list(range(28))
  for i, label, cl, noisy_flag in zip(got["index"], got["label"],
                                      got["clean_label"], got["is_noisy"]):
    key = keys["noisy_train"][i]
    assert label == noisy[key]
    assert cl == clean.get(key, -1)
    assert noisy_flag == (key in clean and clean[key] != noisy[key])
  assert got["image"].shape == (28, 16, 16, 3)
  assert d.realised_noise_rate == pytest.approx(4 / 10)
  s = d.summary()
  assert s["noise_rate_measured_on"] == 10
  assert s["class_counts"] == np.bincount(list(noisy.values()),
                                          minlength=K).tolist()


def test_summary_has_no_made_up_rates(built):
  """Web labels: no configured or expected rate; the realised one says what
  it was measured on."""
  s = built[0].summary()
  assert s["noise_rate"] is None and s["expected_noise_rate"] is None
  assert s["realised_noise_rate"] == pytest.approx(4 / 10)
  assert s["realised_noise_rate_measured_on"] == (
      "the 10 of 28 training samples that have a clean label")


def test_meta_and_test_are_clean_val_and_clean_test(built):
  d, (keys, _, clean), _ = built
  meta = _collect(d.meta_eval(10))
  test = _collect(d.test(5))  # 14 = 2 * 5 + 4: remainder kept.
  for split, got in (("clean_val", meta), ("clean_test", test)):
    assert sorted(got["index"]) == list(range(len(keys[split])))
    want = [clean[keys[split][i]] for i in got["index"]]
    np.testing.assert_array_equal(got["label"], want)
    np.testing.assert_array_equal(got["clean_label"], want)
    assert not got["is_noisy"].any()
  # Eval images: ImageNet-normalised centre crops of values in [0, 1].
  lo, hi = -IMAGENET_MEAN / IMAGENET_STD, (1 - IMAGENET_MEAN) / IMAGENET_STD
  assert np.all(test["image"] >= lo - 1e-4)
  assert np.all(test["image"] <= hi + 1e-4)


def test_train_and_meta_stream(built):
  d, _, _ = built
  batches = list(d.train_and_meta(8, meta_batch_size=6))
  assert len(batches) == d.steps_per_epoch(8) == 3
  train, meta = batches[0]
  assert train["image"].shape == (8, 16, 16, 3)
  assert meta["image"].shape == (6, 16, 16, 3)
  assert train["image"].dtype == tf.float32 and train["index"].dtype == tf.int64
  # The meta stream keeps going past one pass over clean_val only when
  # needed; here 3 steps x 6 < 28, so just check it is clean.
  assert not meta["is_noisy"].numpy().any()
  seen = np.concatenate([t["index"].numpy() for t, _ in batches])
  assert len(set(seen)) == 24


def test_input_pipelines_shard_disjointly(built):
  d, _, _ = built

  class TwoPipelines:  # Duck-typed strategy: 2 input pipelines, 2 replicas.
    def distribute_datasets_from_function(self, fn):
      return [fn(tf.distribute.InputContext(2, i, 2)) for i in range(2)]

  seen = []
  for ds in d.train_and_meta(8, strategy=TwoPipelines()):
    batches = list(ds)
    assert len(batches) == 14 // 4  # 28 / 2 pipelines, per-replica batch 4.
    seen.append({int(i) for t, _ in batches for i in t["index"].numpy()})
  assert len(seen[0]) == len(seen[1]) == 12 and not seen[0] & seen[1]
  test = [int(i) for ds in d.test(4, strategy=TwoPipelines()) for b in ds
          for i in b["index"].numpy()]
  assert sorted(test) == list(range(14))


def test_balanced_meta_subset(built):
  d, (keys, _, clean), base = built
  sub = mwn_tf.data.get("clothing1m", data_dir=str(base / "tfds"),
                        num_meta=14, image_size=16, resize_size=20, seed=3)
  got = _collect(sub.meta_eval(7))
  assert got["index"].size == 14 == sub.num_meta
  np.testing.assert_array_equal(np.bincount(got["label"], minlength=K),
                                [1] * K)
  np.testing.assert_array_equal(
      got["label"], [clean[keys["clean_val"][i]] for i in got["index"]])


def test_missing_manual_folder(tmp_path):
  with pytest.raises(FileNotFoundError,
                     match=r"(?s)Clothing1M manual folder .*nowhere does not "
                     r"exist.*noisy_label_kv.txt"):
    mwn_tf.data.get("clothing1m", data_dir=str(tmp_path / "tfds"),
                    manual_dir=str(tmp_path / "nowhere"))


def test_missing_annotation_file(tmp_path):
  manual = tmp_path / "manual"
  make_fake_release(str(manual))
  os.remove(manual / "annotations" / "clean_val_key_list.txt")
  with pytest.raises(FileNotFoundError,
                     match=r"annotation file .*clean_val_key_list.txt is "
                     r"missing"):
    mwn_tf.data.get("clothing1m", data_dir=str(tmp_path / "tfds"),
                    manual_dir=str(manual))


def _good_jpeg(seed=1):
  """A 48x64 noise JPEG: big enough to have plenty of entropy-coded data."""
  image = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), np.uint8)
  return tf.io.encode_jpeg(image).numpy()


def _scan_start(jpeg):
  """Offset of the first entropy-coded byte (right after the SOS header)."""
  sos = jpeg.index(b"\xff\xda")
  return sos + 2 + int.from_bytes(jpeg[sos + 2:sos + 4], "big")


def _corruptions():
  """Bad file contents -> the reason the error should give for it."""
  good = _good_jpeg()
  start = _scan_start(good)
  garbage = np.random.default_rng(2).integers(0, 256, len(good) - start,
                                              np.uint8).tobytes()
  png = tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)).numpy()
  truncated = "is a truncated or corrupt JPEG"
  return {
      good[:(start + len(good)) // 2]: truncated,  # Valid header, half data.
      good[:-2]: truncated,  # Interrupted copy: only the end marker lost.
      good[:start]: truncated,  # Header and no image data at all.
      good[:start] + garbage: truncated,  # Valid header, then random bytes.
      b"": "is empty (0 bytes)",
      png: "holds PNG data, not JPEG",  # Decodable, but not the JPEG stored.
  }


def _build(manual, data_dir):
  return mwn_tf.data.get("clothing1m", data_dir=str(data_dir),
                         manual_dir=str(manual), image_size=16, resize_size=20)


def _assert_nothing_kept(data_dir):
  """No finished or half-written TFDS folder that a rerun would pick up."""
  assert not clothing1m.Clothing1M(data_dir=str(data_dir)).is_prepared()
  left = [p for p in data_dir.rglob("*")
          if p.name == "dataset_info.json" or "incomplete" in p.name]
  assert not left, left


def test_every_bad_image_is_named_in_one_error(tmp_path):
  manual, data_dir = tmp_path / "manual", tmp_path / "tfds"
  keys, _, _ = make_fake_release(str(manual))
  # Spread over all four splits; each split keeps good images.
  victims = [keys["noisy_train"][5], keys["noisy_train"][20],
             keys["clean_train"][0], keys["clean_val"][7],
             keys["clean_val"][27], keys["clean_test"][13]]
  lists = ["noisy_train", "noisy_train", "clean_train", "clean_val",
           "clean_val", "clean_test"]
  corruptions = _corruptions()
  for key, content in zip(victims, corruptions):
    (manual / key).write_bytes(content)
  # A missing image goes in the same list rather than stopping the build.
  victims.append(keys["clean_test"][0])
  lists.append("clean_test")
  os.remove(manual / victims[-1])
  reasons = list(corruptions.values()) + ["cannot be read (FileNotFoundError"]
  with pytest.raises(clothing1m.ImageFileError) as info:
    _build(manual, data_dir)
  assert isinstance(info.value, ValueError)
  msg = str(info.value)
  assert "7 image files cannot be read or do not fully decode as JPEG" in msg
  lines = msg.splitlines()
  for key, split, why in zip(victims, lists, reasons):
    line = [t for t in lines if t.startswith(f"  {manual / key} ")]
    assert len(line) == 1, (key, msg)
    assert line[0].startswith(f"  {manual / key} {why}"), (line, why)
    assert line[0].endswith(f"[listed in {split}_key_list.txt]"), line
  assert "tf.io.decode_jpeg: jpeg::Uncompress failed" in msg
  assert "Re-extract each from the official Clothing1M archive" in msg
  assert "delete its line from the annotations key list" in msg
  assert "... and" not in msg
  _assert_nothing_kept(data_dir)


def test_many_bad_images_first_ten_named_then_counted(tmp_path):
  manual, data_dir = tmp_path / "manual", tmp_path / "tfds"
  keys, _, _ = make_fake_release(str(manual))
  truncated = _good_jpeg()[:-100]
  for key in keys["clean_train"]:  # Every image of one split is bad.
    (manual / key).write_bytes(truncated)
  with pytest.raises(clothing1m.ImageFileError) as info:
    _build(manual, data_dir)
  msg = str(info.value)
  assert msg.startswith("Clothing1M: 14 image files cannot be read")
  named = [k for k in keys["clean_train"] if str(manual / k) + " " in msg]
  assert named == keys["clean_train"][:10]
  assert "... and 4 more" in msg
  # TFDS's own "No examples were yielded" would name no file.
  assert "stopped at clean_train_key_list.txt" in msg
  _assert_nothing_kept(data_dir)


def test_rerun_after_fixing_the_file_builds(tmp_path):
  manual, data_dir = tmp_path / "manual", tmp_path / "tfds"
  keys, _, _ = make_fake_release(str(manual))
  bad = manual / keys["clean_val"][3]
  bad.write_bytes(bad.read_bytes()[:-2])
  with pytest.raises(clothing1m.ImageFileError,
                     match=r"1 image file cannot be read or does not fully "
                     r"decode as JPEG:\n  .*v3\.jpg is a truncated"):
    _build(manual, data_dir)
  _assert_nothing_kept(data_dir)
  bad.write_bytes(_good_jpeg())  # "Re-extracted" from the archive.
  d = _build(manual, data_dir)
  assert (d.num_train, d.num_meta, d.num_test) == (28, 28, 14)
  meta = _collect(d.meta_eval(28))  # Every image decodes, v3 included.
  assert sorted(meta["index"]) == list(range(28))


def test_rerun_after_removing_its_line_builds(tmp_path):
  manual, data_dir = tmp_path / "manual", tmp_path / "tfds"
  keys, _, _ = make_fake_release(str(manual))
  (manual / keys["clean_test"][3]).write_bytes(b"")
  with pytest.raises(clothing1m.ImageFileError, match=r"e3\.jpg is empty"):
    _build(manual, data_dir)
  key_list = manual / "annotations" / "clean_test_key_list.txt"
  key_list.write_text("\n".join(k for k in keys["clean_test"]
                                if not k.endswith("/e3.jpg")) + "\n")
  d = _build(manual, data_dir)
  assert d.num_test == 13
  assert sorted(_collect(d.test(13))["index"]) == list(range(13))


def test_analysis_names_each_sample_by_its_image_key(built, tmp_path):
  """suspects.csv (and review.csv) of a Clothing1M run name every training
  sample by its image key, rebuilt from the run's operative config."""
  import csv  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  from mwn_tf.analysis import report  # pylint: disable=g-import-not-at-top
  _, (keys, noisy, clean), base = built
  run = tmp_path / "run"
  run.mkdir()
  (run / "operative_config.gin").write_text(
      f"clothing1m.data_dir = '{base / 'tfds'}'\n"
      f"clothing1m.manual_dir = '{base / 'manual'}'\n"
      "clothing1m.image_size = 16\nclothing1m.resize_size = 20\n"
      "clothing1m.shuffle_buffer = 64\n"
      "train_eval.dataset = 'clothing1m'\n")
  (run / "results.json").write_text(json.dumps({"settings": {
      "dataset": "clothing1m", "seed": 0, "model": "resnet50",
      "method": "mwn"}}))
  train = keys["noisy_train"]
  label = np.array([noisy[k] for k in train])
  loss = np.random.default_rng(0).permutation(len(train)).astype(float)
  np.savez(run / "sample_weights.npz", index=np.arange(len(train)),
           label=label, clean_label=np.array([clean.get(k, -1)
                                              for k in train]),
           loss=loss, weight=1.0 / (1.0 + loss))
  out = report.analyze(str(run), make_figures=False, review_size=5)
  assert not out["notes"], out["notes"]
  with open(out["suspects_csv"]) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == len(train)
  for r in rows:
    key = train[int(r["index"])]
    assert r["file"] == key
    assert r["source"] == "tfds clothing1m" and r["split"] == "noisy_train"
    assert r["given_class"] == clothing1m.CLASS_NAMES[noisy[key]]
    assert r["clean_class"] == (clothing1m.CLASS_NAMES[clean[key]]
                                if key in clean else "")
  # Most distrusted first (the default ranking: the highest loss).
  assert [r["file"] for r in rows] == [train[i] for i in np.argsort(-loss)]
  with open(out["review_csv"]) as f:
    review = list(csv.DictReader(f))
  assert [r["file"] for r in review] == [r["file"] for r in rows[:5]]
