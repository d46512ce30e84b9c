"""A trained run read back: its files, its settings, and its models.

Where the per-sample losses and weights of a run come from, when its
sample_weights.npz is not used: the two exported SavedModels
(`ExportedModels`, plain TensorFlow) or its newest checkpoint
(`checkpoint_models`: the classifier and V rebuilt as the runner builds them
and restored from the checkpoint's model part). Either is a "models" object
for `mwn_tf.shared.samples.sample_pass`. Also read here: the run's
settings (`run_settings`), weighting curve and weight variation over
training (`read_weight_variation`).
"""

import ast
import contextlib
import csv
import dataclasses
import functools
import io
import logging as std_logging
import os
import re
from typing import Optional, Sequence

import numpy as np

from mwn_tf.analysis.detection import AnalysisError
from mwn_tf.analysis.detection import CLASSIFIER_OUTPUTS
from mwn_tf.analysis.detection import load_samples
from mwn_tf.analysis.detection import Samples
from mwn_tf.analysis.detection import TRAIN_COMMAND
from mwn_tf.analysis.detection import samples_from_arrays
from mwn_tf.runner import checkpointing
from mwn_tf.runner import declarations
from mwn_tf.runner import run_dir
from mwn_tf.runner import settings as settings_lib
from mwn_tf.shared import samples as samples_lib



# ----------------------------------------------------------------------------
# The exported SavedModels (classifier: images -> probabilities; V: losses ->
# weights), loaded with plain TensorFlow.
# ----------------------------------------------------------------------------
class Endpoint:
  """The single-input, single-output serving signature of a SavedModel; for
  a class-aware V's export (`runner.export.export_weight_net`) the inputs
  are `losses` and `labels` (`takes_labels`)."""

  def __init__(self, path: str, what: str, preferred_outputs: Sequence[str]):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
      where = (run_dir.CLASSIFIER_EXPORT if what == "classifier" else
               run_dir.WEIGHT_NET_EXPORT)
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
    inputs = dict(self.fn.structured_input_signature[1])
    self.takes_labels = set(inputs) == {"losses", "labels"}
    if self.takes_labels:
      self.labels_spec = inputs.pop("labels")
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

  def __call__(self, x: np.ndarray, labels=None) -> np.ndarray:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    inputs = {self.input_name: tf.constant(x, self.spec.dtype)}
    if self.takes_labels:
      inputs["labels"] = tf.constant(np.asarray(labels).reshape(np.shape(x)),
                                     self.labels_spec.dtype)
    out = self.fn(**inputs)
    return out[self.output_name].numpy()

  def cluster_map(self) -> list:
    """A class-aware V's `[K]` cluster of each class id (its export's
    `cluster_map()`)."""
    return self._loaded.cluster_map()["cluster_map"].numpy().tolist()


def weight_endpoint(path: str) -> Endpoint:
  """V's SavedModel (losses -> weights)."""
  return Endpoint(path, "weighting net", ("weights", "weight"))


def weigh(weight_net: Endpoint, losses: np.ndarray,
          labels: Optional[np.ndarray] = None) -> np.ndarray:
  """V's weights for `[b]` losses (of samples labelled `labels` `[b]`, read
  by a class-aware V only) -> `[b]`, fed as `[b, 1]` if V's signature has
  rank 2, else as `[b]`."""
  rank = weight_net.spec.shape.rank
  x = np.asarray(losses, np.float32).reshape((-1, 1) if rank == 2 else (-1,))
  return weight_net(x, labels).reshape(-1).astype(np.float64)


def weight_curve(weight_net: Endpoint, max_loss: float, points: int = 400):
  """V on the loss grid [0, max_loss]: (`[p]` losses, `[p]` weights); a
  class-aware V's weights are `[p, C]`, one column per class cluster (its
  smallest class id's)."""
  grid = np.linspace(0.0, max_loss, points)
  if not weight_net.takes_labels:
    return grid, weigh(weight_net, grid)
  cluster_map = weight_net.cluster_map()
  return grid, np.stack(
      [weigh(weight_net, grid, np.full(points, cluster_map.index(c)))
       for c in range(max(cluster_map) + 1)], axis=1)


