"""MetaWeightModel under MirroredStrategy on 2 logical CPU devices.

What "equal" means. N replicas with the global batch split in halves must
take the step one device takes on the whole global batch: same classifier
and V variables after 1 and 3 steps (float32 tolerance), same epoch metrics,
and identical copies on both replicas. The one thing that cannot match a
plain single-device run is plain BatchNorm: each replica normalises its half
by the half's own statistics, exactly as Keras' BN does under replication.
So BN is checked two ways:
  * plain BN (per-replica statistics) against a single-device reference whose
    BN normalises each half-batch by that half's statistics ("ghost" BN, the
    test's `_HalfBatchNorm`) and moves its moving statistics by the mean of
    the two halves' updates, which is what `MetaWeightModel` writes;
  * `sync_batchnorm=True` (global statistics) against plain BN on one device.

Logical devices must be configured before TensorFlow initialises, which other
test files in this pytest process already did, so the distributed runs happen
in a child process (this file run as a script) that prints its results as
JSON; the assertions stay here.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from distribute_helpers import ATOL
from distribute_helpers import ROOT
from distribute_helpers import STEPS
from distribute_helpers import assert_close
from distribute_helpers import build_model
from distribute_helpers import fit_and_snapshot
from distribute_helpers import get_all
from distribute_helpers import global_dataset
from distribute_helpers import make_data
from distribute_helpers import set_all
from distribute_helpers import split_dataset

MODES = ("none", "sum")
BATCHNORMS = ("bn", "sync_bn")  # a BN-free classifier runs a subset of this


def run_child(*args, timeout=420, env=None):
  """Runs this file as a script; returns the JSON it printed after RESULT."""
  env = dict(os.environ if env is None else env)
  env.update(PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""),
             CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
  assert proc.returncode == 0 and lines, (proc.stdout[-2000:] +
                                          proc.stderr[-4000:])
  return json.loads(lines[-1][len("RESULT"):])


@pytest.fixture(scope="module")
def mirrored():
  return run_child("mirrored")


@pytest.mark.slow
@pytest.mark.parametrize("batchnorm", BATCHNORMS)
@pytest.mark.parametrize("mode", MODES)
def test_mirrored_matches_one_device_on_the_global_batch(mirrored, mode,
                                                         batchnorm):
  case = mirrored["exact"][f"{mode}/{batchnorm}"]
  assert case["replicas"] == 2
  for step in (1, STEPS):   # after one and after three steps
    ref = case["reference"][step - 1]
    dist = case["distributed"][step - 1]
    for part in ("classifier", "weight_net", "state"):
      per_replica = dist[part]           # [variable][replica] -> values
      for r in range(2):                 # both replicas hold the same values
        assert_close([v[r] for v in per_replica], ref[part],
                      f"{mode}/{batchnorm} step {step} {part} replica {r}")
  # The step really moved things (else equality would be vacuous).
  first, last = case["reference"][0], case["reference"][-1]
  assert any(not np.allclose(a, b) for a, b in
             zip(first["weight_net"], last["weight_net"]))
  if batchnorm != "no_bn":
    assert len(last["state"]) == 2 and not np.allclose(last["state"][0], 0)
  # Epoch metrics are aggregated over both replicas exactly once.
  for key, want in case["reference_logs"].items():
    np.testing.assert_allclose(case["distributed_logs"][key], want,
                               rtol=1e-5, err_msg=key)
  assert set(case["distributed_logs"]) == set(case["reference_logs"])
  assert "weight_noisy" in case["distributed_logs"]
  assert "weight_ess" in case["distributed_logs"]  # the global batch's ESS


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_local_virtual_step_differs_and_is_a_valid_step(mirrored, mode):
  """virtual_step="local" on 2 replicas, one step, plain-SGD meta optimizer.

  Valid: V's update is the mean of the two single-device updates on each
  replica's half batch (train and meta halves), and the classifier's update
  is the exact global stage 3 with that updated V. Different: V (and hence
  the classifier) differs from the exact global step from the same start.
  """
  case = mirrored["local"][mode]
  local = case["local"]
  halves = case["half_references"]
  want_v = [np.mean([h[i] for h in halves], axis=0)
            for i in range(len(halves[0]))]
  for r in range(2):
    assert_close([v[r] for v in local["weight_net"]], want_v,
                  f"local {mode}: V on replica {r}")
    assert_close([v[r] for v in local["classifier"]],
                  case["stage3_reference"], f"local {mode}: classifier")
  exact = case["global"]
  v_gap = max(np.abs(np.asarray(a[0]) - np.asarray(b[0])).max()
              for a, b in zip(local["weight_net"], exact["weight_net"]))
  v_step = max(np.abs(np.asarray(a[0]) - np.asarray(b)).max()
               for a, b in zip(exact["weight_net"], case["initial_v"]))
  assert v_gap > 1e-3 * v_step and v_gap > 50 * ATOL, (v_gap, v_step)
  c_gap = max(np.abs(np.asarray(a[0]) - np.asarray(b[0])).max()
              for a, b in zip(local["classifier"], exact["classifier"]))
  assert c_gap > 0


@pytest.mark.slow
def test_a_class_aware_v_is_exact_under_mirrored():
  """The class-aware V (labels split over the replicas with their samples)
  takes the single-device step on the global batch, as the paper's V."""
  case = run_child("class_aware")
  for step in (1, STEPS):
    ref = case["reference"][step - 1]
    dist = case["distributed"][step - 1]
    for part in ("classifier", "weight_net", "state"):
      for r in range(2):
        assert_close([v[r] for v in dist[part]], ref[part],
                     f"class-aware step {step} {part} replica {r}")
  first, last = case["reference"][0], case["reference"][-1]
  # Every head moved: the batches hold classes of all three clusters.
  heads = np.asarray(last["weight_net"][-2]) - np.asarray(
      first["weight_net"][-2])
  assert (np.abs(heads).max(axis=0) > 0).all()
  for key, want in case["reference_logs"].items():
    np.testing.assert_allclose(case["distributed_logs"][key], want,
                               rtol=1e-5, err_msg=key)


