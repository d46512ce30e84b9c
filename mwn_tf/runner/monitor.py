"""What a run shows while it trains: the console, TensorBoard, figures, history.

`TrainingMonitor` (a Keras callback) writes the scalars, the paper's figures
and the per-sample histograms, appends each epoch's record to the `RunState`
history and prints the epoch's line through `Console`, which also shows the
progress inside an epoch (a live bar on a terminal, a line every N seconds in
a log file). The per-sample pass (`mwn_tf.shared.samples`) and the figures
(`mwn_tf.shared.figures`) are shared with the analysis. The rest writes the
run's TensorBoard header (hparams, data summary, operative config) and marks
where a resumed session starts.
"""

import json
import logging as std_logging
import math
import sys
import time
from typing import Callable, Optional

from absl import logging
import keras
import numpy as np
import tensorflow as tf
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.summary.writer import event_file_writer

from mwn_tf.runner import declarations
from mwn_tf.runner.checkpointing import RunState
from mwn_tf.shared import figures
from mwn_tf.weight_net import curve_labels


# Log key of MetaWeightModel -> TensorBoard tag.
SCALAR_TAGS = {
    "loss": "train/loss",
    "weighted_loss": "train/weighted_loss",
    "accuracy": "train/accuracy",
    "weight_mean": "train/weight_mean",
    "weight_clean": "train/weight_clean",
    "weight_noisy": "train/weight_noisy",
    "weight_ess": "train/weight_ess",
    "meta_loss": "meta/loss",
    "meta_accuracy": "meta/accuracy",
}
# Losses at which V's weight is also logged as a scalar, to follow the
# curve's shape over training on one chart.
CURVE_PROBES = (0.1, 0.5, 1.0, 2.0, 4.0, 8.0)


def _current_lr(optimizer) -> float:
  return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


# ----------------------------------------------------------------------------
def _duration(seconds: float) -> str:
  """5 -> "5s", 125 -> "2:05", 7384 -> "2:03:04"."""
  if not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  if seconds < 60:
    return f"{seconds}s"
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return (f"{hours}:{minutes:02d}:{secs:02d}" if hours else
          f"{minutes}:{secs:02d}")


CONSOLE_MODES = ("off", "bar", "lines")
# The Python loggers of absl (this package's lines) and TensorFlow: a record
# on either clears the bar before any handler writes it.
_LOGGERS = ("absl", "tensorflow")


def console_mode(verbose) -> str:
  """`train_eval.verbose` -> a `Console` mode: 0 "off", 1 "bar", 2
  "lines", "auto" "bar" on a terminal and "lines" otherwise."""
  if verbose == "auto":
    return "bar" if sys.stdout.isatty() else "lines"
  return CONSOLE_MODES[int(verbose)]


