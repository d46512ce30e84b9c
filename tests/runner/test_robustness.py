"""Robustness of the runner: kills in the middle of a write, two
resumptions, and a check of every setting before anything is written.

Kills: `python -m mwn_tf.main` runs in a child started through
tests/killed_runs.py's `KILLER`, a bootstrap that wraps one of TensorFlow's
own file-writing functions so that the child SIGKILLs itself at a chosen
point of a chosen write (a checkpoint's shards, their merge, the checkpoint
state file, the deletion of an old checkpoint, a SavedModel). What is on
disk then is exactly what a preemption at that instant leaves. The same
plain command is then rerun and must resume from the newest complete
checkpoint and end as an uninterrupted run.
"""

import json
import os
import re
import subprocess
import sys
from unittest import mock

import gin
import numpy as np
import pytest
import tensorflow as tf

from mwn_tf import data as data_lib
from mwn_tf import main
from mwn_tf.runner import declarations
from mwn_tf.runner import run_dir
from mwn_tf.runner import settings as settings_lib
from mwn_tf.runner import train_eval as train_eval_lib
import helpers as resume
from helpers import call_main
from helpers import error_lines
import killed_runs
from killed_runs import assert_nothing_left_over
from killed_runs import killed_run
from killed_runs import recorded

# 2 epochs of 37 steps, a checkpoint every 5 steps (ckpt-5 ... ckpt-35,
# ckpt-37 at the epoch end, then ckpt-42, ckpt-47, ...), 3 kept. The
# uninterrupted run is conftest.py's `smoke_reference` (with its exports).
BINDINGS = resume.REFERENCE_BINDINGS
EXPORTING = resume.REFERENCE_EXPORTING
STEPS = resume.REFERENCE_STEPS


# ----------------------------------------------------------------------------
# 1a. A kill in the middle of a checkpoint write.
# ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("point,resumes_from", [
    ("merge", "ckpt-15"),   # index half written (skipped), data in place
    ("record", "ckpt-20"),  # files complete, state file copy half written
    ("sweep", "ckpt-20"),   # recorded; ckpt-5 half deleted
])
def test_kill_while_writing_a_checkpoint_resumes_from_a_complete_one(
    tmp_path, smoke_reference, point, resumes_from):
  run = tmp_path / "run"
  killed_run(run, f"{point}@" + ("ckpt-5" if point == "sweep" else "ckpt-20"))
  ckpts = run / "checkpoints"
  # What the kill left: the interrupted write is really on disk.
  if point == "merge":
    assert (ckpts / "ckpt-20.data-00000-of-00001").exists()
    assert (ckpts / "ckpt-20.index").exists()
    assert recorded(run)[-1] == "ckpt-15"
  elif point == "record":
    assert (ckpts / "ckpt-20.index").exists()
    assert any(n.startswith("checkpoint.tmp") for n in os.listdir(ckpts))
    assert recorded(run)[-1] == "ckpt-15"
  else:
    assert recorded(run) == ["ckpt-5", "ckpt-10", "ckpt-15", "ckpt-20"]
    assert not (ckpts / "ckpt-5.index").exists()

  log = resume.rerun(run, BINDINGS)
  assert f"Resuming from {ckpts / resumes_from}: " in log
  # Only the half-merged checkpoint is unreadable, and it is said so.
  skipped = re.findall(r"Cannot restore (\S+) ", log)
  assert skipped == ([str(ckpts / "ckpt-20")] if point == "merge" else [])
  ref_dir, ref_results = smoke_reference
  resume.assert_matches_reference(run, ref_dir, ref_results)
  assert_nothing_left_over(run)


