"""End-to-end tests of `train_eval` on the smoke config (digits, 2 steps)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator as ea

from mwn_tf import data as data_lib
from mwn_tf.meta_model import per_sample_loss
from mwn_tf.runner import checkpointing
from mwn_tf.runner import epochs
from mwn_tf.runner import settings
from mwn_tf.runner import train_eval as train_eval_lib
from helpers import run



def plugin_tags(logdir):
  """{plugin name: set of tags} of every tf.summary in logdir."""
  acc = ea.EventAccumulator(str(logdir), size_guidance={ea.TENSORS: 0})
  acc.Reload()
  out = {}
  for tag in acc.Tags()["tensors"]:
    plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
    out.setdefault(plugin, set()).add(tag)
  return out, acc


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("smoke")
  return model_dir, run(model_dir)


def test_results_json(smoke):
  model_dir, results = smoke
  on_disk = json.loads((model_dir / "results.json").read_text())
  assert on_disk["finished"] is True and on_disk["error"] is None
  for key in ("final_epoch_test_accuracy", "best_epoch_test_accuracy",
              "best_epoch", "realised_noise_rate", "seed", "method", "steps",
              "wall_time_s", "data", "history"):
    assert key in on_disk, key
  assert on_disk["steps"] == 2 and on_disk["method"] == "mwn"
  assert 0.3 < on_disk["realised_noise_rate"] < 0.45  # 40% uniform, K=10
  assert on_disk["data"]["dataset"] == "digits"
  assert len(on_disk["history"]) == on_disk["epochs"] == 1
  assert 0.0 <= on_disk["final_epoch_test_accuracy"] <= 1.0
  assert results["final_epoch_test_accuracy"] == (
      on_disk["final_epoch_test_accuracy"])
  for name in ("operative_config.gin", "weight_curve.csv",
               "sample_weights.npz"):
    assert (model_dir / name).exists(), name
  operative = (model_dir / "operative_config.gin").read_text()
  assert "train_eval.train_steps = 2" in operative
  assert "digits.noise_rate = 0.4" in operative


def test_results_json_has_every_resolved_setting(smoke):
  """results.json's `settings`: the value of every train_eval argument the
  run used (gin bindings over defaults), so readers need not parse gin."""
  model_dir, results = smoke
  on_disk = json.loads((model_dir / "results.json").read_text())
  assert on_disk["settings"] == results["settings"]
  assert set(on_disk["settings"]) == set(train_eval_lib.bound_settings())
  assert on_disk["settings"]["train_steps"] == 2  # smoke.gin
  assert on_disk["settings"]["weight_net_hidden_units"] == [8]  # smoke.gin
  assert on_disk["settings"]["learning_rate"] == 0.1  # the default
  assert on_disk["settings"]["jit_compile"] == "auto"


def test_tensorboard_has_scalars_images_histograms(smoke):
  model_dir, _ = smoke
  tags, acc = plugin_tags(model_dir)
  assert {"train/loss", "train/accuracy", "train/weighted_loss",
          "train/weight_clean", "train/weight_noisy", "train/learning_rate",
          "meta/loss", "meta/accuracy", "test/accuracy", "test/loss",
          "test/best_accuracy"} <= tags["scalars"]
  assert {"meta/weighting_function", "train/sample_weight_distribution",
          "train/weight_variation"} <= tags["images"]
  assert {"train/sample_weight/clean", "train/sample_weight/corrupted",
          "train/sample_loss/clean", "train/sample_loss/corrupted"
          } <= tags["histograms"]
  assert "config/operative_gin" in tags["text"]
  assert "hparams" in tags
  # The curve image is a real PNG; test accuracy matches results.json.
  image = acc.Tensors("meta/weighting_function")[-1]
  png = tf.make_ndarray(image.tensor_proto)[2]
  assert tf.image.decode_png(png).shape[-1] == 4
  test_acc = tf.make_ndarray(acc.Tensors("test/accuracy")[-1].tensor_proto)
  results = json.loads((model_dir / "results.json").read_text())
  assert float(test_acc) == pytest.approx(
      results["final_epoch_test_accuracy"], rel=1e-6)


def test_exports_reproduce_the_in_memory_model(smoke):
  """sample_weights.npz holds the final in-memory model's per-sample loss and
  V weight; the exported SavedModels must give the same numbers."""
  model_dir, _ = smoke
  samples = np.load(model_dir / "sample_weights.npz")
  assert set(samples.files) == {"index", "label", "clean_label", "is_noisy",
                                "loss", "weight", "predicted", "probability"}
  assert np.all(np.diff(samples["index"]) > 0)
  np.testing.assert_array_equal(samples["is_noisy"],
                                samples["label"] != samples["clean_label"])
  classifier = tf.saved_model.load(str(model_dir / "export" / "classifier"))
  weight_net = tf.saved_model.load(str(model_dir / "export" / "weight_net"))
  np.testing.assert_allclose(weight_net.serve(samples["loss"])["weights"],
                             samples["weight"], rtol=1e-5, atol=1e-6)
  splits = data_lib.get("digits", noise_type="uniform", noise_rate=0.4, seed=0)
  losses, index = [], []
  for batch in splits.train_for_eval(256):
    probs = classifier.serve(batch["image"])["probabilities"]
    losses.append(-np.log(np.take_along_axis(
        probs.numpy(), batch["label"].numpy()[:, None], 1)[:, 0]))
    index.append(batch["index"].numpy())
  order = np.argsort(np.concatenate(index))
  np.testing.assert_allclose(np.concatenate(losses)[order], samples["loss"],
                             rtol=1e-4, atol=1e-5)
  curve = np.loadtxt(model_dir / "weight_curve.csv", delimiter=",",
                     skiprows=1)
  np.testing.assert_allclose(weight_net.serve(curve[:, 0].astype(np.float32))[
      "weights"], curve[:, 1], rtol=1e-4)


def test_rerunning_a_finished_run_trains_nothing(smoke):
  model_dir, results = smoke
  again = run(model_dir)
  assert again["steps"] == results["steps"]
  assert again["history"] == results["history"]


def test_resuming_with_other_data_is_refused(smoke):
  model_dir, _ = smoke
  with pytest.raises(settings.ConfigError, match="different data"):
    run(model_dir, "digits.noise_rate = 0.2")


def test_baseline(tmp_path):
  results = run(tmp_path, "train_eval.method = 'baseline'")
  assert results["method"] == "baseline" and results["finished"]
  assert list(results["exports"]) == ["classifier"]
  assert not (tmp_path / "weight_curve.csv").exists()
  assert np.all(np.load(tmp_path / "sample_weights.npz")["weight"] == 1.0)
  tags, _ = plugin_tags(tmp_path)
  assert "meta/loss" not in tags["scalars"]
  assert "test/accuracy" in tags["scalars"]


def test_eval_every_n_epochs_skips_evaluations_but_never_the_last(tmp_path):
  """5 epochs, evaluated after epochs 2, 4 and 5 (the last): the others
  record no test accuracy and write no test scalars; the summary's best and
  final come from the evaluated epochs."""
  results = run(tmp_path, "train_eval.train_steps = None",
                "train_eval.epochs = 5", "train_eval.batch_size = 300",
                "train_eval.eval_every_n_epochs = 2",
                "train_eval.sample_every_n_epochs = 0",
                "train_eval.export = False")
  accs = [h["test"]["accuracy"] for h in results["history"]]
  assert [a is not None for a in accs] == [False, True, False, True, True]
  assert results["final_epoch_test_accuracy"] == accs[-1]
  assert results["best_epoch"] in (2, 4, 5)
  tags, acc = plugin_tags(tmp_path)
  assert "test/accuracy" in tags["scalars"]
  steps = [e.step for e in acc.Tensors("test/accuracy")]
  per_epoch = results["history"][0]["step"]
  assert steps == [2 * per_epoch, 4 * per_epoch, 5 * per_epoch]
  with pytest.raises(settings.ConfigError, match="eval_every_n_epochs"):
    settings.check_settings({"eval_every_n_epochs": 0})


def test_should_evaluate():
  assert [epochs.should_evaluate(e, 7, 3) for e in range(7)] == [
      False, False, True, False, False, True, True]
  assert all(epochs.should_evaluate(e, 4, 1) for e in range(4))


@pytest.mark.parametrize("method,what", [("mwn", "meta_loss became nan"),
                                         ("baseline", "parameters became")])
def test_non_finite_stops_at_the_step_and_keeps_the_last_checkpoint(
    tmp_path, method, what):
  # Two steps per epoch. One good epoch (checkpoint ckpt-2), then resumed
  # with a huge (finite: an infinite one is refused) learning rate and
  # weight decay, whose product overflows: MW-Net's virtual step gives a NaN
  # meta loss in step 3; the baseline's step 3 gives NaN/Inf weights.
  common = [f"train_eval.method = '{method}'", "train_eval.train_steps = None",
            "train_eval.batch_size = 512"]
  run(tmp_path, *common, "train_eval.epochs = 1")
  with pytest.raises(checkpointing.NonFiniteError) as err:
    run(tmp_path, *common, "train_eval.epochs = 2",
        "train_eval.learning_rate = 1e38", "train_eval.weight_decay = 1e38")
  assert err.value.step == 3
  assert what in str(err.value) and "step 3" in str(err.value)
  assert "ckpt-2" in str(err.value)
  latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
  assert latest.endswith("ckpt-2")
  for name, _ in tf.train.list_variables(latest):
    value = tf.train.load_variable(latest, name)
    if np.issubdtype(np.asarray(value).dtype, np.floating):
      assert np.all(np.isfinite(value)), name
  results = json.loads((tmp_path / "results.json").read_text())
  assert not results["finished"] and "step 3" in results["error"]
  assert results["epochs_done"] == 1


def test_lr_schedule_switches_at_the_boundary_step():
  schedule = settings.lr_schedule(0.1, [3, 5], 0.1)
  lrs = [float(schedule(step)) for step in range(7)]
  np.testing.assert_allclose(lrs, [0.1] * 3 + [0.01] * 2 + [0.001] * 2,
                             rtol=1e-6)
  assert settings.lr_schedule(0.1, [], 0.1) == 0.1


def test_epoch_stream_is_a_function_of_seed_and_epoch():
  splits = data_lib.get("digits", noise_type="uniform", noise_rate=0.4, seed=3)
  steps = splits.steps_per_epoch(100)

  def indices(epoch, skip):
    ds, fit_steps = epochs.epoch_stream(splits, epoch, skip, steps - skip,
                                        100, 50)
    assert fit_steps is None
    return [(t["index"].numpy().tolist(), m["index"].numpy().tolist())
            for t, m in ds]

  full = indices(1, 0)
  assert len(full) == steps
  assert indices(1, 0) == full
  assert indices(1, 4) == full[4:]
  assert indices(2, 0) != full


def test_default_model_dir():
  assert settings.default_model_dir(["gin/quickstart.gin"]) == os.path.join(
      "runs", "quickstart")
  with_param = settings.default_model_dir(["gin/quickstart.gin"],
                                          ["train_eval.method = 'baseline'"])
  assert with_param.startswith(os.path.join("runs", "quickstart-"))
  assert with_param != settings.default_model_dir(
      ["gin/quickstart.gin"], ["train_eval.seed = 1"])


def test_paper_defaults():
  """train_eval's own defaults are MW-Net.py's (docs/REFERENCE.md)."""
  import inspect  # pylint: disable=g-import-not-at-top
  defaults = {k: p.default for k, p in inspect.signature(
      train_eval_lib.train_eval.__wrapped__).parameters.items()}
  assert defaults["learning_rate"] == 0.1 and defaults["momentum"] == 0.9
  assert defaults["weight_decay"] == 5e-4 and defaults["nesterov"] is False
  assert defaults["epochs"] == 120
  assert tuple(defaults["lr_decay_epochs"]) == (80, 100)
  assert defaults["lr_decay_factor"] == 0.1
  assert defaults["batch_size"] == 100 and defaults["meta_batch_size"] == 100
  assert defaults["meta_optimizer"] == "adam"
  assert defaults["meta_learning_rate"] == 1e-3
  assert defaults["meta_weight_decay"] == 1e-4
  assert tuple(defaults["weight_net_hidden_units"]) == (100,)
  assert defaults["method"] == "mwn"
