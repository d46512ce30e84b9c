"""The TPU path up to the strategy boundary, on CPU.

No TPU here, so: the step compiled by XLA (`jit_compile=True`, as TPUStrategy
compiles every step) runs on CPU and matches the step without XLA; its graph
holds no host-only op (Python callbacks, prints, summaries, file I/O) that a
TPU could not run; the input pipelines a TPU host would build (one per host,
per-replica batches) have static shapes and disjoint shards; and asking for a
TPU on this machine fails with a one-line error, from the runner too.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import distribute_helpers as td

HOST_ONLY_OPS = {
    "PyFunc", "PyFuncStateless", "EagerPyFunc", "PrintV2", "Print",
    "StringFormat", "WriteSummary", "WriteScalarSummary",
    "WriteHistogramSummary", "WriteImageSummary", "WriteRawProtoSummary",
    "SaveV2", "RestoreV2", "WriteFile", "ReadFile",
}


def _op_types(concrete):
  graph_def = concrete.graph.as_graph_def()
  types = {n.op for n in graph_def.node}
  for fn in graph_def.library.function:
    types |= {n.op for n in fn.node_def}
  return types


def test_xla_step_matches_the_plain_step(mode="sum"):
  batches = td.make_data(steps=2)
  init = td.get_all(td.build_model("bn", mode))
  results = {}
  for jit in (False, True):
    model = td.build_model("bn", mode, weights=init, jit_compile=jit)
    assert model.jit_compile is jit   # Keras did not silently drop XLA
    snaps, logs = td.fit_and_snapshot(model, td.global_dataset(batches))
    results[jit] = snaps[-1], logs
  for part in ("classifier", "state", "weight_net"):
    td.assert_close(results[True][0][part], results[False][0][part],
                    f"XLA vs plain, {part}")
  for key, value in results[False][1].items():
    np.testing.assert_allclose(results[True][1][key], value, rtol=1e-5)


def test_step_graph_has_no_host_only_ops():
  model = td.build_model("bn", "sum")
  spec = ({"image": tf.TensorSpec([td.N, td.D], tf.float32),
           "label": tf.TensorSpec([td.N], tf.int32),
           "is_noisy": tf.TensorSpec([td.N], tf.bool)},
          (tf.TensorSpec([td.M, td.D], tf.float32),
           tf.TensorSpec([td.M], tf.int32)))
  concrete = tf.function(model.train_step).get_concrete_function(spec)
  types = _op_types(concrete)
  assert "MatMul" in types  # the walk did see the step
  assert not types & HOST_ONLY_OPS, sorted(types & HOST_ONLY_OPS)


class _TpuHosts:
  """Calls dataset_fn as TPUStrategy would on 2 hosts of 4 replicas each."""

  def __init__(self, hosts=2, replicas=8):
    self.hosts, self.num_replicas_in_sync = hosts, replicas

  def distribute_datasets_from_function(self, dataset_fn, options=None):
    del options
    return [dataset_fn(tf.distribute.InputContext(
        num_input_pipelines=self.hosts, input_pipeline_id=i,
        num_replicas_in_sync=self.num_replicas_in_sync))
            for i in range(self.hosts)]


def test_per_host_pipelines_are_static_and_disjoint():
  import mwn_tf.data  # pylint: disable=g-import-not-at-top
  splits = mwn_tf.data.get("digits", noise_type="uniform", noise_rate=0.4,
                           seed=0)
  hosts = _TpuHosts()
  pipelines = splits.train_and_meta(64, meta_batch_size=32, strategy=hosts)
  seen, lengths = [], []
  for ds in pipelines:
    train_spec, meta_spec = ds.element_spec
    # Per-replica batches (64 / 8, 32 / 8) with fully static shapes: XLA on
    # TPU needs them (drop_remainder), or every partial batch recompiles.
    assert train_spec["image"].shape.as_list() == [8, 8, 8, 1]
    assert meta_spec["image"].shape.as_list() == [4, 8, 8, 1]
    indices = [int(i) for batch, _ in ds for i in batch["index"].numpy()]
    seen.append(set(indices))
    lengths.append(len(indices))
  assert lengths[0] == lengths[1] > 0   # same step count on every host
  assert not seen[0] & seen[1]          # disjoint shards


@pytest.mark.slow
def test_runner_asks_for_a_tpu_and_fails_cleanly(tmp_path):
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=td.ROOT + os.pathsep + os.environ.get("PYTHONPATH",
                                                              ""))
  env.pop("TPU_NAME", None)
  proc = subprocess.run(
      [sys.executable, "-m", "mwn_tf.main", "--gin_file=gin/smoke.gin",
       "--strategy=tpu", "--tpu=local", f"--model_dir={tmp_path}"],
      cwd=td.ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert "could not initialise" in last and "Traceback" not in proc.stderr
