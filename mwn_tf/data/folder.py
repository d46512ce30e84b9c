"""Bring your own images: folders of JPEG/PNG files, one subfolder per class.

    train_dir/<class>/*.jpg   noisy training images (their folder = label)
    meta_dir/<class>/*.jpg    a small set of clean, verified images (the meta
                              set), with the same class subfolders
    test_dir/<class>/*.jpg    optional clean test images; without it, bind
                              test_fraction to hold out part of train_dir

Class names are the subfolder names, sorted (class i = the i-th name); they
are kept in `DataSplits.class_names`, the run's results and the classifier
export. Files are found recursively inside each class folder; .jpg, .jpeg,
.png, .bmp and .gif (first frame) count, other and hidden files are skipped.

Images are streamed from their files (tf.data reads and decodes each one when
a batch needs it), so a folder of 100k images costs no memory up front; only
the paths are held. Decoding everything into memory once would be faster per
epoch for small folders but needs n*H*W*C bytes (15 GB for 100k 224x224 RGB
images), so streaming is the one path. Before training, every image is read
and fully decoded once, in parallel, with the decoder training uses (`decode`:
`tf.io.decode_jpeg`, `tf.io.decode_image` for PNG/BMP/GIF): a file that
cannot be read or does not decode stops the loader with one error naming it,
instead of a crash in the middle of an epoch. This pass costs one decode per
image per run; `validate=False` skips it.

Each image is decoded to `channels` (3: grey images become RGB; 1: colour
images become grey), its shorter side is resized to `image_size` (bilinear,
antialiased) and the central `image_size` square is kept, so any size and
aspect ratio works. With `augment`, train and meta images then get CIFAR's
augmentation scaled to the size: reflect-pad image_size/8, random crop back,
random horizontal flip (leave it off where a flip changes the meaning, e.g.
text). Finally (x - mean) / std per channel, ImageNet's statistics by default.

Real user data has no clean labels for its training images: train
`clean_label` is -1, `is_noisy` is False and the realised noise rate is None
(unknown). MW-Net still learns its weights from the clean meta set; the
per-sample weights (`mwn_tf.analyze`) rank the training files by how much the
meta set trusts their labels. `index` is the position in `list_images(dir)`
(sorted by class, then by path), and `DataSplits.arrays[split]["path"]` maps
it back to the file (`DataSplits.sample_names.files`: the path relative to
train_dir). `python -m mwn_tf.analyze` writes review.csv of the most
distrusted files; edited and bound as `review_file`, it leaves files out of
training or relabels them (`mwn_tf.data.review`; meta and test untouched).

The test set: `test_dir` (clean, recommended) or `test_fraction` of each
class of train_dir, held out with `test_split_seed` (fixed, so every
experiment seed is tested on the same images). A held-out test set carries
train_dir's noisy labels, so its accuracy measures agreement with them, not
accuracy; its `clean_label` is -1.
"""

import os
import re
from typing import Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from mwn_tf.data import corruption
from mwn_tf.data import preprocessing
from mwn_tf.data import registry
from mwn_tf.data import review as review_lib
from mwn_tf.data import splits as splits_lib

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# An ImageFileError names this many bad files, then only counts the rest.
_MAX_NAMED = 10
# ImageNet statistics; for grey images their channel means.
_GREY_MEAN, _GREY_STD = (0.449,), (0.226,)


class ImageFileError(ValueError):
  """Image files that cannot be read or do not decode."""


class FileSource(splits_lib.ArraySource):
  """A split of image files: holds their paths, yields their encoded bytes.

  Positions are shuffled and sharded as in `ArraySource`; each file is read
  when its example is made, so only the paths are held in memory and nothing
  decoded is cached (`in_memory` False).
  """

  in_memory = False

  def make(self, ctx, **kwargs) -> tf.data.Dataset:
    """As `ArraySource.make`; `image` is the file's bytes (scalar string)."""
    return super().make(ctx, **kwargs).map(
        lambda ex: {**ex, "image": tf.io.read_file(ex["image"])},
        num_parallel_calls=tf.data.AUTOTUNE)

  def images_of(self, index: np.ndarray) -> list:
    """As `ArraySource.images_of`: each file's bytes."""
    return [tf.io.read_file(p).numpy() for p in super().images_of(index)]


def _image_files(folder: str) -> list:
  """Sorted paths (relative to `folder`) of the image files under it."""
  found = []
  for root, dirs, files in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in files:
      if (not name.startswith(".")
          and name.lower().endswith(IMAGE_EXTENSIONS)):
        found.append(os.path.relpath(os.path.join(root, name), folder))
  return sorted(found)