def test_what_killed_writes_left_is_removed_and_nothing_else(tmp_path):
  """The start-up cleanup, file by file (the runs above only reach it
  through whichever leftovers their kill point makes)."""
  ckpts = tmp_path / "checkpoints"
  manager = tf.train.CheckpointManager(
      tf.train.Checkpoint(v=tf.Variable(1.0)), str(ckpts), max_to_keep=None)
  manager.save(checkpoint_number=3)
  manager.save(checkpoint_number=5)
  saved = {os.path.join("checkpoints", n) for n in os.listdir(ckpts)}
  assert len(saved) == 5  # the state file, ckpt-3 and ckpt-5
  keep = saved | {
      "checkpoints/ckpt-1.index",  # older than ckpt-5: not a killed save
      # Newer than ckpt-5 and unrecorded, but maybe complete (a kill between
      # merge and record): the restore decides by reading it, not this.
      "checkpoints/ckpt-7.index", "checkpoints/ckpt-7.data-00000-of-00001",
      "results.json", "events.out.tfevents.1.host.session",
      "export/classifier/saved_model.pb"}
  stale = {"checkpoints/ckpt-9_temp/part-00000-of-00001.index",
           "checkpoints/checkpoint.tmp0123456789abcdef",
           "results.json.tmp-0123abcd", "sample_weights.npz.tmp-89abcdef",
           "export/weight_net.tmp-0123abcd/saved_model.pb"}
  for name in (keep - saved) | stale:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text("x")
  run_dir.remove_unfinished_writes(
      str(tmp_path), [str(tmp_path / "export" / "classifier"),
                      str(tmp_path / "export" / "weight_net")])
  left = {os.path.relpath(os.path.join(root, n), tmp_path)
          for root, _, files in os.walk(tmp_path) for n in files}
  assert left == keep
  assert not (ckpts / "ckpt-9_temp").exists()


# ----------------------------------------------------------------------------
# 1b. A kill in the middle of the SavedModel export.
# ----------------------------------------------------------------------------
def _test_images():
  splits = data_lib.get("digits", noise_type="uniform", noise_rate=0.4,
                        seed=0)
  return next(iter(splits.test(500)))["image"].numpy()


def _predictions(model_dir, images):
  """(class probabilities, V's weights on a loss grid) of the exports."""
  classifier = tf.saved_model.load(str(model_dir / "export" / "classifier"))
  weight_net = tf.saved_model.load(str(model_dir / "export" / "weight_net"))
  losses = np.linspace(0.0, 10.0, 41, dtype=np.float32)
  return (classifier.serve(images)["probabilities"].numpy(),
          weight_net.serve(losses)["weights"].numpy())


def _files(folder):
  return {os.path.relpath(os.path.join(root, n), folder):
          open(os.path.join(root, n), "rb").read()
          for root, _, files in os.walk(folder) for n in files}


@pytest.mark.slow
def test_kill_while_exporting_keeps_the_previous_export_or_none(
    tmp_path, smoke_reference):
  run, export = tmp_path / "run", tmp_path / "run" / "export"
  images = _test_images()
  ref_dir, _ = smoke_reference
  want = _predictions(ref_dir, images)

  def assert_right_predictions():
    for got, ref in zip(_predictions(run, images), want):
      np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4)

  # Killed in the first export: none remains, only its temporary folder.
  kill = "export@/export/classifier.tmp-"
  killed_run(run, kill, EXPORTING)
  assert not (export / "classifier").exists()
  assert [n for n in os.listdir(export) if n.startswith("classifier.tmp-")]
  assert not json.loads((run / "results.json").read_text())["finished"]
  # The rerun trains nothing more and exports.
  log = resume.rerun(run, EXPORTING)
  assert f"Resuming from {run / 'checkpoints' / f'ckpt-{STEPS}'}: " in log
  assert json.loads((run / "results.json").read_text())["finished"]
  assert_right_predictions()
  assert_nothing_left_over(run)

  # Killed while replacing a complete export: the previous one is untouched.
  # (A finished run exports again only when asked: --reexport.)
  previous = _files(export)
  killed_run(run, kill, EXPORTING, ["--reexport"])
  now = _files(export)
  assert any(k.startswith("classifier.tmp-") for k in now)
  assert {k: v for k, v in now.items()
          if not k.startswith("classifier.tmp-")} == previous
  assert_right_predictions()
  resume.rerun(run, EXPORTING, ["--reexport"])
  assert_right_predictions()
  assert_nothing_left_over(run)


