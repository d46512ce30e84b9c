r"""Entry point: trains and evaluates one gin-configured experiment.

    python -m mwn_tf.main --gin_file=gin/quickstart.gin
    python -m mwn_tf.main --gin_file=gin/cifar10_uniform_40.gin \
        --gin_param="train_eval.method = 'baseline'" --model_dir=runs/c10_u40_erm

Flags are infrastructure only; every scientific choice is a gin binding of
`train_eval` (mwn_tf/runner/train_eval.py), whose defaults are the paper's. The default
--model_dir is runs/<gin file stems>[-<hash of the --gin_param list>], so
rerunning the same command resumes the same run, and rerunning a finished
run says so and exits. The console shows one line per epoch (and the progress
inside long epochs); `-v 0` (absl's --verbosity) brings back TensorFlow's and
absl's own log lines. `--help` lists every setting and the exit statuses
(mwn_tf/runner/exit_codes.py): 0 done, 1 NaN/Inf, 2 bad configuration or
model_dir in use by another run, 3 stopped by SIGTERM/SIGINT with a
checkpoint, 4 a write failed (disk full), 5 stopped on collapsed sample
weights with a checkpoint, 6 another worker of a multi-worker run died or
hung; one line on stderr for each.
"""

import difflib
import functools
import importlib.util  # noqa: F401  gin's file reader needs it imported.
import os
import re
import sys
import tokenize
import uuid

from absl import app
from absl import flags
import gin

from mwn_tf import console
from mwn_tf.runner import exit_codes
from mwn_tf.runner import usage

flags.DEFINE_multi_string("gin_file", [], "Gin config file(s), in order; "
                          "a relative path not found from the working "
                          "folder is looked up in the checkout, then in the "
                          "installed package's gin/ files.")
flags.DEFINE_multi_string("gin_param", [], "Gin binding(s), applied after "
                          "the files, e.g. \"train_eval.method = 'baseline'\".")
flags.DEFINE_string("model_dir", None, "Output and checkpoint folder "
                    "(default: runs/<gin file stems>[-<params hash>]).")