def list_images(folder: str, binding: str = "folder.train_dir"):
  """Image files of a class-per-subfolder folder, in `index` order.

  Args:
    folder: the folder.
    binding: the gin binding that named it (for error messages).

  Returns:
    (paths [n] str, labels [n] int64, class_names [K] sorted subfolder
    names); sorted by class, then by path inside the class folder.

  Raises:
    FileNotFoundError: the folder does not exist.
    ValueError: no class subfolders, fewer than 2, or an empty one.
  """
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{binding} = {folder!r}: no such folder; bind "
                            f"{binding} to a folder with one subfolder of "
                            "images per class.")
  class_names = sorted(e.name for e in os.scandir(folder)
                       if e.is_dir() and not e.name.startswith("."))
  if len(class_names) < 2:
    raise ValueError(f"{binding} = {folder!r} has {len(class_names)} class "
                     "subfolder(s); put each class's images in its own "
                     f"subfolder, {os.path.join(folder, '<class name>')}/ "
                     "(at least 2 classes).")
  paths, labels, empty = [], [], []
  for label, name in enumerate(class_names):
    files = _image_files(os.path.join(folder, name))
    if not files:
      empty.append(os.path.join(folder, name))
    paths += [os.path.join(folder, name, f) for f in files]
    labels += [label] * len(files)
  if empty:
    raise ValueError(f"{binding}: class folder(s) {', '.join(empty)} hold no "
                     f"image files ({', '.join(IMAGE_EXTENSIONS)}); add "
                     "images or delete the folder(s).")
  return np.array(paths), np.array(labels, np.int64), class_names


def check_same_classes(names: Sequence[str], reference: Sequence[str],
                       binding: str, folder: str, train_dir: str) -> None:
  """Raises ValueError listing the class folders only one side has."""
  if list(names) == list(reference):
    return
  only_train = sorted(set(reference) - set(names))
  only_other = sorted(set(names) - set(reference))
  field = binding.rsplit(".", 1)[-1]
  raise ValueError(
      f"the class folders of {binding} = {folder!r} differ from those of "
      f"folder.train_dir = {train_dir!r}: only in train_dir: "
      f"{', '.join(only_train) or '-'}; only in {field}: "
      f"{', '.join(only_other) or '-'}. Give both the same class "
      "subfolders (names are case-sensitive).")


def check_disjoint(paths: np.ndarray, train_paths: np.ndarray,
                   binding: str) -> None:
  """Raises ValueError if files of `binding` are also training files (the
  same file through any path), which would leak them into training."""
  train = {os.path.realpath(p) for p in train_paths}
  shared = [p for p in paths if os.path.realpath(p) in train]
  if shared:
    raise ValueError(f"{len(shared)} file(s) of {binding} are also in "
                     f"folder.train_dir, e.g. {shared[0]}; the meta and test "
                     "images must be other images than the training ones.")


def decode(data: tf.Tensor, channels: int) -> tf.Tensor:
  """Encoded JPEG/PNG/BMP/GIF bytes -> uint8 [h, w, channels]."""
  # JPEG with the accurate integer IDCT, as Clothing1M: the same pixels as
  # PIL gives (tests check scikit-learn's photos); TF's default differs from
  # it by about one level per pixel.
  return tf.cond(
      tf.io.is_jpeg(data),
      lambda: tf.io.decode_jpeg(data, channels=channels,
                                dct_method="INTEGER_ACCURATE"),
      lambda: tf.io.decode_image(data, channels=channels,
                                 expand_animations=False))


def _reason(path: str, channels: int) -> str:
  """Why `path` fails to read or decode (a phrase after the path)."""
  try:
    data = tf.io.read_file(path)
  except tf.errors.OpError as e:
    return f"cannot be read ({' '.join(e.message.split())})"
  if int(tf.strings.length(data)) == 0:
    return "is empty (0 bytes)"
  try:
    decode(data, channels)
  except tf.errors.OpError as e:
    why = " ".join(re.sub(r"\{\{.*?\}\}|\[Op:.*", "", e.message).split())
    return f"does not decode as an image (tf.io.decode_image: {why})"
  return "failed in the parallel check but decodes now (flaky storage?)"


