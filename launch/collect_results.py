r"""Collects every results.json under some folders into one markdown table.

    python launch/collect_results.py runs/sweep_noise [more dirs] \
        [--output=runs/sweep_noise/results.md] [--metric=both|best|final] \
        [--figures=runs/sweep_noise/figures]

Three tables come out:
  1. The paper's layout: one row per (dataset, corruption, method), one
     column per corruption level (noise rate %, or imbalance factor for the
     long tail), each cell the test accuracy in % as "best / final epoch",
     mean ± std over seeds when there are several; `*` marks a run that has
     not finished (its numbers are from its last finished epoch).
  2. Details, one row per (dataset, corruption, level, method), mean ± std
     over seeds: final- and best-epoch test accuracy, the final mean weight
     of clean / corrupted training samples, and from `python -m
     mwn_tf.analyze` (RUN/analysis/detection.json, when present) the AUROC
     of "low weight => corrupted" and the precision / recall of flagging the
     lowest-weight samples at the realised noise rate; then the wall time
     per run (training only).
  3. Every run on its own line, with its folder, steps and state.

With --figures=DIR, one PNG per (dataset, corruption, level) in DIR: test
accuracy per epoch of each method, mean over seeds with their range
(`mwn_tf.shared.figures.accuracy_curves`), from the runs' histories.

The method is the run's `method` with its fast-mode options (from
RUN/operative_config.gin): `mwn` (exact), `mwn+last1+interval2`
(train_eval.virtual_layers = 1, meta_interval = 2), ..., or `baseline`.

For runs in a bucket, copy them first (`gcloud storage rsync -r gs://... dir`).
Run folders are found and read through `mwn_tf.runner.run_dir`, the one place
that knows what a run writes.
"""

import argparse
import json
import math
import os
import sys
from typing import Optional

# Run as a script, so put the repository (not launch/) on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from mwn_tf.runner import run_dir  # noqa: E402


# Fast-mode settings -> (value of the exact step, label token for a value).
_FAST_TOKENS = {
    "fast_mode": ("off", lambda v: "+recommended"),
    "exact_warmup_steps": ("0", lambda v: f"+warm{v}"),
    "hypergradient": ("second_order", lambda v: "+fd"),
    "virtual_layers": ("None", lambda v: f"+last{v}"),
    "meta_interval": ("1", lambda v: f"+interval{v}"),
}


def fast_mode(operative_config: str = "", settings: Optional[dict] = None
              ) -> str:
  """"+warm<n>+fd+last<k>+interval<m>" (the tokens of launch/sweep.sh) for a
  run's fast-mode settings ("" for the exact step): results.json's
  `settings`, else the bindings in its operative gin config (runs made
  before those were train_eval settings bound MetaWeightModel.*)."""
  found = {}
  for key in _FAST_TOKENS:
    if settings and key in settings:
      found[key] = str(settings[key])
  for line in operative_config.splitlines():
    key, _, value = line.partition("=")
    family, _, name = key.strip().rpartition(".")
    if family in ("MetaWeightModel", "train_eval") and name in _FAST_TOKENS:
      found.setdefault(name, value.strip().strip("'\""))
  suffix = ""
  for key, (exact, token) in _FAST_TOKENS.items():
    if found.get(key, exact) not in (exact, ""):
      suffix += token(found[key])
  return suffix


def run_extras(model_dir: str, method: str,
               settings: Optional[dict] = None) -> dict:
  """Method label (with fast mode) and detection metrics of one run folder;
  `settings` is its results.json's."""
  out = {"label": method, "auroc": None, "precision": None, "recall": None}
  config = os.path.join(model_dir, run_dir.OPERATIVE_CONFIG)
  if method != "baseline":
    text = ""
    if os.path.isfile(config):
      with open(config) as f:
        text = f.read()
    out["label"] = method + fast_mode(text, settings)
  report = os.path.join(model_dir, "analysis", "detection.json")
  if os.path.isfile(report):
    with open(report) as f:
      report = json.load(f) or {}
    overall = report.get("overall") or {}
    at_rate = overall.get("at_realised_rate") or {}
    out.update(auroc=overall.get("auroc"), precision=at_rate.get("precision"),
               recall=at_rate.get("recall"))
    # Reports that rank by another signal (analyze --rank_by) score V's
    # weights among their `signals`: the table's columns stay the weights'.
    # Flagging k = the number of corrupted labels, precision equals recall
    # (the R-precision), so `precision_at_k` fills both columns.
    weight = (overall.get("signals") or {}).get("weight")
    if weight and report.get("rank_by", "weight") != "weight":
      out.update(auroc=weight.get("auroc"),
                 precision=weight.get("precision_at_k"),
                 recall=weight.get("precision_at_k"))
  return out


