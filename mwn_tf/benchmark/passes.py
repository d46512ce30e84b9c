"""Where the exact step's time goes: its passes, added one at a time."""

import time
from typing import List, Sequence

import numpy as np

from mwn_tf.benchmark.step_time import Result
from mwn_tf.benchmark.step_time import result_from_rounds

PASSES = ("plain: F + B", "F + B1", "F + B1 + B3",
          "F + B1 + Fm + Bm + B3", "exact: + second order",
          "top-k floor: F + B + Fm")
# The row whose added cost is taken against plain, not the row above it.
_FROM_PLAIN = "top-k floor: F + B + Fm"


def pass_breakdown(model: str = "resnet32", batch_size: int = 100,
                   input_shape: Sequence[int] = (32, 32, 3),
                   num_classes: int = 10, rounds: int = 5, warmup: int = 2,
                   seed: int = 0, log=print) -> List[Result]:
  """Where the exact step's time goes: its passes, added one at a time.

  Times five graph functions, each composed of the methods that
  `MetaWeightModel.train_step` itself calls for its passes (`train_forward`,
  `virtual_weights`, `meta_objective`, `actual_gradients`; the model is the
  exact default, SGD(0.1)), gradients only (no optimizer, no metrics),
  interleaved in each round:
    plain: F + B              the forward and stage 3's backward with the
                              baseline's coefficients 1/n;
    F + B1                    the forward and stage 1 (the virtual step);
    F + B1 + B3               plus stage 3's backward on the same forward;
    F + B1 + Fm + Bm + B3     plus stage 2's meta forward and backward
                              (w.r.t. the virtual weights, first order);
    exact: + second order     V's meta-gradient through stage 1, as the
                              step takes it;
    top-k floor: F + B + Fm   the plain step plus one forward of the meta
                              batch without a tape: what `virtual_layers`
                              cannot go below (the meta batch must pass
                              through the lower layers once), so a
                              `last<k>` step near it already computes the
                              lower activations once and backpropagates
                              only through the top layers.
  Differences between rows are the passes' costs (the floor's: against
  plain).

  Args:
    model: Registry name of the classifier.
    batch_size: Train and meta batch size.
    input_shape: One image's shape.
    num_classes: Classes.
    rounds: Timed rounds (one call of each function per round).
    warmup: Untimed calls of each function first.
    seed: Seeds weights and data.
    log: Progress printer (None for silence).

  Returns:
    One `Result` per row of `PASSES` (`peak_mib` None).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  log = log or (lambda *a, **k: None)
  fns = _pass_functions(model, batch_size, input_shape, num_classes, seed)

  def call(fn):
    start = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), fn())
    return time.perf_counter() - start

  for fn in fns.values():
    for _ in range(warmup):
      call(fn)
  times = {name: [] for name in fns}
  for r in range(rounds):
    order = list(fns)[r % len(fns):] + list(fns)[:r % len(fns)]
    for name in order:
      times[name].append(call(fns[name]))
    log(f"  round {r + 1}/{rounds}: " + ", ".join(
        f"{n.split(':')[0]} {1000 * times[n][-1]:.0f}" for n in fns) + " ms")
  return [result_from_rounds(name, t, times[PASSES[0]], batch_size, None,
                             rounds)
          for name, t in times.items()]


def _pass_functions(model, batch_size, input_shape, num_classes, seed):
  """`PASSES` row -> graph function running those passes of the step."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import mwn_tf  # pylint: disable=g-import-not-at-top
  from mwn_tf.meta_model import loss_coefficients  # pylint: disable=g-import-not-at-top

  keras.utils.set_random_seed(seed)
  net = mwn_tf.MetaWeightModel(mwn_tf.models.get(
      model, num_classes=num_classes, input_shape=tuple(input_shape)))
  net.compile(optimizer=keras.optimizers.SGD(0.1))
  theta = [v.value for v in net.classifier.trainable_variables]
  state = [v.value for v in net.classifier.non_trainable_variables]
  phi = [v.value for v in net.weight_net.trainable_variables]
  rng = np.random.default_rng(seed)
  x, xm = (tf.constant(rng.normal(size=(batch_size, *input_shape)),
                       tf.float32) for _ in range(2))
  y, ym = (tf.constant(rng.integers(0, num_classes, batch_size), tf.int32)
           for _ in range(2))

  def passes(virtual, stage3, meta, second_order):
    @tf.function
    def step():
      tape, _, _, reg, losses = net.train_forward(theta, state, x, y)
      if not virtual:  # The baseline's c_i = 1/n.
        coeffs = loss_coefficients(tf.ones_like(losses), "none")
        grads = net.actual_gradients(tape, losses, reg, theta, coeffs)
        if meta:  # the top-k floor: one meta forward, no tape
          logits, _ = net.classifier.stateless_call(theta, state, xm,
                                                    training=True)
          grads = grads + [tf.reduce_sum(logits)]
        return grads
      with tf.GradientTape(watch_accessed_variables=False) as meta_tape:
        if second_order:
          meta_tape.watch(phi)
        out = fast = net.virtual_weights(tape, losses, y, theta)
        if meta:
          if not second_order:
            meta_tape.watch(fast)
          meta_loss, _, _ = net.meta_objective(fast, state, xm, ym)
      if meta:
        out = meta_tape.gradient(meta_loss, phi if second_order else fast)
      if stage3:
        weights = tf.stop_gradient(
            net.weights_for(tf.stop_gradient(losses), y))
        out = out + net.actual_gradients(
            tape, losses, reg, theta,
            loss_coefficients(weights, net.normalize_weights))
      return out
    return step

  return dict(zip(PASSES, (passes(False, False, False, False),
                           passes(True, False, False, False),
                           passes(True, True, False, False),
                           passes(True, True, True, False),
                           passes(True, True, True, True),
                           passes(False, False, True, False))))


def passes_markdown(results: Sequence[Result], *, command: str) -> str:
  """`pass_breakdown` results as a markdown table."""
  lines = [f"`{command}`", "",
           "| passes | ms (median) | range | × plain (median) | added by this "
           "row (ms) |", "|---|---:|---:|---:|---:|"]
  previous = plain = None
  for r in results:
    base = plain if r.mode == _FROM_PLAIN else previous
    added = "" if base is None else f"{r.ms - base:+.0f}"
    plain = r.ms if plain is None else plain
    lines.append(f"| {r.mode} | {r.ms:.0f} | {r.ms_range[0]:.0f}–"
                 f"{r.ms_range[1]:.0f} | {r.ratio:.2f} | {added} |")
    previous = r.ms
  return "\n".join(lines) + "\n"

