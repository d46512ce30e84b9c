"""The `folder` dataset on generated JPEG/PNG files of many sizes and on real
JPEG photos (crops of scikit-learn's china.jpg and flower.jpg)."""

import os
import shutil

from absl import flags
import numpy as np
import pytest
from sklearn import datasets as sk_datasets
import tensorflow as tf

import mwn_tf.data
from mwn_tf import main
from mwn_tf.data import folder as folder_lib
from mwn_tf.data import preprocessing

import photo_folders

FLAGS = flags.FLAGS
CLASSES = ["cat", "dog", "sea lion"]  # Sorted; one name with a space.
MEAN = np.array(preprocessing.IMAGENET_MEAN)
STD = np.array(preprocessing.IMAGENET_STD)
# (format, channels written): every kind of file a user folder may hold.
KINDS = [("jpg", 3), ("png", 3), ("jpeg", 1), ("png", 4), ("png", 1),
         ("JPG", 3), ("png", 3)]


def _write(path, pixels, fmt):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if fmt.lower() in ("jpg", "jpeg"):
    data = tf.io.encode_jpeg(pixels, quality=95, chroma_downsampling=False)
  else:
    data = tf.io.encode_png(pixels)
  with open(path, "wb") as f:
    f.write(data.numpy())


def _make_split(root, per_class, rng, colours):
  """Solid-colour images of random sizes and kinds; records each file's
  RGB colour in `colours` (path -> [3] uint8 as a grey decoder sees it)."""
  for c, name in enumerate(CLASSES):
    for i in range(per_class):
      fmt, ch = KINDS[i % len(KINDS)]
      h, w = (int(v) for v in rng.integers(5, 150, 2))
      rgb = rng.integers(0, 256, 3).astype(np.uint8)
      rgb[c] = 255  # Class c is bright in channel c (JPEG-safe colours).
      if ch == 1:
        rgb[:] = rng.integers(0, 256)
      pixels = np.broadcast_to(rgb[:ch] if ch < 4 else
                               np.append(rgb, 255).astype(np.uint8),
                               (h, w, ch)).copy()
      sub = "nested" if i == 2 else ""  # Files are found recursively.
      path = os.path.join(root, name, sub, f"img_{i}.{fmt}")
      _write(path, pixels, fmt)
      colours[path] = rgb
    # Not images: skipped without error.
    with open(os.path.join(root, name, "notes.txt"), "w") as f:
      f.write("not an image")
    with open(os.path.join(root, name, ".hidden.jpg"), "w") as f:
      f.write("not an image either")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("folders"))
  rng = np.random.default_rng(0)
  colours = {}
  for split, n in (("train", 7), ("meta", 2), ("test", 2)):
    _make_split(os.path.join(root, split), n, rng, colours)
  return root, colours


def _get(root, **kwargs):
  settings = dict(train_dir=os.path.join(root, "train"),
                  meta_dir=os.path.join(root, "meta"),
                  test_dir=os.path.join(root, "test"), image_size=16)
  settings.update(kwargs)
  return mwn_tf.data.get("folder", **settings)


def _all(dataset):
  batches = list(dataset)
  return {k: np.concatenate([b[k].numpy() for b in batches])
          for k in batches[0]}


def test_contract(generated):
  root, _ = generated
  d = _get(root)
  assert d.class_names == CLASSES and d.num_classes == 3
  assert d.image_shape == (16, 16, 3)
  assert (d.num_train, d.num_meta, d.num_test) == (21, 6, 6)
  s = d.summary()
  assert s["realised_noise_rate"] is None and s["expected_noise_rate"] is None
  assert s["realised_noise_rate_measured_on"].startswith("the 0 of 21 ")
  assert s["noise_rate"] is None and s["transition_matrix"] is None
  assert s["class_counts"] == [7, 7, 7] and s["meta_class_counts"] == [2] * 3
  train, meta = next(iter(d.train_and_meta(8, meta_batch_size=4)))
  assert train["image"].shape == (8, 16, 16, 3)
  assert train["image"].dtype == tf.float32
  np.testing.assert_array_equal(train["clean_label"], [-1] * 8)
  assert not train["is_noisy"].numpy().any()
  np.testing.assert_array_equal(meta["clean_label"], meta["label"])
  # index -> file: the position in list_images(train_dir), whose class is
  # the label.
  paths, labels, names = folder_lib.list_images(os.path.join(root, "train"))
  assert names == CLASSES and len(paths) == 21
  np.testing.assert_array_equal(d.arrays["train"]["path"],
                                paths[d.arrays["train"]["index"]])
  np.testing.assert_array_equal(train["label"],
                                labels[train["index"].numpy()])


