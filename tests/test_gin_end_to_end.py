"""Every gin file the project ships runs end to end through the entry point.

Each leaf file in gin/ is run by `mwn_tf.main.main` with parsed flags (the
code path of `python -m mwn_tf.main`), shrunk by gin bindings to a few steps
and a small model of the same family, on data that needs no network: CIFAR
files under `tfds.testing.mock_data` (CIFAR-N with tests/cifar_n_fake.py),
Clothing1M on a small release of real JPEG photos in the official layout
(tests/real_jpeg_release.py), folder_example.gin on folders of real photos
(tests/photo_folders.py), the digits files as they are. Every run must exit
0 and leave results.json, TensorBoard images and histograms, two loadable
SavedModels, and an analysis made by `python -m mwn_tf.analyze`'s own `run`
(on the Fashion-MNIST sweep's file, SWEEP_PIPELINE, also checked against a
recomputation of the per-sample table from the exports). Each file runs once
in the suite, so what is particular to a dataset's files is checked here
too: the CIFAR-N files train on their human labels (`_check_cifar_n`),
folder_example.gin names its class folders and serves photo files
(`_check_folder`).

A gin file that is neither run here nor included by a file that is fails
`test_every_gin_file_is_run_end_to_end`: add its plan to `PLANS`.
"""

import glob
import json
import os
import re
import warnings

from absl import flags
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorboard.backend.event_processing import plugin_event_accumulator

import mwn_tf.data
from mwn_tf import analyze
from mwn_tf import main
from mwn_tf.analysis import detection
from mwn_tf.analysis import sources
from mwn_tf.data import preprocessing
import cifar_n_fake
import real_data
import photo_folders
import real_jpeg_release

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_FILES = sorted(os.path.basename(p)
                   for p in glob.glob(os.path.join(REPO, "gin", "*.gin")))
FLAGS = flags.FLAGS

# A few steps everywhere; the schedules' boundaries are cleared because they
# lie beyond those steps (the settings check rejects that, rightly).
FEW_STEPS = ("train_eval.train_steps = 3", "train_eval.batch_size = 4",
             "train_eval.meta_batch_size = 4",
             "train_eval.eval_batch_size = 64",
             "train_eval.lr_decay_epochs = ()", "train_eval.lr_decay_steps = ()",
             "train_eval.checkpoint_every_n_steps = 2",
             "train_eval.summary_every_n_steps = 1",
             "train_eval.sample_every_n_epochs = 1", "train_eval.verbose = 0")
# The same code as the paper's models with fewer layers and channels.
SMALL_RESNET32 = ("resnet32.blocks_per_stage = 1",)
SMALL_WRN = ("train_eval.model = 'wide_resnet'", "wrn.depth = 10",
             "wrn.widen_factor = 1")


def _cifar(name):
  dataset = name.split("_")[0]
  if dataset == "data":  # data_reference.gin binds every default: CIFAR-10.
    dataset = "cifar10"
  k = 10 if dataset == "cifar10" else 100
  model = SMALL_WRN if "uniform" in name else SMALL_RESNET32
  # A small meta set (2 per class, 1 for CIFAR-100), and enough random mock
  # images per split for every class to reach it and the train split.
  num_meta, examples = (20, 200) if k == 10 else (100, 800)
  if k == 100 and "longtail" in name:
    examples = 2000  # The tail classes keep n_max / IF images: n_max >= 5.
  return f"mock:{examples}", FEW_STEPS + model + (
      f"{dataset}.num_meta = {num_meta}",)


def _clothing1m(name):
  del name
  return "clothing1m", FEW_STEPS + ("clothing1m.image_size = 32",
                                    "clothing1m.resize_size = 40",
                                    "clothing1m.shuffle_buffer = 64")


def _digits(name):
  del name
  return "none", FEW_STEPS


def _cifar_n(name):
  # cifar_n_fake's mock: 2000 train images, enough for the default meta set.
  dataset = "cifar100_n" if name.startswith("cifar100n") else "cifar10_n"
  return f"cifar_n:{dataset}", FEW_STEPS + SMALL_RESNET32


# The human label set each CIFAR-N file trains on, as cifar_n_fake names it
# (the TFDS feature): the run's noisy labels must be exactly those.
CIFAR_N_LABELS = {"cifar10n_worst.gin": "worse_label",
                  "cifar10n_aggregate.gin": "aggre_label",
                  "cifar10n_random1.gin": "random_label1",
                  "cifar100n_noisy.gin": "noise_label"}


