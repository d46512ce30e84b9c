"""The convolutions a plain and an exact step must run, timed alone."""

import dataclasses
import statistics
import time
from typing import Dict, Sequence

import numpy as np

CONV_KERNELS = ("forward", "backprop filter", "backprop input")


@dataclasses.dataclass
class ConvFloor:
  """The convolutions of a plain and an exact step, timed alone.

  Attributes:
    layers: Conv2D layers in the classifier.
    kernel_ms: Median ms of one pass of each of `CONV_KERNELS` over all
      layers (backprop input: every layer but the first, whose input is the
      image and needs no gradient).
    plain_ms, exact_ms: Median over rounds of the convolution time of a plain
      and an exact step (see `conv_floor` for the counts).
    ratio, ratio_range: exact / plain within each round: median and range.
  """
  layers: int
  kernel_ms: Dict[str, float]
  plain_ms: float
  exact_ms: float
  ratio: float
  ratio_range: tuple


def conv_floor(model: str = "resnet32", batch_size: int = 100,
               input_shape: Sequence[int] = (32, 32, 3),
               num_classes: int = 10, rounds: int = 5, repeats: int = 10,
               seed: int = 0, log=print) -> ConvFloor:
  """Times the convolutions an exact step cannot avoid, against plain's.

  Each Conv2D layer's three kernels run alone, at the layer's own shapes:
  forward F, the weight gradient BF and the input gradient BI. The counts
  come from the algorithm (and match the TF profile of the step):
    plain = F + BF + BI'
    exact = F (train batch) + F (meta batch, virtual weights)
            + 3 (BF + BI')        stage-1, meta and stage-3 backward passes
            + F + F'              the second-order pass: per layer, the
                                  tangent of its output is conv(x, V) +
                                  conv(ẋ, W), two forward convolutions
  where BI' and F' leave out the first layer (its input is the image). So
  exact / plain here is the ratio the exact step would reach if everything
  but its convolutions were free. Dense layers are left out (a few matmuls).

  Args:
    model: Registry name of the classifier.
    batch_size: Train and meta batch size.
    input_shape: One image's shape.
    num_classes: Classes.
    rounds: Rounds; each times every kernel of every layer.
    repeats: Calls of each kernel per round (their mean is the time).
    seed: Seeds weights and data.
    log: Progress printer (None for silence).

  Returns:
    A `ConvFloor`.
  """
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import mwn_tf  # pylint: disable=g-import-not-at-top

  log = log or (lambda *a, **k: None)
  keras.utils.set_random_seed(seed)
  clf = mwn_tf.models.get(model, num_classes=num_classes,
                          input_shape=tuple(input_shape))
  convs = list(_conv_layers(clf, keras))
  if not convs:
    raise ValueError(f"{model!r} has no Conv2D layer to time.")
  rng = np.random.default_rng(seed)
  kernels = []   # per layer: {kernel name: graph function}
  for i, layer in enumerate(convs):
    if layer.groups != 1 or layer.data_format != "channels_last":
      raise ValueError(f"{layer.name}: only channels_last, ungrouped "
                       "convolutions are timed.")
    x = tf.constant(rng.normal(size=(batch_size, *layer.input.shape[1:])),
                    tf.float32)
    dy = tf.constant(rng.normal(size=(batch_size, *layer.output.shape[1:])),
                     tf.float32)
    w = tf.constant(layer.kernel.numpy(), tf.float32)
    opts = dict(strides=[1, *layer.strides, 1],
                padding=layer.padding.upper(),
                dilations=[1, *layer.dilation_rate, 1])
    fns = {
        "forward": tf.function(lambda x=x, w=w, o=opts: tf.raw_ops.Conv2D(
            input=x, filter=w, **o)),
        "backprop filter": tf.function(
            lambda x=x, w=w, dy=dy, o=opts: tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=tf.shape(w), out_backprop=dy, **o)),
    }
    if i:
      fns["backprop input"] = tf.function(
          lambda x=x, w=w, dy=dy, o=opts: tf.raw_ops.Conv2DBackpropInput(
              input_sizes=tf.shape(x), filter=w, out_backprop=dy, **o))
    kernels.append(fns)

  def timed(fn):
    start = time.perf_counter()
    for _ in range(repeats):
      out = fn()
    out.numpy()
    return (time.perf_counter() - start) / repeats

  for fns in kernels:   # trace and warm up
    for fn in fns.values():
      fn().numpy()
  per_round = {k: [] for k in CONV_KERNELS}
  first_forward, plain, exact = [], [], []
  for r in range(rounds):
    total = dict.fromkeys(CONV_KERNELS, 0.0)
    for i, fns in enumerate(kernels):
      for name, fn in fns.items():
        t = timed(fn)
        total[name] += t
        if i == 0 and name == "forward":
          first_forward.append(t)
    for name in CONV_KERNELS:
      per_round[name].append(total[name])
    f, bf, bi = (total[k] for k in CONV_KERNELS)
    plain.append(f + bf + bi)
    exact.append(2 * f + 3 * (bf + bi) + f + (f - first_forward[-1]))
    log(f"  round {r + 1}/{rounds}: plain {1000 * plain[-1]:.0f}, exact "
        f"{1000 * exact[-1]:.0f} ms of convolutions")
  ratios = [e / p for e, p in zip(exact, plain)]
  return ConvFloor(
      layers=len(convs),
      kernel_ms={k: 1000 * statistics.median(v) for k, v in per_round.items()},
      plain_ms=1000 * statistics.median(plain),
      exact_ms=1000 * statistics.median(exact),
      ratio=statistics.median(ratios), ratio_range=(min(ratios), max(ratios)))


def _conv_layers(model, keras):
  """The Conv2D layers of `model`, nested models included, in order."""
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      yield from _conv_layers(layer, keras)
    elif isinstance(layer, keras.layers.Conv2D):
      yield layer


def conv_floor_markdown(floor: ConvFloor, *, command: str) -> str:
  """`conv_floor`'s result as a markdown table."""
  counts = {"forward": ("1", "4 (F, Fm, 2 in the second-order pass; the "
                        "first layer 1 there)"),
            "backprop filter": ("1", "3 (B1, Bm, B3)"),
            "backprop input": ("1", "3 (B1, Bm, B3)")}
  lines = [f"`{command}`", "",
           f"| kernel ({floor.layers} Conv2D layers) | ms per pass (median) "
           "| passes in plain | passes in exact |", "|---|---:|---:|---:|"]
  for name in CONV_KERNELS:
    lines.append(f"| {name} | {floor.kernel_ms[name]:.0f} | "
                 f"{counts[name][0]} | {counts[name][1]} |")
  lines += ["", f"Convolutions of a plain step: {floor.plain_ms:.0f} ms; of "
            f"an exact step: {floor.exact_ms:.0f} ms; exact / plain "
            f"{floor.ratio:.2f} (range {floor.ratio_range[0]:.2f}–"
            f"{floor.ratio_range[1]:.2f})."]
  return "\n".join(lines) + "\n"