class ExportedModels:
  """A run's classifier and weighting net, from their SavedModels.

  A "models" object (`samples.sample_pass`): batch -> its carried fields,
  `loss` `[b]` and `weight` `[b]` (float64), `predicted` `[b]` and
  `probability` `[b]`.

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
    self.classifier = Endpoint(classifier_dir, "classifier",
                               ("probabilities", "probs", "logits"))
    self.weight_net = weight_endpoint(weight_net_dir)
    self._outputs = classifier_outputs
    shape = self.classifier.spec.shape
    if shape.rank is None or shape.rank < 2:
      raise AnalysisError(f"The classifier SavedModel {classifier_dir} takes "
                          f"input {shape}; expected images [b, H, W, C].")
    self.image_shape = tuple(shape[1:].as_list())
    self.num_classes = self.classifier.output_spec.shape[-1]

  def losses(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of `labels` `[b]` for `images` `[b, H, W, C]` -> `[b]`."""
    return self._scores(images, labels)[0]

  def _scores(self, images: np.ndarray, labels: np.ndarray):
    """(`[b]` losses, `[b, K]` class probabilities) of `images`."""
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
      return -np.log(np.maximum(picked, np.finfo(np.float32).tiny)), out
    log_z = np.logaddexp.reduce(out, axis=-1)
    return log_z - picked, np.exp(out - log_z[:, None])

  def __call__(self, batch: dict) -> dict:
    labels = np.asarray(batch["label"]).astype(np.int64)
    losses, probs = self._scores(np.asarray(batch["image"]), labels)
    return {**samples_lib.carried(batch), "loss": losses,
            "weight": weigh(self.weight_net, losses, labels),
            "predicted": probs.argmax(-1).astype(np.int32),
            "probability": probs.max(-1)}


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
  """Locates a run's outputs where the runner writes them, through the
  model_dir contract (`run_dir`: tf.io.gfile, so gs://... runs too).

  Only fixed places are searched (no recursive glob), so a folder that holds
  several runs is never mistaken for one of them.
  """
  if not run_dir.is_run_folder(model_dir):
    raise AnalysisError(f"--model_dir {model_dir} is not a directory; point "
                        f"it at a run's folder, as written by "
                        f"`{TRAIN_COMMAND}`.")
  file = functools.partial(run_dir.path, model_dir)
  return RunFiles(
      model_dir=model_dir, samples=file(run_dir.SAMPLE_WEIGHTS),
      weight_curve=file(run_dir.WEIGHT_CURVE), results=file(run_dir.RESULTS),
      operative_config=file(run_dir.OPERATIVE_CONFIG),
      classifier_export=run_dir.savedmodel(model_dir,
                                           run_dir.CLASSIFIER_EXPORT),
      weight_net_export=run_dir.savedmodel(model_dir,
                                           run_dir.WEIGHT_NET_EXPORT),
      checkpoint=run_dir.latest_checkpoint(model_dir),
      event_dirs=tuple(run_dir.event_dirs(model_dir)),
      history_csvs=tuple(p for p in run_dir.glob(model_dir, "*.csv")
                         if os.path.basename(p) != run_dir.WEIGHT_CURVE))


def read_samples(files: RunFiles) -> Samples:
  """The run's sample_weights.npz (`files.samples`) as `Samples`."""
  try:
    data = run_dir.read_file(files.samples, binary=True)
  except OSError as e:
    raise AnalysisError(str(e)) from e
  return load_samples(files.samples, io.BytesIO(data))


def read_results(path: Optional[str]) -> dict:
  """The run's results.json at `path`; {} for None."""
  if not path:
    return {}
  try:
    return run_dir.read_results(path)
  except (OSError, ValueError) as e:
    raise AnalysisError(f"Cannot read {path} as JSON ({e}).") from e


def read_config(files: RunFiles) -> str:
  """The run's operative gin config ("" when absent)."""
  if not files.operative_config:
    return ""
  try:
    return run_dir.read_file(files.operative_config)
  except OSError as e:
    raise AnalysisError(str(e)) from e


def _csv_rows(path: str) -> list:
  """The rows of a CSV file with a header (dicts), read through `run_dir`."""
  return list(csv.DictReader(io.StringIO(run_dir.read_file(path),
                                         newline="")))


def find_key(obj, key: str):
  """The first value of `key` anywhere in nested dicts/lists, else None."""
  if isinstance(obj, dict):
    if key in obj:
      return obj[key]
    obj = list(obj.values())
  if isinstance(obj, list):
    for item in obj:
      found = find_key(item, key)
      if found is not None:
        return found
  return None


def read_curve(path: str):
  """(`[p]` loss, `[p]` weight) from a `loss,weight` CSV, sorted by loss;
  from a class-aware V's `loss,weight_cluster_0,...` the weights are
  `[p, C]`."""
  try:
    rows = _csv_rows(path)
    loss = np.array([float(r["loss"]) for r in rows])
    columns = [k for k in rows[0] if k.startswith("weight_cluster_")] if (
        rows and "weight" not in rows[0]) else ["weight"]
    weight = np.array([[float(r[k]) for k in columns] for r in rows])
    weight = weight[:, 0] if columns == ["weight"] else weight
  except (OSError, KeyError, TypeError, ValueError, IndexError) as e:
    raise AnalysisError(f"{path} must be a CSV with columns loss,weight "
                        f"(or loss,weight_cluster_0,...) "
                        f"({type(e).__name__}: {e}).") from e
  if loss.size == 0:
    raise AnalysisError(f"{path} has no rows.")
  order = np.argsort(loss)
  return loss[order], weight[order]


