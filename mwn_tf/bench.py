r"""Step-time benchmark of MW-Net's modes against the plain step (issue 6).

  python -m mwn_tf.bench --model=resnet32 --batch_size=100 \
      --modes=plain,exact,interval10,last1 --out=bench.md

Every mode is timed in ONE process, through the real `fit()` train function
(`model.make_train_function()` then `model.train_function(iterator)`, exactly
what `fit()` calls each step), after a warm-up that traces and compiles it.
The modes are interleaved step by step (plain, mode A, mode B, plain, ...),
so machine load hits them alike; each round is a few steps of every mode, the
ratio to the plain step is taken within each round, and the median and the
range over rounds are reported. Inputs are synthetic (random images and
labels, one constant batch), so the input pipeline is not timed.

A mode is "+"-joined tokens:
  plain        method="baseline": the plain step, through the same model.
  exact        MW-Net, every option at its exact default.
  interval<k>  meta_interval=k: stages 1-2 every k steps.
  last<k>      virtual_layers=k: the virtual step moves the last k layers.
  meta<m>      a meta batch of m samples (data option `meta_batch_size`).
  xla          compile(jit_compile=True).
  bf16, fp16   mixed_bfloat16 / mixed_float16 classifier (fp16 with loss
               scaling, as Keras does by default).
  kerasbn      the registry model with Keras' BatchNormalization instead of
               mwn_tf's MetaBatchNormalization (same values, autodiff
               second derivative).
e.g. "exact+xla", "last1+interval2", "exact+meta25".

Columns: median over rounds of the mean ms per step, and its range; × plain
(the per-round ratio: median and range); train examples per second; peak
memory of a step in MiB: the TF allocator's peak during the mode's steps
minus what was allocated before them (so the variables of every model built
here are not counted), on the CPU as on a GPU or TPU. The process's peak RSS
is in the header.

On a GPU it runs as is; `--strategy=mirrored` or `--strategy=tpu --tpu=...`
builds the models in that strategy's scope (the batch is then global).

`--task=accuracy` instead runs the offline quickstart (gin/quickstart.gin:
digits, 40% uniform noise, an MLP) through the runner once per mode and seed
and reports the final-epoch test accuracy (mean ± sd over seeds):

  python -m mwn_tf.bench --task=accuracy --modes=plain,exact,last1+interval2

`--task=passes` times the exact step's passes one at a time (see
`pass_breakdown`), to show where its time goes:

  python -m mwn_tf.bench --task=passes --rounds=8

`--task=convs` times, kernel by kernel, the convolutions that a plain and an
exact step must run (see `conv_floor`): the exact step's floor if everything
else were free.

  python -m mwn_tf.bench --task=convs
"""

import contextlib
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

_TOKENS = ("plain", "exact", "interval<k>", "last<k>", "meta<m>", "xla",
           "bf16", "fp16", "kerasbn")


@dataclasses.dataclass
class Mode:
  """What one benchmark mode builds.

  Attributes:
    name: The mode string, e.g. "last1+interval2".
    model_kwargs: Keyword arguments for `MetaWeightModel`.
    compile_kwargs: Keyword arguments for `MetaWeightModel.compile`.
    meta_batch_size: Meta batch size, or None for the train batch size.
    dtype: Classifier dtype policy name, or None for float32.
    keras_bn: Build the classifier with Keras' BatchNormalization instead of
      `MetaBatchNormalization`.
  """
  name: str
  model_kwargs: dict
  compile_kwargs: dict
  meta_batch_size: Optional[int] = None
  dtype: Optional[str] = None
  keras_bn: bool = False


