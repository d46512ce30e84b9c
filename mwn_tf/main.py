r"""Entry point: trains and evaluates one gin-configured experiment.

    python -m mwn_tf.main --gin_file=gin/quickstart.gin
    python -m mwn_tf.main --gin_file=gin/cifar10_uniform_40.gin \
        --gin_param="train_eval.method = 'baseline'" --model_dir=runs/c10_u40_erm

Flags are infrastructure only; every scientific choice is a gin binding of
`train_eval` (mwn_tf/runner/train_eval.py), whose defaults are the paper's. The default
--model_dir is runs/<gin file stems>[-<hash of the --gin_param list>], so
rerunning the same command resumes the same run (one run per model_dir at
a time). Exit status (mwn_tf/runner/exit_codes.py):

  0  done
  1  stopped at a NaN/Inf loss or parameter, nothing bad saved
  2  bad flag, gin, setting or model_dir, or model_dir in use by another run
  3  stopped by SIGTERM/SIGINT with a checkpoint; rerun to resume (a second
     signal kills at once)
  4  a write failed (disk full, ...); the last good checkpoint is kept
"""

import functools
import importlib.util  # noqa: F401  gin's file reader needs it imported.
import os
import sys
import tokenize
import uuid

from absl import app
from absl import flags
from absl import logging
import gin

from mwn_tf.runner import exit_codes

flags.DEFINE_multi_string("gin_file", [], "Gin config file(s), in order; "
                          "relative paths are also looked up from the repo.")
flags.DEFINE_multi_string("gin_param", [], "Gin binding(s), applied after "
                          "the files, e.g. \"train_eval.method = 'baseline'\".")
flags.DEFINE_string("model_dir", None, "Output and checkpoint folder "
                    "(default: runs/<gin file stems>[-<params hash>]).")
