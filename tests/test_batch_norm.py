"""MetaBatchNormalization: Keras' BatchNorm with a hand-written second
derivative, which lowers the exact step's peak memory.

Checked against references that do not share its code:
  * Keras' own BatchNormalization: forward values and moving statistics bit
    for bit, first derivatives at float32 rounding;
  * a float64 composite BatchNorm written here (two-pass moments WITHOUT
    tf.nn.moments' stop_gradient, whose second derivative is incomplete), for
    every first and second derivative, including those through the batch
    mean and variance outputs;
  * under MirroredStrategy with synchronized statistics, one device on the
    global batch (child process, as in test_distribute.py).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AXES = [0, 1, 2]
EPS = 1e-5


def _inputs(dtype, seed=0, shape=(6, 5, 4, 3)):
  rng = np.random.default_rng(seed)
  c = shape[-1]
  return dict(
      x=rng.normal(1.0, 2.0, shape).astype(dtype),
      gamma=rng.normal(size=c).astype(dtype),
      beta=rng.normal(size=c).astype(dtype),
      # The objective's coefficients: per-sample weights w, and fixed
      # cotangents for y, the mean and the variance.
      w=rng.normal(size=shape[0]).astype(dtype),
      s=rng.normal(size=2).astype(dtype),
      cy=rng.normal(size=shape).astype(dtype),
      cm=rng.normal(size=c).astype(dtype),
      cv=rng.normal(size=c).astype(dtype),
      # Directions for the second-order product.
      vx=rng.normal(size=shape).astype(dtype),
      vg=rng.normal(size=c).astype(dtype),
      vb=rng.normal(size=c).astype(dtype))


def _reference_bn(x, gamma, beta):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  mean = tf.reduce_mean(x, AXES)
  var = tf.reduce_mean(tf.square(x - mean), AXES)
  y = (x - mean) * tf.math.rsqrt(var + EPS) * gamma + beta
  return y, mean, var


def _meta_bn(x, gamma, beta):
  from mwn_tf.models.batch_norm import batch_norm_train  # pylint: disable=g-import-not-at-top
  return batch_norm_train(x, gamma, beta, AXES, EPS)


def _derivatives(bn, d, share=1.0):
  """Outputs, first derivatives and a second-order product of `bn`.

  The objective is MW-Net's shape: Σ_i w_i L_i with per-sample L_i = <y_i,
  cy_i>, plus s_0 <mean, cm> + s_1 <var, cv> (times `share`: a replica's
  part of those terms). Its gradient g(x, γ, β, w) is
  contracted with (vx, vg, vb), and that scalar is differentiated again with
  respect to x, γ, β, s AND w (the derivative MW-Net's stage 2 needs).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x, gamma, beta, w, s = (tf.convert_to_tensor(d[k])
                           for k in ("x", "gamma", "beta", "w", "s"))
  with tf.GradientTape(persistent=True) as outer:
    outer.watch([x, gamma, beta, w, s])
    with tf.GradientTape() as inner:
      inner.watch([x, gamma, beta])
      y, mean, var = bn(x, gamma, beta)
      per_sample = tf.reduce_sum(tf.reshape(y * d["cy"], [y.shape[0], -1]), 1)
      # s scales the mean and variance terms, so d²/ds checks the transpose
      # with respect to the backward's upstream inputs for those outputs.
      objective = (tf.reduce_sum(w * per_sample)
                   + share * s[0] * tf.reduce_sum(mean * d["cm"])
                   + share * s[1] * tf.reduce_sum(var * d["cv"]))
    grads = inner.gradient(objective, [x, gamma, beta])
    contracted = sum(tf.reduce_sum(g * v) for g, v in
                     zip(grads, (d["vx"], d["vg"], d["vb"])))
  second = outer.gradient(contracted, [x, gamma, beta, w, s],
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
  return [y, mean, var] + grads + second


NAMES = ["y", "mean", "var", "dx", "dgamma", "dbeta",
         "d2/dx", "d2/dgamma", "d2/dbeta", "d2/dw", "d2/ds"]


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_every_first_and_second_derivative_matches_a_float64_reference(graph):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  d = _inputs(np.float64)

  def both():
    return _derivatives(_reference_bn, d), _derivatives(_meta_bn, d)

  want, got = tf.function(both)() if graph else both()
  for name, g, v in zip(NAMES, got, want):
    np.testing.assert_allclose(g.numpy(), v.numpy(), rtol=1e-10, atol=1e-12,
                               err_msg=name)
  # The terms are not trivially zero (so the check has teeth), except
  # d²/dβ: the gradient does not depend on β.
  for name, v in zip(NAMES, want):
    assert (np.abs(v.numpy()).max() > 1e-2) == (name != "d2/dbeta"), name


def test_the_keras_reference_misses_part_of_the_variance_hessian():
  """Why the reference above is hand-written: tf.nn.moments' stop_gradient
  drops a term of d²var/dx², so comparing with Keras' BN at second order
  would be comparing with a wrong answer."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  d = _inputs(np.float64)

  def keras_like(x, gamma, beta):
    mean, var = tf.nn.moments(x, AXES)
    return tf.nn.batch_normalization(x, mean, var, beta, gamma, EPS), mean, var

  ours = _derivatives(_meta_bn, d)
  theirs = _derivatives(keras_like, d)
  assert np.abs((ours[6] - theirs[6]).numpy()).max() > 1e-4
  # ... while everything MW-Net uses (first order, and d²/dw) agrees.
  for i in (3, 4, 5, 9, 10):
    np.testing.assert_allclose(ours[i].numpy(), theirs[i].numpy(), rtol=1e-10,
                               atol=1e-12, err_msg=NAMES[i])


def _keras_pair(dtype="float32"):
  """Keras' layer and ours, built alike with the same random weights."""
  import keras  # pylint: disable=g-import-not-at-top
  from mwn_tf.models.batch_norm import MetaBatchNormalization  # pylint: disable=g-import-not-at-top
  kwargs = dict(axis=-1, momentum=0.9, epsilon=EPS, dtype=dtype)
  ref = keras.layers.BatchNormalization(**kwargs)
  ours = MetaBatchNormalization(**kwargs)
  for layer in (ref, ours):
    layer.build((None, 5, 4, 3))
  rng = np.random.default_rng(3)
  for a, b in zip(ref.weights, ours.weights):
    value = rng.normal(size=a.shape).astype(np.float32)
    if "variance" in a.path:
      value = np.abs(value) + 0.5
    a.assign(value)
    b.assign(value)
  return ref, ours


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_same_values_moving_statistics_and_gradients_as_keras(graph):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  ref, ours = _keras_pair()
  d = _inputs(np.float32, seed=1)
  x = tf.constant(d["x"])

  def step(layer):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x, training=True)
      loss = tf.reduce_sum(y * d["cy"])
    return [y] + tape.gradient(loss, [x] + layer.trainable_weights)

  run = tf.function(step) if graph else step
  for _ in range(2):   # the second step starts from moved statistics
    want, got = run(ref), run(ours)
    np.testing.assert_array_equal(got[0].numpy(), want[0].numpy())
    for a, b in zip(ref.non_trainable_weights, ours.non_trainable_weights):
      np.testing.assert_array_equal(b.numpy(), a.numpy())
    for name, g, v in zip(["dx", "dgamma", "dbeta"], got[1:], want[1:]):
      np.testing.assert_allclose(g.numpy(), v.numpy(), rtol=1e-5, atol=1e-5,
                                 err_msg=name)
  # Inference runs Keras' own code on the moving statistics.
  np.testing.assert_array_equal(ours(x, training=False).numpy(),
                                ref(x, training=False).numpy())


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_upcasts_like_keras(policy):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  ref, ours = _keras_pair(dtype=policy)
  x = tf.constant(_inputs(np.float32, seed=2)["x"])
  want, got = ref(x, training=True), ours(x, training=True)
  assert got.dtype == want.dtype == tf.as_dtype(policy.split("_")[1])
  np.testing.assert_array_equal(got.numpy(), want.numpy())
  for a, b in zip(ref.non_trainable_weights, ours.non_trainable_weights):
    assert b.dtype == "float32"
    np.testing.assert_array_equal(b.numpy(), a.numpy())