class Console(keras.callbacks.Callback):
  """What a run prints while it trains, on stdout.

  Each epoch's line (`line`, from `TrainingMonitor`), and the progress inside
  an epoch from the global step: mode "bar", a bar redrawn in place (on a
  terminal; a log record clears it first, so no line is ever glued onto a
  half-drawn bar); mode "lines", a line every `every_seconds` (in a log file,
  nohup or SLURM, where a long epoch would otherwise be silent for hours);
  mode "off", the epoch lines only go to absl INFO.

  Args:
    mode: one of `CONSOLE_MODES`.
    steps_per_epoch: full global batches per epoch.
    total_steps: classifier steps of the whole run (the last epoch may be
      partial).
    total_epochs: epochs of the run.
    every_seconds: interval of the progress lines (mode "lines"); 0: none.
    stream: where to write (None: `sys.stdout` at the time of writing).
  """

  _BAR_WIDTH = 24
  _REDRAW_SECONDS = 0.2

  def __init__(self, mode: str, steps_per_epoch: int, total_steps: int,
               total_epochs: int, every_seconds: float = 60.0, stream=None):
    super().__init__()
    if mode not in CONSOLE_MODES:
      raise ValueError(f"mode must be one of {CONSOLE_MODES}, got {mode!r}.")
    self.mode = mode
    self._steps_per_epoch = int(steps_per_epoch)
    self._total_steps = int(total_steps)
    self._total_epochs = int(total_epochs)
    self._every = float(every_seconds or 0)
    self._stream = stream
    self._bar_shown = False
    self._filter = _ClearBefore(self)
    self._epoch = 0
    self._start = self._shown = time.monotonic()
    self._start_step = 0

  def _out(self):
    return self._stream or sys.stdout

  def _write(self, text: str) -> None:
    out = self._out()
    out.write(text)
    out.flush()

  def clear(self) -> None:
    """Erases the bar, if one is drawn, so that a line can follow."""
    if self._bar_shown:
      self._write("\r\033[K")
      self._bar_shown = False

  def line(self, text: str) -> None:
    """Prints one line (an epoch's summary) above the bar."""
    if self.mode == "off":
      logging.info(text)
      return
    self.clear()
    self._write(text + "\n")

  def on_train_begin(self, logs=None):
    if self.mode == "bar":
      for name in _LOGGERS:
        std_logging.getLogger(name).addFilter(self._filter)

  def on_train_end(self, logs=None):
    self.clear()
    for name in _LOGGERS:
      std_logging.getLogger(name).removeFilter(self._filter)

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = int(epoch)
    self._start = self._shown = time.monotonic()
    self._start_step = int(self.model.optimizer.iterations.numpy())

  def progress(self) -> str:
    """"epoch e/E: step s/S (p%), r steps/s, ETA t" of the current epoch."""
    first = self._epoch * self._steps_per_epoch
    total = min(self._steps_per_epoch, self._total_steps - first)
    step = int(self.model.optimizer.iterations.numpy())
    done = step - first
    elapsed = max(time.monotonic() - self._start, 1e-9)
    rate = (step - self._start_step) / elapsed
    eta = (total - done) / rate if rate > 0 else float("inf")
    return (f"epoch {self._epoch + 1}/{self._total_epochs}: step "
            f"{done}/{total} ({100 * done / max(total, 1):.0f}%), "
            f"{rate:.3g} steps/s, ETA {_duration(eta)}")

  def bar(self) -> str:
    first = self._epoch * self._steps_per_epoch
    total = min(self._steps_per_epoch, self._total_steps - first)
    done = int(self.model.optimizer.iterations.numpy()) - first
    filled = int(self._BAR_WIDTH * done / max(total, 1))
    head, _, tail = self.progress().partition(": ")
    return (f"{head} [{'#' * filled}{'.' * (self._BAR_WIDTH - filled)}] "
            f"{tail}")

  def on_train_batch_end(self, batch, logs=None):
    now = time.monotonic()
    if self.mode == "bar" and now - self._shown >= self._REDRAW_SECONDS:
      self._shown = now
      self._write("\r\033[K" + self.bar())
      self._bar_shown = True
    elif self.mode == "lines" and self._every and (
        now - self._shown >= self._every):
      self._shown = now
      self._write(self.progress() + "\n")


