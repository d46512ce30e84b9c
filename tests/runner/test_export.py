"""SavedModel exports: atomic, load with plain TF, reproduce the model, and
take raw images with the training-time evaluation preprocessing inside."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from sklearn import datasets as sk_datasets
import tensorflow as tf

import mwn_tf
from mwn_tf.runner import export
from mwn_tf import models
from mwn_tf.data import clothing1m
from mwn_tf.weight_net import WeightNet
from helpers import REPO


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


def test_class_aware_weight_net_export_takes_losses_and_labels(tmp_path):
  keras.utils.set_random_seed(2)
  cluster_map = (0, 1, 1, 2)
  weight_net = mwn_tf.ClassAwareWeightNet(cluster_map)
  path = export.export_weight_net(weight_net, str(tmp_path / "weight_net"))
  loaded = tf.saved_model.load(path)
  losses = np.linspace(0.0, 8.0, 8, dtype=np.float32)
  labels = np.arange(8, dtype=np.int32) % 4
  expected = weight_net((losses[:, None], labels)).numpy()
  flat = loaded.serve(losses, labels)["weights"].numpy()
  column = loaded.serve(losses[:, None], labels[:, None])["weights"].numpy()
  assert flat.shape == (8,) and column.shape == (8, 1)
  np.testing.assert_allclose(flat, expected[:, 0], rtol=1e-6)
  np.testing.assert_allclose(column, expected, rtol=1e-6)
  # The serving signature takes both, by name; the map comes with it.
  sig = loaded.signatures["serving_default"]
  assert set(sig.structured_input_signature[1]) == {"losses", "labels"}
  np.testing.assert_allclose(sig(losses=tf.constant(losses),
                                 labels=tf.constant(labels))["weights"],
                             expected[:, 0], rtol=1e-6)
  assert loaded.cluster_map()["cluster_map"].numpy().tolist() == list(
      cluster_map)


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


# ------------------------------------------------------ raw-image signatures --
# The exports are loaded by plain TensorFlow in a fresh process, as a serving
# system would: no mwn_tf import, no Keras objects of this process.
_SERVE = r"""
import json, sys
import numpy as np
import tensorflow as tf

spec = json.load(open(sys.argv[1]))
model = tf.saved_model.load(spec["export"])
out = {}
for i, call in enumerate(spec["calls"]):
  if "files" in call:
    x = tf.stack([tf.io.read_file(f) for f in call["files"]])
  else:
    x = tf.constant(np.load(call["npy"]))
  for key, value in model.signatures[call["signature"]](images=x).items():
    value = value.numpy()
    if value.dtype == object:
      value = np.char.decode(value.astype(bytes), "utf-8")
    out[f"{i}/{key}"] = value