def _fashion_mnist(name):
  del name
  # Debian's IDX files; a class-balanced 500-image subset keeps the long
  # tail's last class non-empty (n_max = 50 -> 1).
  return "fashion_mnist", FEW_STEPS + ("fashion_mnist.num_train = 500",)


def _folder(name):
  del name
  return "folder", FEW_STEPS + ("folder.image_size = 32",)


# (pattern, plan): the first pattern that matches a file name decides.
PLANS = (
    (r"cifar(10|100)_(uniform|flip|longtail)_\d+\.gin", _cifar),
    (r"data_reference\.gin", _cifar),
    (r"clothing1m\.gin", _clothing1m),
    (r"(quickstart|smoke)\.gin", _digits),
    (r"cifar10{1,2}n_\w+\.gin", _cifar_n),
    (r"folder_example\.gin", _folder),
    (r"fashion_mnist_\w+\.gin", _fashion_mnist),
)


# Files used after another one, not alone: the file they follow in the test.
FOLLOWS = {"fashion_mnist_quick.gin": "fashion_mnist_uniform_60.gin"}
# The launch/ sweep's pipeline (train, then analyze) is checked in full on
# this one (tests/test_gin_fashion_mnist.py checks what each file binds).
SWEEP_PIPELINE = "fashion_mnist_uniform_60.gin"


def _included(name):
  """The gin files that `name` includes."""
  text = open(os.path.join(REPO, "gin", name)).read()
  return re.findall(r"^include\s+'gin/([\w.]+)'", text, flags=re.M)


def _plan(name):
  for pattern, plan in PLANS:
    if re.fullmatch(pattern, name):
      return plan(name)
  return None


RUN = [n for n in GIN_FILES if _plan(n) is not None]
INCLUDED = {i for n in RUN for i in _included(n)}


def _family(name):
  """(family, rate) of a file of a family of settings that differ in one
  number only (cifar10_uniform_40.gin: ("cifar10_uniform", 40)), else None."""
  match = re.fullmatch(r"(\w+)_(\d+)\.gin", name)
  return (match[1], int(match[2])) if match else None


# Every file trains through the entry point. The exports, the TensorBoard
# images and histograms and the analysis are checked once per family, on its
# file with the largest number (the most noise, the longest tail: the data
# and model code are the family's, only a rate differs): its siblings run
# without exports, which saves an export, its reload and an analysis each.
FULL = {n for n in RUN if _family(n) is None or _family(n)[1] == max(
    _family(m)[1] for m in RUN if _family(m) and
    _family(m)[0] == _family(n)[0])}
LIGHT = ("train_eval.export = False", "train_eval.summary_every_n_steps = 0")


def test_every_gin_file_is_run_end_to_end():
  orphans = [n for n in GIN_FILES if n not in RUN and n not in INCLUDED]
  assert not orphans, (f"{orphans}: add an end-to-end plan to PLANS in "
                       f"{os.path.basename(__file__)}")


def test_every_family_is_checked_in_full_on_one_file():
  families = {_family(n)[0] for n in RUN if _family(n)}
  assert {"cifar10_uniform", "cifar100_longtail",
          "fashion_mnist_uniform"} <= families
  for family in families:
    full = [n for n in FULL if _family(n) and _family(n)[0] == family]
    assert len(full) == 1, (family, full)
  assert "cifar10_uniform_60.gin" in FULL and SWEEP_PIPELINE in FULL
  assert "cifar10_longtail_200.gin" in FULL
  assert "cifar10_uniform_40.gin" not in FULL
  assert all(n in FULL for n in RUN if not _family(n))
  # Every CIFAR-N file's labels are checked (_check_cifar_n).
  assert {n for n in RUN if _plan(n)[0].startswith("cifar_n")} == set(
      CIFAR_N_LABELS)


@pytest.fixture(scope="module")
def clothing1m_release(tmp_path_factory):
  root = tmp_path_factory.mktemp("clothing1m")
  real_jpeg_release.write_release(str(root / "manual"))
  return root


def _call_main(argv):
  FLAGS.unparse_flags()
  FLAGS(["mwn_tf.main"] + argv)
  try:
    main.main(["mwn_tf.main"])
    return 0
  except SystemExit as e:
    return e.code
  finally:
    FLAGS.unparse_flags()


def _call_analyze(model_dir):
  fv = flags.FlagValues()
  analyze.define_flags(fv)
  fv(["mwn_tf.analyze", f"--model_dir={model_dir}"])
  return analyze.run(["mwn_tf.analyze"], fv)