def test_stateless_call_returns_the_moving_statistics_update():
  """The fast-weights path: nothing is assigned, the new state comes back."""
  import keras  # pylint: disable=g-import-not-at-top
  ref, ours = _keras_pair()
  x = _inputs(np.float32, seed=4)["x"]
  before = [v.numpy() for v in ours.non_trainable_weights]
  outs = []
  for layer in (ref, ours):
    model = keras.Sequential([keras.Input((5, 4, 3)), layer])
    outs.append(model.stateless_call(
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables], x, training=True))
  (y_ref, state_ref), (y, state) = outs
  np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
  for a, b in zip(state, state_ref):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for b, v in zip(before, ours.non_trainable_weights):
    np.testing.assert_array_equal(v.numpy(), b)   # untouched


def test_checkpoints_and_saved_configs_interchange_with_keras_bn(tmp_path):
  """A checkpoint written with Keras' BN (every run before this layer) loads
  into the registry model, and the layer round-trips through .keras files."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import mwn_tf  # pylint: disable=g-import-not-at-top
  from mwn_tf.models import layers  # pylint: disable=g-import-not-at-top
  from mwn_tf.models.batch_norm import MetaBatchNormalization  # pylint: disable=g-import-not-at-top

  def build(bn_class, seed):
    original = layers.MetaBatchNormalization
    layers.MetaBatchNormalization = bn_class
    try:
      keras.utils.set_random_seed(seed)
      return mwn_tf.models.get("resnet32", num_classes=10,
                               input_shape=(32, 32, 3))
    finally:
      layers.MetaBatchNormalization = original

  old = build(keras.layers.BatchNormalization, 0)
  for v in old.non_trainable_variables:
    v.assign(v + 0.25)
  tf.train.Checkpoint(model=old).write(str(tmp_path / "ckpt"))
  new = build(MetaBatchNormalization, 1)
  assert any(isinstance(l, MetaBatchNormalization) for l in new.layers)
  tf.train.Checkpoint(model=new).read(str(tmp_path / "ckpt")).assert_consumed()
  for a, b in zip(old.variables, new.variables):
    np.testing.assert_array_equal(b.numpy(), a.numpy())

  new.save(tmp_path / "m.keras")
  loaded = keras.saving.load_model(tmp_path / "m.keras")
  assert sum(isinstance(l, MetaBatchNormalization) for l in loaded.layers) == 31
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  np.testing.assert_array_equal(loaded(x, training=False).numpy(),
                                new(x, training=False).numpy())


def test_falls_back_to_keras_for_masks_and_renorm():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  from mwn_tf.models.batch_norm import MetaBatchNormalization  # pylint: disable=g-import-not-at-top
  x = tf.constant(_inputs(np.float32, seed=5)["x"])
  mask = tf.constant(np.arange(6 * 5 * 4).reshape(6, 5, 4) % 3 > 0)
  ref, ours = keras.layers.BatchNormalization(), MetaBatchNormalization()
  np.testing.assert_array_equal(ours(x, training=True, mask=mask).numpy(),
                                ref(x, training=True, mask=mask).numpy())
  ref = keras.layers.BatchNormalization(renorm=True)
  ours = MetaBatchNormalization(renorm=True)
  np.testing.assert_array_equal(ours(x, training=True).numpy(),
                                ref(x, training=True).numpy())


@pytest.mark.slow
def test_synchronized_statistics_under_mirrored_strategy_match_one_device():
  """2 replicas, synchronized=True, each holding half of the global batch:
  outputs, statistics, first derivatives and the second-order products equal
  one device's on the whole batch."""
  env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="",
             TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, os.path.abspath(__file__)], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
  assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
  result = json.loads(lines[-1][len("RESULT"):])
  for name, one, two in zip(NAMES, result["one"], result["mirrored"]):
    np.testing.assert_allclose(np.asarray(two), np.asarray(one), rtol=1e-9,
                               atol=1e-11, err_msg=name)