@pytest.mark.parametrize("split", ["train", "test"])
def test_pixels_are_the_files_colours(generated, split):
  root, colours = generated
  d = _get(root)
  got = _all(d.train_for_eval(7) if split == "train" else d.test(7))
  paths = d.arrays[split]["path"]
  position = {int(i): p for i, p in zip(d.arrays[split]["index"], paths)}
  assert len(got["index"]) == len(paths)
  for image, index in zip(got["image"], got["index"]):
    path = position[int(index)]
    want = (colours[path] / 255.0 - MEAN) / STD
    # JPEG rounds a solid colour by a level or two; PNG is exact.
    tol = (3 if path.lower().endswith(("jpg", "jpeg")) else 0.01) / 255 / STD
    assert np.all(np.abs(image - want) <= tol + 1e-5), path


def test_grey_decoding(generated):
  root, colours = generated
  d = _get(root, channels=1)
  assert d.image_shape == (16, 16, 1)
  got = _all(d.test(6))
  position = dict(zip(d.arrays["test"]["index"], d.arrays["test"]["path"]))
  for image, index in zip(got["image"], got["index"]):
    rgb = colours[position[index]].astype(np.float64)
    grey = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255
    want = (grey - 0.449) / 0.226
    assert np.all(np.abs(image - want) <= 3 / 255 / 0.226), position[index]


@pytest.mark.parametrize("shape", [(30, 90), (90, 30)])
def test_centre_square_of_any_aspect(tmp_path, shape):
  """Three bands along the long side: only the middle one survives."""
  h, w = shape
  bands = np.zeros((h, w, 3), np.uint8)
  third = max(h, w) // 3
  for b in range(3):
    sl = slice(b * third, (b + 1) * third)
    if w > h:
      bands[:, sl, b] = 255
    else:
      bands[sl, :, b] = 255
  for split in ("train", "meta", "test"):
    for c in ("a", "b"):
      _write(str(tmp_path / split / c / "x.png"), bands, "png")
  d = mwn_tf.data.get("folder", train_dir=str(tmp_path / "train"),
                      meta_dir=str(tmp_path / "meta"),
                      test_dir=str(tmp_path / "test"), image_size=12,
                      mean=(0.0,) * 3, std=(1.0,) * 3)
  image = _all(d.test(2))["image"][0]
  if w > h:
    image = image.transpose(1, 0, 2)  # Bands along the first axis.
  # Middle band only: green; antialiasing blends just the outermost pixels.
  np.testing.assert_allclose(image[1:-1, :, 1], 1.0, atol=1e-4)
  np.testing.assert_allclose(image[1:-1, :, [0, 2]], 0.0, atol=1e-4)
  assert image[[0, -1], :, 1].min() > 0.8


def test_held_out_test_fraction(generated):
  root, _ = generated
  d = _get(root, test_dir=None, test_fraction=0.3)
  test, train = d.arrays["test"], d.arrays["train"]
  # Stratified: round(0.3 * 7) = 2 of each class's 7 images.
  np.testing.assert_array_equal(np.bincount(test["label"]), [2, 2, 2])
  assert d.num_train == 15 and d.num_test == 6
  assert not set(test["index"]) & set(train["index"])
  np.testing.assert_array_equal(test["clean_label"], [-1] * 6)
  # The same images for every experiment seed; another split seed differs.
  same = _get(root, test_dir=None, test_fraction=0.3, seed=5)
  np.testing.assert_array_equal(same.arrays["test"]["index"], test["index"])
  other = _get(root, test_dir=None, test_fraction=0.3, test_split_seed=1)
  assert set(other.arrays["test"]["index"]) != set(test["index"])


