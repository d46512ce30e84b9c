"""The paper's figures (Shu et al., NeurIPS 2019, Figs. 1, 4-6), each built
once and rendered to a PNG file or to a TensorBoard image.

Builders (NumPy in, a matplotlib `Figure` out):

  weighting_function   the learned loss -> weight curve V(L; Θ) (a
                       class-aware V: one curve per class cluster),
                       optionally above the samples' loss histograms.
  weight_distribution  training-sample weights, clean vs corrupted (or all),
                       optionally above their losses.
  weight_variation     mean weight of clean and corrupted samples over
                       training.
  ablation             test accuracy of runs that differ in V's size.
  accuracy_curves      test accuracy per epoch of several methods, mean
                       over seeds with the seeds' range (memorisation shows
                       as a baseline that peaks early and falls).
  distrusted_sheet     the most distrusted training images, "given ->
                       predicted" under each (a contact sheet to review).
  trusted_sheet        the most trusted images of each class, for contrast.

Renderers: `save` (a PNG file, for `python -m mwn_tf.analyze`), `png` (PNG
bytes) and `summary` (a TensorBoard image, for the runner's monitor).
`caption` says what a figure shows (dataset, noise type and rate, epoch); the
builders put it under their title. Matplotlib's object API on the Agg canvas
only: importing this never changes the user's backend or pyplot state.
"""

import io
import os
from typing import Optional, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
import numpy as np

CLEAN_COLOR, NOISY_COLOR, ALL_COLOR = "tab:blue", "tab:red", "tab:gray"
FILE_DPI = 120
# TensorBoard shows an image at its own pixel size, scaled down to the card:
# about 500 px wide with fonts of 12-14 pt stays readable there.
SUMMARY_DPI = 100
_FONT = {"title": 13, "label": 12, "ticks": 11, "legend": 10}


# ----------------------------------------------------------------------------
# Renderers.
# ----------------------------------------------------------------------------
def save(fig: Figure, path: str, dpi: int = FILE_DPI) -> str:
  """Writes `fig` as a PNG file (folders made as needed); returns `path`."""
  FigureCanvasAgg(fig)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=dpi)
  return path


def png(fig: Figure, dpi: int = SUMMARY_DPI) -> bytes:
  """`fig` as PNG bytes."""
  FigureCanvasAgg(fig)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=dpi)
  return buf.getvalue()


