"""Step time of MW-Net's modes against the plain step, in one process.

Every mode is timed through the real `fit()` train function
(`model.make_train_function()` then `model.train_function(iterator)`,
exactly what `fit()` calls each step), after a warm-up that traces and
compiles it. The modes are interleaved step by step (plain, mode A, mode B,
plain, ...), so machine load hits them alike; each round is a few steps of
every mode, the ratio to the plain step is taken within each round, and the
median and the range over rounds are reported. Inputs are synthetic (random
images and labels, one constant batch), so the input pipeline is not timed.

Columns of `to_markdown`: median over rounds of the mean ms per step, and its
range; × plain (the per-round ratio: median and range); train examples per
second; peak memory of a step in MiB: the TF allocator's peak during the
mode's steps minus what was allocated before them (so the variables of every
model built here are not counted), on the CPU as on a GPU or TPU. The
process's peak RSS is in the header.
"""

import dataclasses
import datetime
import gc
import os
import platform
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from mwn_tf.benchmark.modes import describe
from mwn_tf.benchmark.modes import Mode
from mwn_tf.benchmark.modes import parse_mode

@dataclasses.dataclass
class Result:
  """Timings of one mode.

  Attributes:
    mode: The mode string.
    ms: Median over rounds of the mean ms per step within a round.
    ms_range: (min, max) of those round means.
    ratio: Median over rounds of (this mode's mean step / plain's).
    ratio_range: (min, max) of those per-round ratios.
    examples_per_s: Train examples per second at the median.
    peak_mib: Largest step peak over the steps (see module docstring), or
      None where the device reports no memory statistics.
    steps: Steps timed.
  """
  mode: str
  ms: float
  ms_range: tuple
  ratio: float
  ratio_range: tuple
  examples_per_s: float
  peak_mib: Optional[float]
  steps: int


def _memory_device(tf):
  for kind in ("TPU", "GPU"):
    if tf.config.list_logical_devices(kind):
      return f"{kind}:0"
  return "CPU:0"


def _memory_info(tf, device):
  try:
    return tf.config.experimental.get_memory_info(device)
  except (ValueError, tf.errors.OpError, NotImplementedError):
    return None


def _reset_memory(tf, device):
  try:
    tf.config.experimental.reset_memory_stats(device)
  except (ValueError, tf.errors.OpError, NotImplementedError):
    pass


def build(mode: Mode, model: str, batch_size: int, input_shape: Sequence[int],
          num_classes: int, seed: int = 0, strategy=None):
  """Builds and compiles a model for `mode` and an endless synthetic stream.

  Args:
    mode: From `parse_mode`.
    model: A `mwn_tf.models` registry name.
    batch_size: Train batch size n (and meta batch size unless the mode says).
    input_shape: One image's shape.
    num_classes: Classes K.
    seed: Seeds the weights and the synthetic data.
    strategy: A `tf.distribute.Strategy`, or None for the default one.

  Returns:
    (compiled MetaWeightModel with its train function made, iterator).
  """
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import mwn_tf  # pylint: disable=g-import-not-at-top

  strategy = strategy or tf.distribute.get_strategy()
  keras.utils.set_random_seed(seed)
  with strategy.scope():
    classifier = mwn_tf.models.get(
        model, num_classes=num_classes, input_shape=tuple(input_shape),
        dtype=mode.dtype, batch_norm_cls=(
            keras.layers.BatchNormalization if mode.keras_bn else None))
    net = mwn_tf.MetaWeightModel(classifier, **mode.model_kwargs)
    net.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                meta_optimizer=keras.optimizers.Adam(1e-3),
                **mode.compile_kwargs)
  rng = np.random.default_rng(seed)

  def batch(size):
    return {"image": rng.normal(size=(size, *input_shape)).astype(np.float32),
            "label": rng.integers(0, num_classes, size).astype(np.int32)}

  pair = (batch(batch_size), batch(mode.meta_batch_size or batch_size))
  data = tf.data.Dataset.from_tensors(pair).repeat()
  if strategy.num_replicas_in_sync > 1 or "TPU" in type(strategy).__name__:
    data = strategy.experimental_distribute_dataset(data)
  net.make_train_function()
  return net, iter(data)


def _step(net, iterator):
  logs = net.train_function(iterator)
  # Fetching a result waits for the step (on accelerators, dispatch is
  # asynchronous; the device runs the steps in order).
  next(iter(logs.values())).numpy()