def test_meta_subset(generated):
  root, _ = generated
  d = _get(root, num_meta=3)
  np.testing.assert_array_equal(d.meta_class_counts, [1, 1, 1])


def _reflect_windows(source, pad):
  padded = np.pad(source, [(pad, pad), (pad, pad), (0, 0)], mode="reflect")
  size = source.shape[0]
  return [(dy, dx, flip, (padded[dy:dy + size, dx:dx + size][:, ::-1]
                          if flip else padded[dy:dy + size, dx:dx + size]))
          for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
          for flip in (False, True)]


def test_augmentation_is_pad_crop_flip(real_jpegs):
  d = mwn_tf.data.get("folder", image_size=32, augment=True, **real_jpegs)
  plain = _all(d.train_for_eval(50))
  by_index = dict(zip(plain["index"], plain["image"]))
  train, _ = next(iter(d.train_and_meta(8)))
  seen = set()
  for image, index in zip(train["image"].numpy(), train["index"].numpy()):
    hits = [(dy, dx, f) for dy, dx, f, w in
            _reflect_windows(by_index[index], 4)
            if np.allclose(w, image, atol=1e-4)]
    assert hits, "not a reflect-pad-4 crop (+ flip) of the eval image"
    seen.update(hits)
  assert len(seen) > 1  # Random, not the identity every time.


# ------------------------------------------------------------------- errors
def test_missing_and_unset_folders(tmp_path, generated):
  root, _ = generated
  with pytest.raises(ValueError, match="bind folder.train_dir"):
    mwn_tf.data.get("folder")
  with pytest.raises(FileNotFoundError,
                     match=r"folder.meta_dir = '.*nowhere': no such folder"):
    _get(root, meta_dir=str(tmp_path / "nowhere"))
  with pytest.raises(ValueError, match="ONE test set.*not neither"):
    _get(root, test_dir=None)
  with pytest.raises(ValueError, match="ONE test set.*not both"):
    _get(root, test_fraction=0.2)
  with pytest.raises(ValueError, match="folder.channels must be 1"):
    _get(root, channels=4)


def test_mismatched_class_names_are_listed(tmp_path, generated):
  root, _ = generated
  meta = tmp_path / "meta"
  shutil.copytree(os.path.join(root, "meta"), meta)
  os.rename(meta / "sea lion", meta / "Sea lion")
  (meta / "horse").mkdir()
  _write(str(meta / "horse" / "h.png"), np.zeros((4, 4, 3), np.uint8), "png")
  with pytest.raises(ValueError) as e:
    _get(root, meta_dir=str(meta))
  message = str(e.value).splitlines()[0]
  assert f"folder.meta_dir = '{meta}'" in message
  assert "only in train_dir: sea lion; only in meta_dir: Sea lion, horse" \
         in message


def test_meta_or_test_images_that_are_training_images(generated):
  root, _ = generated
  train = os.path.join(root, "train")
  with pytest.raises(ValueError, match=r"21 file\(s\) of folder.meta_dir are "
                     "also in folder.train_dir, e.g. .*cat/img_0.jpg"):
    _get(root, meta_dir=train)
  # The same folder under another name is the same files.
  link = os.path.join(root, "train_link")
  os.symlink(train, link)
  try:
    with pytest.raises(ValueError, match="of folder.test_dir are also in "
                       "folder.train_dir"):
      _get(root, test_dir=link)
  finally:
    os.remove(link)


def test_empty_class_folder_is_named(tmp_path, generated):
  root, _ = generated
  train = tmp_path / "train"
  shutil.copytree(os.path.join(root, "train"), train)
  (train / "zebra").mkdir()
  (train / "zebra" / "readme.txt").write_text("no images yet")
  with pytest.raises(ValueError, match=f"folder.train_dir: class folder"
                     rf"\(s\) {train / 'zebra'} hold no image files"):
    _get(root, train_dir=str(train))


