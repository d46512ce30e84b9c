"""`python -m mwn_tf.main --help`: the settings a user changes, from the code.

Everything here is read from the package's source with `ast`, never by
importing it: `--help` stays fast (no TensorFlow import) and cannot drift
from the code. `train_eval_settings` reads `train_eval`'s keyword arguments
(type, default) and the one-line meaning from its docstring's Args;
`binding_families` reads the gin names and arguments of the dataset loaders
and model builders; `help_text` puts them together with the flags.
"""

import ast
import dataclasses
import os
import re
import textwrap
from typing import Dict, List, Sequence

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TRAIN_EVAL = os.path.join(_PACKAGE, "runner", "train_eval.py")


@dataclasses.dataclass(frozen=True)
class Setting:
  """One keyword argument of a gin configurable, as written in its source."""
  name: str
  type: str
  default: str
  meaning: str


def _function(path: str, name: str) -> ast.FunctionDef:
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), filename=path)
  for node in ast.walk(tree):
    if isinstance(node, ast.FunctionDef) and node.name == name:
      return node
  raise LookupError(f"no function {name} in {path}")


def _args_section(docstring: str) -> Dict[str, str]:
  """Google-style `Args:` -> {argument: its text, joined on one line};
  "a, b: text" gives both a and b the text."""
  out, names, lines, inside = {}, [], [], False

  def flush():
    for n in names:
      out[n] = " ".join(lines)

  for raw in docstring.splitlines():
    if raw.strip() == "Args:":
      inside = True
      continue
    if not inside:
      continue
    if raw.strip() and not raw.startswith("  "):
      break  # The next section ("Returns:").
    match = re.match(r"^  (\w+(?:, \w+)*): ?(.*)$", raw)
    if match:
      flush()
      names, lines = match[1].split(", "), [match[2].strip()]
    elif raw.strip():
      lines.append(raw.strip())
  flush()
  return out


def _first_sentence(text: str) -> str:
  match = re.match(r"^(.*?[.;])(\s|$)", text)
  return (match[1] if match else text).rstrip(".;")


def train_eval_settings(path: str = _TRAIN_EVAL) -> List[Setting]:
  """`train_eval`'s keyword-only arguments (its gin bindings), in order."""
  fn = _function(path, "train_eval")
  meanings = _args_section(ast.get_docstring(fn) or "")
  out = []
  for arg, default in zip(fn.args.kwonlyargs, fn.args.kw_defaults):
    # No annotation (`verbose="auto"`): several types, which the meaning says.
    kind = ast.unparse(arg.annotation) if arg.annotation is not None else ""
    out.append(Setting(arg.arg, kind, ast.unparse(default),
                       _first_sentence(meanings.get(arg.arg, ""))))
  return out


def _decorator_name(decorator: ast.expr, callee: str) -> str:
  """"x" of `@...callee("x", ...)`, else ""."""
  if not (isinstance(decorator, ast.Call) and decorator.args and
          isinstance(decorator.args[0], ast.Constant)):
    return ""
  func = decorator.func
  called = func.attr if isinstance(func, ast.Attribute) else getattr(
      func, "id", "")
  return decorator.args[0].value if called == callee else ""


def _denylist(decorator: ast.Call) -> Sequence[str]:
  for keyword in decorator.keywords:
    if keyword.arg == "denylist":
      return ast.literal_eval(keyword.value)
  return ()


def binding_families(folder: str, callee: str) -> Dict[str, List[str]]:
  """{gin name: its bindable arguments} of the functions in `folder`'s
  modules decorated with `@...<callee>("name", ...)` (datasets: "register",
  which makes the loader a gin configurable; models: "configurable")."""
  out = {}
  for name in sorted(os.listdir(folder)):
    if not name.endswith(".py"):
      continue
    path = os.path.join(folder, name)
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), filename=path)
    for node in ast.walk(tree):
      if not isinstance(node, ast.FunctionDef):
        continue
      for decorator in node.decorator_list:
        family = _decorator_name(decorator, callee)
        if family:
          denied = set(_denylist(decorator))
          args = node.args.args + node.args.kwonlyargs
          out[family] = [a.arg for a in args if a.arg not in denied]
  return dict(sorted(out.items()))


def dataset_families() -> Dict[str, List[str]]:
  """{dataset name: its loader's bindings} (a loader's gin name is the
  dataset's name)."""
  return binding_families(os.path.join(_PACKAGE, "data"), "register")


def model_names() -> List[str]:
  """The names `train_eval.model` accepts."""
  return list(binding_families(os.path.join(_PACKAGE, "models"), "register"))


def model_families() -> Dict[str, List[str]]:
  """{builder's gin name: its bindings}."""
  return binding_families(os.path.join(_PACKAGE, "models"), "configurable")


def _families_text(families: Dict[str, List[str]]) -> str:
  return "\n".join(textwrap.fill(
      f"{name}.*  {', '.join(args)}", width=79, initial_indent="  ",
      subsequent_indent="      ") for name, args in families.items())


def help_text(program: str, summary: str, flag_lines: Sequence[str],
              exit_codes: Sequence[tuple]) -> str:
  """The whole `--help` text.

  Args:
    program: e.g. "python -m mwn_tf.main".
    summary: what the program does and examples (the module docstring).
    flag_lines: (flag, meaning) pairs, e.g. ("--model_dir", "Output...").
    exit_codes: (status, meaning) pairs.
  """
  settings = train_eval_settings()
  width = max(len(s.name) for s in settings)
  rows = []
  for s in settings:
    rows.append(f"  {s.name:<{width}}  {s.type + ' ' if s.type else ''}= "
                f"{s.default}")
    if s.meaning:
      rows.append(textwrap.fill(s.meaning, width=79,
                                initial_indent=" " * (width + 4),
                                subsequent_indent=" " * (width + 4)))
  codes = "\n".join(f"  {status}  {meaning}" for status, meaning in exit_codes)
  return "\n".join([
      f"usage: {program} --gin_file=FILE [--gin_param=BINDING ...] [flags]",
      "", summary.strip(), "",
      "flags:", *[textwrap.fill(f"{flag}  {text}", width=79,
                                initial_indent="  ", subsequent_indent="      ")
                  for flag, text in flag_lines], "",
      "train_eval bindings (--gin_param=\"train_eval.NAME = VALUE\"; strings "
      "in quotes;",
      "defaults are the paper's; mwn_tf/runner/train_eval.py):",
      *rows, "",
      "dataset bindings (train_eval.dataset picks one; e.g. "
      "--gin_param=\"digits.noise_rate = 0.6\"):",
      _families_text(dataset_families()), "",
      f"model bindings (train_eval.model picks one of "
      f"{', '.join(model_names())}):",
      _families_text(model_families()), "",
      "exit status:", codes, ""])
