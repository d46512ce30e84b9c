"""Label-noise detection: MW-Net's own per-sample signals against cleanlab.

    python -m mwn_tf.bench --task=detection \
        --gin_file=gin/fashion_mnist_uniform_60.gin --seed=0 \
        --mwn_run=RUNS/mwn/seed0 --baseline_run=RUNS/baseline/seed0 \
        --output=detection_uniform_60_seed0.json

The setting (`--gin_file` + `--gin_param`, `--seed`) rebuilds the noisy
training set its runs trained on (`mwn_tf.data.get(dataset, seed=seed)`, as
the runner does); the runs' sample_weights.npz must hold the same labels in
the same order, or the command refuses. Then:

  cleanlab     K-fold out-of-sample probabilities (`--folds`, stratified by
               the observed label): the setting's classifier, trained
               plainly (the runner's baseline step, data pipeline and
               optimiser recipe) on K-1 folds for `--fold_epochs` epochs,
               predicts softmax probabilities `[n, K]` on the held-out
               fold; `cleanlab.rank.get_label_quality_scores` (self
               confidence) ranks the labels, `cleanlab.filter.
               find_label_issues` flags some.
  mwn_weight   the MW-Net run's final V weight (low = suspect);
  mwn_loss     its final loss (high = suspect);
  baseline_loss  the baseline run's final loss;
  mwn_loss+weight, mwn_loss+cleanlab  the mean of the two signals' ranks.
  --over_training: the runs' kept checkpoints, one pass each
               (`mwn_tf.benchmark.over_training`): the loss and weight
               averaged over training, the loss at the epoch most accurate
               on the clean meta set, and each epoch's AUROC.

Each signal gets AUROC, average precision and the precision of flagging the
k = (number of corrupted labels) most suspect samples (scikit-learn's
metrics, through `mwn_tf.analysis.detection.signal_metrics`), and its cost:
training steps and wall seconds (the K fold trainings for cleanlab; the
run's own training, from its results.json, for the run's signals, which
need nothing extra).

Why `--fold_epochs` = 4 by default: a fold must stop before it memorises
the noisy labels, or its classifier has learnt to agree with them. In the
Fashion-MNIST recipe (gin/base_fashion_mnist.gin: SGD 0.1, decays after
epochs 8 and 10 of 12) the baseline runs (3 seeds each) show where that
starts: their accuracy on the noisy training labels, which a classifier
that fits only the true classes keeps below the share of clean labels,
stays below it through epoch 4 at both settings (uniform 60: 0.35-0.41
of 0.46; flip 40: 0.46-0.55 of 0.60), reaches it at epoch 6 under flip
noise and passes it at every setting after the first decay (0.60 and
0.83 at epoch 12); their best test epoch is 1-4. Four epochs is the last
of those epochs, and 4 folds of 15,000 images x 4 epochs at batch 100 are
2,400 steps, as many as one baseline run.
"""

import dataclasses
import json
import os
import time
from typing import Callable, Optional, Sequence

import numpy as np

from mwn_tf.analysis.detection import rank_average
from mwn_tf.analysis.detection import signal_metrics
from mwn_tf.benchmark import over_training as over_training_lib
from mwn_tf.errors import ConfigError

SIGNALS = ("cleanlab", "mwn_weight", "mwn_loss", "baseline_loss",
           "mwn_loss+weight", "mwn_loss+cleanlab")
_NEEDS = {"cleanlab": ("folds",), "mwn_weight": ("mwn",),
          "mwn_loss": ("mwn",), "baseline_loss": ("baseline",),
          "mwn_loss+weight": ("mwn",), "mwn_loss+cleanlab": ("mwn", "folds")}
_FOLD_STREAM = 6007  # Folded with (seed, fold) into a fold's seeds.
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class DetectionError(ConfigError):
  """Bad input to the detection benchmark: one line naming the flag or the
  binding to change; the entry point exits 2 on it."""


