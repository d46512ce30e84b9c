"""The settings of a run: their rules, their check and the objects they make.

Every keyword argument of `runner.train_eval.train_eval` is checked here
(`check_settings`) before anything is loaded or written, so a bad binding
costs a second and leaves model_dir as it was, not a crash minutes into a
run. The factories (`lr_schedule`, `make_optimizer`, `build_model`,
`plan_steps`) turn checked settings into the schedule, the optimisers and the
model, and `default_model_dir` maps a command to its folder.
"""

import dataclasses
import hashlib
import inspect
import math
import os
import re
from typing import List, Sequence

import gin
import keras
import numpy as np
import tensorflow as tf

from mwn_tf import data as data_lib
from mwn_tf import models as models_lib
from mwn_tf.meta_model import METHODS
from mwn_tf.meta_model import NORMALIZATIONS
from mwn_tf.meta_model import MetaWeightModel
from mwn_tf.runner.collapse import ACTIONS as COLLAPSE_ACTIONS
from mwn_tf.weight_net import WeightNet

META_OPTIMIZERS = ("adam", "sgd")


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
# The rules: (predicate, what the message says is accepted) per argument.
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
_POSITIVE = (lambda v: _is_number(v) and math.isfinite(v) and v > 0,
             "a finite number > 0")
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
    "eval_every_n_epochs": _int_rule(1, " (the last epoch is always "
                                        "evaluated)"),
    "checkpoint_every_n_steps": _int_rule(0, " (0: at epoch ends only)"),
    "max_checkpoints_to_keep": _int_rule(1),
    "summary_every_n_steps": _int_rule(0, " (0: at epoch ends only)"),
    "sample_every_n_epochs": _int_rule(0, " (0: after the last epoch only)"),
    "curve_max_loss": (lambda v: _is_number(v) and math.isfinite(v) and v > 0,
                       "a finite number > 0"),
    "export": _BOOL,
    "verbose": _choice_rule((0, 1, 2, "auto")),
    "reexport": _BOOL,
    "collapse_ess_threshold": (lambda v: _is_number(v) and 0 <= v <= 1,
                               "a number in [0, 1] (0: never warn)"),
    "collapse_window_steps": _int_rule(1),
    "on_weight_collapse": _choice_rule(COLLAPSE_ACTIONS),
    "progress_every_n_seconds": (
        lambda v: _is_number(v) and math.isfinite(v) and v >= 0,
        "a finite number >= 0 (0: no progress lines)"),
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


def check_boundaries(boundaries: Sequence[int], total_steps: int,
                     lr_decay_steps) -> None:
  """Step boundaries (from epochs: rounded) within the run, increasing."""
  if boundaries and not (_increasing(boundaries) and boundaries[0] >= 1 and
                         boundaries[-1] <= total_steps):
    name = "lr_decay_steps" if lr_decay_steps is not None else (
        "lr_decay_epochs")
    raise ConfigError(f"train_eval.{name} gives learning-rate boundaries at "
                      f"steps {boundaries}; they must be increasing and in "
                      f"[1, {total_steps}] (the run's steps).")


# ----------------------------------------------------------------------------
# Factories.
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StepPlan:
  """How many steps a run takes, and where its learning rate drops.

  Attributes:
    steps_per_epoch: full global batches per epoch.
    total_steps: classifier steps of the whole run.
    num_epochs: epochs, the last one maybe partial (`train_steps`).
    boundaries: 0-based step indices from which the rate is ×factor again.
  """
  steps_per_epoch: int
  total_steps: int
  num_epochs: int
  boundaries: List[int]


def plan_steps(splits, *, dataset: str, epochs: int, train_steps,
               batch_size: int, lr_decay_epochs: Sequence[float],
               lr_decay_steps) -> StepPlan:
  """The run's `StepPlan` for `splits`; raises `ConfigError` if the batch
  does not fit the data or the boundaries do not fit the run."""
  steps_per_epoch = splits.steps_per_epoch(batch_size)
  if steps_per_epoch < 1:
    raise ConfigError(f"train_eval.batch_size must be <= the "
                      f"{splits.num_train} training examples of {dataset!r}, "
                      f"got {batch_size}.")
  total_steps = int(train_steps) if train_steps else int(epochs) * (
      steps_per_epoch)
  boundaries = (list(lr_decay_steps) if lr_decay_steps is not None else
                [round(e * steps_per_epoch) for e in lr_decay_epochs])
  check_boundaries(boundaries, total_steps, lr_decay_steps)
  return StepPlan(steps_per_epoch, total_steps,
                  math.ceil(total_steps / steps_per_epoch), boundaries)


