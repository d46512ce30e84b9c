"""The Meta-Weight-Net V(L; Θ): a tiny MLP from a sample's loss to its weight.

Shu et al., "Meta-Weight-Net: Learning an Explicit Mapping For Sample
Weighting", NeurIPS 2019, Sec. 2.2: V is an MLP with one hidden layer of 100
ReLU units and a sigmoid output, so every weight lies in (0, 1).

`ClassAwareWeightNet` is CMW-Net's class-aware V (Shu et al., TPAMI 2023):
the same hidden layer, shared, and one sigmoid output head per cluster of
classes, picked by the sample's label (docs/class_aware.md).

How a caller feeds V: `takes_labels` (False for `WeightNet`, True for
`ClassAwareWeightNet`) says whether V's input is `losses` `[b, 1]` or the
pair `(losses [b, 1], labels [b])`; `MetaWeightModel.weights_for` does this.

Both are Keras serializables ("mwn_tf>WeightNet",
"mwn_tf>ClassAwareWeightNet"): `save("v.keras")` and
`keras.models.load_model("v.keras")` round-trip them once `mwn_tf` is
imported.
"""

from typing import Sequence

import gin
import keras

from mwn_tf import class_clusters


def _torch_linear_kernel_init():
  # PyTorch's nn.Linear default (kaiming_uniform with a=sqrt(5)) is
  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the official V uses it, and the learned
  # curve's starting point (a near-flat ~0.5 weight) depends on it.
  return keras.initializers.VarianceScaling(
      scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def _torch_linear(units: int, fan_in: int, activation, name: str, dtype):
  """A Dense layer initialised as PyTorch's nn.Linear(fan_in, units)."""
  return keras.layers.Dense(
      units, activation=activation,
      kernel_initializer=_torch_linear_kernel_init(),
      bias_initializer=keras.initializers.RandomUniform(-fan_in**-0.5,
                                                        fan_in**-0.5),
      name=name, dtype=dtype)


def _hidden_layers(hidden_units, activation, dtype, owner: str):
  """The hidden Dense layers of V for `hidden_units` (checked)."""
  if not hidden_units or any(int(u) < 1 for u in hidden_units):
    raise ValueError(
        f"{owner}.hidden_units must be a non-empty list of positive "
        f"widths, got {hidden_units!r}; the paper's default is (100,).")
  units = tuple(int(u) for u in hidden_units)
  return units, [_torch_linear(u, fan_in, activation, f"hidden_{i}", dtype)
                 for i, (u, fan_in) in enumerate(zip(units, (1,) + units))]


def _build_stack(layers) -> None:
  # Idempotent: __init__ already built V, and Keras builds again when asked
  # (`build_from_config` on load, a user's `build()`). Building a built
  # Dense would make its variables a second time, which Keras refuses
  # ("You cannot add new elements of state ... already built").
  shape = (None, 1)
  for layer in layers:
    if not layer.built:
      layer.build(shape)
    shape = (None, layer.units)


@keras.saving.register_keras_serializable(package="mwn_tf")
class WeightNet(keras.Model):
  """Maps per-sample losses `[batch, 1]` to weights `[batch, 1]` in (0, 1).

  The default is the paper's Linear(1, 100)-ReLU-Linear(100, 1)-sigmoid.
  Deeper or wider variants (the paper's ablation, Fig. 7) are
  `hidden_units=(50, 50)`, `hidden_units=(10,)`, and so on.

  V is built when it is made (its input is always one loss), so its
  variables exist before any call: optimizers, checkpoints and exports can
  list them at once.

  Args:
    hidden_units: Width of each hidden layer, input to output.
    activation: Hidden activation.
    output_activation: Final activation; `sigmoid` keeps weights in (0, 1).
    name: Keras name.
    dtype: Keras dtype policy (e.g. "float64" in exactness tests).
    **kwargs: Other `keras.Model` arguments (`trainable`).
  """

  takes_labels = False  # V's input is the losses alone.

  def __init__(self,
               hidden_units: Sequence[int] = (100,),
               activation: str = "relu",
               output_activation: str = "sigmoid",
               name: str = "weight_net",
               dtype=None,
               **kwargs):
    super().__init__(name=name, dtype=dtype, **kwargs)
    self.hidden_units, self.hidden = _hidden_layers(hidden_units, activation,
                                                    dtype, "WeightNet")
    self.activation = activation
    self.output_activation = output_activation
    self.out = _torch_linear(1, self.hidden_units[-1], output_activation,
                             "output", dtype)
    self.build((None, 1))

  def build(self, input_shape=(None, 1)):
    del input_shape  # always one loss per sample
    _build_stack(self.hidden + [self.out])

  def call(self, losses, training=False):
    """Weights for losses.

    Args:
      losses: `[batch, 1]` per-sample losses (detached by the caller).
      training: Unused; V has no train-time behaviour.

    Returns:
      `[batch, 1]` weights.
    """
    x = losses
    for layer in self.hidden:
      x = layer(x)
    return self.out(x)

  def get_config(self):
    # Keras' base config carries name, trainable and the dtype policy (a
    # float64 V must not come back as float32).
    return {**super().get_config(), "hidden_units": list(self.hidden_units),
            "activation": self.activation,
            "output_activation": self.output_activation}


@keras.saving.register_keras_serializable(package="mwn_tf")
class ClassAwareWeightNet(keras.Model):
  """CMW-Net's class-aware V: `(losses [b, 1], labels [b])` -> `[b, 1]`.

  Shu et al., "CMW-Net: Learning a Class-Aware Sample Weighting Mapping for
  Robust Deep Learning", TPAMI 2023 (code: xjtushujun/CMW-Net). The loss
  goes through a hidden trunk shared by all classes (the paper's
  Linear(1, 100)-ReLU, initialised as `WeightNet`), then through ONE of C
  output heads Linear(100, 1)-sigmoid: the head of the sample's class
  cluster, `cluster_map[label]`. The clusters group classes by their number
  of (noisy) training samples (`mwn_tf.class_clusters`), so the weighting
  can differ between frequent and rare classes.

  The C heads are one Dense layer with C units, each unit a head with
  PyTorch's nn.Linear(100, 1) initialisation; a sample's weight is its
  head's output, so each head is trained only by its clusters' samples.
  With one cluster this is exactly `WeightNet` (same variables' shapes).

  Args:
    cluster_map: `[K]` cluster id of each class id, ids 0..C-1 all used
      (`class_clusters.cluster_map_from_counts` makes one).
    hidden_units: widths of the shared trunk's hidden layers.
    activation: hidden activation.
    output_activation: the heads' activation; `sigmoid` keeps weights in
      (0, 1).
    name: Keras name.
    dtype: Keras dtype policy.
    **kwargs: Other `keras.Model` arguments (`trainable`).
  """

  takes_labels = True  # V's input is (losses, labels).

  def __init__(self,
               cluster_map: Sequence[int],
               hidden_units: Sequence[int] = (100,),
               activation: str = "relu",
               output_activation: str = "sigmoid",
               name: str = "class_aware_weight_net",
               dtype=None,
               **kwargs):
    super().__init__(name=name, dtype=dtype, **kwargs)
    try:
      self.cluster_map = class_clusters.check_cluster_map(cluster_map)
    except ValueError as e:
      raise ValueError(f"ClassAwareWeightNet.cluster_map {e}.") from e
    self.num_clusters = max(self.cluster_map) + 1
    self.hidden_units, self.hidden = _hidden_layers(
        hidden_units, activation, dtype, "ClassAwareWeightNet")
    self.activation = activation
    self.output_activation = output_activation
    self.out = _torch_linear(self.num_clusters, self.hidden_units[-1],
                             output_activation, "heads", dtype)
    self.build()

  def build(self, input_shape=None):
    del input_shape  # always (one loss, one label) per sample
    _build_stack(self.hidden + [self.out])

  def call(self, inputs, training=False):
    """Weights for losses, each from its label's cluster head.

    Args:
      inputs: `(losses, labels)`: `[batch, 1]` per-sample losses (detached
        by the caller) and `[batch]` int class ids in [0, K).
      training: Unused; V has no train-time behaviour.

    Returns:
      `[batch, 1]` weights.
    """
    if not (isinstance(inputs, (tuple, list)) and len(inputs) == 2):
      raise TypeError(
          "ClassAwareWeightNet takes the pair (losses [batch, 1], labels "
          f"[batch]), got {type(inputs).__name__}; MetaWeightModel."
          "weights_for(losses, labels) feeds it.")
    losses, labels = inputs
    x = losses
    for layer in self.hidden:
      x = layer(x)
    heads = self.out(x)  # [batch, C]: every head's weight
    clusters = keras.ops.take(
        keras.ops.convert_to_tensor(self.cluster_map, "int32"),
        keras.ops.reshape(keras.ops.cast(labels, "int32"), (-1,)))
    return keras.ops.take_along_axis(heads, clusters[:, None], axis=1)

  def get_config(self):
    return {**super().get_config(), "cluster_map": list(self.cluster_map),
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
            "output_activation": self.output_activation}


def curve_labels(weight_net) -> list:
  """One label per weighting curve of `weight_net`: `[None]` for a V that
  takes no labels (one curve), else per cluster c the smallest class id in
  it (V's curve for any class of c is the same)."""
  if not getattr(weight_net, "takes_labels", False):
    return [None]
  cluster_map = list(weight_net.cluster_map)
  return [cluster_map.index(c) for c in range(max(cluster_map) + 1)]


# Registered this way (not with @gin.configurable on the class) because Keras 3
# inspects __init__'s argument list, which gin's in-place wrapper hides. Gin's
# wrappers make instances of the classes above, which Keras knows by the
# names "mwn_tf>WeightNet" and "mwn_tf>ClassAwareWeightNet".
WeightNet = gin.external_configurable(WeightNet, module="mwn_tf")
ClassAwareWeightNet = gin.external_configurable(ClassAwareWeightNet,
                                               module="mwn_tf")
