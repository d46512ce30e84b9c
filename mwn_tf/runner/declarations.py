"""Every `train_eval` setting, declared once: name, type, default, check, help.

The rest is derived from `SETTINGS`:

  the check        `check_values` (and `runner.settings.check_settings`, which
                   adds the checks between settings and against the data),
  `--help`         `runner.usage` lists them in this order with their help,
  TensorBoard      `hparams_of`: the settings with `hparam=True`,
  results.json     `resolved`: every setting's value, as JSON (`settings`),
  MetaWeightModel  `constructor_arguments`: the settings with `passes_to`.

`train_eval`'s signature stays a plain gin-configurable function whose keyword
defaults are the paper's values (gin reads it); tests/runner/
test_declarations.py holds it equal to `SETTINGS` (names, order, annotations,
defaults), so a setting is added here and in the signature, nowhere else.

This module imports no TensorFlow (NumPy only, and nothing of the data, model or
meta-model stack): `--help` reads it. The lists a setting takes from a
registry (`dataset`, `model`) are passed in by the caller (`known`), since
the registries import TensorFlow.

A `MetaWeightModel` constructor option becomes a setting with `passes_to`
("MetaWeightModel.<argument>"): one declaration, and `runner.settings`
passes it on, refuses a gin binding of the argument itself (it would be
overridden) or, with `old_spelling=True`, reads that binding as the setting.
"""

import dataclasses
import math
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import numpy as np

from mwn_tf.choices import COLLAPSE_ACTIONS
from mwn_tf.choices import FAST_MODES
from mwn_tf.choices import HYPERGRADIENTS
from mwn_tf.choices import META_OPTIMIZERS
from mwn_tf.choices import METHODS
from mwn_tf.choices import NORMALIZATIONS
from mwn_tf.choices import WEIGHT_NETS
from mwn_tf.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Setting:
  """One keyword argument of `train_eval`.

  Attributes:
    name: the argument, bound as `train_eval.<name>`.
    type: its annotation as written in the signature ("" if none).
    default: the paper's value (the signature's default).
    accepts: value -> whether it is valid (None: `choices_from` decides).
    expected: what the refusal says is accepted, e.g. "an integer >= 1".
    help: one line or more for `--help`.
    group: the heading `--help` lists it under.
    hparam: whether TensorBoard's hparams (and results.json's `hparams`)
      show it.
    choices_from: "datasets" or "models": valid values are the registry's
      names, given to `check_values` in `known`.
    passes_to: "MetaWeightModel.<argument>" (or "WeightNet.<argument>"):
      the constructor argument this setting is passed as.
    old_spelling: a gin binding of `passes_to` itself is read as this
      setting (checked the same); else such a binding is refused.
  """
  name: str
  type: str
  default: Any
  accepts: Optional[Callable[[Any], bool]]
  expected: str
  help: str
  group: str
  hparam: bool = False
  choices_from: str = ""
  passes_to: str = ""
  old_spelling: bool = False


# ----------------------------------------------------------------------------
# Predicates.
# ----------------------------------------------------------------------------
def _is_int(x) -> bool:
  # bool is an int in Python, but `epochs = True` is a typo, not a count.
  return (isinstance(x, (int, np.integer)) and
          not isinstance(x, (bool, np.bool_)))


def _is_number(x) -> bool:
  return _is_int(x) or isinstance(x, (float, np.floating))


def _is_list(x) -> bool:
  return isinstance(x, (list, tuple))


def increasing(values) -> bool:
  """Whether `values` is strictly increasing."""
  return all(a < b for a, b in zip(values, values[1:]))


def _is_bool(x) -> bool:
  return isinstance(x, (bool, np.bool_))


def _int_at_least(low: int, note: str = ""):
  return dict(accepts=lambda v: _is_int(v) and v >= low,
              expected=f"an integer >= {low}{note}")


def _one_of(choices):
  # `in` alone would accept True for 1 and 1.0 for 1.
  return dict(accepts=lambda v: any(type(v) is type(c) and v == c
                                    for c in choices),
              expected="one of " + ", ".join(repr(c) for c in choices))


def _epoch_list(v) -> bool:
  return _is_list(v) and increasing(v) and all(
      _is_number(e) and math.isfinite(e) and e > 0 for e in v)