def summary(name: str, fig: Figure, step: int) -> None:
  """Writes `fig` as a TensorBoard image to the default summary writer."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  image = tf.image.decode_png(png(fig), channels=4)[tf.newaxis]
  tf.summary.image(name, image, step=step)


def caption(dataset: Optional[str] = None, noise_type: Optional[str] = None,
            noise_rate: Optional[float] = None,
            epoch: Optional[int] = None) -> str:
  """What a figure shows, e.g. "digits, uniform noise 40%, epoch 12".

  Unknown parts (None) are left out; noise type "none" reads "no noise".
  """
  parts = [dataset] if dataset else []
  if noise_type == "none":
    parts.append("no noise")
  elif noise_type:
    rate = "" if noise_rate is None else f" {100 * float(noise_rate):.4g}%"
    parts.append(f"{noise_type} noise{rate}")
  if epoch is not None:
    parts.append(f"epoch {int(epoch)}")
  return ", ".join(parts)


def cluster_names(num_curves: int) -> Optional[list]:
  """Legend names of a class-aware V's curves ("cluster 0 (most samples)",
  ...), None for a single curve (the paper's V: no legend)."""
  if num_curves <= 1:
    return None
  return [f"cluster {c}" + (" (most samples)" if c == 0 else
                            " (fewest samples)" if c == num_curves - 1 else "")
          for c in range(num_curves)]


def _titled(ax, title: str, context: str) -> None:
  ax.set_title(f"{title}\n{context}" if context else title,
               fontsize=_FONT["title"])


def _style(ax, xlabel: str, ylabel: str, legend: bool = True) -> None:
  ax.set_xlabel(xlabel, fontsize=_FONT["label"])
  ax.set_ylabel(ylabel, fontsize=_FONT["label"])
  ax.tick_params(labelsize=_FONT["ticks"])
  ax.grid(alpha=0.3)
  if legend and ax.get_legend_handles_labels()[0]:
    ax.legend(loc="best", fontsize=_FONT["legend"])


def _groups(n: int, is_noisy: Optional[np.ndarray]):
  """(mask, colour, legend name) per group: clean/corrupted, or all."""
  if is_noisy is None:
    return [(np.ones(n, bool), ALL_COLOR, "all samples")]
  is_noisy = np.asarray(is_noisy, bool)
  return [(~is_noisy, CLEAN_COLOR, "clean label"),
          (is_noisy, NOISY_COLOR, "corrupted label")]


def _histograms(ax, values, is_noisy, edges, with_mean: bool) -> None:
  values = np.asarray(values, np.float64)
  for mask, color, name in _groups(len(values), is_noisy):
    if mask.any():
      mean = f", mean {np.mean(values[mask]):.3f}" if with_mean else ""
      ax.hist(values[mask], bins=edges, color=color, alpha=0.6,
              label=f"{name} (n={int(mask.sum())}{mean})")


# ----------------------------------------------------------------------------
# Builders.
# ----------------------------------------------------------------------------
def weighting_function(curve_loss: np.ndarray, curve_weight: np.ndarray, *,
                       curve_names: Optional[Sequence[str]] = None,
                       sample_loss: Optional[np.ndarray] = None,
                       is_noisy: Optional[np.ndarray] = None, bins: int = 60,
                       title: str = "Learned weighting function",
                       context: str = "") -> Figure:
  """The loss -> weight curve (paper, Figs. 1 and 6).

  Args:
    curve_loss: `[p]` losses at which V was evaluated, ascending.
    curve_weight: `[p]` V's weights there, or `[p, C]`: C curves (a
      class-aware V's, one per class cluster), drawn on the same axes.
    curve_names: `[C]` legend names of the curves (`cluster_names`); None:
      one unnamed curve per column, no legend.
    sample_loss: optional `[n]` per-sample losses: a histogram below the
      curve shows where clean and corrupted samples fall on it.
    is_noisy: optional `[n]` bool, splits that histogram clean / corrupted.
    bins: histogram bins.
    title: first title line.
    context: second title line (see `caption`).
  """
  fig = Figure(figsize=(6, 4.4 if sample_loss is None else 5.6),
               layout="constrained")
  if sample_loss is None:
    ax = fig.add_subplot()
  else:
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1.3))
    ax = fig.add_subplot(grid[0])
    hist_ax = fig.add_subplot(grid[1], sharex=ax)
    hi = max(float(np.max(sample_loss)), float(np.max(curve_loss)))
    edges = np.linspace(0.0, hi if hi > 0 else 1.0, bins + 1)
    _histograms(hist_ax, sample_loss, is_noisy, edges, with_mean=False)
    # Log counts: the clean samples' spike near 0 would flatten the rest.
    hist_ax.set_yscale("log")
    _style(hist_ax, "training loss (cross-entropy)", "samples")
    ax.tick_params(labelbottom=False)
  weights = np.asarray(curve_weight).reshape(len(curve_loss), -1)
  for c in range(weights.shape[1]):
    ax.plot(curve_loss, weights[:, c], lw=2,
            color="black" if weights.shape[1] == 1 else f"C{c}",
            label=curve_names[c] if curve_names else "V(loss)")
  lo, hi = float(np.min(weights)), float(np.max(weights))
  pad = max(0.05, 0.1 * (hi - lo))
  ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad))
  _style(ax, "" if sample_loss is not None else
         "training loss (cross-entropy)", "weight V(loss)",
         legend=bool(curve_names))
  _titled(ax, title, context)
  return fig


def weight_distribution(weight: np.ndarray, *,
                        loss: Optional[np.ndarray] = None,
                        is_noisy: Optional[np.ndarray] = None, bins: int = 30,
                        title: str = "Sample-weight distribution",
                        context: str = "") -> Figure:
  """Histograms of the samples' weights, clean vs corrupted (or all).

  Args:
    weight: `[n]` per-sample weights.
    loss: optional `[n]` per-sample losses: their histograms go below.
    is_noisy: optional `[n]` bool; without it one histogram of all samples.
    bins: number of bins, shared by the histograms of a panel.
    title: first title line.
    context: second title line (see `caption`).
  """
  fig = Figure(figsize=(6, 4.4 if loss is None else 6.4),
               layout="constrained")
  panels = [(weight, "weight V(loss)")] + (
      [] if loss is None else [(loss, "training loss (cross-entropy)")])
  for k, (values, xlabel) in enumerate(panels):
    ax = fig.add_subplot(len(panels), 1, k + 1)
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    lo, hi = ((float(finite.min()), float(finite.max())) if finite.size
              else (0.0, 1.0))
    # Equal values everywhere (an untrained V) still need bins of some width.
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
    _histograms(ax, values, is_noisy, edges, with_mean=k == 0)
    # One legend (the first panel's) for both: less clutter at card size.
    _style(ax, xlabel, "samples", legend=k == 0)
    if k == 0:
      _titled(ax, title, context)
  return fig