# ----------------------------------------------------------------------------
# The setting and its noisy training set.
# ----------------------------------------------------------------------------
def load_setting(gin_file: str, gin_params: Sequence[str], seed: int):
  """The `train_eval` settings of `gin_file` + `gin_params` at `seed`, and
  the `DataSplits` they give.

  Returns:
    (settings dict, DataSplits).

  Raises:
    DetectionError / ConfigError: the config does not parse, a setting is
      invalid, or the training split is not held in memory.
  """
  import gin  # pylint: disable=g-import-not-at-top
  import mwn_tf.models  # pylint: disable=g-import-not-at-top,unused-import
  from mwn_tf.runner import settings as settings_lib  # pylint: disable=g-import-not-at-top
  from mwn_tf.runner import train_eval  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  # As mwn_tf.main: `include 'gin/...'` resolves from the checkout too.
  if os.path.isdir(os.path.join(_REPO, "gin")):
    gin.add_config_file_search_path(_REPO)
  for source, parse in [(f"--gin_file={gin_file}",
                         lambda: gin.parse_config_file(gin_file))] + [
                             (f"--gin_param={p!r}",
                              lambda p=p: gin.parse_config(p))
                             for p in gin_params]:
    try:
      parse()
    except Exception as e:  # pylint: disable=broad-except
      # Parsing runs no user code: every exception is a config problem.
      raise DetectionError(f"{source}: {str(e).splitlines()[0]}") from e
  settings = dict(train_eval.bound_settings(), seed=int(seed))
  settings_lib.check_settings(settings)
  data = settings_lib.load_data(settings["dataset"], seed)
  if data.arrays is None:
    raise DetectionError(
        f"train_eval.dataset = {settings['dataset']!r} streams its training "
        "split from files; the K-fold trainings need one held in memory "
        "(digits, CIFAR, Fashion-MNIST, npz).")
  return settings, data


def train_table(data) -> dict:
  """The training split as `[n]` arrays sorted by `index` (the order of a
  run's sample_weights.npz): index, label, clean_label, is_noisy, known
  (clean label known), and `image` `[n, H, W, C]` raw."""
  train = data.arrays["train"]
  order = np.argsort(train["index"], kind="stable")
  table = {k: np.asarray(train[k])[order].astype(np.int64)
           for k in ("index", "label", "clean_label")}
  table["known"] = table["clean_label"] >= 0
  table["is_noisy"] = table["known"] & (table["label"] !=
                                        table["clean_label"])
  table["image"] = np.stack(data.train_images(table["index"]))
  return table


def read_run(model_dir: Optional[str], flag: str, table: dict):
  """(`Samples`, results.json dict) of a finished run, checked to hold the
  labels of `table` in its order; (None, None) when `model_dir` is None.

  Raises:
    DetectionError: no sample_weights.npz, or other labels than the
      setting's (another setting or seed).
  """
  if model_dir is None:
    return None, None
  if "://" not in model_dir and not os.path.isdir(model_dir):
    raise DetectionError(f"--{flag}={model_dir} is not a folder; give the "
                         "model_dir of a finished `python -m mwn_tf.main` "
                         "run.")
  from mwn_tf.analysis import sources  # pylint: disable=g-import-not-at-top
  from mwn_tf.analysis.detection import AnalysisError  # pylint: disable=g-import-not-at-top
  try:
    files = sources.find_run_files(model_dir)
    if not files.samples:
      raise AnalysisError(f"{model_dir} has no sample_weights.npz (written "
                          "when training ends)")
    samples = sources.read_samples(files)
    results = sources.read_results(files.results)
  except AnalysisError as e:
    raise DetectionError(f"--{flag}: {str(e).rstrip('.')}.") from e
  n = table["index"].shape[0]
  same = len(samples) == n and np.array_equal(samples.index, table["index"])
  differ = int((samples.label != table["label"]).sum()) if same else n
  if not same or differ:
    raise DetectionError(
        f"--{flag}={model_dir}: its sample_weights.npz holds other labels "
        f"than --gin_file/--gin_param/--seed rebuild ({differ} of {n} "
        f"differ, {len(samples)} samples); give that run's own setting and "
        "--seed.")
  return samples, results