# ----------------------------------------------------------------------------
# 2. Two kills, two resumptions.
# ----------------------------------------------------------------------------
@pytest.mark.slow
def test_resume_twice_matches_an_uninterrupted_run(tmp_path, smoke_reference):
  run, ckpts = tmp_path / "run", tmp_path / "run" / "checkpoints"
  # Killed after the first checkpoint, while writing the second.
  killed_run(run, "shard@ckpt-10")
  assert (ckpts / "ckpt-10_temp").is_dir() and recorded(run) == ["ckpt-5"]
  # Resumed mid-epoch 1; killed after a checkpoint mid-epoch 2.
  log = killed_run(run, "saved@ckpt-52")
  assert f"Resuming from {ckpts / 'ckpt-5'}: " in log
  assert recorded(run)[-1] == "ckpt-52"
  results = json.loads((run / "results.json").read_text())
  assert results["epochs_done"] == 1 and not results["finished"]
  # Resumed mid-epoch 2, to the end.
  log = resume.rerun(run, BINDINGS)
  assert f"Resuming from {ckpts / 'ckpt-52'}: " in log
  ref_dir, ref_results = smoke_reference
  after = resume.assert_matches_reference(run, ref_dir, ref_results)
  assert after["epochs_done"] == 2
  assert_nothing_left_over(run)


