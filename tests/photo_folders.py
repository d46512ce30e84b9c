"""Class-per-subfolder image folders made of real photos: crops of the two
photographs scikit-learn ships (`sklearn/datasets/images/china.jpg` and
`flower.jpg`), for the `folder` dataset's tests."""

import os
import pathlib
import shutil

import numpy as np
from PIL import Image
from sklearn import datasets as sk_datasets


def _crops(name, count, rng):
  photo = sk_datasets.load_sample_image(name)  # [427, 640, 3] uint8
  for _ in range(count):
    h, w = (int(v) for v in rng.integers(24, 300, 2))
    y = int(rng.integers(0, photo.shape[0] - h))
    x = int(rng.integers(0, photo.shape[1] - w))
    yield photo[y:y + h, x:x + w]


# Images per class in each split; train/ also holds each original photo.
PER_CLASS = {"train": 12, "meta": 3, "test": 4}
NUM_TRAIN = 2 * (PER_CLASS["train"] + 1)  # 26 training files


def write(root):
  """train/, meta/ and test/ folders under `root`, each with china/ and
  flower/ class folders of JPEG (and some PNG) crops of the two photos,
  written by PIL; train/ also holds the original JPEG files. Returns
  {train_dir, meta_dir, test_dir} as str."""
  root = pathlib.Path(root)
  rng = np.random.default_rng(1)
  images = os.path.join(os.path.dirname(sk_datasets.__file__), "images")
  for split, n in PER_CLASS.items():
    for name in ("china", "flower"):
      folder = root / split / name
      folder.mkdir(parents=True)
      for i, crop in enumerate(_crops(f"{name}.jpg", n, rng)):
        ext = "png" if i % 4 == 3 else "jpg"
        Image.fromarray(crop).save(folder / f"{name}_{i}.{ext}", quality=85)
      if split == "train":
        shutil.copy(os.path.join(images, f"{name}.jpg"), folder)
  return {f"{s}_dir": str(root / s) for s in ("train", "meta", "test")}