def weight_variation(epochs: Sequence[float], clean: Sequence[float],
                     noisy: Sequence[float], *,
                     mean: Optional[Sequence[float]] = None,
                     xlabel: str = "epoch",
                     title: str = "Weight variation during training",
                     context: str = "") -> Figure:
  """Mean weight of clean and of corrupted samples over training (Fig. 5).

  Args:
    epochs: `[e]` epoch (or step) numbers.
    clean: `[e]` mean weight of clean-label samples (NaN where unknown).
    noisy: `[e]` mean weight of corrupted-label samples (NaN where unknown).
    mean: optional `[e]` mean weight of all samples.
    xlabel: x axis label.
    title: first title line.
    context: second title line (see `caption`).
  """
  fig = Figure(figsize=(6, 4.4), layout="constrained")
  ax = fig.add_subplot()
  marker = "o" if len(epochs) <= 40 else None
  ax.plot(epochs, clean, color=CLEAN_COLOR, marker=marker, ms=3,
          label="clean labels")
  ax.plot(epochs, noisy, color=NOISY_COLOR, marker=marker, ms=3,
          label="corrupted labels")
  if mean is not None:
    ax.plot(epochs, mean, color=ALL_COLOR, linestyle="--", label="all")
  _style(ax, xlabel, "mean weight")
  # Epochs (and steps) are counts: no 1.2, 1.4 ticks on a short run.
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  _titled(ax, title, context)
  return fig


def ablation(labels: Sequence[str], accuracies: Sequence[Sequence[float]], *,
             second: Optional[Sequence[Sequence[float]]] = None,
             names: tuple = ("best epoch", "final epoch"),
             xlabel: str = "hidden units of V",
             title: str = "Test accuracy of different MW-Net sizes",
             context: str = "") -> Figure:
  """Bars of test accuracy per configuration: the mean, and a dot per run.

  Args:
    labels: `[c]` configuration names (x axis), in display order.
    accuracies: `[c]` lists of per-run test accuracies.
    second: optional `[c]` lists of a second accuracy (e.g. final epoch),
      drawn as a second bar per configuration.
    names: legend names of the first and second accuracy.
    xlabel: x axis label.
    title: first title line.
    context: second title line (see `caption`).
  """
  fig = Figure(figsize=(max(5.0, 1.1 * len(labels) + 2), 4.4),
               layout="constrained")
  ax = fig.add_subplot()
  series = [(accuracies, names[0], "tab:green")]
  if second is not None:
    series.append((second, names[1], "tab:olive"))
  width = 0.8 / len(series)
  x = np.arange(len(labels))
  shown = []
  for s, (values, name, color) in enumerate(series):
    offset = (s - (len(series) - 1) / 2) * width
    means = [np.mean(v) if len(v) else np.nan for v in values]
    bars = ax.bar(x + offset, means, width, color=color, alpha=0.8, label=name)
    ax.bar_label(bars, fmt="%.3g", fontsize=8, padding=2)
    for i, v in enumerate(values):
      ax.scatter(np.full(len(v), x[i] + offset), v, color="black", s=8,
                 zorder=3)
      shown.extend(v)
  ax.set_xticks(x, labels)
  if shown:
    # Zoom on the differences between sizes, as the paper's figure does.
    lo, hi = min(shown), max(shown)
    pad = max(0.05 * (hi - lo), 0.01 * max(abs(hi), 1e-3))
    ax.set_ylim(max(0.0, lo - 4 * pad), hi + 3 * pad)
  _style(ax, xlabel, "test accuracy", legend=False)
  ax.grid(False)
  ax.grid(alpha=0.3, axis="y")
  ax.legend(loc="lower right", fontsize=_FONT["legend"])
  _titled(ax, title, context)
  return fig


