"""Fashion-MNIST (Xiao et al. 2017): 70,000 28x28 grey images, 10 classes.

Two sources give the same arrays:
  idx   the original IDX files (`train-images-idx3-ubyte.gz`, ...) from a
        folder, by default where Debian's `dataset-fashion-mnist` package puts
        them (`apt-get install dataset-fashion-mnist`): fully offline.
  tfds  TFDS's `fashion_mnist`, when it is prepared under `data_dir` or can be
        downloaded.
`source='auto'` (the default) takes the IDX folder when its four files are
there, else TFDS. `index` is the position in the split as the source yields
it: the original train (or t10k) file for IDX; TFDS shuffles examples when it
writes them (in a fixed order, the same on every machine), so the two sources
hold the same examples in different orders and a seed picks different images
from each.

No augmentation by default: the table's runs are short (a few epochs on CPU)
and the noise is what they study; `augment=True` gives reflect-pad 2, random
28x28 crop and random horizontal flip (mirroring keeps every Fashion-MNIST
class: shoes, bags and garments have no handedness).
"""

import gzip
import hashlib
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from mwn_tf.data import cifar
from mwn_tf.data import corruption
from mwn_tf.data import in_memory
from mwn_tf.data import preprocessing
from mwn_tf.data import registry
from mwn_tf.data import splits as splits_lib

DEFAULT_IDX_DIR = "/usr/share/datasets/fashion-mnist"
PACKAGE = "dataset-fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SIZES = {"train": 60000, "test": 10000}
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# Pixel mean and std of the 60,000 training images (x / 255); the test
# checks them against the real files.
MEAN, STD = (0.2860,), (0.3530,)
SOURCES = ("auto", "idx", "tfds")
# IDX magic: two zero bytes, the element type (0x08 = uint8), the rank.
_IMAGES_MAGIC, _LABELS_MAGIC = 0x00000803, 0x00000801
_SUBSET_STAGE = 101  # Seeds the num_train subset (corruption uses 1-4).


class IdxError(ValueError):
  """A file is not a valid IDX file (bad magic, truncated, garbled)."""


def read_idx(path: str, rank: int) -> np.ndarray:
  """One IDX file (gzipped or not) of unsigned bytes as a numpy array.

  Args:
    path: the file; a `.gz` name is decompressed.
    rank: 3 for images [n, rows, cols], 1 for labels [n].

  Returns:
    uint8 array of the shape the header gives.

  Raises:
    IdxError: one line naming the file: unreadable gzip, wrong magic number,
      or fewer/more bytes than the header announces.
  """
  magic = _IMAGES_MAGIC if rank == 3 else _LABELS_MAGIC
  try:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError.
    raise IdxError(f"{path}: not a readable IDX file ({e}); reinstall it "
                   f"(apt-get install --reinstall {PACKAGE}).") from e
  header = 4 + 4 * rank
  found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
  if found is not None and found != magic:
    raise IdxError(f"{path}: IDX magic number {found:#010x}, expected "
                   f"{magic:#010x} (uint8, rank {rank}); is it the right "
                   f"file?")
  if len(raw) < header:
    raise IdxError(f"{path}: truncated IDX file ({len(raw)} bytes, the "
                   f"header alone is {header}); reinstall {PACKAGE}.")
  shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big")
                for i in range(rank))
  expected = header + int(np.prod(shape))
  if len(raw) != expected:
    raise IdxError(f"{path}: {len(raw)} bytes but its header {shape} needs "
                   f"{expected}; the file is truncated or garbled, "
                   f"reinstall {PACKAGE}.")
  return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def has_idx_files(idx_dir: Optional[str]) -> bool:
  """Whether all four IDX files are in `idx_dir`."""
  return bool(idx_dir) and all(
      os.path.isfile(os.path.join(idx_dir, f))
      for pair in FILES.values() for f in pair)


