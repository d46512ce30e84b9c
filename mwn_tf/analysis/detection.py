"""Which training labels MW-Net distrusts, and how well that finds noise.

The per-sample table (`Samples`: index, label, loss, weight and, when the
corruption is known, clean_label / is_noisy), its ranking (most suspect
first, by one of `RANKINGS`: high final loss by default, low weight, or
both), the detection metrics of "suspect => corrupted label" against the
known corruption, and the .npz files these come from. NumPy, SciPy and
scikit-learn only; `mwn_tf.analyze` is the command line on top, and
`mwn_tf.analysis.report` writes these for a run.
"""

import csv
import dataclasses
import os
import zipfile
import zlib
from typing import Optional, Sequence

import numpy as np
from scipy import stats
from sklearn import metrics as sk_metrics

SAMPLE_KEYS = ("index", "label", "loss", "weight")
# The choices of the command line's flags, here (NumPy only) so that it
# defines its flags before TensorFlow is imported: where the per-sample table
# comes from (`report`), what a classifier SavedModel returns (`sources`).
SOURCES = ("auto", "samples", "exports", "checkpoint")
CLASSIFIER_OUTPUTS = ("auto", "probabilities", "logits")
# What ranks a label as suspect (`--rank_by`): the final loss under the
# run's classifier (high first), V's weight of it (low first), or the mean of
# their two ranks.
RANKINGS = ("loss", "weight", "loss+weight")
RULES = {"loss": "high loss", "weight": "low weight",
         "loss+weight": "high mean rank of loss and of 1 - weight"}
# The ranking with the best mean AUROC over the 3 seeds of the Fashion-MNIST
# scale runs at BOTH of their noise settings (gin/fashion_mnist_uniform_60.gin
# and _flip_40.gin, docs/cleaning.md "Which ranking"): loss 0.988 and
# 0.943, weight 0.890 and 0.914, loss+weight 0.939 and 0.918. The learned V
# is not monotone: it rises from loss 0 to a peak near loss 1, so the
# best-fitted (clean) samples get weights as low as the corrupted ones.
DEFAULT_RANK_BY = "loss"
TRAIN_COMMAND = "python -m mwn_tf.main --gin_file=... --model_dir=DIR"
OPTIONAL_KEYS = ("clean_label", "is_noisy", "predicted", "probability")
# `score` data files: role -> accepted array names (first present wins).
DATA_KEYS = {"image": ("image", "x"), "label": ("label", "y"),
             "index": ("index",), "clean_label": ("clean_label",),
             "is_noisy": ("is_noisy",)}


class AnalysisError(ValueError):
  """A problem with the user's files or settings; the message names the fix."""


@dataclasses.dataclass
class Samples:
  """Per-sample losses and weights of one labelled set.

  Attributes:
    index: `[n]` int64 sample ids (position in the source split).
    label: `[n]` int64 observed (possibly corrupted) labels.
    loss: `[n]` float64 cross-entropy of `label` under the classifier.
    weight: `[n]` float64 V(loss).
    clean_label: optional `[n]` int64 true labels, -1 where unknown.
    is_noisy: optional `[n]` bool, label != clean label (False if unknown).
    predicted: optional `[n]` int64 the classifier's top class.
    probability: optional `[n]` float64 its probability.
  """
  index: np.ndarray
  label: np.ndarray
  loss: np.ndarray
  weight: np.ndarray
  clean_label: Optional[np.ndarray] = None
  is_noisy: Optional[np.ndarray] = None
  predicted: Optional[np.ndarray] = None
  probability: Optional[np.ndarray] = None

  def __len__(self) -> int:
    return int(self.index.shape[0])

  @property
  def has_truth(self) -> bool:
    return self.clean_label is not None or self.is_noisy is not None

  def truth(self):
    """(`[n]` bool: clean label known, `[n]` bool: corrupted), or None.

    `clean_label` decides when present (as the data pipeline derives
    `is_noisy` from it); `is_noisy` alone marks every sample as known.
    """
    if not self.has_truth:
      return None
    if self.clean_label is not None:
      known = self.clean_label >= 0
      noisy = known & (self.label != self.clean_label)
    else:
      known = np.ones(len(self), bool)
      noisy = self.is_noisy.astype(bool)
    return known, noisy


