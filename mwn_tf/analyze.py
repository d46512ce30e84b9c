"""Per-sample weights as a data-cleaning tool, and the paper's figures.

MW-Net learns which training labels to trust: a sample whose loss V maps to a
low weight is one the meta set says not to learn from. This module turns a
trained run into the list of suspicious samples (lowest weight first), scores
that list against the true corruption when it is known (synthetic noise), and
draws the figures of Shu et al., NeurIPS 2019 (weighting function, weight
distribution, weight variation, MW-Net size ablation).

Command line (an entry point, like `mwn_tf.main`):

  # A run, after (or during) `python -m mwn_tf.main --model_dir=DIR ...`:
  python -m mwn_tf.analyze --model_dir=DIR [--out_dir=DIR/analysis]
      [--ablation_dirs=RUN1,RUN2,...] [--flag_rate=0.3] [--source=auto]
      [--contact_sheet_size=64] [--review_size=200] [--rank_by=loss]

  # New labelled data, with a run's two exported SavedModels:
  python -m mwn_tf.analyze score --classifier=DIR/export/classifier
      --weight_net=DIR/export/weight_net --data=FILE.npz [--out_dir=...]
      [--rank_by=loss]

What ranks a label as suspect (--rank_by): `loss` (the default: high final
loss under the run's classifier first), `weight` (low V weight first) or
`loss+weight` (the mean of the two ranks). The default had the best mean
AUROC over 3 seeds at both Fashion-MNIST noise settings of the scale runs
(docs/cleaning.md, "Which ranking"). Every output below follows it, and
detection.json scores all three.

The command line of `mwn_tf.analysis` (detection.py: the sample table, its
ranking and scores; samples.py: the per-sample pass; sources.py: a run's
files, settings and models; figures.py; report.py: the analysis itself).

What it reads from a run's model_dir (all written by `python -m mwn_tf.main`):
  sample_weights.npz  per training sample: `index`, `label`, `loss`, `weight`
                      and optionally `clean_label` (-1 where unknown) and
                      `is_noisy`; written when training ends. Without it
                      (`--source`), the same table is recomputed over the
                      training split that the run's settings and gin config
                      describe
                      (no augmentation, inference mode) either from
                      `export/classifier` + `export/weight_net`, or, during
                      training, from the newest `checkpoints/ckpt-*`.
  results.json        per-epoch `history` (weight variation curves: mean
                      training weight of clean / corrupted samples), the
                      noise rate, test accuracy, and `settings` (dataset,
                      seed, model, method, V's size; runs written before it
                      existed: `hparams` and the operative gin config).
                      TensorBoard scalars `*weight_clean` / `*weight_noisy`
                      (or a CSV with those columns) are the fallback.
  export/weight_net   V on a loss grid for the weighting-function figure
                      (else weight_curve.csv, else the samples themselves).
  operative_config.gin  the data loader's bindings, for recomputing.

The `score` data file (.npz) holds:
  image  (or `x`)   [n, H, W, C] float, preprocessed exactly as the training
                    pipeline feeds the classifier (digits: pixel / 16; npz
                    datasets: standardised), [n, H, W] when C = 1.
  label  (or `y`)   [n] int, the labels to check, in [0, K).
  index             optional [n] int ids (default: the position).
  clean_label       optional [n] int true labels (-1 where unknown): enables
                    the detection report.
  is_noisy          optional [n] bool, instead of or with `clean_label`.

Outputs (in out_dir):
  ranking.csv       rank, index, label, [clean_label, is_noisy,] loss, weight,
                    most distrusted first (by --rank_by; ties: lower
                    weight, then higher loss).
  suspects.csv      (a run) the same ranking with each sample named: its
                    source, split, index and file (a folder: the path in
                    train_dir; Clothing1M: the image key), the class names
                    given and predicted, the prediction's probability, the
                    loss and weight (`mwn_tf.analysis.suspects`).
  review.csv        (a run) the --review_size most distrusted samples with
                    an `action` column ("keep") to edit to `exclude` or
                    `relabel:<class name>`; bind the edited file as
                    folder.review_file / npz.review_file and train again
                    (`mwn_tf.data.review`).
  distrusted.png    (a run) contact sheet of the --contact_sheet_size most
                    distrusted training images, "given → predicted";
  trusted.png       and the most trusted images of each class.
  detection.json    with known corruption: AUROC and average precision of
                    "suspect (by --rank_by) => corrupted label", and
                    precision/recall when the k = round(rate * N) most
                    suspect samples are flagged, at the realised noise rate
                    (and the nominal one, or --flag_rate), overall and per
                    observed class; `overall.signals`: AUROC, AP and
                    precision at k = the corrupted count of every ranking.
  weighting_function.png, weight_distribution.png, weight_variation.png,
  ablation.png (+ ablation.json) with --ablation_dirs.
"""


