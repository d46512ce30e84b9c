"""Classifiers for Meta-Weight-Net behind a small name registry.

  model = mwn_tf.models.get("resnet32", num_classes=10,
                            input_shape=(32, 32, 3))

Names: "resnet32" (CIFAR noise and long tail), "wrn28_10" and "wide_resnet"
(CIFAR noise; their settings are bound as `wrn.*`), "resnet50" (Clothing1M),
"fmnist_cnn" (Fashion-MNIST), "mlp" and "small_cnn" (offline digits
quickstart, tests); `names()` lists them. Every model is a functional Keras 3 model, channels_last,
mapping `[batch, H, W, C]` to logits `[batch, num_classes]` (no softmax), and
works with `model.stateless_call(...)` for the virtual step's fast weights.
"""

from mwn_tf.models.registry import binding_family, get, names, register

# Imported for their @register side effects.
from mwn_tf.models import resnet32 as _resnet32  # noqa: F401
from mwn_tf.models import resnet50 as _resnet50  # noqa: F401
from mwn_tf.models import small as _small  # noqa: F401
from mwn_tf.models import wide_resnet as _wide_resnet  # noqa: F401

__all__ = ["binding_family", "get", "names", "register"]