def check_images(paths: np.ndarray, channels: int, binding: str) -> None:
  """Reads and decodes every file once, in parallel; names the bad ones.

  Args:
    paths: [n] image files.
    channels: decode to this many channels, as training does.
    binding: the gin binding of their folder (for the message).

  Raises:
    ImageFileError: one line naming the first bad files and the count.
  """
  n = len(paths)
  ds = tf.data.Dataset.from_tensor_slices((np.arange(n), paths))
  ds = ds.map(lambda i, p: (i, tf.shape(decode(tf.io.read_file(p),
                                               channels))),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  # A failing read or decode drops its element; what is missing is bad.
  ds = ds.ignore_errors().map(lambda i, _: i).batch(4096)
  good = np.zeros(n, bool)
  for chunk in ds.as_numpy_iterator():
    good[chunk] = True
  bad = np.flatnonzero(~good)
  if not bad.size:
    return
  named = "; ".join(f"{paths[i]} {_reason(paths[i], channels)}"
                    for i in bad[:_MAX_NAMED])
  more = (f"; and {bad.size - _MAX_NAMED} more" if bad.size > _MAX_NAMED
          else "")
  # One line: the entry point shows an error's first line only.
  raise ImageFileError(
      f"{binding}: {bad.size} image file{'s' if bad.size > 1 else ''} "
      f"cannot be read or decoded: {named}{more}. Replace or delete "
      f"{'them' if bad.size > 1 else 'it'} and run again.")


def hold_out(labels: np.ndarray, fraction: float, num_classes: int,
             seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Stratified, seeded split of positions into (train, test).

  Each class gives round(fraction * its count) images to test, at least one
  and leaving at least one for training.

  Returns:
    (train, test): sorted int64 positions into `labels`.
  """
  rng = np.random.default_rng([int(seed), 5])
  test = []
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)
    k = int(round(fraction * members.size))
    k = min(max(k, 1), members.size - 1)
    test.append(rng.choice(members, k, replace=False))
  test = np.sort(np.concatenate(test)).astype(np.int64)
  return np.setdiff1d(np.arange(labels.size), test), test


def _square(image: tf.Tensor, size: int, channels: int) -> tf.Tensor:
  """uint8 [h, w, C] -> float32 [size, size, C] in [0, 1]: shorter side
  resized to `size`, central square kept."""
  image = preprocessing.resize_shorter_side(
      tf.image.convert_image_dtype(image, tf.float32), size)
  hw = tf.shape(image)[:2]
  top, left = (hw[0] - size) // 2, (hw[1] - size) // 2
  image = image[top:top + size, left:left + size, :]
  return tf.ensure_shape(image, [size, size, channels])


def _check_settings(train_dir, meta_dir, test_dir, test_fraction,
                    image_size, channels, mean, std) -> None:
  """Raises ValueError naming the binding to fix."""
  if not train_dir:
    raise ValueError("the folder dataset needs its images: bind "
                     "folder.train_dir = '/path/to/train' (one subfolder "
                     "per class).")
  if not meta_dir:
    raise ValueError("the folder dataset needs a clean meta set: bind "
                     "folder.meta_dir = '/path/to/clean' (a few verified "
                     "images per class, same class subfolders).")
  if (test_dir is None) == (test_fraction is None):
    raise ValueError("the folder dataset needs ONE test set: bind "
                     "folder.test_dir = '/path/to/test' (clean, recommended) "
                     "or folder.test_fraction = 0.1 (held out of train_dir), "
                     f"not {'both' if test_dir else 'neither'}.")
  if test_fraction is not None and not 0.0 < float(test_fraction) < 1.0:
    raise ValueError(f"folder.test_fraction must be in (0, 1), got "
                     f"{test_fraction}.")
  if not isinstance(image_size, int) or image_size < 8:
    raise ValueError(f"folder.image_size must be an integer >= 8, got "
                     f"{image_size!r}.")
  if channels not in (1, 3):
    raise ValueError(f"folder.channels must be 1 (grey) or 3 (RGB), got "
                     f"{channels!r}.")
  for name, value in (("mean", mean), ("std", std)):
    if value is not None and len(value) != channels:
      raise ValueError(f"folder.{name} needs {channels} value(s), one per "
                       f"channel, got {value!r}.")
  if std is not None and min(std) <= 0:
    raise ValueError(f"folder.std must be > 0, got {std!r}.")


def _split_arrays(train_dir, meta_dir, test_dir, test_fraction,
                  test_split_seed, num_meta, seed):
  """Lists the folders and assigns files to splits.

  Returns:
    ({split: {path, label, clean_label, index}} numpy arrays, class names).
  """
  paths, labels, class_names = list_images(train_dir, "folder.train_dir")
  k = len(class_names)
  meta_paths, meta_labels, meta_names = list_images(meta_dir,
                                                    "folder.meta_dir")
  check_same_classes(meta_names, class_names, "folder.meta_dir", meta_dir,
                     train_dir)
  check_disjoint(meta_paths, paths, "folder.meta_dir")
  unknown = np.full(labels.shape, -1, np.int32)
  if test_dir is not None:
    test_paths, test_labels, test_names = list_images(test_dir,
                                                      "folder.test_dir")
    check_same_classes(test_names, class_names, "folder.test_dir", test_dir,
                       train_dir)
    check_disjoint(test_paths, paths, "folder.test_dir")
    test = {"path": test_paths, "label": test_labels,
            "clean_label": test_labels,
            "index": np.arange(test_labels.size, dtype=np.int64)}
    train_pos = np.arange(labels.size, dtype=np.int64)
  else:
    train_pos, test_pos = hold_out(labels, float(test_fraction), k,
                                   test_split_seed)
    test = {"path": paths[test_pos], "label": labels[test_pos],
            "clean_label": unknown[test_pos], "index": test_pos}
  meta_pos = np.arange(meta_labels.size, dtype=np.int64)
  if num_meta is not None:
    meta_pos, _ = corruption.split_meta(meta_labels, int(num_meta), k,
                                        corruption.rng_for(seed, 1),
                                        "folder.num_meta")
  arrays = {
      "train": {"path": paths[train_pos], "label": labels[train_pos],
                "clean_label": unknown[train_pos], "index": train_pos},
      "meta": {"path": meta_paths[meta_pos], "label": meta_labels[meta_pos],
               "clean_label": meta_labels[meta_pos], "index": meta_pos},
      "test": test,
  }
  return arrays, class_names


def relative_paths(paths: np.ndarray, train_dir: str) -> np.ndarray:
  """`[n]` training file paths relative to `train_dir` ("class/x.jpg"): how
  the per-sample report and the review file name a file."""
  return np.array([os.path.normpath(os.path.relpath(p, train_dir))
                   for p in paths])


def _apply_review(arrays: dict, path: str, train_dir: str,
                  class_names: list) -> dict:
  """`folder.review_file` applied to `arrays["train"]` (in place).

  Returns:
    the review's summary (`review.Review.summary`).
  """
  review = review_lib.read(path, "folder.review_file", class_names, "file")
  train = arrays["train"]
  keep, labels = review.apply(relative_paths(train["path"], train_dir),
                              train["label"])
  summary = review.summary(keep, train["label"], labels)
  # The new label is the file's label now: clean_label stays -1 (unknown).
  arrays["train"] = {k: v[keep] for k, v in {**train,
                                             "label": labels}.items()}
  if not np.bincount(arrays["train"]["label"], minlength=len(class_names)
                     ).all():
    raise ValueError(f"folder.review_file = {path!r} leaves a class with no "
                     "training image; keep at least one per class.")
  return summary


def _transforms(image_size: int, channels: int, mean: tuple, std: tuple):
  """(train_fn(image, [2] seed), eval_fn(image)) -> float32 [S, S, C].

  `image` is a file's bytes (scalar string, as the sources yield) or its
  decoded uint8 pixels [h, w, C] (what an export's raw-image signature gets).
  """

  def square(image):
    if image.dtype == tf.string:
      image = decode(image, channels)
    return _square(image, image_size, channels)

  def eval_fn(image):
    return preprocessing.normalize(square(image), mean, std)

  def train_fn(image, seed_pair):
    image = preprocessing.pad_crop_flip(square(image), seed_pair,
                                        pad=max(1, image_size // 8))
    return preprocessing.normalize(image, mean, std)

  return train_fn, eval_fn


def describe(image_size: int, channels: int, mean: tuple, std: tuple) -> str:
  """`eval_fn` in words, for exports."""
  colour = "RGB" if channels == 3 else "grey"
  return (f"JPEG/PNG/BMP/GIF file (or uint8 {colour} pixels) decoded to "
          f"{channels} channel(s) -> pixel / 255, shorter side resized to "
          f"{image_size} (bilinear, antialiased), centre "
          f"{image_size}x{image_size} crop, then per channel (x - mean) / std "
          f"with mean {mean} and std {std}")


def _file_names(train: dict, train_dir: str):
  """`SampleNames.files` of the training split: index -> relative path."""
  table = dict(zip(train["index"].tolist(),
                   relative_paths(train["path"], train_dir)))
  return lambda index: np.array([table[int(i)] for i in index], object)


@registry.register("folder")
def folder(train_dir: Optional[str] = None, meta_dir: Optional[str] = None,
           test_dir: Optional[str] = None,
           test_fraction: Optional[float] = None, image_size: int = 224,
           channels: int = 3, augment: bool = False,
           mean: Optional[Sequence[float]] = None,
           std: Optional[Sequence[float]] = None,
           num_meta: Optional[int] = None, seed: int = 0,
           test_split_seed: int = 0, validate: bool = True,
           review_file: Optional[str] = None):
  """Your own image folders as DataSplits (layout in the module docstring).

  Args:
    train_dir: noisy training images, one subfolder per class.
    meta_dir: clean meta images, the same class subfolders.
    test_dir: clean test images, the same class subfolders; or None with
      test_fraction.
    test_fraction: in (0, 1): this fraction of each class of train_dir is
      held out as the test set (noisy labels; see the module docstring).
    image_size: images become [image_size, image_size] (shorter side
      resized, centre crop); 224 for ResNet-50.
    channels: 3 (RGB) or 1 (grey).
    augment: reflect-pad image_size/8, random crop, random flip on train
      and meta (never on test).
    mean, std: per-channel normalisation of [0, 1] pixels; None: ImageNet's
      (for channels=1, the mean of its three channels).
    num_meta: None: every meta_dir image; else a seeded class-balanced subset
      of this size (a multiple of the number of classes).
    seed: experiment seed (meta subset, shuffles, augmentation).
    test_split_seed: the seed of the test_fraction hold-out.
    validate: read and decode every image once before training.
    review_file: None, or an edited review.csv of `python -m
      mwn_tf.analyze` (`mwn_tf.data.review`): its `exclude` files are left
      out of training, its `relabel:<class>` files train with that class.
      Meta and test images are never changed.

  Returns:
    DataSplits; images float32 [image_size, image_size, channels]; train
    clean_label -1 and realised_noise_rate None (unknown).

  Raises:
    FileNotFoundError: a folder does not exist.
    ValueError: a setting, an empty class folder, class folders that
      differ between train_dir and meta_dir/test_dir, or meta/test files
      that are also training files.
    ImageFileError: files that cannot be read or decoded (named).
  """
  _check_settings(train_dir, meta_dir, test_dir, test_fraction, image_size,
                  channels, mean, std)
  arrays, class_names = _split_arrays(train_dir, meta_dir, test_dir,
                                      test_fraction, test_split_seed,
                                      num_meta, seed)
  k = len(class_names)
  reviewed = (None if review_file is None else
              _apply_review(arrays, review_file, train_dir, class_names))
  if validate:
    for split, binding in (("train", "folder.train_dir"),
                           ("meta", "folder.meta_dir"),
                           ("test", "folder.test_dir" if test_dir else
                            "folder.train_dir")):
      check_images(arrays[split]["path"], channels, binding)
  sources = {s: FileSource(a["path"], a["label"], a["clean_label"],
                           a["index"]) for s, a in arrays.items()}
  if mean is None:
    mean = preprocessing.IMAGENET_MEAN if channels == 3 else _GREY_MEAN
  if std is None:
    std = preprocessing.IMAGENET_STD if channels == 3 else _GREY_STD
  mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
  train_fn, eval_fn = _transforms(image_size, channels, mean, std)
  data = splits_lib.DataSplits(
      name="folder", num_classes=k,
      image_shape=(image_size, image_size, channels),
      train_source=sources["train"], meta_source=sources["meta"],
      test_source=sources["test"], train_fn=train_fn, eval_fn=eval_fn,
      augment=bool(augment), seed=int(seed), transition_matrix=None,
      realised_noise_rate=None, expected_noise_rate=None,
      noise_rate_measured_on=0,  # No training image has a clean label.
      class_counts=np.bincount(arrays["train"]["label"], minlength=k),
      meta_class_counts=np.bincount(arrays["meta"]["label"], minlength=k),
      config={"train_dir": os.fspath(train_dir),
              "meta_dir": os.fspath(meta_dir),
              "test_dir": None if test_dir is None else os.fspath(test_dir),
              "test_fraction": test_fraction, "image_size": image_size,
              "channels": channels, "mean": list(mean), "std": list(std),
              "noise_type": "real (unknown)", "noise_rate": None,
              "imbalance_factor": 1.0, "review": reviewed},
      class_names=list(class_names), arrays=arrays,
      sample_names=splits_lib.SampleNames(
          source=f"folder {os.fspath(train_dir)}", split="",
          files=_file_names(arrays["train"], train_dir)),
      raw_images=splits_lib.RawImages(
          shape=(None, None, channels), dtype="uint8", encoded=True,
          description=describe(image_size, channels, mean, std),
          pixel_max=255))
  logging.info("Dataset folder: %s", data.summary(include_matrix=False))
  return data
