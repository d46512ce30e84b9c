"""Speed options of the Meta-Weight-Net step, as small helpers.

`MetaWeightModel.train_step` (mwn_tf/meta_model.py) uses these for:

  * `meta_interval=k`: stages 1-2 (virtual step and V's update) run on every
    k-th step only; the other steps take the actual update (stage 3) with the
    current V, which costs a plain step plus one pass of the tiny V.
  * `virtual_layers=k`: the virtual step moves only the trainable variables of
    the classifier's last k layers (that own any); the rest stay at θ, so their
    virtual update and its dependence on V are dropped. The second-order pass
    then stops at those layers: the backward passes of stages 1-2 through the
    rest of the network disappear and only the meta batch's forward remains.
  * Mixed precision with loss scaling through the second-order path
    (`loss_scales`, `unscale`): every float16 quantity of the three stages is
    a scaled one, and the scales cancel exactly (they are powers of two).

A smaller meta batch needs nothing here: it is the data pipeline's
`train_and_meta(global_batch_size, meta_batch_size=m)`.
"""

from typing import List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from mwn_tf.models import batch_norm


def virtual_variable_indices(classifier: keras.Model,
                             virtual_layers: Optional[int]) -> List[int]:
  """Which of `classifier.trainable_variables` take the virtual step.

  Args:
    classifier: A built Keras model.
    virtual_layers: None for all of them (the exact step), or k >= 1: the
      trainable variables of the last k layers of `classifier.layers` (its
      top-level layers in topological order) that own trainable variables.
      For the registry's models k = 1 is the logits layer.

  Returns:
    Sorted indices into `classifier.trainable_variables`.

  Raises:
    ValueError: k < 1, or k larger than the number of such layers.
  """
  variables = classifier.trainable_variables
  if virtual_layers is None:
    return list(range(len(variables)))
  owners = [layer for layer in classifier.layers if layer.trainable_variables]
  if not 1 <= int(virtual_layers) <= len(owners):
    raise ValueError(
        f"virtual_layers must be None (every layer: the exact step) or in "
        f"[1, {len(owners)}] (the layers of {classifier.name!r} that own "
        f"trainable variables), got {virtual_layers!r}.")
  chosen = {id(v) for layer in owners[-int(virtual_layers):]
            for v in layer.trainable_variables}
  return [i for i, v in enumerate(variables) if id(v) in chosen]


# What `fast_mode="recommended"` sets: the configuration the Fashion-MNIST
# study at the scale recipe chose (docs/speed.md, "The one switch").
RECOMMENDED = {"virtual_layers": 2}
# The exact step's values of the options a fast mode sets.
EXACT = {"meta_interval": 1, "virtual_layers": None,
         "hypergradient": "second_order", "exact_warmup_steps": 0}


def resolve(fast_mode: str, options: dict) -> dict:
  """The fast options in effect: `options` itself for `fast_mode="off"`,
  `RECOMMENDED` over the exact values for `"recommended"`.

  Args:
    fast_mode: "off" or "recommended".
    options: {name: value} of the `EXACT` keys, as passed.

  Raises:
    ValueError: "recommended" together with an option set away from exact
      (one switch or the options, not both); the message starts with
      "fast_mode".
  """
  if fast_mode == "off":
    return dict(options)
  changed = sorted(k for k, v in options.items() if v != EXACT[k])
  if changed:
    raise ValueError(
        f"fast_mode = {fast_mode!r} sets the fast options itself; leave "
        f"{', '.join(changed)} at the exact default, or set fast_mode = 'off'.")
  return {**EXACT, **RECOMMENDED}


def computes_in_float16(model: keras.Model) -> bool:
  """Whether any layer of `model` computes in float16 (mixed_float16)."""
  return any(layer.dtype_policy.compute_dtype == "float16"
             for layer in batch_norm.all_layers(model))


def every(interval: int, step, fn) -> None:
  """Runs `fn()` on steps 0, k, 2k, ... (`step % interval == 0`).

  With `interval == 1` it simply calls `fn` (no conditional in the graph, so
  the exact step's graph is unchanged); otherwise `when` does.

  Args:
    interval: k >= 1.
    step: Scalar integer tensor, the step about to be taken (e.g. the
      classifier optimizer's `iterations`); the same on every replica.
    fn: Callable of no arguments; its return value is discarded.
  """
  if interval == 1:
    fn()
    return
  when(tf.equal(step % interval, 0), fn)