# ----------------------------------------------------------------------------
# The run's settings.
# ----------------------------------------------------------------------------
def run_settings(results: dict, config_text: str = "") -> dict:
  """The `train_eval` settings the analysis needs: `dataset`, `seed`,
  `model`, `method` and `weight_net_hidden_units` (a tuple of ints).

  From results.json's `settings` (every `train_eval` argument as the run
  resolved it); runs written before it existed fall back to results.json's
  top level and `hparams`, then to the operative gin config's bindings, then
  to the defaults.
  """
  settings = results.get("settings")
  if isinstance(settings, dict) and settings:
    out = dict(settings)
  else:
    out = _legacy_settings(results, config_text)
  out.setdefault("method", "mwn")
  out["seed"] = int(out.get("seed") or 0)
  # A class-aware V is rebuilt on the clusters the run trained with.
  clusters = results.get("class_clusters")
  if isinstance(clusters, dict) and clusters.get("cluster_map"):
    out["weight_net_cluster_map"] = tuple(clusters["cluster_map"])
  out["weight_net_hidden_units"] = _units(out.get("weight_net_hidden_units"))
  return out


def _legacy_settings(results: dict, config_text: str) -> dict:
  """`run_settings` of a run whose results.json has no `settings`."""
  out = {}
  for name in ("dataset", "model", "method"):
    value = find_key(results, name) or gin_binding(config_text,
                                                   f"train_eval.{name}")
    if value is not None:
      out[name] = value
  out["seed"] = results.get("seed", gin_binding(config_text,
                                                "train_eval.seed"))
  for found in (find_key(results, "weight_net_hidden_units"),
                gin_binding(config_text, "weight_net_hidden_units"),
                gin_binding(config_text, "WeightNet.hidden_units")):
    if found is not None:
      out["weight_net_hidden_units"] = found
      break
  return out


def gin_binding(config_text: str, name: str):
  """The value bound to `...name` (e.g. `WeightNet.hidden_units`) in a gin
  config, as a Python literal; None when unbound. Only for runs whose
  results.json predates its `settings`."""
  pattern = re.compile(r"^\s*(?:[\w.]+[./])?" + re.escape(name) +
                       r"\s*=\s*(.+?)\s*$", re.M)
  match = pattern.search(config_text)
  if not match:
    return None
  try:
    return ast.literal_eval(match.group(1))
  except (ValueError, SyntaxError):
    return match.group(1)


def _units(units) -> tuple:
  """V's hidden widths as ints: a list, "50,50" (the runner's hparams), or
  None (WeightNet's default)."""
  if units is None:
    import inspect  # pylint: disable=g-import-not-at-top
    from mwn_tf import weight_net  # pylint: disable=g-import-not-at-top
    units = inspect.signature(weight_net.WeightNet.__init__).parameters[
        "hidden_units"].default
  if isinstance(units, str):
    units = [u for u in re.split(r"[(),\s]+", units) if u]
  return tuple(int(u) for u in (units if isinstance(units, (list, tuple))
                                else (units,)))


# ----------------------------------------------------------------------------
# Per-sample losses and weights, recomputed.
# ----------------------------------------------------------------------------
def checkpoint_models(path: str, data, settings: dict):
  """The classifier and V of checkpoint `path`, as a "models" object.

  Rebuilt by the runner's `build_model` (model, method and V's size from
  `settings`; the step's settings, unused here, as recorded or defaulted)
  for `data`, and restored by `checkpointing.restore_models` (the
  classifier and V only). Works while the run is still training.
  """
  model = settings.get("model")
  # Runs older than a setting lack it: its declared default (the decays and
  # the fast modes shape no variable, so any valid value restores).
  defaults = {s.name: s.default for s in declarations.SETTINGS}
  try:
    net = settings_lib.build_model(data, {**defaults, **settings})
    checkpointing.restore_models(net, path)
  except Exception as e:  # pylint: disable=broad-except
    raise AnalysisError(
        f"Cannot restore the classifier {model!r} and V from checkpoint "
        f"{path} with the settings of the run's results.json / operative "
        f"config: {type(e).__name__}: {str(e).splitlines()[0]}") from e
  return samples_lib.KerasModels(net)


