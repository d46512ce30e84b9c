"""BatchNorm whose second derivative is one more BatchNorm backward.

MW-Net's meta-gradient differentiates the training gradient g(w) =
d/dθ Σ_i w_i L_i / n with respect to the example weights w (stage 2 of
`MetaWeightModel.train_step`). Through a Keras `BatchNormalization`, TF builds
that second derivative by differentiating the composite backward graph of
`tf.nn.moments` + `tf.nn.batch_normalization` op by op, and keeps that graph's
activation-sized intermediates alive for it: hundreds of Mul/Tile/Sum ops on
ResNet-32. Written by hand it keeps one extra tensor per layer (x̂); the exact
ResNet-32 step's peak memory falls by a fifth (docs/speed.md). Its time barely
moves: the second-order pass is dominated by its two convolutions per layer.

In training mode the BatchNorm backward is *linear* in the upstream gradient
dy. With x̂ = (x - μ) r, r = 1 / sqrt(σ² + ε), n values per channel and S the
sum over the batch and spatial axes:

    dβ = S(dy)        dγ = S(dy x̂)
    dx = γ r P(dy),   P(u) = u - S(u) / n - x̂ S(u x̂) / n.

P is symmetric, so the transpose of dy -> (dx, dγ, dβ), which is what the
second-order pass asks of this layer, is

    dy' = γ r P(u_x) + x̂ u_γ + u_β

for upstream (u_x, u_γ, u_β): one more BatchNorm backward, written here by
hand. Derivatives of the backward with respect to x and γ (Hessian terms that
MW-Net never asks for, because the weights do not depend on θ) come from
autodiff of the same formula, so every derivative is still exact; TF prunes
them from the graph when nothing uses them. (That formula computes the
variance without tf.nn.moments' stop_gradient, which drops a term of the
variance's second derivative.)

The layer keeps Keras' variables, config, moving-average update and float32
upcast, so checkpoints, `synchronized=True` (sums over the global batch with
all-reduces, in the forward and in both backward passes) and mixed precision
behave as before. It falls back to Keras' own code for masks, renorm and
inference.
"""

import keras
from keras import ops
import tensorflow as tf


def _moments(x, axes, synchronized):
  """Mean and biased variance `[C]` exactly as Keras computes them."""
  return ops.moments(x, axes=axes, synchronized=synchronized)


def _replica_context(synchronized):
  if not synchronized:
    return None
  ctx = tf.distribute.get_replica_context()
  return ctx if ctx is not None and ctx.num_replicas_in_sync > 1 else None


def _global(ctx, *channel_sums):
  """All-reduces per-channel sums over the replicas (identity without)."""
  if ctx is None:
    return channel_sums
  packed = tf.stack(channel_sums)
  return tf.unstack(ctx.all_reduce(tf.distribute.ReduceOp.SUM, packed))


def _count(x, axes, ctx):
  """n, the number of values per channel over the (global) batch."""
  shape = tf.shape(x)
  n = tf.cast(tf.reduce_prod(tf.gather(shape, axes)), x.dtype)
  if ctx is not None:
    n = ctx.all_reduce(tf.distribute.ReduceOp.SUM, n)
  return n


def _linear_backward(dy, dmean, dvar, xhat, gamma, r, n, axes, ctx):
  """(dx, dγ, dβ) for upstream (dy, dmean, dvar), given x̂, r and n.

  Shapes: dy, xhat `[..., C]`; dmean, dvar, gamma, r `[C]`. Every per-channel
  term is folded into two `[C]` vectors, so dx costs two activation-sized
  multiply-adds.
  """
  sum_dy = tf.reduce_sum(dy, axes)
  sum_dyx = tf.reduce_sum(dy * xhat, axes)
  g_dy, g_dyx, g_dmean, g_dvar = _global(ctx, sum_dy, sum_dyx, dmean, dvar)
  gr = gamma * r
  dx = (gr * dy + (g_dmean - gr * g_dy) / n
        + xhat * ((2.0 * g_dvar / r - gr * g_dyx) / n))
  return dx, sum_dyx, sum_dy


def _backward_formula(dy, dmean, dvar, x, gamma, axes, epsilon, ctx):
  """(dx, dγ, dβ) rebuilt from x, for autodiff of the Hessian terms."""
  # Two-pass moments without tf.nn.moments' stop_gradient, which would drop
  # the -11ᵀ/n part of the variance's Hessian.
  n = _count(x, axes, ctx)
  mean = _global(ctx, tf.reduce_sum(x, axes))[0] / n
  var = _global(ctx, tf.reduce_sum(tf.square(x - mean), axes))[0] / n
  r = tf.math.rsqrt(var + epsilon)
  return _linear_backward(dy, dmean, dvar, (x - mean) * r, gamma, r, n, axes,
                          ctx)


