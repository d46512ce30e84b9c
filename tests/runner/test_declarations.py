"""Each `train_eval` setting is declared once (runner/declarations.py), and
the check, --help, TensorBoard hparams, results.json's `settings` and the
MetaWeightModel arguments follow from it."""

import ast
import dataclasses
import inspect
import json
import os

import gin
import pytest

import mwn_tf.data
import mwn_tf.models
from mwn_tf import choices
from mwn_tf import meta_model
from mwn_tf.errors import ConfigError
from mwn_tf.runner import declarations
from mwn_tf.runner import monitor
from mwn_tf.runner import settings as settings_lib
from mwn_tf.runner import train_eval as train_eval_lib
from mwn_tf.runner import usage
from helpers import call_main
from helpers import refused_line
from helpers import REPO

DEFAULTS = {s.name: s.default for s in declarations.SETTINGS}


# ----------------------------------------------------------------------------
# The declarations agree with the code they describe.
# ----------------------------------------------------------------------------
def test_the_signature_is_the_declarations():
  params = inspect.signature(train_eval_lib.train_eval.__wrapped__).parameters
  keyword = {n: p.default for n, p in params.items()
             if p.kind is p.KEYWORD_ONLY}
  assert list(keyword) == [s.name for s in declarations.SETTINGS]
  for s in declarations.SETTINGS:
    assert keyword[s.name] == s.default and (
        type(keyword[s.name]) is type(s.default)), s.name
  assert [n for n, p in params.items() if p.kind is not p.KEYWORD_ONLY] == (
      list(declarations.NOT_SETTINGS))
  # The annotations as written (what --help shows as the type).
  path = os.path.join(REPO, "mwn_tf", "runner", "train_eval.py")
  tree = ast.parse(open(path, encoding="utf-8").read())
  fn = next(n for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef) and n.name == "train_eval")
  written = {a.arg: ast.unparse(a.annotation) if a.annotation else ""
             for a in fn.args.kwonlyargs}
  assert written == {s.name: s.type for s in declarations.SETTINGS}


def test_every_default_passes_its_own_check():
  declarations.check_values(DEFAULTS, {"datasets": mwn_tf.data.names(),
                                       "models": mwn_tf.models.names()})
  settings_lib.check_settings(DEFAULTS)


def test_the_choices_are_the_model_s():
  assert meta_model.METHODS is choices.METHODS
  assert meta_model.NORMALIZATIONS is choices.NORMALIZATIONS
  passed = declarations.passed_to("MetaWeightModel")
  init = inspect.signature(meta_model.MetaWeightModel.__init__).parameters
  assert set(passed) <= set(init)
  assert set(declarations.passed_to("WeightNet")) == {"hidden_units"}


def test_names_read_without_tensorflow_are_the_registries():
  assert usage.dataset_names() == mwn_tf.data.names()
  assert usage.model_names() == mwn_tf.models.names()
  for name, family in usage.model_registrations().items():
    assert mwn_tf.models.binding_family(name) == family
    gin.get_configurable(family)  # a real gin name, e.g. "wrn"
  assert usage.model_registrations()["wrn28_10"] == "wrn"


# ----------------------------------------------------------------------------
# One declaration reaches the check, --help, hparams and results.json.
# ----------------------------------------------------------------------------
def test_a_setting_declared_once_appears_in_all_four(monkeypatch):
  knob = declarations.Setting(
      "new_knob", "int", 3, lambda v: isinstance(v, int) and v >= 2,
      "an integer >= 2", help="a lever added by one declaration.",
      group="fast modes", hparam=True)
  monkeypatch.setattr(declarations, "SETTINGS",
                      declarations.SETTINGS + (knob,))
  settings = {**DEFAULTS, "new_knob": 4}
  # 1. The check.
  with pytest.raises(ConfigError, match=r"^train_eval\.new_knob must be an "
                     r"integer >= 2, got 1\.$"):
    settings_lib.check_settings({**settings, "new_knob": 1})
  # 2. --help.
  text = usage.help_text("prog", "summary", [], [(0, "done")])
  rows = [l for l in text.splitlines() if l.startswith("  new_knob ")]
  assert len(rows) == 1 and rows[0].endswith("int = 3")
  assert "a lever added by one declaration." in text
  # 3. TensorBoard's hparams (and results.json's `hparams`).
  assert monitor.hparams(settings, {}, 10)["new_knob"] == 4
  # 4. results.json's `settings`.
  assert declarations.resolved(settings)["new_knob"] == 4
  # And a constructor argument, once it says `passes_to`.
  monkeypatch.setattr(declarations, "SETTINGS", declarations.SETTINGS[:-1] + (
      dataclasses.replace(knob, passes_to="MetaWeightModel.new_knob"),))
  assert declarations.constructor_arguments(
      "MetaWeightModel", settings)["new_knob"] == 4


def test_hparams_keep_their_values():
  hp = monitor.hparams({**DEFAULTS, "weight_net_hidden_units": (50, 50)},
                       {"noise_type": "uniform", "noise_rate": 0.4}, 100)
  assert hp["weight_net_hidden_units"] == "50,50"
  assert hp["virtual_layers"] == "None" and hp["meta_interval"] == 1
  assert hp["noise_rate"] == 0.4 and hp["total_steps"] == 100
  assert "epochs" not in hp  # declared hparam=False


