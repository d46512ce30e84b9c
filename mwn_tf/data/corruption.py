"""Meta split, long-tail subsampling and label corruption (pure NumPy).

Everything here acts on label arrays only, so it is shared by every in-memory
source (digits, CIFAR, .npz). The order of operations is fixed (see
`prepare`): meta set out first, then the long tail on what remains, then label
noise on the remaining training labels. Each stage draws from its own generator
`np.random.default_rng([seed, stage])`, so the same seed gives the same result
on any machine and a change in one stage never shifts another.

Corruptions follow Shu et al., "Meta-Weight-Net", NeurIPS 2019, Sec. 5:
  uniform(r):      C = r/K * J + (1 - r) * I   (may land on the true class).
  flip(r):         row y keeps 1 - r, r goes to ONE other class (seeded).
  flip2(r):        row y keeps 1 - r, r/2 to each of TWO other classes.
  hierarchical(r): r spread uniformly over the other fine classes of y's
                   superclass (CIFAR-100 coarse labels).
"""

import dataclasses
import math
from typing import Optional, Sequence

from absl import logging
import numpy as np

NOISE_TYPES = ("none", "uniform", "flip", "flip2", "hierarchical")

# Stage ids folded into the seed; fixed forever (changing one changes data).
_META_STAGE, _LONG_TAIL_STAGE, _MATRIX_STAGE, _NOISE_STAGE = 1, 2, 3, 4


def rng_for(seed: int, stage: int) -> np.random.Generator:
  """An explicit, machine-independent generator for one stage of one seed."""
  return np.random.default_rng([int(seed), int(stage)])


def validate(noise_type: str, noise_rate: float, imbalance_factor: float,
             has_superclasses: bool = False,
             dataset: str = "this dataset") -> None:
  """Checks the corruption settings before any data is loaded.

  Raises:
    ValueError: with one message naming the fix.
  """
  if noise_type not in NOISE_TYPES:
    raise ValueError(f"Unknown noise_type {noise_type!r}; choose one of "
                     f"{', '.join(NOISE_TYPES)}.")
  if not 0.0 <= float(noise_rate) <= 1.0:
    raise ValueError(f"noise_rate must be in [0, 1], got {noise_rate}.")
  if noise_type == "none" and noise_rate > 0:
    raise ValueError(f"noise_rate={noise_rate} but noise_type='none'; set "
                     "noise_type (uniform, flip, flip2, hierarchical) or "
                     "noise_rate=0.")
  if noise_type == "hierarchical" and not has_superclasses:
    raise ValueError(f"hierarchical noise needs superclasses, and {dataset} "
                     "has none; use cifar100 (coarse_label) or an .npz with a "
                     "'superclass' array, or pick uniform/flip/flip2.")
  if not 1.0 <= float(imbalance_factor) < math.inf:
    raise ValueError(f"imbalance_factor must be >= 1 (1 = balanced) and "
                     f"finite, got {imbalance_factor}.")


def transition_matrix(noise_type: str, noise_rate: float, num_classes: int,
                      rng: Optional[np.random.Generator] = None,
                      superclass: Optional[Sequence[int]] = None
                      ) -> Optional[np.ndarray]:
  """The label-corruption matrix C, C[i, j] = P(observed j | clean i).

  Args:
    noise_type: one of NOISE_TYPES.
    noise_rate: r in [0, 1].
    num_classes: K.
    rng: draws the flip targets (flip, flip2); unused otherwise.
    superclass: [K] superclass id of each class (hierarchical only).

  Returns:
    [K, K] float64 row-stochastic matrix, or None for noise_type 'none'.
  """
  validate(noise_type, noise_rate, 1.0, superclass is not None)
  k, r = int(num_classes), float(noise_rate)
  if noise_type == "none":
    return None
  if noise_type == "uniform":
    return r / k * np.ones((k, k)) + (1.0 - r) * np.eye(k)
  c = (1.0 - r) * np.eye(k)
  if noise_type in ("flip", "flip2"):
    n_targets = 1 if noise_type == "flip" else 2
    if k - 1 < n_targets:
      raise ValueError(f"{noise_type} noise needs at least {n_targets + 1} "
                       f"classes, got {k}.")
    rng = rng if rng is not None else rng_for(0, _MATRIX_STAGE)
    for i in range(k):
      others = np.array([j for j in range(k) if j != i])
      targets = rng.choice(others, size=n_targets, replace=False)
      c[i, targets] += r / n_targets
    return c
  superclass = np.asarray(superclass)
  if superclass.shape != (k,):
    raise ValueError(f"superclass must have shape [{k}], got "
                     f"{superclass.shape}.")
  for i in range(k):
    siblings = np.flatnonzero((superclass == superclass[i]) &
                              (np.arange(k) != i))
    if siblings.size == 0:
      raise ValueError(f"hierarchical noise: class {i} is alone in "
                       f"superclass {superclass[i]}; every superclass needs "
                       "at least two classes.")
    c[i, siblings] += r / siblings.size
  return c