def describe(result: dict) -> dict:
  """The fields the tables need, from one results.json."""
  hp = result.get("hparams", {})
  data = result.get("data", {})
  noise_type = str(hp.get("noise_type", data.get("noise_type", "none")))
  rate = float(hp.get("noise_rate", data.get("noise_rate", 0.0)) or 0.0)
  imbalance = float(hp.get("imbalance_factor",
                           data.get("imbalance_factor", 1.0)) or 1.0)
  if noise_type in ("none", "None", "") or imbalance != 1.0:
    corruption, level, sort_key = "long-tail (IF)", f"{imbalance:g}", imbalance
  else:
    corruption = f"{noise_type} noise (%)"
    level, sort_key = f"{100 * rate:g}", rate
  return {
      "dataset": str(result.get("dataset", hp.get("dataset", "?"))),
      "method": str(result.get("method", hp.get("method", "?"))),
      "model": str(result.get("model", hp.get("model", "?"))),
      "seed": result.get("seed", hp.get("seed")),
      "corruption": corruption, "level": level, "level_key": sort_key,
      "best": result.get("best_epoch_test_accuracy"),
      "best_epoch": result.get("best_epoch"),
      "epochs": result.get("epochs"),
      "curve": [(h.get("epoch"), (h.get("test") or {}).get("accuracy"))
                for h in result.get("history") or []],
      "final": result.get("final_epoch_test_accuracy"),
      "finished": bool(result.get("finished")),
      "steps": result.get("steps"), "total_steps": result.get("total_steps"),
      "weight_clean": result.get("final_sample_weight_clean"),
      "weight_noisy": result.get("final_sample_weight_noisy"),
      "wall_time_s": result.get("wall_time_s"),
  }


def _mean_std(values):
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  mean = sum(values) / len(values)
  if len(values) == 1:
    return mean, None
  var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
  return mean, math.sqrt(var)


def _pct(mean: Optional[float], std: Optional[float]) -> str:
  if mean is None:
    return "–"
  return f"{100 * mean:.2f}" + (f"±{100 * std:.2f}" if std is not None else "")


def cell(runs, metric: str) -> str:
  """One table cell for the runs (seeds) of one configuration."""
  parts = []
  for key in (("best", "final") if metric == "both" else (metric,)):
    parts.append(_pct(*_mean_std([r[key] for r in runs])))
  text = " / ".join(parts)
  if not all(r["finished"] for r in runs):
    text += "*"
  if len(runs) > 1:
    text += f" (n={len(runs)})"
  return text


def paper_table(rows, metric: str) -> str:
  """Rows (dataset, corruption, method) × columns (levels) markdown."""
  out = []
  groups = {}
  for r in rows:
    groups.setdefault((r["dataset"], r["corruption"]), []).append(r)
  what = {"both": "best / final epoch", "best": "best epoch",
          "final": "final epoch"}[metric]
  for (dataset, corruption), runs in sorted(groups.items()):
    levels = sorted({(r["level_key"], r["level"]) for r in runs})
    out.append(f"### {dataset}, {corruption}: test accuracy % ({what})\n")
    out.append("| method | " + " | ".join(l for _, l in levels) + " |")
    out.append("|---|" + "---|" * len(levels))
    for method in sorted({r["method"] for r in runs}):
      cells = []
      for _, level in levels:
        these = [r for r in runs if r["method"] == method and
                 r["level"] == level]
        cells.append(cell(these, metric) if these else "")
      out.append(f"| {method} | " + " | ".join(cells) + " |")
    out.append("")
  return "\n".join(out)


def _num(mean, std, digits: int, scale: float = 1.0) -> str:
  if mean is None:
    return "–"
  text = f"{scale * mean:.{digits}f}"
  return text + (f" ± {scale * std:.{digits}f}" if std is not None else "")


