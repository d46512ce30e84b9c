"""The paper's analysis figures as PNG files, for `mwn_tf.analyze`.

Shu et al., NeurIPS 2019. Each function takes NumPy arrays, writes one PNG
and returns its path:

  weighting_function   the learned loss -> weight curve V(L; Θ), above the
                       loss histograms of clean and corrupted samples.
  weight_distribution  training-sample weights, clean vs corrupted.
  weight_variation     mean weight of clean and corrupted samples over
                       training.
  ablation             test accuracy of runs that differ in V's size.

(`mwn_tf.plots` draws the runner's TensorBoard images during training; these
are the post-hoc, file-based versions, which also work without known
corruption and for several runs.) Matplotlib's object API on the Agg canvas
only: importing this never changes the user's backend or pyplot state.
"""

import os
from typing import Optional, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

CLEAN_COLOR, NOISY_COLOR, ALL_COLOR = "tab:blue", "tab:red", "tab:gray"
_DPI = 120


def _save(fig: Figure, path: str) -> str:
  FigureCanvasAgg(fig)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=_DPI)
  return path


def _groups(n: int, is_noisy: Optional[np.ndarray]):
  """(mask, colour, legend name) per group: clean/corrupted, or all."""
  if is_noisy is None:
    return [(np.ones(n, bool), ALL_COLOR, "all samples")]
  return [(~is_noisy, CLEAN_COLOR, "clean label"),
          (is_noisy, NOISY_COLOR, "corrupted label")]


def weighting_function(curve_loss: np.ndarray, curve_weight: np.ndarray,
                       path: str, *, sample_loss: Optional[np.ndarray] = None,
                       is_noisy: Optional[np.ndarray] = None, bins: int = 60,
                       title: str = "Learned weighting function") -> str:
  """The loss -> weight curve, above the samples' loss histograms.

  Args:
    curve_loss: `[p]` losses at which V was evaluated, ascending.
    curve_weight: `[p]` V's weights there.
    path: output PNG.
    sample_loss: optional `[n]` per-sample losses: a histogram below the
      curve shows where clean and corrupted samples fall on it.
    is_noisy: optional `[n]` bool, splits that histogram clean / corrupted.
    bins: histogram bins.
    title: axes title.

  Returns:
    `path`.
  """
  fig = Figure(figsize=(6, 4.2 if sample_loss is None else 5.2),
               layout="constrained")
  if sample_loss is None:
    ax = fig.add_subplot()
  else:
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1.3))
    ax = fig.add_subplot(grid[0])
    hist_ax = fig.add_subplot(grid[1], sharex=ax)
    hi = max(float(np.max(sample_loss)), float(np.max(curve_loss)))
    edges = np.linspace(0.0, hi if hi > 0 else 1.0, bins + 1)
    for mask, color, name in _groups(len(sample_loss), is_noisy):
      if mask.any():
        hist_ax.hist(sample_loss[mask], bins=edges, color=color, alpha=0.6,
                     label=f"{name} (n={int(mask.sum())})")
    hist_ax.set_xlabel("training loss (cross-entropy)")
    # Log counts: the clean samples' spike near 0 would flatten the rest.
    hist_ax.set_yscale("log")
    hist_ax.set_ylabel("samples")
    hist_ax.legend(loc="best", fontsize=8)
    ax.tick_params(labelbottom=False)
  ax.plot(curve_loss, curve_weight, color="black", lw=2, label="V(loss)")
  if sample_loss is None:
    ax.set_xlabel("training loss (cross-entropy)")
  ax.set_ylabel("weight V(loss)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  return _save(fig, path)


def weight_distribution(weight: np.ndarray, path: str, *,
                        is_noisy: Optional[np.ndarray] = None,
                        bins: int = 40,
                        title: str = "Sample-weight distribution") -> str:
  """Histograms of the samples' weights, clean vs corrupted (or all).

  Args:
    weight: `[n]` per-sample weights.
    path: output PNG.
    is_noisy: optional `[n]` bool; without it one histogram of all samples.
    bins: number of bins, shared by the histograms.
    title: axes title.

  Returns:
    `path`.
  """
  fig = Figure(figsize=(6, 4.2), layout="constrained")
  ax = fig.add_subplot()
  lo, hi = float(np.min(weight)), float(np.max(weight))
  # Equal weights everywhere (an untrained V) still need bins of some width.
  edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
  for mask, color, name in _groups(len(weight), is_noisy):
    if mask.any():
      ax.hist(weight[mask], bins=edges, color=color, alpha=0.6,
              label=f"{name} (n={int(mask.sum())}, mean "
              f"{np.mean(weight[mask]):.3f})")
  ax.set_xlabel("weight V(loss)")
  ax.set_ylabel("number of samples")
  ax.set_title(title)
  ax.legend(loc="best", fontsize=8)
  return _save(fig, path)


def weight_variation(epochs: np.ndarray, clean: np.ndarray,
                     noisy: np.ndarray, path: str, *, xlabel: str = "epoch",
                     title: str = "Weight variation during training") -> str:
  """Mean weight of clean and of corrupted training samples over training.

  Args:
    epochs: `[e]` epoch (or step) numbers.
    clean: `[e]` mean weight of clean-label samples.
    noisy: `[e]` mean weight of corrupted-label samples.
    path: output PNG.
    xlabel: x axis label.
    title: axes title.

  Returns:
    `path`.
  """
  fig = Figure(figsize=(6, 4.2), layout="constrained")
  ax = fig.add_subplot()
  marker = "o" if len(epochs) <= 40 else None
  ax.plot(epochs, clean, color=CLEAN_COLOR, marker=marker, ms=3,
          label="clean labels")
  ax.plot(epochs, noisy, color=NOISY_COLOR, marker=marker, ms=3,
          label="corrupted labels")
  ax.set_xlabel(xlabel)
  ax.set_ylabel("mean weight")
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(loc="best", fontsize=8)
  return _save(fig, path)


def ablation(labels: Sequence[str], accuracies: Sequence[Sequence[float]],
             path: str, *, second: Optional[Sequence[Sequence[float]]] = None,
             names: tuple = ("best epoch", "final epoch"),
             xlabel: str = "hidden units of V",
             title: str = "Test accuracy of different MW-Net sizes") -> str:
  """Bars of test accuracy per configuration: the mean, and a dot per run.

  Args:
    labels: `[c]` configuration names (x axis), in display order.
    accuracies: `[c]` lists of per-run test accuracies.
    path: output PNG.
    second: optional `[c]` lists of a second accuracy (e.g. final epoch),
      drawn as a second bar per configuration.
    names: legend names of the first and second accuracy.
    xlabel: x axis label.
    title: axes title.

  Returns:
    `path`.
  """
  fig = Figure(figsize=(max(5.0, 1.1 * len(labels) + 2), 4.2),
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
    ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)
    for i, v in enumerate(values):
      ax.scatter(np.full(len(v), x[i] + offset), v, color="black", s=8,
                 zorder=3)
      shown.extend(v)
  ax.set_xticks(x, labels)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("test accuracy")
  if shown:
    # Zoom on the differences between sizes, as the paper's figure does.
    lo, hi = min(shown), max(shown)
    pad = max(0.05 * (hi - lo), 0.01 * max(abs(hi), 1e-3))
    ax.set_ylim(max(0.0, lo - 4 * pad), hi + 3 * pad)
  ax.set_title(title)
  ax.grid(alpha=0.3, axis="y")
  ax.legend(loc="lower right", fontsize=8)
  return _save(fig, path)
