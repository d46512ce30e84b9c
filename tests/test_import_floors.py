"""The package's floors: every import between its parts points down.

  1  mwn_tf.errors, mwn_tf.choices, mwn_tf.console (the entry points'
     quiet console)                      import nothing of the package
  2  the model stack: data, models, weight_net, replicas, fast_step,
     hypergradient, batches,
     sample_weights, meta_model (the algorithm)
  3  mwn_tf.shared: what the runner and the analysis both use (the
     per-sample pass, the figures)
  4  mwn_tf.runner: a run (train_eval, settings, model_dir, checkpoints)
  5  mwn_tf.analysis, mwn_tf.benchmark: read runs back, measure
  6  the entry points: main, analyze, bench (and launch/ scripts)

Imports inside one floor are free; an import from a floor to a higher one
fails here. Read with `ast` (imports inside functions count too), so nothing
is imported. Also: the light modules that `--help` and results.json readers
load import no TensorFlow.
"""

import ast
import os
import subprocess
import sys

import pytest

from helpers import REPO

PACKAGE = os.path.join(REPO, "mwn_tf")

FLOORS = {
    "mwn_tf.errors": 1, "mwn_tf.choices": 1, "mwn_tf.console": 1,
    "mwn_tf.data": 2, "mwn_tf.models": 2, "mwn_tf.weight_net": 2,
    "mwn_tf.replicas": 2, "mwn_tf.fast_step": 2, "mwn_tf.meta_model": 2,
    "mwn_tf.sample_weights": 2, "mwn_tf.hypergradient": 2,
    "mwn_tf.batches": 2, "mwn_tf.class_clusters": 2,
    "mwn_tf.shared": 3,
    "mwn_tf.runner": 4,
    "mwn_tf.analysis": 5, "mwn_tf.benchmark": 5,
    "mwn_tf.main": 6, "mwn_tf.analyze": 6, "mwn_tf.bench": 6,
}


def floor_of(module: str):
  """The floor of `module` (its longest prefix in FLOORS), or None."""
  parts = module.split(".")
  for end in range(len(parts), 0, -1):
    name = ".".join(parts[:end])
    if name in FLOORS:
      return FLOORS[name]
  return None


def module_name(path: str) -> str:
  rel = os.path.relpath(path, REPO)[:-len(".py")].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def imports_of(path: str):
  """(line, imported module) of every import in the file at `path`; for
  `from a import b` both a and a.b (b may be a module)."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), filename=path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      yield node.lineno, node.module
      for alias in node.names:
        yield node.lineno, f"{node.module}.{alias.name}"


def package_files():
  for folder, _, names in os.walk(PACKAGE):
    for name in names:
      if name.endswith(".py"):
        yield os.path.join(folder, name)


def test_every_module_has_a_floor():
  missing = [module_name(p) for p in package_files()
             if module_name(p) != "mwn_tf" and
             floor_of(module_name(p)) is None]
  assert not missing, f"give these a floor in FLOORS: {missing}"


def test_every_import_points_down():
  upward = []
  for path in package_files():
    here = module_name(path)
    mine = floor_of(here)
    for line, imported in imports_of(path):
      theirs = floor_of(imported)
      if mine is not None and theirs is not None and theirs > mine:
        upward.append(f"{os.path.relpath(path, REPO)}:{line} ({here}, floor "
                      f"{mine}) imports {imported} (floor {theirs})")
  assert not upward, "imports that run back up:\n" + "\n".join(upward)


def test_the_floor_check_sees_an_upward_import(tmp_path):
  # The check itself: a runner module importing the analysis is caught.
  bad = tmp_path / "bad.py"
  bad.write_text("def f():\n  from mwn_tf.analysis import report\n")
  assert [floor_of(m) for _, m in imports_of(str(bad))] == [5, 5]
  assert floor_of("mwn_tf.runner.monitor") == 4


@pytest.mark.slow
@pytest.mark.parametrize("module", [
    "mwn_tf.errors", "mwn_tf.choices", "mwn_tf.runner.declarations",
    "mwn_tf.runner.usage", "mwn_tf.runner.exit_codes"])
def test_light_modules_import_no_tensorflow(module):
  code = (f"import sys, {module}\n"
          "heavy = [m for m in ('tensorflow', 'keras', 'mwn_tf.data', "
          "'mwn_tf.models', 'mwn_tf.meta_model') if m in sys.modules]\n"
          "print(heavy)\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "[]", out.stdout
