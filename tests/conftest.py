"""Shared test setup: quiet TF logs, a clean gin config around each test,
tests/ on sys.path so every test folder can `import helpers`, the fast
lane's guard (tests/fast_lane.py) and the session's one reference run."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gin  # noqa: E402
import pytest  # noqa: E402

# The hooks of the plugin, registered by being names of this conftest.
from fast_lane import pytest_configure  # noqa: E402,F401
from fast_lane import pytest_runtest_makereport  # noqa: E402,F401
from fast_lane import pytest_runtest_setup  # noqa: E402,F401
import helpers  # noqa: E402


def pytest_xdist_auto_num_workers(config):
  """`-n auto` (pytest.ini): one worker more than the cores, at most 8.

  Many slow tests wait on a process they started, so a third worker keeps
  2 cores busier: the full suite took 18 min 21 s with 3 workers and
  19 min 32 s with 2 on 2 quiet cores. The cap keeps a many-core machine
  from starting dozens of TensorFlow processes.
  """
  del config
  return min(len(os.sched_getaffinity(0)) + 1, 8)


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture(scope="session")
def smoke_reference(tmp_path_factory):
  """The uninterrupted run: (model_dir, results), made once per test
  process (each xdist worker whose tests need it).

  smoke.gin under helpers.REFERENCE_EXPORTING (2 epochs of 37 steps, with
  its exports), trained in this process. Every test that interrupts a run
  and resumes it compares with this one (helpers.assert_matches_reference);
  the tests must not write into its model_dir (copy it first).
  """
  model_dir = tmp_path_factory.mktemp("reference")
  results = helpers.reference_run(model_dir, helpers.REFERENCE_EXPORTING)
  assert results["steps"] == helpers.REFERENCE_STEPS
  return model_dir, results
