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

  # New labelled data, with a run's two exported SavedModels:
  python -m mwn_tf.analyze score --classifier=DIR/export/classifier
      --weight_net=DIR/export/weight_net --data=FILE.npz [--out_dir=...]

What it reads from a run's model_dir (all written by `python -m mwn_tf.main`,
see mwn_tf/train.py):
  sample_weights.npz  per training sample: `index`, `label`, `loss`, `weight`
                      and optionally `clean_label` (-1 where unknown) and
                      `is_noisy`; written when training ends. Without it
                      (`--source`), the same table is recomputed over the
                      training split that the operative gin config describes
                      (no augmentation, inference mode) either from
                      `export/classifier` + `export/weight_net`, or, during
                      training, from the newest `checkpoints/ckpt-*`.
  results.json        per-epoch `history` (weight variation curves: mean
                      training weight of clean / corrupted samples), the
                      noise rate, test accuracy and V's size (ablation).
                      TensorBoard scalars `*weight_clean` / `*weight_noisy`
                      (or a CSV with those columns) are the fallback.
  export/weight_net   V on a loss grid for the weighting-function figure
                      (else weight_curve.csv, else the samples themselves).
  operative_config.gin  dataset, model and V settings for recomputing.

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
                    most distrusted first (lowest weight; ties: higher loss).
  detection.json    with known corruption: AUROC and average precision of
                    "low weight => corrupted label", and precision/recall when
                    the k = round(rate * N) lowest-weight samples are flagged,
                    at the realised noise rate (and the nominal one, or
                    --flag_rate), overall and per observed class.
  weighting_function.png, weight_distribution.png, weight_variation.png,
  ablation.png (+ ablation.json) with --ablation_dirs.
