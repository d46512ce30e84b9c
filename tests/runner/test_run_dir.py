"""The model_dir contract: names, the writer on chief and non-chief, readers."""

import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf

from mwn_tf.runner import run_dir


def _strategy(chief, task_id=0):
  """What `run_dir` reads of a strategy: the chief flag and the task id."""
  return types.SimpleNamespace(
      extended=types.SimpleNamespace(should_checkpoint=chief),
      cluster_resolver=types.SimpleNamespace(task_id=task_id))


def test_names_by_method(tmp_path):
  mwn = run_dir.files(str(tmp_path), "mwn")
  assert mwn["results"] == os.path.join(str(tmp_path), "results.json")
  assert mwn["weight_curve"] == os.path.join(str(tmp_path),
                                             "weight_curve.csv")
  assert "weight_curve" not in run_dir.files(str(tmp_path), "baseline")
  assert set(run_dir.exports(str(tmp_path), "mwn")) == {"classifier",
                                                        "weight_net"}
  assert set(run_dir.exports(str(tmp_path), "baseline")) == {"classifier"}
  assert run_dir.trial_id(str(tmp_path / "c10_u40") + "/") == "c10_u40"


def test_the_chief_writes_and_a_worker_only_uses_its_scratch(tmp_path):
  chief = run_dir.Writer(str(tmp_path), "mwn", _strategy(True))
  worker = run_dir.Writer(str(tmp_path), "mwn", _strategy(False, task_id=2))
  assert chief.chief and not worker.chief
  assert chief.save_dir == run_dir.checkpoint_dir(str(tmp_path))
  assert worker.save_dir == os.path.join(str(tmp_path), "workertemp_2",
                                         "checkpoints")
  samples = {"index": np.arange(3), "weight": np.ones(3, np.float32)}
  curve = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
  for writer in (worker, chief):
    writer.write_results({"steps": 7})
    writer.write_operative_config("train_eval.seed = 1\n")
    writer.write_final(samples, curve, None)
    if writer is worker:
      assert os.listdir(tmp_path) == []  # a worker writes nothing
  assert run_dir.read_results(str(tmp_path)) == {"steps": 7}
  assert run_dir.read_results(chief.files["results"]) == {"steps": 7}
  with np.load(tmp_path / "sample_weights.npz") as npz:
    np.testing.assert_array_equal(npz["index"], samples["index"])
  assert (tmp_path / "weight_curve.csv").read_text() == (
      "loss,weight\n0,0.5\n1,0.25\n")
  assert run_dir.path(str(tmp_path), run_dir.OPERATIVE_CONFIG)
  assert run_dir.path(str(tmp_path), run_dir.CLASSIFIER_EXPORT) is None
  os.makedirs(worker.save_dir)
  worker.cleanup()
  chief.cleanup()
  assert not (tmp_path / "workertemp_2").exists()
  assert (tmp_path / "results.json").exists()


def test_readers(tmp_path):
  with pytest.raises(OSError):
    run_dir.read_results(str(tmp_path))
  assert run_dir.checkpoints(str(tmp_path)) == []
  assert run_dir.latest_checkpoint(str(tmp_path)) is None
  manager = tf.train.CheckpointManager(
      tf.train.Checkpoint(v=tf.Variable(1.0)),
      run_dir.checkpoint_dir(str(tmp_path / "a" / "run1")), max_to_keep=None)
  first, second = manager.save(3), manager.save(5)
  run = str(tmp_path / "a" / "run1")
  assert run_dir.checkpoints(run) == [first, second]
  assert run_dir.latest_checkpoint(run) == second
  for name in ("a/run1", "a/run2", "b"):
    os.makedirs(tmp_path / name, exist_ok=True)
    (tmp_path / name / "results.json").write_text(json.dumps({"n": name}))
  found = run_dir.find_results([str(tmp_path / "a"), str(tmp_path / "b")])
  assert [n for n, _ in found] == ["b", "run1", "run2"]
  assert [run_dir.read_results(p)["n"] for _, p in found] == [
      "b", "a/run1", "a/run2"]


def test_write_file_atomically(tmp_path):
  path = str(tmp_path / "results.json")
  run_dir.write_file_atomically(path, "one")
  run_dir.write_file_atomically(path, b"two")
  assert open(path).read() == "two"
  assert os.listdir(tmp_path) == ["results.json"]


def test_remove_stale_files_takes_only_killed_atomic_writes(tmp_path):
  run_dir.write_file_atomically(str(tmp_path / "results.json"), "done")
  for name in ("results.json.tmp-0123abcd", "curve.csv.tmp-89abcdef"):
    (tmp_path / name).write_text("half")
  for name in ("notes.tmp-later.txt", "a.tmp-0123abcd.bak"):  # not ours
    (tmp_path / name).write_text("keep")
  (tmp_path / "classifier.tmp-0123abcd").mkdir()  # an export's: clean_stale
  run_dir.remove_stale_files(str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == [
      "a.tmp-0123abcd.bak", "classifier.tmp-0123abcd", "notes.tmp-later.txt",
      "results.json"]