def samples_from_arrays(arrays: dict, source: str) -> Samples:
  """Validates arrays into `Samples`.

  Args:
    arrays: name -> array with at least `SAMPLE_KEYS`, optionally
      `clean_label`, `is_noisy`, `predicted` and `probability` (runs
      written before these existed lack the last two).
    source: the file (or description) named in error messages.

  Raises:
    AnalysisError: a missing key, mismatched lengths, non-finite values or
      duplicate indices.
  """
  missing = [k for k in SAMPLE_KEYS if k not in arrays]
  if missing:
    raise AnalysisError(
        f"{source} has no array {missing[0]!r}; a sample-weights file needs "
        f"{', '.join(SAMPLE_KEYS)} (optional clean_label, is_noisy). It has "
        f"{sorted(arrays)}.")
  out = {k: np.asarray(arrays[k]) for k in SAMPLE_KEYS + OPTIONAL_KEYS
         if k in arrays}
  n = out["index"].reshape(-1).shape[0]
  for key, value in out.items():
    if value.ndim != 1 or value.shape[0] != n:
      raise AnalysisError(f"{source}: {key!r} must have shape [{n}] like "
                          f"'index', got {list(value.shape)}.")
  if n == 0:
    raise AnalysisError(f"{source} holds no samples.")
  for key in ("loss", "weight") + (("probability",) if "probability" in out
                                   else ()):
    bad = ~np.isfinite(out[key].astype(np.float64))
    if bad.any():
      raise AnalysisError(f"{source}: {int(bad.sum())} of {n} values of "
                          f"{key!r} are NaN or infinite (first at position "
                          f"{int(np.argmax(bad))}).")
  if np.unique(out["index"]).shape[0] != n:
    raise AnalysisError(f"{source}: 'index' has duplicate ids; each sample "
                        "must appear once.")
  return Samples(
      index=out["index"].astype(np.int64), label=out["label"].astype(np.int64),
      loss=out["loss"].astype(np.float64),
      weight=out["weight"].astype(np.float64),
      clean_label=(out["clean_label"].astype(np.int64)
                   if "clean_label" in out else None),
      is_noisy=out["is_noisy"].astype(bool) if "is_noisy" in out else None,
      predicted=(out["predicted"].astype(np.int64) if "predicted" in out
                 else None),
      probability=(out["probability"].astype(np.float64)
                   if "probability" in out else None))


def rank_average(*scores: np.ndarray) -> np.ndarray:
  """The mean of the ranks (1 = least suspect; ties: their mean rank) that
  each `[n]` score gives: `[n]` float64, higher = more suspect. Combines
  signals on different scales (a loss, a weight, a cleanlab quality) with
  equal say."""
  return np.mean([stats.rankdata(s) for s in scores], axis=0)


def suspicion(weight: np.ndarray, loss: np.ndarray,
              rank_by: str = DEFAULT_RANK_BY) -> np.ndarray:
  """How suspect each label is under ranking `rank_by` (`RANKINGS`):
  `[n]` float64, higher = more likely corrupted.

  Args:
    weight, loss: `[n]` arrays.
    rank_by: "loss" (high loss), "weight" (low weight) or "loss+weight"
      (`rank_average` of the two).
  """
  if rank_by not in RANKINGS:
    raise AnalysisError(f"rank_by must be one of {RANKINGS}, got "
                        f"{rank_by!r}.")
  loss = np.asarray(loss, np.float64)
  weight = np.asarray(weight, np.float64)
  if rank_by == "loss":
    return loss
  if rank_by == "weight":
    return -weight
  return rank_average(loss, -weight)


def rank_order(weight: np.ndarray, loss: np.ndarray, index: np.ndarray,
               rank_by: str = DEFAULT_RANK_BY) -> np.ndarray:
  """Positions sorted from most to least distrusted under `rank_by`.

  Most suspect first (`suspicion`); ties (a saturated V) put the lower
  weight first, then the higher loss, then the lower index, so the order is
  deterministic.

  Args:
    weight, loss, index: `[n]` arrays.
    rank_by: one of `RANKINGS`.

  Returns:
    `[n]` int positions.
  """
  score = suspicion(weight, loss, rank_by)
  return np.lexsort((index, -loss, weight, -score))


def write_ranking(samples: Samples, path: str,
                  rank_by: str = DEFAULT_RANK_BY) -> np.ndarray:
  """Writes the ranking CSV (rank 1 = most distrusted under `rank_by`) and
  returns the order.

  Columns: rank, index, label, [clean_label, is_noisy,] loss, weight.
  """
  order = rank_order(samples.weight, samples.loss, samples.index, rank_by)
  truth = samples.truth()
  header = ["rank", "index", "label"]
  if samples.clean_label is not None:
    header.append("clean_label")
  if truth is not None:
    header.append("is_noisy")
  header += ["loss", "weight"]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for rank, i in enumerate(order, start=1):
      row = [rank, int(samples.index[i]), int(samples.label[i])]
      if samples.clean_label is not None:
        row.append(int(samples.clean_label[i]))
      if truth is not None:
        row.append(int(truth[1][i]) if truth[0][i] else "")
      row += [f"{samples.loss[i]:.8g}", f"{samples.weight[i]:.8g}"]
      writer.writerow(row)
  return order