def recompute_samples(files: RunFiles, source: str = "exports",
                      batch_size: int = 256,
                      classifier_outputs: str = "auto") -> tuple:
  """Per-sample losses and weights of a run's training split, recomputed.

  The split is rebuilt as the runner built it, `mwn_tf.data.get(dataset,
  seed=seed)` (`run_settings`) with the loader bindings of the run's
  operative gin config, and read with `train_for_eval` (no augmentation);
  the classifier runs in inference mode. Clears the global gin config before
  and after.

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
        f"{files.model_dir} has no {run_dir.SAMPLE_WEIGHTS}, and cannot "
        f"recompute it from {source}: "
        f"{'; '.join(m + ' is missing' for m in missing)}. `{TRAIN_COMMAND}` "
        f"writes {run_dir.SAMPLE_WEIGHTS} and the exports when training ends, and "
        "checkpoints during training; or score data directly with `python "
        "-m mwn_tf.analyze score`.")
  data, models = _rebuild(files, source, classifier_outputs)
  arrays = samples_lib.sample_pass(models, data.train_for_eval(batch_size))
  where = (files.checkpoint if source == "checkpoint" else
           f"{files.classifier_export} + {files.weight_net_export}")
  return samples_from_arrays(arrays, f"recomputed from {where}"), where


def _rebuild(files: RunFiles, source: str, classifier_outputs: str):
  """(the run's `DataSplits`, its models from `source`)."""
  def models(data, settings):
    if source == "exports":
      return ExportedModels(files.classifier_export, files.weight_net_export,
                            classifier_outputs)
    return checkpoint_models(files.checkpoint, data, settings)
  return _with_run_config(files, models)


def run_data(files: RunFiles):
  """The run's `DataSplits`, rebuilt from its operative gin config, to name
  its samples and show their images (`mwn_tf.analysis.suspects`).

  A folder's images are not decoded again (`folder.validate` off): training
  already checked them.

  Raises:
    AnalysisError: no config, or it does not rebuild the data.
  """
  if not files.operative_config:
    raise AnalysisError(f"{files.model_dir} has no {run_dir.OPERATIVE_CONFIG} "
                        "(written after the first step): cannot tell which "
                        "data the run used.")
  return _with_run_config(files, None, quick=True)[0]


def _with_run_config(files: RunFiles, make_models, quick: bool = False):
  """(the run's `DataSplits`, `make_models(data, settings)` or None), built
  under the run's operative gin config (cleared before and after)."""
  import mwn_tf.data  # pylint: disable=g-import-not-at-top
  text = read_config(files)
  settings = run_settings(read_results(files.results), text)
  name = settings.get("dataset")
  if not isinstance(name, str):
    raise AnalysisError(f"Neither {files.operative_config} "
                        "(train_eval.dataset) nor results.json names the "
                        "dataset: cannot tell which data the run used.")
  try:
    with run_gin_config(text):
      if quick and name == "folder":
        import gin  # pylint: disable=g-import-not-at-top
        gin.bind_parameter("folder.validate", False)
      # The runner's seed overrides the loader's own seed binding.
      data = mwn_tf.data.get(name, seed=settings["seed"])
      models = None if make_models is None else make_models(data, settings)
  except AnalysisError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise AnalysisError(f"Cannot rebuild dataset {name!r} from "
                        f"{files.operative_config}: {type(e).__name__}: "
                        f"{str(e).splitlines()[0]}") from e
  return data, models


@contextlib.contextmanager
def run_gin_config(text: str):
  """The run's operative gin config `text`, alone, in force for the block.

  The caller's gin config is put back afterwards: its bindings (as
  `gin.config_str()` writes them) and whether it was finalized. gin has no
  copy of its state, so what is not a binding starts afresh: gin's record
  of the bindings used so far (`gin.operative_config_str()`).
  """
  import gin  # pylint: disable=g-import-not-at-top
  saved, locked = gin.config_str(), gin.config_is_locked()
  gin.clear_config()
  try:
    # The runner's own configurables (train_eval) are not imported: skip.
    gin.parse_config(text, skip_unknown=True)
    yield
  finally:
    gin.clear_config()
    gin.parse_config(saved)
    if locked:
      gin.finalize()


# ----------------------------------------------------------------------------
# Per-epoch records: the weight variation over training.
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
  history = find_key(read_results(files.results), "history") or []
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
    rows = _csv_rows(path)
    if rows and {"weight_clean", "weight_noisy"} <= set(rows[0]):
      epochs = [float(r.get("epoch", i)) for i, r in enumerate(rows)]
      return (np.array(epochs), np.array([float(r["weight_clean"])
                                          for r in rows]),
              np.array([float(r["weight_noisy"]) for r in rows]), "epoch",
              path)
  return None
