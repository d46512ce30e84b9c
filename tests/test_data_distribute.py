"""train_and_meta / test under MirroredStrategy on 2 logical CPUs.

Logical devices must be configured before TensorFlow runs any op, which other
tests in this pytest process already did, so the check runs in a subprocess.
"""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import mwn_tf.data

_SCRIPT = textwrap.dedent("""
    import json, hashlib
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import mwn_tf.data

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    d = mwn_tf.data.get("digits", noise_type="uniform", noise_rate=0.4, seed=0)
    out = {"replicas": strategy.num_replicas_in_sync, "train_shapes": set(),
           "meta_shapes": set(), "train_index": [], "steps": 0}
    for train, meta in d.train_and_meta(32, meta_batch_size=16,
                                        strategy=strategy):
      out["steps"] += 1
      for part in strategy.experimental_local_results(train["image"]):
        out["train_shapes"].add(tuple(part.shape))
      for part in strategy.experimental_local_results(meta["label"]):
        out["meta_shapes"].add(tuple(part.shape))
      for part in strategy.experimental_local_results(train["index"]):
        out["train_index"] += part.numpy().tolist()
    test_index = []
    for batch in d.test(64, strategy=strategy):
      for part in strategy.experimental_local_results(batch["index"]):
        test_index += part.numpy().tolist()
    out["test_index"] = test_index
    out["train_shapes"] = sorted(out["train_shapes"])
    out["meta_shapes"] = sorted(out["meta_shapes"])
    out["labels_sha"] = hashlib.sha256(
        d.arrays["train"]["label"].tobytes()).hexdigest()
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_mirrored_two_replicas():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep +
             os.environ.get("PYTHONPATH", ""), CUDA_VISIBLE_DEVICES="")
  proc = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=root, env=env,
                        capture_output=True, text=True, timeout=300)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
  assert proc.returncode == 0 and lines, proc.stderr[-3000:]
  out = json.loads(lines[-1][len("RESULT"):])
  assert out["replicas"] == 2
  assert out["train_shapes"] == [[16, 8, 8, 1]]  # global 32 / 2 replicas.
  assert out["meta_shapes"] == [[8]]  # global meta 16 / 2.
  d = mwn_tf.data.get("digits", noise_type="uniform", noise_rate=0.4, seed=0)
  assert out["steps"] == d.steps_per_epoch(32)
  seen = out["train_index"]
  assert len(seen) == len(set(seen)) == d.steps_per_epoch(32) * 32
  assert set(seen) <= set(d.arrays["train"]["index"].tolist())
  assert sorted(out["test_index"]) == sorted(d.arrays["test"]["index"].tolist())
  # Same seed in another process gives the same corrupted labels.
  assert out["labels_sha"] == hashlib.sha256(
      np.asarray(d.arrays["train"]["label"]).tobytes()).hexdigest()


class FakePipelines:
  """Duck-typed strategy with several input pipelines (as on multi-worker or
  TPU pods): returns the per-pipeline datasets so their shards can be read."""

  def __init__(self, num_pipelines, num_replicas):
    self.num_pipelines, self.num_replicas = num_pipelines, num_replicas

  def distribute_datasets_from_function(self, dataset_fn):
    return [dataset_fn(tf.distribute.InputContext(
        self.num_pipelines, i, self.num_replicas))
            for i in range(self.num_pipelines)]


def test_input_pipelines_shard_disjointly():
  d = mwn_tf.data.get("digits", noise_type="flip", noise_rate=0.2)
  per_pipe = d.train_and_meta(32, meta_batch_size=16,
                              strategy=FakePipelines(2, 4))
  seen, counts = [], []
  for ds in per_pipe:
    batches = list(ds)
    counts.append(len(batches))
    for train, meta in batches:
      assert train["image"].shape[0] == 8 and meta["image"].shape[0] == 4
    seen.append(np.concatenate([t["index"].numpy() for t, _ in batches]))
  # Equal step counts on every pipeline, each pipeline serving 2 replicas.
  assert counts[0] == counts[1] == 2 * d.steps_per_epoch(32)
  assert not set(seen[0]) & set(seen[1])
  assert set(np.concatenate(seen)) <= set(d.arrays["train"]["index"])
  test = np.concatenate([b["index"].numpy()
                         for ds in d.test(50, strategy=FakePipelines(2, 2))
                         for b in ds])
  assert sorted(test) == sorted(d.arrays["test"]["index"])
