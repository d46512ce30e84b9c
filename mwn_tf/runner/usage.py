"""`python -m mwn_tf.main --help`: the settings a user changes, from the code.

Nothing here imports TensorFlow, so `--help` stays fast. The `train_eval`
settings come from their declarations (`runner.declarations`, which import
no TensorFlow). The dataset and model names and their loaders' and
builders' gin bindings are read from the package's source with `ast`, since
the registries import TensorFlow (tests/runner/test_declarations.py holds the
names read here equal to `mwn_tf.data.names()` and `mwn_tf.models.names()`);
`help_text` puts them together with the flags.
"""

import ast
import os
import textwrap
from typing import Dict, List, Sequence

from mwn_tf.runner import declarations

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _decorator_name(decorator: ast.expr, callee: str) -> str:
  """"x" of `@...callee("x", ...)`, else ""."""
  if not (isinstance(decorator, ast.Call) and decorator.args and
          isinstance(decorator.args[0], ast.Constant)):
    return ""
  func = decorator.func
  called = func.attr if isinstance(func, ast.Attribute) else getattr(
      func, "id", "")
  return decorator.args[0].value if called == callee else ""


def binding_families(folder: str, callee: str) -> Dict[str, List[str]]:
  """{gin name: its bindable arguments} of the functions in `folder`'s
  modules decorated with `@...<callee>("name", ...)` (datasets: "register",
  which makes the loader a gin configurable; models: "configurable")."""
  out = {}
  for _, tree in _modules(folder):
    for node in ast.walk(tree):
      if not isinstance(node, ast.FunctionDef):
        continue
      for decorator in node.decorator_list:
        family = _decorator_name(decorator, callee)
        if family:
          denied = set(_keyword(decorator, "denylist") or ())
          args = node.args.args + node.args.kwonlyargs
          out[family] = [a.arg for a in args if a.arg not in denied]
  return dict(sorted(out.items()))


def _modules(folder: str):
  """(path, parsed module) of every module in `folder`."""
  for name in sorted(os.listdir(folder)):
    if name.endswith(".py"):
      path = os.path.join(folder, name)
      with open(path, encoding="utf-8") as f:
        yield path, ast.parse(f.read(), filename=path)


def _keyword(decorator: ast.Call, name: str):
  for keyword in decorator.keywords:
    if keyword.arg == name:
      return ast.literal_eval(keyword.value)
  return None


def model_registrations() -> Dict[str, str]:
  """{model name: the gin name its builder's settings are bound on}, as
  `mwn_tf.models.register(name, bindings=...)` records them: `bindings`,
  else the builder's own `@gin.configurable` name, else the model name."""
  out = {}
  for _, tree in _modules(os.path.join(_PACKAGE, "models")):
    for node in ast.walk(tree):
      if not isinstance(node, ast.FunctionDef):
        continue
      own = [_decorator_name(d, "configurable") for d in node.decorator_list]
      own = next((n for n in own if n), "")
      for decorator in node.decorator_list:
        name = _decorator_name(decorator, "register")
        if name:
          out[name] = _keyword(decorator, "bindings") or own or name
  return dict(sorted(out.items()))


def dataset_families() -> Dict[str, List[str]]:
  """{dataset name: its loader's bindings} (a loader's gin name is the
  dataset's name)."""
  return binding_families(os.path.join(_PACKAGE, "data"), "register")


def dataset_names() -> List[str]:
  """The names `train_eval.dataset` accepts (`mwn_tf.data.names()`)."""
  return list(dataset_families())


def model_names() -> List[str]:
  """The names `train_eval.model` accepts (`mwn_tf.models.names()`)."""
  return list(model_registrations())


def model_families() -> Dict[str, List[str]]:
  """{builder's gin name: its bindings}."""
  return binding_families(os.path.join(_PACKAGE, "models"), "configurable")


def _families_text(families: Dict[str, List[str]]) -> str:
  return "\n".join(textwrap.fill(
      f"{name}.*  {', '.join(args)}", width=79, initial_indent="  ",
      subsequent_indent="      ") for name, args in families.items())


def _models_text() -> str:
  """One row per model name: the gin name of its settings and their names."""
  families = model_families()
  registered = model_registrations()
  width = max(len(n) for n in registered)
  return "\n".join(textwrap.fill(
      f"{name:<{width}}  {family}.*  {', '.join(families.get(family, []))}",
      width=79, initial_indent="  ", subsequent_indent=" " * (width + 6))
                   for name, family in registered.items())


def settings_text() -> str:
  """The `train_eval` settings: a heading per group, a row per setting
  (`name  type = default`) and its help below it."""
  known = {"datasets": dataset_names(), "models": model_names()}
  width = max(len(s.name) for s in declarations.SETTINGS)
  rows, group = [], None
  for s in declarations.SETTINGS:
    if s.group != group:
      group = s.group
      rows.append(f" {group}:")
    rows.append(f"  {s.name:<{width}}  {s.type + ' ' if s.type else ''}= "
                f"{s.default!r}")
    text = s.help
    if s.choices_from:
      text += f" One of: {', '.join(known[s.choices_from])}."
    rows.append(textwrap.fill(text, width=79, initial_indent=" " * (width + 4),
                              subsequent_indent=" " * (width + 4)))
  return "\n".join(rows)


def help_text(program: str, summary: str, flag_lines: Sequence[str],
              exit_codes: Sequence[tuple]) -> str:
  """The whole `--help` text.

  Args:
    program: e.g. "python -m mwn_tf.main".
    summary: what the program does and examples (the module docstring).
    flag_lines: (flag, meaning) pairs, e.g. ("--model_dir", "Output...").
    exit_codes: (status, meaning) pairs.
  """
  codes = "\n".join(f"  {status}  {meaning}" for status, meaning in exit_codes)
  return "\n".join([
      f"usage: {program} --gin_file=FILE [--gin_param=BINDING ...] [flags]",
      "", summary.strip(), "",
      "flags:", *[textwrap.fill(f"{flag}  {text}", width=79,
                                initial_indent="  ", subsequent_indent="      ")
                  for flag, text in flag_lines], "",
      "train_eval bindings (--gin_param=\"train_eval.NAME = VALUE\"; strings "
      "in quotes;",
      "defaults are the paper's; declared in mwn_tf/runner/declarations.py):",
      settings_text(), "",
      "dataset bindings (train_eval.dataset picks one; e.g. "
      "--gin_param=\"digits.noise_rate = 0.6\"):",
      _families_text(dataset_families()), "",
      "model bindings (train_eval.model picks one; its builder's settings are "
      "bound as",
      "FAMILY.NAME, e.g. --gin_param=\"wrn.dropout_rate = 0.3\"):",
      _models_text(), "",
      "exit status:", codes, ""])