# ----------------------------------------------------------------------------
# 3. Every setting is checked before anything is written.
# ----------------------------------------------------------------------------
NAN, INF = float("nan"), float("inf")
# (binding, bad value, other settings it needs, message fragment). The
# fragment names the binding and the accepted values.
BAD_SETTINGS = [
    ("model_dir", "", {}, "model_dir must be a non-empty path"),
    ("strategy", "mirrored", {}, "strategy must be None or a tf.distribute"),
    ("method", "mwm", {}, "train_eval.method must be one of 'mwn', "
     "'baseline', got 'mwm'"),
    ("dataset", "cifar11", {}, "train_eval.dataset must be one of 'cifar10'"),
    ("model", "resnet33", {},
     "train_eval.model must be one of 'fmnist_cnn', 'mlp'"),
    ("seed", -1, {}, "train_eval.seed must be an integer in [0, 2**32 - 1]"),
    ("seed", 2**32, {}, "train_eval.seed must be an integer in [0, 2**32"),
    ("seed", 1.5, {}, "train_eval.seed must be an integer"),
    ("epochs", 0, {}, "train_eval.epochs must be an integer >= 1, got 0"),
    ("epochs", 2.5, {}, "train_eval.epochs must be an integer >= 1"),
    ("epochs", True, {}, "train_eval.epochs must be an integer >= 1"),
    ("train_steps", 0, {}, "train_eval.train_steps must be None or an "
     "integer >= 1"),
    ("batch_size", 0, {}, "train_eval.batch_size must be an integer >= 1"),
    ("batch_size", "16", {}, "train_eval.batch_size must be an integer >= 1"),
    ("batch_size", 5000, {}, "train_eval.batch_size must be <= the 1197 "
     "training examples"),
    ("batch_size", 15, {"strategy": "2 replicas"},
     "train_eval.batch_size must be a multiple of the 2 replicas"),
    ("meta_batch_size", -1, {}, "train_eval.meta_batch_size must be an "
     "integer >= 1"),
    ("learning_rate", 0, {}, "train_eval.learning_rate must be a finite "
     "number > 0"),
    ("learning_rate", -0.1, {}, "train_eval.learning_rate must be a finite"),
    ("learning_rate", NAN, {}, "train_eval.learning_rate must be a finite"),
    ("learning_rate", INF, {}, "train_eval.learning_rate must be a finite "
     "number > 0, got inf"),
    ("learning_rate", "0.1", {}, "train_eval.learning_rate must be a finite"),
    ("momentum", 1.0, {}, "train_eval.momentum must be a number in [0, 1)"),
    ("momentum", -0.1, {}, "train_eval.momentum must be a number in [0, 1)"),
    ("momentum", NAN, {}, "train_eval.momentum must be a number in [0, 1)"),
    ("nesterov", 1, {}, "train_eval.nesterov must be True or False"),
    ("weight_decay", -5e-4, {}, "train_eval.weight_decay must be a finite "
     "number >= 0"),
    ("weight_decay", INF, {}, "train_eval.weight_decay must be a finite"),
    ("lr_decay_epochs", (100, 80), {}, "train_eval.lr_decay_epochs must be a "
     "list of increasing epochs > 0"),
    ("lr_decay_epochs", (0, 10), {}, "train_eval.lr_decay_epochs must be a "
     "list of increasing epochs > 0"),
    ("lr_decay_epochs", 80, {}, "train_eval.lr_decay_epochs must be a list"),
    ("lr_decay_epochs", (1, 5), {"train_steps": None, "epochs": 3},
     "train_eval.lr_decay_epochs must be in (0, epochs=3], got (1, 5)"),
    # 2 steps per epoch: epoch 0.1 rounds to step 0.
    ("lr_decay_epochs", (0.1,), {"train_steps": None, "epochs": 1,
                                 "batch_size": 512},
     "train_eval.lr_decay_epochs gives learning-rate boundaries at steps [0]"),
    ("lr_decay_steps", (5, 3), {}, "train_eval.lr_decay_steps must be None "
     "or a list of increasing steps >= 1"),
    ("lr_decay_steps", (0,), {}, "train_eval.lr_decay_steps must be None or"),
    ("lr_decay_steps", (1, 3), {}, "train_eval.lr_decay_steps must be in [1, "
     "train_steps=2], got (1, 3)"),
    ("lr_decay_steps", (5,), {"train_steps": None, "epochs": 1,
                              "batch_size": 512},
     "train_eval.lr_decay_steps gives learning-rate boundaries at steps [5]; "
     "they must be increasing and in [1, 2]"),
    ("lr_decay_factor", 0, {}, "train_eval.lr_decay_factor must be a number "
     "in (0, 1]"),
    ("lr_decay_factor", 1.5, {}, "train_eval.lr_decay_factor must be a number "
     "in (0, 1]"),
    ("weight_net_hidden_units", (), {}, "train_eval.weight_net_hidden_units "
     "must be a non-empty list of integers >= 1"),
    ("weight_net_hidden_units", (8, 0), {}, "train_eval.weight_net_hidden_"
     "units must be a non-empty list"),
    ("weight_net_hidden_units", 8, {}, "train_eval.weight_net_hidden_units "
     "must be a non-empty list"),
    ("normalize_weights", "mean", {}, "train_eval.normalize_weights must be "
     "one of 'none', 'sum'"),
    ("meta_optimizer", "rmsprop", {}, "train_eval.meta_optimizer must be one "
     "of 'adam', 'sgd'"),
    ("meta_learning_rate", 0.0, {}, "train_eval.meta_learning_rate must be a "
     "finite number > 0"),
    ("meta_learning_rate", NAN, {}, "train_eval.meta_learning_rate must be"),
    ("meta_learning_rate", INF, {}, "train_eval.meta_learning_rate must be a "
     "finite number > 0, got inf"),
    ("meta_momentum", 1, {}, "train_eval.meta_momentum must be a number in "
     "[0, 1)"),
    ("meta_nesterov", "no", {}, "train_eval.meta_nesterov must be True or "
     "False"),
    ("meta_weight_decay", -1.0, {}, "train_eval.meta_weight_decay must be a "
     "finite number >= 0"),
    ("jit_compile", "yes", {}, "train_eval.jit_compile must be one of True, "
     "False, 'auto'"),
    ("jit_compile", 1, {}, "train_eval.jit_compile must be one of True"),
    ("steps_per_execution", 0, {}, "train_eval.steps_per_execution must be an "
     "integer >= 1"),
    ("deterministic", "true", {}, "train_eval.deterministic must be True or "
     "False"),
    ("eval_batch_size", 0, {}, "train_eval.eval_batch_size must be an integer "
     ">= 1"),
    ("checkpoint_every_n_steps", -1, {}, "train_eval.checkpoint_every_n_steps "
     "must be an integer >= 0 (0: at epoch ends only)"),
    ("checkpoint_every_n_steps", 2.0, {}, "train_eval.checkpoint_every_n_"
     "steps must be an integer >= 0"),
    ("max_checkpoints_to_keep", 0, {}, "train_eval.max_checkpoints_to_keep "
     "must be an integer >= 1"),
    ("max_checkpoints_to_keep", None, {}, "train_eval.max_checkpoints_to_"
     "keep must be an integer >= 1"),
    ("summary_every_n_steps", -1, {}, "train_eval.summary_every_n_steps must "
     "be an integer >= 0"),
    ("sample_every_n_epochs", -5, {}, "train_eval.sample_every_n_epochs must "
     "be an integer >= 0"),
    ("curve_max_loss", 0, {}, "train_eval.curve_max_loss must be a finite "
     "number > 0"),
    ("curve_max_loss", INF, {}, "train_eval.curve_max_loss must be a finite"),
    ("export", "no", {}, "train_eval.export must be True or False"),
    ("verbose", 3, {}, "train_eval.verbose must be one of 0, 1, 2, 'auto'"),
    ("verbose", True, {}, "train_eval.verbose must be one of 0, 1, 2"),
    ("reexport", "yes", {}, "train_eval.reexport must be True or False"),
    ("progress_every_n_seconds", -1, {}, "train_eval.progress_every_n_seconds"
     " must be a finite number >= 0"),
    ("progress_every_n_seconds", INF, {}, "train_eval.progress_every_n_"
     "seconds must be a finite number >= 0"),
    ("eval_every_n_epochs", 0, {}, "train_eval.eval_every_n_epochs must be "
     "an integer >= 1"),
    ("meta_interval", 0, {}, "train_eval.meta_interval must be an integer "
     ">= 1 (1: the exact step), got 0."),
    ("meta_interval", 2.0, {}, "train_eval.meta_interval must be an integer"),
    ("virtual_layers", -1, {}, "train_eval.virtual_layers must be None (every "
     "layer: the exact step) or an integer >= 1, got -1."),
    ("virtual_layers", 0, {}, "train_eval.virtual_layers must be None"),
    ("weight_net", "cmw", {}, "train_eval.weight_net must be one of 'mlp', "
     "'class_aware', got 'cmw'."),
    ("weight_net_clusters", 0, {}, "train_eval.weight_net_clusters must be "
     "an integer >= 1, got 0."),
    ("weight_net_cluster_map", (0, -1), {}, "train_eval.weight_net_cluster_"
     "map must be None (k-means) or a tuple of cluster ids"),
    ("hypergradient", "first_order", {}, "train_eval.hypergradient must be "
     "one of 'second_order', 'finite_difference', got 'first_order'."),
    ("fd_epsilon", 0.0, {}, "train_eval.fd_epsilon must be a finite number "
     "> 0, got 0.0."),
    ("fd_epsilon", INF, {}, "train_eval.fd_epsilon must be a finite number"),
    ("exact_warmup_steps", -1, {}, "train_eval.exact_warmup_steps must be an "
     "integer >= 0, got -1."),
    ("fast_mode", "turbo", {}, "train_eval.fast_mode must be one of 'off', "
     "'recommended', got 'turbo'."),
    ("collective_timeout_s", -1, {}, "train_eval.collective_timeout_s must be "
     "a finite number >= 0 or None"),
    ("collapse_ess_threshold", 1.5, {}, "train_eval.collapse_ess_threshold "
     "must be a number in [0, 1]"),
    ("collapse_window_steps", 0, {}, "train_eval.collapse_window_steps must "
     "be an integer >= 1"),
    ("on_weight_collapse", "halt", {}, "train_eval.on_weight_collapse must "
     "be one of 'warn', 'stop', 'reset_v'"),
]


