"""A clean stop on SIGTERM or SIGINT: finish the step, checkpoint, exit 3.

Preemptible cloud machines and TPU VMs end a run with SIGTERM (a grace period,
then SIGKILL), and Ctrl-C sends SIGINT. `SignalStop` turns the first of
either into a request that `checkpointing.Checkpointer` serves at the end
of the current step: it writes a checkpoint and raises `Stopped`, which the
entry point turns into one line and exit status 3 (`exit_codes.STOPPED`).
The first signal also restores the default action of both, so a second
one ends the process at once, even inside a long TensorFlow op (the
checkpoint files are written atomically, so even that loses nothing but the
steps since the last checkpoint).

Under MultiWorkerMirroredStrategy every worker runs the same callbacks at
the same steps; `requested` all-reduces the workers' flags there, so a
signal to any of them (the chief, or a preempted worker) stops all of them
at the same step and the chief writes the checkpoint they all take part in.
"""

import os
import signal
import threading
from typing import Optional

import tensorflow as tf

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
  """Training stopped on a signal, after saving a checkpoint at `step`."""

  def __init__(self, signal_name: str, step: int):
    super().__init__(f"stopped by {signal_name} at step {step}; rerun the "
                     f"same command to resume")
    self.signal_name = signal_name
    self.step = step


class SignalStop:
  """Within its block, SIGTERM and SIGINT request a stop instead of killing.

  Handlers can only be installed from the main thread; elsewhere (a run
  started from a worker thread) the block changes nothing and signals keep
  their usual effect.

  Args:
    strategy: the run's strategy (multi-worker: the flags are all-reduced).
  """

  def __init__(self, strategy: Optional[tf.distribute.Strategy] = None):
    self.received = None
    self._strategy = strategy
    self._previous = {}
    self._any = None
    if _multi_worker(strategy):
      self._any = tf.function(self._all_reduce)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.getsignal(s) for s in SIGNALS}
      for s in SIGNALS:
        signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}
    return False

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if self.received is None:
      self.received = signal.Signals(signum).name
    for s in SIGNALS:
      signal.signal(s, signal.SIG_DFL)
    # os.write: print() could re-enter a write the signal interrupted.
    os.write(2, (f"{self.received} received: stopping after the current step "
                 f"with a checkpoint (send it again to stop at once, without "
                 f"one).\n").encode())

  def requested(self) -> Optional[str]:
    """The name of the signal that asked to stop ("SIGTERM", "SIGINT"), or
    None. Multi-worker: a collective, so call it at the same step on every
    worker."""
    if self._any is None:
      return self.received
    stop = bool(self._any(tf.constant(self.received is not None)))
    return (self.received or "a signal to another worker") if stop else None

  def _all_reduce(self, flag):
    value = self._strategy.run(lambda: tf.cast(flag, tf.int32))
    return self._strategy.reduce(tf.distribute.ReduceOp.SUM, value,
                                 axis=None) > 0


def _multi_worker(strategy) -> bool:
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not isinstance(
      strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return False
  return sum(len(tasks) for tasks in
             resolver.cluster_spec().as_dict().values()) > 1