def _mirrored_child():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from mwn_tf.models.batch_norm import batch_norm_train  # pylint: disable=g-import-not-at-top
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  d = _inputs(np.float64, seed=6, shape=(8, 3, 2, 3))
  one = _derivatives(_meta_bn, d)

  def sync_bn(x, gamma, beta):
    return batch_norm_train(x, gamma, beta, AXES, EPS, synchronized=True)

  def replica_fn():
    k = tf.distribute.get_replica_context().replica_id_in_sync_group
    half = {}
    for key, value in d.items():
      value = tf.constant(value)
      if value.shape[0] == 8:     # per-example: this replica's half
        value = tf.gather(tf.reshape(value, (2, 4) + value.shape[1:]), k)
      half[key] = value
    # Each replica holds half of the mean and variance terms.
    return _derivatives(sync_bn, half, share=0.5)

  per_replica = tf.function(lambda: strategy.run(replica_fn))()
  halves = [strategy.experimental_local_results(t) for t in per_replica]
  merged = []
  for name, (a, b) in zip(NAMES, halves):
    if name in ("y", "dx", "d2/dx", "d2/dw"):     # per-example: concatenate
      merged.append(np.concatenate([a.numpy(), b.numpy()]).tolist())
    elif name in ("mean", "var"):                  # global: equal copies
      assert np.array_equal(a.numpy(), b.numpy()), name
      merged.append(a.numpy().tolist())
    else:                                          # per-replica shares: sum
      merged.append((a.numpy() + b.numpy()).tolist())
  print("RESULT" + json.dumps({"one": [t.numpy().tolist() for t in one],
                               "mirrored": merged}))


if __name__ == "__main__":
  _mirrored_child()