def batch_norm_train(x, gamma, beta, axes, epsilon, synchronized=False):
  """Training-mode BatchNorm with hand-written first and second derivatives.

  Args:
    x: `[..., C]` float inputs (float32 under mixed precision: the caller
      upcasts as Keras does).
    gamma: `[C]` scale.
    beta: `[C]` offset.
    axes: the reduction axes (all but the channel axis, which is last).
    epsilon: variance epsilon.
    synchronized: statistics over the global batch of all replicas.

  Returns:
    (y `[..., C]`, batch mean `[C]`, biased batch variance `[C]`).
  """
  axes = list(axes)
  ctx = _replica_context(synchronized)

  @tf.custom_gradient
  def bn(x, gamma, beta):
    mean, var = _moments(x, axes, synchronized)
    r = tf.math.rsqrt(var + epsilon)
    # The same expression as tf.nn.batch_normalization, so the forward values
    # are those of keras.layers.BatchNormalization bit for bit.
    inv = r * gamma
    y = x * inv + (beta - mean * inv)

    def grad(dy, dmean, dvar):
      return _backward(dy, dmean, dvar, x, gamma, mean, r)

    return (y, mean, var), grad

  @tf.custom_gradient
  def _backward(dy, dmean, dvar, x, gamma, mean, r):
    """(dx, dγ, dβ): linear in (dy, dmean, dvar), the forward's upstream."""
    # mean and r are inputs only so that TF treats them as constants of the
    # linear map; their dependence on x is handled in `grad_of_grad`.
    xhat = (x - mean) * r
    n = _count(x, axes, ctx)
    grads = _linear_backward(dy, dmean, dvar, xhat, gamma, r, n, axes, ctx)
    gr = gamma * r

    def grad_of_grad(u_x, u_gamma, u_beta):
      # The transpose of the linear map (dy, dmean, dvar) -> (dx, dγ, dβ).
      sum_u = tf.reduce_sum(u_x, axes)
      sum_ux = tf.reduce_sum(u_x * xhat, axes)
      g_u, g_ux = _global(ctx, sum_u, sum_ux)
      ddy = (gr * u_x + u_beta - gr * g_u / n
             + xhat * (u_gamma - gr * g_ux / n))
      ddmean = g_u / n
      ddvar = 2.0 * g_ux / (n * r)
      # Hessian terms: autodiff of the formula rebuilt from x and gamma.
      with tf.GradientTape() as tape:
        tape.watch([x, gamma])
        outs = _backward_formula(dy, dmean, dvar, x, gamma, axes, epsilon,
                                 ctx)
      dxx, dgamma = tape.gradient(
          outs, [x, gamma], output_gradients=[u_x, u_gamma, u_beta],
          unconnected_gradients=tf.UnconnectedGradients.ZERO)
      return (ddy, ddmean, ddvar, dxx, dgamma,
              tf.zeros_like(mean), tf.zeros_like(r))

    return grads, grad_of_grad

  return bn(x, gamma, beta)


@keras.saving.register_keras_serializable(package="mwn_tf")
class MetaBatchNormalization(keras.layers.BatchNormalization):
  """`keras.layers.BatchNormalization` with a cheap second derivative.

  Same variables, config, moving averages and numerics; only the training-mode
  gradient graph differs (see the module docstring). Everything else (masks,
  renorm, a channel axis that is not last, inference) runs Keras' own code.
  """

  def call(self, inputs, training=None, mask=None):
    if (not (training and self.trainable) or mask is not None or self.renorm
        or not self.scale or not self.center
        or self.axis not in (-1, len(inputs.shape) - 1)):
      return super().call(inputs, training=training, mask=mask)
    compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
    x = ops.cast(inputs, compute_dtype)
    y, mean, var = batch_norm_train(
        x, ops.cast(self.gamma, compute_dtype),
        ops.cast(self.beta, compute_dtype), self._reduction_axes,
        self.epsilon, self.synchronized)
    moving_mean = ops.cast(self.moving_mean, compute_dtype)
    moving_variance = ops.cast(self.moving_variance, compute_dtype)
    self.moving_mean.assign(
        moving_mean * self.momentum + mean * (1.0 - self.momentum))
    self.moving_variance.assign(
        moving_variance * self.momentum + var * (1.0 - self.momentum))
    return ops.cast(y, self.compute_dtype)


def all_layers(layer):
  """Yields `layer` and every layer nested in it, each once.

  Keras' public `Model.layers` lists one level; this follows it into nested
  models (functional, Sequential or subclassed), depth first.
  """
  seen, stack = set(), [layer]
  while stack:
    current = stack.pop()
    if id(current) in seen:
      continue
    seen.add(id(current))
    yield current
    stack.extend(reversed(getattr(current, "layers", None) or []))


def synchronize_batchnorm(model) -> int:
  """Switches every Keras BatchNormalization layer in `model` to synchronized.

  A synchronized BN computes its training-mode batch statistics over the
  GLOBAL batch (all replicas) with differentiable all-reduces, so N replicas
  normalise exactly as one device on the global batch. Keras reads the flag at
  call time, so this works on a built model, before the step is traced.

  Args:
    model: a Keras layer or model (nested models are searched too).

  Returns:
    How many layers were switched.
  """
  count = 0
  for layer in all_layers(model):
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.synchronized = True
      count += 1
  return count
