"""Wide ResNet (Zagoruyko & Komodakis, 2016) as in MW-Net's WRN-28-10 script.

Layout for depth 6n + 4 and widen factor k: 3x3 conv with 16 filters; three
stages of n pre-activation blocks with 16k / 32k / 64k filters (stride 2
entering stages 2 and 3); BN, ReLU, global average pooling, Dense. A block
whose input and output widths differ has a 1x1 convolution shortcut on the
pre-activated input. WRN-28-10 for 10 classes: 36.5M parameters.

Initialization follows the official `wideresnet.py`: conv weights
N(0, 2 / (k * k * out_channels)) (kaiming normal, fan_out), BN gamma 1 and
beta 0, linear bias 0, linear weight PyTorch's default U(+-1/sqrt(fan_in)).
"""

from typing import Sequence

import gin
import keras

from mwn_tf.models import layers as L
from mwn_tf.models.registry import register


def _preact_block(x, filters: int, stride: int, dropout_rate: float,
                  name: str, dtype: str, bn_momentum: float,
                  bn_epsilon: float, batch_norm_cls: L.BatchNormClass = None):
  """Pre-activation block: shortcut + conv(drop(relu(bn(conv(relu(bn(x))))))).

  Args:
    x: `[batch, h, w, c_in]`.
    filters: output channels.
    stride: 1, or 2 for the first block of stages 2 and 3.
    dropout_rate: dropout between the two convolutions; 0 adds no layer.
    name: layer name prefix, e.g. "stage2_block1".
    dtype: layer dtype policy name.
    bn_momentum: Keras BatchNorm momentum.
    bn_epsilon: BatchNorm epsilon.
    batch_norm_cls: the BatchNorm layer class (None: the default).

  Returns:
    `[batch, ceil(h / stride), ceil(w / stride), filters]`.
  """
  init = L.kaiming_normal("fan_out")
  pre = L.batch_norm(x, f"{name}_bn1", dtype, bn_momentum, bn_epsilon,
                     batch_norm_cls)
  pre = keras.layers.ReLU(dtype=dtype, name=f"{name}_relu1")(pre)
  if x.shape[-1] == filters and stride == 1:
    # Equal widths: the identity carries the raw input, not the activated one.
    shortcut = x
  else:
    # The official block tests widths only; equal widths with stride 2 never
    # occur there, and a projection is the only shape-correct choice then.
    shortcut = keras.layers.Conv2D(
        filters, 1, strides=stride, padding="valid", use_bias=False,
        kernel_initializer=init, dtype=dtype, name=f"{name}_shortcut")(pre)
  y = L.conv3x3(pre, filters, stride, f"{name}_conv1", init, dtype)
  y = L.batch_norm(y, f"{name}_bn2", dtype, bn_momentum, bn_epsilon,
                   batch_norm_cls)
  y = keras.layers.ReLU(dtype=dtype, name=f"{name}_relu2")(y)
  if dropout_rate > 0:
    y = keras.layers.Dropout(dropout_rate, dtype=dtype,
                             name=f"{name}_dropout")(y)
  y = L.conv3x3(y, filters, 1, f"{name}_conv2", init, dtype)
  return keras.layers.Add(dtype=dtype, name=f"{name}_add")([shortcut, y])


@register("wide_resnet", bindings="wrn")
@gin.configurable("wrn",
                  denylist=["num_classes", "input_shape", "batch_norm_cls"])
def wide_resnet(num_classes: int,
                input_shape: Sequence[int] = (32, 32, 3),
                depth: int = 28,
                widen_factor: int = 10,
                dropout_rate: float = 0.0,
                bn_momentum: float = L.TORCH_BN_MOMENTUM,
                bn_epsilon: float = L.TORCH_BN_EPSILON,
                dtype: L.DType = None,
                batch_norm_cls: L.BatchNormClass = None) -> keras.Model:
  """Builds WRN-depth-k; the defaults are MW-Net's WRN-28-10, no dropout.

  Args:
    num_classes: number of logits K.
    input_shape: `(height, width, channels)`; any size (global pooling).
    depth: 6n + 4 (28 -> n = 4 blocks per stage).
    widen_factor: k; stage widths are 16k / 32k / 64k.
    dropout_rate: dropout inside each block (MW-Net's script uses 0).
    bn_momentum: Keras BatchNorm momentum (0.9 = PyTorch's 0.1).
    bn_epsilon: BatchNorm epsilon (PyTorch's 1e-5).
    dtype: None (the global Keras policy), "float32", "float64" or a mixed
      policy name.
    batch_norm_cls: the BatchNorm layer class; None: MetaBatchNormalization
      (see `layers.batch_norm`). Not a gin setting.

  Returns:
    A functional `keras.Model` named "wrn{depth}_{k}": images
    `[batch, *input_shape]` -> logits `[batch, num_classes]` (no softmax).

  Raises:
    ValueError: if `depth` is not 6n + 4 with n >= 1.
  """
  if depth < 10 or (depth - 4) % 6:
    raise ValueError(f"Wide ResNet depth must be 6n + 4, n >= 1; got {depth}.")
  blocks_per_stage = (depth - 4) // 6
  dtype, io_dtype = L.resolve_dtype(dtype)
  inputs = keras.Input(shape=tuple(input_shape), dtype=io_dtype,
                       name="images")
  x = L.conv3x3(inputs, 16, 1, "stem_conv", L.kaiming_normal("fan_out"),
                dtype)
  for stage, width in enumerate((16, 32, 64), start=1):
    for block in range(1, blocks_per_stage + 1):
      stride = 2 if (stage > 1 and block == 1) else 1
      x = _preact_block(x, width * widen_factor, stride, dropout_rate,
                        f"stage{stage}_block{block}", dtype, bn_momentum,
                        bn_epsilon, batch_norm_cls)
  x = L.batch_norm(x, "final_bn", dtype, bn_momentum, bn_epsilon,
                   batch_norm_cls)
  x = keras.layers.ReLU(dtype=dtype, name="final_relu")(x)
  x = keras.layers.GlobalAveragePooling2D(dtype=dtype, name="avg_pool")(x)
  logits = keras.layers.Dense(
      num_classes, kernel_initializer=L.torch_linear_kernel(),
      bias_initializer="zeros", dtype=io_dtype, name="logits")(x)
  return keras.Model(inputs, logits, name=f"wrn{depth}_{widen_factor}")


@register("wrn28_10", bindings="wrn")
def wrn28_10(num_classes: int, input_shape: Sequence[int] = (32, 32, 3),
             **kwargs) -> keras.Model:
  """WRN-28-10: `wide_resnet` with depth 28 and widen factor 10 fixed.

  Gin bindings `wrn.dropout_rate`, `wrn.bn_momentum`, `wrn.bn_epsilon` and
  `wrn.dtype` apply; `wrn.depth` and `wrn.widen_factor` are overridden here
  (use the "wide_resnet" entry to change them).

  Args:
    num_classes: number of logits K.
    input_shape: `(height, width, channels)`.
    **kwargs: other `wide_resnet` arguments.

  Returns:
    The `wide_resnet` model, logits `[batch, num_classes]`.
  """
  return wide_resnet(num_classes, input_shape, depth=28, widen_factor=10,
                     **kwargs)
