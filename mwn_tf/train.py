"""The experiment runner: one gin-configurable `train_eval` (issue 4).

    results = train_eval("runs/quickstart", strategy)   # settings from gin

`train_eval`'s keyword defaults are the paper's ResNet-32 noise setup
(MW-Net.py, docs/REFERENCE.md): classifier SGD 0.1, momentum 0.9, weight decay
5e-4, no Nesterov, 120 epochs with ×0.1 at epochs 80 and 100, batch 100, meta
batch 100; V = Linear(1,100)-ReLU-Linear(100,1)-sigmoid trained by Adam 1e-3
with weight decay 1e-4. One exception, on purpose: `normalize_weights="sum"`
(w / Σw, as the official WRN-28-10 and long-tail scripts) instead of
MW-Net.py's unnormalised mean, because without it V learns nothing on small
problems (see `MetaWeightModel`); the gin files of the MW-Net.py experiments
(flip noise) bind "none".

The model_dir receives:
  events.out.tfevents.*   TensorBoard (see `callbacks.TrainingMonitor`)
  checkpoints/            `tf.train.CheckpointManager`, files ckpt-<step>
  operative_config.gin    the resolved gin config, after the first step
  results.json            test accuracies (final and best epoch), noise rate,
                          seed, data summary, history; rewritten each epoch
  weight_curve.csv        the final weighting function: loss,weight (MW-Net)
  sample_weights.npz      per training sample: index, label, clean_label,
                          is_noisy, loss, weight (final model)
  export/classifier       SavedModel: images -> class probabilities
  export/weight_net       SavedModel: losses -> weights (MW-Net)

Resume: run the same command again. Each epoch's data stream is a pure
function of (seed, epoch), and a mid-epoch checkpoint resumes by skipping the
batches already trained on, so the resumed run sees exactly the batches of an
uninterrupted one.
"""

import dataclasses
import hashlib
import inspect
import io
import json
import math
import os
import re
import sys
import time
from typing import Optional, Sequence

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.summary.writer import event_file_writer

from mwn_tf import callbacks as cb
from mwn_tf import data as data_lib
from mwn_tf import export as export_lib
from mwn_tf import models as models_lib
from mwn_tf.meta_model import METHODS
from mwn_tf.meta_model import NORMALIZATIONS
from mwn_tf.meta_model import MetaWeightModel
from mwn_tf.weight_net import WeightNet

META_OPTIMIZERS = ("adam", "sgd")
_EPOCH_STREAM = 7919  # Folded with (seed, epoch) into each epoch's data seed.
# What tf.train.CheckpointManager (prefix "ckpt") writes for checkpoint <n>.
_CHECKPOINT_FILE = re.compile(r"ckpt-(\d+)(_temp|\.index|\.data-\d+-of-\d+)")


class ConfigError(ValueError):
  """A setting is invalid or inconsistent with model_dir; one-line message."""


def default_model_dir(gin_files: Sequence[str],
                      gin_params: Sequence[str] = ()) -> str:
  """`runs/<gin file stems joined by +>[-<hash of the --gin_param list>]`.

  Bindings change the experiment, so they get their own folder (and never
  resume a run made without them); the same command always maps to the same
  folder, which is what resuming needs.
  """
  stem = "+".join(os.path.splitext(os.path.basename(f))[0]
                  for f in gin_files) or "default"
  if gin_params:
    digest = hashlib.sha1("\n".join(gin_params).encode()).hexdigest()[:8]
    stem = f"{stem}-{digest}"
  return os.path.join("runs", stem)


# ----------------------------------------------------------------------------
# Data: one deterministic stream per epoch.
# ----------------------------------------------------------------------------
def epoch_seed(seed: int, epoch: int) -> int:
  """The data seed of epoch `epoch` (shuffle, augmentation, meta order)."""
  return int(np.random.SeedSequence([int(seed), _EPOCH_STREAM, int(epoch)])
             .generate_state(1)[0] & 0x7FFFFFFF)


class _OnePipeline:
  """Stands in for the strategy when `DataSplits` builds one input pipeline.

  `DataSplits.train_and_meta(strategy=s)` returns
  `s.distribute_datasets_from_function(dataset_fn)`; with this object it
  returns `dataset_fn(ctx).skip(n)`: one pipeline's dataset, minus the
  batches already trained on. TODO(data): replace by a `skip` argument of
  `train_and_meta` if mwn_tf.data grows one.
  """

  def __init__(self, ctx: tf.distribute.InputContext, skip: int):
    self._ctx, self._skip = ctx, skip
    self.num_replicas_in_sync = ctx.num_replicas_in_sync

  def distribute_datasets_from_function(self, dataset_fn, options=None):
    del options
    return dataset_fn(self._ctx).skip(self._skip)


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

  def dataset_fn(ctx):
    # Each pipeline feeds num_replicas / num_pipelines replicas per step.
    per_step = ctx.num_replicas_in_sync // ctx.num_input_pipelines
    return splits_e.train_and_meta(
        batch_size, meta_batch_size,
        strategy=_OnePipeline(ctx, skip * per_step))

  ds = strategy.distribute_datasets_from_function(dataset_fn)
  if isinstance(ds, tf.data.Dataset):  # The default strategy: no wrapping.
    return ds.take(steps), None
  return ds, steps