flags.DEFINE_enum("strategy", "default",
                  ["default", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy.")
flags.DEFINE_string("tpu", None, "TPU name or address, or 'local' on a TPU "
                    "VM (with --strategy=tpu).")
FLAGS = flags.FLAGS

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXIT_NONFINITE, EXIT_CONFIG = exit_codes.NONFINITE, exit_codes.CONFIG


def _fail(message: str, status: int) -> None:
  """One line on stderr, no traceback, then exit."""
  print(f"mwn_tf.main: error: {' '.join(str(message).split())}",
        file=sys.stderr, flush=True)
  sys.exit(status)


def _first_line(e: Exception) -> str:
  # gin appends "In call to configurable ..." lines to what passes through it.
  return str(e).splitlines()[0] if str(e) else type(e).__name__


def _gin_error(source: str, e: Exception) -> str:
  if isinstance(e, tokenize.TokenError) and len(e.args) == 2:
    message, (line, _) = e.args
    lines = [f"{message} at line {line} (an unclosed bracket or quote?)"]
  else:
    # gin appends "In file ..., line N" and the offending text: keep them,
    # drop reprs of parser internals ("<ast.Name object at 0x...>").
    lines = [line.strip() for line in str(e).splitlines()
             if line.strip() and " object at 0x" not in line]
  return f"invalid gin config in {source}: {type(e).__name__}: " + " | ".join(
      lines)


@functools.lru_cache(maxsize=None)
def _search_the_repo() -> None:
  """Once per process: relative --gin_file paths are also looked up from the
  repository (gin keeps its search paths across `gin.clear_config`)."""
  gin.add_config_file_search_path(_REPO)


def parse_gin(gin_files, gin_params) -> None:
  """Parses files then bindings; any problem exits 2 naming its source."""
  _search_the_repo()
  for path in gin_files:
    try:
      gin.parse_config_file(path, skip_unknown=False)
    except Exception as e:  # pylint: disable=broad-except
      # Parsing runs no user code: every exception is a config problem.
      _fail(_gin_error(f"--gin_file={path}", e), EXIT_CONFIG)
  for binding in gin_params:
    try:
      gin.parse_config(binding, skip_unknown=False)
    except Exception as e:  # pylint: disable=broad-except
      _fail(_gin_error(f"--gin_param={binding!r}", e), EXIT_CONFIG)
  gin.finalize()


def check_writable(model_dir: str) -> None:
  """Creates model_dir and writes a probe file; exits 2 if that fails."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  probe = os.path.join(model_dir, f".write_probe-{uuid.uuid4().hex[:8]}")
  try:
    tf.io.gfile.makedirs(model_dir)
    with tf.io.gfile.GFile(probe, "w") as f:
      f.write("ok")
    tf.io.gfile.remove(probe)
  except (OSError, tf.errors.OpError) as e:
    reason = getattr(e, "strerror", None) or getattr(e, "message", None) or e
    _fail(f"cannot write to --model_dir={model_dir}: {reason}", EXIT_CONFIG)


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}; use --gin_file / --gin_param.",
          EXIT_CONFIG)
  # Imported here so that --help and flag errors stay fast.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # pylint: disable=g-import-not-at-top
  from mwn_tf.runner import checkpointing, run_dir, settings, stopping
  from mwn_tf.runner import strategy, train_eval
  # pylint: enable=g-import-not-at-top
  tf.get_logger().setLevel("WARNING")  # TF's INFO lines drown the epoch log.
  if FLAGS.model_dir is not None and not FLAGS.model_dir.strip():
    # `--model_dir=$UNSET_VAR` must not silently resume the default run.
    _fail("--model_dir is empty; give a folder, or drop the flag for "
          "runs/<gin file stems>[-<params hash>].", EXIT_CONFIG)
  parse_gin(FLAGS.gin_file, FLAGS.gin_param)
  try:
    # Before model_dir is created: a bad setting leaves no folder behind.
    settings.check_settings(train_eval.bound_settings())
  except settings.ConfigError as e:
    _fail(_first_line(e), EXIT_CONFIG)
  model_dir = FLAGS.model_dir or settings.default_model_dir(FLAGS.gin_file,
                                                            FLAGS.gin_param)
  check_writable(model_dir)
  logging.info("model_dir: %s", model_dir)
  try:
    dist = strategy.get_strategy(FLAGS.strategy, FLAGS.tpu)
  except (ValueError, RuntimeError) as e:
    _fail(_first_line(e), EXIT_CONFIG)
  try:
    results = train_eval.train_eval(model_dir, dist)
  except settings.ConfigError as e:
    _fail(_first_line(e), EXIT_CONFIG)
  except checkpointing.NonFiniteError as e:
    _fail(f"training stopped: {_first_line(e)}", EXIT_NONFINITE)
  except stopping.Stopped as e:
    print(f"mwn_tf.main: {e}", file=sys.stderr, flush=True)
    sys.exit(exit_codes.STOPPED)
  except run_dir.WriteError as e:
    _fail(str(e), exit_codes.WRITE_FAILED)
  except KeyboardInterrupt:
    # Ctrl-C before training started (no handler yet): nothing to save.
    _fail("stopped by SIGINT before training started; nothing was trained. "
          "Rerun the same command to start.", exit_codes.STOPPED)
  print(f"final-epoch test accuracy: {results['final_epoch_test_accuracy']:.4f}"
        f" (best {results['best_epoch_test_accuracy']:.4f} at epoch "
        f"{results['best_epoch']}); {results['steps']} steps in "
        f"{results['wall_time_s']:.0f}s", flush=True)
  print(f"logs, checkpoints, results.json: {model_dir}  (tensorboard "
        f"--logdir {model_dir}); exports: "
        f"{', '.join(results['exports'].values()) or 'none'}", flush=True)


def parse_flags(argv):
  """absl's flag parsing, but a bad flag exits 2 in one line (absl: 1, with
  usage text), like every other configuration error."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    _fail(f"{e} (see --helpshort; every training setting is a --gin_param, "
          f"e.g. --gin_param='train_eval.epochs = 10').", EXIT_CONFIG)


def run():
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