def _step_list(v) -> bool:
  return v is None or (_is_list(v) and increasing(v) and all(
      _is_int(s) and s >= 1 for s in v))


def _widths(v) -> bool:
  return _is_list(v) and len(v) > 0 and all(_is_int(u) and u >= 1 for u in v)


def _cluster_map(v) -> bool:
  # Its length is checked against the dataset's classes once it is loaded.
  return v is None or (_is_list(v) and len(v) > 0 and all(
      _is_int(c) and c >= 0 for c in v) and set(v) == set(range(max(v) + 1)))


_BOOL = dict(accepts=_is_bool, expected="True or False")
_POSITIVE = dict(accepts=lambda v: _is_number(v) and math.isfinite(v) and v > 0,
                 expected="a finite number > 0")
_FRACTION = dict(accepts=lambda v: _is_number(v) and 0 <= v < 1,
                 expected="a number in [0, 1)")
_DECAY = dict(accepts=lambda v: _is_number(v) and math.isfinite(v) and v >= 0,
              expected="a finite number >= 0")

# ----------------------------------------------------------------------------
# The declarations, in the signature's order.
# ----------------------------------------------------------------------------
_RUN = "the experiment"
_SGD = "classifier optimisation and schedule (MW-Net.py)"
_V = "the weighting net V and its optimiser (MW-Net.py)"
_FAST = "fast modes of the meta step (README \"Speed\"; the defaults: exact)"
_ENGINEERING = "engineering"