# ----------------------------------------------------------------------------
def _optimizer(kind: str, learning_rate, momentum: float, nesterov: bool):
  if kind == "sgd":
    return keras.optimizers.SGD(learning_rate, momentum=momentum,
                                nesterov=nesterov)
  # PyTorch's Adam epsilon (Keras' default is 1e-7).
  return keras.optimizers.Adam(learning_rate, epsilon=1e-8)


def lr_schedule(learning_rate: float, boundaries: Sequence[int],
                factor: float):
  """Piecewise constant: ×factor from each 0-based step index in boundaries.

  `PiecewiseConstantDecay` switches when iterations > boundary, and the step
  with 0-based index t runs with iterations == t, hence the `- 1`.
  """
  if not boundaries:
    return float(learning_rate)
  values = [float(learning_rate) * factor**i
            for i in range(len(boundaries) + 1)]
  return keras.optimizers.schedules.PiecewiseConstantDecay(
      [int(b) - 1 for b in boundaries], values)


def _reset_constant_lr(optimizer, value: float) -> None:
  if not isinstance(optimizer._learning_rate,  # pylint: disable=protected-access
                    keras.optimizers.schedules.LearningRateSchedule):
    optimizer.learning_rate = float(value)


def _is_chief(strategy) -> bool:
  resolver = getattr(strategy, "cluster_resolver", None)
  task_type = getattr(resolver, "task_type", None)
  if not task_type or task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return task_type == "worker" and resolver.task_id == 0 and not has_chief


def _fingerprint(splits, batch_size: int) -> str:
  """What must not change between a run and its resumption."""
  summary = splits.summary(include_matrix=False)
  keys = ("dataset", "num_classes", "num_train", "num_meta", "num_test",
          "seed", "realised_noise_rate", "class_counts", "meta_class_counts",
          "noise_type", "noise_rate", "imbalance_factor")
  out = {k: summary.get(k) for k in keys}
  out["batch_size"] = int(batch_size)
  return json.dumps(out, sort_keys=True)


def _restore(checkpoint, model_dir: str, chief: bool, strategy,
             max_to_keep: int):
  """Restores the newest readable checkpoint of model_dir.

  Every worker restores from model_dir/checkpoints; non-chief workers save
  to a scratch folder (multi-worker saving needs every worker to save).

  Returns:
    (the manager to save with, the restored path or None).
  """
  directory = os.path.join(model_dir, "checkpoints")
  manager = tf.train.CheckpointManager(checkpoint, directory,
                                       max_to_keep=max_to_keep)
  readable = manager if chief else tf.train.CheckpointManager(
      checkpoint, directory, max_to_keep=None)
  if not chief:
    task = strategy.cluster_resolver.task_id
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(model_dir, f"workertemp_{task}",
                                 "checkpoints"), max_to_keep=1)
  for path in reversed(readable.checkpoints):
    try:
      checkpoint.restore(path).assert_existing_objects_matched()
      return manager, path
    except (tf.errors.OpError, AssertionError, ValueError) as e:
      logging.warning("Cannot restore %s (%s); trying an older checkpoint.",
                      path, str(e).splitlines()[0])
  if readable.checkpoints:
    raise ConfigError(
        f"No checkpoint in {directory} could be restored (do they come from "
        f"a different model or method?); use another --model_dir.")
  return manager, None


