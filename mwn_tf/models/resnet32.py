"""ResNet-32 for CIFAR (He et al., 2016, Sec. 4.2), as used by MW-Net.

Layout (6n + 2 layers, n = 5): 3x3 conv with 16 filters, BN, ReLU; three
stages of n basic blocks with 16 / 32 / 64 filters (stride 2 entering stages 2
and 3); global average pooling; Dense(num_classes). Shortcuts are option A
(parameter free). 0.46M parameters for 10 classes.

Initialization follows the official MW-Net `resnet.py`: conv and linear
weights `kaiming_normal_` (fan_in, untruncated, std sqrt(2 / fan_in)); the
linear bias keeps PyTorch's default U(+-1/sqrt(64)); BN gamma 1, beta 0.
"""

from typing import Sequence

import gin
import keras

from mwn_tf.models import layers as L
from mwn_tf.models.registry import register

_STAGE_FILTERS = (16, 32, 64)


def _basic_block(x, filters: int, stride: int, name: str, dtype: str,
                 bn_momentum: float, bn_epsilon: float,
                 batch_norm_cls: L.BatchNormClass = None):
  """Post-activation block: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)).

  Args:
    x: `[batch, h, w, c_in]`, the output of the previous block.
    filters: output channels.
    stride: 1, or 2 for the first block of stages 2 and 3.
    name: layer name prefix, e.g. "stage2_block1".
    dtype: layer dtype policy name.
    bn_momentum: Keras BatchNorm momentum.
    bn_epsilon: BatchNorm epsilon.
    batch_norm_cls: the BatchNorm layer class (None: the default).

  Returns:
    `[batch, ceil(h / stride), ceil(w / stride), filters]`.
  """
  init = L.kaiming_normal("fan_in")
  if stride != 1 or x.shape[-1] != filters:
    shortcut = L.OptionAShortcut(filters, stride, dtype=dtype,
                                 name=f"{name}_shortcut")(x)
  else:
    shortcut = x
  y = L.conv3x3(x, filters, stride, f"{name}_conv1", init, dtype)
  y = L.batch_norm(y, f"{name}_bn1", dtype, bn_momentum, bn_epsilon,
                   batch_norm_cls)
  y = keras.layers.ReLU(dtype=dtype, name=f"{name}_relu1")(y)
  y = L.conv3x3(y, filters, 1, f"{name}_conv2", init, dtype)
  y = L.batch_norm(y, f"{name}_bn2", dtype, bn_momentum, bn_epsilon,
                   batch_norm_cls)
  y = keras.layers.Add(dtype=dtype, name=f"{name}_add")([y, shortcut])
  return keras.layers.ReLU(dtype=dtype, name=f"{name}_out")(y)


@register("resnet32")
@gin.configurable("resnet32",
                  denylist=["num_classes", "input_shape", "batch_norm_cls"])
def resnet32(num_classes: int,
             input_shape: Sequence[int] = (32, 32, 3),
             blocks_per_stage: int = 5,
             bn_momentum: float = L.TORCH_BN_MOMENTUM,
             bn_epsilon: float = L.TORCH_BN_EPSILON,
             dtype: L.DType = None,
             batch_norm_cls: L.BatchNormClass = None) -> keras.Model:
  """Builds the CIFAR ResNet-32 used by Meta-Weight-Net.

  Args:
    num_classes: number of logits K.
    input_shape: `(height, width, channels)`; any size (global pooling).
    blocks_per_stage: n of the 6n + 2 family; 5 is ResNet-32, 3 ResNet-20.
    bn_momentum: Keras BatchNorm momentum (0.9 = PyTorch's 0.1).
    bn_epsilon: BatchNorm epsilon (PyTorch's 1e-5).
    dtype: None (the global Keras policy), "float32", "float64" or a mixed
      policy name.
    batch_norm_cls: the BatchNorm layer class; None: MetaBatchNormalization
      (see `layers.batch_norm`). Not a gin setting.

  Returns:
    A functional `keras.Model` named "resnet{6n+2}": images
    `[batch, *input_shape]` -> logits `[batch, num_classes]` (no softmax).
  """
  dtype, io_dtype = L.resolve_dtype(dtype)
  inputs = keras.Input(shape=tuple(input_shape), dtype=io_dtype,
                       name="images")
  x = L.conv3x3(inputs, _STAGE_FILTERS[0], 1, "stem_conv",
                L.kaiming_normal("fan_in"), dtype)
  x = L.batch_norm(x, "stem_bn", dtype, bn_momentum, bn_epsilon,
                   batch_norm_cls)
  x = keras.layers.ReLU(dtype=dtype, name="stem_relu")(x)
  for stage, filters in enumerate(_STAGE_FILTERS, start=1):
    for block in range(1, blocks_per_stage + 1):
      stride = 2 if (stage > 1 and block == 1) else 1
      x = _basic_block(x, filters, stride, f"stage{stage}_block{block}",
                       dtype, bn_momentum, bn_epsilon, batch_norm_cls)
  x = keras.layers.GlobalAveragePooling2D(dtype=dtype, name="avg_pool")(x)
  logits = keras.layers.Dense(
      num_classes,
      kernel_initializer=L.kaiming_normal("fan_in"),
      bias_initializer=L.torch_linear_bias(_STAGE_FILTERS[-1]),
      dtype=io_dtype, name="logits")(x)
  return keras.Model(inputs, logits, name=f"resnet{6 * blocks_per_stage + 2}")
