"""A guard against collapsed sample weights: the ESS of w / Σw stays low.

With `normalize_weights = "sum"` some runs fall towards chance part-way
through training while V's weights concentrate on a few samples of each
batch. `MetaWeightModel` reports the effective sample size of each step's
weights (`weight_ess`: 1 = uniform, 1/n = one sample takes all; see
`mwn_tf.sample_weights.effective_sample_size`). `CollapseGuard` watches its
mean over the last `window_steps` steps; when that falls below `threshold`
it logs ONE warning line (what happened, what to try), records the event for
results.json (`record`) and, by `action`:

  "warn"     nothing more (once per session);
  "stop"     checkpoints and raises `WeightCollapse` (the entry point exits
             with `exit_codes.COLLAPSED`);
  "reset_v"  re-initialises V and its optimizer's state, clears the window
             and keeps training (a line per reset).
"""

import collections
import math
from typing import Callable, Optional

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from mwn_tf.choices import COLLAPSE_ACTIONS

ACTIONS = COLLAPSE_ACTIONS
# Optimizer variables a reset keeps: the rate, and a loss scale (float16).
_KEPT_OPTIMIZER_VARIABLES = ("learning_rate", "dynamic_scale")


class WeightCollapse(Exception):
  """The weights collapsed and `on_weight_collapse = 'stop'`; a checkpoint
  of `step` was written."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


class CollapseGuard(keras.callbacks.Callback):
  """Watches the model's `weight_ess` metric over a window of steps.

  The window mean comes from the metric's running total and count (their
  increments since the last batch), so it is the mean of the per-step ESS
  whatever `steps_per_execution`, and a mid-epoch resume (whose restored
  running mean covers steps before it) counts only new steps. Put it after
  the checkpointer, whose epoch-end checkpoint a stop on an epoch's last
  step then reuses.

  Args:
    threshold: fires when the window's mean ESS is below this, in (0, 1].
    window_steps: classifier steps in the window (>= 1).
    action: one of `ACTIONS`.
    checkpoint_now: saves a checkpoint of the given step unless one exists
      ("stop").
  """

  def __init__(self, threshold: float, window_steps: int, action: str = "warn",
               checkpoint_now: Optional[Callable[[int], None]] = None):
    super().__init__()
    if action not in ACTIONS:
      raise ValueError(f"action must be one of {ACTIONS}, got {action!r}.")
    self.threshold = float(threshold)
    self.window_steps = int(window_steps)
    self.action = action
    self._checkpoint_now = checkpoint_now
    self.record = None  # the first collapse: what results.json shows
    self.lowest = None  # {"step", "ess"}: the lowest full-window mean
    self._window = collections.deque()  # (steps, Σ ESS, count) per batch
    self._last = None
    self._last_step = None
    self._stop_at_epoch_end = None
    self._fired = False  # "warn": one line per session

  def restore(self, record: Optional[dict]) -> None:
    """Continues a resumed run's record (from its results.json)."""
    if isinstance(record, dict) and "step" in record:
      self.record = dict(record)

  def _metric_state(self):
    """(Σ ESS, count) of the weight_ess metric, over all replicas."""
    metric = next(m for m in self.model.metrics if m.name == "weight_ess")
    # tf.convert_to_tensor: under a strategy the variables are on-read
    # (summed over replicas when read here), which NumPy cannot read.
    total, count = (float(tf.convert_to_tensor(v.value))
                    for v in metric.variables)
    return total, count

  def _step(self) -> int:
    return int(self.model.optimizer.iterations.numpy())

  def on_epoch_begin(self, epoch, logs=None):
    # After fit() reset the metrics (and the checkpointer restored them).
    self._last, self._last_step = self._metric_state(), self._step()

  def on_train_batch_end(self, batch, logs=None):
    step = self._step()
    total, count = self._metric_state()
    steps = step - self._last_step
    d_total, d_count = total - self._last[0], count - self._last[1]
    self._last, self._last_step = (total, count), step
    if steps <= 0 or d_count <= 0:
      return
    self._window.append((steps, d_total, d_count))
    while sum(s for s, _, _ in self._window) - self._window[0][0] >= (
        self.window_steps):
      self._window.popleft()
    if sum(s for s, _, _ in self._window) < self.window_steps:
      return
    ess = (sum(t for _, t, _ in self._window) /
           sum(c for _, _, c in self._window))
    if self.lowest is None or ess < self.lowest["ess"]:
      self.lowest = {"step": step, "ess": round(ess, 5)}
    if ess < self.threshold and not (self.action == "warn" and self._fired):
      self._fire(step, ess, last_of_epoch=batch + 1 >= (
          self.params.get("steps") or math.inf))

  def on_epoch_end(self, epoch, logs=None):
    if self._stop_at_epoch_end is not None:
      self._stop(*self._stop_at_epoch_end)

  def _fire(self, step: int, ess: float, last_of_epoch: bool) -> None:
    self._fired = True
    if self.record is None:  # the first collapse of the run
      self.record = {"step": step, "ess": round(ess, 5),
                     "threshold": self.threshold,
                     "window_steps": self.window_steps, "action": self.action}
    logging.warning(self.message(step, ess))
    if self.action == "reset_v":
      self.record["resets"] = self.record.get("resets", 0) + 1
      reset_weight_net(self.model)
      self._window.clear()
    elif self.action == "stop":
      if last_of_epoch:  # its checkpoint follows the epoch's evaluation
        self._stop_at_epoch_end = (step, ess)
      else:
        self._stop(step, ess)

  def _stop(self, step: int, ess: float) -> None:
    if self._checkpoint_now is not None:
      self._checkpoint_now(step)
    raise WeightCollapse(
        f"stopped at step {step}: the sample weights collapsed (mean ESS "
        f"{ess:.3f} < {self.threshold:g} over {self.window_steps} steps), "
        f"train_eval.on_weight_collapse = 'stop'; a checkpoint of step "
        f"{step} was written. Rerun with other settings (see the warning) "
        f"and the same --model_dir to continue from it.", step)

  def message(self, step: int, ess: float) -> str:
    """The one warning line."""
    then = {"warn": "training continues",
            "stop": "stopping with a checkpoint",
            "reset_v": "re-initialising V and its optimizer"}[self.action]
    return (f"sample weights collapsed at step {step}: the effective sample "
            f"size of w/Σw averaged {ess:.3f} over the last "
            f"{self.window_steps} steps (train_eval.collapse_ess_threshold = "
            f"{self.threshold:g}; 1 = uniform, 1/n = one sample takes all), "
            f"and test accuracy may fall towards chance; {then}. Try "
            f"train_eval.normalize_weights = 'none' or a lower "
            f"train_eval.learning_rate; train_eval.on_weight_collapse = "
            f"'stop' or 'reset_v' act on it.")

  def results(self) -> dict:
    """results.json's entries: `weight_collapse` (None, or the first
    collapse: step, ess, threshold, window_steps, action, resets) and
    `weight_ess_lowest` (the lowest window mean of this session)."""
    return {"weight_collapse": self.record, "weight_ess_lowest": self.lowest}


def reset_weight_net(meta_model) -> None:
  """V's variables to a fresh initialisation, V's optimizer state (its step
  and slots, not its rate or loss scale) to zero."""
  weight_net = meta_model.weight_net
  fresh = type(weight_net).from_config(weight_net.get_config())
  for variable, value in zip(weight_net.variables, fresh.variables):
    variable.assign(keras.ops.convert_to_numpy(value.value))
  for variable in meta_model.meta_optimizer.variables:
    if variable.name not in _KEPT_OPTIMIZER_VARIABLES:
      variable.assign(np.zeros(variable.shape,
                               keras.backend.standardize_dtype(variable.dtype)))
