"""The console of `python -m mwn_tf.main`: quiet output, one line
per epoch, progress inside long epochs, --help, errors that carry their fix,
a finished run's rerun.

Output is what is tested, so the runs go through the real entry point in
subprocesses, their output captured through a pipe (not a terminal), with
the environment as a user has it (no TF_CPP_MIN_LOG_LEVEL).
"""

import inspect
import io
import json
import os
import re
import subprocess
import sys
import time
import types

from absl import logging
import gin
import pytest

from mwn_tf import main
from mwn_tf.runner import monitor
from mwn_tf.runner import train_eval as train_eval_lib
from helpers import REPO
from helpers import call_main
from helpers import error_lines

ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
# The quickstart, shrunk to 3 epochs of 11 steps.
QUICKSTART = ["--gin_file=gin/quickstart.gin",
              "--gin_param=train_eval.epochs = 3",
              "--gin_param=train_eval.lr_decay_epochs = (2,)"]
# Lines a user never needs: TF's native start-up block, its internal INFO
# and WARNING lines, Keras' own progress lines, absl's prefixes.
NOISE = re.compile(
    r"absl::InitializeLog|cudart_stub|cuInit|cpu_feature_guard|"
    r"Sharding callback|Function 'serve'|fingerprint|Epoch \d+/\d+|"
    r"^[IWE]\d{4} |ms/step|Saved checkpoint")
EPOCH_LINE = re.compile(
    r"^epoch (\d+)/3 \| step \d+ \| train loss \d\.\d{4} \| acc \d\.\d{4} \| "
    r"meta loss \d\.\d{4} \| weight clean/noisy \d\.\d{3}/\d\.\d{3} \| "
    r"test acc \d\.\d{4} \(best \d\.\d{4}\) \| lr [\d.e-]+ \| time "
    r"\d+\.\ds$")


def run_main(args, timeout=600):
  """`python -m mwn_tf.main args`, stdout and stderr through one pipe."""
  proc = subprocess.run([sys.executable, "-m", "mwn_tf.main"] + list(args),
                        cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True, timeout=timeout)
  return proc.returncode, proc.stdout


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
  """The shrunk quickstart, run once: (model_dir, its output)."""
  model_dir = tmp_path_factory.mktemp("quickstart") / "run"
  status, out = run_main(QUICKSTART + [f"--model_dir={model_dir}"])
  assert status == 0, out[-3000:]
  return model_dir, out


# ----------------------------------------------------------------------------
# 1. A quiet console: one line per epoch.
# ----------------------------------------------------------------------------
@pytest.mark.slow
def test_the_quickstart_prints_one_labelled_line_per_epoch(quickstart):
  model_dir, out = quickstart
  lines = out.splitlines()
  assert not [l for l in lines if NOISE.search(l)], out
  epochs = [int(m[1]) for m in map(EPOCH_LINE.match, lines) if m]
  assert epochs == [1, 2, 3], out
  # At most ~2 lines per epoch: the epoch lines, maybe a progress line each
  # (a slow machine), the model_dir, the two closing lines.
  assert len(lines) <= 2 * 3 + 3, out
  assert lines[-2].startswith("final-epoch test accuracy: ")
  # Checkpoints and exports are reported once, at the end.
  assert lines[-1] == (
      f"logs, checkpoints, results.json: {model_dir}  (tensorboard --logdir "
      f"{model_dir}); exports: {model_dir}/export/classifier, "
      f"{model_dir}/export/weight_net")
  results = json.loads((model_dir / "results.json").read_text())
  assert f"{results['final_epoch_test_accuracy']:.4f}" in lines[-2]