def parse_mode(name: str) -> Mode:
  """Parses a mode string (see the module docstring).

  Args:
    name: "+"-joined tokens.

  Returns:
    The `Mode`.

  Raises:
    ValueError: an unknown token, or "plain" joined with MW-Net options.
  """
  mode = Mode(name, {}, {})
  tokens = name.split("+")
  for token in tokens:
    if token == "plain":
      mode.model_kwargs["method"] = "baseline"
    elif token == "exact":
      pass
    elif token == "xla":
      mode.compile_kwargs["jit_compile"] = True
    elif token == "kerasbn":
      mode.keras_bn = True
    elif token in ("bf16", "fp16"):
      mode.dtype = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[token]
    elif token.startswith("interval") and token[8:].isdigit():
      mode.model_kwargs["meta_interval"] = int(token[8:])
    elif token.startswith("last") and token[4:].isdigit():
      mode.model_kwargs["virtual_layers"] = int(token[4:])
    elif token.startswith("meta") and token[4:].isdigit():
      mode.meta_batch_size = int(token[4:])
    else:
      raise ValueError(f"Unknown benchmark mode token {token!r} in {name!r}; "
                       f"tokens are {', '.join(_TOKENS)}, joined with '+'.")
  if mode.model_kwargs.get("method") == "baseline" and (
      set(mode.model_kwargs) - {"method"} or mode.meta_batch_size):
    raise ValueError(f"{name!r}: 'plain' takes no MW-Net options.")
  return mode


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
  from mwn_tf.models.layers import keras_batch_norm  # pylint: disable=g-import-not-at-top

  strategy = strategy or tf.distribute.get_strategy()
  keras.utils.set_random_seed(seed)
  with strategy.scope():
    with (keras_batch_norm() if mode.keras_bn else contextlib.nullcontext()):
      classifier = mwn_tf.models.get(model, num_classes=num_classes,
                                     input_shape=tuple(input_shape),
                                     dtype=mode.dtype)
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

  return [_result(name, totals[name], totals["plain"], batch_size,
                  max(peaks[name]) if peaks[name] else None, rounds * steps)
          for name in names]


def _result(mode, seconds, plain_seconds, batch_size, peak_mib, steps):
  """A `Result` from per-round times (s), its ratios taken round by round."""
  ratios = [t / p for t, p in zip(seconds, plain_seconds)]
  ms = 1000 * statistics.median(seconds)
  return Result(
      mode=mode, ms=ms, ms_range=(1000 * min(seconds), 1000 * max(seconds)),
      ratio=statistics.median(ratios), ratio_range=(min(ratios), max(ratios)),
      examples_per_s=batch_size / (ms / 1000), peak_mib=peak_mib, steps=steps)


def describe(mode: str) -> str:
  """The constructor/compile options a mode string stands for."""
  m = parse_mode(mode)
  parts = [f"{k}={v!r}" for k, v in m.model_kwargs.items()]
  parts += [f"{k}={v!r}" for k, v in m.compile_kwargs.items()]
  if m.meta_batch_size:
    parts.append(f"meta_batch_size={m.meta_batch_size}")
  if m.dtype:
    parts.append(f"dtype={m.dtype!r}")
  if m.keras_bn:
    parts.append("Keras BatchNormalization")
  return ", ".join(parts) or "(defaults)"


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


# ---------------------------------------------------------------- accuracy --
def gin_bindings(mode: str, model: str = "mlp") -> List[str]:
  """The runner's gin bindings (`mwn_tf.main --gin_param`) for a mode."""
  m = parse_mode(mode)
  names = {"method": "train_eval.method",
           "meta_interval": "MetaWeightModel.meta_interval",
           "virtual_layers": "MetaWeightModel.virtual_layers"}
  out = [f"{names[k]} = {v!r}" for k, v in m.model_kwargs.items()]
  if m.compile_kwargs.get("jit_compile"):
    out.append("train_eval.jit_compile = True")
  if m.meta_batch_size:
    out.append(f"train_eval.meta_batch_size = {m.meta_batch_size}")
  if m.dtype:
    out.append(f"{model}.dtype = {m.dtype!r}")
  return out