SETTINGS = (
    Setting("method", "str", "mwn", **_one_of(METHODS), group=_RUN,
            hparam=True, passes_to="MetaWeightModel.method",
            help="\"mwn\" (Algorithm 1) or \"baseline\" (plain training on "
            "the same data, model and schedule: every weight 1, no meta "
            "step)."),
    Setting("dataset", "str", "cifar10", None, "", group=_RUN, hparam=True,
            choices_from="datasets",
            help="a `mwn_tf.data` name; its settings are bound on the "
            "loader, e.g. `cifar10.noise_rate = 0.4`."),
    Setting("model", "str", "resnet32", None, "", group=_RUN, hparam=True,
            choices_from="models",
            help="a `mwn_tf.models` name; its settings are bound on the "
            "builder, e.g. `resnet50.weights_path`."),
    Setting("seed", "int", 0, lambda v: _is_int(v) and 0 <= v < 2**32,
            "an integer in [0, 2**32 - 1]", group=_RUN, hparam=True,
            help="THE seed: meta split, noise, long tail (it overrides the "
            "loader's own `seed` binding), initialisation, data order and "
            "augmentation."),
    Setting("epochs", "int", 120, **_int_at_least(1), group=_SGD,
            help="epochs of training (ignored if `train_steps` is set)."),
    Setting("train_steps", "Optional[int]", None,
            lambda v: v is None or (_is_int(v) and v >= 1),
            "None or an integer >= 1", group=_SGD,
            help="total classifier steps (WRN script: 20000); the last epoch "
            "may be partial."),
    Setting("batch_size", "int", 100, **_int_at_least(1), group=_SGD,
            hparam=True, help="global train batch size."),
    Setting("meta_batch_size", "int", 100, **_int_at_least(1), group=_SGD,
            help="global meta batch size."),
    Setting("learning_rate", "float", 0.1, **_POSITIVE, group=_SGD,
            hparam=True, help="classifier SGD learning rate."),
    Setting("momentum", "float", 0.9, **_FRACTION, group=_SGD,
            help="classifier SGD momentum."),
    Setting("nesterov", "bool", False, **_BOOL, group=_SGD,
            help="classifier SGD with Nesterov momentum."),
    Setting("weight_decay", "float", 5e-4, **_DECAY, group=_SGD,
            passes_to="MetaWeightModel.weight_decay",
            help="classifier L2, PyTorch-style (added to the gradient)."),
    Setting("lr_decay_epochs", "Sequence[float]", (80, 100), _epoch_list,
            "a list of increasing epochs > 0, e.g. (80, 100) or ()",
            group=_SGD,
            help="increasing epochs in (0, epochs] (0-based, may be "
            "fractional) from which the learning rate is multiplied by "
            "`lr_decay_factor` once more."),
    Setting("lr_decay_steps", "Optional[Sequence[int]]", None, _step_list,
            "None or a list of increasing steps >= 1, e.g. (18000, 19000)",
            group=_SGD,
            help="the same in steps, in [1, total steps]; overrides "
            "`lr_decay_epochs`."),
    Setting("lr_decay_factor", "float", 0.1,
            lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]",
            group=_SGD, help="the multiplier of the learning rate at each "
            "boundary."),
    Setting("weight_net_hidden_units", "Sequence[int]", (100,), _widths,
            "a non-empty list of integers >= 1, e.g. (100,)", group=_V,
            hparam=True, passes_to="WeightNet.hidden_units",
            help="hidden widths of V (the paper: (100,))."),
    Setting("weight_net", "str", "mlp", **_one_of(WEIGHT_NETS), group=_V,
            hparam=True,
            help="\"mlp\" (the paper's V: loss -> weight) or "
            "\"class_aware\" (CMW-Net's: a shared hidden layer and one "
            "output head per class cluster, picked by the label; "
            "docs/class_aware.md)."),
    Setting("weight_net_clusters", "int", 3, **_int_at_least(1), group=_V,
            hparam=True,
            help="class_aware: k-means clusters of the classes by their "
            "noisy training counts (CMW-Net: 3; fewer if fewer distinct "
            "counts)."),
    Setting("weight_net_cluster_map", "Optional[Sequence[int]]", None,
            _cluster_map, "None (k-means) or a tuple of cluster ids, one per "
            "class, using every id from 0 to its largest, e.g. (0, 0, 1)",
            group=_V,
            help="class_aware: the cluster of each class id, instead of "
            "k-means (then weight_net_clusters is not read)."),
    Setting("normalize_weights", "str", "sum", **_one_of(NORMALIZATIONS),
            group=_V, hparam=True,
            passes_to="MetaWeightModel.normalize_weights",
            help="\"sum\" (w / Σw) or \"none\" (Σ w·L / n, MW-Net.py)."),
    Setting("meta_optimizer", "str", "adam", **_one_of(META_OPTIMIZERS),
            group=_V, hparam=True, help="V's optimiser."),
    Setting("meta_learning_rate", "float", 1e-3, **_POSITIVE, group=_V,
            hparam=True, help="V's learning rate."),
    Setting("meta_momentum", "float", 0.9, **_FRACTION, group=_V,
            help="V's momentum (meta_optimizer \"sgd\")."),
    Setting("meta_nesterov", "bool", False, **_BOOL, group=_V,
            help="V's Nesterov momentum (meta_optimizer \"sgd\")."),
    Setting("meta_weight_decay", "float", 1e-4, **_DECAY, group=_V,
            passes_to="MetaWeightModel.meta_weight_decay",
            help="V's L2, PyTorch-style."),
    Setting("meta_interval", "int", 1,
            **_int_at_least(1, " (1: the exact step)"), group=_FAST,
            hparam=True, passes_to="MetaWeightModel.meta_interval",
            old_spelling=True,
            help="k: the virtual step and V's update run every k classifier "
            "steps; the steps between take the actual update with the "
            "current V (1: the exact algorithm)."),
    Setting("virtual_layers", "Optional[int]", None,
            lambda v: v is None or (_is_int(v) and v >= 1),
            "None (every layer: the exact step) or an integer >= 1",
            group=_FAST, hparam=True,
            passes_to="MetaWeightModel.virtual_layers", old_spelling=True,
            help="None (exact) or k: the virtual step moves only the last k "
            "layers that own variables (1: the logits layer), at most the "
            "model's number of such layers."),
    Setting("hypergradient", "str", "second_order",
            **_one_of(HYPERGRADIENTS), group=_FAST, hparam=True,
            passes_to="MetaWeightModel.hypergradient",
            help="V's gradient through the virtual step: \"second_order\" "
            "(exact) or \"finite_difference\" (two more forward passes of "
            "the train batch instead of the second-order pass; exact up to "
            "O(eps^2))."),
    Setting("fd_epsilon", "float", 0.01, **_POSITIVE, group=_FAST,
            passes_to="MetaWeightModel.fd_epsilon",
            help="finite_difference: the step along the meta gradient's "
            "direction (DARTS: 0.01)."),
    Setting("exact_warmup_steps", "int", 0, **_int_at_least(0), group=_FAST,
            hparam=True, passes_to="MetaWeightModel.exact_warmup_steps",
            help="n: classifier steps [0, n) take the exact meta update; the "
            "fast options above apply from step n on."),
    Setting("fast_mode", "str", "off", **_one_of(FAST_MODES), group=_FAST,
            hparam=True, passes_to="MetaWeightModel.fast_mode",
            help="\"off\" (the fast options as set; by default the exact "
            "step) or \"recommended\": the fast configuration docs/speed.md "
            "recommends, one switch (leave the options above unset)."),
    Setting("jit_compile", "", "auto", **_one_of((True, False, "auto")),
            group=_ENGINEERING,
            help="XLA for the train step (\"auto\": Keras decides, on "
            "GPU/TPU)."),
    Setting("steps_per_execution", "int", 1, **_int_at_least(1),
            group=_ENGINEERING, help="train steps per `tf.function` call."),
    Setting("deterministic", "bool", False, **_BOOL, group=_ENGINEERING,
            help="`tf.config.experimental.enable_op_determinism()`."),
    Setting("eval_batch_size", "int", 500, **_int_at_least(1),
            group=_ENGINEERING,
            help="batch for the test split and the per-sample pass."),
    Setting("eval_every_n_epochs", "int", 1,
            **_int_at_least(1, " (the last epoch is always evaluated)"),
            group=_ENGINEERING,
            help="test-set evaluation interval in epochs; the last epoch is "
            "always evaluated. Epochs in between record no test accuracy."),
    Setting("checkpoint_every_n_steps", "int", 1000,
            **_int_at_least(0, " (0: at epoch ends only)"),
            group=_ENGINEERING,
            help="step checkpoint interval (0: epoch ends only); a kill "
            "loses at most this many steps."),
    Setting("max_checkpoints_to_keep", "int", 3, **_int_at_least(1),
            group=_ENGINEERING, help="older checkpoints are deleted."),
    Setting("summary_every_n_steps", "int", 100,
            **_int_at_least(0, " (0: at epoch ends only)"),
            group=_ENGINEERING,
            help="TensorBoard step scalars interval (0: epochs)."),
    Setting("sample_every_n_epochs", "int", 10,
            **_int_at_least(0, " (0: after the last epoch only)"),
            group=_ENGINEERING,
            help="per-sample weight pass interval (0: last only)."),
    Setting("curve_max_loss", "float", 10.0, **_POSITIVE, group=_ENGINEERING,
            help="the weighting curve covers losses in [0, this]."),
    Setting("export", "bool", True, **_BOOL, group=_ENGINEERING,
            help="write the SavedModels at the end."),
    Setting("verbose", "", "auto", **_one_of((0, 1, 2, "auto")),
            group=_ENGINEERING,
            help="the console: 0 (nothing but absl INFO lines), 1 (one line "
            "per epoch under a live progress bar), 2 (one line per epoch, "
            "and a progress line every `progress_every_n_seconds` inside an "
            "epoch), \"auto\" (1 on a terminal, else 2)."),
    Setting("progress_every_n_seconds", "float", 60.0,
            lambda v: _is_number(v) and math.isfinite(v) and v >= 0,
            "a finite number >= 0 (0: no progress lines)",
            group=_ENGINEERING,
            help="interval of the progress lines of `verbose=2` (0: none)."),
    Setting("collective_timeout_s", "Optional[float]", 600.0,
            lambda v: v is None or (_is_number(v) and math.isfinite(v) and
                                    v >= 0),
            "a finite number >= 0 or None (0 or None: wait forever)",
            group=_ENGINEERING,
            help="`--strategy=multi_worker`: a collective (an all-reduce of "
            "a step) that waits longer than this many seconds for the "
            "other workers ends the run with exit status 6 (a worker lost "
            "or hung); 0 or None: wait forever. Above the longest gap "
            "between two workers' steps, a data load included."),
    # The guard against collapsed sample weights (runner/collapse.py).
    Setting("collapse_ess_threshold", "float", 0.35,
            lambda v: _is_number(v) and 0 <= v <= 1,
            "a number in [0, 1] (0: never warn)", group=_ENGINEERING,
            help="MW-Net: one warning line (and results.json's "
            "`weight_collapse`) when the mean effective sample size of the "
            "weights, (Σw)² / (n·Σw²) per batch, stays below this over "
            "`collapse_window_steps` steps (0: never)."),
    Setting("collapse_window_steps", "int", 50, **_int_at_least(1),
            group=_ENGINEERING, help="the window of that mean, in steps."),
    Setting("on_weight_collapse", "str", "warn",
            **_one_of(COLLAPSE_ACTIONS), group=_ENGINEERING,
            help="what the guard then does: \"warn\" (nothing more), "
            "\"stop\" (checkpoint, exit status 5) or \"reset_v\" "
            "(re-initialise V and its optimizer state, train on)."),
)