# ----------------------------------------------------------------------------
# Out-of-sample probabilities: K plain trainings.
# ----------------------------------------------------------------------------
def _fold_seed(seed: int, fold: int) -> int:
  return int(np.random.SeedSequence([int(seed), _FOLD_STREAM, int(fold)])
             .generate_state(1)[0] & 0x7FFFFFFF)


def _with_train(data, table: dict, positions: np.ndarray, seed: int):
  """`data` whose training split is the `table` rows at `positions`."""
  from mwn_tf.data import splits as splits_lib  # pylint: disable=g-import-not-at-top
  source = splits_lib.ArraySource(
      table["image"][positions], table["label"][positions],
      table["clean_label"][positions], table["index"][positions])
  return dataclasses.replace(data, train_source=source, seed=seed,
                             arrays=None)


def train_fold(data, settings: dict, fold_epochs: int):
  """The setting's classifier trained plainly on `data`'s training split.

  The runner's baseline: `settings.build_model` with method "baseline",
  SGD with the recipe's rate, momentum, weight decay and batch, the epoch
  streams of `runner.epochs`; the recipe's learning-rate decays that fall
  within `fold_epochs` (a fold is the first `fold_epochs` epochs of the
  recipe's schedule).

  Returns:
    (the trained `MetaWeightModel`, its classifier steps).
  """
  import keras  # pylint: disable=g-import-not-at-top
  from mwn_tf.runner import epochs as epochs_lib  # pylint: disable=g-import-not-at-top
  from mwn_tf.runner import settings as settings_lib  # pylint: disable=g-import-not-at-top
  s = dict(settings, method="baseline")
  decay_steps = s["lr_decay_steps"]
  plan = settings_lib.plan_steps(
      data, dataset=s["dataset"], epochs=fold_epochs, train_steps=None,
      batch_size=s["batch_size"],
      lr_decay_epochs=[e for e in s["lr_decay_epochs"] if e < fold_epochs],
      lr_decay_steps=None if decay_steps is None else [
          b for b in decay_steps
          if b < fold_epochs * data.steps_per_epoch(s["batch_size"])])
  keras.utils.set_random_seed(int(data.seed))
  model = settings_lib.build_model(data, s)
  model.compile(
      optimizer=settings_lib.make_optimizer(
          "sgd", settings_lib.lr_schedule(s["learning_rate"], plan.boundaries,
                                          s["lr_decay_factor"]),
          s["momentum"], s["nesterov"]),
      jit_compile=s["jit_compile"],
      steps_per_execution=s["steps_per_execution"])
  epochs_lib.train_epochs(
      model, data, start_epoch=0, skip=0, num_epochs=plan.num_epochs,
      steps_per_epoch=plan.steps_per_epoch, total_steps=plan.total_steps,
      batch_size=s["batch_size"], meta_batch_size=s["meta_batch_size"],
      strategy=None, test_data=None, callbacks=[], verbose=0)
  return model, int(model.optimizer.iterations.numpy())


