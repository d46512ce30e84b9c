"""The bad-input tally: 45 bad inputs a new user and a fault tester tried,
each through the real entry point (`mwn_tf.main`, in this process).

Every one must end the same way: exit 2, exactly one `mwn_tf.main: error:`
line naming what to change, no traceback, and nothing written: the model_dir
is not created, and an existing one (a finished run's) is left byte for byte.
"""

import hashlib
import os

import numpy as np
import pytest

from helpers import call_main
from helpers import error_lines
from helpers import refused_line

# (gin bindings, what the one line must name). Values that gin parses as a
# Python literal, written as a user would.
BAD = [
    # The fast modes, both spellings.
    (["train_eval.virtual_layers = -1"], "train_eval.virtual_layers"),
    (["train_eval.virtual_layers = 5"], "train_eval.virtual_layers"),
    (["train_eval.meta_interval = 0"], "train_eval.meta_interval"),
    (["MetaWeightModel.virtual_layers = -1"], "MetaWeightModel.virtual_layers"),
    (["MetaWeightModel.virtual_layers = 5"], "MetaWeightModel.virtual_layers"),
    (["MetaWeightModel.meta_interval = 0"], "MetaWeightModel.meta_interval"),
    (["train_eval.hypergradient = 'first_order'"], "train_eval.hypergradient"),
    (["train_eval.fd_epsilon = 0.0"], "train_eval.fd_epsilon"),
    (["train_eval.exact_warmup_steps = -1"], "train_eval.exact_warmup_steps"),
    (["train_eval.fast_mode = 'turbo'"], "train_eval.fast_mode"),
    (["train_eval.fast_mode = 'recommended'", "train_eval.virtual_layers = 1"],
     "train_eval.fast_mode"),
    # Numbers out of range or of the wrong kind.
    (["train_eval.learning_rate = nan"], "train_eval.learning_rate"),
    (["train_eval.learning_rate = float('nan')"], "train_eval.learning_rate"),
    (["train_eval.learning_rate = 'nan'"], "train_eval.learning_rate"),
    (["train_eval.learning_rate = -0.1"], "train_eval.learning_rate"),
    (["train_eval.epochs = 0"], "train_eval.epochs"),
    (["train_eval.batch_size = 0"], "train_eval.batch_size"),
    (["train_eval.train_steps = 0"], "train_eval.train_steps"),
    (["train_eval.momentum = 1.5"], "train_eval.momentum"),
    (["train_eval.weight_decay = -1.0"], "train_eval.weight_decay"),
    (["train_eval.lr_decay_epochs = (5, 4)"], "train_eval.lr_decay_epochs"),
    (["train_eval.lr_decay_epochs = (500,)"], "train_eval.lr_decay_epochs"),
    (["train_eval.lr_decay_factor = 0.0"], "train_eval.lr_decay_factor"),
    (["train_eval.meta_learning_rate = 0.0"], "train_eval.meta_learning_rate"),
    (["train_eval.weight_net_hidden_units = ()"],
     "train_eval.weight_net_hidden_units"),
    (["train_eval.weight_net_hidden_units = (0,)"],
     "train_eval.weight_net_hidden_units"),
    (["train_eval.weight_net_clusters = 0"], "train_eval.weight_net_clusters"),
    (["train_eval.eval_batch_size = 0"], "train_eval.eval_batch_size"),
    (["train_eval.checkpoint_every_n_steps = -1"],
     "train_eval.checkpoint_every_n_steps"),
    (["train_eval.max_checkpoints_to_keep = 0"],
     "train_eval.max_checkpoints_to_keep"),
    (["train_eval.steps_per_execution = 0"], "train_eval.steps_per_execution"),
    (["train_eval.collapse_ess_threshold = 2.0"],
     "train_eval.collapse_ess_threshold"),
    (["train_eval.collapse_window_steps = 0"],
     "train_eval.collapse_window_steps"),
    # Names that are not choices.
    (["train_eval.method = 'l2rw'"], "train_eval.method"),
    (["train_eval.dataset = 'imagenet'"], "train_eval.dataset"),
    (["train_eval.model = 'vgg16'"], "train_eval.model"),
    (["train_eval.normalize_weights = 'mean'"], "train_eval.normalize_weights"),
    (["train_eval.meta_optimizer = 'rmsprop'"], "train_eval.meta_optimizer"),
    (["train_eval.on_weight_collapse = 'panic'"],
     "train_eval.on_weight_collapse"),
    (["train_eval.weight_net = 'transformer'"], "train_eval.weight_net"),
    # The data's own settings, and the meta batch against the meta set.
    (["digits.noise_rate = 1.5"], "digits.noise_rate"),
    (["digits.noise_type = 'gaussian'"], "digits.noise_type"),
    (["train_eval.meta_batch_size = 5000"], "train_eval.meta_batch_size"),
    # gin itself: an unknown binding and a broken value.
    (["train_eval.nonsense = 1"], "nonsense"),
    (["train_eval.epochs = (3"], "train_eval.epochs"),
]


def test_the_tally_has_45_inputs():
  assert len(BAD) == 45
  assert len({tuple(b) for b, _ in BAD}) == 45


def _tree_digest(root):
  """{relative path: sha256} of every file under `root`."""
  out = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return out


@pytest.mark.parametrize("bindings,names", BAD, ids=[" ; ".join(b)
                                                     for b, _ in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys,
                                                         bindings, names):
  line, err = refused_line(tmp_path, capsys, bindings)
  assert names in line, line
  assert "model_dir:" not in err, err[-2000:]


def test_a_bad_input_leaves_an_existing_run_untouched(tmp_path, capsys):
  """A finished run's folder, then a rerun on it with a bad binding."""
  model_dir = tmp_path / "run"
  status, _, err = call_main(
      ["--gin_file=gin/smoke.gin", f"--model_dir={model_dir}"], capsys)
  assert status == 0, err[-2000:]
  before = _tree_digest(model_dir)
  for bindings, _ in (BAD[0], BAD[13], BAD[42]):
    status, _, err = call_main(
        ["--gin_file=gin/smoke.gin", f"--model_dir={model_dir}"] +
        [f"--gin_param={b}" for b in bindings], capsys)
    assert status == 2 and len(error_lines(err)) == 1, err[-2000:]
  assert _tree_digest(model_dir) == before
  assert np.all([os.path.getsize(os.path.join(model_dir, p)) >= 0
                 for p in before])
