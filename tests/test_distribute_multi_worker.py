"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1.

Each worker is this file run as a script with its own TF_CONFIG (loopback
ports picked free just before the start), one CPU device each, so the
cluster has 2 replicas and every all-reduce crosses processes over gRPC.

  * Step level: two fit() steps with the global batch split in halves (worker
    p gets half p) must leave both workers with the classifier and V the
    single-device run reaches on the whole global batch (computed on the
    chief after the distributed run, outside any strategy).
  * Runner level: `python -m mwn_tf.main --strategy=multi_worker` on
    gin/smoke.gin: the chief writes the checkpoints, summaries and
    results.json into model_dir; the other worker writes only into its
    scratch folder, removed at the end, so nothing of the chief's is
    clobbered.
"""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import distribute_helpers as td

ROOT = td.ROOT
STEPS = 2


def free_ports(n):
  """n distinct free loopback ports (bound together so they differ)."""
  socks = []
  for _ in range(n):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def tf_config(ports, index):
  return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                     "task": {"type": "worker", "index": index}})


def run_cluster(argv, timeout=420, workers=2):
  """Starts `workers` processes running argv with TF_CONFIG; waits for all.

  Returns [(returncode, stdout, stderr, pid)] by worker index. A worker that
  is still running at the deadline (e.g. its peer died and it waits on a
  collective) is killed, so the test fails instead of hanging; whatever
  happens, every process started (each leads its own process group) is
  killed with its group before this returns or raises.
  """
  ports = free_ports(workers)
  procs = []
  try:
    for i in range(workers):
      env = dict(os.environ, TF_CONFIG=tf_config(ports, i),
                 CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
                 PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH",
                                                               ""))
      procs.append(subprocess.Popen(argv, cwd=ROOT, env=env, text=True,
                                    stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE,
                                    start_new_session=True))
    deadline = time.monotonic() + timeout
    out = []
    for p in procs:
      try:
        stdout, stderr = p.communicate(
            timeout=max(1.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        _kill_groups(procs)
        stdout, stderr = p.communicate()
        stderr += "\n[killed at the test's deadline]"
      out.append((p.returncode, stdout, stderr, p.pid))
    return out
  finally:
    _kill_groups(procs)
    for p in procs:
      p.wait(timeout=60)


def _kill_groups(procs):
  for p in procs:
    try:
      os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass  # It and its group are gone.


def _result(run):
  code, stdout, stderr, _ = run
  lines = [l for l in stdout.splitlines() if l.startswith("RESULT")]
  assert code == 0 and lines, stdout[-2000:] + stderr[-4000:]
  return json.loads(lines[-1][len("RESULT"):])


@pytest.mark.slow
def test_two_workers_match_one_device(mode="sum", batchnorm="sync_bn"):
  """Sync BN, so the one-device reference is plain BN on the global batch;
  both weight normalisations and plain BN are covered by test_distribute."""
  runs = run_cluster([sys.executable, os.path.abspath(__file__), "steps",
                      mode, batchnorm])
  results = [_result(r) for r in runs]
  reference = results[0]["reference"]
  for worker, res in enumerate(results):
    assert res["replicas"] == 2 and res["workers"] == 2
    assert res["is_chief"] == (worker == 0)
    for part in ("classifier", "state", "weight_net"):
      got = [v[0] for v in res["distributed"][part]]   # its one replica
      td.assert_close(got, reference[part], f"worker {worker} {part}")
  assert any(not np.allclose(a, b) for a, b in zip(
      reference["weight_net"], results[0]["initial"]["weight_net"]))


@pytest.mark.slow
def test_runner_chief_writes_and_worker_does_not_clobber(tmp_path):
  model_dir = str(tmp_path / "run")
  runs = run_cluster([sys.executable, "-m", "mwn_tf.main",
                      "--gin_file=gin/smoke.gin", "--strategy=multi_worker",
                      f"--model_dir={model_dir}"], timeout=540)
  for i, (code, stdout, stderr, _) in enumerate(runs):
    assert code == 0, f"worker {i}:\n{stdout[-2000:]}\n{stderr[-5000:]}"
  chief_pid = runs[0][3]
  with open(os.path.join(model_dir, "results.json")) as f:
    results = json.load(f)
  assert results["finished"] and results["steps"] == 2
  # Checkpoints: the chief's, in model_dir; the worker's scratch is gone.
  ckpts = glob.glob(os.path.join(model_dir, "checkpoints", "ckpt-*.index"))
  assert ckpts, os.listdir(model_dir)
  leftovers = [p for p in os.listdir(model_dir) if p.startswith("workertemp")]
  assert not leftovers, leftovers
  # Summaries: every event file in model_dir was written by the chief
  # (tf.summary names them ...<hostname>.<pid>...).
  events = glob.glob(os.path.join(model_dir, "**", "events.out.tfevents.*"),
                     recursive=True)
  assert events
  for path in events:
    if path.endswith(".session"):
      continue   # tensorboard's own writer: no pid in the name
    assert f".{chief_pid}." in os.path.basename(path), (path, chief_pid)


# --------------------------------------------------------------------------
def _child_steps(mode, batchnorm):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  strategy = tf.distribute.MultiWorkerMirroredStrategy()
  batches = td.make_data(steps=STEPS)
  initial = td.get_all(td.build_model(batchnorm, mode))
  with strategy.scope():
    model = td.build_model(batchnorm, mode, weights=initial)
  snaps, _ = td.fit_and_snapshot(model, td.split_dataset(batches, strategy),
                                 strategy, STEPS)
  resolver = strategy.cluster_resolver
  out = {"replicas": strategy.num_replicas_in_sync,
         "workers": len(resolver.cluster_spec().as_dict()["worker"]),
         "is_chief": bool(strategy.extended.should_checkpoint),
         "distributed": snaps[-1],
         "initial": {k: [v.tolist() for v in vs] for k, vs in initial.items()}}
  if resolver.task_id == 0:
    # The single-device run on the global batches, outside the strategy.
    reference = td.build_model(batchnorm, mode, weights=initial)
    snaps, _ = td.fit_and_snapshot(reference, td.global_dataset(batches))
    out["reference"] = snaps[-1]
  return out


if __name__ == "__main__":
  if sys.argv[1] == "steps":
    print("RESULT" + json.dumps(_child_steps(*sys.argv[2:4])), flush=True)
  else:
    raise SystemExit(f"unknown child {sys.argv[1]!r}")
