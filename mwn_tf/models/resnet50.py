"""ResNet-50 for Clothing1M (the paper fine-tunes ImageNet-trained weights).

The backbone is `keras.applications.ResNet50(include_top=False,
pooling="avg")`, followed by Dense(num_classes). Nothing is downloaded: pass
`weights_path` pointing at a local copy of Keras' ImageNet no-top file. Those
weights expect inputs prepared with
`keras.applications.resnet50.preprocess_input` (caffe style: BGR, 0-255,
ImageNet mean subtracted, no scaling).
"""

import contextlib
from typing import Optional, Sequence

import gin
import keras
import tensorflow as tf
from absl import logging

from mwn_tf.models import layers as L
from mwn_tf.models.registry import register

IMAGENET_NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_NOTOP_URL = ("https://storage.googleapis.com/tensorflow/"
                      "keras-applications/resnet/" + IMAGENET_NOTOP_FILE)
_POOL_LAYER = "avg_pool"


@contextlib.contextmanager
def _global_dtype_policy(policy: str):
  """Sets Keras' global dtype policy for a while.

  keras.applications builders take no dtype argument; they read the global
  policy when creating layers.

  Args:
    policy: a dtype policy name.

  Yields:
    Nothing; the previous policy is restored on exit.
  """
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(policy)
  try:
    yield
  finally:
    keras.config.set_dtype_policy(previous)


def _missing_weights_message(path: str) -> str:
  return (
      f"ResNet-50 weights file not found: {path!r}. Expected Keras' ImageNet "
      f"no-top ResNet50 weights ({IMAGENET_NOTOP_FILE}) or a .weights.h5 "
      f"saved from mwn_tf.models.resnet50.backbone(model). On a machine with "
      f"internet, download {IMAGENET_NOTOP_URL} (or run "
      f"keras.applications.ResNet50(include_top=False, weights='imagenet') "
      f"and copy ~/.keras/models/{IMAGENET_NOTOP_FILE}), then bind "
      f"resnet50.weights_path to the copy; or bind resnet50.weights_path = "
      f"None to train from scratch.")


def backbone(model: keras.Model) -> keras.Model:
  """Returns the ResNet-50 feature extractor of a `resnet50(...)` model.

  Args:
    model: a model built by `resnet50`.

  Returns:
    A model sharing `model`'s layers: images -> pooled features
    `[batch, 2048]`. Its `save_weights("x.weights.h5")` file is a valid
    `weights_path`.
  """
  return keras.Model(model.input, model.get_layer(_POOL_LAYER).output,
                     name="resnet50_backbone")


def _clone_layer(layer: keras.layers.Layer, bn_momentum: float,
                 batch_norm_cls: L.BatchNormClass = None):
  """A fresh copy of `layer` from its config; BatchNorm becomes the builders'
  BatchNorm class (`L.batch_norm_class(batch_norm_cls)`) at momentum
  `bn_momentum`."""
  config = layer.get_config()
  if isinstance(layer, keras.layers.BatchNormalization):
    config["momentum"] = float(bn_momentum)
    return L.batch_norm_class(batch_norm_cls).from_config(config)
  return layer.__class__.from_config(config)


@register("resnet50")
@gin.configurable("resnet50",
                  denylist=["num_classes", "input_shape", "batch_norm_cls"])
def resnet50(num_classes: int,
             input_shape: Sequence[int] = (224, 224, 3),
             weights_path: Optional[str] = None,
             bn_momentum: float = L.TORCH_BN_MOMENTUM,
             dtype: L.DType = None,
             batch_norm_cls: L.BatchNormClass = None) -> keras.Model:
  """Builds ResNet-50 + Dense(num_classes), optionally from local weights.

  Args:
    num_classes: number of logits K (14 for Clothing1M).
    input_shape: `(height, width, 3)`, at least 32x32.
    weights_path: None to start from random weights, or a local Keras file
      for the no-top backbone: the legacy `.h5` that Keras distributes
      (matched by layer order, as keras.applications loads it) or a
      `.weights.h5` saved from `backbone(model)`. Any path tf.io.gfile reads.
    bn_momentum: Keras BatchNorm momentum of every backbone BN.
      keras.applications uses 0.99; the default 0.9 is PyTorch's 0.1, as for
      the CIFAR models. Epsilon stays at Keras' 1.001e-5, the value the
      ImageNet weights were trained with.
    dtype: None (the global Keras policy), "float32", "float64" or a mixed
      policy name.
    batch_norm_cls: the BatchNorm layer class; None: MetaBatchNormalization
      (see `layers.batch_norm`). Not a gin setting.

  Returns:
    A flat functional `keras.Model` named "resnet50": images
    `[batch, *input_shape]` -> logits `[batch, num_classes]` (no softmax).

  Raises:
    FileNotFoundError: if `weights_path` is given but does not exist.
    ValueError: if the file exists but does not fit the backbone.
  """
  if weights_path is not None and not tf.io.gfile.exists(weights_path):
    raise FileNotFoundError(_missing_weights_message(weights_path))
  policy, io_dtype = L.resolve_dtype(dtype)
  inputs = keras.Input(shape=tuple(input_shape), dtype=io_dtype,
                       name="images")
  with _global_dtype_policy(policy):
    # input_tensor keeps the graph flat: the backbone's layers become the
    # outer model's layers, and no nested model hides its variables.
    features = keras.applications.ResNet50(
        include_top=False, weights=None, input_tensor=inputs,
        input_shape=tuple(input_shape), pooling="avg")
  # The same graph with every BatchNorm of the builders' class (same
  # config, names and weight order, so the weight files still load; see
  # layers.batch_norm), at the chosen momentum.
  features = keras.models.clone_model(
      features, input_tensors=[inputs],
      clone_function=lambda layer: _clone_layer(layer, bn_momentum,
                                                batch_norm_cls))
  if weights_path is None:
    logging.info("resnet50: weights_path is None, training the ResNet-50 "
                 "backbone from scratch (random init; the paper starts "
                 "from ImageNet weights).")
  else:
    try:
      features.load_weights(weights_path)
    except Exception as e:  # Keras raises several types for a bad file.
      raise ValueError(f"Could not load {weights_path!r} into the ResNet-50 "
                       f"no-top backbone: {e}") from e
    logging.info("resnet50: loaded backbone weights from %s", weights_path)
  # The new head keeps Keras' default init, as the backbone does.
  logits = keras.layers.Dense(num_classes, dtype=io_dtype,
                              name="logits")(features.output)
  return keras.Model(inputs, logits, name="resnet50")