def _remove_unfinished_writes(model_dir: str, exports) -> None:
  """Deletes what writes killed midway left in model_dir (chief, at start).

  A kill during a write (preemption, OOM, SIGKILL) leaves a temporary or
  partial copy that only the dead writer would have renamed into place or
  deleted: `<file>.tmp-*` of `export.write_file_atomically`, the `.tmp-` and
  `.old-` folders of an export (`export.clean_stale`), TF's
  `checkpoint.tmp*` copy of the checkpoint state file, the `ckpt-<n>_temp/`
  shards of a checkpoint whose merge never ran, and `ckpt-<n>.*` files newer
  than the newest checkpoint the state file names (a save killed before it
  was recorded, maybe half-written). A restore reads only recorded
  checkpoints, so none of these can break a run, but without this they would
  pile up, one set per preemption.

  Args:
    model_dir: the run's folder.
    exports: the run's SavedModel folders.
  """
  export_lib.remove_stale_files(model_dir)
  for path in exports:
    export_lib.clean_stale(path)
  directory = os.path.join(model_dir, "checkpoints")
  if not tf.io.gfile.isdir(directory):
    return
  state = tf.train.get_checkpoint_state(directory)
  recorded = [int(os.path.basename(p).rsplit("-", 1)[1])
              for p in (state.all_model_checkpoint_paths if state else [])]
  newest = max(recorded, default=-1)
  for entry in tf.io.gfile.listdir(directory):
    entry = entry.rstrip("/")
    match = _CHECKPOINT_FILE.fullmatch(entry)
    if entry.startswith("checkpoint.tmp") or (match and (
        match[2] == "_temp" or int(match[1]) > newest)):
      path = os.path.join(directory, entry)
      logging.info("Removing %s, left by a write that was killed.", path)
      if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
      else:
        tf.io.gfile.remove(path)


def _mark_session_start(logdir: str, step: int) -> None:
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


def _npz_bytes(arrays: dict) -> bytes:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  return buf.getvalue()


def _curve_csv(curve: np.ndarray) -> str:
  return "loss,weight\n" + "".join(f"{l:.6g},{w:.6g}\n" for l, w in curve)


def summarize(history: list) -> dict:
  """Final-epoch and best-epoch test accuracy of a history."""
  accs = [h["test"]["accuracy"] for h in history]
  valid = [(a, i) for i, a in enumerate(accs) if a is not None]
  if not valid:
    return {"final_epoch_test_accuracy": None,
            "best_epoch_test_accuracy": None, "best_epoch": None}
  best_acc, best_i = max(valid, key=lambda t: (t[0], -t[1]))
  return {"final_epoch_test_accuracy": accs[-1],
          "best_epoch_test_accuracy": best_acc,
          "best_epoch": history[best_i]["epoch"]}


# ----------------------------------------------------------------------------
# Settings: every argument of `train_eval` is checked before anything is
# loaded or written, so a bad binding costs a second and leaves model_dir as
# it was, not a crash minutes into a run.
# ----------------------------------------------------------------------------
def _is_int(x) -> bool:
  # bool is an int in Python, but `epochs = True` is a typo, not a count.
  return (isinstance(x, (int, np.integer)) and
          not isinstance(x, (bool, np.bool_)))


def _is_number(x) -> bool:
  return _is_int(x) or isinstance(x, (float, np.floating))


def _is_list(x) -> bool:
  return isinstance(x, (list, tuple))


def _increasing(values) -> bool:
  return all(a < b for a, b in zip(values, values[1:]))


def _int_rule(low: int, note: str = ""):
  return lambda v: _is_int(v) and v >= low, f"an integer >= {low}{note}"


def _choice_rule(choices):
  # `in` alone would accept True for 1 and 1.0 for 1.
  return (lambda v: any(type(v) is type(c) and v == c for c in choices),
          "one of " + ", ".join(repr(c) for c in choices))


def _epoch_list(v) -> bool:
  return _is_list(v) and _increasing(v) and all(
      _is_number(e) and math.isfinite(e) and e > 0 for e in v)


def _step_list(v) -> bool:
  return v is None or (_is_list(v) and _increasing(v) and all(
      _is_int(s) and s >= 1 for s in v))


def _widths(v) -> bool:
  return _is_list(v) and len(v) > 0 and all(_is_int(u) and u >= 1 for u in v)


_BOOL = (lambda v: isinstance(v, (bool, np.bool_)), "True or False")
_POSITIVE = (lambda v: _is_number(v) and v > 0, "a number > 0")
_FRACTION = (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)")
_DECAY = (lambda v: _is_number(v) and math.isfinite(v) and v >= 0,
          "a finite number >= 0")

