"""Fake CIFAR-10N / CIFAR-100N for tfds.testing.mock_data, with human labels
that differ from the clean ones on a known set of images, and the manual
folder the loaders check for."""

import os

import numpy as np
import tensorflow as tf

from mwn_tf.data import cifar_n

N_TRAIN, N_TEST = 2000, 200
# Human label sets of the fake data: name -> every k-th image gets a wrong
# label ((clean + 1 + i % 3) % K), so its noise rate is known exactly.
EVERY = {"worse_label": 2, "aggre_label": 10, "random_label1": 5,
         "random_label2": 6, "random_label3": 7, "noise_label": 3}


def _wrong(clean, i, k):
  return (clean + 1 + i % 3) % k


def human(name, clean, k):
  i = np.arange(clean.size)
  return np.where(i % EVERY[name] == 0, _wrong(clean, i, k), clean)


def fake_cifar_n(num_classes):
  """as_dataset_fn for mock_data: N_TRAIN train images, N_TEST test images,
  clean labels i % K, human labels as in EVERY (-1 on test, as TFDS)."""

  def as_dataset(self, split, **unused_kwargs):
    del self, unused_kwargs
    n = N_TRAIN if split == "train" else N_TEST
    clean = np.arange(n, dtype=np.int64) * 7 % num_classes
    rng = np.random.default_rng(0 if split == "train" else 1)
    ex = {"image": rng.integers(0, 256, (n, 32, 32, 3), np.uint8),
          "label": clean, "id": np.array([f"{split}_{i:05d}"
                                          for i in range(n)])}
    names = (["noise_label"] if num_classes == 100 else
             ["worse_label", "aggre_label", "random_label1", "random_label2",
              "random_label3"])
    for name in names:
      ex[name] = (human(name, clean, num_classes) if split == "train"
                  else np.full(n, -1, np.int64))
    if num_classes == 100:
      ex["coarse_label"] = clean // 5
    return tf.data.Dataset.from_tensor_slices(ex)

  return as_dataset


def write_manual_files(folder):
  """Fills `folder` with the files both builders read from their manual
  folder (empty: the mocked builder never opens them; the loader checks that
  they exist). Returns the folder as a str."""
  os.makedirs(folder, exist_ok=True)
  for names in cifar_n.MANUAL_FILES.values():
    for f in names:
      with open(os.path.join(folder, f), "w"):
        pass
  return str(folder)
