"""The per-sample pass: every sample's loss under the classifier, and V's
weight for that loss.

One pass over a labelled dataset, whatever holds the models: a
`MetaWeightModel` in memory (the runner's monitor, every few epochs and at
the end: sample_weights.npz), one restored from a checkpoint or the two
exported SavedModels (`mwn_tf.analysis.sources`, to analyse a run), or
exports scoring new data (`python -m mwn_tf.analyze score`).

A "models" object is a callable `batch -> dict`: given a batch dict with
`image` `[b, H, W, C]` and `label` `[b]` (and any of `CARRIED`), it returns
`loss` `[b]`, `weight` `[b]`, `predicted` `[b]` (the classifier's top
class) and `probability` `[b]` (its softmax probability) plus the batch's
`CARRIED` entries. Losses
come from the classifier in inference mode (BatchNorm moving statistics, no
augmentation); weights from V applied to those losses; the baseline's
weights are 1, as in its training.
"""

from typing import Iterable, Optional

import numpy as np
import tensorflow as tf

from mwn_tf.sample_weights import per_sample_loss

# Per-sample fields a pass copies from the batches into its result.
CARRIED = ("index", "label", "clean_label", "is_noisy")


def carried(batch: dict) -> dict:
  """The `CARRIED` entries that `batch` has."""
  return {k: batch[k] for k in CARRIED if k in batch}


class KerasModels:
  """A classifier and V held by Keras: losses and weights in one graph.

  Args:
    model: a `MetaWeightModel` (or anything with its `classifier`,
      `weights_for` and `method`), in memory or restored from a checkpoint.
  """

  def __init__(self, model):
    mwn = model.method == "mwn"

    @tf.function(reduce_retracing=True)
    def score(batch):
      logits = model.classifier(batch["image"], training=False)
      losses = per_sample_loss(batch["label"], logits)
      weights = (model.weights_for(losses, batch["label"]) if mwn else
                 tf.ones_like(losses))
      probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
      return {**carried(batch), "loss": tf.cast(losses, tf.float32),
              "weight": tf.cast(weights, tf.float32),
              "predicted": tf.argmax(probs, -1, output_type=tf.int32),
              "probability": tf.reduce_max(probs, -1)}

    self._score = score

  def __call__(self, batch: dict) -> dict:
    return self._score(batch)


def sample_pass(models, batches: Iterable,
                strategy: Optional[tf.distribute.Strategy] = None) -> dict:
  """One pass of `models` over `batches`.

  Args:
    models: a callable `batch -> dict`, see the module docstring.
    batches: a `tf.data.Dataset`, a strategy's distributed dataset, or any
      iterable of batch dicts (NumPy arrays or tensors), each seen once.
    strategy: the strategy that distributed `batches` (each replica scores
      its share); None or a plain dataset: one call per batch.

  Returns:
    NumPy arrays `[N]`: the `CARRIED` fields the batches have, `loss`,
    `weight`, `predicted` and `probability`, sorted by `index`.
  """
  distributed = strategy is not None and not isinstance(batches,
                                                        tf.data.Dataset)
  parts = []
  for batch in batches:
    if distributed:
      out = strategy.run(models, args=(batch,))
      parts.extend(strategy.experimental_local_results(out))
    else:
      parts.append(models(batch))
  result = {k: np.concatenate([np.asarray(p[k]) for p in parts])
            for k in parts[0]}
  order = np.argsort(result["index"], kind="stable")
  return {k: v[order] for k, v in result.items()}
