r"""Collects every results.json under some folders into one markdown table.

    python launch/collect_results.py runs/sweep_noise [more dirs] \
        [--output=runs/sweep_noise/results.md] [--metric=both|best|final]

Two tables come out:
  1. The paper's layout: one row per (dataset, corruption, method), one
     column per corruption level (noise rate %, or imbalance factor for the
     long tail), each cell the test accuracy in % as "best / final epoch",
     mean ± std over seeds when there are several; `*` marks a run that has
     not finished (its numbers are from its last finished epoch).
  2. Every run on its own line, with its folder, steps and state.

For runs in a bucket, copy them first (`gcloud storage rsync -r gs://... dir`).
Run folders are found and read through `mwn_tf.runner.run_dir`, the one place
that knows what a run writes.
"""

import argparse
import math
import os
import sys
from typing import Optional

# Run as a script, so put the repository (not launch/) on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from mwn_tf.runner import run_dir  # noqa: E402


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
      "final": result.get("final_epoch_test_accuracy"),
      "finished": bool(result.get("finished")),
      "steps": result.get("steps"), "total_steps": result.get("total_steps"),
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


def collect(roots, metric: str = "both") -> str:
  """The markdown text for all results.json under `roots`."""
  rows, problems = [], []
  for name, path in run_dir.find_results(roots):
    try:
      row = describe(run_dir.read_results(path))
    except (OSError, ValueError, TypeError, AttributeError) as e:
      problems.append(f"- {path}: unreadable ({e})")
      continue
    row["path"] = name
    rows.append(row)
  if not rows:
    return f"No results.json under {', '.join(roots)}.\n"
  text = ["# MW-Net results\n",
          f"{len(rows)} runs from {', '.join(roots)}. `*`: not finished.\n",
          paper_table(rows, metric), runs_table(rows)]
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
  args = parser.parse_args(argv)
  text = collect(args.roots, args.metric)
  if args.output:
    with open(args.output, "w") as f:
      f.write(text)
  else:
    sys.stdout.write(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
