"""What a checkpoint holds, how a run is restored, and the saves that guard it.

One `tf.train.Checkpoint` per run, with these keys (old runs' checkpoints use
the same, so they keep resuming):

  classifier      the classifier's variables (a list: Keras 3 models are not
                  tracked by attribute)
  weight_net      V's variables
  optimizer       the classifier's optimizer (iterations = the global step,
                  slots, a constant learning rate)
  meta_optimizer  V's optimizer (MW-Net only)
  metrics         the train metrics' variables (a mid-epoch resume continues
                  the epoch's running means)
  ess_metric      the `weight_ess` metric's (added later; a checkpoint
                  without it restores, that metric restarting at 0)
  run             `RunState`: epochs done, wall time, history, a fingerprint
                  of the data, the gin config

The model's part comes from `MetaWeightModel.checkpoint_items()`, the run's
from `RunState.checkpoint_items()`. `restore` reads the newest readable
checkpoint (older ones if the newest is damaged); `check_same_experiment`
refuses a model_dir that holds a run on other data. `Checkpointer` saves every
N steps and at epoch ends and `NonFiniteGuard` stops at the first NaN/Inf
loss, so no checkpoint ever holds a diverged model.
"""

import json
import math
import os
import time
from typing import Callable, Optional, Sequence

from absl import logging
import gin
import keras
import tensorflow as tf

from mwn_tf.errors import ConfigError
from mwn_tf.runner import run_dir
from mwn_tf.runner import stopping

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
    self.session_first_step = 0

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

  def drop_last_epoch(self) -> dict:
    """Forgets the newest epoch record (an epoch that is continued, so it
    is recorded again at its new end); returns it."""
    history = self.history
    dropped = history.pop()
    self.history_json.assign(json.dumps(history))
    self.epochs_done.assign(int(history[-1]["epoch"]) if history else 0)
    return dropped

  def start_session(self, step: int = 0) -> None:
    """Call after a restore, with the restored classifier `step`: wall time
    keeps counting from the saved value; `session_*` count from here."""
    self._session_start = time.time()
    self._wall_at_start = float(self.wall_time.numpy())
    self.session_first_step = int(step)

  def session_elapsed(self) -> float:
    """Seconds since `start_session` (this process's share of the run)."""
    return time.time() - self._session_start

  def elapsed(self) -> float:
    return self._wall_at_start + time.time() - self._session_start

  def mark_time(self) -> None:
    self.wall_time.assign(self.elapsed())


# Keys added after runs were written: a checkpoint may lack them.
ADDED_KEYS = ("ess_metric",)


def make_checkpoint(meta_model, state: RunState,
                    legacy: bool = False) -> tf.train.Checkpoint:
  """Everything a resumed run needs, as one `tf.train.Checkpoint` (the keys
  of the module docstring). Call after `meta_model.compile`. `legacy`: the
  same objects without `ADDED_KEYS`, to restore checkpoints made before
  them (`restore`'s `legacy`)."""
  items = meta_model.checkpoint_items()
  if legacy:
    items = {k: v for k, v in items.items() if k not in ADDED_KEYS}
  return tf.train.Checkpoint(**items, run=state.checkpoint_items())


def restore_models(meta_model, path: str) -> None:
  """Restores only the classifier and V of `meta_model` from checkpoint
  `path` (a run's, e.g. `run_dir.latest_checkpoint(model_dir)`), ignoring
  its optimizers, metrics and run state: for reading a run, even one still
  training.

  Raises:
    tf.errors.OpError, AssertionError, ValueError: `path` is unreadable or
      holds another classifier or V.
  """
  items = meta_model.checkpoint_items()
  tf.train.Checkpoint(classifier=items["classifier"],
                      weight_net=items["weight_net"]).restore(
                          path).expect_partial(
                          ).assert_existing_objects_matched()


