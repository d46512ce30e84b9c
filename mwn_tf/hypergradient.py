"""V's gradient without the second-order pass (`hypergradient="finite_difference"`).

The exact meta-gradient of Meta-Weight-Net (stage 2 through stage 1) is

  ∇Θ L_meta(θ̂(Θ)) = −α Σ_i ∂c_i/∂Θ · (∇θL_i · v),   v = ∇θ̂ L_meta(θ̂),

since θ̂ = θ − α Σ_i c_i(Θ) ∇θL_i(θ) depends on Θ only through the c_i.
`MetaWeightModel` computes it with a second-order pass through the virtual
step. Here each directional derivative ∇θL_i · v is a central difference of
the train losses, (L_i(θ + εv) − L_i(θ − εv)) / 2ε, the estimator DARTS
(Liu et al., ICLR 2019, eq. 8) uses for the same Hessian-vector product, with
ε = fd_epsilon / ‖v‖. It costs two forward passes of the train batch and one
backward pass of the meta batch in place of the second-order pass, keeps no
second-order graph (memory), and is exact up to O(ε²): tests compare it with
the second-order gradient in float64.
"""

import tensorflow as tf

from mwn_tf.sample_weights import loss_coefficients
from mwn_tf.sample_weights import per_sample_loss


def finite_difference(model, tape, losses, values, train, meta, phi,
                      virtual):
  """Stages 1-2's gradient for V by finite differences.

  Args:
    model: The `MetaWeightModel` (its classifier, V, optimizer, options and
      `virtual_weights` / `meta_objective` passes).
    tape, losses: `train_forward`'s persistent tape and `[n]` losses at θ.
    values: (θ, state): the classifier's trainable and other values (lists).
    train, meta: (images, labels) of the train `[n, ...]` and meta `[m, ...]`
      batches.
    phi: V's trainable values.
    virtual: Indices into θ of the variables the virtual step moves.

  Returns:
    (V's gradient, this replica's share, a list like `phi`; meta losses
    `[m]`; meta logits `[m, K]`).
  """
  theta, state = values
  total = model.stage_sum()
  # θ̂ with V's coefficients as constants: no tape watches Θ here.
  fast_theta = model.virtual_weights(tape, losses, train[1], theta, 1,
                                     virtual)
  moving = [fast_theta[i] for i in virtual]
  with tf.GradientTape(watch_accessed_variables=False) as meta_tape:
    meta_tape.watch(moving)
    meta_loss, meta_losses, meta_logits = model.meta_objective(
        fast_theta, state, *meta)
  # This replica's share of v, summed as the step's sums are.
  v = total(meta_tape.gradient(meta_loss, moving))
  eps = model.fd_epsilon / (tf.linalg.global_norm(v) + 1e-12)

  def losses_along(sign):
    shifted = list(theta)
    for i, d in zip(virtual, v):
      shifted[i] = theta[i] + tf.cast(sign * eps, d.dtype) * d
    logits, _ = model.classifier.stateless_call(shifted, state, train[0],
                                                training=True)
    return per_sample_loss(train[1], logits)

  # ∇θL_i · v per train sample, `[n]`.
  slopes = tf.stop_gradient((losses_along(1.0) - losses_along(-1.0)) /
                            tf.cast(2 * eps, losses.dtype))
  alpha = tf.cast(model.optimizer.learning_rate, losses.dtype)
  with tf.GradientTape(watch_accessed_variables=False) as v_tape:
    v_tape.watch(phi)
    coeffs = loss_coefficients(
        model.weights_for(tf.stop_gradient(losses), train[1]),
        model.normalize_weights, total)
    surrogate = -alpha * tf.reduce_sum(coeffs * slopes)
  return v_tape.gradient(surrogate, phi), meta_losses, meta_logits