@pytest.mark.slow
def test_a_long_epoch_shows_its_progress(tmp_path):
  status, out = run_main(QUICKSTART + [
      f"--model_dir={tmp_path / 'run'}",
      "--gin_param=train_eval.epochs = 1", "--gin_param=train_eval.export = "
      "False", "--gin_param=train_eval.lr_decay_epochs = ()",
      "--gin_param=train_eval.progress_every_n_seconds = 0.001"])
  assert status == 0, out[-3000:]
  progress = [l for l in out.splitlines() if l.startswith("epoch 1/1: ")]
  assert progress, out
  for line in progress:
    assert re.fullmatch(r"epoch 1/1: step (\d+)/11 \(\d+%\), [\d.e+]+ "
                        r"steps/s, ETA ([\d:]+|\d+s|\?)", line), line
  steps = [int(re.search(r"step (\d+)/", l)[1]) for l in progress]
  assert steps == sorted(steps) and steps[-1] <= 11


@pytest.mark.slow
def test_verbosity_brings_the_log_lines_back(tmp_path):
  status, out = run_main(["--gin_file=gin/smoke.gin", "-v", "1",
                          f"--model_dir={tmp_path / 'run'}"])
  assert status == 0, out[-3000:]
  assert re.search(r"^I\d{4} .*\] model_dir: ", out, re.M), out
  assert "Saved checkpoint" in out


def _run_module(module, args):
  proc = subprocess.run([sys.executable, "-m", module] + list(args), cwd=REPO,
                        env=ENV, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True, timeout=600)
  return proc.returncode, proc.stdout


@pytest.mark.slow
def test_analyze_is_as_quiet_as_main_and_loud_with_v(tmp_path):
  # An empty folder: TensorFlow is started, then the analysis says what is
  # missing, in its own words only.
  status, out = _run_module("mwn_tf.analyze", [f"--model_dir={tmp_path}"])
  assert status == 1, out
  assert out.startswith("mwn_tf.analyze: error: "), out
  assert not NOISE.search(out), out
  status, out = _run_module("mwn_tf.analyze", [f"--model_dir={tmp_path}",
                                               "-v", "0"])
  assert status == 1 and re.search("cudart_stub|cuInit|cpu_feature_guard|"
                                   "absl::InitializeLog", out), out


@pytest.mark.slow
def test_bench_is_as_quiet_as_main(tmp_path):
  status, out = _run_module("mwn_tf.bench", [
      "--model=mlp", "--input_shape=8,8,1", "--batch_size=8", "--rounds=1",
      "--steps=1", "--warmup=1", "--modes=plain"])
  assert status == 0, out
  assert "| plain |" in out, out
  # Its own table has "ms/step": only TensorFlow's lines are noise here.
  assert not re.search(r"absl::InitializeLog|cudart_stub|cuInit|"
                       r"cpu_feature_guard|^[IWE]\d{4} ", out, re.M), out


class _Iterations:

  def __init__(self):
    self.value = 0

  def numpy(self):
    return self.value


def _console(mode, stream, every=0.0):
  console = monitor.Console(mode, steps_per_epoch=10, total_steps=25,
                            total_epochs=3, every_seconds=every,
                            stream=stream)
  iterations = _Iterations()
  console.set_model(types.SimpleNamespace(
      optimizer=types.SimpleNamespace(iterations=iterations)))
  return console, iterations


def test_the_bar_is_cleared_before_a_log_line_and_an_epoch_line():
  stream = io.StringIO()
  console, iterations = _console("bar", stream)
  console.on_train_begin()
  iterations.value = 20  # Epoch 3 of 3 is partial: 5 steps.
  console.on_epoch_begin(2)
  iterations.value = 23
  console._shown = -1e9  # pylint: disable=protected-access
  console.on_train_batch_end(2)
  assert stream.getvalue().startswith("\r\033[Kepoch 3/3 [" + "#" * 14 +
                                      "." * 10 + "] step 3/5 (60%), ")
  logging.warning("a log record")  # Through absl's handler: clears first.
  assert stream.getvalue().endswith("\r\033[K")
  console.on_train_batch_end(3)  # Redrawn only after the redraw interval.
  console.line("epoch 3/3 | the summary")
  assert stream.getvalue().endswith("\r\033[Kepoch 3/3 | the summary\n")
  console.on_train_end()
  before = stream.getvalue()
  logging.warning("after training")
  assert stream.getvalue() == before  # The filter is gone.


