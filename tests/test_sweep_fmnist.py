"""launch/sweep.sh's Fashion-MNIST presets and the collector's details table:
the dry run lists the runs of docs/fashion_mnist.md's table, a real shrunk
sweep trains, analyses and collects, and fake runs check the table's arithmetic."""

import json
import os
import subprocess
import sys

import pytest

import real_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "launch"))
import collect_results  # noqa: E402  pylint: disable=g-import-not-at-top


def _sweep(*args, env=None, timeout=60):
  return subprocess.run(["bash", "launch/sweep.sh", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ, **(env or {})))


def _commands(stderr):
  return [l for l in stderr.splitlines() if l.startswith("== ")]


@pytest.mark.slow
@pytest.mark.parametrize("fast", ["", "mwn+last2"])
def test_fmnist_dry_run_is_the_readme_table(fast):
  proc = _sweep("fmnist", env={"DRY_RUN": "1", "SWEEP_DIR": "/nonexistent",
                               "FMNIST_FAST": fast})
  assert proc.returncode == 0, proc.stderr
  lines = _commands(proc.stderr)
  methods = ["baseline", "mwn"] + ([fast] if fast else [])
  assert len(lines) == 4 * len(methods) * 3  # settings x methods x seeds
  for setting in ("uniform_40", "uniform_60", "flip_40", "longtail_50"):
    for method in methods:
      for seed in (0, 1, 2):
        run = f"/nonexistent/fashion_mnist_{setting}/{method}/seed{seed}:"
        [line] = [l for l in lines if l.split()[1] == run]
        assert f"--gin_file=gin/fashion_mnist_{setting}.gin" in line
        assert f"train_eval.seed\\ =\\ {seed}" in line
        if method == "mwn+last2":
          assert "train_eval.virtual_layers\\ =\\ 2" in line
        else:
          assert "virtual_layers" not in line
          assert f"train_eval.method\\ =\\ \\'{method}\\'" in line


@pytest.mark.slow
def test_fmnist_fast_dry_run_is_the_fast_mode_study():
  proc = _sweep("fmnist_fast", env={"DRY_RUN": "1",
                                    "SWEEP_DIR": "/nonexistent"})
  assert proc.returncode == 0, proc.stderr
  lines = _commands(proc.stderr)
  methods = {l.split()[1].split("/")[3] for l in lines}
  assert methods == {f"mwn+{m}" for m in (
      "interval2", "interval5", "last1", "last2", "last1+interval2",
      "last1+interval5", "last2+interval2", "last2+interval5")}
  assert len(lines) == 2 * 8 * 3
  for setting in ("uniform_60", "flip_40"):
    assert sum(f"fashion_mnist_{setting}.gin" in l for l in lines) == 8 * 3


@pytest.mark.slow
def test_fmnist_class_dry_run_is_the_class_aware_study():
  proc = _sweep("fmnist_class", env={"DRY_RUN": "1",
                                     "SWEEP_DIR": "/nonexistent"})
  assert proc.returncode == 0, proc.stderr
  lines = _commands(proc.stderr)
  assert len(lines) == 3 * 3 * 3  # settings x methods x seeds
  for setting in ("longtail_50", "flip_40", "longtail_50_flip_40"):
    mine = [l for l in lines if f"/fashion_mnist_{setting}/" in l]
    assert {l.split()[1].split("/")[3] for l in mine} == {
        "baseline", "mwn", "mwn+classaware"}
    assert all(f"--gin_file=gin/fashion_mnist_{setting}.gin" in l
               for l in mine)
  aware = [l for l in lines if "/mwn+classaware/" in l]
  assert all("train_eval.weight_net\\ =\\ \\'class_aware\\'" in l
             for l in aware) and len(aware) == 9


@pytest.mark.slow
def test_new_fast_tokens_bind_the_levers():
  proc = _sweep("fmnist_fast", env={
      "DRY_RUN": "1", "SWEEP_DIR": "/nonexistent", "SEEDS": "0",
      "METHODS": "mwn+warm200+fd+last1 mwn+recommended"})
  assert proc.returncode == 0, proc.stderr
  lines = _commands(proc.stderr)
  [levers] = [l for l in lines if "/mwn+warm200+fd+last1/" in l][:1]
  for binding in ("train_eval.exact_warmup_steps\\ =\\ 200",
                  "train_eval.hypergradient\\ =\\ "
                  "\\'finite_difference\\'",
                  "train_eval.virtual_layers\\ =\\ 1"):
    assert binding in levers
  assert any("train_eval.fast_mode\\ =\\ \\'recommended\\'" in l
             for l in lines)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mwn+fast", "baseline+last1", "last1",
                                    "mwn+interval"])
