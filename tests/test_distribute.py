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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, M, D, H, K = 12, 8, 5, 7, 4   # global train / meta batch, inputs, hidden, classes
STEPS = 3
MODES = ("none", "sum")
BATCHNORMS = ("bn", "sync_bn")  # a BN-free classifier runs a subset of this
RTOL, ATOL = 2e-5, 2e-6   # float32, a few ops of rounding amplified by 3 steps


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


def _assert_close(got, want, what):
  assert len(got) == len(want), what
  for i, (g, w) in enumerate(zip(got, want)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=RTOL,
                               atol=ATOL, err_msg=f"{what}, variable {i}")


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
        _assert_close([v[r] for v in per_replica], ref[part],
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
    _assert_close([v[r] for v in local["weight_net"]], want_v,
                  f"local {mode}: V on replica {r}")
    _assert_close([v[r] for v in local["classifier"]],
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
        _assert_close([v[r] for v in dist[part]], ref[part],
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


def make_data(steps=STEPS, seed=1):
  """Global batches: a list of (x [N,D], y [N], noisy [N], xm [M,D], ym [M])."""
  rng = np.random.default_rng(seed)
  return [(rng.normal(size=(N, D)).astype(np.float32),
           rng.integers(0, K, N).astype(np.int32),
           np.arange(N) % 3 == s % 3,
           rng.normal(size=(M, D)).astype(np.float32),
           rng.integers(0, K, M).astype(np.int32)) for s in range(steps)]


def half_batch_norm_class():
  """BatchNormalization that normalises each half of the batch on its own."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  class HalfBatchNorm(keras.layers.BatchNormalization):
    """Ghost BN over 2 groups: what 2 replicas of plain BN compute together.

    Moving statistics move by the mean of the groups' updates, which is what
    MetaWeightModel writes on every replica.
    """

    def call(self, inputs, training=None, mask=None):
      if not training:
        return super().call(inputs, training=False)
      outs, means, variances = [], [], []
      for part in tf.split(inputs, 2):
        mean, var = tf.nn.moments(part, [0])
        outs.append(tf.nn.batch_normalization(part, mean, var, self.beta,
                                              self.gamma, self.epsilon))
        means.append(mean)
        variances.append(var)
      for variable, batch in ((self.moving_mean, means),
                              (self.moving_variance, variances)):
        variable.assign(variable * self.momentum +
                        tf.add_n(batch) / 2 * (1.0 - self.momentum))
      return tf.concat(outs, 0)

  return HalfBatchNorm


def build_model(batchnorm, mode, *, virtual_step="global", half_bn=False,
                meta_lr=0.3, meta_wd=1e-2, weights=None, class_aware=False,
                **compile_kw):
  """Classifier Dense(L2)-[BN]-ReLU-Dense and V, compiled; float32.

  The L2 kernel regularizer and both decays check that nothing added per
  replica is counted N times; the LR schedule that α_t follows it.
  """
  import keras  # pylint: disable=g-import-not-at-top
  import mwn_tf  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  layers = [keras.Input((D,)),
            keras.layers.Dense(H, kernel_regularizer=keras.regularizers.L2(
                1e-2))]
  if batchnorm != "no_bn":
    bn = half_batch_norm_class() if half_bn else keras.layers.BatchNormalization
    layers.append(bn(momentum=0.9))
  layers += [keras.layers.ReLU(), keras.layers.Dense(K)]
  clf = keras.Sequential(layers)
  keras.utils.set_random_seed(7)
  vnet = (mwn_tf.ClassAwareWeightNet((0, 1, 1, 2), hidden_units=(16,))
          if class_aware else mwn_tf.WeightNet(hidden_units=(16,)))
  model = mwn_tf.MetaWeightModel(
      clf, vnet, normalize_weights=mode, weight_decay=5e-2,
      meta_weight_decay=meta_wd, virtual_step=virtual_step,
      sync_batchnorm=batchnorm == "sync_bn")
  lr = keras.optimizers.schedules.PiecewiseConstantDecay([1], [0.5, 0.2])
  model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9),
                meta_optimizer=keras.optimizers.SGD(meta_lr), **compile_kw)
  if weights is not None:
    set_all(model, weights)
  return model


def get_all(model):
  return {"classifier": [v.numpy() for v in model.classifier.weights],
          "weight_net": [v.numpy() for v in model.weight_net.weights]}


def set_all(model, weights):
  for v, w in zip(model.classifier.weights, weights["classifier"]):
    v.assign(w)
  for v, w in zip(model.weight_net.weights, weights["weight_net"]):
    v.assign(w)


def snapshot(model, strategy=None):
  """Variable values; with a strategy, [variable][replica] from every copy."""
  def read(variables):
    if strategy is None:
      return [v.numpy().tolist() for v in variables]
    return [[t.numpy().tolist() for t in
             strategy.experimental_local_results(v.value)] for v in variables]
  return {"classifier": read(model.classifier.trainable_variables),
          "state": read(model.classifier.non_trainable_variables),
          "weight_net": read(model.weight_net.trainable_variables)}


def fit_and_snapshot(model, dataset, strategy=None, steps=None):
  """fit() `steps` steps of `dataset`; snapshots after every step, epoch logs.

  `steps` must be given for datasets of unknown length (as the runner does):
  else fit() makes one more call that hits the end of the data, and in a
  graph (non-XLA) step the ops that do not wait for the data still run
  (optimizer.iterations += 1, a scalar Mean's count += 1).
  """
  import keras  # pylint: disable=g-import-not-at-top
  snaps = []

  class Snap(keras.callbacks.Callback):

    def on_train_batch_end(self, batch, logs=None):
      snaps.append(snapshot(model, strategy))

  history = model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0,
                      callbacks=[Snap()])
  return snaps, {k: float(v[-1]) for k, v in history.history.items()}


def global_dataset(batches):
  """Single device: one (train, meta) element per global batch."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  def gen():
    for x, y, noisy, xm, ym in batches:
      yield ({"image": x, "label": y, "is_noisy": noisy}, (xm, ym))
  spec = ({"image": tf.TensorSpec([None, D], tf.float32),
           "label": tf.TensorSpec([None], tf.int32),
           "is_noisy": tf.TensorSpec([None], tf.bool)},
          (tf.TensorSpec([None, D], tf.float32),
           tf.TensorSpec([None], tf.int32)))
  return tf.data.Dataset.from_generator(gen, output_signature=spec).apply(
      tf.data.experimental.assert_cardinality(len(batches)))


def split_dataset(batches, strategy, parts=2):
  """Replica r (pipeline or local device) gets the r-th 1/parts of each batch.

  With one input pipeline and several local replicas (MirroredStrategy),
  distribute_datasets_from_function hands consecutive elements to replicas
  in order, so the pipeline yields part 0, part 1, ... of every batch. With
  one pipeline per worker (MultiWorkerMirroredStrategy, one device each),
  pipeline p yields part p.
  """
  def dataset_fn(ctx):
    def cut(a, i):
      size = len(a) // parts
      return a[i * size:(i + 1) * size]
    if ctx.num_input_pipelines == 1:
      pieces = [tuple(cut(a, i) for a in b) for b in batches
                for i in range(parts)]
    else:
      pieces = [tuple(cut(a, ctx.input_pipeline_id) for a in b)
                for b in batches]
    return global_dataset(pieces)
  return strategy.distribute_datasets_from_function(dataset_fn)


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