def _two_replicas():
  strategy = mock.create_autospec(tf.distribute.Strategy, instance=True)
  strategy.num_replicas_in_sync = 2
  return strategy


def test_the_table_covers_every_parameter():
  import inspect  # pylint: disable=g-import-not-at-top
  params = inspect.signature(train_eval_lib.train_eval.__wrapped__).parameters
  assert {row[0] for row in BAD_SETTINGS} == set(params)


@pytest.mark.parametrize(
    "name,value,others,message", BAD_SETTINGS,
    ids=[f"{r[0]}={r[1]!r}" for r in BAD_SETTINGS])
def test_a_bad_setting_is_refused_before_anything_is_written(
    tmp_path, name, value, others, message):
  gin.parse_config_file(os.path.join(resume.REPO, "gin", "smoke.gin"))
  settings = dict(others, **{name: value})
  bad_dir = settings.pop("model_dir", None)
  if settings.get("strategy") == "2 replicas":
    settings["strategy"] = _two_replicas()
  # An existing run's folder, with a leftover that the run would clean up.
  existing = tmp_path / "existing"
  (existing / "checkpoints").mkdir(parents=True)
  (existing / "checkpoints" / "checkpoint").write_text("x")
  (existing / "results.json").write_text("{}")
  (existing / "results.json.tmp-0123abcd").write_text("{")
  before = killed_runs.snapshot(existing)
  for model_dir in (tmp_path / "new", existing):
    with pytest.raises(settings_lib.ConfigError) as error:
      train_eval_lib.train_eval(str(model_dir) if bad_dir is None else bad_dir,
                       **settings)
    # One line (gin appends where it was called from on lines of its own).
    assert message in str(error.value).splitlines()[0]
  assert not (tmp_path / "new").exists()
  assert killed_runs.snapshot(existing) == before