# The accepted values of each keyword argument of `train_eval`, as
# (predicate, what the message says is accepted). `dataset` and `model` are
# looked up in their registries when checked (they can grow).
_RULES = {
    "method": _choice_rule(METHODS),
    "seed": (lambda v: _is_int(v) and 0 <= v < 2**32,
             "an integer in [0, 2**32 - 1]"),
    "epochs": _int_rule(1),
    "train_steps": (lambda v: v is None or (_is_int(v) and v >= 1),
                    "None or an integer >= 1"),
    "batch_size": _int_rule(1),
    "meta_batch_size": _int_rule(1),
    "learning_rate": _POSITIVE,
    "momentum": _FRACTION,
    "nesterov": _BOOL,
    "weight_decay": _DECAY,
    "lr_decay_epochs": (_epoch_list, "a list of increasing epochs > 0, "
                        "e.g. (80, 100) or ()"),
    "lr_decay_steps": (_step_list, "None or a list of increasing steps >= 1, "
                       "e.g. (18000, 19000)"),
    "lr_decay_factor": (lambda v: _is_number(v) and 0 < v <= 1,
                        "a number in (0, 1]"),
    "weight_net_hidden_units": (_widths, "a non-empty list of integers >= 1, "
                                "e.g. (100,)"),
    "normalize_weights": _choice_rule(NORMALIZATIONS),
    "meta_optimizer": _choice_rule(META_OPTIMIZERS),
    "meta_learning_rate": _POSITIVE,
    "meta_momentum": _FRACTION,
    "meta_nesterov": _BOOL,
    "meta_weight_decay": _DECAY,
    "jit_compile": _choice_rule((True, False, "auto")),
    "steps_per_execution": _int_rule(1),
    "deterministic": _BOOL,
    "eval_batch_size": _int_rule(1),
    "checkpoint_every_n_steps": _int_rule(0, " (0: at epoch ends only)"),
    "max_checkpoints_to_keep": _int_rule(1),
    "summary_every_n_steps": _int_rule(0, " (0: at epoch ends only)"),
    "sample_every_n_epochs": _int_rule(0, " (0: after the last epoch only)"),
    "curve_max_loss": (lambda v: _is_number(v) and math.isfinite(v) and v > 0,
                       "a finite number > 0"),
    "export": _BOOL,
    "verbose": _choice_rule((0, 1, 2, "auto")),
}


def check_settings(settings: dict) -> None:
  """Raises `ConfigError` on the first invalid `train_eval` argument.

  Checks types and ranges of each argument present in `settings` (any subset
  of `train_eval`'s arguments) and the ones that depend on each other
  without data (learning-rate boundaries against `epochs` / `train_steps`).
  Boundaries that depend on the number of steps per epoch are checked by
  `train_eval` once the data is loaded.

  Args:
    settings: argument name -> value.

  Raises:
    ConfigError: one line naming the binding, the accepted values and the
      value given.
  """
  rules = dict(_RULES)
  rules["dataset"] = _choice_rule(tuple(data_lib.names()))
  rules["model"] = _choice_rule(tuple(models_lib.names()))
  for name, value in settings.items():
    if name == "model_dir":
      if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ConfigError(f"train_eval's model_dir must be a non-empty path, "
                          f"got {value!r}.")
    elif name == "strategy":
      if value is not None and not isinstance(value, tf.distribute.Strategy):
        raise ConfigError(f"train_eval's strategy must be None or a "
                          f"tf.distribute.Strategy, got {value!r}.")
    elif name in rules:
      accepts, expected = rules[name]
      if not accepts(value):
        raise ConfigError(f"train_eval.{name} must be {expected}, got "
                          f"{value!r}.")
  get = settings.get
  # Boundaries are only used when given in the unit that is not overridden.
  if get("lr_decay_steps") is None and get("train_steps") is None:
    epochs, decay = get("epochs"), get("lr_decay_epochs")
    if epochs is not None and decay and decay[-1] > epochs:
      raise ConfigError(f"train_eval.lr_decay_epochs must be in (0, "
                        f"epochs={epochs}], got {decay!r}.")
  steps, decay = get("train_steps"), get("lr_decay_steps")
  if steps is not None and decay and decay[-1] > steps:
    raise ConfigError(f"train_eval.lr_decay_steps must be in [1, "
                      f"train_steps={steps}], got {decay!r}.")
  # Global batches are split evenly over the replicas.
  strategy = get("strategy")
  replicas = strategy.num_replicas_in_sync if strategy is not None else 1
  for name in ("batch_size", "meta_batch_size", "eval_batch_size"):
    if name in settings and settings[name] % replicas:
      raise ConfigError(f"train_eval.{name} must be a multiple of the "
                        f"{replicas} replicas in sync, got {settings[name]}.")


def bound_settings() -> dict:
  """`train_eval`'s keyword arguments as gin will pass them: the defaults,
  overridden by the current bindings (so a CLI can check them before it
  creates model_dir or starts devices)."""
  params = inspect.signature(train_eval.__wrapped__).parameters
  settings = {name: p.default for name, p in params.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY}
  settings.update(gin.get_bindings(train_eval))
  return settings


def _check_boundaries(boundaries, total_steps: int, lr_decay_steps) -> None:
  """Step boundaries (from epochs: rounded) within the run, increasing."""
  if boundaries and not (_increasing(boundaries) and boundaries[0] >= 1 and
                         boundaries[-1] <= total_steps):
    name = "lr_decay_steps" if lr_decay_steps is not None else (
        "lr_decay_epochs")
    raise ConfigError(f"train_eval.{name} gives learning-rate boundaries at "
                      f"steps {boundaries}; they must be increasing and in "
                      f"[1, {total_steps}] (the run's steps).")


