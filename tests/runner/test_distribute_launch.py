"""launch/: the scripts parse, dry-run what they would do, and the collector
turns fake results.json files into the paper's table.

The scripts' real runs (2 logical CPUs, 2 local workers, a smoke sweep) are
in docs/distributed.md ("Several devices"); the runner-level multi-worker run
is tests/test_distribute_multi_worker.py.
"""

import json
import os
import subprocess
import sys

import pytest

from helpers import REPO as ROOT

LAUNCH = os.path.join(ROOT, "launch")
sys.path.insert(0, LAUNCH)
import collect_results  # noqa: E402  pylint: disable=g-import-not-at-top

SCRIPTS = ("multi_gpu.sh", "multi_worker.sh", "tpu_vm.sh", "sweep.sh")


def _bash(*args, env=None):
  return subprocess.run(["bash", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=60,
                        env=dict(os.environ, **(env or {})))


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_script_parses_and_prints_usage(script):
  path = os.path.join(LAUNCH, script)
  assert os.access(path, os.X_OK), f"{script} is not executable"
  assert _bash("-n", path).returncode == 0
  usage = _bash(path)                     # no arguments: usage, exit 2
  assert usage.returncode == 2
  assert len(usage.stdout.splitlines()) > 5 and "#" not in usage.stdout[:2]


@pytest.mark.slow
def test_sweep_dry_run_covers_the_paper_table_with_existing_configs():
  proc = _bash("launch/sweep.sh", "paper", env={"DRY_RUN": "1",
                                                "SWEEP_DIR": "/nonexistent"})
  assert proc.returncode == 0, proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.startswith("== ")]
  # (2 datasets x (4 uniform + 3 flip + 6 long-tail)) configs x 2 methods.
  assert len(lines) == 2 * (4 + 3 + 6) * 2
  gin_files = {tok.split("=", 1)[1] for l in lines for tok in l.split()
               if tok.startswith("--gin_file=")}
  assert len(gin_files) == 26
  for f in gin_files:
    assert os.path.isfile(os.path.join(ROOT, f)), f


@pytest.mark.slow
def test_tpu_vm_dry_run_creates_installs_runs_and_copies_logs():
  proc = _bash("launch/tpu_vm.sh", "all", env={
      "DRY_RUN": "1", "PROJECT": "proj", "GIN_FILE": "gin/smoke.gin"})
  assert proc.returncode == 0, proc.stderr
  out = proc.stdout
  assert "tpus tpu-vm --project=proj --zone=us-central2-b create mwn-tpu" in out
  assert "requirements.txt" in out and "tensorflow-tpu==" in out
  assert "--strategy=tpu --tpu=local" in out and "gin/smoke.gin" in out
  assert "gcloud\\ storage\\ rsync" in out and "gs://proj-mwn/runs/smoke" in out


def _fake_result(tmp_path, name, *, dataset, method, seed, noise_type="none",
                 noise_rate=0.0, imbalance=1.0, best=0.5, final=0.4,
                 finished=True):
  folder = tmp_path / name
  folder.mkdir(parents=True)
  result = {"method": method, "dataset": dataset, "model": "resnet32",
            "seed": seed, "best_epoch_test_accuracy": best,
            "final_epoch_test_accuracy": final, "finished": finished,
            "steps": 10 if finished else 5, "total_steps": 10,
            "hparams": {"noise_type": noise_type, "noise_rate": noise_rate,
                        "imbalance_factor": imbalance}, "history": []}
  (folder / "results.json").write_text(json.dumps(result))


def test_collector_builds_the_paper_table(tmp_path):
  for seed, best in ((0, 0.90), (1, 0.92)):
    _fake_result(tmp_path, f"c10_u40/mwn/seed{seed}", dataset="cifar10",
                 method="mwn", seed=seed, noise_type="uniform",
                 noise_rate=0.4, best=best, final=best - 0.01)
  _fake_result(tmp_path, "c10_u40/baseline/seed0", dataset="cifar10",
               method="baseline", seed=0, noise_type="uniform",
               noise_rate=0.4, best=0.70, final=0.65)
  _fake_result(tmp_path, "c10_u0/mwn/seed0", dataset="cifar10", method="mwn",
               seed=0, noise_type="uniform", noise_rate=0.0, best=0.95,
               final=0.94, finished=False)
  _fake_result(tmp_path, "c10_lt100/mwn/seed0", dataset="cifar10",
               method="mwn", seed=0, imbalance=100.0, best=0.7521,
               final=0.75)
  (tmp_path / "broken").mkdir()
  (tmp_path / "broken" / "results.json").write_text("{not json")
  out = tmp_path / "table.md"
  assert collect_results.main([str(tmp_path), f"--output={out}"]) == 0
  text = out.read_text()
  assert "### cifar10, uniform noise (%): test accuracy % (best / final" in text
  assert "| method | 0 | 40 |" in text
  # mean ± sample std over the two seeds; baseline one seed; * unfinished.
  assert "| mwn | 95.00 / 94.00* | 91.00±1.41 / 90.00±1.41 (n=2) |" in text
  assert "| baseline |  | 70.00 / 65.00 |" in text
  assert "### cifar10, long-tail (IF)" in text and "| mwn | 75.21 / 75.00 |" in text
  assert "| 5/10 | no |" in text           # the unfinished run, listed
  assert "broken" in text and "unreadable" in text
  best_only = collect_results.collect([str(tmp_path)], metric="best")
  assert "| mwn | 95.00* | 91.00±1.41 (n=2) |" in best_only


def test_collector_with_nothing_to_collect(tmp_path):
  assert "No results.json" in collect_results.collect([str(tmp_path)])