def predict_probabilities(model, data, batch_size: int) -> tuple:
  """(`[m]` index, `[m, K]` float64 softmax probabilities) of `data`'s
  training split, in inference mode."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  index, probs = [], []
  for batch in data.train_for_eval(batch_size):
    logits = model.classifier(batch["image"], training=False)
    probs.append(tf.nn.softmax(tf.cast(logits, tf.float32), -1).numpy())
    index.append(batch["index"].numpy())
  probs = np.concatenate(probs).astype(np.float64)
  return np.concatenate(index), probs / probs.sum(-1, keepdims=True)


def out_of_sample(data, settings: dict, table: dict, folds: int,
                  fold_epochs: int, seed: int, log: Callable = print):
  """K-fold out-of-sample probabilities of every training sample.

  Returns:
    (`[n, K]` probabilities in `table` order, per-fold dicts: n_train,
    n_held, steps, seconds).
  """
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  n = table["index"].shape[0]
  if not 2 <= folds <= n:
    raise DetectionError(f"--folds={folds}: needs 2 <= folds <= the {n} "
                         "training samples (or 0: no cleanlab).")
  split = model_selection.StratifiedKFold(folds, shuffle=True,
                                          random_state=int(seed))
  pred_probs = np.full((n, data.num_classes), np.nan)
  record = []
  for fold, (train_pos, held_pos) in enumerate(
      split.split(np.zeros(n), table["label"])):
    start = time.perf_counter()
    model, steps = train_fold(
        _with_train(data, table, train_pos, _fold_seed(seed, fold)),
        settings, fold_epochs)
    index, probs = predict_probabilities(
        model, _with_train(data, table, held_pos, 0),
        settings["eval_batch_size"])
    pred_probs[np.searchsorted(table["index"], index)] = probs
    record.append({"n_train": int(train_pos.size),
                   "n_held": int(held_pos.size), "steps": steps,
                   "seconds": round(time.perf_counter() - start, 3)})
    log(f"  fold {fold + 1}/{folds}: {steps} steps, "
        f"{record[-1]['seconds']:.0f}s")
  return pred_probs, record


# ----------------------------------------------------------------------------
# Signals, their scores and their cost.
# ----------------------------------------------------------------------------
def signal_scores(table: dict, pred_probs: Optional[np.ndarray], mwn,
                  baseline) -> dict:
  """name -> `[n]` suspicion (higher = more suspect) for every signal whose
  inputs are there (`SIGNALS`)."""
  have = {"folds": pred_probs is not None, "mwn": mwn is not None,
          "baseline": baseline is not None}
  out = {}
  if have["folds"]:
    from cleanlab import rank  # pylint: disable=g-import-not-at-top
    quality = rank.get_label_quality_scores(table["label"], pred_probs)
    out["cleanlab"] = -quality
  if have["mwn"]:
    out["mwn_weight"] = -mwn.weight
    out["mwn_loss"] = mwn.loss
  if have["baseline"]:
    out["baseline_loss"] = baseline.loss
  if have["mwn"]:
    out["mwn_loss+weight"] = rank_average(mwn.loss, -mwn.weight)
  if have["mwn"] and have["folds"]:
    out["mwn_loss+cleanlab"] = rank_average(mwn.loss, out["cleanlab"])
  return out


def _all_scores(table: dict, pred_probs, mwn, baseline, passes: dict):
  """(name -> `[n]` score, name -> the parts it is made of): the
  `signal_scores`, and those of each run's checkpoint `passes`
  (`over_training_lib.signals`)."""
  scores, needs = signal_scores(table, pred_probs, mwn, baseline), dict(_NEEDS)
  for key, run_passes in passes.items():
    extra = over_training_lib.signals(key, run_passes, key == "mwn")
    scores.update(extra)
    needs.update({name: (key, f"{key}_passes") for name in extra})
  return scores, needs


def _cost(needs: Sequence[str], parts: dict) -> dict:
  """Training steps and wall seconds a signal needs (`needs`: keys of
  `parts`, each {"steps", "seconds"}), all in all and beyond the runs' own
  training (the K fold trainings, the passes over kept checkpoints)."""
  total = {key: sum((parts[p][key] or 0) for p in needs)
           for key in ("steps", "seconds")}
  extra = {key: sum((parts[p][key] or 0) for p in needs
                    if p not in ("mwn", "baseline"))
           for key in ("steps", "seconds")}
  return {"steps": total["steps"], "seconds": round(total["seconds"], 3),
          "extra_steps": extra["steps"],
          "extra_seconds": round(extra["seconds"], 3), "from": list(needs)}


def _cost_parts(fold_record: list, runs: dict, passes: dict) -> dict:
  """What the signals are made of, each {"steps", "seconds"}: the K fold
  trainings, the runs, and the passes over each run's checkpoints."""
  parts = {"folds": {"steps": sum(f["steps"] for f in fold_record),
                     "seconds": sum(f["seconds"] for f in fold_record)}}
  parts.update({k: v for k, v in runs.items() if v is not None})
  parts.update({f"{k}_passes": {"steps": 0, "seconds": p["seconds"]}
                for k, p in passes.items()})
  return parts


def _run_cost(results: Optional[dict], model_dir: Optional[str]):
  if results is None:
    return None
  return {"model_dir": model_dir, "steps": results.get("steps"),
          "seconds": results.get("wall_time_s")}


