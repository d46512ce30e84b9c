"""Keras callbacks of the runner: NaN guard, checkpoints, TensorBoard figures.

`train.train_eval` runs one `fit()` call per epoch (each on that epoch's own
deterministic data stream) with these callbacks, in this order:

  NonFiniteGuard   stops at the first step whose loss is NaN/Inf, naming it.
  TrainingMonitor  TensorBoard scalars (train/…, meta/…, test/…), the
                   weighting-function curve, clean-vs-corrupted sample weight
                   histograms and figures, weight variation curves, the
                   operative gin config; keeps the per-epoch history.
  Checkpointer     `tf.train.CheckpointManager` saves every N steps and at
                   epoch ends, never with non-finite parameters.
  StopAfterEpoch   ends the `fit()` call after its one epoch.

Everything a resumed run needs beyond the model and optimizers (epochs done,
history, wall time, a fingerprint of the data) lives in `RunState`, whose
variables are saved in the same checkpoint, so the two can never disagree.
"""

import json
import math
import time
from typing import Callable, Optional, Sequence

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from mwn_tf import plots
from mwn_tf.meta_model import per_sample_loss

# Log key of MetaWeightModel -> TensorBoard tag.
SCALAR_TAGS = {
    "loss": "train/loss",
    "weighted_loss": "train/weighted_loss",
    "accuracy": "train/accuracy",
    "weight_mean": "train/weight_mean",
    "weight_clean": "train/weight_clean",
    "weight_noisy": "train/weight_noisy",
    "meta_loss": "meta/loss",
    "meta_accuracy": "meta/accuracy",
}
# Losses at which V's weight is also logged as a scalar, to follow the
# curve's shape over training on one chart.
CURVE_PROBES = (0.1, 0.5, 1.0, 2.0, 4.0, 8.0)
_GUARDED = ("loss", "weighted_loss", "meta_loss")


