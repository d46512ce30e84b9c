"""Helpers shared by the tests (put on sys.path by tests/conftest.py).

REPO and SMOKE locate the repository and the smoke config; `run` trains in
this process; `call_main` runs the entry point in this process and
`error_lines` picks its error lines; `flags`, `command`, `rerun`,
`reference_run`, `final_variables` and `assert_matches_reference` run
`python -m mwn_tf.main` on the smoke config and compare a resumed run with
an uninterrupted one (conftest.py's `smoke_reference`, under
REFERENCE_BINDINGS). Test modules share code only through modules like this
one and conftest.py's fixtures, never by importing each other
(tests/test_import_floors.py checks it).
"""

import json
import os
import subprocess
import sys

from absl import flags as absl_flags
import gin
import numpy as np
import pytest
import tensorflow as tf

from mwn_tf import main
from mwn_tf.runner import train_eval as train_eval_lib


def call_main(argv, capsys):
  """Runs main() in-process with `argv` flags; returns (status, out, err)."""
  fv = absl_flags.FLAGS
  fv.unparse_flags()
  fv(["mwn_tf.main"] + list(argv))
  try:
    main.main(["mwn_tf.main"])
    status = 0
  except SystemExit as e:
    status = e.code
  finally:
    fv.unparse_flags()
  out, err = capsys.readouterr()
  return status, out, err


def error_lines(err):
  return [l for l in err.splitlines() if l.startswith("mwn_tf.main: error:")]


def refused_line(tmp_path, capsys, bindings):
  """Runs main on smoke.gin plus gin `bindings` into tmp_path/new/run and
  asserts a refusal: exit 2, exactly one error line, no traceback, and the
  folder never created. Returns (that line, stderr)."""
  model_dir = tmp_path / "new" / "run"
  status, _, err = call_main(
      ["--gin_file=gin/smoke.gin", f"--model_dir={model_dir}"] +
      [f"--gin_param={b}" for b in bindings], capsys)
  assert status == 2, err[-2000:]
  lines = error_lines(err)
  assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
  assert not (tmp_path / "new").exists()
  return lines[0], err


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(REPO, "gin", "smoke.gin")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
# 3 epochs of 37 steps, a checkpoint every 5 steps.
BINDINGS = ["train_eval.train_steps = None", "train_eval.epochs = 3",
            "train_eval.batch_size = 32", "train_eval.checkpoint_every_n_steps = 5",
            "train_eval.summary_every_n_steps = 0",
            "train_eval.sample_every_n_epochs = 0", "train_eval.export = False"]
# The config of conftest.py's session-wide `smoke_reference`, the one
# uninterrupted run that every interrupted-and-resumed run is compared with:
# 2 epochs of 37 steps, a checkpoint every 5 steps (ckpt-5 ... ckpt-35,
# ckpt-37 at the epoch end, then ckpt-42, ckpt-47, ...), 3 kept. The
# reference exports (REFERENCE_EXPORTING): exporting runs after training and
# changes none of it, so runs under REFERENCE_BINDINGS compare equal to it.
REFERENCE_BINDINGS = [b for b in BINDINGS if not b.startswith(
    ("train_eval.epochs", "train_eval.export"))] + [
        "train_eval.epochs = 2", "train_eval.export = False"]
REFERENCE_EXPORTING = REFERENCE_BINDINGS + ["train_eval.export = True"]
REFERENCE_STEPS = 74


def flags(model_dir, bindings=BINDINGS):
  """The flags of `python -m mwn_tf.main` for smoke.gin plus `bindings`."""
  return (["--gin_file=gin/smoke.gin", f"--model_dir={model_dir}"] +
          [f"--gin_param={b}" for b in bindings])


def command(model_dir, bindings=BINDINGS):
  return [sys.executable, "-m", "mwn_tf.main"] + flags(model_dir, bindings)


def rerun(model_dir, bindings=BINDINGS, extra_flags=()):
  """Runs the plain command (plus `extra_flags`) to the end; returns its
  stderr."""
  proc = subprocess.run(command(model_dir, bindings) + list(extra_flags),
                        cwd=REPO, env=ENV,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stderr


def reference_run(model_dir, bindings=BINDINGS):
  """The uninterrupted run, in this process; returns its results."""
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings(
        [os.path.join(REPO, "gin/smoke.gin")], bindings)
    return train_eval_lib.train_eval(str(model_dir))
  finally:
    gin.clear_config()


def final_variables(model_dir):
  path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
  return {name: tf.train.load_variable(path, name)
          for name, _ in tf.train.list_variables(path)
          if name.startswith(("classifier/", "weight_net/", "optimizer/",
                              "meta_optimizer/"))}


def assert_matches_reference(model_dir, reference_dir, reference):
  """model_dir's finished run equals the uninterrupted `reference` (its
  results) in `reference_dir`: per-epoch history and final variables."""
  after = json.loads((model_dir / "results.json").read_text())
  assert after["finished"] and after["steps"] == reference["steps"]
  assert len(after["history"]) == len(reference["history"]) == after["epochs"]
  for got, want in zip(after["history"], reference["history"]):
    assert got["step"] == want["step"]
    assert got["test"]["accuracy"] == pytest.approx(want["test"]["accuracy"],
                                                    abs=0.0021)  # 1/500
    for part in ("train", "meta"):
      for key, val in want[part].items():
        assert got[part][key] == pytest.approx(val, rel=1e-4), (part, key)
  ref_vars = final_variables(reference_dir)
  got_vars = final_variables(model_dir)
  assert ref_vars.keys() == got_vars.keys() and len(ref_vars) > 10
  for name, want in ref_vars.items():
    np.testing.assert_allclose(got_vars[name], want, rtol=1e-4, atol=1e-6,
                               err_msg=name)
  return after


def run(model_dir, *bindings, config=SMOKE):
  """train_eval under smoke.gin + bindings; leaves gin clear."""
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings([config], list(bindings))
    return train_eval_lib.train_eval(str(model_dir))
  finally:
    gin.clear_config()
