"""Final-epoch test accuracy of MW-Net's modes on the offline quickstart."""

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from typing import List, Optional, Sequence

import numpy as np

from mwn_tf.benchmark.modes import gin_bindings
from mwn_tf.runner import run_dir

@dataclasses.dataclass
class AccuracyResult:
  """Final-epoch test accuracy (%) of one mode over seeds."""
  mode: str
  accuracies: List[float]
  seconds: List[float]

  @property
  def mean(self) -> float:
    return float(np.mean(self.accuracies))

  @property
  def sd(self) -> float:
    return float(np.std(self.accuracies, ddof=1)) if len(
        self.accuracies) > 1 else 0.0


def quickstart_accuracy(modes: Sequence[str], seeds: Sequence[int] = (0, 1, 2),
                        *, gin_file: str = "gin/quickstart.gin",
                        model: str = "mlp", work_dir: Optional[str] = None,
                        log=print) -> List[AccuracyResult]:
  """Runs the quickstart through the runner once per mode and seed.

  Each run is `python -m mwn_tf.main --gin_file=<gin_file>
  --gin_param="train_eval.seed = <seed>"` plus the mode's `gin_bindings`, in
  a fresh process with its own model dir, and reports the final-epoch test
  accuracy of its results.json (read through `runner.run_dir`). The
  quickstart: digits, 40% uniform noise, an MLP, 60 epochs; see
  gin/quickstart.gin.

  Args:
    modes: Mode strings.
    seeds: Values of `train_eval.seed`.
    gin_file: The runner config.
    model: The config's classifier (for dtype bindings).
    work_dir: Where the runs' model dirs go (default: a temporary folder,
      removed afterwards).
    log: Progress printer.

  Returns:
    One `AccuracyResult` per mode.
  """
  log = log or (lambda *a, **k: None)
  root = work_dir or tempfile.mkdtemp(prefix="mwn_bench_")
  results = []
  try:
    for name in modes:
      result = AccuracyResult(name, [], [])
      for seed in seeds:
        model_dir = os.path.join(root, f"{name}_seed{seed}")
        command = [sys.executable, "-m", "mwn_tf.main",
                   f"--gin_file={gin_file}", f"--model_dir={model_dir}",
                   f"--gin_param=train_eval.seed = {seed}"]
        command += [f"--gin_param={b}" for b in gin_bindings(name, model)]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode:
          raise RuntimeError(f"{' '.join(command)} failed:\n"
                             f"{proc.stderr[-3000:]}")
        out = run_dir.read_results(model_dir)
        result.accuracies.append(100.0 * out["final_epoch_test_accuracy"])
        result.seconds.append(out["wall_time_s"])
        log(f"  {name} seed {seed}: {result.accuracies[-1]:.2f}% "
            f"({result.seconds[-1]:.0f}s)")
      results.append(result)
  finally:
    if work_dir is None:
      shutil.rmtree(root, ignore_errors=True)
  return results


def accuracy_markdown(results: Sequence[AccuracyResult], *, command: str,
                      reference: str = "exact", model: str = "mlp") -> str:
  """Accuracy results as a markdown table (mean ± sd over seeds)."""
  ref = {r.mode: r for r in results}.get(reference)
  lines = [f"`{command}`", "",
           "| mode | gin bindings | final test accuracy % (mean ± sd) | "
           f"per seed | Δ vs {reference} |",
           "|---|---|---:|---|---:|"]
  for r in results:
    delta = f"{r.mean - ref.mean:+.2f}" if ref is not None else "n/a"
    bindings = "; ".join(f"`{b}`" for b in gin_bindings(r.mode, model))
    lines.append(
        f"| {r.mode} | {bindings or '(quickstart.gin)'} | "
        f"{r.mean:.2f} ± {r.sd:.2f} | "
        f"{', '.join(f'{a:.1f}' for a in r.accuracies)} | {delta} |")
  return "\n".join(lines) + "\n"

