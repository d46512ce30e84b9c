"""Every gin file parses, binds only existing parameters, and binds the
paper's settings (docs/REFERENCE.md) for the experiment its name says."""

import glob
import inspect
import os
import re

import gin
import pytest

from mwn_tf.runner import train_eval as train_eval_lib  # registers every configurable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_DIR = os.path.join(REPO, "gin")
GIN_FILES = sorted(os.path.basename(p)
                   for p in glob.glob(os.path.join(GIN_DIR, "*.gin")))
DEFAULTS = {k: p.default for k, p in inspect.signature(
    train_eval_lib.train_eval.__wrapped__).parameters.items()}

EXPERIMENTS = (
    [f"{d}_uniform_{r}.gin" for d in ("cifar10", "cifar100")
     for r in (0, 20, 40, 60)] +
    [f"{d}_flip_{r}.gin" for d in ("cifar10", "cifar100") for r in (0, 20, 40)]
    + [f"{d}_longtail_{f}.gin" for d in ("cifar10", "cifar100")
       for f in (200, 100, 50, 20, 10, 1)] +
    ["clothing1m.gin", "quickstart.gin", "smoke.gin"])


def parse(name):
  if REPO not in gin.config._LOCATION_PREFIXES:  # pylint: disable=protected-access
    gin.add_config_file_search_path(REPO)
  gin.parse_config_file(os.path.join("gin", name), skip_unknown=False)


def value(binding):
  """The bound value, or train_eval's default if unbound."""
  try:
    return gin.query_parameter(binding)
  except ValueError:
    configurable, param = binding.rsplit(".", 1)
    if configurable == "train_eval":
      return DEFAULTS[param]
    return None


def test_every_experiment_has_a_file():
  missing = sorted(set(EXPERIMENTS) - set(GIN_FILES))
  assert not missing


@pytest.mark.parametrize("name", GIN_FILES)
def test_parses_with_known_parameters_only(name):
  parse(name)  # skip_unknown=False: an unknown name raises


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if "uniform" in n])
def test_uniform_noise_is_the_wrn_script(name):
  parse(name)
  dataset, _, rate = name[:-4].split("_")
  assert value("train_eval.dataset") == dataset
  assert value(f"{dataset}.noise_type") == "uniform"
  assert value(f"{dataset}.noise_rate") == pytest.approx(int(rate) / 100)
  assert value("train_eval.model") == "wrn28_10"
  assert value("train_eval.nesterov") is True
  assert value("train_eval.learning_rate") == 0.1
  assert value("train_eval.momentum") == 0.9
  assert value("train_eval.weight_decay") == 5e-4
  assert value("train_eval.train_steps") == 20000
  assert tuple(value("train_eval.lr_decay_steps")) == (18000, 19000)
  assert value("train_eval.lr_decay_factor") == 0.1
  assert (value("train_eval.meta_optimizer"),
          value("train_eval.meta_learning_rate"),
          value("train_eval.meta_momentum"),
          value("train_eval.meta_nesterov"),
          value("train_eval.meta_weight_decay")) == ("sgd", 1e-3, 0.9, True,
                                                     5e-4)
  assert value("train_eval.normalize_weights") == "sum"
  assert value("train_eval.batch_size") == value(
      "train_eval.meta_batch_size") == 100


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if "flip" in n])
def test_flip_noise_is_mwnet_py(name):
  parse(name)
  dataset, _, rate = name[:-4].split("_")
  assert value("train_eval.dataset") == dataset
  assert value(f"{dataset}.noise_type") == "flip"
  assert value(f"{dataset}.noise_rate") == pytest.approx(int(rate) / 100)
  assert value("train_eval.model") == "resnet32"
  assert value("train_eval.nesterov") is False
  assert value("train_eval.epochs") == 120
  assert value("train_eval.train_steps") is None
  assert tuple(value("train_eval.lr_decay_epochs")) == (80, 100)
  assert (value("train_eval.meta_optimizer"),
          value("train_eval.meta_learning_rate"),
          value("train_eval.meta_weight_decay")) == ("adam", 1e-3, 1e-4)
  assert value("train_eval.normalize_weights") == "none"


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if "longtail" in n])
def test_long_tail_is_the_class_imbalance_script(name):
  parse(name)
  dataset, _, factor = name[:-4].split("_")
  num_classes = 10 if dataset == "cifar10" else 100
  assert value("train_eval.dataset") == dataset
  assert value(f"{dataset}.imbalance_factor") == float(factor)
  assert value(f"{dataset}.num_meta") == 10 * num_classes
  assert value(f"{dataset}.noise_type") in (None, "none")
  assert value("train_eval.model") == "resnet32"
  assert value("train_eval.nesterov") is True
  assert value("train_eval.epochs") == 100
  assert tuple(value("train_eval.lr_decay_epochs")) == (80, 90)
  assert (value("train_eval.meta_optimizer"),
          value("train_eval.meta_learning_rate"),
          value("train_eval.meta_momentum"),
          value("train_eval.meta_nesterov"),
          value("train_eval.meta_weight_decay")) == ("sgd", 1e-5, 0.9, True,
                                                     5e-4)
  assert value("train_eval.normalize_weights") == "sum"


def test_clothing1m():
  parse("clothing1m.gin")
  assert value("train_eval.dataset") == "clothing1m"
  assert value("train_eval.model") == "resnet50"
  # The ImageNet initialisation is one binding away.
  assert "resnet50.weights_path" in open(
      os.path.join(GIN_DIR, "clothing1m.gin")).read()


def test_quickstart_is_offline_and_noisy():
  parse("quickstart.gin")
  assert value("train_eval.dataset") == "digits"
  assert value("digits.noise_type") == "uniform"
  assert value("digits.noise_rate") == 0.4
  assert value("train_eval.method") == "mwn"


@pytest.mark.parametrize("name", [n for n in GIN_FILES
                                  if n.startswith("cifar")])
def test_experiment_files_hold_only_differences(name):
  """Leaf files bind the dataset and its corruption, nothing of the recipe:
  that lives in the included base file."""
  text = open(os.path.join(GIN_DIR, name)).read()
  bindings = re.findall(r"^([\w.]+)\s*=", text, flags=re.M)
  assert re.search(r"^include 'gin/base_\w+\.gin'", text, flags=re.M)
  assert set(bindings) <= {"train_eval.dataset", "cifar10.noise_type",
                           "cifar10.noise_rate", "cifar10.imbalance_factor",
                           "cifar10.num_meta", "cifar100.noise_type",
                           "cifar100.noise_rate", "cifar100.imbalance_factor",
                           "cifar100.num_meta", "cifar10_n.label_set",
                           "cifar100_n.label_set"}