def _metric(value) -> Optional[float]:
  value = float(value)
  return value if np.isfinite(value) else None


def signal_metrics(noisy: np.ndarray, score: np.ndarray,
                   order: np.ndarray) -> dict:
  """How well one suspicion score finds the corrupted labels.

  Args:
    noisy: `[n]` bool, the label is corrupted.
    score: `[n]` float, higher = more suspect.
    order: `[n]` positions, most suspect first (the score's ranking with
      its tie-break), for the flags.

  Returns:
    `auroc`, `average_precision` and `precision_at_k`: the precision of
    flagging the k = number of corrupted labels most suspect ones (equal to
    their recall: the R-precision), with `k`; None where undefined (a group
    without both kinds of sample).
  """
  noisy = np.asarray(noisy, bool)
  k = int(noisy.sum())
  flagged = np.zeros(noisy.shape[0], bool)
  flagged[order[:k]] = True
  both = 0 < k < noisy.shape[0]
  return {
      "auroc": _metric(sk_metrics.roc_auc_score(noisy, score)) if both
               else None,
      "average_precision": _metric(sk_metrics.average_precision_score(
          noisy, score)) if both else None,
      "precision_at_k": _metric(sk_metrics.precision_score(
          noisy, flagged, zero_division=np.nan)) if k else None,
      "k": k,
  }


def _scores(noisy: np.ndarray, score: np.ndarray, weight: np.ndarray,
            loss: np.ndarray, flagged: dict) -> dict:
  """Detection metrics of one group of samples (overall or one class);
  `score`: the chosen ranking's `suspicion`."""
  both = 0 < noisy.sum() < noisy.shape[0]
  out = {
      "n": int(noisy.shape[0]), "n_noisy": int(noisy.sum()),
      "noise_rate": _metric(noisy.mean()) if noisy.shape[0] else None,
      # AUROC / AP need both kinds of sample; None when a group lacks one.
      "auroc": _metric(sk_metrics.roc_auc_score(noisy, score)) if both
               else None,
      "average_precision": _metric(
          sk_metrics.average_precision_score(noisy, score)) if both else None,
      # The ranking by loss alone ("small-loss trick"), whatever the chosen
      # ranking: V is a function of the loss, so the weight can only beat
      # it by being non-monotone.
      "auroc_loss": _metric(sk_metrics.roc_auc_score(noisy, loss)) if both
                    else None,
      "mean_weight_clean": _metric(weight[~noisy].mean()) if (
          ~noisy).any() else None,
      "mean_weight_noisy": _metric(weight[noisy].mean()) if noisy.any()
                           else None,
  }
  for name, flags_ in flagged.items():
    out[name] = {
        "flagged": int(flags_.sum()),
        "true_positives": int((flags_ & noisy).sum()),
        "precision": _metric(sk_metrics.precision_score(
            noisy, flags_, zero_division=np.nan)),
        "recall": _metric(sk_metrics.recall_score(
            noisy, flags_, zero_division=np.nan)),
    }
  return out