def restore(checkpoint: tf.train.Checkpoint, model_dir: str, save_dir: str,
            max_to_keep: int, legacy: Optional[tf.train.Checkpoint] = None):
  """Restores the newest readable checkpoint of model_dir.

  The checkpoint state file is only a hint: every `ckpt-<n>` with an index
  file is a candidate, newest first, so a lost or garbled state file, or a
  complete checkpoint whose recording a kill cut off, loses nothing. A
  candidate is first read in full (`readable`) and then restored; any error
  (a truncated or garbled file: DataLossError, IndexError "Read less bytes
  than requested", ...) skips it with a warning naming it and why, and the
  next older one is tried. Nothing is deleted: a damaged checkpoint stays
  for the user to look at (a newer save of the same step replaces it). The chief then rewrites the
  state file if it does not name the restored checkpoint as the newest, so
  the manager keeps rotating the right files.

  Every worker restores from model_dir's checkpoints; non-chief workers save
  to a scratch folder (multi-worker saving needs every worker to save).

  Args:
    checkpoint: from `make_checkpoint`.
    model_dir: the run's folder.
    save_dir: where this process saves (`run_dir.Writer.save_dir`).
    max_to_keep: older checkpoints are deleted (1 in a scratch folder).
    legacy: `make_checkpoint(..., legacy=True)`: restored instead of
      `checkpoint` from a file that lacks `ADDED_KEYS` (an older run's).

  Returns:
    (the manager to save with, the restored path or None).

  Raises:
    ConfigError: there are checkpoints, but none can be restored.
  """
  directory = run_dir.checkpoint_dir(model_dir)
  # Only the chief saves where it restores from.
  chief = os.path.normpath(save_dir) == os.path.normpath(directory)
  candidates = run_dir.checkpoints_on_disk(directory)
  restored, skipped = None, []
  for path in candidates:
    try:
      readable(path)
      reader = checkpoint if legacy is None or _has_added_keys(path) else (
          legacy)
      reader.restore(path).assert_existing_objects_matched()
      restored = path
      break
    except Exception as e:  # pylint: disable=broad-except
      # Whatever reading a damaged file raises, an older one may be fine.
      reason = (str(e).splitlines() or [""])[0] or "no message"
      logging.warning("Cannot restore %s (%s: %s); trying an older "
                      "checkpoint.", path, type(e).__name__, reason)
      skipped.append(os.path.basename(path))
  if chief:
    _repair_state_file(directory, restored, candidates)
  manager = tf.train.CheckpointManager(checkpoint, save_dir,
                                       max_to_keep=max_to_keep if chief else 1)
  if candidates and not restored:
    raise ConfigError(
        f"No checkpoint in {directory} could be restored ({', '.join(skipped)}"
        f"; do they come from a different model or method?); use another "
        f"--model_dir.")
  if skipped:
    logging.warning("Restored %s; skipped the newer %s, which could not be "
                    "read (see above) and are left as they are.", restored,
                    ", ".join(skipped))
  return manager, restored


def readable(path: str) -> None:
  """Reads every tensor of checkpoint `path` (one at a time), so a damaged
  file fails here, before any variable is assigned from it.

  Raises:
    Exception: whatever the reader raises on a missing, truncated or
      garbled file.
  """
  reader = tf.train.load_checkpoint(path)
  for name in reader.get_variable_to_shape_map():
    reader.get_tensor(name)


def _repair_state_file(directory: str, restored: Optional[str],
                       candidates: Sequence[str]) -> None:
  """Makes TF's state file name `restored` as the newest checkpoint, and the
  older candidates before it (the manager deletes the oldest of these)."""
  state = run_dir.checkpoint_state(directory)
  if restored is None:
    if state is None and tf.io.gfile.exists(os.path.join(directory,
                                                         "checkpoint")):
      # Garbage naming nothing restorable: TF's manager would raise on it.
      logging.warning("Removing %s/checkpoint: unreadable, and no checkpoint "
                      "to name.", directory)
      tf.io.gfile.remove(os.path.join(directory, "checkpoint"))
    return
  if state is not None and os.path.normpath(
      state.model_checkpoint_path) == os.path.normpath(restored):
    return
  step = run_dir.checkpoint_step
  paths = [p for p in reversed(candidates) if step(p) <= step(restored)]
  run_dir.write_checkpoint_state(directory, paths)
  logging.warning("Rewrote %s/checkpoint to name %s as the newest checkpoint "
                  "(it was %s).", directory, os.path.basename(restored),
                  "missing or unreadable" if state is None else
                  os.path.basename(state.model_checkpoint_path))


