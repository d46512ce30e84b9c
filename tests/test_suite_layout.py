"""The test suite's own layout: test modules share code only through helper
modules (tests/helpers.py and its neighbours) and tests/conftest.py's
fixtures, never by importing one another.

Importing a test module runs its module-level setup a second time under
another name, hands its tests and fixtures to the importer, and ties the
two files together so that moving a helper breaks a third one. Read with
`ast` (imports inside functions and `importlib.import_module("...")` with a
literal name count too), so nothing is imported.
"""

import ast
import os

from helpers import REPO

TESTS = os.path.join(REPO, "tests")


def find_test_modules():
  """{module name: path} of every tests/**/test_*.py."""
  out = {}
  for root, dirs, files in os.walk(TESTS):
    dirs[:] = [d for d in dirs if d != "__pycache__" and d != "fixtures"]
    for name in files:
      if name.startswith("test_") and name.endswith(".py"):
        out[name[:-len(".py")]] = os.path.join(root, name)
  return out


def imported_names(path):
  """(line, module name) of every import in the file at `path`: for
  `from a import b`, both a and b (b may be a module); relative imports
  without their dots."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom):
      if node.module:
        yield node.lineno, node.module
      for alias in node.names:
        yield node.lineno, alias.name
    elif (isinstance(node, ast.Call) and
          getattr(node.func, "attr", getattr(node.func, "id", None)) ==
          "import_module" and node.args and
          isinstance(node.args[0], ast.Constant) and
          isinstance(node.args[0].value, str)):
      yield node.lineno, node.args[0].value


def test_modules_are_found():
  modules = find_test_modules()
  assert "test_suite_layout" in modules and "test_main" in modules
  assert len(modules) > 40


def test_no_test_module_imports_another():
  modules = find_test_modules()
  found = []
  for name, path in sorted(modules.items()):
    for line, imported in imported_names(path):
      # `tests.runner.test_main`, `test_main` and `.test_main` alike.
      hit = [part for part in imported.split(".") if part in modules]
      if hit:
        found.append(f"{os.path.relpath(path, REPO)}:{line} imports "
                     f"{imported}")
  assert not found, (
      "a test module imports another; move what they share into "
      "tests/helpers.py (or a helper module beside it) or a fixture in "
      "tests/conftest.py:\n" + "\n".join(found))


def test_the_check_sees_each_kind_of_import(tmp_path):
  source = tmp_path / "test_x.py"
  source.write_text("import test_main as m\n"
                    "from tests.runner import test_console\n"
                    "def f():\n"
                    "  from .test_robustness import BINDINGS\n"
                    "  importlib.import_module('test_recovery')\n")
  names = [name for _, name in imported_names(str(source))]
  for want in ("test_main", "tests.runner", "test_console", "test_robustness",
               "BINDINGS", "test_recovery"):
    assert want in names, (want, names)