# Values at the edges of each accepted range (check_settings is also given
# epochs=1 and train_steps=2, which the boundary lists must fit).
ACCEPTED = {
    "method": ["mwn", "baseline"], "dataset": data_lib.names(),
    "model": ["mlp", "resnet32", "wrn28_10"], "seed": [0, 2**32 - 1],
    "epochs": [1], "train_steps": [None, 1], "batch_size": [1],
    "meta_batch_size": [1], "learning_rate": [1e-9, 1, 1e300],
    "momentum": [0, 0.0, 0.999], "nesterov": [True, False],
    "weight_decay": [0, 1], "lr_decay_epochs": [(), [0.5, 1], (1,)],
    "lr_decay_steps": [None, (), (1, 2)], "lr_decay_factor": [1, 1e-9],
    "weight_net_hidden_units": [(1,), [100, 100]],
    "normalize_weights": ["sum", "none"], "meta_optimizer": ["adam", "sgd"],
    "meta_learning_rate": [1e-9], "meta_momentum": [0],
    "meta_nesterov": [np.bool_(True)], "meta_weight_decay": [0.0],
    "jit_compile": [True, False, "auto"], "steps_per_execution": [1],
    "deterministic": [True], "eval_batch_size": [1],
    "checkpoint_every_n_steps": [0, 1], "max_checkpoints_to_keep": [1],
    "summary_every_n_steps": [0], "sample_every_n_epochs": [0],
    "curve_max_loss": [1e-3], "export": [False],
    "verbose": [0, 1, 2, "auto"], "reexport": [True, False],
    "progress_every_n_seconds": [0, 0.001, 60],
    "eval_every_n_epochs": [1, 7], "meta_interval": [1, 5],
    "virtual_layers": [None, 1, 3],
    "collapse_ess_threshold": [0, 0.5, 1], "collapse_window_steps": [1],
    "on_weight_collapse": ["warn", "stop", "reset_v"],
    "weight_net": ["mlp", "class_aware"], "weight_net_clusters": [1, 3],
    "weight_net_cluster_map": [None, (0, 1, 1, 0)],
    "hypergradient": ["second_order", "finite_difference"],
    "fd_epsilon": [1e-6, 0.01], "exact_warmup_steps": [0, 200],
    "fast_mode": ["off", "recommended"], "collective_timeout_s": [None, 0, 600],
}