# ----------------------------------------------------------------------------
# The fast modes are train_eval bindings, through the entry point.
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("bindings,fix", [
    (["train_eval.virtual_layers = -1"], "train_eval.virtual_layers must be "
     "None (every layer: the exact step) or an integer >= 1, got -1."),
    (["train_eval.virtual_layers = 5"], "train_eval.virtual_layers must be "
     "None (every layer: the exact step) or in [1, 2]"),
    (["train_eval.meta_interval = 0"], "train_eval.meta_interval must be an "
     "integer >= 1 (1: the exact step), got 0."),
    (["MetaWeightModel.virtual_layers = 5"], "MetaWeightModel.virtual_layers "
     "must be None (every layer: the exact step) or in [1, 2]"),
    (["MetaWeightModel.meta_interval = 0"], "MetaWeightModel.meta_interval "
     "(now train_eval.meta_interval) must be an integer >= 1"),
    (["MetaWeightModel.meta_interval = 2", "train_eval.meta_interval = 3"],
     "MetaWeightModel.meta_interval = 2 and train_eval.meta_interval = 3 "
     "disagree; bind train_eval.meta_interval only."),
    (["WeightNet.hidden_units = (4,)"], "WeightNet.hidden_units is set by "
     "train_eval.weight_net_hidden_units; bind "
     "train_eval.weight_net_hidden_units = (4,) instead."),
    (["train_eval.model = 'wide_resnet'", "wrn.depth = 3"], "wrn.depth"),
    (["train_eval.hypergradient = 'first_order'"], "train_eval.hypergradient "
     "must be one of 'second_order', 'finite_difference', got 'first_order'"),
    (["train_eval.exact_warmup_steps = -5"], "train_eval.exact_warmup_steps "
     "must be an integer >= 0"),
    (["train_eval.fd_epsilon = 0.0"], "train_eval.fd_epsilon must be a "
     "finite number > 0"),
    (["train_eval.fast_mode = 'turbo'"], "train_eval.fast_mode must be one "
     "of 'off', 'recommended'"),
    (["train_eval.fast_mode = 'recommended'", "train_eval.meta_interval = 2"],
     "train_eval.fast_mode = 'recommended' sets the fast options itself; "
     "leave meta_interval at the exact default, or set fast_mode = 'off'."),
])
def test_a_bad_fast_mode_is_one_line_before_anything_is_written(
    tmp_path, capsys, bindings, fix):
  line, _ = refused_line(tmp_path, capsys, bindings)
  assert fix in line


@pytest.fixture(name="built")
def _built(monkeypatch):
  """{"model": the MetaWeightModel train_eval builds}, once it has."""
  built = {}
  original = settings_lib.build_model

  def spy(*args, **kwargs):
    built["model"] = original(*args, **kwargs)
    return built["model"]

  monkeypatch.setattr(settings_lib, "build_model", spy)
  return built


def test_fast_modes_reach_the_model_and_results(tmp_path, capsys, built):
  status, _, err = call_main([
      "--gin_file=gin/smoke.gin", f"--model_dir={tmp_path}",
      "--gin_param=train_eval.meta_interval = 2",
      # The old spelling, as launch/sweep.sh writes it, is read the same.
      "--gin_param=MetaWeightModel.virtual_layers = 1",
      "--gin_param=train_eval.export = False"], capsys)
  assert status == 0, err
  assert built["model"].meta_interval == 2
  assert built["model"].virtual_layers == 1
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["settings"]["meta_interval"] == 2
  assert results["settings"]["virtual_layers"] == 1
  assert results["hparams"]["virtual_layers"] == 1
  assert "  meta_interval " in usage.help_text("p", "s", [], [])


def test_the_new_levers_and_the_one_switch_reach_the_model_and_results(
    tmp_path, capsys, built):
  status, _, err = call_main([
      "--gin_file=gin/smoke.gin", f"--model_dir={tmp_path / 'levers'}",
      "--gin_param=train_eval.hypergradient = 'finite_difference'",
      "--gin_param=train_eval.exact_warmup_steps = 1",
      "--gin_param=train_eval.virtual_layers = 1",
      "--gin_param=train_eval.export = False"], capsys)
  assert status == 0, err
  model = built["model"]
  assert (model.hypergradient, model.exact_warmup_steps,
          model.virtual_layers) == ("finite_difference", 1, 1)
  results = json.loads((tmp_path / "levers" / "results.json").read_text())
  assert results["settings"]["hypergradient"] == "finite_difference"
  assert results["settings"]["exact_warmup_steps"] == 1
  status, _, err = call_main([
      "--gin_file=gin/smoke.gin", f"--model_dir={tmp_path / 'switch'}",
      "--gin_param=train_eval.fast_mode = 'recommended'",
      "--gin_param=train_eval.export = False"], capsys)
  assert status == 0, err
  from mwn_tf import fast_step  # pylint: disable=g-import-not-at-top
  for option, value in fast_step.RECOMMENDED.items():
    assert getattr(built["model"], option) == value
  results = json.loads((tmp_path / "switch" / "results.json").read_text())
  assert results["settings"]["fast_mode"] == "recommended"
  help_text = usage.help_text("p", "s", [], [])
  for name in ("hypergradient", "fd_epsilon", "exact_warmup_steps",
               "fast_mode"):
    assert f"  {name} " in help_text