class _ClearBefore(std_logging.Filter):
  """Erases the console's bar before a log record is written (a filter of
  the loggers, which sees every record before their handlers do)."""

  def __init__(self, console: Console):
    super().__init__()
    self._console = console

  def filter(self, record):
    self._console.clear()
    return True


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
    sample_pass: dataset -> per-sample arrays (`shared.samples.
      sample_pass` with the model); `sample_data()` gives its dataset (the
      training split in order, `DataSplits.train_for_eval`).
    total_epochs: number of epochs of the run.
    summary_every_n_steps: step scalar interval (0: epoch ends only).
    sample_every_n_epochs: sample pass interval (0: last epoch only).
    curve_max_loss: the weighting curve is drawn on [0, curve_max_loss].
    write_operative_config: called once per session after the first step.
    on_epoch_recorded: called after each epoch's record is appended.
    console: prints each epoch's line (None: absl INFO).
    caption: what the run is (`figures.caption`: dataset, noise type and
      rate), put with the epoch under every figure's title.
  """

  def __init__(self, *, writer, state: RunState, sample_pass: Callable,
               sample_data: Callable, total_epochs: int,
               summary_every_n_steps: int, sample_every_n_epochs: int,
               curve_max_loss: float,
               write_operative_config: Callable[[], None],
               on_epoch_recorded: Optional[Callable[[], None]] = None,
               console: Optional[Console] = None,
               caption: str = ""):
    super().__init__()
    self._console = console
    self._writer = writer
    self._state = state
    self._sample_pass = sample_pass
    self._sample_data = sample_data
    self._total_epochs = int(total_epochs)
    self._every = int(summary_every_n_steps or 0)
    self._sample_every = int(sample_every_n_epochs or 0)
    self._grid = np.linspace(0.0, float(curve_max_loss), 201, dtype=np.float32)
    self._write_operative_config = write_operative_config
    self._on_epoch_recorded = on_epoch_recorded
    self._caption = caption
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
    """`[201, 1 + C]`: losses on [0, curve_max_loss], then V's weight at
    each for its C curves: 1 for the paper's V, one per class cluster for a
    class-aware V (`weight_net.curve_labels`), cluster 0 first."""
    grid = tf.constant(self._grid)
    columns = [self._grid]
    for label in curve_labels(self.model.weight_net):
      labels = None if label is None else tf.fill(tf.shape(grid), label)
      columns.append(np.asarray(self.model.weights_for(grid, labels),
                                np.float32))
    return np.stack(columns, axis=1)

  def on_epoch_end(self, epoch, logs=None):
    logs = dict(logs or {})
    step = self._step()
    history = self._state.history
    # Epochs between evaluations (train_eval.eval_every_n_epochs) have no
    # val_* logs: their test accuracy is NaN, recorded as null.
    test_acc = float(logs.get("val_accuracy", float("nan")))
    evaluated = math.isfinite(test_acc)
    best = max([h["test"]["accuracy"] for h in history
                if h["test"]["accuracy"] is not None]
               + ([test_acc] if evaluated else []), default=float("nan"))
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
      if evaluated:
        tf.summary.scalar("test/accuracy", test_acc, step=step)
        tf.summary.scalar("test/loss", record["test"]["loss"], step=step)
        tf.summary.scalar("test/best_accuracy", best, step=step)
      tf.summary.scalar("train/epoch", epoch + 1, step=step)
      if self._mwn:
        curve = self.curve()
        record["curve"] = np.round(curve[::10], 5).tolist()
        self._curve_summaries(curve, epoch, step)
      last = epoch + 1 >= self._total_epochs
      if last or (self._sample_every and (epoch + 1) % self._sample_every == 0):
        record["samples"] = self._sample_summaries(epoch, step)
      self._variation_figure(history + [record], step)
    self._writer.flush()
    self._state.append(_clean_json(record))
    self._log(record, best)
    if self._on_epoch_recorded is not None:
      self._on_epoch_recorded()

  def _curve_summaries(self, curve, epoch, step) -> None:
    """V's weighting curves (`curve()`) as one figure and as scalars at
    `CURVE_PROBES`; a class-aware V's per cluster (`.../cluster_<c>`)."""
    names = figures.cluster_names(curve.shape[1] - 1)
    figures.summary("meta/weighting_function", figures.weighting_function(
        curve[:, 0], curve[:, 1:], curve_names=names,
        context=self._context(epoch + 1)), step)
    for c, name in enumerate(names or [None]):
      suffix = "" if name is None else f"/cluster_{c}"
      for probe in CURVE_PROBES:
        if probe <= self._grid[-1]:
          tf.summary.scalar(f"meta/weight_at_loss/{probe:g}{suffix}", float(
              np.interp(probe, curve[:, 0], curve[:, 1 + c])), step=step)

  def _sample_summaries(self, epoch, step) -> dict:
    arrays = self._sample_pass(self._sample_data())
    self.last_samples = (epoch + 1, arrays)
    noisy = arrays["is_noisy"].astype(bool)
    for values, name in ((arrays["weight"], "sample_weight"),
                         (arrays["loss"], "sample_loss")):
      for mask, part in ((~noisy, "clean"), (noisy, "corrupted")):
        if mask.any():
          tf.summary.histogram(f"train/{name}/{part}", values[mask], step=step)
    figures.summary(
        "train/sample_weight_distribution", figures.weight_distribution(
            arrays["weight"], loss=arrays["loss"], is_noisy=noisy,
            title="Training samples", context=self._context(epoch + 1)),
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
    epochs = [h["epoch"] for h in history]
    figures.summary("train/weight_variation", figures.weight_variation(
        epochs, get("weight_clean"), get("weight_noisy"),
        mean=get("weight_mean"), context=", ".join(
            p for p in (self._caption, f"epochs {epochs[0]}–{epochs[-1]}")
            if p)), step)

  def _context(self, epoch: int) -> str:
    return ", ".join(p for p in (self._caption, f"epoch {epoch}") if p)

  def _log(self, record, best):
    train, meta = record["train"], record["meta"]
    parts = [f"epoch {record['epoch']}/{self._total_epochs}",
             f"step {record['step']}",
             f"train loss {train.get('loss', float('nan')):.4f}",
             f"acc {train.get('accuracy', float('nan')):.4f}"]
    if meta:
      parts.append(f"meta loss {meta.get('loss', float('nan')):.4f}")
    if "weight_clean" in train and train.get("weight_noisy") is not None:
      parts.append(f"weight clean/noisy {train['weight_clean']:.3f}/"
                   f"{train['weight_noisy']:.3f}")
    test_acc = record["test"]["accuracy"]
    parts += [f"test acc {test_acc:.4f} (best {best:.4f})"
              if math.isfinite(test_acc) else "test acc not evaluated",
              f"lr {record['learning_rate']:.3g}",
              f"time {record['epoch_seconds']:.1f}s"]
    show = self._console.line if self._console else logging.info
    show(" | ".join(parts))


def _clean_json(obj):
  """Replaces NaN/Inf by None so the history is strict JSON."""
  if isinstance(obj, dict):
    return {k: _clean_json(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean_json(v) for v in obj]
  if isinstance(obj, (float, np.floating)):
    return _nan_to_none(float(obj))
  return obj


def mark_session_start(logdir: str, step: int) -> None:
  """Writes a TensorBoard SessionLog.START event at `step`.

  TensorBoard treats every START after a run's first as a restart and drops
  the events of earlier sessions with step >= `step`: what a killed session
  logged after its last checkpoint (and this session will log again) never
  shows twice. tf.summary cannot write SessionLog events, so this uses
  tensorboard's own event writer, in its own file, named (by its timestamp)
  before this session's tf.summary file.
  """
  writer = event_file_writer.EventFileWriter(logdir,
                                             filename_suffix=".session")
  writer.add_event(event_pb2.Event(
      wall_time=time.time(), step=int(step),
      session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
  writer.close()
  # Event files are read in name order and names start with the second.
  time.sleep(1.01 - time.time() % 1.0)


def operative_config_summary(writer, text: str, step: int) -> None:
  """The operative gin config as TensorBoard text (`config/operative_gin`)."""
  with writer.as_default():
    indented = "\n".join("    " + line for line in text.splitlines())
    tf.summary.text("config/operative_gin", indented, step=step)


def hparams(settings: dict, data_summary: dict, total_steps: int) -> dict:
  """The TensorBoard hparams of a run (also results.json's `hparams`): the
  settings declared `hparam=True` (`declarations.hparams_of`), what the data
  says of its noise, and the run's length."""
  out = {
      **declarations.hparams_of(settings),
      "noise_type": str(data_summary.get("noise_type", "none")),
      # None for real noise of unknown rate (Clothing1M): left out below, as
      # HParams values must be numbers, strings or booleans.
      "noise_rate": data_summary.get("noise_rate", 0.0),
      "imbalance_factor": float(data_summary.get("imbalance_factor", 1.0)),
      "total_steps": int(total_steps)}
  return {k: v for k, v in out.items() if v is not None}


def write_run_header(writer, run_hparams: dict, data_summary: dict,
                     trial_id: str) -> None:
  """hparams and the data summary, once per run."""
  with writer.as_default():
    hparams_api.hparams_config(
        hparams=[hparams_api.HParam(k) for k in run_hparams],
        metrics=[hparams_api.Metric("test/accuracy"),
                 hparams_api.Metric("test/best_accuracy")])
    hparams_api.hparams(run_hparams, trial_id=trial_id)
    tf.summary.text("config/dataset", "```\n" + json.dumps(
        data_summary, indent=1) + "\n```", step=0)