def test_unknown_method_exits_2(method):
  proc = _sweep("fmnist", env={"DRY_RUN": "1", "METHODS": method})
  assert proc.returncode == 2
  assert f"unknown method '{method}'" in proc.stderr


@pytest.mark.slow
def test_shrunk_fmnist_sweep_trains_analyses_and_collects(tmp_path):
  real_data.require_fashion_mnist()
  sweep_dir = tmp_path / "sweep"
  proc = _sweep(
      "fmnist_fast", "--gin_param=train_eval.train_steps = 4",
      "--gin_param=train_eval.lr_decay_epochs = ()",
      "--gin_param=fashion_mnist.num_train = 200",
      "--gin_param=train_eval.batch_size = 20",
      "--gin_param=train_eval.export = False",
      env={"SWEEP_DIR": str(sweep_dir), "SEEDS": "0", "JOBS": "2",
           "METHODS": "baseline mwn+last1+interval2",
           "PYTHON": sys.executable}, timeout=900)
  assert proc.returncode == 0, proc.stderr + "".join(
      p.read_text()[-2000:] for p in sweep_dir.rglob("*.log"))
  run = sweep_dir / "fashion_mnist_uniform_60"
  assert (run / "mwn+last1+interval2/seed0/analysis/detection.json").exists()
  assert not (run / "baseline/seed0/analysis").exists()
  text = (sweep_dir / "results.md").read_text()
  details = [l for l in text.splitlines()
             if l.startswith("| fashion_mnist | uniform noise (%) | 60 |")]
  assert len(details) == 2
  fast = [l for l in details if "| mwn+last1+interval2 |" in l][0]
  cells = [c.strip() for c in fast.split("|")[1:-1]]
  assert cells[4] == "1"                      # one seed
  assert cells[9] != "–" and cells[10] != "–"  # AUROC, precision / recall
  assert cells[7] == "1.0 / 1"                # best epoch / epochs
  figures = sorted(p.name for p in (sweep_dir / "figures").iterdir())
  assert figures == ["fashion_mnist_flip_noise_40_accuracy.png",
                     "fashion_mnist_uniform_noise_60_accuracy.png"]
  # A second call skips the finished, analysed runs.
  again = _sweep("fmnist_fast", env={
      "SWEEP_DIR": str(sweep_dir), "SEEDS": "0", "PYTHON": sys.executable,
      "METHODS": "baseline mwn+last1+interval2"})
  assert again.returncode == 0 and again.stderr.count("finished, skipped") == 4


def _fake_run(root, name, *, method, seed, final, best, clean=None,
              noisy=None, wall=10.0, config="", detection=None, best_epoch=2,
              history=()):
  folder = root / name
  folder.mkdir(parents=True)
  (folder / "results.json").write_text(json.dumps({
      "method": method, "dataset": "fashion_mnist", "model": "fmnist_cnn",
      "seed": seed, "final_epoch_test_accuracy": final,
      "best_epoch_test_accuracy": best, "finished": True, "steps": 6,
      "total_steps": 6, "final_sample_weight_clean": clean,
      "best_epoch": best_epoch, "epochs": 3,
      "history": [{"epoch": e + 1, "test": {"accuracy": a}}
                  for e, a in enumerate(history)],
      "final_sample_weight_noisy": noisy, "wall_time_s": wall,
      "hparams": {"noise_type": "uniform", "noise_rate": 0.6,
                  "imbalance_factor": 1.0}}))
  (folder / "operative_config.gin").write_text(config)
  if detection:
    (folder / "analysis").mkdir()
    (folder / "analysis" / "detection.json").write_text(json.dumps(detection))


def _detection(auroc, precision):
  return {"overall": {"auroc": auroc, "at_realised_rate": {
      "precision": precision, "recall": precision}}}