def load_idx(idx_dir: str) -> dict:
  """{'train': (images, labels), 'test': (...)}: uint8 [n, 28, 28, 1], [n].

  Raises:
    IdxError: a malformed file, or images and labels that do not match.
  """
  out = {}
  for split, (image_file, label_file) in FILES.items():
    images = read_idx(os.path.join(idx_dir, image_file), rank=3)
    labels = read_idx(os.path.join(idx_dir, label_file), rank=1)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
      raise IdxError(f"{idx_dir}: {image_file} holds {images.shape} images "
                     f"but {label_file} {labels.shape[0]} labels; expected "
                     f"[n, 28, 28] and n labels.")
    if labels.size and labels.max() >= len(CLASS_NAMES):
      raise IdxError(f"{os.path.join(idx_dir, label_file)}: label "
                     f"{labels.max()} is not in [0, 10).")
    out[split] = (images[..., None], labels.astype(np.int64))
  return out


def canonical_order(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Positions that sort examples by (sha1 of image bytes and label).

  The same examples in any order sort to the same arrays, which is how the
  IDX and TFDS sources are compared.
  """
  keys = [hashlib.sha1(img.tobytes() + bytes([int(lab)])).hexdigest()
          for img, lab in zip(images, labels)]
  return np.argsort(np.asarray(keys), kind="stable")


def load_tfds(data_dir: Optional[str], download: bool) -> dict:
  """TFDS `fashion_mnist` in `load_idx`'s layout, in TFDS's order.

  Args:
    data_dir: TFDS folder (None: ~/tensorflow_datasets).
    download: let TFDS download it if it is not prepared.

  Raises:
    FileNotFoundError: not prepared and not downloadable.
  """
  builder = cifar.prepare_builder("fashion_mnist", data_dir, download)
  out = {}
  for split in FILES:
    arrays = cifar.load_arrays(builder, split)
    out[split] = (arrays["image"], arrays["label"].astype(np.int64))
  return out


def _missing_message(idx_dir, data_dir, download) -> str:
  where = data_dir or "~/tensorflow_datasets"
  tfds_state = ("is neither prepared under {} nor downloadable" if download
                else "is not prepared under {} (download=False)")
  return (f"Fashion-MNIST not found: no IDX files in {idx_dir}, and TFDS "
          f"fashion_mnist {tfds_state.format(where)}. Fix: `apt-get install "
          f"{PACKAGE}` (puts them in {DEFAULT_IDX_DIR}), or bind "
          f"fashion_mnist.idx_dir = '/folder/with/the/four/idx.gz/files'.")


def load(source: str = "auto", idx_dir: Optional[str] = DEFAULT_IDX_DIR,
         data_dir: Optional[str] = None, download: bool = True) -> dict:
  """The raw arrays from the chosen source (see the module docstring).

  Raises:
    ValueError: unknown source.
    FileNotFoundError: no source has the data; one line naming the package
      and the `fashion_mnist.idx_dir` binding.
    IdxError: a malformed IDX file.
  """
  if source not in SOURCES:
    raise ValueError(f"fashion_mnist.source must be one of "
                     f"{', '.join(SOURCES)}, got {source!r}.")
  if source == "idx" or (source == "auto" and has_idx_files(idx_dir)):
    if not has_idx_files(idx_dir):
      raise FileNotFoundError(
          f"fashion_mnist.source='idx' but {idx_dir} lacks some of "
          f"{', '.join(f for p in FILES.values() for f in p)}. Install them "
          f"with `apt-get install {PACKAGE}` or bind fashion_mnist.idx_dir "
          f"to the folder that holds them.")
    return load_idx(idx_dir)
  try:
    return load_tfds(data_dir, download)
  except FileNotFoundError as e:
    raise FileNotFoundError(_missing_message(idx_dir, data_dir,
                                             download)) from e


def stratified_subset(labels: np.ndarray, size: int, num_classes: int,
                      seed: int) -> np.ndarray:
  """Sorted positions of `size` examples, size / K of each class, seeded."""
  rng = corruption.rng_for(seed, _SUBSET_STAGE)
  picks = [rng.choice(np.flatnonzero(labels == c), size // num_classes,
                      replace=False) for c in range(num_classes)]
  return np.sort(np.concatenate(picks)).astype(np.int64)


def _eval_fn(image):
  return preprocessing.normalize(preprocessing.to_unit(image), MEAN, STD)


def _train_fn(image, seed):
  image = preprocessing.pad_crop_flip(preprocessing.to_unit(image), seed,
                                      pad=2)
  return preprocessing.normalize(image, MEAN, STD)


def _check_num_train(num_train, num_meta, available):
  if num_train is None:
    return
  if num_train <= 0 or num_train % 10:
    raise ValueError(f"fashion_mnist.num_train must be a positive multiple "
                     f"of the 10 classes (the subset is class-balanced) or "
                     f"None, got {num_train}.")
  if num_train + num_meta > available:
    raise ValueError(f"fashion_mnist.num_train={num_train} plus "
                     f"num_meta={num_meta} exceeds the {available} training "
                     f"images; lower num_train to at most "
                     f"{(available - num_meta) // 10 * 10}.")


@registry.register("fashion_mnist")
def fashion_mnist(source: str = "auto",
                  idx_dir: Optional[str] = DEFAULT_IDX_DIR,
                  data_dir: Optional[str] = None, download: bool = True,
                  num_meta: Optional[int] = None,
                  num_train: Optional[int] = None, noise_type: str = "none",
                  noise_rate: float = 0.0, imbalance_factor: float = 1.0,
                  seed: int = 0, augment: bool = False):
  """Fashion-MNIST with a clean balanced meta set, label noise and long tail.

  Args:
    source: 'auto' (IDX folder if complete, else TFDS), 'idx' or 'tfds'.
    idx_dir: folder with the four IDX .gz files (Debian's
      dataset-fashion-mnist puts them in /usr/share/datasets/fashion-mnist).
    data_dir: TFDS data dir (None: ~/tensorflow_datasets).
    download: let TFDS download if its data is missing (TFDS sources only).
    num_meta: meta-set size, a multiple of 10; None: 1000 (100/class) for
      noise, 100 (10/class) when imbalance_factor > 1, as for CIFAR-10.
    num_train: None (all 60,000 - num_meta) or a multiple of 10: a seeded,
      class-balanced subset of num_train + num_meta training images is kept
      and the meta set comes out of it, so train holds num_train images
      before the long tail. Sizes runs to a CPU budget.
    noise_type: none, uniform, flip or flip2.
    noise_rate: in [0, 1].
    imbalance_factor: >= 1; the long tail is applied first, then noise.
    seed: experiment seed (subset, meta set, long tail, labels, shuffles).
    augment: reflect-pad 2 / random 28x28 crop / random horizontal flip on
      train and meta (never on test). Off by default (module docstring).

  Returns:
    DataSplits; images float32 [28, 28, 1], (x / 255 - 0.2860) / 0.3530.
  """
  corruption.validate(noise_type, noise_rate, imbalance_factor,
                      dataset="fashion_mnist")
  if num_meta is None:
    num_meta = in_memory.default_num_meta(10, imbalance_factor, 1000)
  _check_num_train(num_train, num_meta, SIZES["train"])
  arrays = load(source, idx_dir, data_dir, download)
  train_images, train_labels = arrays["train"]
  test_images, test_labels = arrays["test"]
  positions = np.arange(train_labels.shape[0], dtype=np.int64)
  if num_train is not None:
    positions = stratified_subset(train_labels, num_train + num_meta, 10,
                                  seed)
  return in_memory.from_arrays(
      "fashion_mnist", train_images=train_images[positions],
      train_labels=train_labels[positions], test_images=test_images,
      test_labels=test_labels, num_classes=10, num_meta=num_meta,
      noise_type=noise_type, noise_rate=noise_rate,
      imbalance_factor=imbalance_factor, seed=seed, augment=augment,
      train_fn=_train_fn, eval_fn=_eval_fn, image_shape=(28, 28, 1),
      preprocessing=(f"uint8 pixels 0-255 (the IDX files) -> (pixel / 255 - "
                     f"{MEAN[0]:g}) / {STD[0]:g}"),
      train_source_index=positions, class_names=list(CLASS_NAMES),
      config={"source": source, "idx_dir": idx_dir, "data_dir": data_dir,
              "num_train": num_train},
      sample_names=splits_lib.SampleNames(
          f"idx {idx_dir}" if source == "idx" or (
              source == "auto" and has_idx_files(idx_dir))
          else "tfds fashion_mnist", "train"))
