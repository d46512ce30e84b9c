"""The analysis reads a run through the model_dir contract (`run_dir`, so
any tf.io.gfile filesystem), and leaves the caller's gin config alone."""

import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from helpers import ENV
from helpers import REPO
from mwn_tf.analysis import detection
from mwn_tf.analysis import report as report_lib
from mwn_tf.analysis import sources
from mwn_tf.analysis.detection import AnalysisError
import mwn_tf.data  # noqa: F401  Registers the loaders' configurables.

CALLER_CONFIG = "digits.noise_rate = 0.2\ndigits.noise_type = 'flip'\n"


def _copy_to(local: str, remote: str) -> None:
  """Copies folder `local` to `remote` through tf.io.gfile."""
  for folder, _, names in os.walk(local):
    relative = os.path.relpath(folder, local)
    # The in-memory filesystem takes "x/./y" literally.
    target = remote if relative == "." else os.path.join(remote, relative)
    tf.io.gfile.makedirs(target)
    for name in names:
      tf.io.gfile.copy(os.path.join(folder, name), os.path.join(target, name))


def _caller_config():
  """A config the caller parsed and finalized (as mwn_tf.main does)."""
  gin.parse_config(CALLER_CONFIG)
  gin.finalize()
  return gin.config_str()


def _assert_caller_config_untouched(before):
  assert gin.config_is_locked()
  assert gin.config_str() == before
  assert gin.query_parameter("digits.noise_rate") == 0.2


def test_run_gin_config_scopes_the_run_config():
  before = _caller_config()
  with sources.run_gin_config("digits.noise_rate = 0.6\n"):
    assert gin.query_parameter("digits.noise_rate") == 0.6
    # The caller's other bindings do not leak into the run's data.
    with pytest.raises(ValueError):
      gin.query_parameter("digits.noise_type")
  _assert_caller_config_untouched(before)
  with pytest.raises(RuntimeError):
    with sources.run_gin_config("digits.noise_rate = 0.6\n"):
      raise RuntimeError("the rebuild failed")
  _assert_caller_config_untouched(before)


@pytest.mark.slow
def test_analysis_of_a_run_on_a_gfile_filesystem(tmp_path):
  """A real run (gin/smoke.gin) copied to TF's in-memory filesystem, which
  only tf.io.gfile serves, is analysed from there like a gs:// run."""
  local = str(tmp_path / "smoke")
  subprocess.run([sys.executable, "-m", "mwn_tf.main",
                  "--gin_file=gin/smoke.gin", f"--model_dir={local}"],
                 cwd=REPO, env=ENV, check=True, capture_output=True,
                 timeout=600)
  # The in-memory filesystem lives as long as this process (it has no
  # recursive delete); the root is this test's own.
  remote = f"ram://{tmp_path.name}/smoke"
  _copy_to(local, remote)
  files = sources.find_run_files(remote)
  for name in ("samples", "weight_curve", "results", "operative_config",
               "classifier_export", "weight_net_export", "checkpoint"):
    assert getattr(files, name).startswith(remote), name
  assert files.event_dirs == (remote,)
  stored = sources.read_samples(files)
  assert len(stored) == 1197  # digits: 1797 - 500 test - 100 meta.
  np.testing.assert_array_equal(
      stored.weight, detection.load_samples(
          os.path.join(local, "sample_weights.npz")).weight)
  before = _caller_config()
  for source in ("exports", "checkpoint"):
    again, _ = sources.recompute_samples(files, source)
    np.testing.assert_array_equal(again.index, stored.index)
    np.testing.assert_allclose(again.loss, stored.loss, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(again.weight, stored.weight, rtol=1e-4)
  _assert_caller_config_untouched(before)
  out = report_lib.analyze(remote, out_dir=str(tmp_path / "analysis"))
  assert out["samples_source"] == (
      f"read from {remote}/sample_weights.npz")
  assert out["num_samples"] == 1197
  assert out["detection"]["num_known"] == 1197
  # The contact sheets too: the run's data is rebuilt from its config read
  # through gfile, so the samples are named and their images shown.
  assert set(out["figures"]) == {"weighting_function",
                                 "weight_distribution", "weight_variation",
                                 "distrusted_sheet", "trusted_sheet"}
  for path in [out["ranking_csv"], out["detection_json"],
               *out["figures"].values()]:
    assert os.path.getsize(path) > 0, path
  _assert_caller_config_untouched(before)
  # Its default out_dir, remote/analysis, is not written with local files.
  with pytest.raises(AnalysisError, match="give --out_dir"):
    report_lib.analyze(remote)
