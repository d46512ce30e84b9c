"""Name -> loader registry behind `mwn_tf.data.get`.

Every loader is registered as a gin configurable named after the dataset in
module `mwn_tf.data`, so a gin file binds its settings as e.g.
`cifar10.noise_rate = 0.4` (or `mwn_tf.data.cifar10.noise_rate`), and picks
the dataset with `mwn_tf.data.get.name = 'cifar10'`.
"""

from typing import Callable

import gin

_LOADERS: dict[str, Callable] = {}


def register(name: str) -> Callable[[Callable], Callable]:
  """Decorator: registers `fn(**settings) -> DataSplits` under `name`."""

  def decorator(fn: Callable) -> Callable:
    if name in _LOADERS:
      raise ValueError(f"Dataset {name!r} is already registered.")
    configurable = gin.configurable(name, module="mwn_tf.data")(fn)
    _LOADERS[name] = configurable
    return configurable

  return decorator


def names() -> list[str]:
  """Sorted names of the registered datasets."""
  return sorted(_LOADERS)


@gin.configurable("get", module="mwn_tf.data")
def get(name: str, **kwargs):
  """Builds the `DataSplits` of dataset `name`.

  Args:
    name: a registered dataset, one of `names()`.
    **kwargs: loader settings; they override gin bindings of the loader
      (e.g. `get("cifar10", noise_type="uniform", noise_rate=0.4)`).

  Returns:
    mwn_tf.data.DataSplits.

  Raises:
    ValueError: unknown name.
  """
  if name not in _LOADERS:
    raise ValueError(f"Unknown dataset {name!r}; known datasets: "
                     f"{', '.join(names())}.")
  return _LOADERS[name](**kwargs)
