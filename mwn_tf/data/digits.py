"""scikit-learn digits (1797 8x8 grey images, 10 classes): the offline set.

Ships with scikit-learn, so the quickstart and the tests need no download.
The test split is FIXED (stratified, `test_size` images, split seed 0) and
independent of the experiment seed; the meta set (10 per class by default)
comes out of the rest, then the usual long tail / noise machinery applies.
`index` is the position in `sklearn.datasets.load_digits()` arrays.
"""

import numpy as np
from sklearn import datasets as sk_datasets
from sklearn import model_selection
import tensorflow as tf

from mwn_tf.data import corruption
from mwn_tf.data import in_memory
from mwn_tf.data import registry
from mwn_tf.data import splits as splits_lib

_SPLIT_SEED = 0  # Fixed: the test split never depends on the experiment seed.


def _scale(image, seed=None):
  """uint8 pixels 0-16 -> float32 pixel / 16 (exact: a power of two)."""
  del seed  # Digits get no augmentation.
  return tf.cast(image, tf.float32) / 16.0


@registry.register("digits")
def digits(num_meta: int = 100, noise_type: str = "none",
           noise_rate: float = 0.0, imbalance_factor: float = 1.0,
           seed: int = 0, test_size: int = 500):
  """Digits with a clean balanced meta set, optional noise and long tail.

  Args:
    num_meta: meta-set size, a multiple of 10 (default 10 per class).
    noise_type: none, uniform, flip or flip2 (see `corruption`).
    noise_rate: in [0, 1].
    imbalance_factor: >= 1; long tail applied before noise.
    seed: experiment seed (meta set, long tail, labels, shuffles).
    test_size: images in the fixed stratified test split.

  Returns:
    DataSplits; images float32 [8, 8, 1] = pixel / 16, no augmentation.
  """
  corruption.validate(noise_type, noise_rate, imbalance_factor,
                      dataset="digits")
  bunch = sk_datasets.load_digits()
  # Raw pixels, as a deployed model would receive them; eval_fn scales.
  images = bunch.images.astype(np.uint8)[..., None]
  labels = bunch.target.astype(np.int64)
  train_pos, test_pos = model_selection.train_test_split(
      np.arange(labels.shape[0]), test_size=test_size, stratify=labels,
      random_state=_SPLIT_SEED)
  train_pos, test_pos = np.sort(train_pos), np.sort(test_pos)
  return in_memory.from_arrays(
      "digits", train_images=images[train_pos], train_labels=labels[train_pos],
      test_images=images[test_pos], test_labels=labels[test_pos],
      num_classes=10, num_meta=num_meta, noise_type=noise_type,
      noise_rate=noise_rate, imbalance_factor=imbalance_factor, seed=seed,
      augment=False, train_fn=_scale, eval_fn=_scale,
      image_shape=(8, 8, 1), preprocessing=(
          "uint8 pixels 0-16 (scikit-learn's load_digits) -> pixel / 16"),
      pixel_max=16, train_source_index=train_pos,
      test_source_index=test_pos, class_names=[str(d) for d in range(10)],
      config={"test_size": int(test_size)},
      # `index` counts load_digits()'s 1797 samples (train and test alike).
      sample_names=splits_lib.SampleNames("sklearn load_digits", ""))