def detection_report(samples: Samples, nominal_rate: Optional[float] = None,
                     flag_rate: Optional[float] = None,
                     rank_by: str = DEFAULT_RANK_BY) -> Optional[dict]:
  """How well the ranking `rank_by` finds the corrupted labels.

  Only samples whose clean label is known take part. The k = round(rate·N)
  most suspect of them (in `rank_order`) are flagged as corrupted, for each
  rate: the realised noise rate (then k = the number of corrupted samples,
  so precision = recall by construction: the R-precision), the nominal rate
  of the configuration (uniform noise at r corrupts only ≈ r·(K−1)/K labels,
  because a draw may land on the true class) and `flag_rate` if given.
  Per-class results group samples by OBSERVED label (what a user cleaning
  the data can see), with the global flags; their AUROC ranks within the
  class. `overall.signals` scores every ranking of `RANKINGS`
  (`signal_metrics`), the chosen one among them.

  Args:
    samples: per-sample table with `clean_label` and/or `is_noisy`.
    nominal_rate: the configured noise rate, if known.
    flag_rate: an extra flagging rate in [0, 1].
    rank_by: the ranking the flags and `auroc` follow, one of `RANKINGS`.

  Returns:
    A JSON-ready dict (None where a metric is undefined), or None when the
    corruption is unknown.
  """
  truth = samples.truth()
  if truth is None or not truth[0].any():
    return None
  known, noisy_all = truth
  weight, loss = samples.weight[known], samples.loss[known]
  label, noisy = samples.label[known], noisy_all[known]
  index = samples.index[known]
  n = int(noisy.shape[0])
  rates = {"at_realised_rate": float(noisy.mean())}
  if nominal_rate is not None:
    rates["at_nominal_rate"] = float(nominal_rate)
  if flag_rate is not None:
    rates["at_flag_rate"] = float(flag_rate)
  score = suspicion(weight, loss, rank_by)
  order = rank_order(weight, loss, index, rank_by)
  rank = np.empty(n, np.int64)
  rank[order] = np.arange(n)
  # round(rate·N), halves up (Python's round() would go to even).
  ks = {name: int(np.floor(rate * n + 0.5)) for name, rate in rates.items()}
  flagged = {name: rank < k for name, k in ks.items()}
  report = {
      "rule": f"{RULES[rank_by]} => corrupted label; flag the k = "
              f"round(rate * N) most suspect samples",
      "rank_by": rank_by, "num_samples": len(samples), "num_known": n,
      "rates": {name: {"rate": rates[name], "k": ks[name]} for name in rates},
      "overall": _scores(noisy, score, weight, loss, flagged),
      "per_class": {},
  }
  report["overall"]["signals"] = {
      name: signal_metrics(noisy, suspicion(weight, loss, name),
                           rank_order(weight, loss, index, name))
      for name in RANKINGS}
  for c in np.unique(label):
    mask = label == c
    report["per_class"][str(int(c))] = _scores(
        noisy[mask], score[mask], weight[mask], loss[mask],
        {k: v[mask] for k, v in flagged.items()})
  return report


_RATE_TAGS = {"at_realised_rate": "real", "at_nominal_rate": "nom",
              "at_flag_rate": "flag"}


def format_report(report: dict) -> str:
  """A readable table of `detection_report`'s output."""
  rank_by = report.get("rank_by", "weight")
  lines = [f"Detection of corrupted labels ({RULES[rank_by]} => corrupted, "
           f"--rank_by={rank_by}) on {report['num_known']} samples with "
           f"known clean labels"]
  columns = [("AUROC", lambda s: s["auroc"]),
             ("AP", lambda s: s["average_precision"]),
             ("AUROC(loss)", lambda s: s["auroc_loss"]),
             ("w_clean", lambda s: s["mean_weight_clean"]),
             ("w_noisy", lambda s: s["mean_weight_noisy"])]
  for name, r in report["rates"].items():
    tag = _RATE_TAGS[name]
    lines.append(f"  {tag}: {name[3:].replace('_', ' ')} {r['rate']:.4f} -> "
                 f"flag the k = {r['k']} most suspect samples "
                 f"(P@{tag} / R@{tag}: precision / recall of those flags)")
    columns += [(f"P@{tag}", lambda s, n=name: s[n]["precision"]),
                (f"R@{tag}", lambda s, n=name: s[n]["recall"])]
  lines.append(f"{'class':>6} {'n':>6} {'noisy':>6} " + " ".join(
      f"{title:>{max(7, len(title))}}" for title, _ in columns))
  if not report["overall"]["n_noisy"]:
    lines.append("  No corrupted labels among them: nothing to detect.")
  rows = [("all", report["overall"])] + list(report["per_class"].items())
  for key, s in rows:
    cells = []
    for title, get in columns:
      value, width = get(s), max(7, len(title))
      cells.append(f"{'-':>{width}}" if value is None else
                   f"{value:>{width}.3f}")
    lines.append(f"{key:>6} {s['n']:>6} {s['n_noisy']:>6} " + " ".join(cells))
  signals = report["overall"].get("signals") or {}
  if signals:
    lines.append("Every ranking (--rank_by), all samples: AUROC / AP / "
                 "precision at k = corrupted count")
    for name, m in signals.items():
      cells = " / ".join("-" if m[key] is None else f"{m[key]:.3f}" for key in
                         ("auroc", "average_precision", "precision_at_k"))
      lines.append(f"  {name:>12}  {cells}")
  return "\n".join(lines)


