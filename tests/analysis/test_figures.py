"""The figures say what they show (dataset, noise type and rate, epoch), and
the TensorBoard renderings stay readable at card size."""

import io
import os

from matplotlib import image as mpl_image
from matplotlib.backends.backend_agg import FigureCanvasAgg
import numpy as np
import pytest
import tensorflow as tf

from mwn_tf.shared import figures
from mwn_tf.analysis import report

from fake_runs import write_run


def _titles(fig):
  return "\n".join(ax.get_title() for ax in fig.axes)


@pytest.mark.parametrize("args, want", [
    (("digits", "uniform", 0.4, 12), "digits, uniform noise 40%, epoch 12"),
    (("cifar100", "flip2", 0.2, None), "cifar100, flip2 noise 20%"),
    (("cifar10", "none", 0.0, 3), "cifar10, no noise, epoch 3"),
    ((None, None, None, None), ""),
])
def test_caption(args, want):
  assert figures.caption(*args) == want


def test_every_builder_puts_the_context_under_its_title():
  rng = np.random.default_rng(0)
  loss, noisy = rng.gamma(2.0, 1.0, 50), rng.random(50) < 0.4
  context = figures.caption("digits", "uniform", 0.4, 7)
  built = [
      figures.weighting_function(np.linspace(0, 5, 20),
                                 np.linspace(0.9, 0.1, 20), context=context),
      figures.weighting_function(np.linspace(0, 5, 20),
                                 np.linspace(0.9, 0.1, 20), sample_loss=loss,
                                 is_noisy=noisy, context=context),
      figures.weight_distribution(1 / (1 + loss), loss=loss, is_noisy=noisy,
                                  context=context),
      figures.weight_variation([1, 2, 3], [0.5, 0.6, 0.7], [0.4, 0.3, 0.2],
                               mean=[0.45, 0.45, 0.45], context=context),
      figures.ablation(["10", "100"], [[0.9], [0.91, 0.92]], context=context),
  ]
  for fig in built:
    assert context in _titles(fig)


def test_a_class_aware_v_s_curves_share_one_figure():
  loss = np.linspace(0, 5, 20)
  weights = np.stack([np.linspace(0.9, 0.1, 20), np.linspace(0.5, 0.4, 20),
                      np.full(20, 0.3)], axis=1)
  names = figures.cluster_names(3)
  assert names[0] == "cluster 0 (most samples)"
  assert names[2] == "cluster 2 (fewest samples)"
  assert figures.cluster_names(1) is None
  fig = figures.weighting_function(loss, weights, curve_names=names,
                                   sample_loss=loss)
  ax = fig.axes[0]
  assert [line.get_label() for line in ax.get_lines()] == names
  for c, line in enumerate(ax.get_lines()):
    np.testing.assert_array_equal(line.get_ydata(), weights[:, c])
  assert [t.get_text() for t in ax.get_legend().get_texts()] == names


def test_analysis_figures_name_the_run(tmp_path, monkeypatch):
  """The run's dataset, noise type and rate, and the epoch of its samples
  (its last, 6) are in every figure `analyze` draws."""
  saved = {}
  save = figures.save

  def record(fig, path, **kwargs):
    saved[os.path.basename(path)] = _titles(fig)
    return save(fig, path, **kwargs)

  monkeypatch.setattr(figures, "save", record)
  model_dir = str(tmp_path / "run")
  write_run(model_dir)
  report.analyze(model_dir, ablation_dirs=[model_dir])
  assert set(saved) == {"weighting_function.png", "weight_distribution.png",
                        "weight_variation.png", "ablation.png"}
  for name, titles in saved.items():
    assert "digits, uniform noise 40%" in titles, name
  for name in ("weighting_function.png", "weight_distribution.png"):
    assert "epoch 6" in saved[name], name
  assert "epochs 1–6" in saved["weight_variation.png"]


def test_tensorboard_rendering_fits_a_card():
  """The sample-weight image: weights above losses, one legend, 10 pt or
  larger text, about 500-700 px: TensorBoard's card shows it nearly 1:1."""
  rng = np.random.default_rng(1)
  loss, noisy = rng.gamma(2.0, 1.0, 300), rng.random(300) < 0.4
  fig = figures.weight_distribution(
      1 / (1 + loss), loss=loss, is_noisy=noisy,
      context=figures.caption("digits", "uniform", 0.4, 60))
  assert len(fig.axes) == 2
  assert sum(ax.get_legend() is not None for ax in fig.axes) == 1
  for ax in fig.axes:
    texts = [ax.title, ax.xaxis.label, ax.yaxis.label,
             *ax.get_xticklabels(), *ax.get_yticklabels()]
    assert min(t.get_fontsize() for t in texts if t.get_text()) >= 10
  image = mpl_image.imread(io.BytesIO(figures.png(fig)))
  height, width = image.shape[:2]
  assert 450 <= width <= 700 and 450 <= height <= 700, image.shape


# The runner's TensorBoard images (moved from tests/test_callbacks.py).
@pytest.mark.parametrize("png", [
    lambda: figures.png(figures.weighting_function(
        np.linspace(0, 5, 11), np.linspace(0.6, 0.1, 11), context="epoch 1")),
    lambda: figures.png(figures.weight_distribution(
        np.linspace(0, 1, 6), loss=np.arange(6.0),
        is_noisy=np.array([0, 1, 0, 1, 0, 0], bool))),
    lambda: figures.png(figures.weight_distribution(
        np.ones(3), loss=np.arange(3.0),
        is_noisy=np.zeros(3, bool))),  # nothing corrupted
    lambda: figures.png(figures.weight_variation(
        [1, 2, 3], [0.5, 0.6, np.nan], [0.4, 0.2, 0.1],
        mean=[0.45, 0.4, 0.3])),
])
def test_figures_are_pngs(png):
  image = tf.image.decode_png(png(), channels=4)
  assert image.shape[0] > 100 and image.shape[1] > 100
  # Not a blank canvas.
  assert len(np.unique(image.numpy().reshape(-1, 4), axis=0)) > 10


def test_training_images_name_the_run(tmp_path, monkeypatch):
  """The runner's TensorBoard images (smoke.gin: digits, 40% uniform noise)
  carry the dataset, the noise and the epoch in their titles."""
  import helpers  # pylint: disable=g-import-not-at-top
  written = {}
  summary = figures.summary

  def record(name, fig, step):
    written.setdefault(name, []).append(_titles(fig))
    return summary(name, fig, step)

  monkeypatch.setattr(figures, "summary", record)
  helpers.run(tmp_path / "run", "train_eval.export = False")
  assert set(written) == {"meta/weighting_function",
                          "train/sample_weight_distribution",
                          "train/weight_variation"}
  for name, titles in written.items():
    assert "digits, uniform noise 40%" in titles[-1], name
  assert "epoch 1" in written["meta/weighting_function"][-1]
  assert "epoch 1" in written["train/sample_weight_distribution"][-1]


@pytest.mark.parametrize("epochs", [[1, 2], [1, 2, 3], list(range(1, 8))])
def test_weight_variation_ticks_are_whole_epochs(epochs):
  fig = figures.weight_variation(epochs, [0.5] * len(epochs),
                                 [0.4] * len(epochs))
  FigureCanvasAgg(fig).draw()
  (ax,) = fig.axes
  low, high = ax.get_xlim()
  ticks = [t for t in ax.get_xticks() if low <= t <= high]
  assert ticks and all(float(t).is_integer() for t in ticks), ticks