# `train_eval` arguments that are not gin settings (denylisted there).
NOT_SETTINGS = ("model_dir", "strategy", "reexport")


def by_name() -> Dict[str, Setting]:
  """{name: declaration}, in declaration order."""
  return {s.name: s for s in SETTINGS}


def refusal(setting: Setting, value, binding: str = "",
            expected: str = "") -> ConfigError:
  """The one-line error for a refused value of `setting` (bound as
  `binding`, default `train_eval.<name>`)."""
  binding = binding or f"train_eval.{setting.name}"
  return ConfigError(f"{binding} must be {expected or setting.expected}, "
                     f"got {value!r}.")


def check_value(setting: Setting, value, known: Mapping[str, Sequence] = None,
                binding: str = "") -> None:
  """Raises `refusal(...)` if `value` is not valid for `setting`.

  Args:
    setting: the declaration.
    value: the value to check.
    known: {"datasets": names, "models": names}, for `choices_from`
      settings (which are not checked without it).
    binding: the binding to name in the message (default
      `train_eval.<name>`).
  """
  if setting.choices_from:
    if known is None or setting.choices_from not in known:
      return
    choices = tuple(known[setting.choices_from])
    rule = _one_of(choices)
    if not rule["accepts"](value):
      raise refusal(setting, value, binding, rule["expected"])
  elif not setting.accepts(value):
    raise refusal(setting, value, binding)