def _read_npz(path: str, keys: dict, opened=None) -> tuple:
  """Reads the arrays of an .npz by role.

  Args:
    path: the file.
    keys: role -> accepted array names (the first present wins).
    opened: None, or the file's contents as a binary file object (read
      through tf.io.gfile by the caller when `path` is not local).

  Returns:
    (role -> array for the roles present, all array names in the file).

  Raises:
    AnalysisError: the file is missing, not an .npz archive, or an array in
      it cannot be read (truncated, corrupt, pickled objects).
  """
  if opened is None and not os.path.isfile(path):
    raise AnalysisError(f"Data file {path} does not exist.")
  try:
    f = np.load(path if opened is None else opened, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise AnalysisError(f"{path} is not a readable .npz file "
                        f"({type(e).__name__}: {e}).") from e
  if not hasattr(f, "files"):
    raise AnalysisError(f"{path} holds a single array, not an .npz archive "
                        "of named arrays; write it with np.savez(path, "
                        "image=..., label=...).")
  out = {}
  with f:
    names = list(f.files)
    for role, accepted in keys.items():
      name = next((k for k in accepted if k in names), None)
      if name is None:
        continue
      try:
        out[role] = f[name]
      except (OSError, ValueError, EOFError, zipfile.BadZipFile,
              zlib.error) as e:
        raise AnalysisError(f"Cannot read array {name!r} of {path}: the file "
                            f"is truncated or corrupt ({type(e).__name__}: "
                            f"{e}).") from e
  return out, names



def load_labelled_npz(path: str, image_shape: Sequence[Optional[int]],
                      num_classes: Optional[int] = None) -> dict:
  """Reads a `score` data file (keys in the module docstring) and checks it.

  Args:
    path: the .npz file.
    image_shape: `(H, W, C)` the classifier expects (None = any).
    num_classes: K, to check the label range.

  Returns:
    dict with `image` `[n, H, W, C]` float32, `label` `[n]` int64, `index`
    `[n]` int64 and, when present, `clean_label` `[n]` int64 and `is_noisy`
    `[n]` bool.

  Raises:
    AnalysisError: naming the file and the key or the expected shape.
  """
  arrays, names = _read_npz(path, DATA_KEYS)
  for role in ("image", "label"):
    if role not in arrays:
      raise AnalysisError(
          f"{path} has no array {role!r} (or {DATA_KEYS[role][1]!r}); it has "
          f"{names}. A score file needs image [n, H, W, C] and label [n] "
          "(optional index, clean_label, is_noisy).")
  images, labels = arrays["image"], arrays["label"]
  want = "[n, " + ", ".join("?" if d is None else str(d)
                            for d in image_shape) + "]"
  if images.ndim == len(image_shape) and image_shape[-1] == 1:
    images = images[..., None]  # [n, H, W] grey images.
  if images.ndim != len(image_shape) + 1 or any(
      d is not None and d != s for d, s in zip(image_shape, images.shape[1:])):
    raise AnalysisError(
        f"{path}: images have shape {list(images.shape)}, but the classifier "
        f"expects {want} (its serving signature).")
  if not np.issubdtype(images.dtype, np.number):
    raise AnalysisError(f"{path}: images must be numeric, got {images.dtype}.")
  n = images.shape[0]
  out = {"image": images.astype(np.float32)}
  for role in ("label", "index", "clean_label", "is_noisy"):
    if role not in arrays:
      continue
    value = arrays[role]
    if value.shape != (n,):
      raise AnalysisError(f"{path}: {role!r} must have shape [{n}] (one per "
                          f"image), got {list(value.shape)}.")
    kind = np.bool_ if role == "is_noisy" else np.integer
    if not (np.issubdtype(value.dtype, kind) or (
        role == "is_noisy" and np.issubdtype(value.dtype, np.integer))):
      raise AnalysisError(f"{path}: {role!r} must hold "
                          f"{'booleans' if role == 'is_noisy' else 'integers'}"
                          f", got dtype {value.dtype}.")
    out[role] = value.astype(bool if role == "is_noisy" else np.int64)
  for role, low in (("label", 0), ("clean_label", -1)):
    if role not in out:
      continue
    bad = out[role] < low
    if num_classes is not None:
      bad |= out[role] >= num_classes
    if bad.any():
      first = int(np.argmax(bad))
      raise AnalysisError(
          f"{path}: {role!r} has {int(bad.sum())} values outside [{low}, "
          f"{num_classes}) (the classifier has {num_classes} classes); the "
          f"first at position {first} is {int(out[role][first])}.")
  out.setdefault("index", np.arange(n, dtype=np.int64))
  return out


def load_samples(path: str, opened=None) -> Samples:
  """Reads a run's sample-weights .npz (`SAMPLE_KEYS` + `OPTIONAL_KEYS`);
  `opened`: see `_read_npz`."""
  keys = {k: (k,) for k in SAMPLE_KEYS + OPTIONAL_KEYS}
  arrays, _ = _read_npz(path, keys, opened)
  return samples_from_arrays(arrays, path)