class NonFiniteError(RuntimeError):
  """A loss or a parameter became NaN/Inf; carries the global step."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


class RunState:
  """Training position and history, saved in the checkpoint with the model.

  Attributes (tf.Variables, host memory):
    epochs_done: epochs whose evaluation and summaries are complete.
    wall_time: seconds spent training, summed over resumed sessions.
    history_json: JSON list with one record per completed epoch.
    fingerprint: what the data looked like (`DataSplits.summary()`); a
      resumed run must see the same.
    config: `gin.config_str()` of the run that wrote the checkpoint.
  """

  def __init__(self):
    # Host variables made outside any strategy scope: strings cannot live on
    # accelerators, and none of these is touched by the train step.
    with tf.device("/cpu:0"):
      self.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False)
      self.wall_time = tf.Variable(0.0, dtype=tf.float64, trainable=False)
      self.history_json = tf.Variable("[]", dtype=tf.string, trainable=False)
      self.fingerprint = tf.Variable("", dtype=tf.string, trainable=False)
      self.config = tf.Variable("", dtype=tf.string, trainable=False)
    self._session_start = time.time()
    self._wall_at_start = 0.0

  def checkpoint_items(self) -> dict:
    return {"epochs_done": self.epochs_done, "wall_time": self.wall_time,
            "history": self.history_json, "fingerprint": self.fingerprint,
            "config": self.config}

  @property
  def history(self) -> list:
    return json.loads(self.history_json.numpy().decode())

  def append(self, record: dict) -> None:
    history = self.history
    history.append(record)
    self.history_json.assign(json.dumps(history))
    self.epochs_done.assign(int(record["epoch"]))

  def start_session(self) -> None:
    """Call after a restore: wall time keeps counting from the saved value."""
    self._session_start = time.time()
    self._wall_at_start = float(self.wall_time.numpy())

  def elapsed(self) -> float:
    return self._wall_at_start + time.time() - self._session_start

  def mark_time(self) -> None:
    self.wall_time.assign(self.elapsed())


def all_finite(variables: Sequence[tf.Variable]) -> bool:
  """True if no floating variable holds a NaN or an Inf."""
  checks = [tf.reduce_all(tf.math.is_finite(v)) for v in variables
            if tf.as_dtype(v.dtype).is_floating]
  return bool(tf.reduce_all(tf.stack(checks))) if checks else True


def _current_lr(optimizer) -> float:
  return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


# ----------------------------------------------------------------------------
class NonFiniteGuard(keras.callbacks.Callback):
  """Raises `NonFiniteError` at the first step whose loss is NaN or Inf.

  The loss logs are running means over the epoch, so they turn non-finite
  exactly at the first bad step. Placed before `Checkpointer`, so the bad
  step is never checkpointed.

  Args:
    last_checkpoint: returns a description of the newest checkpoint, for the
      error message.
    steps_per_epoch: to name the batch within its epoch.
  """

  def __init__(self, last_checkpoint: Callable[[], str], steps_per_epoch: int):
    super().__init__()
    self._last_checkpoint = last_checkpoint
    self._steps_per_epoch = int(steps_per_epoch)

  def on_train_batch_end(self, batch, logs=None):
    self._check(logs, "step")

  def on_epoch_end(self, epoch, logs=None):
    self._check({"test loss": (logs or {}).get("val_loss")}, "evaluation after")

  def _check(self, logs, where):
    for key, value in (logs or {}).items():
      if key not in _GUARDED and key != "test loss":
        continue
      if value is None or math.isfinite(float(value)):
        continue
      step = int(self.model.optimizer.iterations.numpy())
      epoch, batch = divmod(step - 1, self._steps_per_epoch)
      raise NonFiniteError(
          f"{key} became {float(value)} at {where} {step} (epoch {epoch + 1}, "
          f"batch {batch + 1}/{self._steps_per_epoch}); stopped without "
          f"saving. Last good checkpoint: "
          f"{self._last_checkpoint()}. Lower the learning rate or check the "
          f"data for NaN/Inf.", step)


class StopAfterEpoch(keras.callbacks.Callback):
  """Ends `fit()` after one epoch, so `fit(epochs=E, initial_epoch=e)` shows
  "Epoch e+1/E" in the progress bar yet trains only epoch e."""

  def on_epoch_end(self, epoch, logs=None):
    self.model.stop_training = True


# ----------------------------------------------------------------------------
class Checkpointer(keras.callbacks.Callback):
  """Saves a `tf.train.CheckpointManager` every N steps and at epoch ends.

  Step checkpoints skip an epoch's last batch: its epoch-end checkpoint
  follows right after the evaluation, and one saved before it would resume
  into a finished epoch with no test accuracy recorded. Before every save all
  parameters are checked; non-finite ones raise `NonFiniteError` and the
  previous checkpoint stays the newest.

  Args:
    manager: the run's `tf.train.CheckpointManager` (files named by step).
    variables: parameters to check before saving.
    state: the run's `RunState` (its wall time is refreshed before saving).
    every_n_steps: step checkpoint interval; 0 or None: epoch ends only.
    metric_variables: the model's metric variables, and
    restored_metric_values: their values in the checkpoint a mid-epoch run
      resumed from; put back after `fit()` resets the metrics at the start of
      that epoch, so the epoch's running means continue unchanged.
  """

  def __init__(self, manager: tf.train.CheckpointManager,
               variables: Sequence[tf.Variable], state: RunState,
               every_n_steps: Optional[int],
               metric_variables: Sequence = (),
               restored_metric_values: Optional[list] = None):
    super().__init__()
    self.manager = manager
    self._variables = list(variables)
    self._state = state
    self._every = int(every_n_steps or 0)
    self._metric_variables = list(metric_variables)
    self._pending_metrics = restored_metric_values
    self._last_saved = None

  def on_epoch_begin(self, epoch, logs=None):
    if self._pending_metrics is not None:
      for variable, value in zip(self._metric_variables,
                                 self._pending_metrics):
        variable.assign(value)
      self._pending_metrics = None

  def on_train_begin(self, logs=None):
    if self._last_saved is None and self._every:
      start = int(self.model.optimizer.iterations.numpy())
      self._last_saved = start - start % self._every

  def on_train_batch_end(self, batch, logs=None):
    if not self._every:
      return
    step = int(self.model.optimizer.iterations.numpy())
    last_of_epoch = batch + 1 >= (self.params.get("steps") or math.inf)
    if step - self._last_saved >= self._every and not last_of_epoch:
      self.save(step)

  def on_epoch_end(self, epoch, logs=None):
    self.save(int(self.model.optimizer.iterations.numpy()))

  def save(self, step: int) -> str:
    if not all_finite(self._variables):
      raise NonFiniteError(
          f"parameters became NaN/Inf by step {step}; not checkpointing. Last "
          f"good checkpoint: {describe_checkpoint(self.manager)}. Lower the "
          f"learning rate or check the data for NaN/Inf.", step)
    self._state.mark_time()
    path = self.manager.save(checkpoint_number=step)
    self._last_saved = step
    logging.info("Saved checkpoint %s", path)
    return path


def describe_checkpoint(manager: tf.train.CheckpointManager) -> str:
  latest = manager.latest_checkpoint
  if not latest:
    return "none (nothing was saved yet)"
  return f"{latest} (step {latest.rsplit('-', 1)[-1]})"


# ----------------------------------------------------------------------------
class SamplePass:
  """Per-sample loss and weight over a one-pass dataset (inference mode).

  Losses come from the classifier in inference mode (BatchNorm moving
  statistics, no augmentation), weights from V applied to those losses; the
  baseline's weights are 1, as in its training.
  """

  def __init__(self, model, strategy: Optional[tf.distribute.Strategy] = None):
    self._model = model
    self._strategy = strategy or tf.distribute.get_strategy()
    mwn = model.method == "mwn"

    @tf.function(reduce_retracing=True)
    def step(batch):
      logits = model.classifier(batch["image"], training=False)
      losses = per_sample_loss(batch["label"], logits)
      weights = model.weights_for(losses) if mwn else tf.ones_like(losses)
      return {"index": batch["index"], "label": batch["label"],
              "clean_label": batch["clean_label"],
              "is_noisy": batch["is_noisy"], "loss": tf.cast(losses, tf.float32),
              "weight": tf.cast(weights, tf.float32)}

    self._step = step

  def __call__(self, dataset) -> dict:
    """Returns numpy arrays (index, label, clean_label, is_noisy, loss,
    weight), each `[N]`, sorted by index."""
    parts = []
    distributed = not isinstance(dataset, tf.data.Dataset)
    for batch in dataset:
      if distributed:
        out = self._strategy.run(self._step, args=(batch,))
        parts.extend(self._strategy.experimental_local_results(out))
      else:
        parts.append(self._step(batch))
    result = {k: np.concatenate([np.asarray(p[k]) for p in parts])
              for k in parts[0]}
    order = np.argsort(result["index"], kind="stable")
    return {k: v[order] for k, v in result.items()}


def _mean(values, mask):
  return float(np.mean(values[mask])) if mask.any() else float("nan")


def _nan_to_none(x):
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


class TrainingMonitor(keras.callbacks.Callback):
  """TensorBoard summaries, the paper's figures and the per-epoch history.

  Every `summary_every_n_steps` steps: train/… and meta/… scalars (the
  epoch's running means) and the learning rates. At each epoch end: the same
  plus test/accuracy, test/loss, test/best_accuracy; for MW-Net the weighting
  function V as an image (`meta/weighting_function`) and as scalars
  (`meta/weight_at_loss/<loss>`); the weight variation curves
  (`train/weight_variation` image; `train/weight_clean`, `…_noisy` scalars).
  Every `sample_every_n_epochs` epochs and at the last: a pass over the
  training split giving histograms `train/sample_weight/{clean,corrupted}`
  and `train/sample_loss/{clean,corrupted}` and the image
  `train/sample_weight_distribution`. After the first step of a session: the
  operative gin config, to `operative_config.gin` and as text
  (`config/operative_gin`).

  Args:
    writer: the run's summary writer.
    state: the run's `RunState` (history is appended here).
    sample_pass: a `SamplePass`; `train_eval_data()` gives its dataset.
    total_epochs: number of epochs of the run.
    summary_every_n_steps: step scalar interval (0: epoch ends only).
    sample_every_n_epochs: sample pass interval (0: last epoch only).
    curve_max_loss: the weighting curve is drawn on [0, curve_max_loss].
    write_operative_config: called once per session after the first step.
    on_epoch_recorded: called after each epoch's record is appended.
  """

  def __init__(self, *, writer, state: RunState, sample_pass: SamplePass,
               train_eval_data: Callable, total_epochs: int,
               summary_every_n_steps: int, sample_every_n_epochs: int,
               curve_max_loss: float,
               write_operative_config: Callable[[], None],
               on_epoch_recorded: Optional[Callable[[], None]] = None):
    super().__init__()
    self._writer = writer
    self._state = state
    self._sample_pass = sample_pass
    self._train_eval_data = train_eval_data
    self._total_epochs = int(total_epochs)
    self._every = int(summary_every_n_steps or 0)
    self._sample_every = int(sample_every_n_epochs or 0)
    self._grid = np.linspace(0.0, float(curve_max_loss), 201, dtype=np.float32)
    self._write_operative_config = write_operative_config
    self._on_epoch_recorded = on_epoch_recorded
    self._config_written = False
    self._epoch_start = time.time()
    self._epoch_lr = float("nan")
    self.last_samples = None  # (epoch, arrays) of the latest sample pass

  @property
  def _mwn(self):
    return self.model.method == "mwn"

  def _step(self) -> int:
    return int(self.model.optimizer.iterations.numpy())

  def _scalars(self, logs, step):
    for key, tag in SCALAR_TAGS.items():
      if key in logs:
        tf.summary.scalar(tag, float(logs[key]), step=step)
    tf.summary.scalar("train/learning_rate", _current_lr(self.model.optimizer),
                      step=step)
    if self._mwn:
      tf.summary.scalar("meta/learning_rate",
                        _current_lr(self.model.meta_optimizer), step=step)

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch_start = time.time()
    # The rate this epoch starts with (the train/learning_rate scalars give
    # the rate of the step after the one they are logged at).
    self._epoch_lr = _current_lr(self.model.optimizer)

  def on_train_batch_end(self, batch, logs=None):
    if not self._config_written:
      self._config_written = True
      self._write_operative_config()
    step = self._step()
    last_of_epoch = batch + 1 >= (self.params.get("steps") or math.inf)
    # An epoch's last step gets its scalars from on_epoch_end, once.
    if self._every and step % self._every == 0 and not last_of_epoch:
      with self._writer.as_default():
        self._scalars(logs or {}, step)

  def curve(self) -> np.ndarray:
    """`[201, 2]` (loss, weight) of V on [0, curve_max_loss]."""
    weights = np.asarray(self.model.weights_for(tf.constant(self._grid)))
    return np.stack([self._grid, weights.astype(np.float32)], axis=1)

  def on_epoch_end(self, epoch, logs=None):
    logs = dict(logs or {})
    step = self._step()
    history = self._state.history
    test_acc = float(logs.get("val_accuracy", float("nan")))
    best = max([h["test"]["accuracy"] for h in history
                if h["test"]["accuracy"] is not None] + [test_acc])
    record = {
        "epoch": epoch + 1, "step": step,
        "learning_rate": self._epoch_lr,
        "train": {k: float(logs[k]) for k in SCALAR_TAGS
                  if k in logs and not k.startswith("meta_")},
        "meta": {k[len("meta_"):]: float(logs[k]) for k in SCALAR_TAGS
                 if k in logs and k.startswith("meta_")},
        "test": {"loss": float(logs.get("val_loss", float("nan"))),
                 "accuracy": test_acc},
        "epoch_seconds": time.time() - self._epoch_start,
    }
    with self._writer.as_default():
      self._scalars(logs, step)
      tf.summary.scalar("test/accuracy", test_acc, step=step)
      tf.summary.scalar("test/loss", record["test"]["loss"], step=step)
      tf.summary.scalar("test/best_accuracy", best, step=step)
      tf.summary.scalar("train/epoch", epoch + 1, step=step)
      if self._mwn:
        curve = self.curve()
        record["curve"] = np.round(curve[::10], 5).tolist()
        plots.png_summary("meta/weighting_function", plots.weighting_function(
            curve[:, 0], curve[:, 1], f"(epoch {epoch + 1})"), step)
        for probe in CURVE_PROBES:
          if probe <= self._grid[-1]:
            tf.summary.scalar(f"meta/weight_at_loss/{probe:g}", float(
                np.interp(probe, curve[:, 0], curve[:, 1])), step=step)
      last = epoch + 1 >= self._total_epochs
      if last or (self._sample_every and (epoch + 1) % self._sample_every == 0):
        record["samples"] = self._sample_summaries(epoch, step)
      self._variation_figure(history + [record], step)
    self._writer.flush()
    self._state.append(_clean_json(record))
    self._log(record, best)
    if self._on_epoch_recorded is not None:
      self._on_epoch_recorded()

  def _sample_summaries(self, epoch, step) -> dict:
    arrays = self._sample_pass(self._train_eval_data())
    self.last_samples = (epoch + 1, arrays)
    noisy = arrays["is_noisy"].astype(bool)
    for values, name in ((arrays["weight"], "sample_weight"),
                         (arrays["loss"], "sample_loss")):
      for mask, part in ((~noisy, "clean"), (noisy, "corrupted")):
        if mask.any():
          tf.summary.histogram(f"train/{name}/{part}", values[mask], step=step)
    plots.png_summary(
        "train/sample_weight_distribution", plots.sample_distribution(
            arrays["loss"], arrays["weight"], noisy, f"(epoch {epoch + 1})"),
        step)
    out = {"weight_clean": _mean(arrays["weight"], ~noisy),
           "weight_noisy": _mean(arrays["weight"], noisy),
           "loss_clean": _mean(arrays["loss"], ~noisy),
           "loss_noisy": _mean(arrays["loss"], noisy)}
    for key, value in out.items():
      if math.isfinite(value):
        tf.summary.scalar(f"train/sample_{key}", value, step=step)
    return out

  def _variation_figure(self, history, step):
    train = [h["train"] for h in history]
    if not self._mwn or not any("weight_clean" in t for t in train):
      return
    get = lambda k: [t.get(k) if t.get(k) is not None else float("nan")
                     for t in train]
    plots.png_summary("train/weight_variation", plots.weight_variation(
        [h["epoch"] for h in history], get("weight_clean"),
        get("weight_noisy"), get("weight_mean")), step)

  def _log(self, record, best):
    train, meta = record["train"], record["meta"]
    parts = [f"epoch {record['epoch']}/{self._total_epochs}",
             f"step {record['step']}",
             f"train loss {train.get('loss', float('nan')):.4f}",
             f"acc {train.get('accuracy', float('nan')):.4f}"]
    if meta:
      parts.append(f"meta loss {meta.get('loss', float('nan')):.4f}")
    if "weight_clean" in train and train.get("weight_noisy") is not None:
      parts.append(f"w clean/noisy {train['weight_clean']:.3f}/"
                   f"{train['weight_noisy']:.3f}")
    parts += [f"test acc {record['test']['accuracy']:.4f} (best {best:.4f})",
              f"lr {record['learning_rate']:.3g}",
              f"{record['epoch_seconds']:.1f}s"]
    logging.info(" | ".join(parts))


def _clean_json(obj):
  """Replaces NaN/Inf by None so the history is strict JSON."""
  if isinstance(obj, dict):
    return {k: _clean_json(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean_json(v) for v in obj]
  if isinstance(obj, (float, np.floating)):
    return _nan_to_none(float(obj))
  return obj
