"""mwn_tf: Meta-Weight-Net (Shu et al., NeurIPS 2019) in TensorFlow 2 / Keras 3.

Public API:
  MetaWeightModel: a keras.Model whose train_step is the three-stage MW-Net step.
  WeightNet: the weighting MLP V (loss -> weight in (0, 1)).
  ClassAwareWeightNet: CMW-Net's class-aware V ((loss, label) -> weight).
  data.get(name, ...): datasets with label noise, long tails and clean meta sets.
  models.get(name, ...): the paper's classifiers.

The names are imported on first use (module `__getattr__`), so that
`import mwn_tf` and the entry points' `--help` do not import TensorFlow, and
an entry point can set TensorFlow's logging environment before it does.
"""

import importlib

# Public name -> (module, attribute in it; None: the module itself).
_LAZY = {
    "MetaWeightModel": ("mwn_tf.meta_model", "MetaWeightModel"),
    "WeightNet": ("mwn_tf.weight_net", "WeightNet"),
    "ClassAwareWeightNet": ("mwn_tf.weight_net", "ClassAwareWeightNet"),
    "data": ("mwn_tf.data", None),
    "models": ("mwn_tf.models", None),
}

__all__ = ["MetaWeightModel", "WeightNet", "ClassAwareWeightNet", "data",
           "models"]


def __getattr__(name: str):
  if name not in _LAZY:
    raise AttributeError(f"module 'mwn_tf' has no attribute {name!r}")
  module_name, attribute = _LAZY[name]
  module = importlib.import_module(module_name)
  value = module if attribute is None else getattr(module, attribute)
  globals()[name] = value  # Later lookups skip this function.
  return value


def __dir__():
  return sorted(set(globals()) | set(__all__))
