"""The paper's figures (Shu et al. 2019, Figs. 1, 4-6) as PNG bytes.

Rendered with matplotlib's object API on an Agg canvas (no pyplot), so
importing this module never changes the user's matplotlib backend, and the
figures can go to TensorBoard (`png_summary`) or to disk.
"""

import io
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_CLEAN, _NOISY = "tab:blue", "tab:red"


def _png(fig: Figure) -> bytes:
  FigureCanvasAgg(fig)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
  return buf.getvalue()


def weighting_function(losses: np.ndarray, weights: np.ndarray,
                       title: str = "") -> bytes:
  """The learned weighting function V: loss -> weight (paper, Fig. 1/6).

  Args:
    losses: `[n]` grid of loss values, ascending.
    weights: `[n]` V(losses).
    title: e.g. "epoch 12".

  Returns:
    PNG bytes.
  """
  fig = Figure(figsize=(4.5, 3.2))
  ax = fig.add_subplot()
  ax.plot(losses, weights, color="black")
  ax.set_xlabel("loss")
  ax.set_ylabel("weight V(loss)")
  lo, hi = float(np.min(weights)), float(np.max(weights))
  pad = max(0.05, 0.1 * (hi - lo))
  ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad))
  ax.grid(alpha=0.3)
  ax.set_title(f"Weighting function {title}".strip())
  return _png(fig)


def sample_distribution(losses: np.ndarray, weights: np.ndarray,
                        is_noisy: np.ndarray, title: str = "") -> bytes:
  """Weight and loss distributions of clean vs corrupted training samples.

  Args:
    losses: `[N]` per-sample losses on the training split.
    weights: `[N]` V's weights for those losses.
    is_noisy: `[N]` bool, True where the observed label was corrupted.
    title: e.g. "epoch 40".

  Returns:
    PNG bytes: left, histogram of weights; right, histogram of losses.
  """
  is_noisy = np.asarray(is_noisy, bool)
  fig = Figure(figsize=(8.0, 3.2), layout="constrained")
  for k, (values, name) in enumerate(((weights, "weight"), (losses, "loss"))):
    ax = fig.add_subplot(1, 2, k + 1)
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    edges = np.histogram_bin_edges(finite if finite.size else [0.0, 1.0], 40)
    for mask, color, label in ((~is_noisy, _CLEAN, "clean"),
                               (is_noisy, _NOISY, "corrupted")):
      if mask.any():
        ax.hist(values[mask], bins=edges, alpha=0.6, color=color,
                label=f"{label} (n={int(mask.sum())})")
    ax.set_xlabel(name)
    ax.set_ylabel("samples")
    ax.legend(fontsize=8)
  fig.suptitle(f"Training samples {title}".strip())
  return _png(fig)


def weight_variation(epochs: Sequence[float], clean: Sequence[float],
                     noisy: Sequence[float],
                     mean: Optional[Sequence[float]] = None) -> bytes:
  """Mean weight of clean and of corrupted samples over training (Fig. 5).

  Args:
    epochs: `[T]` x values.
    clean: `[T]` mean weight of clean samples (NaN where unknown).
    noisy: `[T]` mean weight of corrupted samples (NaN where unknown).
    mean: optional `[T]` mean weight of all samples.

  Returns:
    PNG bytes.
  """
  fig = Figure(figsize=(4.5, 3.2))
  ax = fig.add_subplot()
  ax.plot(epochs, clean, color=_CLEAN, marker=".", label="clean")
  ax.plot(epochs, noisy, color=_NOISY, marker=".", label="corrupted")
  if mean is not None:
    ax.plot(epochs, mean, color="gray", linestyle="--", label="all")
  ax.set_xlabel("epoch")
  ax.set_ylabel("mean weight")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title("Weight variation")
  return _png(fig)


def png_summary(name: str, png: bytes, step: int) -> None:
  """Writes PNG bytes as a TensorBoard image to the default writer."""
  image = tf.image.decode_png(png, channels=4)[tf.newaxis]
  tf.summary.image(name, image, step=step)
