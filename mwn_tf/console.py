"""A quiet console for the command lines (`mwn_tf.main`, `analyze`, `bench`).

TensorFlow writes start-up lines on every import (absl::InitializeLog, oneDNN,
"Could not find cuda drivers", `failed call to cuInit` on CPU machines) and
its own INFO / WARNING log lines; none of them is for the user. An entry
point, once its flags are parsed, calls `start_tensorflow(loud(FLAGS))` (or,
to import more modules with it, `setup_console` and `native_stderr_filtered`
around its imports). `-v 0` (absl's --verbosity) keeps everything.

This module defines no flags: `loud` reads absl's own --verbosity from the
FlagValues an entry point passes.
"""

import contextlib
import logging as std_logging
import os
import re
import sys
import tempfile

from absl import logging

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
# What the run's INFO lines come from (resuming, the model_dir); the data
# loaders' INFO (the data summary, the transition matrix) is in results.json
# and TensorBoard.
_INFO_FROM = (os.path.join(_PACKAGE, "runner"), os.path.join(_PACKAGE,
                                                             "main.py"))
# TF's native start-up lines, written to fd 2 before absl's C++ logging is
# initialised (TF_CPP_MIN_LOG_LEVEL does not reach them): "WARNING: All log
# messages before absl::InitializeLog()...", "I0000 ... cudart_stub.cc:31]
# Could not find cuda drivers...", "E0000 ... failed call to cuInit".
_NATIVE_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|"
    r"[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] |"
    r"E\d{4} .*(cuInit|CUDA|cuda))")


def loud(fv) -> bool:
  """Whether absl's -v/--verbosity was given (>= 0) on FlagValues `fv` (the
  entry point's `flags.FLAGS`, parsed): everything is shown."""
  return fv["verbosity"].present and fv.verbosity >= 0


class _QuietFilter(std_logging.Filter):
  """Lets through this package's warnings, the runner's INFO lines and
  everyone's errors: TF's and absl's INFO and WARNING lines ("Sharding
  callback duration", "Function 'serve' contains input name(s)",
  fingerprints) are internals."""

  def filter(self, record):
    path = os.path.abspath(record.pathname)
    return (record.levelno >= std_logging.ERROR or
            (record.levelno >= std_logging.WARNING and
             path.startswith(_PACKAGE)) or path.startswith(_INFO_FROM))


_QUIET_FILTER = _QuietFilter()


class _PlainFormatter(std_logging.Formatter):
  """"message" for INFO, "warning: message" above: no absl prefix."""

  def format(self, record):
    text = record.getMessage()
    if record.levelno > std_logging.INFO:
      text = f"{record.levelname.lower()}: {text}"
    return text


def setup_console(is_loud: bool) -> None:
  """Before TensorFlow is imported: no C++ start-up lines, no CUDA errors on
  CPU machines, no TF-internal log lines, plain lines for this package's
  records; unless `is_loud`."""
  if is_loud:
    return
  # TF's C++ logging reads it once, when TensorFlow is imported; an explicit
  # setting in the environment wins.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  handler = logging.get_absl_handler()
  handler.addFilter(_QUIET_FILTER)  # Once: the same object is not re-added.
  handler.setFormatter(_PlainFormatter())


@contextlib.contextmanager
def native_stderr_filtered(is_loud: bool):
  """Holds back fd 2 while TensorFlow loads (unless `is_loud`), then writes
  what it got except TF's native start-up noise (`_NATIVE_NOISE`)."""
  if is_loud:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      held.seek(0)
      kept = [line for line in held.read().decode(
          errors="replace").splitlines() if not _NATIVE_NOISE.match(line)]
      if kept:
        print("\n".join(kept), file=sys.stderr, flush=True)


def quiet_tensorflow(tf, is_loud: bool) -> None:
  """After the import: TF's Python logger shows errors only (retracing and
  deprecation warnings are internals), unless `is_loud`."""
  if not is_loud:
    tf.get_logger().setLevel("ERROR")


def start_tensorflow(is_loud: bool):
  """`setup_console`, then imports TensorFlow and lists its devices (where
  CUDA's start-up errors come) with fd 2 filtered; returns the module."""
  setup_console(is_loud)
  with native_stderr_filtered(is_loud):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.list_physical_devices()
  quiet_tensorflow(tf, is_loud)
  return tf
