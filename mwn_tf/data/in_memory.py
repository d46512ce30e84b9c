"""Builds `DataSplits` from in-memory arrays (digits, CIFAR, .npz)."""

from typing import Callable, Optional, Sequence

from absl import logging
import numpy as np

from mwn_tf.data import corruption
from mwn_tf.data import review as review_lib
from mwn_tf.data import splits as splits_lib


def from_arrays(name: str, *, train_images: np.ndarray,
                train_labels: np.ndarray, test_images: np.ndarray,
                test_labels: np.ndarray, num_classes: int, num_meta: int,
                noise_type: str, noise_rate: float, imbalance_factor: float,
                seed: int, augment: bool, train_fn: Callable,
                eval_fn: Callable, image_shape: Sequence[int],
                preprocessing: str,
                train_source_index: Optional[np.ndarray] = None,
                test_source_index: Optional[np.ndarray] = None,
                superclass: Optional[np.ndarray] = None,
                class_names: Optional[list] = None,
                config: Optional[dict] = None,
                sample_names: Optional[splits_lib.SampleNames] = None,
                review: Optional[review_lib.Review] = None,
                pixel_max: Optional[float] = None
                ) -> splits_lib.DataSplits:
  """Meta split, long tail and noise (see `corruption.prepare`), then sources.

  Args:
    name: dataset name.
    train_images: [n, H, W, C] source training images (uint8 or float32).
    train_labels: [n] clean labels.
    test_images: [m, H, W, C].
    test_labels: [m].
    num_classes: K.
    num_meta, noise_type, noise_rate, imbalance_factor, seed: see
      `corruption.prepare`.
    augment: use `train_fn` on train and meta.
    train_fn: (image, [2] seed) -> float32 image.
    eval_fn: image -> float32 image.
    image_shape: (H, W, C) after preprocessing.
    preprocessing: what `eval_fn` does to a raw image (as `train_images`
      holds it), in words; exports record it.
    train_source_index: [n] the `index` reported for each training example
      (defaults to its position); lets a source map back to its own files.
    test_source_index: [m] likewise for the test split.
    superclass: [K] superclass of each class (hierarchical noise).
    class_names: optional K names.
    config: loader settings echoed in `summary()`.
    sample_names: what `index` names (`splits.SampleNames`): the source and its
      split; None: "<name>", "train".
    review: an edited review file (`mwn_tf.data.review`, keyed by `index`),
      applied to the training split after the meta split, long tail and
      noise: its `exclude` samples are left out, its `relabel` samples get
      the new class as both observed and clean label (the person's
      correction replaces the source's label and any injected noise). The
      meta and test sets are unchanged; `summary()["review"]` counts it.
    pixel_max: the raw value of a white pixel (`splits.RawImages`); None:
      255 for uint8 images, unknown for others.

  Returns:
    DataSplits with `arrays` holding the numpy labels/indices per split.
  """
  train_labels = np.asarray(train_labels, np.int64)
  test_labels = np.asarray(test_labels, np.int32)
  n, m = train_labels.shape[0], test_labels.shape[0]
  src = (np.arange(n, dtype=np.int64) if train_source_index is None
         else np.asarray(train_source_index, np.int64))
  test_src = (np.arange(m, dtype=np.int64) if test_source_index is None
              else np.asarray(test_source_index, np.int64))
  prep = corruption.prepare(train_labels, num_classes, num_meta=num_meta,
                            noise_type=noise_type, noise_rate=noise_rate,
                            imbalance_factor=imbalance_factor, seed=seed,
                            superclass=superclass, binding=f"{name}.num_meta")
  train_index, train_labels, train_clean = (
      prep.train_index, prep.train_labels, prep.train_clean)
  realised, reviewed = prep.realised_noise_rate, None
  if review is not None:
    keep, relabelled = review.apply(src[train_index].tolist(), train_labels)
    reviewed = review.summary(keep, train_labels, relabelled)
    changed = relabelled != train_labels
    train_clean = np.where(changed, relabelled, train_clean)[keep]
    train_index, train_labels = train_index[keep], relabelled[keep]
    realised = float(np.mean(train_labels != train_clean))
  arrays = {
      "train": {"label": train_labels, "clean_label": train_clean,
                "index": src[train_index]},
      "meta": {"label": prep.meta_labels, "clean_label": prep.meta_labels,
               "index": src[prep.meta_index]},
      "test": {"label": test_labels, "clean_label": test_labels,
               "index": test_src},
  }
  sources = {
      "train": splits_lib.ArraySource(train_images[train_index],
                                      **arrays["train"]),
      "meta": splits_lib.ArraySource(train_images[prep.meta_index],
                                     **arrays["meta"]),
      "test": splits_lib.ArraySource(test_images, **arrays["test"]),
  }
  config = dict(config or {})
  config.update(noise_type=noise_type, noise_rate=float(noise_rate),
                imbalance_factor=float(imbalance_factor))
  if review is not None:
    config["review"] = reviewed
  data = splits_lib.DataSplits(
      name=name, num_classes=int(num_classes), image_shape=tuple(image_shape),
      train_source=sources["train"], meta_source=sources["meta"],
      test_source=sources["test"], train_fn=train_fn, eval_fn=eval_fn,
      augment=bool(augment), seed=int(seed), transition_matrix=prep.matrix,
      realised_noise_rate=realised,
      expected_noise_rate=prep.expected_noise_rate,
      class_counts=np.bincount(train_clean, minlength=num_classes),
      meta_class_counts=np.bincount(prep.meta_labels, minlength=num_classes),
      config=config, class_names=class_names, arrays=arrays,
      sample_names=sample_names or splits_lib.SampleNames(name, "train"),
      raw_images=splits_lib.RawImages(
          shape=tuple(int(d) for d in train_images.shape[1:]),
          dtype=np.dtype(train_images.dtype).name, encoded=False,
          description=preprocessing, pixel_max=_pixel_max(pixel_max,
                                                          train_images)))
  logging.info("Dataset %s: %s", name, data.summary(include_matrix=False))
  return data


def _pixel_max(pixel_max: Optional[float],
               images: np.ndarray) -> Optional[float]:
  if pixel_max is not None:
    return float(pixel_max)
  return 255.0 if images.dtype == np.uint8 else None


def default_num_meta(num_classes: int, imbalance_factor: float,
                     noise_default: int) -> int:
  """The paper's meta-set size: 10 per class for long tail, else the noise
  experiments' size (1000 for CIFAR)."""
  return 10 * num_classes if imbalance_factor > 1 else noise_default
