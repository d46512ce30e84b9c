"""One place that turns `--strategy` / `--tpu` into a `tf.distribute.Strategy`.

The runner builds the model, both optimizers, the metrics and the checkpoint
restore inside `strategy.scope()`, and derives the per-replica batch from the
GLOBAL batch in the config and `strategy.num_replicas_in_sync`, so changing
the strategy never changes what a step means (see `mwn_tf.meta_model`).
"""

import json
import os
import signal
import threading
from typing import Optional

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


class PeerLost(Exception):
  """Multi-worker: a collective failed because another worker died, or
  waited longer than `train_eval.collective_timeout_s` for one that hung."""


def get_strategy(name: str = "default", tpu: Optional[str] = None,
                 collective_timeout_s: Optional[float] = None
                 ) -> tf.distribute.Strategy:
  """Builds the distribution strategy named by `name`.

  Args:
    name: One of
      "default": no distribution (the default strategy; one device).
      "mirrored": `MirroredStrategy` over every local GPU; on a machine
        without GPUs, over its logical CPU devices (one unless the CPU was
        split with `tf.config.set_logical_device_configuration` before TF
        initialised, as launch/multi_gpu.sh does for a dry run).
      "multi_worker": `MultiWorkerMirroredStrategy`; every worker reads the
        cluster and its own task from the TF_CONFIG environment variable.
      "tpu": `TPUStrategy` on the TPU named by `tpu`.
    tpu: For "tpu" only: the TPU's name or gRPC address (`grpc://ip:8470`),
      or "local" on a Cloud TPU VM. None (or "") lets the resolver read the
      environment (TPU_NAME; on a TPU VM, the local chips).
    collective_timeout_s: For "multi_worker" only: seconds a collective may
      wait for the other workers before it fails (and `peer_lost` turns the
      error into `PeerLost`); 0 or None: forever.

  Returns:
    The strategy. Enter `strategy.scope()` before creating variables.

  Raises:
    ValueError: `name` is unknown, `tpu` is given for a non-TPU strategy, or
      TF_CONFIG is malformed.
    RuntimeError: the TPU cannot be found or reached.
  """
  if name not in STRATEGIES:
    raise ValueError(
        f"Unknown strategy {name!r}; expected one of {STRATEGIES}. Use "
        f"'mirrored' for several GPUs on one machine, 'multi_worker' for "
        f"several machines (TF_CONFIG), 'tpu' with --tpu=<name|address|local>.")
  if tpu and name != "tpu":
    raise ValueError(
        f"--tpu={tpu!r} was given with --strategy={name!r}; pass "
        f"--strategy=tpu to use a TPU, or drop --tpu.")
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    devices = None  # MirroredStrategy's default: every GPU.
    if not tf.config.list_logical_devices("GPU"):
      devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)
  if name == "multi_worker":
    _check_tf_config()
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=float(collective_timeout_s or 0) or None)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=options)
    _sigterm_ends_the_process()
    return strategy
  return _tpu_strategy(tpu)


def peer_lost(error: Exception, strategy: tf.distribute.Strategy,
              timeout_s: Optional[float]) -> Optional[PeerLost]:
  """The `PeerLost` that `error` means under `strategy`, or None.

  Only a multi-worker strategy has peers: elsewhere (and for other errors)
  None, and the caller re-raises `error`.

  Args:
    error: what training raised.
    strategy: the run's strategy.
    timeout_s: the run's `train_eval.collective_timeout_s`.
  """
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return None
  if isinstance(error, tf.errors.DeadlineExceededError):
    what = (f"a collective waited more than {timeout_s or 0:g} s "
            f"(train_eval.collective_timeout_s) for another worker")
  elif isinstance(error, (tf.errors.UnavailableError,
                          tf.errors.CancelledError, tf.errors.AbortedError)):
    what = "another worker is gone (a collective failed: connection lost)"
  else:
    return None
  return PeerLost(
      f"{what}; stop every worker and rerun the same command on all of them "
      f"to resume from the last checkpoint (raise "
      f"train_eval.collective_timeout_s if a worker is only slow).")


def _sigterm_ends_the_process():
  """Undoes the SIGTERM handler the multi-worker runtime installs.

  With its coordination service, TensorFlow catches SIGTERM in C++ to
  notify its own preemption handler (which this runner does not use): the
  signal is logged and then ignored, so a worker could not be stopped by
  SIGTERM at all. Back to the default action; `stopping.SignalStop` turns it
  into a clean stop while training.
  """
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def tpu_resolver(tpu: Optional[str] = None):
  """The cluster resolver for `tpu` (split out so tests can check arguments).

  Args:
    tpu: TPU name, `grpc://` address, "local" (Cloud TPU VM), or None/"" to
      let the resolver use the environment.

  Returns:
    A `tf.distribute.cluster_resolver.TPUClusterResolver`.

  Raises:
    RuntimeError: no TPU matches `tpu`.
  """
  try:
    return tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
  except (ValueError, RuntimeError, tf.errors.OpError) as e:
    raise RuntimeError(
        f"Cannot find the TPU {tpu!r} ({e}). On a Cloud TPU VM pass "
        f"--tpu=local; for a TPU node pass its name or grpc://<ip>:8470 from "
        f"`gcloud compute tpus list`, and check its zone and project.") from e


def _tpu_strategy(tpu):
  resolver = tpu_resolver(tpu)
  try:
    # A remote TPU (a TPU node) must be connected to; a TPU VM is local.
    if tpu not in (None, "", "local"):
      tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (ValueError, RuntimeError, tf.errors.OpError) as e:
    raise RuntimeError(
        f"Found the TPU {tpu!r} but could not initialise it ({e}). Is it "
        f"READY (`gcloud compute tpus tpu-vm describe`), is no other process "
        f"holding it, and does its TF version match this one "
        f"({tf.__version__})?") from e
  return tf.distribute.TPUStrategy(resolver)


def _check_tf_config():
  """Fails early, with a readable message, on a broken TF_CONFIG.

  A missing TF_CONFIG is allowed: MultiWorkerMirroredStrategy then runs as
  one worker (a one-machine dry run).
  """
  raw = os.environ.get("TF_CONFIG")
  if not raw:
    return
  example = ('{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
             '"task": {"type": "worker", "index": 0}}')
  try:
    config = json.loads(raw)
    kind, index = config["task"]["type"], int(config["task"]["index"])
    tasks = config["cluster"][kind]
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"TF_CONFIG is not valid ({e!r}); expected e.g. "
                     f"{example}, got {raw!r}.") from e
  if not 0 <= index < len(tasks):
    raise ValueError(f"TF_CONFIG task index {index} is out of range for the "
                     f"{len(tasks)} {kind!r} task(s) in {raw!r}.")
