"""CIFAR-10N / CIFAR-100N: CIFAR with real human label noise (Wei et al.,
"Learning with Noisy Labels Revisited: A Study Using Real-World Human
Annotations", ICLR 2022), through the TFDS builders `cifar10_n` and
`cifar100_n` that tensorflow-datasets ships.

Every CIFAR training image keeps its original (clean) label and gains human
labels; `label_set` picks the one to train on:

  cifar10_n   aggre_label    majority vote of 3 annotators   (~9% noisy)
              random_label1  annotator 1 (also 2, 3)          (~17-18% noisy)
              worse_label    a wrong label when any was wrong (~40% noisy)
              clean_label    the original CIFAR-10 label (noise-free control)
  cifar100_n  noisy_label    one annotator (TFDS feature `noise_label`,
                             ~40% noisy)
              clean_label    the original CIFAR-100 label

(The rates are the paper's, on all 50k images; the realised rate of a run is
measured on its own training split.) The clean label is kept as
`clean_label`, so `is_noisy`, the weight of clean vs corrupted samples and
`mwn_tf.analyze`'s detection report all work. As in the paper's CIFAR
experiments, a clean class-balanced meta set (1000 images: 100 per class for
CIFAR-10N, 10 per class for CIFAR-100N) is taken out of the training split
with its CIFAR labels; the test split is CIFAR's, clean.

The human labels are a manual download: TFDS reads three files from its
manual folder (<data_dir>/downloads/manual/ unless `manual_dir` is bound),
listed in `MANUAL_FILES`; the CIFAR images themselves are downloaded by TFDS.
A missing file stops the loader before any download with one line naming the
folder and the file. `index` is the position in the TFDS `train` (or `test`)
split, which is the original CIFAR order.
"""

import os
from typing import Optional

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from mwn_tf.data import cifar
from mwn_tf.data import corruption
from mwn_tf.data import preprocessing
from mwn_tf.data import registry
from mwn_tf.data import splits as splits_lib

# label_set binding -> TFDS feature, per dataset. 'clean_label' is CIFAR's own.
LABEL_SETS = {
    "cifar10_n": {"aggre_label": "aggre_label",
                  "random_label1": "random_label1",
                  "random_label2": "random_label2",
                  "random_label3": "random_label3",
                  "worse_label": "worse_label",
                  "clean_label": "label"},
    "cifar100_n": {"noisy_label": "noise_label", "clean_label": "label"},
}
# The files the TFDS builders read from their manual folder.
MANUAL_FILES = {
    "cifar10_n": ("CIFAR-10_human_annotations.csv", "side_info_cifar10N.csv",
                  "image_order_c10.npy"),
    "cifar100_n": ("CIFAR-100_human_annotations.csv",
                   "side_info_cifar100N.csv", "image_order_c100.npy"),
}
_SOURCE = "https://github.com/UCSC-REAL/cifar-10-100n"


def manual_folder(data_dir: Optional[str], manual_dir: Optional[str]) -> str:
  """The folder TFDS reads the manual files from."""
  if manual_dir:
    return os.fspath(manual_dir)
  return os.path.join(data_dir or tfds.core.constants.DATA_DIR, "downloads",
                      "manual")


def check_manual_files(name: str, folder: str) -> None:
  """Raises FileNotFoundError (one line) if a manual file is missing.

  Args:
    name: cifar10_n or cifar100_n.
    folder: the TFDS manual folder.
  """
  missing = [f for f in MANUAL_FILES[name]
             if not os.path.isfile(os.path.join(folder, f))]
  if not missing:
    return
  raise FileNotFoundError(
      f"{name}: the TFDS manual folder {folder} lacks {', '.join(missing)}. "
      f"Get the label files from {_SOURCE} (the .npy of human labels is "
      f"converted to {MANUAL_FILES[name][0]} as "
      f"tfds.builder('{name}').MANUAL_DOWNLOAD_INSTRUCTIONS shows) and put "
      f"them there, or bind {name}.manual_dir = '/folder/with/them' (or "
      f"{name}.data_dir, whose downloads/manual/ is the default folder).")


def _prepare(name: str, data_dir: Optional[str], manual_dir: Optional[str],
             download: bool) -> tfds.core.DatasetBuilder:
  """A prepared builder; checks the manual files first, so a missing one
  fails at once instead of after TFDS has tried to download CIFAR."""
  builder = tfds.builder(name, data_dir=data_dir)
  if builder.is_prepared():
    return builder
  folder = manual_folder(data_dir, manual_dir)
  check_manual_files(name, folder)
  return cifar.prepare_builder(
      name, data_dir, download,
      tfds.download.DownloadConfig(manual_dir=folder))


