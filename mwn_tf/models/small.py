"""Small classifiers: the offline digits quickstart (8x8x1), tests, and
Fashion-MNIST (28x28x1).

They train in seconds to minutes on a CPU. Kernels use kaiming normal
(fan_in), as in ResNet-32.
"""

from typing import Sequence

import gin
import keras

from mwn_tf.models import layers as L
from mwn_tf.models.registry import register


@register("mlp")
@gin.configurable("mlp",
                  denylist=["num_classes", "input_shape", "batch_norm_cls"])
def mlp(num_classes: int,
        input_shape: Sequence[int] = (8, 8, 1),
        hidden_sizes: Sequence[int] = (128,),
        batch_norm: bool = False,
        bn_momentum: float = L.TORCH_BN_MOMENTUM,
        bn_epsilon: float = L.TORCH_BN_EPSILON,
        dtype: L.DType = None,
        batch_norm_cls: L.BatchNormClass = None) -> keras.Model:
  """Builds Flatten -> [Dense -> (BN) -> ReLU] * len(hidden_sizes) -> Dense.

  Args:
    num_classes: number of logits K.
    input_shape: shape of one example; it is flattened first.
    hidden_sizes: widths of the hidden layers; () is softmax regression.
    batch_norm: BatchNorm before each ReLU (the Dense then has no bias,
      which BN's beta would duplicate).
    bn_momentum: Keras BatchNorm momentum (0.9 = PyTorch's 0.1).
    bn_epsilon: BatchNorm epsilon.
    dtype: None (the global Keras policy), "float32", "float64" or a mixed
      policy name.
    batch_norm_cls: the BatchNorm layer class; None: MetaBatchNormalization
      (see `layers.batch_norm`). Not a gin setting.

  Returns:
    A functional `keras.Model` named "mlp": `[batch, *input_shape]` ->
    logits `[batch, num_classes]` (no softmax).
  """
  dtype, io_dtype = L.resolve_dtype(dtype)
  inputs = keras.Input(shape=tuple(input_shape), dtype=io_dtype,
                       name="images")
  x = keras.layers.Flatten(dtype=dtype, name="flatten")(inputs)
  for i, width in enumerate(hidden_sizes, start=1):
    x = keras.layers.Dense(width, use_bias=not batch_norm,
                           kernel_initializer=L.kaiming_normal("fan_in"),
                           dtype=dtype, name=f"dense{i}")(x)
    if batch_norm:
      x = L.batch_norm(x, f"bn{i}", dtype, bn_momentum, bn_epsilon,
                       batch_norm_cls)
    x = keras.layers.ReLU(dtype=dtype, name=f"relu{i}")(x)
  logits = keras.layers.Dense(
      num_classes, kernel_initializer=L.kaiming_normal("fan_in"),
      dtype=io_dtype, name="logits")(x)
  return keras.Model(inputs, logits, name="mlp")


@register("small_cnn")
@gin.configurable("small_cnn",
                  denylist=["num_classes", "input_shape", "batch_norm_cls"])
def small_cnn(num_classes: int,
              input_shape: Sequence[int] = (8, 8, 1),
              filters: Sequence[int] = (32, 64),
              bn_momentum: float = L.TORCH_BN_MOMENTUM,
              bn_epsilon: float = L.TORCH_BN_EPSILON,
              dtype: L.DType = None,
              batch_norm_cls: L.BatchNormClass = None) -> keras.Model:
  """Builds [Conv3x3 -> BN -> ReLU -> MaxPool2] * len(filters) -> GAP -> Dense.

  Works at any input size: 8x8 -> 4x4 -> 2x2 on digits, 32x32 -> 16x16 ->
  8x8 on CIFAR.

  Args:
    num_classes: number of logits K.
    input_shape: `(height, width, channels)`.
    filters: output channels of each conv layer.
    bn_momentum: Keras BatchNorm momentum (0.9 = PyTorch's 0.1).
    bn_epsilon: BatchNorm epsilon.
    dtype: None (the global Keras policy), "float32", "float64" or a mixed
      policy name.
    batch_norm_cls: the BatchNorm layer class; None: MetaBatchNormalization
      (see `layers.batch_norm`). Not a gin setting.

  Returns:
    A functional `keras.Model` named "small_cnn": images
    `[batch, *input_shape]` -> logits `[batch, num_classes]` (no softmax).
  """
  dtype, io_dtype = L.resolve_dtype(dtype)
  inputs = keras.Input(shape=tuple(input_shape), dtype=io_dtype,
                       name="images")
  x = inputs
  for i, width in enumerate(filters, start=1):
    x = L.conv3x3(x, width, 1, f"conv{i}", L.kaiming_normal("fan_in"), dtype)
    x = L.batch_norm(x, f"bn{i}", dtype, bn_momentum, bn_epsilon,
                     batch_norm_cls)
    x = keras.layers.ReLU(dtype=dtype, name=f"relu{i}")(x)
    # "same" pooling rounds up, so a 1x1 map passes through, never vanishes.
    x = keras.layers.MaxPooling2D(2, padding="same", dtype=dtype,
                                  name=f"pool{i}")(x)
  x = keras.layers.GlobalAveragePooling2D(dtype=dtype, name="avg_pool")(x)
  logits = keras.layers.Dense(
      num_classes, kernel_initializer=L.kaiming_normal("fan_in"),
      dtype=io_dtype, name="logits")(x)
  return keras.Model(inputs, logits, name="small_cnn")


