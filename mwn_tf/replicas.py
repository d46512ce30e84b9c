"""Cross-replica sums: how N replicas take the step one device takes.

`MetaWeightModel.train_step` (mwn_tf/meta_model.py) writes every sum over
samples as `cross_replica_sum` (differentiable, so tapes see through it);
`replica_local` keeps a sum on one replica (`virtual_step="local"`);
`global_results` makes a step's logs global; `replica_mean` averages the
BatchNorm moving statistics so every replica holds the same values. All are
the identity on one device and outside a strategy.
"""

import tensorflow as tf


def cross_replica_sum(x):
  """Sums `x` (a tensor or a list of them) over replicas.

  Differentiable (the gradient of an all-sum is an all-sum), so it may sit
  inside a tape; the identity on one replica and in cross-replica context.
  """
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return x
  return ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)


def replica_local(x):
  """The identity: a sum that stays on this replica (see `virtual_step`)."""
  return x


def num_replicas():
  """Replicas in sync in the current context (1 outside any strategy)."""
  ctx = tf.distribute.get_replica_context()
  return 1 if ctx is None else ctx.num_replicas_in_sync


def global_results(metrics):
  """{name: result} of `metrics` over ALL replicas, for a step's logs.

  In a replica context `metric.result()` sees only this replica's share, and
  Keras reduces the per-replica logs by a plain mean (first replica on TPU):
  not the global value when replicas hold different counts (`weight_clean`).
  One all-reduce of the metrics' few scalars makes every replica report the
  global result, so any of those reductions is exact.
  """
  # tf.identity: a read of an on-read variable carries no device, which
  # MultiWorkerMirroredStrategy's all-reduce needs.
  local = [[tf.identity(v.value) for v in m.variables]
           for m in metrics]
  total = cross_replica_sum(local)
  logs = {m.name: m.stateless_result(v) for m, v in zip(metrics, total)}
  strategy = tf.distribute.get_strategy()
  if (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and
      strategy.extended._in_multi_worker_mode()):  # pylint: disable=protected-access
    # Keras 3 reduces logs across workers with strategy.reduce(MEAN, v,
    # axis=0), which fails on scalars (tensorflow/tensorflow#72388); it
    # reduces [1]-vectors to the scalars wanted.
    logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
  return logs


def replica_mean(state):
  """Floating tensors averaged over replicas; others (e.g. RNG seeds, which
  every replica advances identically) unchanged."""
  n = num_replicas()
  floats = [i for i, s in enumerate(state) if s.dtype.is_floating]
  if n == 1 or not floats:
    return state
  summed = cross_replica_sum([state[i] for i in floats])
  state = list(state)
  for i, total in zip(floats, summed):
    state[i] = total / n
  return state
