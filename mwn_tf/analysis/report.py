"""The analysis of a run (or of new data): ranking, detection report, figures
and the MW-Net size ablation.

`analyze(model_dir)` ranks a run's training samples by distrust, scores the
ranking against the known corruption and draws the paper's figures;
`score(classifier, weight_net, data)` does the same for new labelled data
with a run's exports; `ablation_figure(model_dirs)` compares runs that
differ in V's size. `python -m mwn_tf.analyze` is the command line; its
docstring lists the files read and written.
"""

import json
import os
from typing import Optional, Sequence

import numpy as np

from mwn_tf.analysis import sources
from mwn_tf.analysis import suspects as suspects_lib
from mwn_tf.analysis.detection import AnalysisError
from mwn_tf.analysis.detection import DEFAULT_RANK_BY
from mwn_tf.analysis.detection import detection_report
from mwn_tf.analysis.detection import load_labelled_npz
from mwn_tf.analysis.detection import RANKINGS
from mwn_tf.analysis.detection import Samples
from mwn_tf.analysis.detection import samples_from_arrays
from mwn_tf.analysis.detection import write_ranking
from mwn_tf.analysis.detection import SOURCES  # noqa: F401  (re-exported)
from mwn_tf.runner import run_dir
from mwn_tf.shared import figures
from mwn_tf.shared import samples as samples_lib


def write_json(obj, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=False)
    f.write("\n")
  return path


def run_caption(results: dict, settings: dict,
                epoch: Optional[int] = None) -> str:
  """`figures.caption` of a run: its dataset, noise type and rate (the
  configured one, from results.json's data summary) and `epoch`."""
  return figures.caption(settings.get("dataset"),
                         sources.find_key(results, "noise_type"),
                         sources.find_key(results, "noise_rate"), epoch)


def _last_epoch(results: dict) -> Optional[int]:
  """The epoch of the run's final samples: its last completed epoch."""
  done = results.get("epochs_done")
  if done is None:
    history = results.get("history") or []
    done = history[-1].get("epoch") if history else None
  return None if done is None else int(done)


# ----------------------------------------------------------------------------
# The two commands.
# ----------------------------------------------------------------------------
def _curve_names(weights) -> Optional[list]:
  """A class-aware V's curves (`[p, C]` weights) are named by cluster."""
  return (figures.cluster_names(np.shape(weights)[1])
          if np.ndim(weights) == 2 else None)


def _render_samples(samples: Samples, out_dir: str, curve,
                    context: str) -> dict:
  truth = samples.truth()
  noisy = None if truth is None else truth[1]
  if curve is None:
    # Per-sample weights computed with the final V lie on its curve.
    order = np.argsort(samples.loss, kind="stable")
    curve = (samples.loss[order], samples.weight[order])
  return {
      "weighting_function": figures.save(
          figures.weighting_function(curve[0], curve[1],
                                     curve_names=_curve_names(curve[1]),
                                     sample_loss=samples.loss,
                                     is_noisy=noisy, context=context),
          os.path.join(out_dir, "weighting_function.png")),
      "weight_distribution": figures.save(
          figures.weight_distribution(samples.weight, is_noisy=noisy,
                                      context=context),
          os.path.join(out_dir, "weight_distribution.png")),
  }


def _finish(samples: Samples, out_dir: str, nominal_rate, flag_rate,
            rank_by: str, result: dict) -> dict:
  result["ranking_csv"] = os.path.join(out_dir, "ranking.csv")
  write_ranking(samples, result["ranking_csv"], rank_by)
  report = detection_report(samples, nominal_rate, flag_rate, rank_by)
  result["detection"] = report
  if report is not None:
    result["detection_json"] = write_json(
        report, os.path.join(out_dir, "detection.json"))
  return result