meta = model.metadata()
out["class_names"] = np.char.decode(meta["class_names"].numpy().astype(bytes))
out["preprocessing"] = np.array(meta["preprocessing"].numpy().decode())
assert "mwn_tf" not in sys.modules
np.savez(spec["out"], **out)
"""


def _serve_in_fresh_process(export_dir, calls, tmp_path):
  """Runs `calls` [(signature, array or list of file paths)] on the SavedModel
  in a new Python process; returns ([{output: array}], metadata)."""
  spec = {"export": export_dir, "out": str(tmp_path / "served.npz"),
          "calls": []}
  for i, (signature, images) in enumerate(calls):
    if isinstance(images, list):
      spec["calls"].append({"signature": signature, "files": images})
    else:
      np.save(tmp_path / f"in{i}.npy", images)
      spec["calls"].append({"signature": signature,
                            "npy": str(tmp_path / f"in{i}.npy")})
  (tmp_path / "spec.json").write_text(json.dumps(spec))
  (tmp_path / "serve.py").write_text(_SERVE)
  proc = subprocess.run(
      [sys.executable, str(tmp_path / "serve.py"), str(tmp_path / "spec.json")],
      cwd=tmp_path, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  with np.load(spec["out"]) as f:
    served = dict(f)
  results = [{k.split("/", 1)[1]: v for k, v in served.items()
              if k.startswith(f"{i}/")} for i in range(len(calls))]
  return results, {"class_names": list(served["class_names"]),
                   "preprocessing": str(served["preprocessing"])}


def _probabilities(classifier, images):
  return tf.nn.softmax(classifier(images, training=False)).numpy()


def _assert_labelled(out, expected, names):
  """Served probabilities, class names and top class against `expected`."""
  np.testing.assert_allclose(out["probabilities"], expected, rtol=1e-5,
                             atol=1e-6)
  assert out["class_names"].shape == expected.shape
  assert (out["class_names"] == np.array(names)[None]).all()
  # The top class where the model has one (not a near-tie a rounding flips).
  ordered = np.sort(expected, -1)
  clear = ordered[:, -1] - ordered[:, -2] > 1e-4
  assert clear.sum() >= len(expected) // 2
  np.testing.assert_array_equal(out["top_class"][clear],
                                np.array(names)[expected.argmax(-1)][clear])


def _collect(dataset):
  batches = list(dataset.as_numpy_iterator())
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


@pytest.mark.slow
def test_digits_raw_pixel_signature_matches_the_in_memory_model(tmp_path):
  splits = mwn_tf.data.get("digits")
  keras.utils.set_random_seed(4)
  classifier = models.get("small_cnn", num_classes=10, input_shape=(8, 8, 1))
  # A trained classifier, so that its top classes mean something.
  train = _collect(splits.train_for_eval(512))
  classifier.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                     keras.losses.SparseCategoricalCrossentropy(
                         from_logits=True))
  classifier.fit(train["image"], train["label"], batch_size=32, epochs=3,
                 verbose=0)
  path = export.export_classifier(classifier, str(tmp_path / "classifier"),
                                  data=splits)
  # The in-memory model on the test split as the training pipeline feeds it.
  test = _collect(splits.test(100))
  expected = _probabilities(classifier, test["image"])
  # A user has the dataset's own pixels: scikit-learn's uint8 0-16 values.
  raw = sk_datasets.load_digits().images[test["index"]].astype(np.uint8)
  (images_out, serve_out), meta = _serve_in_fresh_process(
      path, [("serve_images", raw[..., None]), ("serve", test["image"])],
      tmp_path)
  _assert_labelled(images_out, expected, splits.class_names)
  # The float signature is unchanged: preprocessed images, probabilities only.
  assert sorted(serve_out) == ["probabilities"]
  np.testing.assert_allclose(serve_out["probabilities"], expected, rtol=1e-5,
                             atol=1e-6)
  assert (images_out["top_class"] == test["label"].astype(str)).mean() > 0.8
  assert meta == {"class_names": splits.class_names,
                  "preprocessing": splits.raw_images.description}
  assert "pixel / 16" in meta["preprocessing"]
  extra = os.path.join(path, "assets.extra")
  with open(os.path.join(extra, "class_names.txt")) as f:
    assert f.read().splitlines() == splits.class_names
  with open(os.path.join(extra, "metadata.json")) as f:
    metadata = json.load(f)
  assert metadata["signatures"]["serve_images"]["dtype"] == "uint8"
  assert metadata["signatures"]["serve_images"]["shape"] == [None, 8, 8, 1]
  # A PNG or JPEG of a digit is taken too, its 0-255 pixels scaled to 0-16.
  assert metadata["signatures"]["serve_bytes"]["dtype"] == "string"
  assert "0-255 scaled to the dataset's 0-16" in (
      metadata["signatures"]["serve_bytes"]["meaning"])


def test_npz_raw_pixels_are_standardised_inside_the_export(tmp_path):
  rng = np.random.default_rng(0)
  path = str(tmp_path / "mine.npz")
  np.savez(path, x_train=rng.integers(0, 256, (60, 6, 6, 3), dtype=np.uint8),
           y_train=np.arange(60) % 3,
           x_test=rng.integers(0, 256, (12, 6, 6, 3), dtype=np.uint8),
           y_test=np.arange(12) % 3, class_names=["cat", "dog", "owl"])
  splits = mwn_tf.data.get("npz", path=path, num_meta=6)
  keras.utils.set_random_seed(7)
  classifier = models.get("small_cnn", num_classes=3, input_shape=(6, 6, 3))
  export_dir = export.export_classifier(
      classifier, str(tmp_path / "classifier"), data=splits)
  test = _collect(splits.test(12))
  expected = _probabilities(classifier, test["image"])
  raw = np.load(path)["x_test"][test["index"]]
  keras.backend.clear_session()
  loaded = tf.saved_model.load(export_dir)
  out = {k: v.numpy() for k, v in loaded.serve_images(raw).items()}
  out["class_names"] = out["class_names"].astype(str)
  out["top_class"] = out["top_class"].astype(str)
  _assert_labelled(out, expected, ["cat", "dog", "owl"])
  assert "(x_train's)" in loaded.metadata()["preprocessing"].numpy().decode()


# ------------------------------------------ images as a user would post them --
def _by_hand(images, height, width):
  """[n, h, w] uint8 or float -> [n, height, width]: what a user's own resize
  would send (shorter side, bilinear antialiased, centre crop, rounded)."""
  h, w = images.shape[1:3]
  scale = max(height / h, width / w)
  new = (max(int(np.ceil(h * scale)), height), max(int(np.ceil(w * scale)),
                                                    width))
  out = tf.image.resize(images[..., None].astype(np.float32), new,
                        antialias=True).numpy()[..., 0]
  top, left = (new[0] - height) // 2, (new[1] - width) // 2
  out = out[:, top:top + height, left:left + width]
  if images.dtype == np.uint8:
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
  return out.astype(images.dtype)


def _check_posted_images(export_dir, raw, pixel_max):
  """The grey export at `export_dir`, loaded afresh, takes what a user
  posts. `raw`: [n, H, W] test images in the dataset's dtype and range
  (0-`pixel_max`). Returns (the loaded model, serve_images(raw))."""
  keras.backend.clear_session()
  model = tf.saved_model.load(export_dir)
  n, height, width = raw.shape

  def probs(signature, images):
    return getattr(model, signature)(images)["probabilities"].numpy()

  base = probs("serve_images", raw[..., None])
  # The comparisons below can fail: the outputs depend on the image.
  assert np.ptp(base, axis=0).max() > 1e-3
  # No channel axis: the same images.
  np.testing.assert_array_equal(probs("serve_images", raw), base)
  # Colour images are converted as tf.image.rgb_to_grayscale converts them.
  rgb = np.stack([raw, raw[::-1], np.roll(raw, 1, 0)], -1)
  np.testing.assert_array_equal(
      probs("serve_images", rgb),
      probs("serve_images", tf.image.rgb_to_grayscale(rgb).numpy()))
  if np.issubdtype(raw.dtype, np.integer):
    # Its weights sum to 0.9999: integer grey pixels come back unchanged
    # (floats come back * 0.9999).
    np.testing.assert_array_equal(
        probs("serve_images", np.repeat(raw[..., None], 3, -1)), base)
  # Bigger images (square, and wider: centre-cropped) are resized as the
  # user would resize them by hand.
  rng = np.random.default_rng(3)
  for size in [(3 * height, 3 * width), (2 * height, 3 * width)]:
    big = (rng.random((n,) + size) * pixel_max).astype(raw.dtype)
    np.testing.assert_allclose(probs("serve_images", big),
                               probs("serve_images",
                                     _by_hand(big, height, width)),
                               rtol=1e-5, atol=1e-6)
  # PNG files of the images, in 0-255: decoded and scaled back to the
  # dataset's range, they are the same images.
  integer = np.issubdtype(raw.dtype, np.integer)
  pixels = raw.astype(np.float64) * 255 / pixel_max
  pngs = tf.stack([tf.io.encode_png(p[..., None]) for p in
                   np.round(pixels).astype(np.uint8)])
  got = probs("serve_bytes", pngs)
  if integer:  # Every level survives round(v * 255 / max) and back.
    np.testing.assert_array_equal(got, base)
  else:  # 8-bit PNG: the floats are quantised to 1/255.
    quantised = (np.round(pixels) / 255 * pixel_max).astype(raw.dtype)
    np.testing.assert_allclose(got, probs("serve_images", quantised),
                               rtol=1e-5, atol=1e-6)
  # Anything else: one line saying what is taken.
  for bad in (raw[0], raw[..., None, None], np.stack([raw, raw], -1)):
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
      model.serve_images(bad)
    shape = " ".join(str(d) for d in bad.shape)
    assert re.search(
        r"serve_images takes \w+ images \[b, H, W, C\] with C 1 or 3, or "
        rf"\[b, H, W\] \(this model: \[b, {height}, {width}, 1\]; other "
        r"sizes are resized, the other channel count is converted\); got "
        rf"shape\] \[{shape}\]", error.value.message), error.value.message
  return model, base


def test_digits_export_takes_posted_images_and_pngs(tmp_path):
  splits = mwn_tf.data.get("digits")
  keras.utils.set_random_seed(4)
  classifier = models.get("small_cnn", num_classes=10, input_shape=(8, 8, 1))
  path = export.export_classifier(classifier, str(tmp_path / "classifier"),
                                  data=splits)
  test_index = splits.arrays["test"]["index"][:32]
  raw = sk_datasets.load_digits().images[test_index].astype(np.uint8)
  assert raw.max() == 16
  # The 17 levels 0-16 make the round trip through 0-255 exactly.
  levels = np.arange(17)
  assert (np.round(np.round(levels * 255 / 16) * 16 / 255) == levels).all()
  model, base = _check_posted_images(path, raw, 16)
  # Pixels off those 17 levels (any PNG) go to the nearest level.
  posted = np.random.default_rng(5).integers(0, 256, raw.shape + (1,),
                                             np.uint8)
  nearest = np.round(posted.astype(np.float64) * 16 / 255).astype(np.uint8)
  np.testing.assert_array_equal(
      model.serve_bytes(tf.stack([tf.io.encode_png(p) for p in posted]))[
          "probabilities"].numpy(),
      model.serve_images(nearest)["probabilities"].numpy())
  assert base.shape == (32, 10)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_npz_grey_export_takes_posted_images_and_pngs(tmp_path, dtype):
  rng = np.random.default_rng(0)
  top = 255 if dtype == "uint8" else 1.0  # npz floats are taken as 0-1.

  def images(n):  # [n, 28, 28]: no channel axis, as MNIST-like sets ship.
    return (rng.random((n, 28, 28)) * top).astype(dtype)

  path = str(tmp_path / "mine.npz")
  np.savez(path, x_train=images(60), y_train=np.arange(60) % 3,
           x_test=images(12), y_test=np.arange(12) % 3)
  splits = mwn_tf.data.get("npz", path=path, num_meta=6)
  assert splits.raw_images.pixel_max == top
  keras.utils.set_random_seed(7)
  classifier = models.get("small_cnn", num_classes=3,
                          input_shape=(28, 28, 1))
  export_dir = export.export_classifier(
      classifier, str(tmp_path / "classifier"), data=splits)
  raw = np.load(path)["x_test"]
  _, base = _check_posted_images(export_dir, raw, top)
  test = _collect(splits.test(12))
  np.testing.assert_allclose(base[test["index"]],
                             _probabilities(classifier, test["image"]),
                             rtol=1e-5, atol=1e-6)


def _sklearn_jpeg_crops():
  """Crops of scikit-learn's two photographs (427x640), re-encoded as JPEG:
  real photographs of several sizes and aspect ratios."""
  folder = os.path.join(os.path.dirname(sk_datasets.__file__), "images")
  photos = [tf.io.decode_jpeg(tf.io.read_file(os.path.join(folder, name)))
            for name in ("china.jpg", "flower.jpg")]
  boxes = [(0, 0, 300, 400), (50, 120, 427, 300), (100, 200, 256, 256),
           (10, 30, 240, 500), (60, 280, 350, 350), (0, 0, 427, 640)]
  return [tf.io.encode_jpeg(photos[i % 2][t:t + h, l:l + w], quality=90)
          for i, (t, l, h, w) in enumerate(boxes)]


def _write_clothing1m_release(root, test_jpegs):
  """A minimal Clothing1M release (official file names) whose clean_test
  images are `test_jpegs`; returns the clean_test keys."""
  rng = np.random.default_rng(0)
  keys = {split: [f"images/{d}/00/{split}{i}.jpg" for i in range(n)]
          for d, (split, n) in enumerate([("noisy_train", 14),
                                          ("clean_train", 14),
                                          ("clean_val", 14),
                                          ("clean_test", len(test_jpegs))])}
  for split, split_keys in keys.items():
    for i, key in enumerate(split_keys):
      os.makedirs(os.path.join(root, os.path.dirname(key)), exist_ok=True)
      data = test_jpegs[i] if split == "clean_test" else tf.io.encode_jpeg(
          rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
      tf.io.write_file(os.path.join(root, key), data)
  ann = os.path.join(root, "annotations")
  os.makedirs(ann)
  lines = {"noisy_label_kv.txt": [f"{k} {i % 14}" for i, k in
                                  enumerate(keys["noisy_train"])],
           "clean_label_kv.txt": [f"{k} {i % 14}" for split in keys
                                  if split != "noisy_train"
                                  for i, k in enumerate(keys[split])],
           "category_names_eng.txt": list(clothing1m.CLASS_NAMES)}
  lines.update({f"{split}_key_list.txt": keys[split] for split in keys})
  for name, text in lines.items():
    with open(os.path.join(ann, name), "w") as f:
      f.write("\n".join(text) + "\n")
  return keys["clean_test"]


@pytest.mark.slow
def test_clothing1m_raw_image_and_jpeg_signatures_match_the_pipeline(tmp_path):
  manual = str(tmp_path / "manual")
  test_keys = _write_clothing1m_release(manual, _sklearn_jpeg_crops())
  # The real loader with its defaults: shorter side 256, centre crop 224.
  splits = mwn_tf.data.get("clothing1m", data_dir=str(tmp_path / "tfds"),
                           manual_dir=manual)
  keras.utils.set_random_seed(5)
  classifier = models.get("small_cnn", num_classes=14,
                          input_shape=(224, 224, 3))
  path = export.export_classifier(classifier, str(tmp_path / "classifier"),
                                  data=splits)
  test = _collect(splits.test(8))
  expected = _probabilities(classifier, test["image"])
  files = [os.path.join(manual, test_keys[i]) for i in test["index"]]
  # The same pixels as a client would send them: decoded (any size, one
  # image per call), and losslessly re-encoded as PNG.
  pixels = [tf.io.decode_jpeg(tf.io.read_file(f), channels=3,
                              dct_method="INTEGER_ACCURATE").numpy()
            for f in files]
  pngs = []
  for i, image in enumerate(pixels):
    pngs.append(str(tmp_path / f"crop{i}.png"))
    tf.io.write_file(pngs[-1], tf.io.encode_png(image))
  assert len({p.shape for p in pixels}) == len(pixels) > 3
  calls = ([("serve_bytes", files), ("serve_bytes", pngs)] +
           [("serve_images", p[None]) for p in pixels])
  served, meta = _serve_in_fresh_process(path, calls, tmp_path)
  names = list(clothing1m.CLASS_NAMES)
  _assert_labelled(served[0], expected, names)
  _assert_labelled(served[1], expected, names)
  for i, out in enumerate(served[2:]):
    np.testing.assert_allclose(out["probabilities"], expected[i:i + 1],
                               rtol=1e-5, atol=1e-6)
    assert out["top_class"].shape == (1,)
  assert meta["class_names"] == names
  assert "centre 224x224 crop" in meta["preprocessing"]
  with open(os.path.join(path, "assets.extra", "metadata.json")) as f:
    signatures = json.load(f)["signatures"]
  assert signatures["serve_images"]["shape"] == [None, None, None, 3]
  assert signatures["serve_bytes"]["dtype"] == "string"


# -------------------------------------------------- docs/exports.md snippet --
def _readme_snippet():
  """The python block of docs/exports.md's "Using the trained models"
  section (linked from the README)."""
  with open(os.path.join(REPO, "docs", "exports.md"), encoding="utf-8") as f:
    readme = f.read()
  section = readme.split("\n## Using the trained models\n", 1)[1]
  section = section.split("\n## ", 1)[0]
  blocks = re.findall(r"```python\n(.*?)```", section, re.S)
  assert len(blocks) == 1, "expected one python block in the section"
  return blocks[0]


@pytest.mark.slow
def test_readme_snippet_runs_as_written_on_a_real_run(tmp_path):
  run_dir = tmp_path / "run"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  subprocess.run([sys.executable, "-m", "mwn_tf.main",
                  "--gin_file=gin/smoke.gin", f"--model_dir={run_dir}"],
                 cwd=REPO, check=True, env=env, capture_output=True,
                 timeout=600)
  snippet = _readme_snippet()
  assert snippet.count("runs/quickstart/") == 2
  (tmp_path / "snippet.py").write_text(
      snippet.replace("runs/quickstart/", f"{run_dir}/"))
  proc = subprocess.run([sys.executable, str(tmp_path / "snippet.py")],
                        cwd=tmp_path, capture_output=True, text=True,
                        env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  assert "pixel / 16" in proc.stdout
  assert re.match(r"\[b'\d' b'\d' b'\d' b'\d' b'\d'\] \[0 1 2 3 4\]",
                  lines[0]), lines[0]