@dataclasses.dataclass
class AccuracyResult:
  """Final-epoch test accuracy (%) of one mode over seeds."""
  mode: str
  accuracies: List[float]
  seconds: List[float]

  @property
  def mean(self) -> float:
    return float(np.mean(self.accuracies))

  @property
  def sd(self) -> float:
    return float(np.std(self.accuracies, ddof=1)) if len(
        self.accuracies) > 1 else 0.0


def quickstart_accuracy(modes: Sequence[str], seeds: Sequence[int] = (0, 1, 2),
                        *, gin_file: str = "gin/quickstart.gin",
                        model: str = "mlp", work_dir: Optional[str] = None,
                        log=print) -> List[AccuracyResult]:
  """Runs the quickstart through the runner once per mode and seed.

  Each run is `python -m mwn_tf.main --gin_file=<gin_file>
  --gin_param="train_eval.seed = <seed>"` plus the mode's `gin_bindings`, in
  a fresh process with its own model dir, and reports the final-epoch test
  accuracy of its results.json. (The quickstart: digits, 40% uniform noise,
  an MLP, 60 epochs; see gin/quickstart.gin.)

  Args:
    modes: Mode strings.
    seeds: Values of `train_eval.seed`.
    gin_file: The runner config.
    model: The config's classifier (for dtype bindings).
    work_dir: Where the runs' model dirs go (default: a temporary folder,
      removed afterwards).
    log: Progress printer.

  Returns:
    One `AccuracyResult` per mode.
  """
  import json  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top

  log = log or (lambda *a, **k: None)
  root = work_dir or tempfile.mkdtemp(prefix="mwn_bench_")
  results = []
  try:
    for name in modes:
      result = AccuracyResult(name, [], [])
      for seed in seeds:
        model_dir = os.path.join(root, f"{name}_seed{seed}")
        command = [sys.executable, "-m", "mwn_tf.main",
                   f"--gin_file={gin_file}", f"--model_dir={model_dir}",
                   f"--gin_param=train_eval.seed = {seed}"]
        command += [f"--gin_param={b}" for b in gin_bindings(name, model)]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode:
          raise RuntimeError(f"{' '.join(command)} failed:\n"
                             f"{proc.stderr[-3000:]}")
        with open(os.path.join(model_dir, "results.json")) as f:
          out = json.load(f)
        result.accuracies.append(100.0 * out["final_epoch_test_accuracy"])
        result.seconds.append(out["wall_time_s"])
        log(f"  {name} seed {seed}: {result.accuracies[-1]:.2f}% "
            f"({result.seconds[-1]:.0f}s)")
      results.append(result)
  finally:
    if work_dir is None:
      shutil.rmtree(root, ignore_errors=True)
  return results


def accuracy_markdown(results: Sequence[AccuracyResult], *, command: str,
                      reference: str = "exact", model: str = "mlp") -> str:
  """Accuracy results as a markdown table (mean ± sd over seeds)."""
  ref = {r.mode: r for r in results}.get(reference)
  lines = [f"`{command}`", "",
           "| mode | gin bindings | final test accuracy % (mean ± sd) | "
           f"per seed | Δ vs {reference} |",
           "|---|---|---:|---|---:|"]
  for r in results:
    delta = f"{r.mean - ref.mean:+.2f}" if ref is not None else "n/a"
    bindings = "; ".join(f"`{b}`" for b in gin_bindings(r.mode, model))
    lines.append(
        f"| {r.mode} | {bindings or '(quickstart.gin)'} | "
        f"{r.mean:.2f} ± {r.sd:.2f} | "
        f"{', '.join(f'{a:.1f}' for a in r.accuracies)} | {delta} |")
  return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ passes --
PASSES = ("plain: F + B", "F + B1", "F + B1 + B3",
          "F + B1 + Fm + Bm + B3", "exact: + second order")