def details_table(rows) -> str:
  """One row per (dataset, corruption, level, method), means over seeds."""
  out = ["### Details (mean ± sd over seeds)\n",
         "| dataset | corruption | level | method | seeds | final % | best % "
         "| best epoch / epochs | weight clean / corrupted | AUROC "
         "| precision / recall at realised rate | wall s/run |",
         "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  groups = {}
  for r in rows:
    key = (r["dataset"], r["corruption"], r["level_key"], r["level"],
           r["method"])
    groups.setdefault(key, []).append(r)
  for (dataset, corruption, _, level, method), runs in sorted(groups.items()):
    stat = lambda k, runs=runs: _mean_std([r[k] for r in runs])
    weights = "–"
    if stat("weight_clean")[0] is not None:
      weights = (f"{_num(stat('weight_clean')[0], None, 3)} / "
                 f"{_num(stat('weight_noisy')[0], None, 3)}")
    pr = "–"
    if stat("precision")[0] is not None:
      pr = (f"{_num(*stat('precision'), 3)} / "
            f"{_num(*stat('recall'), 3)}")
    unfinished = "" if all(r["finished"] for r in runs) else "*"
    out.append(
        f"| {dataset} | {corruption} | {level} | {method}{unfinished} "
        f"| {len(runs)} | {_num(*stat('final'), 2, 100)} "
        f"| {_num(*stat('best'), 2, 100)} "
        f"| {_num(stat('best_epoch')[0], None, 1)} / {runs[0]['epochs']} "
        f"| {weights} "
        f"| {_num(*stat('auroc'), 3)} | {pr} "
        f"| {_num(*stat('wall_time_s'), 0)} |")
  return "\n".join(out) + "\n"


def runs_table(rows) -> str:
  out = ["### All runs\n",
         "| run | dataset | model | corruption | level | method | seed | "
         "best % | final % | steps | finished |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    out.append(
        f"| {r['path']} | {r['dataset']} | {r['model']} | {r['corruption']} "
        f"| {r['level']} | {r['method']} | {r['seed']} "
        f"| {_pct(r['best'], None)} | {_pct(r['final'], None)} "
        f"| {r['steps']}/{r['total_steps']} | {'yes' if r['finished'] else 'no'} |")
  return "\n".join(out) + "\n"


def accuracy_figures(rows, out_dir: str) -> list:
  """One test-accuracy-per-epoch PNG per (dataset, corruption, level);
  returns the paths written."""
  # Imported here: the tables need no matplotlib (nor TensorFlow, which the
  # analysis package loads: keep its start-up lines off the console).
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  from mwn_tf.shared import figures  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  groups = {}
  for r in rows:
    if r["curve"]:
      key = (r["dataset"], r["corruption"], r["level"])
      groups.setdefault(key, {}).setdefault(r["method"], []).append(r)
  written = []
  for (dataset, corruption, level), methods in sorted(groups.items()):
    curves = {}
    for method, runs in sorted(methods.items(),
                               key=lambda m: (m[0] != "baseline", m[0])):
      length = min(len(r["curve"]) for r in runs)
      epochs = [e for e, _ in runs[0]["curve"][:length]]
      accs = [[math.nan if a is None else a for _, a in r["curve"][:length]]
              for r in runs]
      curves[method] = (epochs, accs)
    kind = corruption.split(" (")[0]
    name = f"{dataset}_{kind.replace(' ', '_')}_{level}_accuracy.png"
    context = f"{dataset}, {kind} {level}{'' if 'IF' in corruption else '%'}"
    written.append(figures.save(
        figures.accuracy_curves(curves, context=context),
        os.path.join(out_dir, name.replace("-", ""))))
  return written


def collect(roots, metric: str = "both", rows_out: Optional[list] = None
            ) -> str:
  """The markdown text for all results.json under `roots`; the rows are
  also appended to `rows_out` when given."""
  rows, problems = [], []
  for name, path in run_dir.find_results(roots):
    try:
      result = run_dir.read_results(path)
      row = describe(result)
      row.update(run_extras(os.path.dirname(path), row["method"],
                            result.get("settings")))
    except (OSError, ValueError, TypeError, AttributeError) as e:
      problems.append(f"- {path}: unreadable ({e})")
      continue
    row["method"] = row.pop("label")
    row["path"] = name
    rows.append(row)
  if rows_out is not None:
    rows_out.extend(rows)
  if not rows:
    return f"No results.json under {', '.join(roots)}.\n"
  text = ["# MW-Net results\n",
          f"{len(rows)} runs from {', '.join(roots)}. `*`: not finished.\n",
          paper_table(rows, metric), details_table(rows), runs_table(rows)]
  if problems:
    text += ["### Skipped\n"] + problems + [""]
  return "\n".join(text)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("roots", nargs="+", help="folders (or results.json "
                      "files) to collect")
  parser.add_argument("--output", help="write here instead of stdout")
  parser.add_argument("--metric", choices=("both", "best", "final"),
                      default="both", help="accuracy shown in the paper table")
  parser.add_argument("--figures", help="also draw the test accuracy per "
                      "epoch of each setting here (PNG)")
  args = parser.parse_args(argv)
  rows = []
  text = collect(args.roots, args.metric, rows)
  if args.figures:
    for path in accuracy_figures(rows, args.figures):
      print(f"figure: {path}", file=sys.stderr)
  if args.output:
    with open(args.output, "w") as f:
      f.write(text)
  else:
    sys.stdout.write(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