def fingerprint(splits, batch_size: int) -> str:
  """What must not change between a run and its resumption."""
  summary = splits.summary(include_matrix=False)
  keys = ("dataset", "num_classes", "num_train", "num_meta", "num_test",
          "seed", "realised_noise_rate", "class_counts", "meta_class_counts",
          "noise_type", "noise_rate", "imbalance_factor")
  out = {k: summary.get(k) for k in keys}
  out["batch_size"] = int(batch_size)
  return json.dumps(out, sort_keys=True)


def check_same_experiment(state: RunState, restored: Optional[str],
                          data_fingerprint: str, model_dir: str) -> None:
  """Refuses a restored run on other data or batch size, warns on another
  gin config, and records this run's fingerprint and config in `state`."""
  if restored:
    saved = state.fingerprint.numpy().decode()
    if saved != data_fingerprint:
      raise ConfigError(f"{model_dir} holds a run on different data or batch "
                        f"size ({saved}); use another --model_dir.")
    if state.config.numpy().decode() != gin.config_str():
      logging.warning("The gin config differs from the one that wrote %s; "
                      "continuing with the new one.", restored)
  state.fingerprint.assign(data_fingerprint)
  state.config.assign(gin.config_str())


def all_finite(variables: Sequence[tf.Variable]) -> bool:
  """True if no floating variable holds a NaN or an Inf."""
  checks = [tf.reduce_all(tf.math.is_finite(v)) for v in variables
            if tf.as_dtype(v.dtype).is_floating]
  return bool(tf.reduce_all(tf.stack(checks))) if checks else True


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
    stop_requested: returns the name of a signal that asked the run to stop
      (`stopping.SignalStop.requested`), or None. Checked after every step
      but an epoch's last (whose checkpoint follows its evaluation) and at
      every epoch end: a request saves a checkpoint (if this step has none
      yet) and raises `stopping.Stopped`.
  """

  def __init__(self, manager: tf.train.CheckpointManager,
               variables: Sequence[tf.Variable], state: RunState,
               every_n_steps: Optional[int],
               metric_variables: Sequence = (),
               restored_metric_values: Optional[list] = None,
               stop_requested: Callable[[], Optional[str]] = lambda: None):
    super().__init__()
    self._stop_requested = stop_requested
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
    step = int(self.model.optimizer.iterations.numpy())
    if batch + 1 >= (self.params.get("steps") or math.inf):
      return  # The epoch's last step: its checkpoint follows the evaluation.
    if self._every and step - self._last_saved >= self._every:
      self.save(step)
    self._stop_if_requested(step)

  def on_epoch_end(self, epoch, logs=None):
    step = int(self.model.optimizer.iterations.numpy())
    self.save(step)
    self._stop_if_requested(step)

  def _stop_if_requested(self, step: int) -> None:
    signal_name = self._stop_requested()
    if signal_name:
      if self._last_saved != step:
        self.save(step)
      raise stopping.Stopped(signal_name, step)

  def save(self, step: int) -> str:
    if not all_finite(self._variables):
      raise NonFiniteError(
          f"parameters became NaN/Inf by step {step}; not checkpointing. Last "
          f"good checkpoint: {describe_checkpoint(self.manager)}. Lower the "
          f"learning rate or check the data for NaN/Inf.", step)
    self._state.mark_time()
    path = self.manager.save(checkpoint_number=step)
    self._last_saved = step
    logging.debug("Saved checkpoint %s", path)  # absl -v 1 shows them.
    return path


def _has_added_keys(path: str) -> bool:
  names = [name for name, _ in tf.train.list_variables(path)]
  return all(any(n.startswith(key + "/") for n in names)
             for key in ADDED_KEYS)


def describe_checkpoint(manager: tf.train.CheckpointManager) -> str:
  latest = manager.latest_checkpoint
  if not latest:
    return "none (nothing was saved yet)"
  return f"{latest} (step {latest.rsplit('-', 1)[-1]})"