def corrupt_labels(labels: np.ndarray, matrix: Optional[np.ndarray],
                   rng: np.random.Generator) -> np.ndarray:
  """Resamples each label from row `labels[i]` of `matrix`.

  Args:
    labels: [n] int clean labels.
    matrix: [K, K] row-stochastic, or None (labels returned unchanged).
    rng: the noise generator.

  Returns:
    [n] int32 observed labels.
  """
  labels = np.asarray(labels, dtype=np.int64)
  if matrix is None:
    return labels.astype(np.int32)
  # Inverse-CDF sampling: one uniform per example, vectorised over rows.
  cdf = np.cumsum(matrix, axis=1)
  cdf[:, -1] = 1.0  # Guard against float round-off in the last bin.
  u = rng.random(labels.shape[0])
  observed = (u[:, None] >= cdf[labels]).sum(axis=1)
  return observed.astype(np.int32)


def long_tail_counts(n_max: int, num_classes: int,
                     imbalance_factor: float) -> np.ndarray:
  """n_i = floor(n_max * (1/IF)^(i/(K-1))), i = 0..K-1 (Cui et al. 2019)."""
  k = int(num_classes)
  if k == 1:
    return np.array([int(n_max)])
  return np.array([int(np.floor(n_max * (1.0 / imbalance_factor) **
                                (i / (k - 1)))) for i in range(k)])


def split_meta(labels: np.ndarray, num_meta: int, num_classes: int,
               rng: np.random.Generator, binding: str = "num_meta"
               ) -> tuple[np.ndarray, np.ndarray]:
  """Takes a class-balanced meta set out of the source training split.

  Args:
    labels: [n] clean labels of the source training split.
    num_meta: total meta examples; a positive multiple of num_classes (the
      meta step needs examples).
    num_classes: K.
    rng: the meta generator.
    binding: the gin binding that set num_meta (e.g. "digits.num_meta"),
      for the error message.

  Returns:
    (meta, rest): sorted positions into `labels`; disjoint and covering.
  """
  k = int(num_classes)
  if num_meta < 1 or num_meta % k:
    raise ValueError(f"{binding} = {num_meta} must be a positive multiple of "
                     f"the {k} classes (the meta set is class-balanced); bind "
                     f"e.g. {binding} = {max(k, num_meta // k * k)}.")
  per_class = num_meta // k
  counts = np.bincount(labels, minlength=k)
  short = np.flatnonzero(counts < per_class)
  if short.size:
    c = int(short[0])
    raise ValueError(f"{binding} = {num_meta} asks {per_class} per class but "
                     f"class {c} has only {counts[c]} training examples; "
                     f"lower {binding} to at most {counts.min() * k}.")
  meta = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
          for c in range(k)]
  meta = np.sort(np.concatenate(meta)).astype(np.int64)
  rest = np.setdiff1d(np.arange(labels.shape[0]), meta)
  return meta, rest