def pass_breakdown(model: str = "resnet32", batch_size: int = 100,
                   input_shape: Sequence[int] = (32, 32, 3),
                   num_classes: int = 10, rounds: int = 5, warmup: int = 2,
                   seed: int = 0, log=print) -> List[Result]:
  """Where the exact step's time goes: its passes, added one at a time.

  Times five graph functions built from the step's own pieces (the
  classifier's `stateless_call`, `per_sample_loss`, `loss_coefficients`),
  gradients only (no optimizer, no metrics), interleaved in each round:
    plain: F + B              a forward and a backward pass (loss mean);
    F + B1                    stage 1's backward (Σ c_i L_i, c from V);
    F + B1 + B3               plus stage 3's backward on the same forward;
    F + B1 + Fm + Bm + B3     plus the meta batch's forward and backward
                              (w.r.t. the virtual weights, first order);
    exact: + second order     V's meta-gradient through stage 1 (the step).
  Differences between rows are the passes' costs.

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
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import mwn_tf  # pylint: disable=g-import-not-at-top
  from mwn_tf.meta_model import loss_coefficients, per_sample_loss  # pylint: disable=g-import-not-at-top

  log = log or (lambda *a, **k: None)
  keras.utils.set_random_seed(seed)
  clf = mwn_tf.models.get(model, num_classes=num_classes,
                          input_shape=tuple(input_shape))
  vnet = mwn_tf.WeightNet()
  theta = [v.value for v in clf.trainable_variables]
  state = [v.value for v in clf.non_trainable_variables]
  phi = [v.value for v in vnet.trainable_variables]
  rng = np.random.default_rng(seed)
  x, xm = (tf.constant(rng.normal(size=(batch_size, *input_shape)),
                       tf.float32) for _ in range(2))
  y, ym = (tf.constant(rng.integers(0, num_classes, batch_size), tf.int32)
           for _ in range(2))

  def coefficients(losses):
    w, _ = vnet.stateless_call(phi, [], tf.reshape(losses, [-1, 1]))
    return loss_coefficients(tf.reshape(w, [-1]), "sum")

  @tf.function
  def plain():
    with tf.GradientTape() as tape:
      logits, _ = clf.stateless_call(theta, state, x, training=True)
      loss = tf.reduce_mean(per_sample_loss(y, logits))
    return tape.gradient(loss, theta)

  def passes(stage3, meta, second_order):
    @tf.function
    def step():
      with tf.GradientTape(persistent=True,
                           watch_accessed_variables=False) as tape:
        tape.watch(theta)
        logits, _ = clf.stateless_call(theta, state, x, training=True)
        losses = per_sample_loss(y, logits)
      with tf.GradientTape(watch_accessed_variables=False) as meta_tape:
        meta_tape.watch(phi)
        coeffs = coefficients(tf.stop_gradient(losses))
        if not second_order:
          coeffs = tf.stop_gradient(coeffs)
        grads = tape.gradient(losses, theta, output_gradients=coeffs)
        fast = [t - 0.1 * g for t, g in zip(theta, grads)]
        if meta:
          meta_tape.watch(fast)
          meta_logits, _ = clf.stateless_call(fast, state, xm, training=True)
          meta_loss = tf.reduce_mean(per_sample_loss(ym, meta_logits))
      out = grads
      if meta:
        out = meta_tape.gradient(meta_loss, phi if second_order else fast)
      if stage3:
        out = out + tape.gradient(
            losses, theta,
            output_gradients=tf.stop_gradient(coefficients(losses)))
      return out
    return step

  fns = dict(zip(PASSES, (plain, passes(False, False, False),
                          passes(True, False, False),
                          passes(True, True, False),
                          passes(True, True, True))))

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
  return [_result(name, t, times[PASSES[0]], batch_size, None, rounds)
          for name, t in times.items()]


def passes_markdown(results: Sequence[Result], *, command: str) -> str:
  """`pass_breakdown` results as a markdown table."""
  lines = [f"`{command}`", "",
           "| passes | ms (median) | range | × plain (median) | added by this "
           "row (ms) |", "|---|---:|---:|---:|---:|"]
  previous = None
  for r in results:
    added = "" if previous is None else f"{r.ms - previous:+.0f}"
    lines.append(f"| {r.mode} | {r.ms:.0f} | {r.ms_range[0]:.0f}–"
                 f"{r.ms_range[1]:.0f} | {r.ratio:.2f} | {added} |")
    previous = r.ms
  return "\n".join(lines) + "\n"


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
  convs = [l for l in clf._flatten_layers(include_self=False)  # pylint: disable=protected-access
           if isinstance(l, keras.layers.Conv2D)]
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


# -------------------------------------------------------------------- main --
def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  command = "python -m mwn_tf.bench " + " ".join(sys.argv[1:])
  if f.task == "accuracy" and not f["model"].present:
    f.model = "mlp"
  if f.task == "speed":
    from mwn_tf.runner.strategy import get_strategy  # pylint: disable=g-import-not-at-top
    shape = tuple(int(s) for s in f.input_shape.split(","))
    results = run(f.modes, model=f.model, batch_size=f.batch_size,
                  input_shape=shape, num_classes=f.num_classes,
                  rounds=f.rounds, steps=f.steps, warmup=f.warmup,
                  strategy=get_strategy(f.strategy, f.tpu))
    text = to_markdown(results, command=command, model=f.model,
                       batch_size=f.batch_size, input_shape=shape,
                       rounds=f.rounds, steps=results[0].steps // f.rounds)
  elif f.task == "passes":
    shape = tuple(int(s) for s in f.input_shape.split(","))
    results = pass_breakdown(f.model, f.batch_size, shape, f.num_classes,
                             rounds=f.rounds, warmup=f.warmup)
    text = passes_markdown(results, command=command)
  elif f.task == "convs":
    shape = tuple(int(s) for s in f.input_shape.split(","))
    floor = conv_floor(f.model, f.batch_size, shape, f.num_classes,
                       rounds=f.rounds)
    text = conv_floor_markdown(floor, command=command)
  else:
    results = quickstart_accuracy(
        f.modes, [int(s) for s in f.seeds], gin_file=f.gin_file,
        model=f.model, work_dir=f.work_dir)
    text = accuracy_markdown(results, command=command, model=f.model)
  print(text)
  if f.out:
    with open(f.out, "w") as out:
      out.write(text)


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_enum("task", "speed", ["speed", "passes", "convs", "accuracy"],
                    "speed: time the steps; passes: the exact step's passes "
                    "one at a time; convs: the convolutions a plain and an "
                    "exact step must run, timed alone; accuracy: run the "
                    "quickstart.")
  flags.DEFINE_string("model", "resnet32", "Classifier registry name.")
  flags.DEFINE_integer("batch_size", 100, "Train batch size.")
  flags.DEFINE_string("input_shape", "32,32,3", "Synthetic image shape.")
  flags.DEFINE_integer("num_classes", 10, "Classes.")
  flags.DEFINE_list("modes", ["plain", "exact"], "Mode strings; see --help.")
  flags.DEFINE_integer("steps", None, "Steps of each mode per round (default: "
                       "lcm of the meta intervals, at least 4).")
  flags.DEFINE_integer("rounds", 5, "Timed rounds.")
  flags.DEFINE_integer("warmup", 2, "Untimed steps per mode first.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "accuracy: seeds.")
  flags.DEFINE_string("gin_file", "gin/quickstart.gin", "accuracy: config.")
  flags.DEFINE_string("work_dir", None, "accuracy: keep the runs' model dirs "
                      "here (default: a temporary folder, deleted).")
  flags.DEFINE_string("out", None, "Also write the markdown here.")
  flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "tpu"],
                    "speed: build the models in this strategy's scope.")
  flags.DEFINE_string("tpu", None, "speed: TPU name or address for "
                      "--strategy=tpu.")


if __name__ == "__main__":
  # No C++ start-up lines, no CUDA errors on CPU machines (issue 15).
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import tensorflow as _tf  # pylint: disable=g-import-not-at-top
  # Building one model per mode retraces Keras' step function once each,
  # which TF reports as excessive retracing; it is expected here.
  _tf.get_logger().setLevel("ERROR")
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
