"""Building blocks shared by the model builders.

The CIFAR models follow the PyTorch conventions of the official MW-Net code,
because the paper's numbers come from that code:

* BatchNorm: PyTorch updates `running = 0.9 * running + 0.1 * batch`
  (momentum 0.1); Keras updates `moving = m * moving + (1 - m) * batch`, so
  PyTorch's default is Keras `momentum=0.9`, with PyTorch's `eps=1e-5`.
  PyTorch feeds the *unbiased* batch variance into `running_var`, Keras the
  biased one: a factor n / (n - 1) that we do not reproduce.
* Strided 3x3 convolutions pad one pixel on every side, like PyTorch's
  `padding=1`. Keras' `padding="same"` pads only bottom/right for even inputs,
  which shifts the sampling grid by one pixel and misaligns it with the
  option-A shortcut `x[::2, ::2]`.
* `kaiming_normal_` is an untruncated normal; Keras' `HeNormal` is truncated,
  so we use `VarianceScaling(distribution="untruncated_normal")`.
"""

import math
from typing import Optional, Tuple, Type, Union

import keras
from keras import ops

from mwn_tf.models.batch_norm import MetaBatchNormalization

# PyTorch's BatchNorm2d defaults in Keras terms (see the module docstring).
TORCH_BN_MOMENTUM = 0.9
TORCH_BN_EPSILON = 1e-5

DType = Optional[Union[str, keras.DTypePolicy]]


def resolve_dtype(dtype: DType) -> Tuple[str, str]:
  """Resolves a builder's `dtype` argument.

  Args:
    dtype: None (the global Keras policy), a dtype name such as "float32" or
      "float64", a mixed policy name such as "mixed_bfloat16", or a
      `keras.DTypePolicy`.

  Returns:
    `(policy_name, io_dtype)`: the policy for the hidden layers, and the dtype
    of the input and of the logits layer. Under a mixed policy the logits stay
    in the variable dtype (float32), as Keras' mixed-precision guide advises.
  """
  if dtype is None:
    policy = keras.config.dtype_policy()
  else:
    policy = keras.dtype_policies.get(dtype)
  return policy.name, policy.variable_dtype


def kaiming_normal(mode: str = "fan_in") -> keras.initializers.Initializer:
  """PyTorch `kaiming_normal_(mode=mode)` for ReLU: N(0, 2 / fan)."""
  return keras.initializers.VarianceScaling(
      scale=2.0, mode=mode, distribution="untruncated_normal")


def torch_linear_kernel() -> keras.initializers.Initializer:
  """PyTorch's default `nn.Linear.weight`: U(+-1/sqrt(fan_in))."""
  # kaiming_uniform_(a=sqrt(5)) has bound sqrt(2 / 6) * sqrt(3 / fan_in), i.e.
  # VarianceScaling's uniform limit sqrt(3 * scale / fan_in) with scale 1/3.
  return keras.initializers.VarianceScaling(
      scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def torch_linear_bias(fan_in: int) -> keras.initializers.Initializer:
  """PyTorch's default `nn.Linear.bias`: U(+-1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)
  return keras.initializers.RandomUniform(-bound, bound)


def conv3x3(x, filters: int, stride: int, name: str, kernel_initializer,
            dtype: str):
  """3x3 convolution without bias, padded like PyTorch's `padding=1`.

  Args:
    x: `[batch, height, width, in_channels]`.
    filters: output channels.
    stride: 1 or 2.
    name: layer name.
    kernel_initializer: initializer of the `[3, 3, in_channels, filters]`
      kernel.
    dtype: layer dtype policy name.

  Returns:
    `[batch, ceil(height / stride), ceil(width / stride), filters]`.
  """
  if stride == 1:
    # For stride 1, "same" is exactly a one-pixel border on every side.
    padding = "same"
  else:
    x = keras.layers.ZeroPadding2D(1, dtype=dtype, name=f"{name}_pad")(x)
    padding = "valid"
  return keras.layers.Conv2D(
      filters, 3, strides=stride, padding=padding, use_bias=False,
      kernel_initializer=kernel_initializer, dtype=dtype, name=name)(x)


BatchNormClass = Optional[Type[keras.layers.BatchNormalization]]


def batch_norm_class(batch_norm_cls: BatchNormClass = None):
  """The BatchNorm class the builders use: `batch_norm_cls`, or by default
  `MetaBatchNormalization`."""
  return batch_norm_cls or MetaBatchNormalization


def batch_norm(x, name: str, dtype: str, momentum: float = TORCH_BN_MOMENTUM,
               epsilon: float = TORCH_BN_EPSILON,
               batch_norm_cls: BatchNormClass = None):
  """BatchNorm over the last (channel) axis; gamma 1, beta 0 like PyTorch.

  Args:
    x: `[..., channels]`.
    name: layer name.
    dtype: layer dtype policy name.
    momentum: Keras momentum (0.9 = PyTorch's 0.1).
    epsilon: variance epsilon.
    batch_norm_cls: the layer class; None is `MetaBatchNormalization`:
      Keras' layer, variables and values, with a hand-written second
      derivative that keeps the exact meta step's memory down (see
      mwn_tf/models/batch_norm.py). `keras.layers.BatchNormalization` gives
      the autodiff second derivative (`python -m mwn_tf.bench
      --modes=exact,exact+kerasbn` compares the two).

  Returns:
    `x`'s shape.
  """
  return batch_norm_class(batch_norm_cls)(
      axis=-1, momentum=momentum, epsilon=epsilon, dtype=dtype, name=name)(x)


@keras.saving.register_keras_serializable(package="mwn_tf")
class OptionAShortcut(keras.layers.Layer):
  """Parameter-free ResNet shortcut, option A of He et al. (2016), Sec. 4.2.

  Subsamples the identity with `stride` and zero-pads the new channels, half
  before and half after the existing ones: the official CIFAR code pads
  `planes // 4` channels on each side when the width doubles, so the identity
  sits in the middle channels.

  Input `[batch, height, width, in_channels]`; output
  `[batch, ceil(height / stride), ceil(width / stride), out_channels]`.
  """

  def __init__(self, out_channels: int, stride: int = 2, **kwargs):
    super().__init__(**kwargs)
    self.out_channels = int(out_channels)
    self.stride = int(stride)

  def call(self, x):
    s = self.stride
    x = x[:, ::s, ::s, :]
    extra = self.out_channels - x.shape[-1]
    if extra < 0:
      raise ValueError(f"OptionAShortcut cannot shrink {x.shape[-1]} "
                       f"channels to {self.out_channels}.")
    before = extra // 2
    return ops.pad(x, [[0, 0], [0, 0], [0, 0], [before, extra - before]])

  def compute_output_shape(self, input_shape):
    def subsample(n):
      return None if n is None else -(-n // self.stride)

    return (input_shape[0], subsample(input_shape[1]),
            subsample(input_shape[2]), self.out_channels)

  def get_config(self):
    config = super().get_config()
    config.update(out_channels=self.out_channels, stride=self.stride)
    return config