import csv
import os
import sys
from typing import Sequence

from absl import app
from absl import flags
from absl import logging

from mwn_tf import console
# NumPy only: the analysis proper (report, which imports TensorFlow) is
# imported once the console is set up (`main`).
from mwn_tf.analysis.detection import AnalysisError
from mwn_tf.analysis.detection import CLASSIFIER_OUTPUTS
from mwn_tf.analysis.detection import DEFAULT_RANK_BY
from mwn_tf.analysis.detection import format_report
from mwn_tf.analysis.detection import RANKINGS
from mwn_tf.analysis.detection import RULES
from mwn_tf.analysis.detection import SOURCES
from mwn_tf.analysis.detection import TRAIN_COMMAND


def __getattr__(name: str):
  """`mwn_tf.analyze.analyze` and `.score` (the documented Python API), loaded
  on first use: importing this module for its flags loads no TensorFlow."""
  if name in ("analyze", "score"):
    from mwn_tf.analysis import report  # pylint: disable=g-import-not-at-top
    return getattr(report, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------
# Entry point.
# ----------------------------------------------------------------------------
def _existing(kind: str):
  def check(value):
    # A gs://... run is looked for later, through tf.io.gfile.
    return value is None or "://" in value or (
        os.path.isdir(value) if kind == "dir" else os.path.isfile(value))
  return check


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the command line's flags (on `fv`, so tests can use their own).

  Called only by the entry point: importing this module defines no flags, so
  it can live in one process with `mwn_tf.main` and its `--model_dir`.
  """
  flags.DEFINE_string("model_dir", None, "A training run's folder (written "
                      "by python -m mwn_tf.main).", flag_values=fv)
  flags.DEFINE_string("out_dir", None, "Output folder; default "
                      "MODEL_DIR/analysis, or DATA_scores for `score`.",
                      flag_values=fv)
  flags.DEFINE_list("ablation_dirs", [], "Comma-separated run folders that "
                    "differ in V's size (also seeds): draws ablation.png.",
                    flag_values=fv)
  flags.DEFINE_string("classifier", None, "`score`: the exported classifier "
                      "SavedModel (MODEL_DIR/export/classifier).",
                      flag_values=fv)
  flags.DEFINE_string("weight_net", None, "`score`: the exported weighting "
                      "net SavedModel (MODEL_DIR/export/weight_net).",
                      flag_values=fv)
  flags.DEFINE_string("data", None, "`score`: .npz with image (or x), label "
                      "(or y), optional index, clean_label, is_noisy.",
                      flag_values=fv)
  flags.DEFINE_float("flag_rate", None, "Also report precision/recall when "
                     "this fraction of samples is flagged.", lower_bound=0.0,
                     upper_bound=1.0, flag_values=fv)
  flags.DEFINE_integer("batch_size", 256, "Classifier batch size when "
                       "scoring.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("top", 10, "Most distrusted samples printed.",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_enum("classifier_outputs", "auto", CLASSIFIER_OUTPUTS,
                    "What the classifier SavedModel returns.", flag_values=fv)
  flags.DEFINE_bool("figures", True, "Render the PNG figures.",
                    flag_values=fv)
  flags.DEFINE_integer("contact_sheet_size", 64, "Images on the contact "
                       "sheet of the most distrusted training images "
                       "(distrusted.png; trusted.png shows about as many); "
                       "0: no contact sheets.", lower_bound=0,
                       flag_values=fv)
  flags.DEFINE_integer("review_size", 200, "Rows of review.csv, the most "
                       "distrusted samples to review; 0: every sample.",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_enum("source", "auto", SOURCES, "Per-sample losses/weights "
                    "from sample_weights.npz, recomputed from the exports, or "
                    "from the newest checkpoint (during training); auto: the "
                    "first that exists.", flag_values=fv)
  flags.DEFINE_enum("rank_by", DEFAULT_RANK_BY, RANKINGS, "What ranks a "
                    "label as suspect: loss (high final loss first), weight "
                    "(low weight first) or loss+weight (mean of the two "
                    "ranks). Every output follows it.", flag_values=fv)
  for name, kind in (("model_dir", "dir"), ("classifier", "dir"),
                     ("weight_net", "dir"), ("data", "file")):
    flags.register_validator(
        name, _existing(kind), flag_values=fv,
        message=f"--{name} must name an existing "
        f"{'folder' if kind == 'dir' else 'file'}.")
  flags.register_validator(
      "ablation_dirs", lambda ds: all(_existing("dir")(d) for d in ds),
      flag_values=fv, message="every --ablation_dirs entry must be an existing run folder.")


def _pct(value) -> str:
  return "-" if value is None else f"{value:.4f}"


def _print_top(path: str, top: int, rank_by: str) -> None:
  if top == 0:
    return
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  print(f"\nMost distrusted samples ({RULES[rank_by]} first; all in "
        f"{path}):")
  widths = [max(len(r[i]) for r in rows[:top + 1]) for i in range(len(rows[0]))]
  for row in rows[:top + 1]:
    print("  " + "  ".join(v.rjust(w) for v, w in zip(row, widths)))


def run(argv: Sequence[str], fv: flags.FlagValues = flags.FLAGS) -> int:
  """Runs the command named by `argv[1:]` with parsed flags; 0 on success."""
  commands = list(argv[1:])
  if commands not in ([], ["score"]):
    print(f"mwn_tf.analyze: error: unknown command {' '.join(commands)!r}; "
          "use no command (analyse --model_dir) or `score`.", file=sys.stderr)
    return 2
  from mwn_tf.analysis import report  # pylint: disable=g-import-not-at-top
  try:
    if commands == ["score"]:
      missing = [f"--{n}" for n in ("classifier", "weight_net", "data")
                 if fv[n].value is None]
      if missing:
        raise AnalysisError(f"`score` needs {', '.join(missing)}.")
      result = report.score(fv.classifier, fv.weight_net, fv.data, fv.out_dir,
                     fv.batch_size, fv.flag_rate, fv.figures,
                     fv.classifier_outputs, fv.rank_by)
    else:
      if fv.model_dir is None:
        raise AnalysisError(
            "--model_dir is required: the folder of a training run "
            f"(`{TRAIN_COMMAND}`); or use `score` for new data.")
      result = report.analyze(fv.model_dir, fv.out_dir, fv.ablation_dirs,
                       fv.figures, fv.flag_rate, fv.batch_size,
                       fv.classifier_outputs, fv.source,
                       fv.contact_sheet_size, fv.review_size, fv.rank_by)
  except AnalysisError as e:
    print(f"mwn_tf.analyze: error: {e}", file=sys.stderr)
    return 1
  print(f"{result['num_samples']} samples, {result['samples_source']}")
  if result["detection"] is not None:
    print(format_report(result["detection"]))
  else:
    print("Corruption unknown (no clean_label / is_noisy): ranking only.")
  _print_top(result["ranking_csv"], fv.top, fv.rank_by)
  if "ablation" in result:
    print("\nAblation (test accuracy by V's hidden units):")
    for e in result["ablation"]["runs"]:
      accs = [e[k] for k in ("best_epoch_test_accuracy",
                             "final_epoch_test_accuracy")]
      print(f"  {e['label']:>10}  best {_pct(accs[0])}  final "
            f"{_pct(accs[1])}  {e['model_dir']}")
  print("\nWrote " + ", ".join(
      [result[k] for k in ("ranking_csv", "suspects_csv", "review_csv",
                           "detection_json") if k in result] +
      list(result["figures"].values())))
  for note in result["notes"]:
    print(f"Note: {note}")
  return 0


def main(argv):
  # As `mwn_tf.main`: no TensorFlow start-up lines unless -v.
  loud = console.loud(flags.FLAGS)
  if not loud:
    # The data loaders log at INFO; this command's output is its table.
    logging.set_verbosity(logging.WARNING)
  console.setup_console(loud)
  with console.native_stderr_filtered(loud):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from mwn_tf.analysis import report  # pylint: disable=g-import-not-at-top,unused-import
    tf.config.list_physical_devices()  # Where CUDA's start-up errors come.
  console.quiet_tensorflow(tf, loud)
  return run(argv, flags.FLAGS)


if __name__ == "__main__":
  define_flags()
  app.run(main)