def build_model(splits, *, model: str, method: str,
                weight_net_hidden_units: Sequence[int], normalize_weights: str,
                weight_decay: float, meta_weight_decay: float):
  """The classifier `model` for `splits`, wrapped in a `MetaWeightModel`.

  Call inside the strategy's scope. Other `MetaWeightModel` settings
  (virtual_step, sync_batchnorm) come from its own gin bindings.
  """
  try:
    classifier = models_lib.get(model, splits.num_classes, splits.image_shape)
  except (ValueError, FileNotFoundError, TypeError) as e:
    raise ConfigError(f"model {model!r}: {e}") from e
  weight_net = WeightNet(hidden_units=tuple(weight_net_hidden_units),
                         dtype=classifier.dtype_policy)
  return MetaWeightModel(classifier, weight_net, method=method,
                         normalize_weights=normalize_weights,
                         weight_decay=weight_decay,
                         meta_weight_decay=meta_weight_decay)


def _make_checkpoint(meta_model, state):
  """Everything a resumed run needs, as one `tf.train.Checkpoint`.

  Keras 3 models are not tracked by attribute in tf.train.Checkpoint, so
  their variables are listed; the optimizers are trackable (iterations,
  slots, a constant learning rate). Returns (checkpoint, metric variables).
  """
  # MetaWeightModel.metrics hides metrics until the first trace; the
  # checkpoint needs all of their variables now.
  metric_objects = list(getattr(meta_model, "_train_metrics", {}).values()
                        ) or list(meta_model.metrics)
  metric_variables = [v for m in metric_objects for v in m.variables]
  items = dict(classifier=list(meta_model.classifier.variables),
               weight_net=list(meta_model.weight_net.variables),
               optimizer=meta_model.optimizer, metrics=metric_variables,
               run=state.checkpoint_items())
  if meta_model.method == "mwn":
    items["meta_optimizer"] = meta_model.meta_optimizer
  return tf.train.Checkpoint(**items), metric_variables


def _check_same_experiment(state, restored, fingerprint: str,
                           model_dir: str) -> None:
  if restored:
    saved = state.fingerprint.numpy().decode()
    if saved != fingerprint:
      raise ConfigError(f"{model_dir} holds a run on different data or batch "
                        f"size ({saved}); use another --model_dir.")
    if state.config.numpy().decode() != gin.config_str():
      logging.warning("The gin config differs from the one that wrote %s; "
                      "continuing with the new one.", restored)
  state.fingerprint.assign(fingerprint)
  state.config.assign(gin.config_str())


def _write_run_header(writer, hparams: dict, data_summary: dict,
                      trial_id: str) -> None:
  """hparams and the data summary, once per run."""
  with writer.as_default():
    hparams_api.hparams_config(
        hparams=[hparams_api.HParam(k) for k in hparams],
        metrics=[hparams_api.Metric("test/accuracy"),
                 hparams_api.Metric("test/best_accuracy")])
    hparams_api.hparams(hparams, trial_id=trial_id)
    tf.summary.text("config/dataset", "```\n" + json.dumps(
        data_summary, indent=1) + "\n```", step=0)


class _Outputs:
  """The plain files and exports of a run (the chief writes, others skip)."""

  def __init__(self, model_dir: str, method: str, chief: bool):
    self._model_dir, self._chief = model_dir, chief
    self._scratch = None
    join = lambda *p: os.path.join(model_dir, *p)
    self.files = {"results": join("results.json"),
                  "sample_weights": join("sample_weights.npz"),
                  "operative_config": join("operative_config.gin"),
                  "checkpoints": join("checkpoints")}
    self.exports = {"classifier": join("export", "classifier")}
    if method == "mwn":
      self.files["weight_curve"] = join("weight_curve.csv")
      self.exports["weight_net"] = join("export", "weight_net")

  def set_checkpoint_dir(self, checkpoint_dir: str) -> None:
    """Where this worker saves: a non-chief's scratch folder is removed at
    the end."""
    self._scratch = None if self._chief else os.path.dirname(checkpoint_dir)

  def write_results(self, results: dict) -> dict:
    if self._chief:
      export_lib.write_file_atomically(self.files["results"],
                                       json.dumps(results, indent=1))
    return results

  def write_operative_config(self, writer, step: int) -> None:
    text = gin.operative_config_str()
    if self._chief:
      export_lib.write_file_atomically(self.files["operative_config"], text)
    with writer.as_default():
      indented = "\n".join("    " + line for line in text.splitlines())
      tf.summary.text("config/operative_gin", indented, step=step)

  def write_final(self, samples: dict, curve: Optional[np.ndarray],
                  meta_model, splits=None) -> None:
    """Per-sample weights, the weighting curve and (if `meta_model`) the
    SavedModels of its classifier (raw-image signatures from `splits`) and V."""
    if not self._chief:
      return
    export_lib.write_file_atomically(self.files["sample_weights"],
                                     _npz_bytes(samples))
    if curve is not None:
      export_lib.write_file_atomically(self.files["weight_curve"],
                                       _curve_csv(curve))
    if meta_model is not None:
      export_lib.export_classifier(meta_model.classifier,
                                   self.exports["classifier"], splits)
      if "weight_net" in self.exports:
        export_lib.export_weight_net(meta_model.weight_net,
                                     self.exports["weight_net"])

  def cleanup(self) -> None:
    if self._scratch:
      tf.io.gfile.rmtree(self._scratch)


