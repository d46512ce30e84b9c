"""Keeps the fast lane (`pytest -m "not slow"`) fast: a pytest plugin.

A test that is not marked `slow` may neither start a process nor train more
than MAX_STEPS steps; if it does, it fails with one line that says what it
did and that `@pytest.mark.slow` moves it out of the fast lane. The check is
armed from the start of each test's setup to the end of its teardown, so a
module- or session-scoped fixture that a fast test is the first to request
counts against that test. tests/conftest.py loads the hooks; a pytest run
elsewhere loads them with `-p fast_lane` (tests/test_fast_lane.py does).

Processes: everything that starts one goes through `subprocess.Popen`,
`os.fork`/`os.forkpty`, `os.posix_spawn[p]`, `os.system` or
`multiprocessing`'s `Process.start` (fork, spawn and forkserver alike), and
each is refused. Libraries' own housekeeping commands (ALLOWED) are let
through: they start no Python, are over in milliseconds, and a test cannot
avoid them (matplotlib runs fc-list once to build its font cache on a fresh
machine, as in CI; platform.processor() runs uname; ctypes.util.find_library
runs ldconfig, then gcc, ld or objdump; scikit-learn's KMeans asks
threadpoolctl, which runs lscpu, how many cores there are).

Steps: `keras.Model.make_train_function` is wrapped so that each call of the
train function it makes counts `steps_per_execution` steps (the last call
of an epoch may run fewer: an upper bound). That is the one function that
both `fit()` and a hand-driven loop (mwn_tf/benchmark's
`model.train_function(iterator)`) go through, and one Python call per
execution costs nothing next to the step.
"""

import multiprocessing.process
import os
import subprocess

import keras
import pytest

# A fast test may train at most this many steps. The longest legitimate
# in-process run of the fast lane is 15 steps (tests/runner/test_train.py:
# 5 epochs of 3 steps, to see evaluation skipped on some epochs); the tiny
# models here take well under a second for 20, so what a fast test costs is
# tracing, not steps. More than that is a test of training itself (a resume
# after many checkpoints, a learning-rate schedule): mark it slow.
MAX_STEPS = 20

# Commands (their basename) that libraries run for themselves; see above.
ALLOWED = frozenset({"fc-list", "uname", "ldconfig", "ldconfig.real", "gcc",
                     "cc", "ld", "objdump", "lscpu"})

_HINT = "mark it @pytest.mark.slow (the fast lane is `pytest -m \"not slow\"`)"


class _Guard:
  """What the running fast test has done; `item` is None when unarmed."""

  item = None
  steps = 0
  violation = None
  reported = False

  @classmethod
  def arm(cls, item):
    slow = item.get_closest_marker("slow") is not None
    cls.item = None if slow else item
    cls.steps, cls.violation, cls.reported = 0, None, False

  @classmethod
  def refuse(cls, message):
    """Records the first violation and fails the test where it happens."""
    if cls.violation is None:
      cls.violation = f"{cls.item.nodeid}: {message}; {_HINT}."
    pytest.fail(cls.violation, pytrace=False)

  @classmethod
  def process(cls, what):
    if cls.item is not None:
      cls.refuse(f"a test not marked slow started a process ({what})")

  @classmethod
  def count(cls, steps):
    if cls.item is None:
      return
    cls.steps += steps
    if cls.steps > MAX_STEPS:
      cls.refuse(f"a test not marked slow trained {cls.steps} steps, "
                 f"more than {MAX_STEPS}")


def _command(args):
  """The program's basename of a Popen/posix_spawn argument."""
  if isinstance(args, (str, bytes, os.PathLike)):
    args = os.fsdecode(args).split()[:1]
  args = list(args)
  return os.path.basename(os.fsdecode(args[0])) if args else ""


def _guard_popen():
  # In __new__, not __init__: a refused Popen is then never made, and no
  # half-built one complains when it is collected.
  real = subprocess.Popen.__new__

  def new(cls, *args, **kwargs):
    command = _command(args[0] if args else kwargs.get("args", ()))
    if command not in ALLOWED:
      _Guard.process(f"subprocess: {command}")
    return real(cls)

  subprocess.Popen.__new__ = staticmethod(new)


def _guard_os():
  for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
    real = getattr(os, name, None)
    if real is None:
      continue

    def guarded(*args, _real=real, _name=name, **kwargs):
      if not (_name.startswith("posix_spawn") and
              _command(args[0]) in ALLOWED):
        _Guard.process(f"os.{_name}")
      return _real(*args, **kwargs)

    setattr(os, name, guarded)


def _guard_multiprocessing():
  real = multiprocessing.process.BaseProcess.start

  def start(self):
    _Guard.process("multiprocessing Process.start")
    return real(self)

  multiprocessing.process.BaseProcess.start = start


def _count_steps():
  real = keras.Model.make_train_function

  def make_train_function(self, force=False):
    made = real(self, force)
    function = self.train_function
    if function is not None and not getattr(function, "fast_lane", False):
      per_call = int(self.steps_per_execution)

      def counted(*args, **kwargs):
        _Guard.count(per_call)
        return function(*args, **kwargs)

      counted.fast_lane = True
      self.train_function = counted
    return self.train_function if made is not None else made

  keras.Model.make_train_function = make_train_function


def pytest_configure(config):
  del config  # the guards are the same for every run
  _guard_popen()
  _guard_os()
  _guard_multiprocessing()
  _count_steps()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item):
  _Guard.arm(item)
  return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
  """A violation whose exception the test swallowed still fails it."""
  report = yield
  if item is _Guard.item and _Guard.violation:
    if report.passed and not _Guard.reported:
      report.outcome = "failed"
      report.longrepr = _Guard.violation
    _Guard.reported = _Guard.reported or report.failed
  if call.when == "teardown":
    _Guard.item = None
  return report
