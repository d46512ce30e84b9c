"""A small Clothing1M release in the official layout, made of real photos.

The JPEGs are crops of the two photographs scikit-learn ships
(`sklearn/datasets/images/china.jpg` and `flower.jpg`), resized to many sizes
and re-encoded, so the TFDS builder and the training pipeline decode real
camera JPEGs (chroma subsampling, varied aspect ratios), not synthetic noise.
"""

import os

import numpy as np
import sklearn.datasets
import tensorflow as tf

from mwn_tf.data import clothing1m

NUM_CLASSES = len(clothing1m.CLASS_NAMES)


def _photos() -> list:
  """The two scikit-learn photos, uint8 [427, 640, 3] each."""
  return [np.asarray(p) for p in sklearn.datasets.load_sample_images().images]


def _jpeg(photo: np.ndarray, rng: np.random.Generator) -> bytes:
  """A random crop of `photo`, resized to a random size, JPEG-encoded."""
  h, w = photo.shape[:2]
  ch, cw = rng.integers(h // 4, h + 1), rng.integers(w // 4, w + 1)
  top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
  crop = photo[top:top + ch, left:left + cw]
  size = (int(rng.integers(24, 140)), int(rng.integers(24, 140)))
  image = tf.cast(tf.image.resize(crop, size, antialias=True), tf.uint8)
  return tf.io.encode_jpeg(image, quality=int(rng.integers(60, 96))).numpy()


def write_release(root: str, per_split=(42, 14, 28, 28), seed: int = 0):
  """Writes images/ and annotations/ with the official file names.

  Args:
    root: the manual folder (`clothing1m.manual_dir`).
    per_split: images in noisy_train, clean_train, clean_val, clean_test.
    seed: crops, sizes, labels.

  Returns:
    (keys by split, noisy labels by key, clean labels by key). The first
    third of noisy_train also has a clean label; a third of those disagree.
  """
  rng = np.random.default_rng(seed)
  photos = _photos()
  names = ("noisy_train", "clean_train", "clean_val", "clean_test")
  keys = {s: [f"images/{i}/{j % 10:02d}/{j:04d}{s[:2]}.jpg"
              for j in range(n)] for i, (s, n) in enumerate(zip(names,
                                                                per_split))}
  noisy = {k: j % NUM_CLASSES for j, k in enumerate(keys["noisy_train"])}
  clean = {}
  for split in names[1:]:
    clean.update({k: j % NUM_CLASSES for j, k in enumerate(keys[split])})
  overlap = keys["noisy_train"][:per_split[0] // 3]
  for j, k in enumerate(overlap):
    clean[k] = (noisy[k] + 1) % NUM_CLASSES if j % 3 == 0 else noisy[k]
  for split_keys in keys.values():
    for j, k in enumerate(split_keys):
      path = os.path.join(root, k)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "wb") as f:
        f.write(_jpeg(photos[j % 2], rng))
  write_annotations(root, keys, noisy, clean)
  return keys, noisy, clean


def write_annotations(root: str, keys: dict, noisy: dict, clean: dict):
  """annotations/ in the official file names: the label tables, the key
  lists of `keys` (split -> image keys) and the category names."""
  ann = os.path.join(root, "annotations")
  os.makedirs(ann, exist_ok=True)

  def write(name, lines):
    with open(os.path.join(ann, name), "w") as f:
      f.write("\n".join(lines) + "\n")

  write("noisy_label_kv.txt", [f"{k} {v}" for k, v in noisy.items()])
  write("clean_label_kv.txt", [f"{k} {v}" for k, v in clean.items()])
  for split, split_keys in keys.items():
    write(f"{split}_key_list.txt", split_keys)
  write("category_names_eng.txt", clothing1m.CLASS_NAMES)