def test_every_unreadable_image_is_named(tmp_path, generated):
  root, _ = generated
  train = tmp_path / "train"
  shutil.copytree(os.path.join(root, "train"), train)
  good = (train / "cat" / "img_0.jpg").read_bytes()
  (train / "cat" / "truncated.jpg").write_bytes(good[:len(good) // 2])
  (train / "dog" / "text.png").write_text("<html>not found</html>")
  (train / "dog" / "empty.jpeg").write_bytes(b"")
  with pytest.raises(folder_lib.ImageFileError) as e:
    _get(root, train_dir=str(train))
  # One line (gin appends "In call to configurable" lines after it).
  message = str(e.value).splitlines()[0]
  assert message.endswith("Replace or delete them and run again.")
  assert message.startswith("folder.train_dir: 3 image files cannot be read "
                            "or decoded: ")
  assert f"{train / 'dog' / 'empty.jpeg'} is empty (0 bytes)" in message
  for name in ("cat/truncated.jpg", "dog/text.png"):
    assert f"{train / name} does not decode as an image" in message
  # validate=False skips the check (the run would fail when it reads them).
  assert _get(root, train_dir=str(train), validate=False).num_train == 24


# -------------------------------------------------------------- real photos
@pytest.fixture(scope="module")
def real_jpegs(tmp_path_factory):
  return photo_folders.write(tmp_path_factory.mktemp("photos"))


def test_real_jpegs_decode_as_pil_does(real_jpegs):
  for name in ("china", "flower"):
    path = os.path.join(real_jpegs["train_dir"], name, f"{name}.jpg")
    ours = folder_lib.decode(tf.io.read_file(path), 3).numpy()
    theirs = sk_datasets.load_sample_image(f"{name}.jpg")
    assert ours.shape == theirs.shape == (427, 640, 3)
    # The same IDCT as PIL's: equal up to rounding in the colour conversion.
    assert np.abs(ours.astype(int) - theirs).max() <= 1


def test_real_jpegs_pipeline(real_jpegs):
  d = mwn_tf.data.get("folder", image_size=64, **real_jpegs)
  assert d.class_names == ["china", "flower"] and d.num_train == 26
  got = _all(d.test(8))
  assert got["image"].shape == (8, 64, 64, 3)
  # A centre crop of a 427x640 photo of a pagoda and one of a flower: the
  # classes differ in colour (the flower photo is much redder).
  red = (got["image"][..., 0] * STD[0] + MEAN[0]).mean(axis=(1, 2))
  green = (got["image"][..., 1] * STD[1] + MEAN[1]).mean(axis=(1, 2))
  assert np.mean((red - green)[got["label"] == 1]) > np.mean(
      (red - green)[got["label"] == 0])


# --------------------------------------------------------------- end to end
SHRINK = ["folder.image_size = 32", "train_eval.model = 'small_cnn'",
          "train_eval.train_steps = 3", "train_eval.batch_size = 8",
          "train_eval.meta_batch_size = 4", "train_eval.lr_decay_epochs = ()",
          "train_eval.eval_batch_size = 16", "train_eval.verbose = 0",
          "resnet50.weights_path = None"]


# folder_example.gin trains through the entry point (with its ResNet-50) in
# tests/test_gin_end_to_end.py, which checks its per-sample table, the
# export's class names and file-bytes signature, and the analysis.


def test_mismatched_folders_exit_2_in_one_line(tmp_path, real_jpegs, capsys):
  meta = tmp_path / "meta"
  shutil.copytree(real_jpegs["meta_dir"], meta)
  os.rename(meta / "flower", meta / "flowers")
  params = SHRINK + [f"folder.train_dir = '{real_jpegs['train_dir']}'",
                     f"folder.meta_dir = '{meta}'",
                     f"folder.test_dir = '{real_jpegs['test_dir']}'"]
  FLAGS.unparse_flags()
  FLAGS(["mwn_tf.main", "--gin_file=gin/folder_example.gin",
         f"--model_dir={tmp_path / 'run'}"] +
        [f"--gin_param={p}" for p in params])
  try:
    with pytest.raises(SystemExit) as e:
      main.main(["mwn_tf.main"])
  finally:
    FLAGS.unparse_flags()
  assert e.value.code == 2
  errors = [l for l in capsys.readouterr().err.splitlines()
            if l.startswith("mwn_tf.main: error:")]
  assert len(errors) == 1
  assert ("only in train_dir: flower; only in meta_dir: flowers"
          in errors[0])