# --------------------------------------------------------------------------
# The child process. Everything below runs only as `python this_file.py`.
# --------------------------------------------------------------------------
def _setup_two_cpus():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def _child_mirrored():
  strategy = _setup_two_cpus()
  batches = make_data()
  out = {"exact": {}, "local": {}}
  for mode in MODES:
    for batchnorm in BATCHNORMS:
      ref = build_model(batchnorm, mode, half_bn=batchnorm == "bn")
      init = get_all(ref)
      ref_snaps, ref_logs = fit_and_snapshot(ref, global_dataset(batches))
      with strategy.scope():
        dist = build_model(batchnorm, mode, weights=init)
      dist_snaps, dist_logs = fit_and_snapshot(
          dist, split_dataset(batches, strategy), strategy, len(batches))
      out["exact"][f"{mode}/{batchnorm}"] = {
          "replicas": strategy.num_replicas_in_sync,
          "reference": ref_snaps, "distributed": dist_snaps,
          "reference_logs": ref_logs, "distributed_logs": dist_logs}

    # virtual_step="local", one step, plain BN (per-replica statistics), the
    # same start and first batch as the exact "bn" run above. V's update is
    # linear in the meta-gradient (plain SGD; the decay term is the same on
    # both halves), so the mean of the two half-batch runs is its reference.
    first = batches[:1]
    init = get_all(build_model("bn", mode))
    with strategy.scope():
      model = build_model("bn", mode, virtual_step="local", weights=init)
    local = fit_and_snapshot(model, split_dataset(first, strategy), strategy,
                             1)[0][-1]
    halves = []
    for i in range(2):
      half = [tuple(a[len(a) // 2 * i:len(a) // 2 * (i + 1)] for a in b)
              for b in first]
      model = build_model("bn", mode, weights=init)
      halves.append(fit_and_snapshot(model, global_dataset(half))[0][-1][
          "weight_net"])
    # Stage 3 alone: V already at the local run's result, frozen (meta lr 0,
    # no decay), per-half BN statistics as on the two replicas.
    model = build_model("bn", mode, half_bn=True, meta_lr=0.0, meta_wd=0.0)
    set_all(model, {"classifier": init["classifier"],
                    "weight_net": [np.asarray(v[0], np.float32)
                                   for v in local["weight_net"]]})
    stage3 = fit_and_snapshot(model, global_dataset(first))[0][-1]
    out["local"][mode] = {
        "local": local, "global": out["exact"][f"{mode}/bn"]["distributed"][0],
        "half_references": halves, "stage3_reference": stage3["classifier"],
        "initial_v": [v.tolist() for v in init["weight_net"]]}
  return out


def _child_class_aware():
  """The exact sync_bn case with a class-aware V: against one device."""
  strategy = _setup_two_cpus()
  batches = make_data()
  ref = build_model("sync_bn", "sum", class_aware=True)
  init = get_all(ref)
  ref_snaps, ref_logs = fit_and_snapshot(ref, global_dataset(batches))
  with strategy.scope():
    dist = build_model("sync_bn", "sum", weights=init, class_aware=True)
  dist_snaps, dist_logs = fit_and_snapshot(
      dist, split_dataset(batches, strategy), strategy, len(batches))
  return {"reference": ref_snaps, "distributed": dist_snaps,
          "reference_logs": ref_logs, "distributed_logs": dist_logs}


if __name__ == "__main__":
  if sys.argv[1] == "mirrored":
    print("RESULT" + json.dumps(_child_mirrored()))
  elif sys.argv[1] == "class_aware":
    print("RESULT" + json.dumps(_child_class_aware()))
  else:
    raise SystemExit(f"unknown child {sys.argv[1]!r}")
