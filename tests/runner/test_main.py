"""The entry point: flags, gin errors, model_dir errors, exit codes."""

import os
import re
import subprocess
import sys

import gin
import pytest

from mwn_tf import main
from helpers import REPO
from helpers import call_main
from helpers import error_lines


def test_smoke_run_with_default_model_dir(tmp_path, monkeypatch, capsys):
  # From another folder: gin/smoke.gin is found through the repo search path
  # and the default model_dir is ./runs/smoke.
  monkeypatch.chdir(tmp_path)
  status, out, _ = call_main(["--gin_file=gin/smoke.gin"], capsys)
  assert status == 0
  model_dir = os.path.join("runs", "smoke")
  assert os.path.exists(os.path.join(model_dir, "results.json"))
  assert "final-epoch test accuracy:" in out
  assert model_dir in out and os.path.join(model_dir, "export") in out


@pytest.mark.parametrize("gin_text,bindings,expected", [
    ("train_eval.no_such_parameter = 1\n", [], "no_such_parameter"),
    ("no_such_function.x = 1\n", [], "No configurable matching"),
    ("train_eval.epochs = (\n", [], "unclosed bracket or quote"),
    ("", ["train_eval.epochs = oops"], "--gin_param='train_eval.epochs"),
    ("include 'gin/not_there.gin'\n", [], "not_there.gin"),
])
def test_bad_gin_exits_2_with_one_line(tmp_path, capsys, gin_text, bindings,
                                       expected):
  config = tmp_path / "bad.gin"
  config.write_text("train_eval.dataset = 'digits'\n" + gin_text)
  status, _, err = call_main(
      [f"--gin_file={config}", f"--model_dir={tmp_path / 'run'}"] +
      [f"--gin_param={b}" for b in bindings], capsys)
  assert status == 2
  lines = error_lines(err)
  assert len(lines) == 1 and expected in lines[0], err
  if not bindings:
    assert str(config) in lines[0]
  assert "Traceback" not in err
  assert not (tmp_path / "run").exists()  # nothing started


def test_missing_gin_file(tmp_path, capsys):
  status, _, err = call_main(["--gin_file=gin/nope.gin",
                              f"--model_dir={tmp_path}"], capsys)
  assert status == 2
  assert "gin/nope.gin" in error_lines(err)[0]


def test_unwritable_model_dir(tmp_path, capsys):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")  # works even as root, unlike chmod
  status, _, err = call_main(["--gin_file=gin/smoke.gin",
                              f"--model_dir={blocker / 'run'}"], capsys)
  assert status == 2
  (line,) = error_lines(err)
  assert "cannot write to --model_dir=" in line and str(blocker) in line


def test_invalid_setting_exits_2(tmp_path, capsys):
  status, _, err = call_main(["--gin_file=gin/smoke.gin",
                              "--gin_param=train_eval.method = 'mwm'",
                              f"--model_dir={tmp_path}"], capsys)
  assert status == 2
  (line,) = error_lines(err)
  assert "train_eval.method must be one of" in line


def test_nan_loss_exits_1_naming_the_step(tmp_path, capsys):
  status, _, err = call_main(["--gin_file=gin/smoke.gin",
                              "--gin_param=train_eval.learning_rate = 1e38",
                              f"--model_dir={tmp_path}"], capsys)
  assert status == 1
  (line,) = error_lines(err)
  assert "training stopped: meta_loss became nan at step 1" in line
  assert "nothing was saved yet" in line


@pytest.mark.slow
def test_malformed_gin_in_a_real_process(tmp_path):
  config = tmp_path / "broken.gin"
  config.write_text("train_eval.epochs = 3\ntrain_eval.model = 'mlp\n")
  proc = subprocess.run(
      [sys.executable, "-m", "mwn_tf.main", f"--gin_file={config}",
       f"--model_dir={tmp_path / 'run'}"], cwd=REPO, capture_output=True,
      text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert proc.returncode == 2, proc.stderr
  lines = error_lines(proc.stderr)
  assert len(lines) == 1 and str(config) in lines[0]
  assert "Traceback" not in proc.stderr


def test_a_resumed_run_reports_the_steps_it_ran_and_the_total(tmp_path,
                                                               capsys):
  # Whole epochs of 4 steps (1097 training images, batch 256).
  argv = ["--gin_file=gin/smoke.gin", f"--model_dir={tmp_path / 'run'}",
          "--gin_param=train_eval.export = False",
          "--gin_param=train_eval.train_steps = None",
          "--gin_param=train_eval.batch_size = 256"]
  status, out, err = call_main(argv + ["--gin_param=train_eval.epochs = 1"],
                               capsys)
  assert status == 0, err
  assert re.search(r"; 4 steps in \d+s$", out.splitlines()[-2]), out
  # Trained longer: 4 more steps now, 8 in all.
  gin.clear_config()
  status, out, err = call_main(argv + ["--gin_param=train_eval.epochs = 2"],
                               capsys)
  assert status == 0, err
  assert re.search(r"; 4 steps in \d+s \(8 in all\)$",
                   out.splitlines()[-2]), out