def _run_samples(files: sources.RunFiles, source: str, batch_size: int,
                 classifier_outputs: str) -> tuple:
  """(`Samples`, where they came from) for `analyze`'s `source`."""
  if source == "auto":
    source = ("samples" if files.samples else
              "exports" if files.classifier_export and files.weight_net_export
              else "checkpoint")
  if source == "samples":
    if not files.samples:
      raise AnalysisError(
          f"{files.model_dir} has no {run_dir.SAMPLE_WEIGHTS}: "
          f"`{sources.TRAIN_COMMAND}` writes it when training ends "
          "(or use --source=checkpoint during training).")
    return sources.read_samples(files), f"read from {files.samples}"
  samples, where = sources.recompute_samples(files, source, batch_size,
                                             classifier_outputs)
  return samples, f"recomputed from {where}"


def analyze(model_dir: str, out_dir: Optional[str] = None,
            ablation_dirs: Sequence[str] = (), make_figures: bool = True,
            flag_rate: Optional[float] = None, batch_size: int = 256,
            classifier_outputs: str = "auto", source: str = "auto",
            contact_sheet_size: int = 64, review_size: int = 200,
            rank_by: str = DEFAULT_RANK_BY) -> dict:
  """Ranks a run's training samples by distrust and scores the ranking.

  Args:
    model_dir: the run's folder (see `mwn_tf.analyze` for its files).
    out_dir: where to write; defaults to `model_dir/analysis`.
    ablation_dirs: runs that differ in V's size, for ablation.png.
    make_figures: render the PNG figures.
    flag_rate: an extra rate at which to flag samples, in [0, 1].
    batch_size: batch for recomputing samples.
    classifier_outputs: see `sources.ExportedModels`.
    source: where per-sample losses and weights come from: "samples"
      (sample_weights.npz), "exports" or "checkpoint" (recomputed, see
      `sources.recompute_samples`), or "auto": the first of these that
      exists.
    contact_sheet_size: images on the distrusted contact sheet (and about
      as many on the trusted one); 0: no contact sheets.
    review_size: rows of review.csv (the most distrusted; 0: every sample).
    rank_by: what ranks a sample as distrusted (`detection.RANKINGS`):
      ranking.csv, suspects.csv, review.csv, the contact sheets and the
      flags and AUROC of detection.json follow it.

  Returns:
    dict: `samples_source`, `num_samples`, `ranking_csv`, `suspects_csv`,
    `review_csv`, `detection` (`detection_report` or None),
    `detection_json`, `figures` (name -> PNG path), `notes` (what could not
    be produced and why), `ablation`.

  Raises:
    AnalysisError: missing or malformed inputs, naming the file.
  """
  if source not in SOURCES:
    raise AnalysisError(f"source must be one of {SOURCES}, got {source!r}.")
  if rank_by not in RANKINGS:
    raise AnalysisError(f"rank_by must be one of {RANKINGS}, got "
                        f"{rank_by!r}.")
  files = sources.find_run_files(model_dir)
  out_dir = out_dir or os.path.join(model_dir, "analysis")
  if "://" in out_dir:
    # Its files are written with local file functions (open, savefig).
    raise AnalysisError(f"The analysis is written to a local folder, not "
                        f"{out_dir}: give --out_dir (out_dir=...) a local "
                        f"path for a run on {model_dir.split('://')[0]}://.")
  samples, where = _run_samples(files, source, batch_size, classifier_outputs)
  results = sources.read_results(files.results)
  nominal = sources.find_key(results, "noise_rate")
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
    recorded = sources.find_key(results, "realised_noise_rate")
    if recorded is not None and abs(float(recorded) - realised) > 1e-6:
      result["notes"].append(
          f"{files.results} records realised_noise_rate {recorded}, but the "
          f"samples give {realised:.6f}: they cover a different set.")
  _finish(samples, out_dir, nominal, flag_rate, rank_by, result)
  settings = sources.run_settings(results, sources.read_config(files))
  _review_outputs(files, samples, out_dir, review_size,
                  contact_sheet_size if make_figures else 0,
                  run_caption(results, settings, _last_epoch(results)),
                  rank_by, result)
  if make_figures:
    _run_figures(files, samples, out_dir, results, settings, result)
  if ablation_dirs:
    result["ablation"] = ablation_figure(ablation_dirs, out_dir)
    result["figures"]["ablation"] = result["ablation"]["figure"]
  return result