def long_tail_subset(labels: np.ndarray, imbalance_factor: float,
                     num_classes: int, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Keeps n_i examples of class i, chosen at random.

  n_max is the smallest per-class count in `labels` (for CIFAR every class
  has the same count), so every class can give its n_i.

  Returns:
    (keep, counts): sorted positions into `labels`, and the [K] counts n_i.
  """
  k = int(num_classes)
  available = np.bincount(labels, minlength=k)
  counts = long_tail_counts(int(available.min()), k, imbalance_factor)
  keep = [rng.choice(np.flatnonzero(labels == c), counts[c], replace=False)
          for c in range(k)]
  return np.sort(np.concatenate(keep)).astype(np.int64), counts


@dataclasses.dataclass(frozen=True)
class Prepared:
  """Positions and labels after meta split, long tail and noise.

  Attributes:
    train_index: [n_train] int64 positions in the source training split.
    train_labels: [n_train] int32 observed (possibly corrupted) labels.
    train_clean: [n_train] int32 clean labels.
    meta_index: [n_meta] int64 positions in the source training split.
    meta_labels: [n_meta] int32 clean labels.
    matrix: [K, K] transition matrix or None.
    realised_noise_rate: fraction of train labels != clean.
    expected_noise_rate: the same fraction expected from the matrix.
  """
  train_index: np.ndarray
  train_labels: np.ndarray
  train_clean: np.ndarray
  meta_index: np.ndarray
  meta_labels: np.ndarray
  matrix: Optional[np.ndarray]
  realised_noise_rate: float
  expected_noise_rate: float


def prepare(labels: np.ndarray, num_classes: int, *, num_meta: int,
            noise_type: str = "none", noise_rate: float = 0.0,
            imbalance_factor: float = 1.0, seed: int = 0,
            superclass: Optional[Sequence[int]] = None,
            binding: str = "num_meta") -> Prepared:
  """Meta split, then long tail, then noise, on a source training split.

  Order: (1) the clean balanced meta set is removed from the source train
  split, so meta and train are disjoint by construction for every seed;
  (2) the long tail subsamples what remains (n_max = count after (1));
  (3) the remaining train labels are corrupted. The meta set is never
  corrupted and the test split is never touched.

  Args:
    labels: [n] clean labels of the source training split.
    num_classes: K.
    num_meta: size of the meta set (multiple of K).
    noise_type, noise_rate, imbalance_factor, seed: see `validate`.
    superclass: [K] superclass of each class (hierarchical noise).
    binding: the gin binding of num_meta, for the error message.

  Returns:
    A `Prepared` record.
  """
  validate(noise_type, noise_rate, imbalance_factor, superclass is not None)
  labels = np.asarray(labels, dtype=np.int64)
  meta, rest = split_meta(labels, num_meta, num_classes,
                          rng_for(seed, _META_STAGE), binding)
  if imbalance_factor > 1.0:
    keep, _ = long_tail_subset(labels[rest], imbalance_factor, num_classes,
                               rng_for(seed, _LONG_TAIL_STAGE))
    rest = rest[keep]
  clean = labels[rest].astype(np.int32)
  matrix = transition_matrix(noise_type, noise_rate, num_classes,
                             rng_for(seed, _MATRIX_STAGE), superclass)
  observed = corrupt_labels(clean, matrix, rng_for(seed, _NOISE_STAGE))
  realised = float(np.mean(observed != clean)) if clean.size else 0.0
  expected = (float(np.mean(1.0 - np.diag(matrix)[clean]))
              if matrix is not None and clean.size else 0.0)
  if matrix is not None:
    logging.info("%s noise, rate %.3f: realised rate %.4f (expected %.4f) "
                 "on %d train labels. Transition matrix:\n%s", noise_type,
                 noise_rate, realised, expected, clean.size,
                 np.array2string(matrix, precision=3, max_line_width=200,
                                 threshold=100 * 100 + 1))
  return Prepared(train_index=rest, train_labels=observed, train_clean=clean,
                  meta_index=meta, meta_labels=labels[meta].astype(np.int32),
                  matrix=matrix, realised_noise_rate=realised,
                  expected_noise_rate=expected)