def test_details_table_arithmetic(tmp_path):
  exact = ("MetaWeightModel.meta_interval = 1\n"
           "MetaWeightModel.virtual_layers = None\n")
  fast = ("MetaWeightModel.meta_interval = 2\n"
          "MetaWeightModel.virtual_layers = 1\n")
  for seed, (final, auroc) in enumerate(((0.80, 0.90), (0.84, 0.94))):
    _fake_run(tmp_path, f"u60/mwn/seed{seed}", method="mwn", seed=seed,
              final=final, best=final + 0.01, clean=0.5, noisy=0.1,
              wall=100 + 20 * seed, config=exact, best_epoch=1 + 2 * seed,
              detection=_detection(auroc, 0.8))
  _fake_run(tmp_path, "u60/fast/seed0", method="mwn", seed=0, final=0.81,
            best=0.82, clean=0.4, noisy=0.2, config=fast,
            detection=_detection(0.85, 0.7))
  _fake_run(tmp_path, "u60/baseline/seed0", method="baseline", seed=0,
            final=0.75, best=0.79, clean=1.0, noisy=1.0, config=exact)
  text = collect_results.collect([str(tmp_path)])
  rows = {l.split("|")[4].strip(): l for l in text.splitlines()
          if l.startswith("| fashion_mnist | uniform noise (%) | 60 |")}
  assert set(rows) == {"mwn", "mwn+last1+interval2", "baseline"}
  # mean ± sample sd over the two seeds: 82 ± 2.83, AUROC 0.92 ± 0.028.
  assert ("| 2 | 82.00 ± 2.83 | 83.00 ± 2.83 | 2.0 / 3 | 0.500 / 0.100 "
          "| 0.920 ± 0.028 | 0.800 ± 0.000 / 0.800 ± 0.000 | 110 ± 14 |"
          ) in rows["mwn"]
  assert ("| 1 | 81.00 | 82.00 | 2.0 / 3 | 0.400 / 0.200 | 0.850 "
          "| 0.700 / 0.700 | 10 |" in rows["mwn+last1+interval2"])
  assert ("| 1 | 75.00 | 79.00 | 2.0 / 3 | 1.000 / 1.000 | – | – | 10 |"
          in rows["baseline"])
  # The paper table keeps the fast mode apart from the exact runs.
  assert "| mwn+last1+interval2 | 82.00 / 81.00 |" in text


def test_loss_ranked_reports_keep_the_weight_columns(tmp_path):
  """analyze ranks by loss by default; the table's AUROC and precision stay
  the weights' (from the report's `signals`)."""
  report = _detection(0.99, 0.95)
  report["rank_by"] = "loss"
  report["overall"]["signals"] = {
      "weight": {"auroc": 0.88, "precision_at_k": 0.81},
      "loss": {"auroc": 0.99, "precision_at_k": 0.95}}
  _fake_run(tmp_path, "u60/mwn/seed0", method="mwn", seed=0, final=0.8,
            best=0.8, detection=report)
  extras = collect_results.run_extras(str(tmp_path / "u60/mwn/seed0"), "mwn")
  assert (extras["auroc"], extras["precision"]) == (0.88, 0.81)


def test_fast_mode_label():
  assert collect_results.fast_mode("") == ""
  assert collect_results.fast_mode(
      "MetaWeightModel.meta_interval = 5\n"
      "MetaWeightModel.virtual_layers = None\n") == "+interval5"
  assert collect_results.fast_mode(
      "MetaWeightModel.virtual_layers = 2\n") == "+last2"
  # Runs made since the fast modes are train_eval settings: results.json.
  assert collect_results.fast_mode("", {"virtual_layers": 2,
                                        "meta_interval": 1}) == "+last2"
  assert collect_results.fast_mode("", {"virtual_layers": None,
                                        "meta_interval": 5}) == "+interval5"
  assert collect_results.fast_mode(
      "train_eval.meta_interval = 2\n") == "+interval2"
  assert collect_results.fast_mode("", {
      "virtual_layers": 1, "meta_interval": 2, "exact_warmup_steps": 200,
      "hypergradient": "finite_difference", "fast_mode": "off"}) == (
          "+warm200+fd+last1+interval2")
  assert collect_results.fast_mode(
      "train_eval.fast_mode = 'recommended'\n") == "+recommended"


def test_accuracy_figures_one_per_setting(tmp_path):
  """The figure lines come from each run's history: mean over seeds, NaN
  (unevaluated) epochs left out."""
  for seed in (0, 1):
    _fake_run(tmp_path, f"u60/mwn/seed{seed}", method="mwn", seed=seed,
              final=0.8, best=0.8, history=(0.5, None, 0.8))
  _fake_run(tmp_path, "u60/baseline/seed0", method="baseline", seed=0,
            final=0.6, best=0.7, history=(0.7, None, 0.6))
  rows = []
  collect_results.collect([str(tmp_path)], rows_out=rows)
  [path] = collect_results.accuracy_figures(rows, str(tmp_path / "figs"))
  assert path.endswith("fashion_mnist_uniform_noise_60_accuracy.png")
  assert os.path.getsize(path) > 10000
  curves = {r["method"]: r["curve"] for r in rows}
  assert curves["baseline"] == [(1, 0.7), (2, None), (3, 0.6)]