def accuracy_curves(curves: dict, *, xlabel: str = "epoch",
                    title: str = "Test accuracy during training",
                    context: str = "") -> Figure:
  """Test accuracy per epoch, one line per method (the paper's Fig. 1 view).

  Args:
    curves: method label -> (epochs `[e]`, accuracies `[seeds, e]`, NaN
      where an epoch was not evaluated); the line is the mean over seeds, the
      band the seeds' min to max, the star each method's best mean epoch.
    xlabel: x axis label.
    title: first title line.
    context: second title line (see `caption`).
  """
  fig = Figure(figsize=(6.4, 4.4), layout="constrained")
  ax = fig.add_subplot()
  colors = {"baseline": "tab:gray", "mwn": "tab:green"}
  for i, (label, (epochs, accs)) in enumerate(curves.items()):
    epochs = np.asarray(epochs, dtype=float)
    accs = np.atleast_2d(np.asarray(accs, dtype=float))
    shown = np.isfinite(accs).all(axis=0)
    x, a = epochs[shown], accs[:, shown]
    mean = a.mean(axis=0)
    color = colors.get(label, f"C{i + 2}")
    n = a.shape[0]
    ax.plot(x, mean, color=color, marker="o", ms=3,
            label=f"{label} ({n} seed{'s' if n > 1 else ''})")
    if n > 1:
      ax.fill_between(x, a.min(axis=0), a.max(axis=0), color=color,
                      alpha=0.2, linewidth=0)
    best = int(np.argmax(mean))
    ax.plot(x[best], mean[best], marker="*", ms=12, color=color,
            linestyle="none")
  ax.xaxis.get_major_locator().set_params(integer=True)
  _style(ax, xlabel, "test accuracy")
  _titled(ax, title, context)
  return fig


# ----------------------------------------------------------------------------
# Contact sheets: images for a person to review.
# ----------------------------------------------------------------------------
def _sheet(images: Sequence[np.ndarray], captions: Sequence[str], title: str,
           context: str, columns: int) -> Figure:
  """A grid of `images` (`[h, w, C]` in [0, 1]) with a caption under each."""
  columns = max(1, min(columns, len(images)))
  rows = max(1, -(-len(images) // columns))
  fig = Figure(figsize=(1.6 * columns, 1.9 * rows + 0.6),
               layout="constrained")
  fig.suptitle(f"{title}\n{context}" if context else title,
               fontsize=_FONT["title"])
  for k, (image, text) in enumerate(zip(images, captions)):
    ax = fig.add_subplot(rows, columns, k + 1)
    image = np.asarray(image)
    grey = image.ndim == 2 or image.shape[-1] == 1
    ax.imshow(image.reshape(image.shape[:2]) if grey else image,
              cmap="gray" if grey else None, vmin=0.0, vmax=1.0,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(text, fontsize=8)
  return fig


def distrusted_sheet(images: Sequence[np.ndarray], given: Sequence[str],
                     predicted: Sequence[str], weights: Sequence[float], *,
                     columns: int = 8,
                     title: str = "Most distrusted training images",
                     context: str = "") -> Figure:
  """The lowest-weight training images with "given → predicted" under each.

  Args:
    images: `[n]` images `[h, w, C]` (or `[h, w]`) in [0, 1], most
      distrusted first.
    given: `[n]` class names of their training labels.
    predicted: `[n]` class names the classifier predicts ("" if unknown).
    weights: `[n]` their weights V(loss).
    columns: images per row.
    title: first title line.
    context: second title line (see `caption`).
  """
  captions = [f"{g} → {p}\nw={w:.3g}" if p else f"{g}\nw={w:.3g}"
              for g, p, w in zip(given, predicted, weights)]
  return _sheet(images, captions, title, context, columns)


def trusted_sheet(images: Sequence[np.ndarray], given: Sequence[str],
                  weights: Sequence[float], *, columns: int = 8,
                  title: str = "Most trusted training images of each class",
                  context: str = "") -> Figure:
  """The highest-weight images of each class, class by class: what the meta
  set agrees a class looks like, beside the distrusted sheet.

  Args:
    images: `[n]` images `[h, w, C]` (or `[h, w]`) in [0, 1].
    given: `[n]` their class names.
    weights: `[n]` their weights V(loss).
    columns: images per row.
    title: first title line.
    context: second title line (see `caption`).
  """
  captions = [f"{g}\nw={w:.3g}" for g, w in zip(given, weights)]
  return _sheet(images, captions, title, context, columns)