@gin.configurable("train_eval", module="mwn_tf",
                  denylist=["model_dir", "strategy"])
def train_eval(
    model_dir: str,
    strategy: Optional[tf.distribute.Strategy] = None,
    *,
    method: str = "mwn",
    dataset: str = "cifar10",
    model: str = "resnet32",
    seed: int = 0,
    # Classifier optimisation and schedule (MW-Net.py).
    epochs: int = 120,
    train_steps: Optional[int] = None,
    batch_size: int = 100,
    meta_batch_size: int = 100,
    learning_rate: float = 0.1,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 5e-4,
    lr_decay_epochs: Sequence[float] = (80, 100),
    lr_decay_steps: Optional[Sequence[int]] = None,
    lr_decay_factor: float = 0.1,
    # The weighting net V and its optimiser (MW-Net.py).
    weight_net_hidden_units: Sequence[int] = (100,),
    normalize_weights: str = "sum",
    meta_optimizer: str = "adam",
    meta_learning_rate: float = 1e-3,
    meta_momentum: float = 0.9,
    meta_nesterov: bool = False,
    meta_weight_decay: float = 1e-4,
    # Engineering.
    jit_compile="auto",
    steps_per_execution: int = 1,
    deterministic: bool = False,
    eval_batch_size: int = 500,
    checkpoint_every_n_steps: int = 1000,
    max_checkpoints_to_keep: int = 3,
    summary_every_n_steps: int = 100,
    sample_every_n_epochs: int = 10,
    curve_max_loss: float = 10.0,
    export: bool = True,
    verbose="auto") -> dict:
  """Trains a classifier with Meta-Weight-Net (or the baseline) and evaluates.

  Resumes from the newest checkpoint in `model_dir` if there is one.

  Args:
    model_dir: output folder (see the module docstring); created if needed.
    strategy: a `tf.distribute.Strategy` (None: the default strategy). The
      model, optimizers, metrics and the checkpoint restore are created in
      its scope; batch sizes are GLOBAL.
    method: "mwn" (Algorithm 1) or "baseline" (plain training on the same
      data, model and schedule: every weight 1, no meta step).
    dataset: a `mwn_tf.data` name (digits, cifar10, cifar100, clothing1m,
      npz); its settings are bound on the loader, e.g.
      `cifar10.noise_rate = 0.4`.
    model: a `mwn_tf.models` name (resnet32, wrn28_10, resnet50, mlp,
      small_cnn); settings bound on the builder, e.g. `resnet50.weights_path`.
    seed: THE seed: meta split, noise, long tail (it overrides the loader's
      own `seed` binding), initialisation, data order and augmentation.
    epochs: epochs of training (ignored if `train_steps` is set).
    train_steps: total classifier steps (WRN script: 20000); the last epoch
      may be partial.
    batch_size, meta_batch_size: global train and meta batch sizes.
    learning_rate, momentum, nesterov: classifier SGD (rate > 0, momentum
      in [0, 1)).
    weight_decay: classifier L2, PyTorch-style (added to the gradient).
    lr_decay_epochs: increasing epochs in (0, epochs] (0-based, may be
      fractional) from which the learning rate is multiplied by
      `lr_decay_factor` once more.
    lr_decay_steps: the same in steps, in [1, total steps]; overrides
      `lr_decay_epochs`.
    lr_decay_factor: the multiplier, in (0, 1] (0.1).
    weight_net_hidden_units: hidden widths of V (the paper: (100,)).
    normalize_weights: "sum" (w / Σw) or "none" (Σ w·L / n, MW-Net.py).
    meta_optimizer: "adam" or "sgd" for V.
    meta_learning_rate, meta_momentum, meta_nesterov: V's optimiser
      (momentum and nesterov are for "sgd").
    meta_weight_decay: V's L2, PyTorch-style.
    jit_compile: XLA for the train step ("auto": Keras decides, on GPU/TPU).
    steps_per_execution: train steps per `tf.function` call.
    deterministic: `tf.config.experimental.enable_op_determinism()`.
    eval_batch_size: batch for the test split and the per-sample pass.
    checkpoint_every_n_steps: step checkpoint interval (0: epoch ends only);
      a kill loses at most this many steps.
    max_checkpoints_to_keep: older checkpoints are deleted.
    summary_every_n_steps: TensorBoard step scalars interval (0: epochs).
    sample_every_n_epochs: per-sample weight pass interval (0: last only).
    curve_max_loss: the weighting curve covers losses in [0, this].
    export: write the SavedModels at the end.
    verbose: Keras `fit` verbosity: 0, 1 (progress bar), 2 (one line per
      epoch), "auto" (1 on a terminal, else 2).

  Returns:
    The results dict also written to `model_dir/results.json`.

  Raises:
    ConfigError: invalid setting (every argument is checked by
      `check_settings` before anything is loaded or written), or model_dir
      holds another experiment.
    callbacks.NonFiniteError: a loss or parameter became NaN/Inf.
  """
  # First, before anything is loaded or written: every argument, as passed.
  check_settings(dict(locals()))
  strategy = strategy or tf.distribute.get_strategy()
  chief = _is_chief(strategy)
  if deterministic:
    tf.config.experimental.enable_op_determinism()
  keras.utils.set_random_seed(int(seed))
  try:
    splits = data_lib.get(dataset, seed=int(seed))
  except (ValueError, FileNotFoundError, TypeError) as e:
    raise ConfigError(f"dataset {dataset!r}: {e}") from e
  steps_per_epoch = splits.steps_per_epoch(batch_size)
  if steps_per_epoch < 1:
    raise ConfigError(f"train_eval.batch_size must be <= the "
                      f"{splits.num_train} training examples of {dataset!r}, "
                      f"got {batch_size}.")
  total_steps = int(train_steps) if train_steps else int(epochs) * (
      steps_per_epoch)
  num_epochs = math.ceil(total_steps / steps_per_epoch)
  boundaries = (list(lr_decay_steps) if lr_decay_steps is not None else
                [round(e * steps_per_epoch) for e in lr_decay_epochs])
  _check_boundaries(boundaries, total_steps, lr_decay_steps)

  # Model, optimizers, metrics and the restore, in the strategy's scope.
  tf.io.gfile.makedirs(model_dir)
  outputs = _Outputs(model_dir, method, chief)
  if chief:
    _remove_unfinished_writes(model_dir, outputs.exports.values())
  state = cb.RunState()
  with strategy.scope():
    meta_model = build_model(
        splits, model=model, method=method,
        weight_net_hidden_units=weight_net_hidden_units,
        normalize_weights=normalize_weights, weight_decay=weight_decay,
        meta_weight_decay=meta_weight_decay)
    meta_model.compile(
        optimizer=_optimizer(
            "sgd", lr_schedule(learning_rate, boundaries, lr_decay_factor),
            momentum, nesterov),
        meta_optimizer=_optimizer(meta_optimizer, meta_learning_rate,
                                  meta_momentum, meta_nesterov),
        jit_compile=jit_compile, steps_per_execution=steps_per_execution)
    checkpoint, metric_variables = _make_checkpoint(meta_model, state)
    manager, restored = _restore(checkpoint, model_dir, chief, strategy,
                                 max_checkpoints_to_keep)
    if restored:
      # A constant learning rate lives in an optimizer variable and was just
      # overwritten by the checkpoint's; the config decides, as for the rest.
      _reset_constant_lr(meta_model.optimizer, learning_rate)
      if method == "mwn":
        _reset_constant_lr(meta_model.meta_optimizer, meta_learning_rate)

  # Where to continue: epochs done and classifier steps come from the
  # checkpoint; the data stream of each epoch is a function of (seed, epoch).
  _check_same_experiment(state, restored, _fingerprint(splits, batch_size),
                         model_dir)
  state.start_session()
  step = int(meta_model.optimizer.iterations.numpy())
  start_epoch = int(state.epochs_done.numpy())
  # The last epoch may be partial (train_steps), so cap at total_steps.
  skip = step - min(start_epoch * steps_per_epoch, total_steps)
  if not 0 <= skip < steps_per_epoch:
    raise ConfigError(f"{restored} is at step {step} with {start_epoch} "
                      f"epochs done, which does not fit {steps_per_epoch} "
                      f"steps per epoch; use another --model_dir.")
  if restored:
    logging.info("Resuming from %s: epoch %d, step %d (%d steps into the "
                 "epoch).", restored, start_epoch + 1, step, skip)

  if chief:
    # Drop from TensorBoard what a killed session logged after `step`.
    _mark_session_start(model_dir, step + 1 if restored else 0)
  writer = (tf.summary.create_file_writer(model_dir) if chief
            else tf.summary.create_noop_writer())
  data_summary = splits.summary(include_matrix=False)
  hparams = {
      "method": method, "dataset": dataset, "model": model, "seed": int(seed),
      "noise_type": str(data_summary.get("noise_type", "none")),
      # None for real noise of unknown rate (Clothing1M): left out below, as
      # HParams values must be numbers, strings or booleans.
      "noise_rate": data_summary.get("noise_rate", 0.0),
      "imbalance_factor": float(data_summary.get("imbalance_factor", 1.0)),
      "normalize_weights": normalize_weights, "batch_size": int(batch_size),
      "learning_rate": float(learning_rate), "meta_optimizer": meta_optimizer,
      "meta_learning_rate": float(meta_learning_rate),
      "weight_net_hidden_units": ",".join(map(str, weight_net_hidden_units)),
      "total_steps": int(total_steps)}
  hparams = {k: v for k, v in hparams.items() if v is not None}
  if not restored:
    _write_run_header(writer, hparams, data_summary,
                      os.path.basename(os.path.normpath(model_dir)))
  outputs.set_checkpoint_dir(manager.directory)

  def results(finished: bool, error: Optional[str] = None, extra=None):
    history = state.history
    return outputs.write_results({
        "method": method, "dataset": dataset, "model": model,
        "seed": int(seed),
        "realised_noise_rate": data_summary["realised_noise_rate"],
        "realised_noise_rate_measured_on":
            data_summary["realised_noise_rate_measured_on"],
        **summarize(history),
        "final_epoch_test_loss": (history[-1]["test"]["loss"] if history
                                  else None),
        "epochs": num_epochs, "epochs_done": int(state.epochs_done.numpy()),
        "steps": int(meta_model.optimizer.iterations.numpy()),
        "total_steps": total_steps, "steps_per_epoch": steps_per_epoch,
        "wall_time_s": round(state.elapsed(), 3), "finished": finished,
        "error": error, "model_dir": model_dir, "files": outputs.files,
        "exports": outputs.exports if finished and export else {},
        "data": data_summary, "hparams": hparams, **(extra or {}),
        "history": history})

  def write_operative_config():
    outputs.write_operative_config(
        writer, int(meta_model.optimizer.iterations.numpy()))

  sample_pass = cb.SamplePass(meta_model, strategy)
  train_eval_data = lambda: splits.train_eval(eval_batch_size, strategy)
  monitor = cb.TrainingMonitor(
      writer=writer, state=state, sample_pass=sample_pass,
      train_eval_data=train_eval_data, total_epochs=num_epochs,
      summary_every_n_steps=summary_every_n_steps,
      sample_every_n_epochs=sample_every_n_epochs,
      curve_max_loss=curve_max_loss,
      write_operative_config=write_operative_config,
      on_epoch_recorded=lambda: results(False))
  callbacks = [
      cb.NonFiniteGuard(lambda: cb.describe_checkpoint(manager),
                        steps_per_epoch),
      monitor,
      cb.Checkpointer(
          manager, meta_model.classifier.variables +
          meta_model.weight_net.variables, state, checkpoint_every_n_steps,
          metric_variables,
          # Mid-epoch: the epoch's running means continue from the checkpoint.
          [np.asarray(v) for v in metric_variables] if skip else None),
      cb.StopAfterEpoch()]
  test_data = splits.test(eval_batch_size, strategy)
  # Progress bars on a terminal, one line per epoch in logs.
  if verbose == "auto":
    verbose = 1 if sys.stdout.isatty() else 2

  try:
    for epoch in range(start_epoch, num_epochs):
      steps = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
      data, fit_steps = epoch_stream(splits, epoch, skip, steps - skip,
                                     batch_size, meta_batch_size, strategy)
      meta_model.fit(data, epochs=num_epochs, initial_epoch=epoch,
                     steps_per_epoch=fit_steps, validation_data=test_data,
                     callbacks=callbacks, verbose=verbose, shuffle=False)
      skip = 0
  except cb.NonFiniteError as e:
    writer.flush()
    results(False, error=str(e))
    raise

  # Final files: what the final model does on the training split.
  if monitor.last_samples and monitor.last_samples[0] == num_epochs:
    samples = monitor.last_samples[1]
  else:
    samples = sample_pass(train_eval_data())
  monitor.set_model(meta_model)
  outputs.write_final(samples, monitor.curve() if method == "mwn" else None,
                      meta_model if export else None, splits)
  writer.flush()
  noisy = samples["is_noisy"].astype(bool)
  out = results(True, extra={
      "final_sample_weight_clean": _mean_or_none(samples["weight"], ~noisy),
      "final_sample_weight_noisy": _mean_or_none(samples["weight"], noisy)})
  outputs.cleanup()
  return out


def _mean_or_none(values, mask):
  return float(np.mean(values[mask])) if mask.any() else None
