"""launch/epoch_time.py: the runner with timers around its parts (the epoch
time split in docs/fashion_mnist.md), end to end on gin/smoke.gin.
Timings are not asserted, only that every part is accounted for."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_split_of_a_smoke_run(tmp_path):
  out = tmp_path / "split.md"
  proc = subprocess.run(
      [sys.executable, "launch/epoch_time.py", "--gin_file=gin/smoke.gin",
       f"--model_dir={tmp_path / 'run'}", f"--out={out}",
       "--gin_param=train_eval.train_steps = 150",
       "--gin_param=train_eval.sample_every_n_epochs = 1"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (tmp_path / "run" / "results.json").exists()
  text = out.read_text()
  assert text in proc.stdout
  # smoke.gin: 74 steps an epoch, so 150 steps are 3 fit calls.
  assert text.startswith("epoch 1: ") and "epochs 2-3 (mean): " in text
  blocks = re.split(r"\n(?=epochs? [\d-]+)", text)
  assert len(blocks) == 2
  for block in blocks:
    total = float(re.search(r": ([\d.]+) s per epoch", block).group(1))
    rows = dict(re.findall(r"^\| ([a-z .-]+) \| ([\d.]+) \|", block, re.M))
    assert set(rows) == {"data set-up", "train steps", "evaluation",
                         "per-sample pass",
                         "figures", "summaries etc.", "checkpoints", "other"}
    # Every part ran (smoke.gin checkpoints and samples every epoch) and the
    # parts add up to the epoch.
    assert all(float(v) > 0 for k, v in rows.items() if k != "other"), rows
    assert sum(float(v) for v in rows.values()) == pytest.approx(total,
                                                                 abs=0.1)