flags.DEFINE_enum("strategy", "default",
                  ["default", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy.")
flags.DEFINE_string("tpu", None, "TPU name or address, or 'local' on a TPU "
                    "VM (with --strategy=tpu).")
flags.DEFINE_boolean("reexport", False, "If the run already finished, write "
                     "its final files and exports again (else a finished run "
                     "is left as it is).")
FLAGS = flags.FLAGS

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PACKAGE = os.path.dirname(os.path.abspath(__file__))
# Where a relative --gin_file or gin `include` ("gin/quickstart.gin") is
# looked up after the working folder: the checkout this package runs from
# (or `pip install -e .`), or else the installed package, which
# pyproject.toml ships the gin files in (gin/*.gin as mwn_tf/gin/*.gin).
# Only folders that have gin/: gin logs an error line for every search path
# that lacks the file.
GIN_SEARCH_PATHS = tuple(d for d in (_REPO, _PACKAGE)
                         if os.path.isdir(os.path.join(d, "gin")))
EXIT_NONFINITE, EXIT_CONFIG = exit_codes.NONFINITE, exit_codes.CONFIG
EXIT_CODES = tuple(sorted(exit_codes.MEANINGS.items()))


def _fail(message: str, status: int) -> None:
  """The message on stderr (its first line prefixed; a block of
  instructions after it indented), no traceback, then exit."""
  head, *rest = str(message).strip().splitlines() or [""]
  print(f"mwn_tf.main: error: {' '.join(head.split())}", file=sys.stderr)
  for line in rest:
    print(f"  {line.rstrip()}", file=sys.stderr)
  sys.stderr.flush()
  sys.exit(status)


def _first_line(e: Exception) -> str:
  # gin appends "In call to configurable ..." lines to what passes through it.
  return str(e).splitlines()[0] if str(e) else type(e).__name__


def _config_message(e: Exception) -> str:
  """A ConfigError's text without gin's "In call to configurable" lines (a
  loader's instructions, e.g. a manual data layout, are kept)."""
  return "\n".join(l for l in str(e).splitlines()
                   if not l.strip().startswith("In call to configurable"))


def _did_you_mean(message: str) -> str:
  """A hint for a misspelt configurable or parameter in gin's message."""
  unknown = re.search(r"Configurable '([\w.]+)' doesn't have a parameter "
                      r"named '(\w+)'", message)
  if unknown:
    family, name = unknown.groups()
    try:
      import inspect  # pylint: disable=g-import-not-at-top
      params = inspect.signature(gin.get_configurable(family)).parameters
    except (ValueError, TypeError):
      return ""
    close = difflib.get_close_matches(name, list(params), n=3)
    return f"did you mean {' or '.join(f'{family}.{c}' for c in close)}?" if (
        close) else f"{family} takes: {', '.join(params)}."
  unknown = re.search(r"No configurable matching '([\w.]+)'", message)
  if unknown:
    known = (["train_eval", "MetaWeightModel", "WeightNet"] +
             list(usage.dataset_families()) + list(usage.model_families()))
    close = difflib.get_close_matches(unknown[1].split(".")[-1], known, n=3)
    return f"did you mean {' or '.join(close)}?" if close else ""
  return ""


def _quote_hint(binding: str, message: str) -> str:
  """"did you mean x.y = 'word'?" for an unquoted string value."""
  token = re.search(r"Failed to parse token '([^']*)'", message)
  if not token:
    return ""
  name, _, value = binding.partition("=")
  if value.strip() == token[1] and name.strip():
    return (f"did you mean {name.strip()} = '{token[1]}'? (strings need "
            f"quotes)")
  return f"did you mean '{token[1]}'? (strings need quotes)"


# nan and inf in a binding: gin parses neither (`nan` reads as an unquoted
# string, `float('nan')` as a call), and no setting accepts them.
_NON_FINITE = re.compile(
    r"[-+]?(nan|inf|infinity|(math|np|numpy)\.(nan|inf)|"
    r"float\(\s*(['\"])[-+]?(nan|inf|infinity)\4\s*\))", re.I)


def _non_finite(source: str, binding: str) -> str:
  """The error for `name = nan` (or inf): the binding wants a finite number,
  e.g. its default; "" for any other binding."""
  name, _, value = binding.partition("=")
  name = name.strip()
  if not name or not _NON_FINITE.fullmatch(value.strip()):
    return ""
  family, _, parameter = name.rpartition(".")
  example = ""
  try:
    import inspect  # pylint: disable=g-import-not-at-top
    default = inspect.signature(gin.get_configurable(
        family.rpartition("/")[2])).parameters[parameter].default
    if isinstance(default, (int, float)) and not isinstance(default, bool):
      example = f", e.g. {name} = {default!r} (its default)"
  except (ValueError, TypeError, KeyError):
    pass
  return (f"invalid gin config in {source}: {name} must be a finite number"
          f"{example}; gin reads no nan or inf.")


def _line_of(path: str, e: Exception) -> str:
  """The line of gin file `path` that error `e` names ("line N"), or ""."""
  # The last "line N": gin's own; Python's parser may name a line of its
  # one-token input first ("malformed node or string on line 1").
  numbers = re.findall(r"line (\d+)", str(e))
  number = int(numbers[-1]) if numbers else 0
  # As gin looks it up.
  for candidate in (path,) + tuple(os.path.join(d, path)
                                   for d in GIN_SEARCH_PATHS):
    try:
      with open(candidate, encoding="utf-8") as f:
        lines = f.read().splitlines()
    except OSError:
      continue
    if 0 < number <= len(lines):
      return lines[number - 1]
  return ""


def _gin_error(source: str, e: Exception, binding: str = "") -> str:
  if _non_finite(source, binding):
    return _non_finite(source, binding)
  if isinstance(e, tokenize.TokenError) and len(e.args) == 2:
    message, (line, _) = e.args
    lines = [f"{message} at line {line} (an unclosed bracket or quote?)"]
  else:
    # gin appends "In file ..., line N" and the offending text: keep them,
    # drop reprs of parser internals ("<ast.Name object at 0x...>").
    lines = [line.strip() for line in str(e).splitlines()
             if line.strip() and " object at 0x" not in line]
  hint = _did_you_mean(str(e)) or _quote_hint(binding, str(e))
  return (f"invalid gin config in {source}: {type(e).__name__}: " +
          " | ".join(lines) + (f"; {hint}" if hint else ""))


@functools.lru_cache(maxsize=None)
def _search_the_repo() -> None:
  """Once per process: relative --gin_file paths are also looked up in
  `GIN_SEARCH_PATHS` (gin keeps its search paths across
  `gin.clear_config`)."""
  for directory in GIN_SEARCH_PATHS:
    gin.add_config_file_search_path(directory)


def parse_gin(gin_files, gin_params, after_files=None) -> None:
  """Parses files then bindings; any problem exits 2 naming its source.
  `after_files` (optional) is called between the two. The entry point owns
  the process's gin config: it starts from an empty one, so what it parses
  is the whole config of the run (a caller that ran a run before, e.g. a
  test, leaves it finalized)."""
  _search_the_repo()
  gin.clear_config()
  for path in gin_files:
    try:
      gin.parse_config_file(path, skip_unknown=False)
    except Exception as e:  # pylint: disable=broad-except
      # Parsing runs no user code: every exception is a config problem.
      _fail(_gin_error(f"--gin_file={path}", e, _line_of(path, e)),
            EXIT_CONFIG)
  if after_files is not None:
    after_files()
  for binding in gin_params:
    try:
      gin.parse_config(binding, skip_unknown=False)
    except Exception as e:  # pylint: disable=broad-except
      _fail(_gin_error(f"--gin_param={binding!r}", e, binding), EXIT_CONFIG)
  gin.finalize()


def _number(value: float) -> str:
  return f"{round(value, 3):g}"


def _same_shape(error, planned: dict) -> str:
  """For decays beyond a shortened run (`settings.ScheduleBeyondRun`): the
  rebinding that scales them from the length the gin files planned
  (`planned`: train_eval's settings after the files) to the new one, or ""
  when that length is unknown or the decays were not written for it."""
  unit, decays, length = error.unit, error.decays, error.length
  old = planned.get("epochs" if unit == "epochs" else "train_steps")
  if not old or old < decays[-1] or old == length:
    return ""
  scaled = [d * length / old for d in decays]
  if unit == "steps":
    scaled = [max(1, round(d)) for d in scaled]
  text = [str(d) if unit == "steps" else _number(d) for d in scaled]
  if len(set(text)) < len(text):  # Too short to keep every decay apart.
    return ""
  name = f"train_eval.lr_decay_{unit}"
  where = ", ".join(f"{d / old:.0%}" for d in decays)
  values = f"({text[0]},)" if len(text) == 1 else f"({', '.join(text)})"
  return (f"; for the same schedule (decays at {where} of the run) add "
          f"--gin_param=\"{name} = {values}\"")


def check_writable(model_dir: str) -> None:
  """Writes a probe file in model_dir; exits 2 if that fails.

  Folders it had to create are removed again (local paths), so that a run
  refused later (a dataset or model setting) leaves no empty model_dir.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  probe = os.path.join(model_dir, f".write_probe-{uuid.uuid4().hex[:8]}")
  created, folder = [], os.path.abspath(model_dir)
  if "://" not in model_dir:  # Object stores have no folders to remove.
    while folder and not os.path.exists(folder):
      created.append(folder)
      folder = os.path.dirname(folder)
  try:
    tf.io.gfile.makedirs(model_dir)
    with tf.io.gfile.GFile(probe, "w") as f:
      f.write("ok")
    tf.io.gfile.remove(probe)
  except (OSError, tf.errors.OpError) as e:
    reason = getattr(e, "strerror", None) or getattr(e, "message", None) or e
    _fail(f"cannot write to --model_dir={model_dir}: {reason}", EXIT_CONFIG)
  finally:
    for path in created:  # Deepest first.
      if os.path.isdir(path) and not os.listdir(path):
        os.rmdir(path)


def loud() -> bool:
  """Whether absl's -v/--verbosity was given (>= 0): everything is shown."""
  return console.loud(FLAGS)


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}; use --gin_file / --gin_param.",
          EXIT_CONFIG)
  console.setup_console(loud())
  # Imported here, after the console's environment, so that --help and flag
  # errors stay fast.
  with console.native_stderr_filtered(loud()):
    # pylint: disable=g-import-not-at-top
    import tensorflow as tf
    from mwn_tf.runner import checkpointing, collapse, run_dir, settings
    from mwn_tf.runner import stopping
    from mwn_tf.runner import strategy, train_eval
    # pylint: enable=g-import-not-at-top
    tf.config.list_physical_devices()  # Where CUDA's start-up errors come.
  console.quiet_tensorflow(tf, loud())
  if not loud():
    if "tensorflow_datasets" in sys.modules:
      sys.modules["tensorflow_datasets"].disable_progress_bar()
  if FLAGS.model_dir is not None and not FLAGS.model_dir.strip():
    # `--model_dir=$UNSET_VAR` must not silently resume the default run.
    _fail("--model_dir is empty; give a folder, or drop the flag for "
          "runs/<gin file stems>[-<params hash>].", EXIT_CONFIG)
  planned = {}  # train_eval's settings as the gin files have them.
  parse_gin(FLAGS.gin_file, FLAGS.gin_param,
            after_files=lambda: planned.update(train_eval.bound_settings()))
  try:
    # Before model_dir is created: a bad setting leaves no folder behind.
    settings.check_settings(train_eval.bound_settings())
  except settings.ScheduleBeyondRun as e:
    hint = _same_shape(e, planned)
    _fail(_config_message(e).rstrip(".") + hint if hint else
          _config_message(e), EXIT_CONFIG)
  except settings.ConfigError as e:
    _fail(_config_message(e), EXIT_CONFIG)
  model_dir = FLAGS.model_dir or settings.default_model_dir(FLAGS.gin_file,
                                                            FLAGS.gin_param)
  check_writable(model_dir)
  try:
    dist = strategy.get_strategy(
        FLAGS.strategy, FLAGS.tpu,
        train_eval.bound_settings()["collective_timeout_s"])
  except (ValueError, RuntimeError) as e:
    _fail(_first_line(e), EXIT_CONFIG)
  try:
    results = train_eval.train_eval(model_dir, dist, reexport=FLAGS.reexport)
  except settings.ConfigError as e:
    _fail(_config_message(e), EXIT_CONFIG)
  except checkpointing.NonFiniteError as e:
    _fail(f"training stopped: {_first_line(e)}", EXIT_NONFINITE)
  except stopping.Stopped as e:
    # The first line: gin appends "In call to configurable" to it.
    print(f"mwn_tf.main: {_first_line(e)}", file=sys.stderr, flush=True)
    sys.exit(exit_codes.STOPPED)
  except collapse.WeightCollapse as e:
    print(f"mwn_tf.main: {_first_line(e)}", file=sys.stderr, flush=True)
    sys.exit(exit_codes.COLLAPSED)
  except run_dir.WriteError as e:
    _fail(_config_message(e), exit_codes.WRITE_FAILED)
  except strategy.PeerLost as e:
    _fail(_config_message(e), exit_codes.PEER_LOST)
  except KeyboardInterrupt:
    # Ctrl-C before training started (no handler yet): nothing to save.
    _fail("stopped by SIGINT before training started; nothing was trained. "
          "Rerun the same command to start.", exit_codes.STOPPED)
  _report(results, model_dir)