@register("fmnist_cnn")
@gin.configurable("fmnist_cnn",
                  denylist=["num_classes", "input_shape", "batch_norm_cls"])
def fmnist_cnn(num_classes: int,
               input_shape: Sequence[int] = (28, 28, 1),
               filters: Sequence[int] = (16, 32),
               hidden_units: Sequence[int] = (),
               bn_momentum: float = L.TORCH_BN_MOMENTUM,
               bn_epsilon: float = L.TORCH_BN_EPSILON,
               dtype: L.DType = None,
               batch_norm_cls: L.BatchNormClass = None) -> keras.Model:
  """Builds [Conv3x3 -> BN -> ReLU -> MaxPool2] * len(filters) -> Flatten ->
  [Dense -> BN -> ReLU] * len(hidden_units) -> Dense: the Fashion-MNIST classifier
  (28x28 -> 14x14 -> 7x7 x filters[-1]).

  Unlike `small_cnn` it keeps the spatial layout of the last map (Flatten,
  not global average pooling): where on a 28x28 item the edges are (sleeves,
  heels, straps) is what tells its classes apart. 16 and 32 channels keep a
  step cheap enough that a 3-seed table of exact MW-Net runs fits a CPU
  budget. The results recipes (gin/base_fashion_mnist.gin) widen it to
  (32, 64) channels and one 128-unit hidden layer, about 0.42M parameters:
  enough capacity to memorise noisy labels, which the default's linear head
  on 1,568 features does not do within 30 epochs.

  Args:
    num_classes: number of logits K.
    input_shape: `(height, width, channels)`.
    filters: output channels of each conv block.
    hidden_units: widths of the hidden Dense -> BN -> ReLU layers between the
      flattened map and the logits; () is a linear head.
    bn_momentum: Keras BatchNorm momentum (0.9 = PyTorch's 0.1).
    bn_epsilon: BatchNorm epsilon.
    dtype: None (the global Keras policy), "float32", "float64" or a mixed
      policy name.
    batch_norm_cls: the BatchNorm layer class; None: MetaBatchNormalization
      (see `layers.batch_norm`). Not a gin setting.

  Returns:
    A functional `keras.Model` named "fmnist_cnn": images
    `[batch, *input_shape]` -> logits `[batch, num_classes]` (no softmax).
  """
  dtype, io_dtype = L.resolve_dtype(dtype)
  inputs = keras.Input(shape=tuple(input_shape), dtype=io_dtype,
                       name="images")
  x = inputs
  for i, width in enumerate(filters, start=1):
    x = L.conv3x3(x, width, 1, f"conv{i}", L.kaiming_normal("fan_in"), dtype)
    x = L.batch_norm(x, f"bn{i}", dtype, bn_momentum, bn_epsilon,
                     batch_norm_cls)
    x = keras.layers.ReLU(dtype=dtype, name=f"relu{i}")(x)
    x = keras.layers.MaxPooling2D(2, padding="same", dtype=dtype,
                                  name=f"pool{i}")(x)
  x = keras.layers.Flatten(dtype=dtype, name="flatten")(x)
  for i, width in enumerate(hidden_units, start=1):
    # BN, not a bias: without it, SGD at 0.05 blew the hidden layer up in the
    # first epoch (train loss 3.8 at 60% noise, where with BN it is 2.2).
    x = keras.layers.Dense(width, use_bias=False,
                           kernel_initializer=L.kaiming_normal("fan_in"),
                           dtype=dtype, name=f"dense{i}")(x)
    x = L.batch_norm(x, f"dense_bn{i}", dtype, bn_momentum, bn_epsilon,
                     batch_norm_cls)
    x = keras.layers.ReLU(dtype=dtype, name=f"dense_relu{i}")(x)
  logits = keras.layers.Dense(
      num_classes, kernel_initializer=L.kaiming_normal("fan_in"),
      dtype=io_dtype, name="logits")(x)
  return keras.Model(inputs, logits, name="fmnist_cnn")
