"""A clean stop on SIGTERM or SIGINT: finish the step, checkpoint, exit 3.

Preemptible cloud machines and TPU VMs end a run with SIGTERM (a grace period,
then SIGKILL), and Ctrl-C sends SIGINT. `SignalStop` turns the first of
either into a request that `checkpointing.Checkpointer` serves at the end
of the current step: it writes a checkpoint and raises `Stopped`, which the
entry point turns into one line and exit status 3 (`exit_codes.STOPPED`).
The first signal also restores the default action of both, so a second
one ends the process at once (the checkpoint files are written atomically,
so even that loses nothing but the steps since the last checkpoint).

Python runs a signal handler only in the main thread, between two bytecodes:
while that thread is blocked in a TensorFlow op (a worker waiting in an
all-reduce for a peer that is gone), the handler does not run, the default
action is never restored, and every signal would be recorded and nothing
more. So a watcher thread reads the signals from `signal.set_wakeup_fd`,
which the interpreter writes to at once, from C: if the handler has not run
a second later, it prints the first one's line, and a second signal ends
the process with status 128 + its number.

Under MultiWorkerMirroredStrategy every worker runs the same callbacks at
the same steps; `requested` all-reduces the workers' flags there, so a
signal to any of them (the chief, or a preempted worker) stops all of them
at the same step and the chief writes the checkpoint they all take part in.
"""

import os
import signal
import socket
import threading
import time
from typing import Optional

import tensorflow as tf

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_WILL_STOP = ("stopping after the current step with a checkpoint (send it "
              "again to stop at once, without one).")
# A main thread that has not run the handler this long after a signal is
# blocked in an op (it runs it within milliseconds otherwise).
_BLOCKED_S = 1.0


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
    self._watcher = None
    self._wakeup = None
    self._previous_fd = -1
    self._any = None
    if _multi_worker(strategy):
      self._any = tf.function(self._all_reduce)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.getsignal(s) for s in SIGNALS}
      for s in SIGNALS:
        signal.signal(s, self._handle)
      self._watch()
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}
    if self._watcher is not None:
      signal.set_wakeup_fd(self._previous_fd)
      self._wakeup.close()  # The watcher's recv() returns b"": it ends.
      self._watcher.join()
      self._watcher = None
    return False

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    first = self.received is None
    if first:
      self.received = signal.Signals(signum).name
    for s in SIGNALS:
      signal.signal(s, signal.SIG_DFL)
    if first:
      _say(f"{self.received} received: {_WILL_STOP}")

  def _watch(self):
    """Starts the thread that sees the signals even while the main thread
    is blocked in a TensorFlow op (see the module docstring)."""
    read, self._wakeup = socket.socketpair()
    self._wakeup.setblocking(False)  # set_wakeup_fd requires it.
    self._previous_fd = signal.set_wakeup_fd(self._wakeup.fileno(),
                                             warn_on_full_buffer=False)
    self._watcher = threading.Thread(target=self._watch_signals,
                                     args=(read,), name="SignalStop",
                                     daemon=True)
    self._watcher.start()

  def _watch_signals(self, read: socket.socket) -> None:
    """Reads signal numbers from the wakeup socket until it is closed.

    A signal the main thread serves is left to `_handle` (its default action
    is back, so a second one kills). One it does not serve within
    `_BLOCKED_S` means the main thread is blocked: this thread prints its
    line, and ends the process on a second SIGTERM/SIGINT.
    """
    seen = 0
    with read:
      while True:
        try:
          data = read.recv(64)
        except OSError:
          return
        if not data:
          return
        for signum in (n for n in data if n in SIGNALS):
          seen += 1
          name = signal.Signals(signum).name
          if seen == 1:
            time.sleep(_BLOCKED_S)
            if self.received is None:
              _say(f"{name} received: {_WILL_STOP}")
          elif self.received is None:
            _say(f"{name} received again while blocked in an op: stopping "
                 f"at once, without a checkpoint; rerun the same command to "
                 f"resume from the last one.")
            os._exit(128 + signum)  # pylint: disable=protected-access

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


def _say(line: str) -> None:
  # os.write: print() could re-enter a write the signal interrupted.
  os.write(2, (line + "\n").encode())


def _multi_worker(strategy) -> bool:
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not isinstance(
      strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return False
  return sum(len(tasks) for tasks in
             resolver.cluster_spec().as_dict().values()) > 1