def test_the_accepted_edge_values_pass():
  assert set(ACCEPTED) == {row[0] for row in BAD_SETTINGS} - {
      "model_dir", "strategy"}
  # Every declared setting is tried here.
  assert set(ACCEPTED) == {s.name for s in declarations.SETTINGS} | {
      "reexport"}
  for name, values in ACCEPTED.items():
    for value in values:
      settings_lib.check_settings({"epochs": 1, "train_steps": 2, name: value})


def test_every_shipped_gin_file_passes():
  gin_dir = os.path.join(resume.REPO, "gin")
  for name in sorted(os.listdir(gin_dir)):
    gin.clear_config()
    main.parse_gin([os.path.join(gin_dir, name)], [])
    settings_lib.check_settings(train_eval_lib.bound_settings())


# The command line: bad flags and bad bindings exit 2 with one line.
@pytest.mark.parametrize("argv,message,checked_before_model_dir", [
    (["--gin_param=train_eval.curve_max_loss = -1.0"],
     "train_eval.curve_max_loss must be a finite number > 0, got -1.0.", True),
    (["--model_dir="], "--model_dir is empty", True),
    # These need the data or the strategy: refused before model_dir is
    # created all the same.
    (["--gin_param=train_eval.batch_size = 5000"],
     "train_eval.batch_size must be <= the 1197 training examples", True),
    (["--tpu=my-tpu"], "--tpu='my-tpu' was given with --strategy='default'",
     True),
])
def test_cli_refuses_bad_values_in_one_line(tmp_path, capsys, argv, message,
                                            checked_before_model_dir):
  model_dir = tmp_path / "run"
  argv = ["--gin_file=gin/smoke.gin", f"--model_dir={model_dir}"] + argv
  status, _, err = call_main(argv, capsys)
  assert status == 2
  (line,) = error_lines(err)
  assert message in line and "Traceback" not in err
  if checked_before_model_dir:
    assert not model_dir.exists()
  else:
    assert not model_dir.exists() or not os.listdir(model_dir)


def test_a_bad_flag_exits_2_in_one_line(capsys):
  try:
    with pytest.raises(SystemExit) as exit_:
      main.parse_flags(["mwn_tf.main", "--strategy=bogus"])
  finally:
    main.FLAGS.unparse_flags()
  assert exit_.value.code == 2
  (line,) = error_lines(capsys.readouterr().err)
  assert "--strategy=bogus" in line and "one of" in line


@pytest.mark.slow
@pytest.mark.parametrize("argv,message", [
    (["--gin_param=train_eval.momentum = 1.5"],
     "train_eval.momentum must be a number in [0, 1), got 1.5."),
    (["--strategy=bogus"], "value should be one of <default|mirrored|"),
])
def test_cli_in_a_real_process(tmp_path, argv, message):
  model_dir = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, "-m", "mwn_tf.main", "--gin_file=gin/smoke.gin",
       f"--model_dir={model_dir}"] + argv, cwd=resume.REPO, env=resume.ENV,
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  (line,) = error_lines(proc.stderr)
  assert message in line and "Traceback" not in proc.stderr
  assert not model_dir.exists()
