"""Detection signals over training: a run's kept checkpoints, one pass each.

`python -m mwn_tf.bench --task=detection --over_training` scores, besides a
run's final losses and weights (its sample_weights.npz), the same signals at
every checkpoint the run kept: train it with
`--gin_param="train_eval.max_checkpoints_to_keep = N"`, N at least its
epochs, and it keeps one per epoch. From those passes come the signals the
final pass cannot give:

  <run>_loss_mean     the loss averaged over the kept epochs (high = suspect);
  <run>_weight_mean   V's weight averaged over them (MW-Net; low = suspect);
  <run>_loss@best_meta  the loss at the kept epoch whose classifier is most
                      accurate on the clean meta set: the epoch before the
                      classifier memorises the noisy labels, picked with
                      data a MW-Net user has (no test labels).

and each epoch's own AUROC (`curves`), which shows when the signals are
best. Each pass restores the classifier and V of one checkpoint (the
analysis' `sources.checkpoint_models`, under the run's own gin config) and
scores every training sample in inference mode, as the runner's per-sample
pass does.
"""

import time
from typing import Callable

import numpy as np

from mwn_tf.analysis.detection import AnalysisError
from mwn_tf.analysis.detection import signal_metrics
from mwn_tf.errors import ConfigError


def checkpoint_passes(model_dir: str, flag: str, data, table: dict,
                      batch_size: int, log: Callable) -> dict:
  """One per-sample pass per kept checkpoint of the run at `model_dir`.

  Args:
    model_dir: a finished run of the setting `data` was built from.
    flag: the command-line flag that named it, for error messages.
    data: the setting's `DataSplits` (the run's noisy training set).
    table: `detection.train_table(data)`: `[n]` arrays in index order.
    batch_size: inference batch.
    log: progress printer.

  Returns:
    `epochs` `[E]` (fractional for a checkpoint inside an epoch), `steps`
    `[E]`, `loss` and `weight` `[E, n]` in `table` order, `meta_accuracy`
    `[E]` (accuracy on the clean meta set) and `seconds` (all passes).

  Raises:
    ConfigError: fewer than 2 kept checkpoints, or a checkpoint that does
      not restore onto the run's model.
  """
  # Lazy: the analysis and the runner load TensorFlow.
  from mwn_tf.analysis import sources  # pylint: disable=g-import-not-at-top
  from mwn_tf.runner import run_dir  # pylint: disable=g-import-not-at-top
  from mwn_tf.shared import samples as samples_lib  # pylint: disable=g-import-not-at-top
  paths = run_dir.checkpoints(model_dir)
  if len(paths) < 2:
    raise ConfigError(
        f"--{flag}={model_dir} kept {len(paths)} checkpoint(s); "
        "--over_training needs one per epoch: train it with "
        "--gin_param='train_eval.max_checkpoints_to_keep = N' (N >= its "
        "epochs), or drop --over_training.")
  files = sources.find_run_files(model_dir)
  results = sources.read_results(files.results)
  config = sources.read_config(files)
  settings = sources.run_settings(results, config)
  per_epoch = float(results["steps_per_epoch"])
  start, out = time.perf_counter(), {"steps": [], "loss": [], "weight": [],
                                     "meta_accuracy": []}
  for path in paths:
    try:
      with sources.run_gin_config(config):
        models = sources.checkpoint_models(path, data, settings)
    except AnalysisError as e:
      raise ConfigError(f"--{flag}: {str(e).splitlines()[0]}") from e
    train = samples_lib.sample_pass(models, data.train_for_eval(batch_size))
    meta = samples_lib.sample_pass(models, data.meta_eval(batch_size))
    if not np.array_equal(train["index"], table["index"]):
      raise ConfigError(f"--{flag}={model_dir}: checkpoint {path} scored "
                        "other samples than the setting's training split.")
    out["steps"].append(run_dir.checkpoint_step(path))
    out["loss"].append(train["loss"])
    out["weight"].append(train["weight"])
    out["meta_accuracy"].append(float(np.mean(meta["predicted"] ==
                                              meta["label"])))
    log(f"  {flag} checkpoint step {out['steps'][-1]}: meta accuracy "
        f"{out['meta_accuracy'][-1]:.3f}")
  result = {k: np.asarray(v) for k, v in out.items()}
  result["epochs"] = result["steps"] / per_epoch
  result["seconds"] = round(time.perf_counter() - start, 3)
  return result


def signals(name: str, passes: dict, mwn: bool) -> dict:
  """`[n]` suspicion scores (higher = more suspect) from `passes`
  (`checkpoint_passes`) of the run called `name` (`mwn`, `baseline`)."""
  best = int(np.argmax(passes["meta_accuracy"]))
  out = {f"{name}_loss_mean": passes["loss"].mean(0),
         f"{name}_loss@best_meta": passes["loss"][best]}
  if mwn:
    out[f"{name}_weight_mean"] = -passes["weight"].mean(0)
  return out


def curves(passes: dict, table: dict, mwn: bool) -> list:
  """Per kept checkpoint: epoch, step, meta-set accuracy and the AUROC
  (`signal_metrics`) of its loss, and of its weight for MW-Net."""
  known = table["known"]
  noisy = table["is_noisy"][known]
  rows = []
  for e, step in enumerate(passes["steps"]):
    row = {"epoch": round(float(passes["epochs"][e]), 3), "step": int(step),
           "meta_accuracy": passes["meta_accuracy"][e]}
    parts = [("loss", passes["loss"][e])]
    if mwn:
      parts.append(("weight", -passes["weight"][e]))
    for part, score in parts:
      s = score[known]
      row[f"{part}_auroc"] = signal_metrics(
          noisy, s, np.argsort(-s, kind="stable"))["auroc"]
    rows.append(row)
  return rows