def _accuracy(value) -> str:
  return "none" if value is None else f"{value:.4f}"


def _report(results: dict, model_dir: str) -> None:
  """The run's last two lines: its accuracy, and where everything went."""
  accuracy = (f"final-epoch test accuracy: "
              f"{_accuracy(results['final_epoch_test_accuracy'])} (best "
              f"{_accuracy(results['best_epoch_test_accuracy'])} at epoch "
              f"{results['best_epoch']})")
  if results.get("already_finished"):
    print(f"already finished: {results['epochs_done']} epochs, "
          f"{results['steps']} steps; {accuracy}. To train longer raise "
          f"train_eval.epochs (or train_eval.train_steps); to write the "
          f"exports again pass --reexport.", flush=True)
  else:
    # What this process ran; a resumed run adds its total.
    ran = results.get("session") or {"steps": results["steps"],
                                     "wall_time_s": results["wall_time_s"]}
    total = ("" if ran["steps"] == results["steps"] else
             f" ({results['steps']} in all)")
    print(f"{accuracy}; {ran['steps']} steps in {ran['wall_time_s']:.0f}s"
          f"{total}", flush=True)
  print(f"logs, checkpoints, results.json: {model_dir}  (tensorboard "
        f"--logdir {model_dir}); exports: "
        f"{', '.join(results['exports'].values()) or 'none'}", flush=True)


