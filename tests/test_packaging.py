"""pyproject.toml: the package installs, and runs from any folder.

The fast checks keep pyproject.toml in step with the tree (every subpackage
listed, the same dependencies as requirements.txt). The slow one builds the
wheel, installs it (without dependencies: this interpreter has them) into a
temporary folder and runs the entry point from a folder outside the checkout,
so `gin/smoke.gin` can only come from the installed package.
"""

import json
import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from helpers import ENV
from helpers import REPO


def _pyproject() -> dict:
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def _requirement_lines(text: str) -> list:
  return [line.strip() for line in text.splitlines()
          if line.strip() and not line.strip().startswith("#")]


def test_every_subpackage_and_the_gin_files_are_listed():
  setuptools = _pyproject()["tool"]["setuptools"]
  on_disk = {os.path.relpath(d, REPO).replace(os.sep, ".")
             for d, _, names in os.walk(os.path.join(REPO, "mwn_tf"))
             if "__init__.py" in names}
  assert set(setuptools["packages"]) == on_disk | {"mwn_tf.gin"}
  assert setuptools["package-dir"] == {"mwn_tf.gin": "gin"}
  assert setuptools["package-data"] == {"mwn_tf.gin": ["*.gin"]}


def test_dependencies_are_requirements_txt():
  project = _pyproject()["project"]
  with open(os.path.join(REPO, "requirements.txt")) as f:
    required = _requirement_lines(f.read())
  # requirements.txt also installs the test runner: pyproject's `test` extra.
  assert project["dependencies"] + project["optional-dependencies"][
      "test"] == required


def _build_wheel(tmp_path) -> str:
  """Builds the wheel from a copy of the package's files; returns its path.

  A copy, because setuptools writes build/ and *.egg-info into the tree.
  """
  source = tmp_path / "source"
  source.mkdir()
  for name in ("pyproject.toml", "README.md", "mwn_tf", "gin"):
    copy = shutil.copytree if os.path.isdir(os.path.join(REPO, name)) else (
        shutil.copy)
    copy(os.path.join(REPO, name), source / name,
         **({"ignore": shutil.ignore_patterns("__pycache__")}
            if copy is shutil.copytree else {}))
  try:
    import setuptools  # pylint: disable=g-import-not-at-top
    # This interpreter's setuptools builds it offline when it is new enough
    # (pyproject.toml's build-system); else pip fetches one, as `pip install`.
    offline = int(setuptools.__version__.split(".")[0]) >= 64
  except ImportError:
    offline = False
  wheels = tmp_path / "wheels"
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                  "-w", str(wheels), str(source)] +
                 (["--no-build-isolation"] if offline else []),
                 check=True, cwd=tmp_path, env=ENV, timeout=600)
  (wheel,) = wheels.glob("mwn_tf-*.whl")
  return str(wheel)


@pytest.mark.slow
def test_installed_package_runs_from_any_folder(tmp_path):
  wheel = _build_wheel(tmp_path)
  site = tmp_path / "site"
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                  "--target", str(site), wheel], check=True, env=ENV,
                 timeout=600)
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  env = dict(ENV, PYTHONPATH=str(site))

  def python(*args):
    proc = subprocess.run([sys.executable, *args], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # gin logs "Path not found" for a search path without the file.
    assert "Path not found" not in proc.stderr, proc.stderr[-3000:]
    return proc.stdout

  # The installed copy, not this checkout, is what gets imported.
  where = python("-c", "import mwn_tf; print(mwn_tf.__file__)").strip()
  assert where == str(site / "mwn_tf" / "__init__.py")
  # A shipped config with an `include` line resolves from the package.
  bound = python("-c", "import mwn_tf.runner.train_eval; "
                 "from mwn_tf import main; import gin; "
                 "main.parse_gin(['gin/cifar10_uniform_40.gin'], []); "
                 "print(gin.query_parameter('train_eval.model'))")
  assert bound.strip() == "wrn28_10"
  model_dir = tmp_path / "run"
  out = python("-m", "mwn_tf.main", "--gin_file=gin/smoke.gin",
               f"--model_dir={model_dir}",
               "--gin_param=train_eval.train_steps = 1",
               "--gin_param=train_eval.export = False")
  assert "final-epoch test accuracy" in out
  with open(model_dir / "results.json") as f:
    results = json.load(f)
  assert results["steps"] == 1
  assert 0.0 <= results["final_epoch_test_accuracy"] <= 1.0
  assert results["settings"]["dataset"] == "digits"
  # Nothing was written next to the command but what it was told to write.
  assert not os.listdir(elsewhere)
