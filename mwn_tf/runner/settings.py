"""The settings of a run: their check and the objects they make.

Every keyword argument of `runner.train_eval.train_eval` is declared once in
`runner.declarations` and checked here (`check_settings`: each value, the
values against each other, gin bindings of the constructor arguments the
settings set) before anything is loaded or written, so a bad binding costs a
second and leaves model_dir as it was, not a crash minutes into a run. The
factories (`lr_schedule`, `make_optimizer`, `build_model`, `plan_steps`) turn
checked settings into the schedule, the optimisers and the model, and
`default_model_dir` maps a command to its folder.
"""

import dataclasses
import hashlib
import inspect
import math
import os
import re
from typing import List, Sequence

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

from mwn_tf import class_clusters as clusters_lib
from mwn_tf import data as data_lib
from mwn_tf import models as models_lib
from mwn_tf.errors import ConfigError  # noqa: F401  (also `settings.ConfigError`)
from mwn_tf.meta_model import MetaWeightModel
from mwn_tf.runner import declarations
from mwn_tf.weight_net import ClassAwareWeightNet
from mwn_tf.weight_net import WeightNet


class ScheduleBeyondRun(ConfigError):
  """Learning-rate decays beyond the run's end (`unit`: "epochs" for
  lr_decay_epochs vs epochs, "steps" for lr_decay_steps vs train_steps), so
  that an entry point can offer the decays scaled to `length`."""

  def __init__(self, message: str, unit: str, decays, length: int):
    super().__init__(message)
    self.unit, self.decays, self.length = unit, tuple(decays), length


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


def check_settings(settings: dict) -> None:
  """Raises `ConfigError` on the first invalid `train_eval` argument.

  Checks types and ranges of each argument present in `settings` (any subset
  of `train_eval`'s arguments; each as declared in `runner.declarations`,
  `dataset` and `model` against their registries) and the ones that depend
  on each other
  without data (learning-rate boundaries against `epochs` / `train_steps`).
  Boundaries that depend on the number of steps per epoch are checked by
  `train_eval` once the data is loaded.

  Args:
    settings: argument name -> value.

  Raises:
    ConfigError: one line naming the binding, the accepted values and the
      value given.
  """
  for name, value in settings.items():
    if name == "model_dir":
      if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ConfigError(f"train_eval's model_dir must be a non-empty path, "
                          f"got {value!r}.")
    elif name == "strategy":
      if value is not None and not isinstance(value, tf.distribute.Strategy):
        raise ConfigError(f"train_eval's strategy must be None or a "
                          f"tf.distribute.Strategy, got {value!r}.")
    elif name == "reexport":
      if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"train_eval.reexport must be True or False, got "
                          f"{value!r}.")
  declarations.check_values(settings, {"datasets": data_lib.names(),
                                       "models": models_lib.names()})
  get = settings.get
  # Boundaries are only used when given in the unit that is not overridden.
  if get("lr_decay_steps") is None and get("train_steps") is None:
    epochs, decay = get("epochs"), get("lr_decay_epochs")
    if epochs is not None and decay and decay[-1] > epochs:
      raise ScheduleBeyondRun(f"train_eval.lr_decay_epochs must be in (0, "
                              f"epochs={epochs}], got {decay!r}.", "epochs",
                              decay, epochs)
  steps, decay = get("train_steps"), get("lr_decay_steps")
  if steps is not None and decay and decay[-1] > steps:
    raise ScheduleBeyondRun(f"train_eval.lr_decay_steps must be in [1, "
                            f"train_steps={steps}], got {decay!r}.", "steps",
                            decay, steps)
  if get("weight_net") == "mlp" and get("weight_net_cluster_map") is not None:
    raise ConfigError("train_eval.weight_net_cluster_map is read only with "
                      "train_eval.weight_net = 'class_aware'; bind that too, "
                      "or leave the map unbound.")
  # Global batches are split evenly over the replicas.
  strategy = get("strategy")
  replicas = strategy.num_replicas_in_sync if strategy is not None else 1
  for name in ("batch_size", "meta_batch_size", "eval_batch_size"):
    if name in settings and settings[name] % replicas:
      raise ConfigError(f"train_eval.{name} must be a multiple of the "
                        f"{replicas} replicas in sync, got {settings[name]}.")


def _bindings(family: str) -> dict:
  """gin's bindings of configurable `family` ({} if it is not one)."""
  try:
    return gin.get_bindings(family)
  except ValueError:
    return {}


def with_constructor_bindings(settings: dict) -> dict:
  """`settings` with the gin bindings of the constructor arguments they set.

  A setting declared with `passes_to` is passed to that constructor
  explicitly, which would silently override a binding of the argument itself
  (`WeightNet.hidden_units = (50,)` under `train_eval.weight_net_hidden_units`).
  Such a binding is refused, naming the setting to bind instead. A setting
  declared `old_spelling` (the fast modes, once bound as
  `MetaWeightModel.meta_interval`) reads that binding as its value, checked
  the same, unless `train_eval.<name>` is bound to another value too.

  Raises:
    ConfigError: one line naming the binding to change.
  """
  out = dict(settings)
  explicit = _bindings("train_eval")
  for s in declarations.SETTINGS:
    family, _, argument = s.passes_to.partition(".")
    if not family or argument not in _bindings(family):
      continue
    value, new = _bindings(family)[argument], f"train_eval.{s.name}"
    if not s.old_spelling:
      raise ConfigError(f"{s.passes_to} is set by {new}; bind {new} = "
                        f"{value!r} instead.")
    declarations.check_value(s, value, binding=f"{s.passes_to} (now "
                             f"{new})")
    current = out.get(s.name, s.default)
    if (s.name in explicit or current != s.default) and current != value:
      raise ConfigError(f"{s.passes_to} = {value!r} and {new} = "
                        f"{current!r} disagree; bind {new} only.")
    out[s.name] = value
  return out