def _summary_tags(model_dir):
  """(image tags, histogram tags) as TensorBoard's plugins see them."""
  acc = plugin_event_accumulator.EventAccumulator(model_dir)
  acc.Reload()
  return (set(acc.PluginTagToContent("images")),
          set(acc.PluginTagToContent("histograms")))


def _check_sweep_pipeline(model_dir):
  """The sweep's pipeline (train, then the analyze CLI): the detection
  report covers every training image, and the analysis's recomputation of
  the training split from the exports agrees with the runner's per-sample
  table (the loader is deterministic given the config)."""
  with open(os.path.join(model_dir, "analysis", "detection.json")) as f:
    report = json.load(f)
  assert report["num_known"] == 500  # fashion_mnist.num_train
  overall = report["overall"]
  assert 0.0 <= overall["auroc"] <= 1.0
  assert overall["at_realised_rate"]["flagged"] == overall["n_noisy"]
  files = sources.find_run_files(model_dir)
  stored = detection.load_samples(files.samples)
  again, _ = sources.recompute_samples(files, "exports")
  np.testing.assert_array_equal(again.index, stored.index)
  np.testing.assert_array_equal(again.clean_label, stored.clean_label)
  # The classifier's export returns float32 probabilities, so a loss is
  # recovered up to -log(float32 tiny) = 87.3 and clamped there (documented
  # in sources.ExportedModels); a few-step run with a large learning rate
  # has such losses (CI's had 155). The softmax divides by a sum of up to K
  # terms, so its result may flush to zero from a loss of floor - log(K) on.
  # Below that both agree; above it the recomputation lies in that band.
  floor = -np.log(np.finfo(np.float32).tiny)
  band = floor - np.log(10)  # K = 10 classes
  exact = stored.loss < band
  assert exact.mean() > 0.5, "most losses must be checked"
  np.testing.assert_allclose(again.loss[exact], stored.loss[exact],
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(again.weight[exact], stored.weight[exact],
                             rtol=1e-4)
  assert np.all((again.loss[~exact] >= band - 1e-4) &
                (again.loss[~exact] <= floor + 1e-4))


def _check_cifar_n(name, dataset, model_dir, results, classifier):
  """A CIFAR-N run trained on the file's human labels, with the paper's 1000
  clean meta images, and its export names CIFAR's classes."""
  k = 100 if dataset == "cifar100_n" else 10
  assert results["data"]["dataset"] == dataset
  assert results["data"]["num_meta"] == 1000  # The paper's, unshrunk.
  samples = np.load(os.path.join(model_dir, "sample_weights.npz"))
  index = samples["index"]
  clean = index * 7 % k  # cifar_n_fake's clean labels.
  human = cifar_n_fake.human(CIFAR_N_LABELS[name],
                             np.arange(cifar_n_fake.N_TRAIN) * 7 % k, k)[index]
  np.testing.assert_array_equal(samples["label"], human)
  np.testing.assert_array_equal(samples["is_noisy"], human != clean)
  assert results["realised_noise_rate"] == pytest.approx(
      np.mean(human != clean))
  names = [n.decode() for n in classifier.metadata()["class_names"].numpy()]
  assert names == tfds.builder(dataset).info.features["label"].names
  # Raw CIFAR pixels through the export = the training pipeline's eval.
  raw = np.random.default_rng(2).integers(0, 256, (3, 32, 32, 3), np.uint8)
  want = classifier.serve(preprocessing.cifar_eval(raw))["probabilities"]
  got = classifier.serve_images(raw)["probabilities"]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # The human noise is known per sample, so the analysis scored detection.
  with open(os.path.join(model_dir, "analysis", "detection.json")) as f:
    assert json.load(f)["num_known"] == index.size


def _check_folder(model_dir, folders, classifier):
  """A run on image folders without clean labels: every training photo in
  the per-sample table, the export names the class folders and takes a
  photo's file bytes as the pipeline's evaluation reads them."""
  samples = np.load(os.path.join(model_dir, "sample_weights.npz"))
  assert samples["index"].size == photo_folders.NUM_TRAIN
  np.testing.assert_array_equal(samples["clean_label"], -1)
  export = os.path.join(model_dir, "export", "classifier")
  names = [n.decode() for n in classifier.metadata()["class_names"].numpy()]
  assert names == ["china", "flower"]
  with open(os.path.join(export, "assets.extra", "metadata.json")) as f:
    assert json.load(f)["class_names"] == names
  d = mwn_tf.data.get("folder", image_size=32, **folders)
  files = [os.path.join(folders["train_dir"], "china", "china.jpg"),
           d.arrays["test"]["path"][-1]]
  encoded = tf.stack([tf.io.read_file(f) for f in files])
  want = classifier.serve(tf.stack([d.eval_fn(e) for e in encoded]))
  got = classifier.serve_bytes(encoded)
  np.testing.assert_allclose(got["probabilities"], want["probabilities"],
                             rtol=1e-5, atol=1e-6)
  assert got["top_class"].shape == (2,)


def _check_exports(results, num_classes, image_shape):
  """Both SavedModels load and answer; returns the loaded classifier."""
  classifier = tf.saved_model.load(results["exports"]["classifier"])
  images = np.random.default_rng(0).normal(
      size=(3, *image_shape)).astype(np.float32)
  probs = classifier.serve(images)["probabilities"].numpy()
  assert probs.shape == (3, num_classes)
  np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
  weight_net = tf.saved_model.load(results["exports"]["weight_net"])
  weights = weight_net.serve(np.array([0.1, 1.0, 5.0], np.float32))["weights"]
  weights = weights.numpy()
  assert weights.shape == (3,) and np.all((weights > 0) & (weights < 1))
  return classifier


@pytest.mark.slow
@pytest.mark.parametrize("name", RUN)
def test_gin_file_runs_end_to_end(name, tmp_path, clothing1m_release):
  data, bindings = _plan(name)
  model_dir = str(tmp_path / "run")
  argv = [f"--gin_file=gin/{n}" for n in (FOLLOWS.get(name), name) if n]
  argv += [f"--model_dir={model_dir}"]
  argv += [f"--gin_param={b}" for b in bindings]
  if name not in FULL:
    argv += [f"--gin_param={b}" for b in LIGHT]
  if data == "clothing1m":
    argv += [f"--gin_param=clothing1m.manual_dir = "
             f"'{clothing1m_release / 'manual'}'",
             f"--gin_param=clothing1m.data_dir = "
             f"'{clothing1m_release / 'tfds'}'"]
  if data == "fashion_mnist":
    real_data.require_fashion_mnist()
  if data == "folder":
    folders = photo_folders.write(tmp_path / "photos")
    argv += [f"--gin_param=folder.{k} = '{v}'" for k, v in folders.items()]
  if data.startswith("cifar_n"):
    dataset = data.split(":")[1]
    manual = cifar_n_fake.write_manual_files(tmp_path / "manual")
    argv += [f"--gin_param={dataset}.manual_dir = '{manual}'",
             f"--gin_param={dataset}.data_dir = '{tmp_path / 'tfds'}'"]
    fake = cifar_n_fake.fake_cifar_n(100 if dataset == "cifar100_n" else 10)
    with tfds.testing.mock_data(as_dataset_fn=fake):
      status = _call_main(argv)
  elif data.startswith("mock"):
    with tfds.testing.mock_data(num_examples=int(data.split(":")[1])):
      status = _call_main(argv)
  else:
    status = _call_main(argv)
  assert status == 0

  with open(os.path.join(model_dir, "results.json")) as f:
    results = json.load(f)
  assert results["finished"] and results["steps"] == 3
  assert 0.0 <= results["final_epoch_test_accuracy"] <= 1.0
  if name not in FULL:
    return
  summary = results["data"]
  classifier = _check_exports(results, summary["num_classes"],
                              summary["image_shape"])

  images, histograms = _summary_tags(model_dir)
  assert {"meta/weighting_function", "train/sample_weight_distribution",
          "train/weight_variation"} <= images
  assert {"train/sample_weight/clean", "train/sample_loss/clean"} <= histograms

  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert _call_analyze(model_dir) == 0
  if data == "folder":  # No mean over zero clean labels.
    assert not [w for w in caught if w.category is RuntimeWarning], caught
  out = os.path.join(model_dir, "analysis")
  for f in ("ranking.csv", "weighting_function.png",
            "weight_distribution.png"):
    assert os.path.getsize(os.path.join(out, f)) > 0
  with open(os.path.join(out, "ranking.csv")) as f:
    assert sum(1 for _ in f) == summary["num_train"] + 1  # header + rows
  if name == SWEEP_PIPELINE:
    _check_sweep_pipeline(model_dir)
  if data == "folder":
    _check_folder(model_dir, folders, classifier)
  if data.startswith("cifar_n"):
    _check_cifar_n(name, data.split(":")[1], model_dir, results, classifier)
