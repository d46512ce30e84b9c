"""The Meta-Weight-Net V(L; Θ): a tiny MLP from a sample's loss to its weight.

Shu et al., "Meta-Weight-Net: Learning an Explicit Mapping For Sample
Weighting", NeurIPS 2019, Sec. 2.2: V is an MLP with one hidden layer of 100
ReLU units and a sigmoid output, so every weight lies in (0, 1).

A Keras serializable ("mwn_tf>WeightNet"): `save("v.keras")` and
`keras.models.load_model("v.keras")` round-trip it once `mwn_tf` is imported.
"""

from typing import Sequence

import gin
import keras


def _torch_linear_kernel_init():
  # PyTorch's nn.Linear default (kaiming_uniform with a=sqrt(5)) is
  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the official V uses it, and the learned
  # curve's starting point (a near-flat ~0.5 weight) depends on it.
  return keras.initializers.VarianceScaling(
      scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


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

  def __init__(self,
               hidden_units: Sequence[int] = (100,),
               activation: str = "relu",
               output_activation: str = "sigmoid",
               name: str = "weight_net",
               dtype=None,
               **kwargs):
    super().__init__(name=name, dtype=dtype, **kwargs)
    if not hidden_units or any(int(u) < 1 for u in hidden_units):
      raise ValueError(
          f"WeightNet.hidden_units must be a non-empty list of positive "
          f"widths, got {hidden_units!r}; the paper's default is (100,).")
    self.hidden_units = tuple(int(u) for u in hidden_units)
    self.activation = activation
    self.output_activation = output_activation
    fan_ins = (1,) + self.hidden_units
    self.hidden = [
        keras.layers.Dense(
            units, activation=activation,
            kernel_initializer=_torch_linear_kernel_init(),
            bias_initializer=keras.initializers.RandomUniform(
                -fan_in**-0.5, fan_in**-0.5),
            name=f"hidden_{i}", dtype=dtype)
        for i, (units, fan_in) in enumerate(zip(self.hidden_units, fan_ins))
    ]
    self.out = keras.layers.Dense(
        1, activation=output_activation,
        kernel_initializer=_torch_linear_kernel_init(),
        bias_initializer=keras.initializers.RandomUniform(
            -fan_ins[-1]**-0.5, fan_ins[-1]**-0.5),
        name="output", dtype=dtype)
    self.build((None, 1))

  def build(self, input_shape=(None, 1)):
    # Idempotent: __init__ already built V, and Keras builds again when asked
    # (`build_from_config` on load, a user's `build()`). Building a built
    # Dense would make its variables a second time, which Keras refuses
    # ("You cannot add new elements of state ... already built").
    shape = tuple(input_shape)
    for layer in self.hidden + [self.out]:
      if not layer.built:
        layer.build(shape)
      shape = (shape[0], layer.units)

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


# Registered this way (not with @gin.configurable on the class) because Keras 3
# inspects __init__'s argument list, which gin's in-place wrapper hides. Gin's
# wrapper makes instances of the class above, which Keras knows by the name
# "mwn_tf>WeightNet".
WeightNet = gin.external_configurable(WeightNet, module="mwn_tf")
