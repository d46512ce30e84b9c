"""Name -> builder registry for the classifiers of the meta-learning step.

Every builder has the signature `builder(num_classes, input_shape, **kwargs)`
and returns a plain Keras 3 model mapping images `[batch, *input_shape]` to
logits `[batch, num_classes]`.
"""

from typing import Callable, Dict, List, Optional, Sequence

import keras

Builder = Callable[..., keras.Model]

_REGISTRY: Dict[str, Builder] = {}
# name -> the gin configurable whose bindings set its builder's arguments.
_FAMILIES: Dict[str, str] = {}


def register(name: str,
             bindings: Optional[str] = None) -> Callable[[Builder], Builder]:
  """Decorator that registers a model builder under `name`.

  Args:
    name: the registry key, as used in `get(name, ...)` and in gin files.
    bindings: the gin name its settings are bound on (`wrn.depth` for
      "wide_resnet"); None: `name` itself.

  Returns:
    A decorator returning the builder unchanged.

  Raises:
    ValueError: if `name` is already taken by a different builder.
  """

  def decorator(builder: Builder) -> Builder:
    existing = _REGISTRY.get(name)
    # Compare by qualified name, not identity, so that re-importing a module
    # does not trip over its own earlier registration.
    if existing is not None and (
        (existing.__module__, existing.__qualname__)
        != (builder.__module__, builder.__qualname__)):
      raise ValueError(
          f"Model name {name!r} is already registered to {existing!r}.")
    _REGISTRY[name] = builder
    _FAMILIES[name] = bindings or name
    return builder

  return decorator


def names() -> List[str]:
  """Returns the registered model names, sorted."""
  return sorted(_REGISTRY)


def binding_family(name: str) -> str:
  """The gin name whose bindings set model `name`'s builder (`name` itself
  unless registered with `bindings`, e.g. "wrn" for "wide_resnet");
  `name` if it is not registered."""
  return _FAMILIES.get(name, name)


def get(name: str, num_classes: int, input_shape: Sequence[int],
        **kwargs) -> keras.Model:
  """Builds the registered model `name`.

  Args:
    name: a registered name, see `names()`.
    num_classes: number of output logits K.
    input_shape: `(height, width, channels)` of one example (channels_last).
    **kwargs: forwarded to the builder; explicit arguments win over gin
      bindings.

  Returns:
    A Keras model mapping `[batch, *input_shape]` to `[batch, num_classes]`
    logits.

  Raises:
    ValueError: if `name` is not registered; the message lists known names.
  """
  try:
    builder = _REGISTRY[name]
  except KeyError:
    raise ValueError(f"Unknown model {name!r}. Known models: "
                     f"{', '.join(names())}.") from None
  return builder(num_classes=num_classes, input_shape=tuple(input_shape),
                 **kwargs)