def _review_outputs(files, samples, out_dir, review_size, sheet_size,
                    context, rank_by, result) -> None:
  """suspects.csv, review.csv and the two contact sheets of a run."""
  try:
    data = sources.run_data(files)
  except AnalysisError as e:
    data = None
    result["notes"].append(f"suspects.csv and review.csv name no files and "
                           f"no contact sheets were drawn: {e}")
  try:
    rows = suspects_lib.suspect_rows(
        samples, data.class_names if data else None,
        data.sample_names if data else None, rank_by)
    if data is not None and sheet_size > 0:
      result["figures"].update(_contact_sheets(
          data, samples, rows, sheet_size, out_dir, context, rank_by))
  except KeyError as e:
    # Samples of another split than the rebuilt one (data changed since).
    result["notes"].append(f"suspects.csv names no files and no contact "
                           f"sheets were drawn: the samples are not those "
                           f"of the data the run's config gives now ({e}).")
    rows = suspects_lib.suspect_rows(samples, None, None, rank_by)
  result["suspects_csv"] = suspects_lib.write_suspects(
      rows, os.path.join(out_dir, "suspects.csv"))
  result["review_csv"] = suspects_lib.write_review(
      rows, os.path.join(out_dir, "review.csv"), review_size)


def _contact_sheets(data, samples, rows, size, out_dir, context,
                    rank_by) -> dict:
  """distrusted.png (the `size` first `rows`, most distrusted) and
  trusted.png (the most trusted of each class under `rank_by`, about `size`
  in all)."""
  names = data.class_names
  low = rows[:size]
  images = suspects_lib.sheet_images(
      data.train_images([r["index"] for r in low]))
  distrusted = figures.distrusted_sheet(
      images, [r["given_class"] for r in low],
      [r["predicted_class"] for r in low], [float(r["weight"]) for r in low],
      context=context)
  per_class = int(np.clip(size // max(1, data.num_classes), 1, 8))
  high = suspects_lib.trusted_by_class(samples, per_class, rank_by)
  trusted = figures.trusted_sheet(
      suspects_lib.sheet_images(data.train_images(samples.index[high])),
      [suspects_lib.class_name(names, samples.label[i]) for i in high],
      samples.weight[high], columns=max(per_class, 4), context=context)
  return {"distrusted_sheet": figures.save(
              distrusted, os.path.join(out_dir, "distrusted.png")),
          "trusted_sheet": figures.save(
              trusted, os.path.join(out_dir, "trusted.png"))}


def _run_figures(files, samples, out_dir, results, settings, result) -> None:
  """A run's weighting function, weight distribution and variation."""
  # V's export covers every sample's loss; the runner's weight_curve.csv
  # stops at its curve_max_loss.
  curve = None
  if files.weight_net_export:
    curve = sources.weight_curve(
        sources.weight_endpoint(files.weight_net_export),
        1.05 * float(samples.loss.max()))
  elif files.weight_curve:
    curve = sources.read_curve(files.weight_curve)
  context = run_caption(results, settings, _last_epoch(results))
  result["figures"].update(_render_samples(samples, out_dir, curve, context))
  variation = sources.read_weight_variation(files)
  if variation is None:
    result["notes"].append(
        "weight_variation.png not drawn: no per-epoch `weight_clean` / "
        f"`weight_noisy` in {run_dir.RESULTS}'s history, TensorBoard events "
        f"or a CSV in {files.model_dir} (MW-Net runs log them when the data "
        "carries is_noisy; the baseline has no V).")
    return
  x, clean, noisy, xlabel, where = variation
  span = f"{xlabel}s {x[0]:g}–{x[-1]:g}"
  context = ", ".join(p for p in (run_caption(results, settings), span) if p)
  result["figures"]["weight_variation"] = figures.save(
      figures.weight_variation(x, clean, noisy, xlabel=xlabel,
                               context=f"{context}\n({where})"),
      os.path.join(out_dir, "weight_variation.png"))


def score(classifier_dir: str, weight_net_dir: str, data_path: str,
          out_dir: Optional[str] = None, batch_size: int = 256,
          flag_rate: Optional[float] = None, make_figures: bool = True,
          classifier_outputs: str = "auto",
          rank_by: str = DEFAULT_RANK_BY) -> dict:
  """Scores new labelled data with a run's exports: loss -> weight -> rank.

  Args:
    classifier_dir: the exported classifier SavedModel.
    weight_net_dir: the exported weighting-net SavedModel.
    data_path: .npz with the keys of `mwn_tf.analyze`'s docstring.
    out_dir: where to write; defaults to `<data file without .npz>_scores`.
    batch_size: classifier batch size.
    flag_rate: an extra rate at which to flag samples, in [0, 1].
    make_figures: render weighting_function.png and weight_distribution.png.
    classifier_outputs: see `sources.ExportedModels`.
    rank_by: the ranking (`detection.RANKINGS`).

  Returns:
    dict like `analyze`'s (`ranking_csv`, `detection`, `figures`, ...).
  """
  models = sources.ExportedModels(classifier_dir, weight_net_dir,
                                  classifier_outputs)
  data = load_labelled_npz(data_path, models.image_shape, models.num_classes)
  out_dir = out_dir or os.path.splitext(data_path)[0] + "_scores"
  arrays = samples_lib.sample_pass(models, (
      {k: v[start:start + batch_size] for k, v in data.items()}
      for start in range(0, len(data["label"]), batch_size)))
  samples = samples_from_arrays(arrays, data_path)
  result = {"data": data_path, "out_dir": out_dir,
            "samples_source": f"scored from {data_path}",
            "num_samples": len(samples), "figures": {}, "notes": []}
  _finish(samples, out_dir, None, flag_rate, rank_by, result)
  if make_figures:
    curve = sources.weight_curve(models.weight_net,
                                 1.05 * float(samples.loss.max()))
    result["figures"].update(_render_samples(
        samples, out_dir, curve, f"new data: {os.path.basename(data_path)}"))
  return result


# ----------------------------------------------------------------------------
# The ablation over runs.
# ----------------------------------------------------------------------------
def describe_run(model_dir: str) -> dict:
  """One ablation entry: V's size, method and test accuracy of a run.

  Method and hidden units come from `sources.run_settings` (results.json's
  `settings`; older runs: its `hparams`, or the operative gin config, or
  V's default).
  """
  files = sources.find_run_files(model_dir)
  if not files.results:
    raise AnalysisError(f"Ablation run {model_dir} has no {run_dir.RESULTS}; "
                        f"`{sources.TRAIN_COMMAND}` writes it when training "
                        "ends.")
  results = sources.read_results(files.results)
  settings = sources.run_settings(results, sources.read_config(files))
  units = settings["weight_net_hidden_units"]
  method = settings["method"]
  entry = {"model_dir": model_dir, "method": method,
           "hidden_units": list(units),
           "label": "baseline" if method == "baseline" else "-".join(
               str(u) for u in units),
           "caption": run_caption(results, settings)}
  for key in ("best_epoch_test_accuracy", "final_epoch_test_accuracy"):
    value = sources.find_key(results, key)
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

  captions = sorted({e["caption"] for e in entries if e["caption"]})
  fig = figures.ablation(order, values("best_epoch_test_accuracy"),
                         second=values("final_epoch_test_accuracy"),
                         context="; ".join(captions))
  path = figures.save(fig, os.path.join(out_dir, "ablation.png"))
  for e in entries:
    del e["caption"]
  write_json(entries, os.path.join(out_dir, "ablation.json"))
  return {"figure": path, "runs": entries}