def _splits(name: str, num_classes: int, *, label_set: str, data_dir,
            manual_dir, num_meta: int, seed: int, augment: bool,
            download: bool) -> splits_lib.DataSplits:
  """Meta set out of train (clean labels), human labels on the rest."""
  choices = LABEL_SETS[name]
  if label_set not in choices:
    raise ValueError(f"{name}.label_set = {label_set!r} is not one of "
                     f"{', '.join(repr(c) for c in choices)}.")
  builder = _prepare(name, data_dir, manual_dir, download)
  train = cifar.load_arrays(builder, "train")
  test = cifar.load_arrays(builder, "test")
  clean = train["label"].astype(np.int64)
  observed = train[choices[label_set]].astype(np.int64)
  bad = (observed < 0) | (observed >= num_classes)
  if bad.any():
    raise ValueError(f"{name}: {int(bad.sum())} training examples have no "
                     f"{label_set} in [0, {num_classes}); rebuild the TFDS "
                     f"dataset from the official label files.")
  meta, rest = corruption.split_meta(clean, num_meta, num_classes,
                                     corruption.rng_for(seed, 1),
                                     f"{name}.num_meta")
  noisy = observed[rest] != clean[rest]
  rate = float(noisy.mean()) if rest.size else 0.0
  full_rate = float(np.mean(observed != clean))
  logging.info("%s %s: %.4f of the %d training labels differ from the clean "
               "ones (%.4f on all %d).", name, label_set, rate, rest.size,
               full_rate, clean.size)
  arrays = {
      "train": {"label": observed[rest].astype(np.int32),
                "clean_label": clean[rest].astype(np.int32), "index": rest},
      "meta": {"label": clean[meta].astype(np.int32),
               "clean_label": clean[meta].astype(np.int32), "index": meta},
      "test": {"label": test["label"].astype(np.int32),
               "clean_label": test["label"].astype(np.int32),
               "index": np.arange(test["label"].shape[0], dtype=np.int64)},
  }
  images = {"train": train["image"][rest], "meta": train["image"][meta],
            "test": test["image"]}
  sources = {s: splits_lib.ArraySource(images[s], **arrays[s])
             for s in arrays}
  data = splits_lib.DataSplits(
      name=name, num_classes=num_classes, image_shape=(32, 32, 3),
      train_source=sources["train"], meta_source=sources["meta"],
      test_source=sources["test"], train_fn=preprocessing.cifar_train,
      eval_fn=preprocessing.cifar_eval, augment=bool(augment), seed=int(seed),
      transition_matrix=None, realised_noise_rate=rate,
      # No corruption model: the human labels are what they are.
      expected_noise_rate=None,
      class_counts=np.bincount(clean[rest], minlength=num_classes),
      meta_class_counts=np.bincount(clean[meta], minlength=num_classes),
      config={"data_dir": data_dir, "manual_dir": manual_dir,
              "label_set": label_set,
              "noise_type": f"real (human, {label_set})", "noise_rate": None,
              "imbalance_factor": 1.0,
              "noise_rate_full_train_split": full_rate},
      class_names=list(builder.info.features["label"].names), arrays=arrays,
      sample_names=splits_lib.SampleNames(f"tfds {builder.name}", "train"),
      raw_images=splits_lib.RawImages(shape=(32, 32, 3), dtype="uint8",
                                      encoded=False,
                                      description=preprocessing.CIFAR_EVAL,
                                      pixel_max=255))
  logging.info("Dataset %s: %s", name, data.summary(include_matrix=False))
  return data


@registry.register("cifar10_n")
def cifar10_n(label_set: str = "worse_label", data_dir: Optional[str] = None,
              manual_dir: Optional[str] = None, num_meta: int = 1000,
              seed: int = 0, augment: bool = True, download: bool = True):
  """CIFAR-10N: CIFAR-10 images with human labels (module docstring).

  Args:
    label_set: aggre_label, random_label1, random_label2, random_label3,
      worse_label, or clean_label (no noise).
    data_dir: TFDS data dir (None: ~/tensorflow_datasets).
    manual_dir: folder with the three label files (None:
      <data_dir>/downloads/manual).
    num_meta: clean meta images taken out of train, a multiple of 10 (the
      paper's CIFAR size: 1000, 100 per class).
    seed: meta set, shuffles and crops.
    augment: CIFAR's pad-4/crop/flip on train and meta (never on test).
    download: let TFDS download the CIFAR images if not prepared.

  Returns:
    DataSplits; images float32 [32, 32, 3], per-channel standardised; train
    `label` is the chosen human label, `clean_label` CIFAR's; the realised
    noise rate is measured on the training split (after the meta set).

  Raises:
    ValueError: unknown label_set, or a bad num_meta.
    FileNotFoundError: a manual label file is missing, or the data cannot be
      downloaded.
  """
  return _splits("cifar10_n", 10, label_set=label_set, data_dir=data_dir,
                 manual_dir=manual_dir, num_meta=num_meta, seed=seed,
                 augment=augment, download=download)


@registry.register("cifar100_n")
def cifar100_n(label_set: str = "noisy_label", data_dir: Optional[str] = None,
               manual_dir: Optional[str] = None, num_meta: int = 1000,
               seed: int = 0, augment: bool = True, download: bool = True):
  """CIFAR-100N: CIFAR-100 images with one human label each.

  As `cifar10_n`; label_set is noisy_label (TFDS's `noise_label`) or
  clean_label; num_meta a multiple of 100 (1000 = 10 per class, the paper's).
  """
  return _splits("cifar100_n", 100, label_set=label_set, data_dir=data_dir,
                 manual_dir=manual_dir, num_meta=num_meta, seed=seed,
                 augment=augment, download=download)
