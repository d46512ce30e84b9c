"""Bring your own data: one .npz file through the same meta/noise/long-tail
machinery as CIFAR.

Required arrays:
  x_train  [n, H, W, C] or [n, H, W]  uint8 (scaled by 1/255) or float
  y_train  [n] int clean labels in [0, K)
  x_test   [m, H, W, C] or [m, H, W]
  y_test   [m] int
Optional arrays:
  class_names  [K] str        (K = len(class_names); else max label + 1)
  superclass   [K] int        superclass of each class (hierarchical noise)

Write one with
  np.savez("my.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
`index` is the position in x_train / x_test. `npz.review_file` takes back
the edited review.csv of `python -m mwn_tf.analyze` (`mwn_tf.data.review`).
"""

import os
from typing import Optional
import zipfile
import zlib

import numpy as np
import tensorflow as tf

from mwn_tf.data import corruption
from mwn_tf.data import in_memory
from mwn_tf.data import preprocessing
from mwn_tf.data import registry
from mwn_tf.data import review as review_lib
from mwn_tf.data import splits as splits_lib

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _read(path: str) -> dict:
  """The arrays of `path`, checked against the documented layout."""
  if not path:
    raise ValueError("npz needs a file: bind npz.path = '/path/to/data.npz'.")
  if not os.path.exists(path):
    raise FileNotFoundError(f"npz file {path} does not exist.")
  arrays = _arrays(path)
  for key in REQUIRED_KEYS:
    if key not in arrays:
      raise ValueError(f"{path} has no array {key!r}; an mwn_tf .npz needs "
                       f"{', '.join(REQUIRED_KEYS)} (optional class_names, "
                       "superclass).")
  for split in ("train", "test"):
    x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
    if x.ndim == 3:
      arrays[f"x_{split}"] = x = x[..., None]
    if x.ndim != 4 or y.ndim != 1 or x.shape[0] != y.shape[0]:
      raise ValueError(f"{path}: x_{split} must be [n, H, W(, C)] and "
                       f"y_{split} [n] with the same n; got {x.shape} and "
                       f"{y.shape}.")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
      raise ValueError(f"{path}: y_{split} must hold integer labels >= 0.")
  if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
    raise ValueError(f"{path}: x_train and x_test image shapes differ "
                     f"({arrays['x_train'].shape[1:]} vs "
                     f"{arrays['x_test'].shape[1:]}).")
  return arrays


def _arrays(path: str) -> dict:
  """Every array of the .npz archive `path`; a file that is not one (random
  bytes, a truncated download, a single .npy, pickled objects) is a
  ValueError naming `npz.path`, never numpy's advice to unpickle it."""
  not_npz = (f"npz.path = {os.fspath(path)!r} is not a readable .npz "
             f"archive")
  try:
    loaded = np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f"{not_npz} ({type(e).__name__}); write one with "
                     f"np.savez(path, x_train=..., y_train=..., x_test=..., "
                     f"y_test=...).") from e
  if not isinstance(loaded, np.lib.npyio.NpzFile):  # One bare .npy array.
    raise ValueError(f"{not_npz} (it holds one .npy array); write one with "
                     f"np.savez(path, x_train=..., y_train=..., x_test=..., "
                     f"y_test=...).")
  with loaded as f:
    try:
      return {k: f[k] for k in f.files}
    except ValueError as e:  # An array of Python objects (pickled).
      raise ValueError(f"{not_npz} of plain arrays: an array holds Python "
                       f"objects; store numbers and strings (e.g. "
                       f"np.array(names, dtype=str)).") from e
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
      raise ValueError(f"{not_npz} (a damaged member: "
                       f"{type(e).__name__}); write it again.") from e


def _rounded(values):
  return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


@registry.register("npz")
def npz(path: Optional[str] = None, num_meta: Optional[int] = None,
        noise_type: str = "none", noise_rate: float = 0.0,
        imbalance_factor: float = 1.0, seed: int = 0, augment: bool = False,
        standardize: bool = True, review_file: Optional[str] = None):
  """A user .npz (layout in the module docstring) as DataSplits.

  Args:
    path: the .npz file.
    num_meta: meta-set size, multiple of K; None: 10 per class.
    noise_type: none, uniform, flip, flip2 or hierarchical (needs the
      'superclass' array).
    noise_rate: in [0, 1].
    imbalance_factor: >= 1; the long tail is applied first, then noise.
    seed: experiment seed.
    augment: reflect-pad 4 / random crop / random horizontal flip on train
      and meta (CIFAR-style; leave off for data where flips change meaning).
    standardize: per-channel (x - mean) / std with the statistics of x_train.
    review_file: None, or an edited review.csv of `python -m
      mwn_tf.analyze` (`mwn_tf.data.review`; rows by `index`, the position
      in x_train): `exclude` leaves a sample out of training, `relabel:<class
      name>` trains it with that class; meta and test sets are unchanged.

  Returns:
    DataSplits; images float32 [H, W, C].
  """
  arrays = _read(path)
  superclass = arrays.get("superclass")
  corruption.validate(noise_type, noise_rate, imbalance_factor,
                      has_superclasses=superclass is not None,
                      dataset=os.path.basename(path))
  y_train, y_test = arrays["y_train"], arrays["y_test"]
  if "class_names" in arrays:
    class_names = [str(c) for c in arrays["class_names"]]
    num_classes = len(class_names)
  else:
    class_names = None
    num_classes = int(max(y_train.max(), y_test.max())) + 1
  if max(y_train.max(), y_test.max()) >= num_classes:
    raise ValueError(f"{path}: labels must be < len(class_names) = "
                     f"{num_classes}.")
  x_train = arrays["x_train"]
  scale = 255.0 if x_train.dtype == np.uint8 else 1.0
  channels = x_train.shape[-1]
  mean, std = (0.0,) * channels, (1.0,) * channels
  if standardize:
    flat = x_train.reshape(-1, channels).astype(np.float64) / scale
    mean = tuple(float(v) for v in flat.mean(axis=0))
    std = tuple(float(max(v, 1e-8)) for v in flat.std(axis=0))

  def eval_fn(image):
    return preprocessing.normalize(tf.cast(image, tf.float32) / scale, mean,
                                   std)

  def train_fn(image, seed_pair):
    image = tf.cast(image, tf.float32) / scale
    return preprocessing.normalize(
        preprocessing.pad_crop_flip(image, seed_pair), mean, std)

  if num_meta is None:
    num_meta = 10 * num_classes
  review = None
  if review_file is not None:
    review = review_lib.read(review_file, "npz.review_file",
                             class_names or [str(c) for c in
                                             range(num_classes)], "index")
  return in_memory.from_arrays(
      "npz", train_images=x_train, train_labels=y_train,
      test_images=arrays["x_test"], test_labels=y_test,
      num_classes=num_classes, num_meta=num_meta, noise_type=noise_type,
      noise_rate=noise_rate, imbalance_factor=imbalance_factor, seed=seed,
      augment=augment, train_fn=train_fn, eval_fn=eval_fn,
      image_shape=x_train.shape[1:], superclass=superclass,
      preprocessing=(f"pixel / {scale:g}, then per channel (x - mean) / std "
                     f"with mean {_rounded(mean)} and std {_rounded(std)} "
                     f"(x_train's)" if standardize else
                     f"pixel / {scale:g}"),
      class_names=class_names, review=review, pixel_max=scale,
      sample_names=splits_lib.SampleNames(f"npz {os.fspath(path)}",
                                          "x_train"),
      config={"path": os.fspath(path), "standardize": bool(standardize),
              "mean": list(mean), "std": list(std)})