def schedule(step, interval: int, exact_steps: int, exact_fn, fast_fn) -> None:
  """The meta update of one step under the fast options.

  Steps `[0, exact_steps)` run `exact_fn` (the warm-up: V's shape settles
  early, so the exact step is spent where it matters); later steps run
  `fast_fn` on every `interval`-th step. With `exact_steps == 0` this is
  `every(interval, step, fast_fn)`, graph included.

  Args:
    step: Scalar integer tensor, the step about to be taken.
    interval: k >= 1, the fast phase's `meta_interval`.
    exact_steps: >= 0, the warm-up's length in steps.
    exact_fn, fast_fn: Callables of no arguments.
  """
  if exact_steps == 0:
    every(interval, step, fast_fn)
    return
  warm = step < exact_steps
  when(warm, exact_fn)
  when(tf.logical_and(tf.logical_not(warm), tf.equal(step % interval, 0)),
       fast_fn)


def when(condition, fn) -> None:
  """Runs `fn()` where the scalar bool tensor `condition` holds.

  A `tf.cond` whose other branch does nothing: only the taken branch runs,
  so the skipped steps cost nothing of `fn`.

  `fn` may hold cross-replica all-reduces and an optimizer update. Thread-
  based strategies (Mirrored, MultiWorkerMirrored) cannot `merge_call` from
  inside a `tf.cond` in a replica context, so there the cond is taken in the
  cross-replica context and `fn` runs per replica inside it, the way Keras'
  `LossScaleOptimizer` skips a step; each replica runs its own `fn` (a
  closure over its own tensors). `condition` must be the same on every
  replica (a function of the step).
  """
  def run(f):
    f()
    return tf.constant(True)

  context = tf.distribute.get_replica_context()
  if (context is None or context.num_replicas_in_sync == 1 or
      tf.__internal__.distribute.strategy_supports_no_merge_call() or
      not isinstance(context.strategy, _THREADED_STRATEGIES)):
    tf.cond(condition, lambda: run(fn), lambda: tf.constant(False))
    return

  def cross_replica(strategy, per_replica_fn):
    return tf.cond(
        condition,
        lambda: _all_true(strategy, strategy.extended.call_for_each_replica(
            run, args=(per_replica_fn,))),
        lambda: tf.constant(False))

  context.merge_call(cross_replica, args=(fn,))


def _all_true(strategy, per_replica):
  del per_replica  # each replica's fn ran; the cond needs one tensor
  del strategy
  return tf.constant(True)


# Strategies whose replicas are Python threads, joined by merge_call.
_THREADED_STRATEGIES = (tf.distribute.MirroredStrategy,
                        tf.distribute.MultiWorkerMirroredStrategy)


def loss_scales(optimizer, meta_optimizer) -> Tuple[object, object]:
  """The loss scales (S, S_meta) of the two optimizers, 1 where unscaled.

  S is the classifier's `LossScaleOptimizer` scale (mixed_float16), used for
  the train batch's backward passes (stages 1 and 3); S_meta is the meta
  optimizer's, used for the meta loss (stage 2). Each is a Python 1 when the
  optimizer does not scale, so float32 and bfloat16 graphs get no extra ops.
  """
  return _scale_of(optimizer), _scale_of(meta_optimizer)


def _scale_of(optimizer):
  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    return tf.convert_to_tensor(optimizer.dynamic_scale)
  return 1  # also for None: the baseline has no meta optimizer


def is_unit(scale) -> bool:
  """Whether `scale` is the Python 1 that `loss_scales` gives unscaled."""
  return isinstance(scale, (int, float)) and scale == 1


def inverse(scale):
  """1 / scale (exact: loss scales are powers of two); 1 stays a Python 1."""
  return 1 if is_unit(scale) else 1.0 / scale


def unscale(scaled_value, scale):
  """`scaled_value / scale`, whose gradient is the incoming one UNdivided.

  The virtual step is θ̂ = θ − α · g_S / S, with g_S the backward pass of the
  loss scaled by S. The meta-gradient flows back through this division into a
  second-order pass over float16 activations; leaving the adjoint multiplied
  by S there (instead of dividing it back to unit scale) keeps those float16
  values in the range loss scaling exists for. V's gradient then carries one
  extra factor S, which the caller divides out (`MetaWeightModel`).

  Args:
    scaled_value: A tensor g_S.
    scale: S, a scalar tensor, or the Python 1 (returns `scaled_value`).

  Returns:
    g_S / S.
  """
  if is_unit(scale):
    return scaled_value

  @tf.custom_gradient
  def _unscale(t):
    def grad(upstream):
      return upstream
    return t / tf.cast(scale, t.dtype), grad

  return _unscale(scaled_value)


def scaled(values: Sequence, scale) -> list:
  """`[v * scale for v in values]` in each value's dtype; `values` as a list
  when `scale` is the Python 1 (no op added)."""
  if is_unit(scale):
    return list(values)
  return [v * tf.cast(scale, v.dtype) for v in values]
