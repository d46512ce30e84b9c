"""The fast lane's guard (tests/fast_lane.py) on a tiny suite of its own.

The suite runs in a child pytest with `-p fast_lane`, as tests/conftest.py
loads it: each of its tests does one thing a fast test must not (start a
process in each of the ways there are, train too many steps through `fit()`
or a hand-driven train function), or one it may, and the child's JUnit
report says which failed, and why.
"""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

import fast_lane
import helpers

pytestmark = pytest.mark.slow  # it starts a pytest

SUITE = r'''
import multiprocessing
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import fast_lane

LIMIT = fast_lane.MAX_STEPS


def fit(steps, steps_per_execution=1):
  """A one-layer model fit for `steps` batches of one example."""
  model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
  model.compile("sgd", "mse", steps_per_execution=steps_per_execution)
  model.fit(np.zeros((steps, 2)), np.zeros((steps, 1)), batch_size=1,
            verbose=0)


def test_subprocess():
  subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_subprocess_whose_failure_is_swallowed():
  try:
    subprocess.run([sys.executable, "-c", "pass"], check=True)
  except BaseException:  # what a careless test might do
    pass


def test_multiprocessing():
  process = multiprocessing.Process(target=print)
  process.start()
  process.join()


def test_fork():
  pid = os.fork()
  if pid == 0:
    os._exit(0)
  os.waitpid(pid, 0)


def test_system():
  os.system("true")


@pytest.fixture(scope="module")
def spawned():
  subprocess.run(["true"], check=True)


def test_through_a_module_fixture(spawned):
  del spawned


def test_libraries_housekeeping_is_allowed():
  assert subprocess.run(["uname"], capture_output=True).returncode == 0


def test_too_many_steps():
  fit(LIMIT + 1)


def test_at_the_limit():
  fit(LIMIT)


def test_too_many_steps_per_execution():
  fit(LIMIT + 4, steps_per_execution=4)


def test_a_hand_driven_train_function():
  model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
  model.compile("sgd", "mse")
  data = iter(__import__("tensorflow").data.Dataset.from_tensors(
      (np.zeros((1, 2)), np.zeros((1, 1)))).repeat())
  model.make_train_function()
  for _ in range(LIMIT + 1):
    model.train_function(data)


@pytest.mark.slow
def test_slow_may_do_both():
  subprocess.run([sys.executable, "-c", "pass"], check=True)
  fit(LIMIT + 5)
'''

REFUSED = {
    "test_subprocess": "started a process (subprocess:",
    "test_subprocess_whose_failure_is_swallowed": "started a process",
    "test_multiprocessing": "started a process (multiprocessing",
    "test_fork": "started a process (os.fork)",
    "test_system": "started a process (os.system)",
    "test_through_a_module_fixture": "started a process (subprocess: true)",
    "test_too_many_steps": f"trained {fast_lane.MAX_STEPS + 1} steps",
    "test_too_many_steps_per_execution":
        f"trained {fast_lane.MAX_STEPS + 4} steps",
    "test_a_hand_driven_train_function":
        f"trained {fast_lane.MAX_STEPS + 1} steps",
}
ALLOWED = ("test_libraries_housekeeping_is_allowed", "test_at_the_limit",
           "test_slow_may_do_both")


def run_suite(tmp_path):
  """Runs SUITE under the guard; {test name: (outcome, message)}."""
  (tmp_path / "test_suite.py").write_text(SUITE)
  (tmp_path / "pytest.ini").write_text(
      "[pytest]\nmarkers =\n    slow: long\n")
  env = dict(helpers.ENV, PYTHONPATH=os.pathsep.join(
      [os.path.join(helpers.REPO, "tests"), helpers.REPO]))
  proc = subprocess.run(
      [sys.executable, "-m", "pytest", "-p", "fast_lane", "-p",
       "no:cacheprovider", "-q", "--junitxml=report.xml", "test_suite.py"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
  outcomes = {}
  for case in ET.parse(tmp_path / "report.xml").iter("testcase"):
    bad = case.find("failure")
    if bad is None:
      bad = case.find("error")
    outcomes.setdefault(case.get("name"), []).append(
        ("passed", "") if bad is None else
        (bad.tag, (bad.get("message") or "") + (bad.text or "")))
  return outcomes, proc.stdout


def test_what_a_fast_test_may_not_do_fails_it_with_the_fix(tmp_path):
  outcomes, log = run_suite(tmp_path)
  assert set(outcomes) == set(REFUSED) | set(ALLOWED), log
  for name in ALLOWED:
    assert outcomes[name] == [("passed", "")], (name, outcomes[name])
  for name, what in REFUSED.items():
    bad = [(tag, message) for tag, message in outcomes[name]
           if tag != "passed"]
    # Failed once (a module fixture's failure shows as the test's error).
    assert len(bad) == 1, (name, outcomes[name])
    message = bad[0][1]
    assert what in message, (name, message)
    assert "mark it @pytest.mark.slow" in message, (name, message)
