"""The training samples a person should look at: named, pictured, editable.

`ranking.csv` (detection.py) ranks samples by `index` and class number. This
module names them for a person, from what the run's data says about its
samples (`mwn_tf.data.splits.SampleNames`, class names):

  suspects.csv  every training sample, lowest weight first, with the same
                columns for every dataset (`SUSPECT_COLUMNS`; empty where a
                value does not exist), in the order of the chosen ranking
                (`detection.RANKINGS`):
                  rank             1 = most distrusted
                  source           where the training split comes from
                                   ("folder /data/train", "tfds cifar10",
                                   "npz /data/x.npz", "sklearn load_digits")
                  split            the source's split `index` counts in
                                   ("train", "noisy_train", "x_train"; empty
                                   for a folder or load_digits)
                  index            the sample's position there
                  file             a folder: the path relative to train_dir;
                                   Clothing1M: the image key; else empty
                  given_label, given_class          the label trained on
                  predicted_label, predicted_class  the classifier's top
                                   class, and its `probability`
                  clean_class      the true class where known (synthetic
                                   noise, CIFAR-N), else empty
                  loss, weight     as in ranking.csv
  review.csv    the `size` most distrusted samples (`REVIEW_COLUMNS`), with
                an `action` column prefilled "keep" for the user to edit
                (`exclude`, `relabel:<class name>`) and give back to the
                loader (`folder.review_file`, `npz.review_file`; see
                `mwn_tf.data.review`).

The pictures (figures.distrusted_sheet / trusted_sheet) get their images
from `sheet_images`.
"""

import csv
import os
from typing import Optional, Sequence

import numpy as np

from mwn_tf.analysis.detection import DEFAULT_RANK_BY
from mwn_tf.analysis.detection import rank_order
from mwn_tf.analysis.detection import Samples

SUSPECT_COLUMNS = ("rank", "source", "split", "index", "file", "given_label",
                   "given_class", "predicted_label", "predicted_class",
                   "probability", "clean_class", "loss", "weight")
REVIEW_COLUMNS = ("rank", "file", "index", "given_class", "predicted_class",
                  "probability", "weight", "action")
# Thumbnails of images without a fixed size (files): side in pixels.
THUMBNAIL = 96


def class_name(names: Optional[Sequence[str]], label) -> str:
  """The name of class `label` ("" for None or -1; the number if unnamed)."""
  if label is None or int(label) < 0:
    return ""
  label = int(label)
  return str(names[label]) if names and label < len(names) else str(label)


def suspect_rows(samples: Samples, class_names: Optional[Sequence[str]],
                 sample_names=None, rank_by: str = DEFAULT_RANK_BY) -> list:
  """`SUSPECT_COLUMNS` dicts, most distrusted first.

  Args:
    samples: the run's per-sample table.
    class_names: `[K]` names, or None (class numbers are shown).
    sample_names: the data's `splits.SampleNames`, or None (source, split
      and file left empty).
    rank_by: the ranking (`detection.RANKINGS`).
  """
  order = rank_order(samples.weight, samples.loss, samples.index, rank_by)
  index = samples.index[order]
  files = (sample_names.files(index) if sample_names is not None
           and sample_names.files is not None else [""] * len(order))
  rows = []
  for rank, (i, file) in enumerate(zip(order, files), start=1):
    predicted = None if samples.predicted is None else samples.predicted[i]
    clean = (None if samples.clean_label is None
             else samples.clean_label[i])
    rows.append({
        "rank": rank,
        "source": sample_names.source if sample_names else "",
        "split": sample_names.split if sample_names else "",
        "index": int(samples.index[i]), "file": file,
        "given_label": int(samples.label[i]),
        "given_class": class_name(class_names, samples.label[i]),
        "predicted_label": "" if predicted is None else int(predicted),
        "predicted_class": class_name(class_names, predicted),
        "probability": ("" if samples.probability is None
                        else f"{samples.probability[i]:.4f}"),
        "clean_class": class_name(class_names, clean),
        "loss": f"{samples.loss[i]:.8g}", "weight": f"{samples.weight[i]:.8g}",
    })
  return rows


def _write(rows: list, columns: Sequence[str], path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
  return path


def write_suspects(rows: list, path: str) -> str:
  """Writes suspects.csv (`SUSPECT_COLUMNS`); returns `path`."""
  return _write(rows, SUSPECT_COLUMNS, path)


def write_review(rows: list, path: str, size: int) -> str:
  """Writes review.csv: the `size` first `rows` (0: all), action "keep"."""
  chosen = rows if size == 0 else rows[:size]
  return _write([{**r, "action": "keep"} for r in chosen], REVIEW_COLUMNS,
                path)


def trusted_by_class(samples: Samples, per_class: int,
                     rank_by: str = DEFAULT_RANK_BY) -> np.ndarray:
  """Positions of the `per_class` most trusted samples of each given class
  (the end of ranking `rank_by`: e.g. lowest loss, or highest weight),
  class by class."""
  order = rank_order(samples.weight, samples.loss, samples.index,
                     rank_by)[::-1]
  picked = [order[samples.label[order] == c][:per_class]
            for c in np.unique(samples.label)]
  return np.concatenate(picked) if picked else np.zeros(0, np.int64)


def sheet_images(raw: list) -> list:
  """Raw images (`DataSplits.train_images`) -> float `[h, w, C]` in [0, 1]
  for display.

  File bytes are decoded and cut to a `THUMBNAIL` square (shorter side
  resized, centre kept). Pixel arrays are shown as stored, scaled by the
  sheet's own range (so 0-16 digits and float .npz images show too).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = []
  for image in raw:
    if isinstance(image, bytes):
      pixels = tf.io.decode_image(image, channels=3, expand_animations=False)
      pixels = tf.image.convert_image_dtype(pixels, tf.float32)
      hw = tf.cast(tf.shape(pixels)[:2], tf.float32)
      size = tf.cast(tf.math.ceil(hw * THUMBNAIL / tf.reduce_min(hw)),
                     tf.int32)
      pixels = tf.image.resize(pixels, tf.maximum(size, THUMBNAIL),
                               antialias=True)
      pixels = tf.image.resize_with_crop_or_pad(pixels, THUMBNAIL, THUMBNAIL)
      out.append(np.clip(pixels.numpy(), 0.0, 1.0))
    else:
      out.append(np.asarray(image, np.float64))
  arrays = [i for i, image in enumerate(raw) if not isinstance(image, bytes)]
  if arrays:
    lo = min(float(out[i].min()) for i in arrays)
    hi = max(float(out[i].max()) for i in arrays)
    for i in arrays:
      out[i] = (out[i] - lo) / (hi - lo if hi > lo else 1.0)
  return out