_HELP = ("--help", "-h", "-?", "--helpshort")


def print_help() -> None:
  """The settings a user changes, read from the code (no TF import)."""
  ours = FLAGS.get_key_flags_for_module(sys.modules[__name__])
  lines = [(f"--{f.name}" + ("" if f.default in (None, []) else
                             f" (default {f.default})"),
            " ".join(f.help.split()).replace(
                "; repeat this option to specify a list of values",
                " (repeatable)")) for f in ours]
  lines.append(("-v 0 / --verbosity=0", "also show TensorFlow's and absl's "
                "own log lines (start-up, INFO); quiet without it"))
  try:
    print(usage.help_text("python -m mwn_tf.main", __doc__, lines,
                          EXIT_CODES), flush=True)
  except BrokenPipeError:  # `--help | head`: the reader has what it wanted.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def parse_flags(argv):
  """absl's flag parsing, but a bad flag exits 2 in one line (absl: 1, with
  usage text), like every other configuration error, and --help prints the
  settings (`print_help`; absl's own list: --helpfull)."""
  if any(arg in _HELP for arg in argv[1:]):
    print_help()
    sys.exit(0)
  try:
    return FLAGS(argv)
  except flags.Error as e:
    _fail(f"{e} (see --help; every training setting is a --gin_param, "
          f"e.g. --gin_param='train_eval.epochs = 10').", EXIT_CONFIG)


def run():
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