def run(modes: Sequence[str], model: str = "resnet32", batch_size: int = 100,
        input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10,
        rounds: int = 5, steps: Optional[int] = None, warmup: int = 2,
        seed: int = 0, strategy=None, log=print) -> List[Result]:
  """Times each mode (plus "plain", always) in this process.

  Every mode is built, compiled and warmed up first. Then each round runs
  `steps` steps of every mode, ONE STEP AT A TIME round-robin (plain, mode A,
  mode B, plain, ...; the order rotates between rounds), so load on a shared
  machine, which drifts over seconds, hits all modes alike. A mode's time in
  a round is its mean step; its ratio to plain is taken within the round.

  Args:
    modes: Mode strings.
    model: Registry name of the classifier.
    batch_size: Train batch size.
    input_shape: One image's shape.
    num_classes: Classes.
    rounds: Rounds; the spread reported is over these.
    steps: Steps of each mode per round; must be a multiple of every
      `meta_interval`, so each round holds the same share of meta steps.
      Default: the least common multiple of the intervals, at least 4.
    warmup: Untimed steps per mode (times its interval) before the rounds.
    seed: Seed for weights and data.
    strategy: A `tf.distribute.Strategy` to build in (None: the default).
    log: Progress printer (None for silence).

  Returns:
    One `Result` per mode, "plain" first.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  log = log or (lambda *a, **k: None)
  names = ["plain"] + [m for m in dict.fromkeys(modes) if m != "plain"]
  parsed = {name: parse_mode(name) for name in names}
  intervals = [parsed[n].model_kwargs.get("meta_interval", 1) for n in names]
  cycle = int(np.lcm.reduce(intervals))
  if steps is None:
    steps = cycle * -(-4 // cycle)
  if steps % cycle:
    raise ValueError(f"steps={steps} must be a multiple of every mode's "
                     f"meta_interval (their least common multiple: {cycle}).")
  device = _memory_device(tf)
  built: Dict[str, tuple] = {}
  for name, interval in zip(names, intervals):
    start = time.perf_counter()
    built[name] = build(parsed[name], model, batch_size, input_shape,
                        num_classes, seed, strategy)
    # A multiple of the interval, so the timed steps start on a meta step.
    for _ in range(max(warmup, 1) * interval):
      _step(*built[name])
    log(f"  built and warmed up {name} in {time.perf_counter() - start:.1f}s")

  # One untimed step of each, back to back as the timed rounds run them.
  for name, interval in zip(names, intervals):
    for _ in range(interval):
      _step(*built[name])
  totals = {name: [] for name in names}
  peaks = {name: [] for name in names}
  gc.collect()
  gc.disable()  # a collection would pause whichever step it lands in
  try:
    for r in range(rounds):
      order = names[r % len(names):] + names[:r % len(names)]
      spent = dict.fromkeys(names, 0.0)
      for _ in range(steps):
        for name in order:
          before = _memory_info(tf, device)
          _reset_memory(tf, device)
          start = time.perf_counter()
          _step(*built[name])
          spent[name] += time.perf_counter() - start
          after = _memory_info(tf, device)
          if before is not None and after is not None:
            peaks[name].append((after["peak"] - before["current"]) / 2**20)
      for name in names:
        totals[name].append(spent[name] / steps)
      log(f"  round {r + 1}/{rounds}: " + ", ".join(
          f"{n} {1000 * totals[n][-1]:.0f}" for n in names) + " ms/step")
  finally:
    gc.enable()

  return [result_from_rounds(name, totals[name], totals["plain"], batch_size,
                  max(peaks[name]) if peaks[name] else None, rounds * steps)
          for name in names]



def result_from_rounds(mode, seconds, plain_seconds, batch_size, peak_mib, steps):
  """A `Result` from per-round times (s), its ratios taken round by round."""
  ratios = [t / p for t, p in zip(seconds, plain_seconds)]
  ms = 1000 * statistics.median(seconds)
  return Result(
      mode=mode, ms=ms, ms_range=(1000 * min(seconds), 1000 * max(seconds)),
      ratio=statistics.median(ratios), ratio_range=(min(ratios), max(ratios)),
      examples_per_s=batch_size / (ms / 1000), peak_mib=peak_mib, steps=steps)



def peak_rss_mib() -> Optional[float]:
  """This process's peak resident memory so far, in MiB (None if unknown)."""
  try:
    import resource  # pylint: disable=g-import-not-at-top
  except ImportError:  # Windows
    return None
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  # ru_maxrss is KiB on Linux, bytes on macOS.
  return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as cpuinfo:
      for line in cpuinfo:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"


def to_markdown(results: Sequence[Result], *, command: str, model: str,
                batch_size: int, input_shape: Sequence[int], rounds: int,
                steps: int) -> str:
  """The results as a markdown table with a header saying how they were
  taken."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  device = _memory_device(tf)
  rss = "n/a" if peak_rss_mib() is None else f"{peak_rss_mib():.0f}"
  accel = tf.config.list_logical_devices(device.split(":")[0])
  where = (f"{device} ({accel[0].name})" if device != "CPU:0" else
           f"CPU, {os.cpu_count()} cores ({_cpu_name()})")
  lines = [
      f"`{command}`",
      "",
      f"{model}, batch {batch_size}, inputs {tuple(input_shape)}, {where}, "
      f"TF {tf.__version__}; {rounds} rounds of {steps} steps per mode, the "
      f"modes interleaved step by step; {datetime.date.today().isoformat()}; "
      f"process peak RSS {rss} MiB.",
      "",
      "| mode | options | ms/step (median) | range over rounds | × plain "
      "(median) | × plain range | examples/s | step peak MiB |",
      "|---|---|---:|---:|---:|---:|---:|---:|",
  ]
  for r in results:
    peak = "n/a" if r.peak_mib is None else f"{r.peak_mib:.0f}"
    lines.append(
        f"| {r.mode} | {describe(r.mode)} | {r.ms:.0f} | "
        f"{r.ms_range[0]:.0f}–{r.ms_range[1]:.0f} | {r.ratio:.2f} | "
        f"{r.ratio_range[0]:.2f}–{r.ratio_range[1]:.2f} | "
        f"{r.examples_per_s:.0f} | {peak} |")
  return "\n".join(lines) + "\n"