def cleanlab_issues(table: dict, pred_probs: np.ndarray) -> dict:
  """`cleanlab.filter.find_label_issues` (its defaults; one process) scored
  against the known corruption."""
  from cleanlab import filter as cl_filter  # pylint: disable=g-import-not-at-top
  from sklearn import metrics as sk_metrics  # pylint: disable=g-import-not-at-top
  flagged = cl_filter.find_label_issues(table["label"], pred_probs, n_jobs=1)
  known, noisy = table["known"], table["is_noisy"]
  flagged_known = flagged[known]
  return {
      "flagged": int(flagged.sum()),
      "true_positives": int((flagged_known & noisy[known]).sum()),
      "precision": float(sk_metrics.precision_score(
          noisy[known], flagged_known, zero_division=0)),
      "recall": float(sk_metrics.recall_score(
          noisy[known], flagged_known, zero_division=0)),
  }


def evaluate(table: dict, scores: dict) -> dict:
  """name -> `signal_metrics` of each score on the samples whose clean
  label is known (ties: the lower index first)."""
  known = table["known"]
  noisy, index = table["is_noisy"][known], table["index"][known]
  return {name: signal_metrics(noisy, s[known], np.lexsort((index, -s[known])))
          for name, s in scores.items()}


# ----------------------------------------------------------------------------
# The benchmark.
# ----------------------------------------------------------------------------
def run(gin_file: str, gin_params: Sequence[str] = (), *, seed: int = 0,
        folds: int = 4, fold_epochs: int = 4,
        mwn_run: Optional[str] = None, baseline_run: Optional[str] = None,
        over_training: bool = False, log: Callable = print) -> dict:
  """Scores every detection signal of one setting and seed.

  Args:
    gin_file, gin_params: the setting (as `python -m mwn_tf.main` takes it).
    seed: `train_eval.seed` of the runs (and of the folds).
    folds: K of the K-fold (0: no cleanlab, the runs' signals only).
    fold_epochs: epochs of each fold's plain training.
    mwn_run, baseline_run: model_dirs of finished runs of this setting and
      seed (optional).
    over_training: also score the runs' kept checkpoints
      (`over_training_lib`); each run needs one per epoch.
    log: progress printer.

  Returns:
    A JSON-ready dict (see `to_markdown`); `pred_probs` `[n, K]` and
    `index` `[n]` are NumPy arrays (`write` stores them in an .npz).

  Raises:
    DetectionError / ConfigError: bad inputs, one line each.
  """
  log = log or (lambda *a, **k: None)
  if fold_epochs < 1:
    raise DetectionError(f"--fold_epochs must be >= 1, got {fold_epochs}.")
  settings, data = load_setting(gin_file, gin_params, seed)
  table = train_table(data)
  if not table["known"].any():
    raise DetectionError(f"train_eval.dataset = {settings['dataset']!r} "
                         "knows no clean label: there is nothing to score "
                         "the signals against.")
  mwn, mwn_results = read_run(mwn_run, "mwn_run", table)
  baseline, base_results = read_run(baseline_run, "baseline_run", table)
  if not folds and mwn is None and baseline is None:
    raise DetectionError("nothing to score: give --folds >= 2, --mwn_run "
                         "or --baseline_run.")
  if over_training and mwn is None and baseline is None:
    raise DetectionError("--over_training scores the runs' checkpoints: give "
                         "--mwn_run or --baseline_run.")
  passes = {key: over_training_lib.checkpoint_passes(
      model_dir, f"{key}_run", data, table, settings["eval_batch_size"], log)
            for key, model_dir in (("mwn", mwn_run),
                                   ("baseline", baseline_run))
            if over_training and model_dir is not None}
  pred_probs, fold_record = None, []
  if folds:
    pred_probs, fold_record = out_of_sample(data, settings, table, folds,
                                            fold_epochs, seed, log)
  scores, needs = _all_scores(table, pred_probs, mwn, baseline, passes)
  metrics = evaluate(table, scores)
  runs = {"mwn": _run_cost(mwn_results, mwn_run),
          "baseline": _run_cost(base_results, baseline_run)}
  parts = _cost_parts(fold_record, runs, passes)
  for name in metrics:
    metrics[name]["cost"] = _cost(needs[name], parts)
  known = table["known"]
  out = {
      "gin_file": gin_file, "gin_params": list(gin_params), "seed": int(seed),
      "dataset": settings["dataset"], "model": settings["model"],
      "num_samples": int(known.shape[0]), "num_known": int(known.sum()),
      "num_noisy": int(table["is_noisy"].sum()),
      "folds": int(folds), "fold_epochs": int(fold_epochs),
      "fold_runs": fold_record, "runs": runs, "signals": metrics,
  }
  if passes:
    out["over_training"] = {
        key: over_training_lib.curves(p, table, key == "mwn")
        for key, p in passes.items()}
  if pred_probs is not None:
    predicted = pred_probs.argmax(-1)
    out["out_of_sample_accuracy"] = {
        "given_labels": float(np.mean(predicted == table["label"])),
        "clean_labels": float(np.mean((predicted == table["clean_label"])
                                      [known]))}
    out["find_label_issues"] = cleanlab_issues(table, pred_probs)
    out["pred_probs"], out["index"] = pred_probs, table["index"]
  return out


