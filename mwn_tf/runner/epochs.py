"""One deterministic data stream per epoch, and the loop that trains on them.

Each epoch's data stream is a pure function of (seed, epoch), and a
mid-epoch checkpoint resumes by skipping the batches already trained on, so
a resumed run sees exactly the batches of an uninterrupted one. The loop runs
one `fit()` call per epoch, each on its own epoch's stream.
"""

import dataclasses
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

_EPOCH_STREAM = 7919  # Folded with (seed, epoch) into each epoch's data seed.


def epoch_seed(seed: int, epoch: int) -> int:
  """The data seed of epoch `epoch` (shuffle, augmentation, meta order)."""
  return int(np.random.SeedSequence([int(seed), _EPOCH_STREAM, int(epoch)])
             .generate_state(1)[0] & 0x7FFFFFFF)


def epoch_stream(splits, epoch: int, skip: int, steps: int, batch_size: int,
                 meta_batch_size: int,
                 strategy: Optional[tf.distribute.Strategy] = None):
  """The (train, meta) batches of `epoch`, after its first `skip` steps.

  A fresh dataset per epoch, seeded by (seed, epoch): the batches of epoch e
  do not depend on how many epochs this process has iterated before, which
  is what makes a resumed run identical to an uninterrupted one.

  Args:
    splits: `DataSplits`.
    epoch: 0-based epoch.
    skip: global steps of this epoch already done.
    steps: global steps to take after the skipped ones.
    batch_size, meta_batch_size: global batch sizes.
    strategy: None or the run's strategy.

  Returns:
    (dataset, steps_per_epoch for `fit`): a `tf.data.Dataset` of exactly
    `steps` elements (and None), or a distributed dataset (and `steps`).
  """
  splits_e = dataclasses.replace(splits, seed=epoch_seed(splits.seed, epoch))
  strategy = strategy or tf.distribute.get_strategy()
  pipeline_fn = splits_e.train_and_meta_fn(batch_size, meta_batch_size)

  def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
    # Each pipeline feeds num_replicas / num_pipelines replicas per step.
    per_step = ctx.num_replicas_in_sync // ctx.num_input_pipelines
    return pipeline_fn(ctx).skip(skip * per_step)

  ds = strategy.distribute_datasets_from_function(dataset_fn)
  if isinstance(ds, tf.data.Dataset):  # The default strategy: no wrapping.
    return ds.take(steps), None
  return ds, steps


class StopAfterEpoch(keras.callbacks.Callback):
  """Ends `fit()` after one epoch, so `fit(epochs=E, initial_epoch=e)` shows
  "Epoch e+1/E" in the progress bar yet trains only epoch e."""

  def on_epoch_end(self, epoch, logs=None):
    self.model.stop_training = True


def train_epochs(meta_model, splits, *, start_epoch: int, skip: int,
                 num_epochs: int, steps_per_epoch: int, total_steps: int,
                 batch_size: int, meta_batch_size: int, strategy,
                 test_data, callbacks, verbose,
                 eval_every_n_epochs: int = 1) -> None:
  """Trains epochs `start_epoch`.. `num_epochs - 1`, the first one from its
  step `skip`, evaluating on `test_data` after every `eval_every_n_epochs`-th
  epoch and after the last; the last epoch stops at `total_steps`."""
  callbacks = list(callbacks) + [StopAfterEpoch()]
  for epoch in range(start_epoch, num_epochs):
    steps = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
    data, fit_steps = epoch_stream(splits, epoch, skip, steps - skip,
                                   batch_size, meta_batch_size, strategy)
    evaluate = should_evaluate(epoch, num_epochs, eval_every_n_epochs)
    meta_model.fit(data, epochs=num_epochs, initial_epoch=epoch,
                   steps_per_epoch=fit_steps,
                   validation_data=test_data if evaluate else None,
                   callbacks=callbacks, verbose=verbose, shuffle=False)
    skip = 0


def should_evaluate(epoch: int, num_epochs: int, every_n_epochs: int) -> bool:
  """Whether 0-based `epoch` ends with a test evaluation: every
  `every_n_epochs`-th epoch, and always the last (the final accuracy)."""
  return (epoch + 1) % every_n_epochs == 0 or epoch + 1 >= num_epochs