def binding_of(name: str) -> str:
  """How the user bound setting `name`: `train_eval.<name>`, or its old
  spelling (`MetaWeightModel.<argument>`) if only that one is bound."""
  s = declarations.by_name()[name]
  family, _, argument = s.passes_to.partition(".")
  if (s.old_spelling and argument in _bindings(family) and
      name not in _bindings("train_eval")):
    return s.passes_to
  return f"train_eval.{name}"


def check_boundaries(boundaries: Sequence[int], total_steps: int,
                     lr_decay_steps) -> None:
  """Step boundaries (from epochs: rounded) within the run, increasing."""
  if boundaries and not (declarations.increasing(boundaries) and boundaries[0] >= 1 and
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


def check_meta_batch(splits, *, dataset: str, meta_batch_size: int) -> None:
  """Refuses a meta batch larger than the meta set: it would hold the same
  clean images several times, which no setting of the paper does."""
  if meta_batch_size > splits.num_meta:
    raise ConfigError(
        f"train_eval.meta_batch_size = {meta_batch_size} is larger than the "
        f"{splits.num_meta} images of {dataset!r}'s meta set "
        f"({dataset}.num_meta); bind train_eval.meta_batch_size <= "
        f"{splits.num_meta} or a larger {dataset}.num_meta, so that no meta "
        f"batch repeats an image.")


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


def class_clusters(splits, settings: dict):
  """The class clusters of a class-aware V (None for `weight_net="mlp"`):
  `train_eval.weight_net_cluster_map`, else k-means on the noisy training
  counts (`class_clusters.cluster_map_from_counts`, seeded by `seed`).

  Returns:
    None or a dict for results.json: `cluster_map` `[K]`, `source` (the
    binding or "k-means"), `class_counts` `[K]` (noisy labels) and
    `clusters` (per cluster: its classes and training samples).

  Raises:
    ConfigError: the map does not have one entry per class.
  """
  if settings["weight_net"] != "class_aware":
    return None
  counts = splits.train_label_counts()
  given = settings["weight_net_cluster_map"]
  if given is not None:
    try:
      cluster_map = clusters_lib.check_cluster_map(given, splits.num_classes)
    except ValueError as e:
      raise ConfigError(f"train_eval.weight_net_cluster_map {e} "
                        f"({splits.name!r}).") from e
    source = "train_eval.weight_net_cluster_map"
  else:
    cluster_map = clusters_lib.cluster_map_from_counts(
        counts, settings["weight_net_clusters"], settings["seed"])
    source = "k-means"
  clusters = [{"classes": n, "samples": m} for n, m in
              clusters_lib.cluster_counts(counts, cluster_map)]
  logging.info("Class clusters of V (%s): %s", source, ", ".join(
      f"{c}: {d['classes']} classes, {d['samples']} samples"
      for c, d in enumerate(clusters)))
  return {"cluster_map": list(cluster_map), "source": source,
          "class_counts": [int(c) for c in counts], "clusters": clusters}


def build_model(splits, settings: dict, clusters=None):
  """The classifier `settings["model"]` for `splits`, wrapped in a
  `MetaWeightModel` with V; both take the settings declared `passes_to`
  them (`runner.declarations`). V is a `ClassAwareWeightNet` on `clusters`
  (`class_clusters(splits, settings)`, computed if not given) when
  `settings["weight_net"]` is "class_aware".

  Call inside the strategy's scope. `MetaWeightModel`'s other arguments
  (virtual_step, sync_batchnorm) come from its own gin bindings.

  Raises:
    ConfigError: the builder or `MetaWeightModel` refused a setting; the
      line names the binding to change.
  """
  model = settings["model"]
  family = models_lib.binding_family(model)
  try:
    classifier = models_lib.get(model, splits.num_classes, splits.image_shape)
  except (ValueError, FileNotFoundError, TypeError, KeyError) as e:
    # Keras' own errors name its layer arguments, not the builder's binding.
    raise ConfigError(f"model {model!r}: "
                      f"{name_the_bindings(family, e, qualify=False)}") from e
  clusters = clusters or class_clusters(splits, settings)
  arguments = declarations.constructor_arguments("WeightNet", settings)
  if clusters is None:
    weight_net = WeightNet(**arguments, dtype=classifier.dtype_policy)
  else:
    weight_net = ClassAwareWeightNet(clusters["cluster_map"], **arguments,
                                     dtype=classifier.dtype_policy)
  arguments = declarations.constructor_arguments("MetaWeightModel", settings)
  try:
    return MetaWeightModel(classifier, weight_net, **arguments)
  except ValueError as e:
    # Its messages start with the argument: "virtual_layers must be ...".
    # gin appends "In call to configurable" lines: the first line is it.
    line = str(e).splitlines()[0] if str(e) else ""
    for argument, setting in declarations.passed_to(
        "MetaWeightModel").items():
      if line.startswith(f"{argument} "):
        raise ConfigError(f"{binding_of(setting.name)}"
                          f"{line[len(argument):]}") from e
    raise