def _cell(value, digits: int = 3) -> str:
  return "–" if value is None else f"{value:.{digits}f}"


def to_markdown(result: dict, command: str) -> str:
  """The signals as a markdown table, best AUROC first."""
  lines = [f"`{command}`", "",
           f"{result['dataset']} / {result['model']}, seed {result['seed']}:"
           f" {result['num_noisy']} of {result['num_known']} labels "
           f"corrupted; precision at k = {result['num_noisy']}. cleanlab: "
           f"{result['folds']}-fold, {result['fold_epochs']} epochs per "
           "fold.", "",
           "| signal | AUROC | AP | precision@k | training steps (extra) "
           "| wall s (extra) |", "|---|---:|---:|---:|---:|---:|"]
  ranked = sorted(result["signals"].items(),
                  key=lambda kv: -(kv[1]["auroc"] or 0.0))
  for name, m in ranked:
    c = m["cost"]
    lines.append(
        f"| {name} | {_cell(m['auroc'])} | {_cell(m['average_precision'])} "
        f"| {_cell(m['precision_at_k'])} | {c['steps']} ({c['extra_steps']}) "
        f"| {c['seconds']:.0f} ({c['extra_seconds']:.0f}) |")
  issues = result.get("find_label_issues")
  if issues:
    lines += ["", f"cleanlab.filter.find_label_issues flags "
              f"{issues['flagged']}: precision {issues['precision']:.3f}, "
              f"recall {issues['recall']:.3f}. Out-of-sample accuracy on "
              "the clean labels: "
              f"{result['out_of_sample_accuracy']['clean_labels']:.3f}."]
  for key, rows in result.get("over_training", {}).items():
    lines += ["", f"The {key} run's kept checkpoints (AUROC of each "
              "epoch's own signal):", "",
              "| epoch | meta-set accuracy | loss AUROC | weight AUROC |",
              "|---:|---:|---:|---:|"]
    lines += [f"| {r['epoch']:g} | {r['meta_accuracy']:.3f} | "
              f"{_cell(r['loss_auroc'])} | {_cell(r.get('weight_auroc'))} |"
              for r in rows]
  return "\n".join(lines) + "\n"


def write(result: dict, output: str, markdown: str) -> dict:
  """Writes `output` (JSON), its .md and, with K-fold probabilities, its
  `_pred_probs.npz` (index, label order of the run, pred_probs [n, K]);
  returns the paths."""
  stem = os.path.splitext(output)[0]
  folder = os.path.dirname(os.path.abspath(output))
  os.makedirs(folder, exist_ok=True)
  paths = {"json": output, "markdown": stem + ".md"}
  arrays = {k: result.pop(k) for k in ("pred_probs", "index") if k in result}
  if arrays:
    paths["pred_probs"] = stem + "_pred_probs.npz"
    np.savez_compressed(paths["pred_probs"], **arrays)
  with open(output, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
  with open(paths["markdown"], "w") as f:
    f.write(markdown)
  return paths