def check_values(settings: Mapping[str, Any],
                 known: Mapping[str, Sequence] = None) -> None:
  """`check_value` of every declared setting present in `settings`."""
  declared = by_name()
  for name, value in settings.items():
    if name in declared:
      check_value(declared[name], value, known)


def _plain(value):
  """`value` as JSON: tuples as lists, NumPy scalars as Python ones."""
  if isinstance(value, (list, tuple)):
    return [_plain(x) for x in value]
  if isinstance(value, np.generic):
    return value.item()
  return value


def resolved(settings: Mapping[str, Any]) -> dict:
  """Every declared setting's value in `settings`, as JSON (results.json's
  `settings`: what the analysis reads instead of parsing gin text)."""
  return {s.name: _plain(settings[s.name]) for s in SETTINGS
          if s.name in settings}


def hparams_of(settings: Mapping[str, Any]) -> dict:
  """The `hparam=True` settings as TensorBoard hparams values (numbers,
  strings, booleans): lists joined with ",", None as "None"."""
  out = {}
  for s in SETTINGS:
    if not s.hparam or s.name not in settings:
      continue
    value = _plain(settings[s.name])
    if isinstance(value, list):
      value = ",".join(map(str, value))
    elif value is None:
      value = "None"
    out[s.name] = value
  return out


def passed_to(family: str) -> Dict[str, Setting]:
  """{constructor argument: setting} of the settings passed to `family`
  ("MetaWeightModel" or "WeightNet")."""
  out = {}
  for s in SETTINGS:
    owner, _, argument = s.passes_to.partition(".")
    if owner == family:
      out[argument] = s
  return out


def constructor_arguments(family: str, settings: Mapping[str, Any]) -> dict:
  """{argument: value} that `family`'s constructor takes from `settings`."""
  return {argument: settings[s.name]
          for argument, s in passed_to(family).items()}
