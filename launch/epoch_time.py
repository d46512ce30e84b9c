r"""Where a run's epochs spend their time: `python -m mwn_tf.main` with timers.

    python launch/epoch_time.py --gin_file=gin/fashion_mnist_uniform_60.gin \
        --model_dir=/tmp/epoch_time [--gin_param=...] [--out=split.md]

Runs the real entry point (same flags as `python -m mwn_tf.main`) with timers
wrapped around the runner's parts, without changing them, and prints one
markdown table: seconds per epoch in each part and its share of the epoch.
  data set-up      the runner's `epoch_stream`: the epoch's (train, meta)
                   tf.data pipeline, built before each `fit` call
  train steps      the compiled train function, one call per step (the input
                   pipeline's next batch is fetched inside it)
  evaluation       `fit`'s validation pass over the test split
  per-sample pass  the weight/loss pass over the whole training split
                   (`shared.samples.sample_pass`: every sample_every_n_epochs and
                   after the last epoch)
  figures          the TensorBoard images (weighting function, weight
                   distribution and variation): matplotlib and PNG summaries
  summaries etc.   the rest of the callbacks' epoch and step hooks: scalars,
                   histograms, results.json, the log line
  checkpoints      `Checkpointer.save`
  other            the rest of the epoch's `fit` call (Keras' loop, metric
                   resets, callback dispatch)
An epoch is the runner's `epoch_stream` call and its `fit` call (one each per
epoch). Epoch 1 also traces and compiles the steps and builds the optimizer
(in "train steps", "evaluation" and "other"), so it is shown apart.
"""

import collections
import contextlib
import os
import sys
import time

from absl import app
import keras

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mwn_tf import main as mwn_main  # noqa: E402  pylint: disable=g-import-not-at-top
from mwn_tf.shared import figures  # noqa: E402  pylint: disable=g-import-not-at-top
from mwn_tf.shared import samples  # noqa: E402  pylint: disable=g-import-not-at-top
from mwn_tf.runner import checkpointing  # noqa: E402  pylint: disable=g-import-not-at-top
from mwn_tf.runner import epochs  # noqa: E402  pylint: disable=g-import-not-at-top
from mwn_tf.runner import monitor  # noqa: E402  pylint: disable=g-import-not-at-top

PARTS = ("data set-up", "train steps", "evaluation", "per-sample pass",
         "figures", "summaries etc.", "checkpoints")


class Timers:
  """Seconds per part, per epoch; nested timers are not double counted."""

  def __init__(self):
    self.epochs = []      # one Counter per epoch (fit call)
    self.fit_seconds = []
    self.in_fit = False   # final evaluations and the like are not counted
    self.pending_setup = 0.0  # epoch_stream time, added to the next epoch
    self._stack = []

  @contextlib.contextmanager
  def part(self, name):
    start = time.perf_counter()
    self._stack.append(0.0)
    try:
      yield
    finally:
      inner = self._stack.pop()
      spent = time.perf_counter() - start
      if self.in_fit:
        self.epochs[-1][name] += spent - inner
      if self._stack:
        self._stack[-1] += spent

  def wrap(self, owner, attribute, name):
    original = getattr(owner, attribute)

    def timed(*args, **kwargs):
      with self.part(name):
        return original(*args, **kwargs)

    setattr(owner, attribute, timed)


def install(timers: Timers) -> None:
  """Wraps the runner's parts in timers (see the module docstring)."""
  # On keras.Model: gin's external_configurable makes MetaWeightModel a
  # subclass whose instances are of the original class; the runner's only
  # fit/evaluate calls are the MetaWeightModel's.
  model_cls = keras.Model
  fit, make_train = model_cls.fit, model_cls.make_train_function

  def timed_fit(self, *args, **kwargs):
    timers.epochs.append(collections.Counter(
        {"data set-up": timers.pending_setup}))
    timers.in_fit = True
    start = time.perf_counter()
    try:
      return fit(self, *args, **kwargs)
    finally:
      timers.fit_seconds.append(time.perf_counter() - start +
                                timers.pending_setup)
      timers.in_fit = False
      timers.pending_setup = 0.0

  def timed_epoch_stream(*args, **kwargs):
    start = time.perf_counter()
    try:
      return epoch_stream(*args, **kwargs)
    finally:
      timers.pending_setup += time.perf_counter() - start

  def timed_make_train(self, *args, **kwargs):
    make_train(self, *args, **kwargs)  # Keras sets self.train_function
    function = self.train_function
    if getattr(function, "_epoch_timer", False):
      return function

    def train_function(iterator):
      with timers.part("train steps"):
        return function(iterator)

    train_function._epoch_timer = True  # pylint: disable=protected-access
    self.train_function = train_function
    return train_function

  epoch_stream = epochs.epoch_stream
  epochs.epoch_stream = timed_epoch_stream
  model_cls.fit = timed_fit
  model_cls.make_train_function = timed_make_train
  timers.wrap(model_cls, "evaluate", "evaluation")
  timers.wrap(samples, "sample_pass", "per-sample pass")
  for name in ("weighting_function", "weight_distribution", "weight_variation",
               "summary"):
    timers.wrap(figures, name, "figures")
  timers.wrap(checkpointing.Checkpointer, "save", "checkpoints")
  for hook in ("on_epoch_begin", "on_epoch_end", "on_train_batch_end"):
    timers.wrap(monitor.TrainingMonitor, hook, "summaries etc.")


def table(timers: Timers) -> str:
  """Markdown: epoch 1 and the mean of the later epochs, seconds and %."""
  rows = []
  for i, (parts, total) in enumerate(zip(timers.epochs, timers.fit_seconds)):
    parts = dict(parts)
    parts["other"] = max(total - sum(parts.values()), 0.0)
    rows.append((i + 1, parts, total))
  groups = [("epoch 1", rows[:1])]
  if len(rows) > 1:
    groups.append((f"epochs 2-{len(rows)} (mean)", rows[1:]))
  out = []
  for title, group in groups:
    total = sum(t for _, _, t in group) / len(group)
    out += [f"{title}: {total:.1f} s per epoch\n",
            "| part | s per epoch | share |", "|---|---:|---:|"]
    for name in PARTS + ("other",):
      seconds = sum(p.get(name, 0.0) for _, p, _ in group) / len(group)
      out.append(f"| {name} | {seconds:.2f} | {100 * seconds / total:.1f}% |")
    outside = 1 - sum(p.get("train steps", 0.0) for _, p, _ in group) / (
        len(group) * total)
    out += [f"| **outside the train steps** | | **{100 * outside:.1f}%** |",
            ""]
  return "\n".join(out)


def main(argv):
  timers = Timers()
  install(timers)
  try:
    mwn_main.main(argv)
  finally:
    if timers.epochs:
      text = table(timers)
      print(text)
      if FLAGS_OUT[0]:
        with open(FLAGS_OUT[0], "w") as f:
          f.write(text)


FLAGS_OUT = [None]

if __name__ == "__main__":
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("out", None, "Also write the table here.")
  # mwn_tf.main's flags are defined on import; --out is this script's own.
  def _main(argv):
    FLAGS_OUT[0] = flags.FLAGS.out
    main(argv)
  app.run(_main)
