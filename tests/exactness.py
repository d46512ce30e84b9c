"""The tiny float64 model, data and finite differences of the exactness
tests of MetaWeightModel's step (tests/test_meta_model.py and the variants
and fast modes of tests/test_meta_model_variants.py)."""

import keras
import numpy as np
import tensorflow as tf

# Train batch, meta batch, inputs, hidden units, classes.
N, M, D, H, K = 12, 10, 5, 7, 4
BN_EPS = 1e-3
BN_MOMENTUM = 0.9
# A class-aware V's clusters for the K classes: heads 0 and 2 of one class
# each, head 1 of two.
CLUSTER_MAP = (0, 1, 1, 2)


def classifier(batchnorm, dtype="float64", seed=0):
  """Dense(H)-[BatchNorm]-ReLU-Dense(K) on [batch, D] inputs, seeded."""
  keras.utils.set_random_seed(seed)
  layers = [keras.Input((D,), dtype=dtype),
            keras.layers.Dense(H, dtype=dtype)]
  if batchnorm:
    layers.append(keras.layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPS, dtype=dtype))
  layers += [keras.layers.ReLU(dtype=dtype), keras.layers.Dense(K, dtype=dtype)]
  return keras.Sequential(layers)


def random_batch(seed=1, dtype=np.float64):
  """(x [N, D], y [N], xm [M, D], ym [M]): a train and a meta batch."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(N, D)).astype(dtype)
  y = rng.integers(0, K, N).astype(np.int32)
  xm = rng.normal(size=(M, D)).astype(dtype)
  ym = rng.integers(0, K, M).astype(np.int32)
  return x, y, xm, ym


def pair_dataset(x, y, xm, ym, steps=1):
  """`steps` copies of the element (train batch dict, (xm, ym))."""
  train = tf.data.Dataset.from_tensors({"image": x, "label": y}).repeat(steps)
  meta = tf.data.Dataset.from_tensors((xm, ym)).repeat(steps)
  return tf.data.Dataset.zip((train, meta))


def central_differences(f, params, eps):
  """∂f/∂params by central differences, one entry at a time.

  Args:
    f: maps a list of arrays shaped like `params` to a float.
    params: list of NumPy arrays.
    eps: step.

  Returns:
    List of arrays shaped like `params`.
  """
  grads = []
  for i, p in enumerate(params):
    g = np.zeros_like(p)
    for idx in np.ndindex(p.shape):
      plus = [q.copy() for q in params]
      minus = [q.copy() for q in params]
      plus[i][idx] += eps
      minus[i][idx] -= eps
      g[idx] = (f(plus) - f(minus)) / (2 * eps)
    grads.append(g)
  return grads