def test_progress_lines_every_n_seconds():
  stream = io.StringIO()
  console, iterations = _console("lines", stream, every=1e-6)
  console.on_epoch_begin(0)
  for step in range(1, 4):
    time.sleep(0.002)
    iterations.value = step
    console.on_train_batch_end(step - 1)
  lines = stream.getvalue().splitlines()
  assert [l.split(" (")[0] for l in lines] == [
      "epoch 1/3: step 1/10", "epoch 1/3: step 2/10", "epoch 1/3: step 3/10"]
  silent, iterations = _console("lines", io.StringIO(), every=0)
  silent.on_epoch_begin(0)
  silent.on_train_batch_end(0)
  assert not silent._stream.getvalue()  # pylint: disable=protected-access


# ----------------------------------------------------------------------------
# 2. --help.
# ----------------------------------------------------------------------------
@pytest.mark.slow
def test_help_lists_every_setting_without_importing_tensorflow():
  code = ("import atexit, runpy, sys\n"
          "atexit.register(lambda: print('TF imported:', 'tensorflow' in "
          "sys.modules))\n"
          "sys.argv = ['mwn_tf.main', '--help']\n"
          "runpy.run_module('mwn_tf.main', run_name='__main__')\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  out = proc.stdout
  assert out.rstrip().endswith("TF imported: False")
  rows = {line.split()[0]: line for line in out.splitlines()
          if line.startswith("  ") and not line.startswith("   ")}
  params = inspect.signature(train_eval_lib.train_eval.__wrapped__).parameters
  keyword = [p for p in params.values() if p.kind is p.KEYWORD_ONLY]
  for p in keyword:
    assert p.name in rows, p.name
    assert rows[p.name].endswith(f"= {p.default!r}"), rows[p.name]
  # The meaning of an argument follows its row.
  assert "epochs of training (ignored if `train_steps` is" in out
  import mwn_tf.data, mwn_tf.models  # pylint: disable=g-import-not-at-top
  for name in mwn_tf.data.names():
    assert f"  {name}.*  " in out, name
  for family in ("mlp", "resnet32", "resnet50", "wrn", "small_cnn"):
    assert f"  {family}.*  " in out, family
  # A row per registry name, with the gin name its settings are bound on.
  for name in mwn_tf.models.names():
    family = mwn_tf.models.binding_family(name)
    assert re.search(rf"^  {name} +{family}\.\*  ", out, re.M), name
  for flag in ("--gin_file", "--gin_param", "--model_dir", "--strategy",
               "--tpu", "--reexport", "--verbosity"):
    assert flag in out
  for status, _ in main.EXIT_CODES:
    assert f"\n  {status}  " in out


# ----------------------------------------------------------------------------
# 3. Errors that carry their fix, before model_dir exists.
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("bindings,fix", [
    (["digits.noise_rate = 1.5"], "digits.noise_rate must be in [0, 1]"),
    (["digits.num_meta = 7"], "digits.num_meta = 7 must be a positive "
     "multiple of the 10 classes"),
    (["digits.noise_type = 'bogus'"], "Unknown digits.noise_type 'bogus'"),
    (["digits.imbalance_factor = 0.5"], "digits.imbalance_factor must be"),
    (["mlp.hidden_sizes = (0,)"], "mlp.hidden_sizes = (0,)"),
    (["mlp.dtype = 'float8'"], "mlp.dtype = 'float8'"),
    (["train_eval.batch_size = 5000"], "train_eval.batch_size must be <= "
     "the 1197 training examples"),
    (["train_eval.model = 'small_cnn'", "small_cnn.filters = (0,)"],
     "small_cnn.filters = (0,)"),
    (["train_eval.epoch = 5"], "did you mean train_eval.epochs?"),
    (["mlp.hidden_size = (3,)"], "did you mean mlp.hidden_sizes?"),
    (["digit.noise_rate = 0.2"], "did you mean digits?"),
    (["train_eval.method=baseline"], "did you mean train_eval.method = "
     "'baseline'? (strings need quotes)"),
    # gin parses no nan or inf: the fix is a finite number, not quotes.
    # A meta batch larger than the meta set would repeat meta images.
    (["train_eval.meta_batch_size = 500"], "train_eval.meta_batch_size = 500 "
     "is larger than the 100 images of 'digits''s meta set "
     "(digits.num_meta); bind train_eval.meta_batch_size <= 100"),
    (["train_eval.learning_rate = nan"], "train_eval.learning_rate must be "
     "a finite number, e.g. train_eval.learning_rate = 0.1 (its default)"),
    (["train_eval.learning_rate = float('nan')"], "train_eval.learning_rate "
     "must be a finite number, e.g. train_eval.learning_rate = 0.1"),
    (["digits.noise_rate = -inf"], "digits.noise_rate must be a finite "
     "number, e.g. digits.noise_rate = 0.0"),
])
def test_a_bad_binding_names_its_fix_and_leaves_no_model_dir(
    tmp_path, capsys, bindings, fix):
  model_dir = tmp_path / "new" / "run"
  status, _, err = call_main(
      ["--gin_file=gin/smoke.gin", f"--model_dir={model_dir}"] +
      [f"--gin_param={b}" for b in bindings], capsys)
  assert status == 2
  (line,) = error_lines(err)
  assert fix in line and "Traceback" not in err
  assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("line,fix", [
    ("train_eval.epoch = 5", "did you mean train_eval.epochs?"),
    ("train_eval.method = baseline", "did you mean train_eval.method = "
     "'baseline'? (strings need quotes)"),
    ("train_eval.meta_learning_rate = float(\"inf\")",
     "train_eval.meta_learning_rate must be a finite number"),
])
def test_a_bad_line_in_a_gin_file_names_its_fix(tmp_path, capsys, line, fix):
  config = tmp_path / "mine.gin"
  config.write_text(f"include 'gin/smoke.gin'\n{line}\n")
  model_dir = tmp_path / "run"
  status, _, err = call_main(
      [f"--gin_file={config}", f"--model_dir={model_dir}"], capsys)
  assert status == 2
  (message,) = error_lines(err)
  assert f"--gin_file={config}" in message and fix in message
  assert not model_dir.exists()


@pytest.mark.slow
@pytest.mark.parametrize("binding", [
    "train_eval.meta_batch_size = 500",  # Refused once the data is loaded.
    "mlp.hidden_sizes = (0,)",  # Refused when the model is built.
])
def test_a_refused_run_prints_its_error_alone(tmp_path, binding):
  # No "model_dir: X" line: X is never created.
  model_dir = tmp_path / "run"
  status, out = run_main(["--gin_file=gin/smoke.gin",
                          f"--model_dir={model_dir}",
                          f"--gin_param={binding}"], timeout=300)
  assert status == 2, out[-3000:]
  (line,) = out.splitlines()
  assert line.startswith("mwn_tf.main: error: "), out
  assert not model_dir.exists()


@pytest.mark.parametrize("gin_file,bindings,fix", [
    # quickstart.gin: 60 epochs, decays at 40 and 50.
    ("gin/quickstart.gin", ["train_eval.epochs = 3"],
     "train_eval.lr_decay_epochs must be in (0, epochs=3], got (40, 50); for "
     "the same schedule (decays at 67%, 83% of the run) add --gin_param="
     "\"train_eval.lr_decay_epochs = (2, 2.5)\""),
    ("gin/quickstart.gin", ["train_eval.epochs = 7"],
     "add --gin_param=\"train_eval.lr_decay_epochs = (4.667, 5.833)\""),
    # No file binds the length: the paper's 120 epochs, decays at 80, 100.
    ("gin/smoke.gin", ["train_eval.train_steps = None",
                       "train_eval.lr_decay_epochs = (80, 100)",
                       "train_eval.epochs = 12"],
     "add --gin_param=\"train_eval.lr_decay_epochs = (8, 10)\""),
    # In steps: a file of 1000 steps with decays at 600 and 800, 25 now.
    (None, ["train_eval.train_steps = 25"],
     "train_eval.lr_decay_steps must be in [1, train_steps=25], got (600, "
     "800); for the same schedule (decays at 60%, 80% of the run) add "
     "--gin_param=\"train_eval.lr_decay_steps = (15, 20)\""),
])
def test_a_shortened_schedule_offers_the_scaled_decays(tmp_path, capsys,
                                                       gin_file, bindings,
                                                       fix):
  if gin_file is None:
    gin_file = tmp_path / "steps.gin"
    gin_file.write_text("include 'gin/smoke.gin'\n"
                        "train_eval.train_steps = 1000\n"
                        "train_eval.lr_decay_steps = (600, 800)\n")
  model_dir = tmp_path / "run"
  status, _, err = call_main(
      [f"--gin_file={gin_file}", f"--model_dir={model_dir}"] +
      [f"--gin_param={b}" for b in bindings], capsys)
  assert status == 2
  (line,) = error_lines(err)
  assert fix in line, line
  assert not model_dir.exists()


@pytest.mark.slow  # trains the 3 offered epochs (21 steps)
def test_the_scaled_decays_run_as_offered(tmp_path, capsys):
  """The offered rebinding, pasted, passes the check (3 epochs of 11)."""
  status, _, err = call_main(
      ["--gin_file=gin/quickstart.gin", "--gin_param=train_eval.epochs = 3",
       f"--model_dir={tmp_path / 'run'}"], capsys)
  offered = re.search(r'--gin_param="(.*)"', err)[1]
  gin.clear_config()
  status, _, err = call_main(
      ["--gin_file=gin/quickstart.gin", "--gin_param=train_eval.epochs = 3",
       f"--gin_param={offered}", "--gin_param=train_eval.export = False",
       f"--model_dir={tmp_path / 'run'}"], capsys)
  assert status == 0, err[-3000:]
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert results["settings"]["lr_decay_epochs"] == [2, 2.5]


def test_missing_clothing1m_data_names_the_binding_and_the_layout(tmp_path,
                                                                  capsys):
  model_dir = tmp_path / "run"
  status, _, err = call_main(
      ["--gin_file=gin/smoke.gin", f"--model_dir={model_dir}",
       "--gin_param=train_eval.dataset = 'clothing1m'",
       f"--gin_param=clothing1m.data_dir = '{tmp_path / 'tfds'}'",
       f"--gin_param=clothing1m.manual_dir = '{tmp_path / 'nope'}'"], capsys)
  assert status == 2
  (line,) = error_lines(err)
  assert f"manual folder {tmp_path / 'nope'} does not exist" in line
  assert "bind clothing1m.manual_dir = '/path/to/release'" in line
  # The layout follows, as an indented block.
  assert "  <manual_dir>/annotations/noisy_label_kv.txt" in err
  assert "  <manual_dir>/annotations/clean_test_key_list.txt" in err
  assert not model_dir.exists()


def test_cifar_without_network_fails_in_seconds_naming_the_bindings(
    tmp_path, capsys, monkeypatch):
  from mwn_tf.data import cifar  # pylint: disable=g-import-not-at-top
  for name in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    monkeypatch.delenv(name, raising=False)
  # Port 9 (discard) of this machine is closed: as fast a "no network" as
  # a machine without one, and the same on a machine with one.
  monkeypatch.setattr(cifar, "DOWNLOAD_HOST", ("127.0.0.1", 9))
  model_dir = tmp_path / "run"
  start = time.monotonic()
  status, _, err = call_main(
      ["--gin_file=gin/smoke.gin", f"--model_dir={model_dir}",
       "--gin_param=train_eval.dataset = 'cifar10'",
       f"--gin_param=cifar10.data_dir = '{tmp_path / 'tfds'}'"], capsys)
  assert time.monotonic() - start < 60
  assert status == 2
  (line,) = error_lines(err)
  assert "Could not download cifar10" in line and "no network?" in line
  assert "cannot reach 127.0.0.1:9" in line
  assert "bind cifar10.data_dir = 'DIR'" in line
  assert "cifar10.download = False" in line
  assert not model_dir.exists()


# ----------------------------------------------------------------------------
# 4. A finished run, rerun.
# ----------------------------------------------------------------------------
def _files(folder):
  # Not the run lock (.lock): every run on the folder writes its own holder
  # line there, before it knows that the run is finished.
  return {os.path.relpath(os.path.join(root, n), folder):
          os.stat(os.path.join(root, n)).st_mtime_ns
          for root, _, names in os.walk(folder) for n in names
          if n != ".lock"}


@pytest.mark.slow
def test_a_finished_run_rerun_says_so_and_does_nothing(quickstart):
  model_dir, _ = quickstart
  before = _files(model_dir)
  results = json.loads((model_dir / "results.json").read_text())
  status, out = run_main(QUICKSTART + [f"--model_dir={model_dir}"])
  assert status == 0, out[-3000:]
  assert (f"already finished: 3 epochs, {results['steps']} steps; "
          f"final-epoch test accuracy: "
          f"{results['final_epoch_test_accuracy']:.4f}") in out
  assert ("To train longer raise train_eval.epochs (or train_eval.train_"
          "steps); to write the exports again pass --reexport.") in out
  assert not EPOCH_LINE.search(out) and "Resuming" not in out
  assert _files(model_dir) == before  # Nothing written, nothing exported.

  status, out = run_main(QUICKSTART + [f"--model_dir={model_dir}",
                                       "--reexport"])
  assert status == 0, out[-3000:]
  assert "already finished" not in out
  after = _files(model_dir)
  exported = [f for f in before if f.startswith("export")]
  assert exported and all(after[f] > before[f] for f in exported
                          if f in after)
  assert [f for f in before if f.startswith("checkpoints")] == [
      f for f in after if f.startswith("checkpoints")]


@pytest.mark.slow
def test_on_a_terminal_a_bar_is_drawn_and_the_epoch_line_is_whole(tmp_path):
  import pty  # pylint: disable=g-import-not-at-top
  controller, terminal = pty.openpty()
  proc = subprocess.Popen(
      [sys.executable, "-m", "mwn_tf.main"] + QUICKSTART + [
          f"--model_dir={tmp_path / 'run'}", "--gin_param=train_eval.epochs "
          "= 1", "--gin_param=train_eval.lr_decay_epochs = ()",
          "--gin_param=train_eval.export = False"],
      cwd=REPO, env=ENV, stdin=subprocess.DEVNULL, stdout=terminal,
      stderr=terminal)
  os.close(terminal)
  chunks = []
  while True:
    try:
      chunk = os.read(controller, 65536)
    except OSError:  # EIO: the process closed the terminal.
      break
    if not chunk:
      break
    chunks.append(chunk)
  os.close(controller)
  assert proc.wait(timeout=600) == 0
  out = b"".join(chunks).decode(errors="replace")
  clear = "\r\033[K"
  # The bar (the first step alone takes longer than a redraw interval).
  assert re.search(re.escape(clear) + r"epoch 1/1 \[[#.]{24}\] step \d+/11 ",
                   out), out
  # The epoch line replaces the bar on a cleared line: what the terminal
  # shows (after the last clear) is the whole line, never glued onto a bar.
  (line,) = [l for l in out.split("\n") if "epoch 1/1 | " in l]
  assert clear + "epoch 1/1 | " in line, repr(line)
  assert EPOCH_LINE.match(line.split(clear)[-1].strip().replace(
      "epoch 1/1", "epoch 1/3")), repr(line)
  assert not NOISE.search(out), out
