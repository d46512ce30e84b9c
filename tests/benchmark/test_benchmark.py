"""The benchmark harness (`mwn_tf.benchmark`) runs and reports every
column; timings are never asserted."""

import json

import pytest

from helpers import REPO
from mwn_tf.benchmark import convs
from mwn_tf.benchmark import modes
from mwn_tf.benchmark import passes
from mwn_tf.benchmark import step_time


# ----------------------------------------------------------------- harness --
@pytest.mark.slow  # 21 training steps: the modes' warm-up and rounds
def test_benchmark_smoke_reports_every_column():
  modes = ["exact", "last1+interval2", "exact+meta4"]
  results = step_time.run(modes, model="mlp", batch_size=8,
                          input_shape=(8, 8, 1), rounds=2, steps=2, warmup=1,
                          log=None)
  assert [r.mode for r in results] == ["plain"] + modes
  for r in results:
    assert r.ms > 0 and r.examples_per_s > 0 and r.steps >= 4
    assert r.ms_range[0] <= r.ms <= r.ms_range[1]
    assert r.ratio_range[0] <= r.ratio <= r.ratio_range[1]
    assert r.peak_mib is None or r.peak_mib >= 0
  assert results[0].ratio == 1.0
  table = step_time.to_markdown(results, command="python -m mwn_tf.bench",
                            model="mlp", batch_size=8, input_shape=(8, 8, 1),
                            rounds=2, steps=2)
  header = table.splitlines()[4]
  for column in ("mode", "options", "ms/step", "range", "× plain",
                 "examples/s", "peak MiB"):
    assert column in header, column
  rows = [l for l in table.splitlines() if l.startswith("| ")][1:]
  assert len(rows) == len(results)
  assert all(row.count("|") == header.count("|") for row in rows)


def test_kerasbn_token_builds_keras_batch_norm_only_inside_the_mode():
  import keras  # pylint: disable=g-import-not-at-top
  from mwn_tf.models.batch_norm import MetaBatchNormalization  # pylint: disable=g-import-not-at-top

  def bn_types(mode):
    net, _ = step_time.build(modes.parse_mode(mode), "small_cnn", 8,
                             (8, 8, 1), 10)
    return {type(l) for l in net.classifier.layers
            if isinstance(l, keras.layers.BatchNormalization)}

  assert bn_types("exact+kerasbn") == {keras.layers.BatchNormalization}
  assert bn_types("exact") == {MetaBatchNormalization}   # restored after


def test_pass_breakdown_smoke_reports_every_pass():
  results = passes.pass_breakdown("small_cnn", batch_size=8,
                                 input_shape=(8, 8, 1), rounds=2, warmup=1,
                                 log=None)
  assert [r.mode for r in results] == list(passes.PASSES)
  for r in results:
    assert r.ms > 0 and r.ms_range[0] <= r.ms <= r.ms_range[1]
  assert results[0].ratio == 1.0
  table = passes.passes_markdown(results, command="python -m mwn_tf.bench")
  rows = [l for l in table.splitlines() if l.startswith("| ")][1:]
  assert [row.split(" | ")[0][2:] for row in rows] == list(passes.PASSES)
  # The top-k floor's added cost is against plain, not the exact row above.
  floor_added = rows[-1].split(" | ")[-1].strip(" |")
  assert floor_added == f"{results[-1].ms - results[0].ms:+.0f}"


def test_conv_floor_smoke_counts_every_conv_kernel():
  floor = convs.conv_floor("small_cnn", batch_size=8, input_shape=(8, 8, 1),
                           rounds=2, repeats=2, log=None)
  assert floor.layers == 2   # small_cnn's default: two conv blocks
  assert set(floor.kernel_ms) == set(convs.CONV_KERNELS)
  assert all(ms > 0 for ms in floor.kernel_ms.values())
  assert floor.ratio_range[0] <= floor.ratio <= floor.ratio_range[1]
  # Not a timing: exact - 3 * plain is one forward pass of every conv but
  # the first (4 forwards against 3 backward pairs), so > 3 whatever the
  # kernels cost, with two or more conv layers.
  assert floor.ratio_range[0] > 3
  table = convs.conv_floor_markdown(floor, command="python -m mwn_tf.bench")
  rows = [l for l in table.splitlines() if l.startswith("| ")][1:]
  assert [row.split(" | ")[0][2:] for row in rows] == list(convs.CONV_KERNELS)
  assert "exact / plain" in table
  with pytest.raises(ValueError, match="no Conv2D"):
    convs.conv_floor("mlp", batch_size=8, input_shape=(8, 8, 1), log=None)


def test_parse_mode():
  mode = modes.parse_mode("last1+interval4+meta25+xla+bf16")
  assert mode.model_kwargs == {"virtual_layers": 1, "meta_interval": 4}
  assert mode.compile_kwargs == {"jit_compile": True}
  assert (mode.meta_batch_size, mode.dtype) == (25, "mixed_bfloat16")
  assert modes.parse_mode("plain").model_kwargs == {"method": "baseline"}
  assert modes.parse_mode("plain+kerasbn").keras_bn
  assert not modes.parse_mode("exact").keras_bn
  assert "Keras BatchNormalization" in modes.describe("exact+kerasbn")
  with pytest.raises(ValueError, match="Unknown benchmark mode token"):
    modes.parse_mode("exact+fast")
  with pytest.raises(ValueError, match="no MW-Net options"):
    modes.parse_mode("plain+interval2")


@pytest.mark.slow
def test_accuracy_task_runs_the_runner_and_reads_its_results(tmp_path,
                                                             monkeypatch):
  from mwn_tf.benchmark import accuracy  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(REPO)
  results = accuracy.quickstart_accuracy(
      ["plain", "last1"], [0], gin_file="gin/smoke.gin",
      work_dir=str(tmp_path), log=None)
  assert [r.mode for r in results] == ["plain", "last1"]
  for r in results:
    assert len(r.accuracies) == 1 and 0 <= r.accuracies[0] <= 100
    assert r.seconds[0] > 0 and r.sd == 0.0
  saved = json.load(open(tmp_path / "last1_seed0" / "results.json"))
  assert 100 * saved["final_epoch_test_accuracy"] == results[1].accuracies[0]
  table = accuracy.accuracy_markdown(results, command="python -m mwn_tf.bench")
  assert "`train_eval.virtual_layers = 1`" in table


@pytest.mark.slow
def test_bench_cli_applies_gin_params_to_the_model(tmp_path):
  """`python -m mwn_tf.bench --gin_param=...` times the model the bindings
  build (the Fashion-MNIST recipe's fmnist_cnn is sized this way); a binding
  the model does not take fails the command."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  repo = REPO
  base = [sys.executable, "-m", "mwn_tf.bench", "--model=fmnist_cnn",
          "--input_shape=28,28,1", "--batch_size=8", "--modes=plain,exact",
          "--rounds=1", "--steps=1", "--warmup=1",
          "--gin_param=fmnist_cnn.filters = (4, 8)"]
  out = tmp_path / "bench.md"
  proc = subprocess.run(base + ["--gin_param=fmnist_cnn.hidden_units = (8,)",
                                f"--out={out}"], cwd=repo, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  table = out.read_text()
  assert "fmnist_cnn" in table and "| exact |" in table
  assert "--gin_param=fmnist_cnn.hidden_units = (8,)" in table
  bad = subprocess.run(base + ["--gin_param=fmnist_cnn.no_such = 1"], cwd=repo,
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2
  [line] = [l for l in bad.stderr.splitlines() if "error" in l]
  assert line.startswith("mwn_tf.bench: error: --gin_param: ") and (
      "no_such" in line)
