"""What `MetaWeightModel.fit()` and `evaluate()` read: batches and labels.

A fit() element is a (train_batch, meta_batch) pair, each a dict with `image`
`[b, ...]` and `label` `[b]` (optionally `index`, `is_noisy` `[b]`) or an
(x, y) tuple; the baseline also takes a single batch. Everything here runs
at trace time and says in one message what was wrong and how to build the
right thing.
"""

from typing import Optional

import tensorflow as tf


def unpack_batch(batch, where: str):
  """(images, labels, is_noisy or None) from a dict or an (x, y) tuple;
  `where` names the batch in errors ("train", "meta", "evaluation")."""
  if isinstance(batch, dict):
    missing = {"image", "label"} - set(batch)
    if missing:
      raise ValueError(
          f"The {where} batch dict lacks {sorted(missing)}; it has "
          f"{sorted(batch)}. Batches are dicts with 'image' and 'label' "
          f"(optionally 'index', 'is_noisy'), or (x, y) tuples.")
    return batch["image"], batch["label"], batch.get("is_noisy")
  if isinstance(batch, (tuple, list)) and len(batch) == 2 and not isinstance(
      batch[0], (dict, tuple, list)):
    return batch[0], batch[1], None
  raise TypeError(
      f"Cannot read the {where} batch: expected a dict with 'image' and "
      f"'label' or an (x, y) tuple, got {tf.nest.map_structure(_spec, batch)}.")


def read_pair(data, method: str):
  """((x, y, is_noisy or None), (x_meta, y_meta, None)) of a fit() element.

  Args:
    data: The element; for `method="baseline"` a single batch is read as
      its own meta batch (the baseline never uses it).
    method: "mwn" or "baseline".

  Raises:
    TypeError, ValueError: the element is not a pair of batches, or the two
      batches' image shapes differ.
  """
  pair_ok = isinstance(data, (tuple, list)) and len(data) == 2 and all(
      isinstance(b, (dict, tuple, list)) for b in data)
  if not pair_ok:
    if method != "baseline":
      raise TypeError(
          "MetaWeightModel.fit() needs elements (train_batch, meta_batch), "
          "each a dict with 'image' and 'label' or an (x, y) tuple; got "
          f"{tf.nest.map_structure(_spec, data)}. Build them with "
          "mwn_tf.data.get(...).train_and_meta(...) or "
          "tf.data.Dataset.zip((train, meta.repeat())).")
    data = (data, data)
  train = unpack_batch(data[0], "train")
  meta = unpack_batch(data[1], "meta")
  if train[0].shape[1:] != meta[0].shape[1:]:
    raise ValueError(
        f"Train images have shape {train[0].shape} but meta images "
        f"{meta[0].shape}; both must have the classifier's input shape.")
  return train, meta


def check_labels(y, num_classes: Optional[int]):
  """`y` as `[batch]` class ids, asserted in [0, num_classes) in the graph
  unless `num_classes` is None.

  Raises:
    ValueError, TypeError: not `[batch]` (or `[batch, 1]`) integers.
  """
  if y.shape.rank == 2 and y.shape[-1] == 1:
    y = tf.squeeze(y, -1)
  if y.shape.rank != 1:
    raise ValueError(f"Labels must be class ids of shape [batch], got "
                     f"shape {y.shape} (one-hot labels are not supported).")
  if not y.dtype.is_integer:
    raise TypeError(f"Labels must be integer class ids, got {y.dtype}.")
  if num_classes:
    checks = [
        tf.debugging.assert_non_negative(
            y, message="Negative class id in the labels."),
        tf.debugging.assert_less(
            y, tf.cast(num_classes, y.dtype),
            message=(f"Label out of range: the classifier has {num_classes} "
                     f"outputs; check the dataset's num_classes.")),
    ]
    # Gate every use of y on the checks, or the loss op may fail first.
    with tf.control_dependencies(checks):
      y = tf.identity(y)
  return y


def _spec(t):
  return getattr(t, "shape", type(t).__name__)