"""

import ast
import csv
import dataclasses
import glob
import json
import logging as std_logging
import os
import re
import sys
from typing import Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

from mwn_tf import figures
from mwn_tf.detection import AnalysisError
from mwn_tf.detection import detection_report
from mwn_tf.detection import format_report
from mwn_tf.detection import load_labelled_npz
from mwn_tf.detection import load_samples
from mwn_tf.detection import Samples
from mwn_tf.detection import samples_from_arrays
from mwn_tf.detection import write_ranking

SAMPLES_FILE = "sample_weights.npz"
WEIGHT_CURVE_FILE = "weight_curve.csv"
RESULTS_FILE = "results.json"
CLASSIFIER_EXPORT = os.path.join("export", "classifier")
WEIGHT_NET_EXPORT = os.path.join("export", "weight_net")
TRAIN_COMMAND = "python -m mwn_tf.main --gin_file=... --model_dir=DIR"
CLASSIFIER_OUTPUTS = ("auto", "probabilities", "logits")
SOURCES = ("auto", "samples", "exports", "checkpoint")


def _write_json(obj, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=False)
    f.write("\n")
  return path


# ----------------------------------------------------------------------------
# The exported SavedModels (classifier: images -> probabilities; V: losses ->
# weights), loaded with plain TensorFlow.
# ----------------------------------------------------------------------------
class _Endpoint:
  """The single-input, single-output serving signature of a SavedModel."""

  def __init__(self, path: str, what: str, preferred_outputs: Sequence[str]):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
      where = CLASSIFIER_EXPORT if what == "classifier" else WEIGHT_NET_EXPORT
      raise AnalysisError(
          f"{path} is not a SavedModel folder (no saved_model.pb): the "
          f"{what} export is written by `{TRAIN_COMMAND}` into DIR/{where}.")
    try:
      self._loaded = tf.saved_model.load(path)
    except Exception as e:  # pylint: disable=broad-except
      raise AnalysisError(f"Cannot load the {what} SavedModel {path}: "
                          f"{type(e).__name__}: {e}") from e
    signatures = dict(self._loaded.signatures)
    if "serving_default" not in signatures:
      raise AnalysisError(f"The {what} SavedModel {path} has no "
                          f"serving_default signature (it has "
                          f"{sorted(signatures)}).")
    self.fn = signatures["serving_default"]
    inputs = self.fn.structured_input_signature[1]
    if len(inputs) != 1:
      raise AnalysisError(f"The {what} SavedModel {path} must take one input; "
                          f"its serving_default takes {sorted(inputs)}.")
    (self.input_name, self.spec), = inputs.items()
    outputs = self.fn.structured_outputs
    keys = [k for k in preferred_outputs if k in outputs] or sorted(outputs)
    if len(outputs) != 1 and not set(keys) & set(preferred_outputs):
      raise AnalysisError(f"The {what} SavedModel {path} returns "
                          f"{sorted(outputs)}; expected one output (or one "
                          f"named {' / '.join(preferred_outputs)}).")
    self.output_name = keys[0]
    self.output_spec = outputs[self.output_name]
    self.path = path

  def __call__(self, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    out = self.fn(**{self.input_name: tf.constant(x, self.spec.dtype)})
    return out[self.output_name].numpy()


class ExportedModels:
  """A run's classifier and weighting net, from their SavedModels.

  Args:
    classifier_dir: SavedModel: images `[b, H, W, C]` -> class probabilities
      (or logits) `[b, K]`.
    weight_net_dir: SavedModel: losses `[b]` or `[b, 1]` -> weights (same).
    classifier_outputs: "probabilities", "logits", or "auto" (probabilities
      when the first batch's outputs lie in [0, 1] and each row sums to 1).
  """

  def __init__(self, classifier_dir: str, weight_net_dir: str,
               classifier_outputs: str = "auto"):
    if classifier_outputs not in CLASSIFIER_OUTPUTS:
      raise AnalysisError(f"classifier_outputs must be one of "
                          f"{CLASSIFIER_OUTPUTS}, got {classifier_outputs!r}.")
    self.classifier = _Endpoint(classifier_dir, "classifier",
                                ("probabilities", "probs", "logits"))
    self.weight_net = _weight_endpoint(weight_net_dir)
    self._outputs = classifier_outputs
    shape = self.classifier.spec.shape
    if shape.rank is None or shape.rank < 2:
      raise AnalysisError(f"The classifier SavedModel {classifier_dir} takes "
                          f"input {shape}; expected images [b, H, W, C].")
    self.image_shape = tuple(shape[1:].as_list())
    self.num_classes = self.classifier.output_spec.shape[-1]

  def losses(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of `labels` `[b]` for `images` `[b, H, W, C]` -> `[b]`."""
    out = self.classifier(images).astype(np.float64)
    if self.num_classes is None:
      self.num_classes = out.shape[-1]
    if self._outputs == "auto":
      is_prob = (out.min() >= 0 and out.max() <= 1 and
                 np.allclose(out.sum(-1), 1.0, atol=1e-3))
      self._outputs = "probabilities" if is_prob else "logits"
    picked = out[np.arange(out.shape[0]), labels]
    if self._outputs == "probabilities":
      # The float32 floor keeps a confidently wrong sample finite (≤ 87.3).
      return -np.log(np.maximum(picked, np.finfo(np.float32).tiny))
    log_z = np.logaddexp.reduce(out, axis=-1)
    return log_z - picked

  def weights(self, losses: np.ndarray) -> np.ndarray:
    """V's weights for `[b]` losses -> `[b]`."""
    return weigh(self.weight_net, losses)


def _weight_endpoint(path: str) -> _Endpoint:
  return _Endpoint(path, "weighting net", ("weights", "weight"))


def weigh(weight_net: _Endpoint, losses: np.ndarray) -> np.ndarray:
  """V's weights for `[b]` losses -> `[b]`, fed as `[b, 1]` if V's
  signature has rank 2, else as `[b]`."""
  rank = weight_net.spec.shape.rank
  x = np.asarray(losses, np.float32).reshape((-1, 1) if rank == 2 else (-1,))
  return weight_net(x).reshape(-1).astype(np.float64)


def weight_curve(weight_net: _Endpoint, max_loss: float, points: int = 400):
  """V on the loss grid [0, max_loss]: (`[p]` losses, `[p]` weights)."""
  grid = np.linspace(0.0, max_loss, points)
  return grid, weigh(weight_net, grid)


def _batches(n: int, batch_size: int):
  for start in range(0, n, batch_size):
    yield slice(start, min(n, start + batch_size))


def score_arrays(models: ExportedModels, images: np.ndarray,
                 labels: np.ndarray, batch_size: int = 256) -> tuple:
  """(`[n]` losses, `[n]` weights) of labelled images, batch by batch."""
  losses = np.concatenate([models.losses(images[s], labels[s])
                           for s in _batches(len(labels), batch_size)])
  return losses, models.weights(losses)


# ----------------------------------------------------------------------------
# A run's files.
# ----------------------------------------------------------------------------
@dataclasses.dataclass
class RunFiles:
  """What `find_run_files` found in a model_dir (None = absent)."""
  model_dir: str
  samples: Optional[str] = None
  weight_curve: Optional[str] = None
  results: Optional[str] = None
  operative_config: Optional[str] = None
  classifier_export: Optional[str] = None
  weight_net_export: Optional[str] = None
  checkpoint: Optional[str] = None
  event_dirs: tuple = ()
  history_csvs: tuple = ()


def find_run_files(model_dir: str) -> RunFiles:
  """Locates a run's outputs where `mwn_tf.train` writes them.

  Only fixed places are searched (no recursive glob), so a folder that holds
  several runs is never mistaken for one of them.
  """
  if not os.path.isdir(model_dir):
    raise AnalysisError(f"--model_dir {model_dir} is not a directory; point "
                        f"it at a run's folder, as written by "
                        f"`{TRAIN_COMMAND}`.")

  def file(*parts):
    path = os.path.join(model_dir, *parts)
    return path if os.path.isfile(path) else None

  def savedmodel(relative):
    return (os.path.join(model_dir, relative)
            if file(relative, "saved_model.pb") else None)

  files = RunFiles(
      model_dir=model_dir, samples=file(SAMPLES_FILE),
      weight_curve=file(WEIGHT_CURVE_FILE), results=file(RESULTS_FILE),
      operative_config=file("operative_config.gin"),
      classifier_export=savedmodel(CLASSIFIER_EXPORT),
      weight_net_export=savedmodel(WEIGHT_NET_EXPORT))
  if glob.glob(os.path.join(model_dir, "checkpoints", "ckpt-*.index")):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    files.checkpoint = tf.train.latest_checkpoint(
        os.path.join(model_dir, "checkpoints"))
  # The runner's writer logs into model_dir; Keras' TensorBoard callback
  # into model_dir/train and model_dir/validation.
  files.event_dirs = tuple(sorted({
      os.path.dirname(p) for pattern in ("events.out.tfevents.*",
                                         "*/events.out.tfevents.*")
      for p in glob.glob(os.path.join(model_dir, pattern))}))
  files.history_csvs = tuple(sorted(
      p for p in glob.glob(os.path.join(model_dir, "*.csv"))
      if os.path.basename(p) != WEIGHT_CURVE_FILE))
  return files


def _read_json(path: Optional[str]) -> dict:
  if not path:
    return {}
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise AnalysisError(f"Cannot read {path} as JSON ({e}).") from e


def _find_key(obj, key: str):
  """The first value of `key` anywhere in nested dicts/lists, else None."""
  if isinstance(obj, dict):
    if key in obj:
      return obj[key]
    obj = list(obj.values())
  if isinstance(obj, list):
    for item in obj:
      found = _find_key(item, key)
      if found is not None:
        return found
  return None


def gin_binding(config_text: str, name: str):
  """The value bound to `...name` (e.g. `WeightNet.hidden_units`) in a gin
  config, as a Python literal; None when unbound."""
  pattern = re.compile(r"^\s*(?:[\w.]+[./])?" + re.escape(name) +
                       r"\s*=\s*(.+?)\s*$", re.M)
  match = pattern.search(config_text)
  if not match:
    return None
  try:
    return ast.literal_eval(match.group(1))
  except (ValueError, SyntaxError):
    return match.group(1)


def _hidden_units(results: dict, config_text: str) -> tuple:
  """V's hidden widths: results.json (`weight_net_hidden_units`, "50,50" in
  the runner's hparams), else the gin config, else WeightNet's default."""
  units = None
  for found in (_find_key(results, "weight_net_hidden_units"),
                gin_binding(config_text, "weight_net_hidden_units"),
                gin_binding(config_text, "WeightNet.hidden_units")):
    if found is not None:
      units = found
      break
  if units is None:
    import inspect  # pylint: disable=g-import-not-at-top
    from mwn_tf import weight_net  # pylint: disable=g-import-not-at-top
    units = inspect.signature(weight_net.WeightNet.__init__).parameters[
        "hidden_units"].default
  if isinstance(units, str):
    units = [u for u in re.split(r"[(),\s]+", units) if u]
  return tuple(int(u) for u in (units if isinstance(units, (list, tuple))
                                else (units,)))


class _CheckpointModels:
  """The classifier and V restored from a run's newest checkpoint.

  Rebuilt as `mwn_tf.train.train_eval` builds them (model and V's size from
  results.json / the operative config), and restored from the same
  `tf.train.Checkpoint(classifier=[variables], weight_net=[variables])`
  layout; the checkpoint's optimizer and run-state entries are ignored.
  This works while the run is still training.
  """

  def __init__(self, path: str, data, results: dict, text: str):
    # pylint: disable=g-import-not-at-top
    import tensorflow as tf
    import mwn_tf.models
    from mwn_tf.weight_net import WeightNet
    from mwn_tf.meta_model import per_sample_loss
    self._per_sample_loss = per_sample_loss
    model = _find_key(results, "model") or gin_binding(text,
                                                       "train_eval.model")
    self.method = _find_key(results, "method") or gin_binding(
        text, "train_eval.method") or "mwn"
    try:
      self.classifier = mwn_tf.models.get(model, data.num_classes,
                                          data.image_shape)
      self.weight_net = WeightNet(hidden_units=_hidden_units(results, text),
                                  dtype=self.classifier.dtype_policy)
      checkpoint = tf.train.Checkpoint(
          classifier=list(self.classifier.variables),
          weight_net=list(self.weight_net.variables))
      checkpoint.restore(path).expect_partial(
      ).assert_existing_objects_matched()
    except Exception as e:  # pylint: disable=broad-except
      raise AnalysisError(
          f"Cannot restore the classifier {model!r} and V from checkpoint "
          f"{path} with the settings of the run's operative config: "
          f"{type(e).__name__}: {str(e).splitlines()[0]}") from e

  def losses(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    logits = self.classifier(images, training=False)
    return np.asarray(self._per_sample_loss(labels, logits), np.float64)

  def weights(self, losses: np.ndarray) -> np.ndarray:
    if self.method == "baseline":  # Its training weighs every sample 1.
      return np.ones_like(losses)
    return np.asarray(self.weight_net(np.asarray(losses, np.float32)[:, None]),
                      np.float64).reshape(-1)


def recompute_samples(files: RunFiles, source: str = "exports",
                      batch_size: int = 256,
                      classifier_outputs: str = "auto") -> tuple:
  """Per-sample losses and weights of a run's training split, recomputed.

  The split is rebuilt as the runner built it, `mwn_tf.data.get(dataset,
  seed=seed)` with the loader bindings of the run's operative gin config
  (dataset and seed from results.json, else `train_eval.dataset` / `.seed`),
  and read with `train_for_eval` (no augmentation); the classifier runs in
  inference mode. Clears the global gin config before and after.

  Args:
    files: the run's files.
    source: "exports" (export/classifier + export/weight_net, written at the
      end) or "checkpoint" (the newest checkpoint; works during training).
    batch_size: inference batch.
    classifier_outputs: see `ExportedModels`.

  Returns:
    (`Samples`, a description of where they came from).

  Raises:
    AnalysisError: a needed file is missing, or the config does not rebuild
      the data and models.
  """
  need = {"the operative gin config (operative_config.gin, written after "
          "the first step)": files.operative_config}
  if source == "exports":
    need["the exported classifier (export/classifier)"] = (
        files.classifier_export)
    need["the exported weighting net (export/weight_net)"] = (
        files.weight_net_export)
  else:
    need["a checkpoint (checkpoints/ckpt-*)"] = files.checkpoint
  missing = [k for k, v in need.items() if not v]
  if missing:
    raise AnalysisError(
        f"{files.model_dir} has no {SAMPLES_FILE}, and cannot recompute it "
        f"from {source}: "
        f"{'; '.join(m + ' is missing' for m in missing)}. `{TRAIN_COMMAND}` "
        f"writes {SAMPLES_FILE} and the exports when training ends, and "
        "checkpoints during training; or score data directly with `python "
        "-m mwn_tf.analyze score`.")
  import gin  # pylint: disable=g-import-not-at-top
  import mwn_tf.data  # pylint: disable=g-import-not-at-top
  with open(files.operative_config) as f:
    text = f.read()
  results = _read_json(files.results)
  name = _find_key(results, "dataset") or gin_binding(text,
                                                      "train_eval.dataset")
  if not isinstance(name, str):
    raise AnalysisError(f"Neither {files.operative_config} "
                        "(train_eval.dataset) nor results.json names the "
                        "dataset: cannot tell which data the run used.")
  # The runner's seed overrides the loader's own seed binding.
  seed = results.get("seed", gin_binding(text, "train_eval.seed")) or 0
  gin.clear_config()
  try:
    # The runner's own configurables (train_eval) are not imported: skip.
    gin.parse_config(text, skip_unknown=True)
    data = mwn_tf.data.get(name, seed=int(seed))
    if source == "exports":
      models = ExportedModels(files.classifier_export,
                              files.weight_net_export, classifier_outputs)
    else:
      models = _CheckpointModels(files.checkpoint, data, results, text)
  except AnalysisError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise AnalysisError(f"Cannot rebuild dataset {name!r} from "
                        f"{files.operative_config}: {type(e).__name__}: "
                        f"{str(e).splitlines()[0]}") from e
  finally:
    gin.clear_config()
  parts = {k: [] for k in ("index", "label", "clean_label", "loss")}
  for batch in data.train_for_eval(batch_size):
    labels = batch["label"].numpy().astype(np.int64)
    parts["loss"].append(models.losses(batch["image"].numpy(), labels))
    for key in ("index", "label", "clean_label"):
      parts[key].append(batch[key].numpy())
  arrays = {k: np.concatenate(v) for k, v in parts.items()}
  arrays["weight"] = models.weights(arrays["loss"])
  where = (files.checkpoint if source == "checkpoint" else
           f"{files.classifier_export} + {files.weight_net_export}")
  return samples_from_arrays(arrays, f"recomputed from {where}"), where


# ----------------------------------------------------------------------------
# Per-epoch records (weight variation) and ablation runs.
# ----------------------------------------------------------------------------
def _event_series(event_dir: str) -> dict:
  """tag -> {step: value} of every scalar in one folder's event files."""
  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import event_accumulator as ea
  import tensorflow as tf
  # Its INFO lines ("No path found after ...") are noise on our stdout.
  std_logging.getLogger("tensorboard").setLevel(std_logging.WARNING)
  acc = ea.EventAccumulator(event_dir, size_guidance={ea.TENSORS: 0,
                                                      ea.SCALARS: 0})
  acc.Reload()
  tags = acc.Tags()
  series = {}
  for tag in tags.get(ea.SCALARS, []):
    series[tag] = {e.step: float(e.value) for e in acc.Scalars(tag)}
  for tag in tags.get(ea.TENSORS, []):
    values = {}
    for e in acc.Tensors(tag):
      value = tf.make_ndarray(e.tensor_proto)
      if value.size == 1 and np.issubdtype(value.dtype, np.number):
        values[e.step] = float(value.reshape(()))
    if values:
      series[tag] = values
  return series


def read_weight_variation(files: RunFiles):
  """Mean weight of clean / corrupted samples over training.

  From, in this order: the per-epoch `history` of results.json (records
  with `epoch` and `train.weight_clean` / `train.weight_noisy`, the training
  steps' running means over the epoch); TensorBoard scalars whose tags end in
  `weight_clean` / `weight_noisy` (x = the summary step); a CSV history with
  those columns.

  Returns:
    (`[e]` x values, `[e]` clean, `[e]` noisy, x label, source) or None.
  """
  history = _find_key(_read_json(files.results), "history") or []
  rows = [(h["epoch"], h["train"]["weight_clean"], h["train"]["weight_noisy"])
          for h in history if isinstance(h, dict) and "epoch" in h
          and isinstance(h.get("train"), dict)
          and h["train"].get("weight_clean") is not None
          and h["train"].get("weight_noisy") is not None]
  if rows:
    epochs, clean, noisy = (np.array(c, np.float64) for c in zip(*rows))
    return (epochs, clean, noisy, "epoch",
            f"{os.path.relpath(files.results, files.model_dir)} history")
  candidates = []
  for d in files.event_dirs:
    series = _event_series(d)
    for tag, clean in series.items():
      if not tag.endswith("weight_clean"):
        continue
      noisy = series.get(tag[:-len("weight_clean")] + "weight_noisy")
      steps = sorted(set(clean) & set(noisy or {}))
      if steps:
        where = os.path.join(os.path.relpath(d, files.model_dir), tag)
        candidates.append(("batch" in tag, "train" not in where, where,
                           steps, clean, noisy))
  if candidates:
    *_, where, steps, clean, noisy = min(candidates, key=lambda c: c[:3])
    return (np.array(steps), np.array([clean[s] for s in steps]),
            np.array([noisy[s] for s in steps]), "step", f"TensorBoard {where}")
  for path in files.history_csvs:
    with open(path, newline="") as f:
      rows = list(csv.DictReader(f))
    if rows and {"weight_clean", "weight_noisy"} <= set(rows[0]):
      epochs = [float(r.get("epoch", i)) for i, r in enumerate(rows)]
      return (np.array(epochs), np.array([float(r["weight_clean"])
                                          for r in rows]),
              np.array([float(r["weight_noisy"]) for r in rows]), "epoch",
              path)
  return None


def describe_run(model_dir: str) -> dict:
  """One ablation entry: V's size, method and test accuracy of a run.

  Hidden units come from results.json (`weight_net_hidden_units`, as the
  runner's hparams record it) or the operative gin config
  (`train_eval.weight_net_hidden_units` or `WeightNet.hidden_units`; V's
  default when unbound).
  """
  files = find_run_files(model_dir)
  if not files.results:
    raise AnalysisError(f"Ablation run {model_dir} has no {RESULTS_FILE}; "
                        f"`{TRAIN_COMMAND}` writes it when training ends.")
  results = _read_json(files.results)
  text = ""
  if files.operative_config:
    with open(files.operative_config) as f:
      text = f.read()
  units = _hidden_units(results, text)
  method = _find_key(results, "method") or gin_binding(
      text, "train_eval.method") or "mwn"
  entry = {"model_dir": model_dir, "method": method,
           "hidden_units": list(units),
           "label": "baseline" if method == "baseline" else "-".join(
               str(u) for u in units)}
  for key in ("best_epoch_test_accuracy", "final_epoch_test_accuracy"):
    value = _find_key(results, key)
    entry[key] = None if value is None else float(value)
  if entry["best_epoch_test_accuracy"] is None and entry[
      "final_epoch_test_accuracy"] is None:
    raise AnalysisError(f"{files.results} has no best_epoch_test_accuracy "
                        "or final_epoch_test_accuracy.")
  return entry


def ablation_figure(model_dirs: Sequence[str], out_dir: str) -> dict:
  """The MW-Net size figure over several runs (grouped by V's size; runs of
  one size, e.g. seeds, are averaged). Writes ablation.png, ablation.json."""
  entries = [describe_run(d) for d in model_dirs]
  groups = {}
  for e in entries:
    groups.setdefault(e["label"], []).append(e)
  order = sorted(groups, key=lambda g: (
      groups[g][0]["method"] != "baseline", len(groups[g][0]["hidden_units"]),
      groups[g][0]["hidden_units"]))

  def values(key):
    return [[e[key] for e in groups[g] if e[key] is not None] for g in order]

  path = figures.ablation(order, values("best_epoch_test_accuracy"),
                          os.path.join(out_dir, "ablation.png"),
                          second=values("final_epoch_test_accuracy"))
  _write_json(entries, os.path.join(out_dir, "ablation.json"))
  return {"figure": path, "runs": entries}


# ----------------------------------------------------------------------------
# The two commands.
# ----------------------------------------------------------------------------
def _render_samples(samples: Samples, out_dir: str, curve) -> dict:
  truth = samples.truth()
  noisy = None if truth is None else truth[1]
  if curve is None:
    # Per-sample weights computed with the final V lie on its curve.
    order = np.argsort(samples.loss, kind="stable")
    curve = (samples.loss[order], samples.weight[order])
  return {
      "weighting_function": figures.weighting_function(
          curve[0], curve[1], os.path.join(out_dir, "weighting_function.png"),
          sample_loss=samples.loss, is_noisy=noisy),
      "weight_distribution": figures.weight_distribution(
          samples.weight, os.path.join(out_dir, "weight_distribution.png"),
          is_noisy=noisy),
  }


def _finish(samples: Samples, out_dir: str, nominal_rate, flag_rate,
            result: dict) -> dict:
  result["ranking_csv"] = os.path.join(out_dir, "ranking.csv")
  write_ranking(samples, result["ranking_csv"])
  report = detection_report(samples, nominal_rate, flag_rate)
  result["detection"] = report
  if report is not None:
    result["detection_json"] = _write_json(
        report, os.path.join(out_dir, "detection.json"))
  return result


def analyze(model_dir: str, out_dir: Optional[str] = None,
            ablation_dirs: Sequence[str] = (), make_figures: bool = True,
            flag_rate: Optional[float] = None, batch_size: int = 256,
            classifier_outputs: str = "auto", source: str = "auto") -> dict:
  """Ranks a run's training samples by distrust and scores the ranking.

  Args:
    model_dir: the run's folder (see the module docstring for its files).
    out_dir: where to write; defaults to `model_dir/analysis`.
    ablation_dirs: runs that differ in V's size, for ablation.png.
    make_figures: render the PNG figures.
    flag_rate: an extra rate at which to flag samples, in [0, 1].
    batch_size: batch for recomputing samples.
    classifier_outputs: see `ExportedModels`.
    source: where per-sample losses and weights come from: "samples"
      (sample_weights.npz), "exports" or "checkpoint" (recomputed, see
      `recompute_samples`), or "auto": the first of these that exists.

  Returns:
    dict: `samples_source`, `num_samples`, `ranking_csv`, `detection`
    (`detection_report` or None), `detection_json`, `figures` (name -> PNG
    path), `notes` (what could not be produced and why), `ablation`.

  Raises:
    AnalysisError: missing or malformed inputs, naming the file.
  """
  if source not in SOURCES:
    raise AnalysisError(f"source must be one of {SOURCES}, got {source!r}.")
  files = find_run_files(model_dir)
  out_dir = out_dir or os.path.join(model_dir, "analysis")
  if source == "auto":
    source = ("samples" if files.samples else
              "exports" if files.classifier_export and files.weight_net_export
              else "checkpoint")
  if source == "samples":
    if not files.samples:
      raise AnalysisError(f"{model_dir} has no {SAMPLES_FILE}: "
                          f"`{TRAIN_COMMAND}` writes it when training ends "
                          "(or use --source=checkpoint during training).")
    samples, where = load_samples(files.samples), f"read from {files.samples}"
  else:
    samples, where = recompute_samples(files, source, batch_size,
                                       classifier_outputs)
    where = f"recomputed from {where}"
  results = _read_json(files.results)
  nominal = _find_key(results, "noise_rate")
  truth = samples.truth()
  # None too when no sample has a clean label (an own image folder).
  realised = (None if truth is None or not truth[0].any()
              else float(truth[1][truth[0]].mean()))
  if nominal is not None and realised is not None and abs(
      float(nominal) - realised) < 1e-9:
    nominal = None  # Same as the realised rate: nothing new to report.
  result = {"model_dir": model_dir, "out_dir": out_dir,
            "samples_source": where, "num_samples": len(samples),
            "figures": {}, "notes": []}
  if realised is not None and results:
    recorded = _find_key(results, "realised_noise_rate")
    if recorded is not None and abs(float(recorded) - realised) > 1e-6:
      result["notes"].append(
          f"{files.results} records realised_noise_rate {recorded}, but the "
          f"samples give {realised:.6f}: they cover a different set.")
  _finish(samples, out_dir, nominal, flag_rate, result)
  if make_figures:
    # V's export covers every sample's loss; the runner's weight_curve.csv
    # stops at its curve_max_loss.
    curve = None
    if files.weight_net_export:
      curve = weight_curve(_weight_endpoint(files.weight_net_export),
                           1.05 * float(samples.loss.max()))
    elif files.weight_curve:
      curve = _read_curve(files.weight_curve)
    result["figures"].update(_render_samples(samples, out_dir, curve))
    variation = read_weight_variation(files)
    if variation is None:
      result["notes"].append(
          "weight_variation.png not drawn: no per-epoch `weight_clean` / "
          f"`weight_noisy` in {RESULTS_FILE}'s history, TensorBoard events "
          f"or a CSV in {model_dir} (MW-Net runs log them when the data "
          "carries is_noisy; the baseline has no V).")
    else:
      x, clean, noisy, xlabel, where = variation
      result["figures"]["weight_variation"] = figures.weight_variation(
          x, clean, noisy, os.path.join(out_dir, "weight_variation.png"),
          xlabel=xlabel, title=f"Weight variation during training\n({where})")
  if ablation_dirs:
    result["ablation"] = ablation_figure(ablation_dirs, out_dir)
    result["figures"]["ablation"] = result["ablation"]["figure"]
  return result


def _read_curve(path: str):
  """(`[p]` loss, `[p]` weight) from a `loss,weight` CSV, sorted by loss."""
  try:
    with open(path, newline="") as f:
      rows = list(csv.DictReader(f))
    loss = np.array([float(r["loss"]) for r in rows])
    weight = np.array([float(r["weight"]) for r in rows])
  except (OSError, KeyError, TypeError, ValueError) as e:
    raise AnalysisError(f"{path} must be a CSV with columns loss,weight "
                        f"({type(e).__name__}: {e}).") from e
  if loss.size == 0:
    raise AnalysisError(f"{path} has no rows.")
  order = np.argsort(loss)
  return loss[order], weight[order]


def score(classifier_dir: str, weight_net_dir: str, data_path: str,
          out_dir: Optional[str] = None, batch_size: int = 256,
          flag_rate: Optional[float] = None, make_figures: bool = True,
          classifier_outputs: str = "auto") -> dict:
  """Scores new labelled data with a run's exports: loss -> weight -> rank.

  Args:
    classifier_dir: the exported classifier SavedModel.
    weight_net_dir: the exported weighting-net SavedModel.
    data_path: .npz with the keys of the module docstring.
    out_dir: where to write; defaults to `<data file without .npz>_scores`.
    batch_size: classifier batch size.
    flag_rate: an extra rate at which to flag samples, in [0, 1].
    make_figures: render weighting_function.png and weight_distribution.png.
    classifier_outputs: see `ExportedModels`.

  Returns:
    dict like `analyze`'s (`ranking_csv`, `detection`, `figures`, ...).
  """
  models = ExportedModels(classifier_dir, weight_net_dir, classifier_outputs)
  data = load_labelled_npz(data_path, models.image_shape, models.num_classes)
  out_dir = out_dir or os.path.splitext(data_path)[0] + "_scores"
  losses, weights = score_arrays(models, data["image"], data["label"],
                                 batch_size)
  samples = samples_from_arrays(
      {"index": data["index"], "label": data["label"], "loss": losses,
       "weight": weights, **{k: data[k] for k in ("clean_label", "is_noisy")
                             if k in data}}, data_path)
  result = {"data": data_path, "out_dir": out_dir,
            "samples_source": f"scored from {data_path}",
            "num_samples": len(samples), "figures": {}, "notes": []}
  _finish(samples, out_dir, None, flag_rate, result)
  if make_figures:
    curve = weight_curve(models.weight_net, 1.05 * float(samples.loss.max()))
    result["figures"].update(_render_samples(samples, out_dir, curve))
  return result


# ----------------------------------------------------------------------------
# Entry point.
# ----------------------------------------------------------------------------
def _existing(kind: str):
  def check(value):
    return value is None or (os.path.isdir(value) if kind == "dir"
                             else os.path.isfile(value))
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
  flags.DEFINE_enum("source", "auto", SOURCES, "Per-sample losses/weights "
                    "from sample_weights.npz, recomputed from the exports, or "
                    "from the newest checkpoint (during training); auto: the "
                    "first that exists.", flag_values=fv)
  for name, kind in (("model_dir", "dir"), ("classifier", "dir"),
                     ("weight_net", "dir"), ("data", "file")):
    flags.register_validator(
        name, _existing(kind), flag_values=fv,
        message=f"--{name} must name an existing "
        f"{'folder' if kind == 'dir' else 'file'}.")
  flags.register_validator(
      "ablation_dirs", lambda ds: all(os.path.isdir(d) for d in ds),
      flag_values=fv, message="every --ablation_dirs entry must be an existing run folder.")


def _pct(value) -> str:
  return "-" if value is None else f"{value:.4f}"


def _print_top(path: str, top: int) -> None:
  if top == 0:
    return
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  print(f"\nMost distrusted samples (lowest weight first; all in {path}):")
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
  try:
    if commands == ["score"]:
      missing = [f"--{n}" for n in ("classifier", "weight_net", "data")
                 if fv[n].value is None]
      if missing:
        raise AnalysisError(f"`score` needs {', '.join(missing)}.")
      result = score(fv.classifier, fv.weight_net, fv.data, fv.out_dir,
                     fv.batch_size, fv.flag_rate, fv.figures,
                     fv.classifier_outputs)
    else:
      if fv.model_dir is None:
        raise AnalysisError(
            "--model_dir is required: the folder of a training run "
            f"(`{TRAIN_COMMAND}`); or use `score` for new data.")
      result = analyze(fv.model_dir, fv.out_dir, fv.ablation_dirs,
                       fv.figures, fv.flag_rate, fv.batch_size,
                       fv.classifier_outputs, fv.source)
  except AnalysisError as e:
    print(f"mwn_tf.analyze: error: {e}", file=sys.stderr)
    return 1
  print(f"{result['num_samples']} samples, {result['samples_source']}")
  if result["detection"] is not None:
    print(format_report(result["detection"]))
  else:
    print("Corruption unknown (no clean_label / is_noisy): ranking only.")
  _print_top(result["ranking_csv"], fv.top)
  if "ablation" in result:
    print("\nAblation (test accuracy by V's hidden units):")
    for e in result["ablation"]["runs"]:
      accs = [e[k] for k in ("best_epoch_test_accuracy",
                             "final_epoch_test_accuracy")]
      print(f"  {e['label']:>10}  best {_pct(accs[0])}  final "
            f"{_pct(accs[1])}  {e['model_dir']}")
  print("\nWrote " + ", ".join(
      [result["ranking_csv"]] + ([result["detection_json"]]
                                 if "detection_json" in result else []) +
      list(result["figures"].values())))
  for note in result["notes"]:
    print(f"Note: {note}")
  return 0


def main(argv):
  # Before TensorFlow is imported (lazily, by the steps that need it): no
  # C++ start-up lines, no CUDA errors on CPU machines.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  # The data loaders log at INFO; this command's output is its printed table.
  logging.set_verbosity(logging.WARNING)
  return run(argv, flags.FLAGS)


if __name__ == "__main__":
  define_flags()
  app.run(main)