_GIN_CALL_LINE = re.compile(r"^\s*In call to configurable ")


def name_the_bindings(family: str, message: str, qualify: bool = True) -> str:
  """`message` of a loader or builder error, in the user's terms: the gin
  bindings to change.

  Argument names the message mentions as settings (bound by the user, or
  followed by "=" or "must") become bindings (`noise_rate` ->
  `digits.noise_rate`); a message that names none (a Keras error inside a
  builder) gets the family's bound values appended. gin's "In call to
  configurable" lines are dropped; the message's other lines (a loader's
  instructions) are kept.

  Args:
    family: the gin name of the loader or builder, e.g. "digits", "mlp".
    message: the error's text.
    qualify: rename argument names in `message` (False for builders, whose
      errors are mostly Keras' about its layers' arguments: `filters=0` is
      a layer's, not the binding `small_cnn.filters = (0,)`).
  """
  lines = [l for l in str(message).splitlines()
           if not _GIN_CALL_LINE.match(l)]
  text = "\n".join(lines).strip()
  try:
    params = inspect.signature(gin.get_configurable(family)).parameters
    bound = gin.get_bindings(family)
  except (ValueError, TypeError):  # Not a gin configurable.
    return text
  named = False
  for name in params:
    plain = re.compile(rf"(?<![\w.`']){re.escape(name)}\b")
    as_setting = re.search(rf"(?<![\w.`']){re.escape(name)}(=|\s+must\b)",
                           text)
    if f"{family}.{name}" in text:
      named = True
    elif qualify and plain.search(text) and (name in bound or as_setting):
      text = plain.sub(f"{family}.{name}", text)
      named = True
  if not named:
    values = ", ".join(f"{family}.{k} = {v!r}" for k, v in bound.items())
    text += (f" (change one of your {family} bindings: {values})" if values
             else f" (see the {family}.* bindings)")
  return text


def load_data(dataset: str, seed: int):
  """`mwn_tf.data.get(dataset, seed=seed)`; a loader error is a ConfigError
  naming the `<dataset>.*` binding to change."""
  try:
    return data_lib.get(dataset, seed=int(seed))
  except (ValueError, FileNotFoundError, TypeError) as e:
    raise ConfigError(f"dataset {dataset!r}: "
                      f"{name_the_bindings(dataset, e)}") from e


def make_optimizer(kind: str, learning_rate, momentum: float = 0.0,
                   nesterov: bool = False) -> keras.optimizers.Optimizer:
  """SGD (with `momentum`, `nesterov`) or Adam with PyTorch's epsilon."""
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


def build_model(splits, *, model: str, method: str,
                weight_net_hidden_units: Sequence[int], normalize_weights: str,
                weight_decay: float, meta_weight_decay: float):
  """The classifier `model` for `splits`, wrapped in a `MetaWeightModel`.

  Call inside the strategy's scope. Other `MetaWeightModel` settings
  (virtual_step, sync_batchnorm) come from its own gin bindings.
  """
  try:
    classifier = models_lib.get(model, splits.num_classes, splits.image_shape)
  except (ValueError, FileNotFoundError, TypeError, KeyError) as e:
    # Keras' own errors name its layer arguments, not the builder's binding.
    raise ConfigError(f"model {model!r}: "
                      f"{name_the_bindings(model, e, qualify=False)}") from e
  weight_net = WeightNet(hidden_units=tuple(weight_net_hidden_units),
                         dtype=classifier.dtype_policy)
  return MetaWeightModel(classifier, weight_net, method=method,
                         normalize_weights=normalize_weights,
                         weight_decay=weight_decay,
                         meta_weight_decay=meta_weight_decay)
