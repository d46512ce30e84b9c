"""What V's weights become in the step: loss coefficients, and their spread.

`loss_coefficients` turns V's outputs into the coefficients c_i of the
weighted loss Σ_i c_i L_i (`normalize_weights`); `effective_sample_size`
measures how many samples those coefficients really train on (the
`weight_ess` metric of `MetaWeightModel`, watched by
`mwn_tf.runner.collapse.CollapseGuard`). Sums run over the GLOBAL batch by
default (`mwn_tf.replicas.cross_replica_sum`), so N replicas compute what one
device computes on the same global batch.
"""

import keras
import tensorflow as tf

from mwn_tf.replicas import cross_replica_sum


def per_sample_loss(labels, logits):
  """Cross-entropy per sample.

  Args:
    labels: `[batch]` int class ids.
    logits: `[batch, num_classes]` unnormalised scores.

  Returns:
    `[batch]` losses in the logits' dtype.
  """
  return keras.ops.sparse_categorical_crossentropy(
      labels, logits, from_logits=True)


def loss_coefficients(weights, mode, total=cross_replica_sum):
  """Per-sample coefficients c such that the weighted loss is Σ_i c_i L_i.

  By default sums run over the GLOBAL batch (all replicas), so N replicas
  compute the same coefficients as one device with the same global batch.

  Args:
    weights: `[batch]` outputs of V on this replica's samples.
    mode: "none" (c = w / n) or "sum" (c = w / Σw; Σw = 0 leaves w as is,
      as the official code does).
    total: How a per-replica sum becomes the normaliser: `cross_replica_sum`
      (global batch) or `replica_local` (this replica's samples only).

  Returns:
    `[batch]` coefficients.
  """
  if mode == "none":
    return weights / total(tf.cast(tf.shape(weights)[0], weights.dtype))
  norm = total(tf.reduce_sum(weights))
  return weights / tf.where(tf.equal(norm, 0.0), tf.ones_like(norm), norm)


def effective_sample_size(weights, total=cross_replica_sum):
  """The normalised effective sample size of a batch's weights.

  ESS = (Σ_i w_i)² / (n · Σ_i w_i²), in [1/n, 1] for weights >= 0 not all
  zero: 1 when every sample weighs the same, 1/n when one sample takes all
  of w / Σw. It is the same for w, w / n and w / Σw (scale-free), so it
  describes the coefficients of either `normalize_weights` mode. 0 when
  every weight is 0 (nothing is trained on; with "sum" the coefficients are
  then all 0).

  Under a `tf.distribute` strategy this is the GLOBAL batch's ESS (n = the
  global batch, sums over all replicas), like the coefficients themselves:
  the actual update normalises by the global Σw, so a collapse is one sample
  taking the global batch, and a per-replica ESS would differ from the
  single-device value on the same global batch. Every replica returns the
  same value.

  Args:
    weights: `[batch]` weights (V's outputs or coefficients) on this
      replica's samples, >= 0.
    total: `cross_replica_sum` (global batch) or `replica_local`.

  Returns:
    A scalar in the weights' dtype (float32 math for low-precision weights).
  """
  w = tf.cast(weights, tf.float32) if weights.dtype.size < 4 else weights
  n, s1, s2 = total([tf.cast(tf.size(w), w.dtype), tf.reduce_sum(w),
                     tf.reduce_sum(tf.square(w))])
  ess = tf.math.divide_no_nan(tf.square(s1), n * s2)
  return tf.cast(ess, weights.dtype)
