"""The fast modes and mixed precision (the exact step's XLA and
loss-scaled variants are tested in tests/test_meta_model.py; the benchmark
harness's own tests are in tests/benchmark/).

* The fast modes do what they say: `meta_interval` leaves V alone on the other
  steps and takes exactly a weighted step there; `virtual_layers` matches
  central finite differences of ITS objective (only the last layers move in
  the virtual step), differs from the exact step, and still moves V; both
  with the class-aware V too (labels reach V on every kind of step).
* Mixed precision: bfloat16 and float16 (with loss scaling) stay close to
  float32; a float16 step whose scaled gradients overflow is skipped whole.
"""

import numpy as np
import pytest
import tensorflow as tf
import keras

import mwn_tf
import exactness
from exactness import D
from exactness import K


# -------------------------------------------------------------- fast modes --
def _fast_model(*, meta_lr=0.3, batchnorm=True, class_aware=False,
                **options):
  clf = exactness.classifier(batchnorm)
  keras.utils.set_random_seed(7)
  vnet = (mwn_tf.ClassAwareWeightNet(exactness.CLUSTER_MAP, hidden_units=(6,),
                                     dtype="float64") if class_aware else
          mwn_tf.WeightNet(hidden_units=(6,), dtype="float64"))
  model = mwn_tf.MetaWeightModel(clf, vnet, normalize_weights="sum",
                                 weight_decay=0.0, meta_weight_decay=0.0,
                                 **options)
  model.compile(optimizer=keras.optimizers.SGD(0.5),
                meta_optimizer=keras.optimizers.SGD(meta_lr))
  return model


def _batches(steps):
  pairs = [exactness.random_batch(seed=s) for s in range(1, steps + 1)]
  data = exactness.pair_dataset(*pairs[0])
  for pair in pairs[1:]:
    data = data.concatenate(exactness.pair_dataset(*pair))
  return data


def _values(variables):
  return [v.numpy().copy() for v in variables]


def _assert_all_close(got, want, **tol):
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, **tol)


@pytest.mark.parametrize("class_aware", [False, True])
def test_meta_interval_skips_the_meta_update_and_takes_a_weighted_step(
    class_aware):
  """meta_interval=3 over 4 steps == exact step, 2 steps with V frozen, exact
  step: V moves on steps 0 and 3 only, the classifier on every step."""
  fast = _fast_model(meta_interval=3, class_aware=class_aware)
  ref = _fast_model(class_aware=class_aware)
  v_trace = [_values(fast.weight_net.trainable_variables)]
  for step in range(4):
    data = exactness.pair_dataset(*exactness.random_batch(seed=10 + step))
    before = _values(fast.classifier.trainable_variables)
    fast.fit(data, verbose=0)
    v_trace.append(_values(fast.weight_net.trainable_variables))
    assert not all(np.allclose(a, b) for a, b in zip(
        before, _values(fast.classifier.trainable_variables)))
    # The reference: an exact step, with V frozen (meta lr 0) off the grid.
    ref.meta_optimizer.learning_rate.assign(0.3 if step % 3 == 0 else 0.0)
    ref.fit(data, verbose=0)
  for step, moved in enumerate([True, False, False, True]):
    same = all(np.array_equal(a, b) for a, b in
               zip(v_trace[step], v_trace[step + 1]))
    assert same != moved, f"step {step}"
  _assert_all_close(_values(fast.classifier.trainable_variables),
                    _values(ref.classifier.trainable_variables),
                    rtol=1e-10, atol=1e-13)
  _assert_all_close(_values(fast.weight_net.trainable_variables),
                    _values(ref.weight_net.trainable_variables),
                    rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("batchnorm,class_aware", [(False, False),
                                                   (True, False),
                                                   (False, True)])
def test_virtual_layers_meta_gradient_matches_finite_differences(
    batchnorm, class_aware):
  """virtual_layers=1: θ̂ moves only the last Dense; its meta-gradient vs
  central differences of exactly that objective, in float64."""
  x, y, xm, ym = exactness.random_batch()
  alpha, eps = 0.5, 1e-6
  model = _fast_model(meta_lr=1.0, batchnorm=batchnorm, virtual_layers=1,
                      class_aware=class_aware)
  clf, vnet = model.classifier, model.weight_net
  theta = _values(clf.trainable_variables)
  state = _values(clf.non_trainable_variables)
  last = {id(v) for v in clf.layers[-1].trainable_variables}
  moving = [id(v) in last for v in clf.trainable_variables]
  assert sum(moving) == 2 and moving[-2:] == [True, True]
  phi0 = _values(vnet.trainable_variables)

  def meta_objective(phi):
    theta_t = [tf.constant(t) for t in theta]
    with tf.GradientTape() as tape:
      tape.watch(theta_t)
      logits, _ = clf.stateless_call(theta_t, state, x, training=True)
      losses = keras.ops.sparse_categorical_crossentropy(y, logits, True)
    v_in = tf.reshape(losses, [-1, 1])
    w, _ = vnet.stateless_call([tf.constant(p) for p in phi], [],
                               (v_in, y) if class_aware else v_in)
    w = tf.reshape(w, [-1])
    grads = tape.gradient(losses, theta_t,
                          output_gradients=w / tf.reduce_sum(w))
    fast = [t - alpha * g if move else t
            for t, g, move in zip(theta_t, grads, moving)]
    meta_logits, _ = clf.stateless_call(fast, state, xm, training=True)
    return float(tf.reduce_mean(
        keras.ops.sparse_categorical_crossentropy(ym, meta_logits, True)))

  expected = exactness.central_differences(meta_objective, phi0, eps)
  model.fit(exactness.pair_dataset(x, y, xm, ym), verbose=0)
  got = [a - b for a, b in zip(phi0, _values(vnet.trainable_variables))]
  assert max(np.abs(g).max() for g in expected) > 1e-5  # V does move
  _assert_all_close(got, expected, rtol=1e-5, atol=1e-9)
  # And it is not the exact meta-gradient.
  exact = _fast_model(meta_lr=1.0, batchnorm=batchnorm,
                      class_aware=class_aware)
  exact.fit(exactness.pair_dataset(x, y, xm, ym), verbose=0)
  exact_step = [a - b for a, b in
                zip(phi0, _values(exact.weight_net.trainable_variables))]
  assert not all(np.allclose(a, b, rtol=1e-3) for a, b in
                 zip(got, exact_step))


@pytest.mark.parametrize("batchnorm,virtual_layers,normalize,class_aware", [
    (False, None, "none", False), (False, None, "sum", False),
    (True, None, "none", False), (True, None, "sum", False),
    (False, 1, "sum", False), (True, 1, "none", False),
    (True, None, "sum", True), (False, 1, "sum", True)])
def test_finite_difference_hypergradient_matches_the_second_order_one(
    batchnorm, virtual_layers, normalize, class_aware):
  """hypergradient="finite_difference" is the second-order meta-gradient up
  to O(eps^2): V's update and the classifier's step agree in float64 (the
  class-aware V too: each sample's weight from its label's head)."""
  x, y, xm, ym = exactness.random_batch()

  def one_step(**options):
    model = _fast_model(meta_lr=1.0, batchnorm=batchnorm,
                        virtual_layers=virtual_layers,
                        class_aware=class_aware, **options)
    model.normalize_weights = normalize
    phi0 = _values(model.weight_net.trainable_variables)
    model.fit(exactness.pair_dataset(x, y, xm, ym), verbose=0)
    update = [a - b for a, b in
              zip(phi0, _values(model.weight_net.trainable_variables))]
    return update, _values(model.classifier.trainable_variables)

  exact_update, exact_theta = one_step()
  fd_update, fd_theta = one_step(hypergradient="finite_difference",
                                 fd_epsilon=1e-5)
  assert max(np.abs(u).max() for u in exact_update) > 1e-5  # V does move
  _assert_all_close(fd_update, exact_update, rtol=1e-6, atol=1e-11)
  _assert_all_close(fd_theta, exact_theta, rtol=1e-8, atol=1e-12)
  # A coarse step is an approximation, and it shows.
  coarse_update, _ = one_step(hypergradient="finite_difference",
                              fd_epsilon=10.0)
  assert not all(np.allclose(a, b, rtol=1e-6, atol=1e-11)
                 for a, b in zip(coarse_update, exact_update))


def test_exact_warmup_takes_exact_steps_then_the_fast_ones():
  """exact_warmup_steps=2 with virtual_layers=1: steps 0-1 are the exact
  step's, step 2 is the fast step's from the state they left."""
  warm = _fast_model(exact_warmup_steps=2, virtual_layers=1)
  exact = _fast_model()
  data = [exactness.pair_dataset(*exactness.random_batch(seed=20 + s)) for s in range(3)]
  for step in range(2):
    warm.fit(data[step], verbose=0)
    exact.fit(data[step], verbose=0)
    _assert_all_close(_values(warm.variables), _values(exact.variables),
                      rtol=1e-12, atol=1e-14)
  # The fast step on the same classifier and V (SGD without momentum: the
  # optimizers hold no state but their step count).
  fast = mwn_tf.MetaWeightModel(exact.classifier, exact.weight_net,
                                normalize_weights="sum", weight_decay=0.0,
                                meta_weight_decay=0.0, virtual_layers=1)
  fast.compile(optimizer=keras.optimizers.SGD(0.5),
               meta_optimizer=keras.optimizers.SGD(0.3))
  exact.fit(data[2], verbose=0)   # what the exact step would do instead
  exact_after = _values(exact.weight_net.trainable_variables)
  for v, value in zip(exact.variables, _values(warm.variables)):
    v.assign(value)  # back to the state after step 1
  warm.fit(data[2], verbose=0)
  fast.fit(data[2], verbose=0)
  _assert_all_close(_values(warm.variables), _values(fast.variables),
                    rtol=1e-12, atol=1e-14)
  assert not all(np.allclose(a, b) for a, b in zip(
      _values(warm.weight_net.trainable_variables), exact_after))


def test_fast_mode_recommended_is_one_switch():
  clf = exactness.classifier(True)
  model = mwn_tf.MetaWeightModel(clf, fast_mode="recommended")
  from mwn_tf import fast_step  # pylint: disable=g-import-not-at-top
  for option, value in fast_step.RECOMMENDED.items():
    assert getattr(model, option) == value
  assert model.get_config()["fast_mode"] == "recommended"
  assert model.get_config()["virtual_layers"] is None  # as given
  with pytest.raises(ValueError, match="^fast_mode .*virtual_layers"):
    mwn_tf.MetaWeightModel(clf, fast_mode="recommended", virtual_layers=1)
  with pytest.raises(ValueError, match="^fast_mode"):
    mwn_tf.MetaWeightModel(clf, fast_mode="fast")


def test_fast_options_validate():
  clf = exactness.classifier(True)
  with pytest.raises(ValueError, match="^hypergradient"):
    mwn_tf.MetaWeightModel(clf, hypergradient="first_order")
  with pytest.raises(ValueError, match="^fd_epsilon"):
    mwn_tf.MetaWeightModel(clf, hypergradient="finite_difference",
                           fd_epsilon=0.0)
  with pytest.raises(ValueError, match="^exact_warmup_steps"):
    mwn_tf.MetaWeightModel(clf, exact_warmup_steps=-1)


def test_virtual_layers_validates():
  clf = exactness.classifier(True)
  with pytest.raises(ValueError, match="virtual_layers"):
    mwn_tf.MetaWeightModel(clf, virtual_layers=4)   # 3 layers own variables
  with pytest.raises(ValueError, match="virtual_layers"):
    mwn_tf.MetaWeightModel(clf, virtual_layers=0)
  with pytest.raises(ValueError, match="meta_interval"):
    mwn_tf.MetaWeightModel(clf, meta_interval=0)


# --------------------------------------------------------- mixed precision --
def _mixed_pair(policy, *, scale=None, seed=0):
  """A float32 and a `policy` model with the same weights, SGD(1) for V."""
  models = []
  for dtype in ("float32", policy):
    keras.utils.set_random_seed(seed)
    clf = mwn_tf.models.get("small_cnn", num_classes=K, input_shape=(8, 8, 1),
                            filters=(8, 16), dtype=dtype)
    keras.utils.set_random_seed(seed + 1)
    model = mwn_tf.MetaWeightModel(clf, mwn_tf.WeightNet(hidden_units=(16,)),
                                   weight_decay=5e-4)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    if scale is not None and dtype != "float32":
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer,
                                                      initial_scale=scale)
    model.compile(optimizer=optimizer,
                  meta_optimizer=keras.optimizers.SGD(1.0))
    models.append(model)
  models[1].classifier.set_weights(models[0].classifier.get_weights())
  models[1].weight_net.set_weights(models[0].weight_net.get_weights())
  return models


def _image_batches(steps, seed=3):
  rng = np.random.default_rng(seed)
  pairs = []
  for _ in range(steps):
    pairs.append(tuple(
        {"image": rng.uniform(size=(n, 8, 8, 1)).astype(np.float32),
         "label": rng.integers(0, K, n).astype(np.int32)} for n in (16, 12)))
  return tf.data.Dataset.from_tensor_slices(
      tf.nest.map_structure(lambda *t: np.stack(t), *pairs))


def _relative_error(got, want):
  got = np.concatenate([np.ravel(g) for g in got])
  want = np.concatenate([np.ravel(w) for w in want])
  return np.linalg.norm(got - want) / np.linalg.norm(want)


@pytest.mark.parametrize("policy,tolerance", [("mixed_bfloat16", 0.05),
                                              ("mixed_float16", 0.01)])
def test_mixed_precision_step_is_close_to_float32(policy, tolerance):
  """One step: V's meta-gradient (SGD(1) on V) and the classifier's update
  agree with float32 to the policy's precision."""
  ref, mixed = _mixed_pair(policy)
  if policy == "mixed_float16":  # Keras wraps it, and we wrap V's to match
    assert isinstance(mixed.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(mixed.meta_optimizer,
                      keras.optimizers.LossScaleOptimizer)
  phi0 = _values(ref.weight_net.trainable_variables)
  theta0 = _values(ref.classifier.trainable_variables)
  for model in (ref, mixed):
    model.fit(_image_batches(1), verbose=0)
  for part, start in (("weight_net", phi0), ("classifier", theta0)):
    want = [a - b for a, b in zip(start, _values(
        getattr(ref, part).trainable_variables))]
    got = [a - b for a, b in zip(start, _values(
        getattr(mixed, part).trainable_variables))]
    assert np.linalg.norm(np.concatenate([w.ravel() for w in want])) > 0
    assert _relative_error(got, want) < tolerance, part


def test_float16_overflow_skips_the_whole_step_and_halves_the_scales():
  ref, mixed = _mixed_pair("mixed_float16", scale=2.0**40)
  del ref
  theta0 = _values(mixed.classifier.trainable_variables)
  phi0 = _values(mixed.weight_net.trainable_variables)
  mixed.fit(_image_batches(1), verbose=0)
  for got, want in zip(_values(mixed.classifier.trainable_variables), theta0):
    np.testing.assert_array_equal(got, want)
  for got, want in zip(_values(mixed.weight_net.trainable_variables), phi0):
    np.testing.assert_array_equal(got, want)
  assert float(mixed.optimizer.dynamic_scale.numpy()) == 2.0**39
  assert float(mixed.meta_optimizer.dynamic_scale.numpy()) < 2.0**15


# ------------------------------------------------------------ distribution --
# Fast modes under MirroredStrategy (2 logical CPUs, in a child process: the
# devices must be configured before TensorFlow starts): `meta_interval` takes
# its conditional in the cross-replica context there (see fast_step.every).
FAST_OPTIONS = ({"meta_interval": 3}, {"meta_interval": 2, "virtual_layers": 1})


def _child_mirrored_vs_one_device(options):
  """Runs in the child: the step on 2 replicas vs one device, global batch 8.

  One option set per process: TF's collective ops key instances per process,
  and a second MirroredStrategy with other shapes would collide with them.
  """
  import json  # pylint: disable=g-import-not-at-top
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  rng = np.random.default_rng(0)
  batches = [{"image": rng.normal(size=(48, D)).astype(np.float32),
              "label": rng.integers(0, K, 48).astype(np.int32)}
             for _ in range(2)]

  options = dict(options)
  dtype = options.pop("dtype", None)
  initial_scale = options.pop("initial_scale", None)

  def run(strategy):
    with strategy.scope():
      keras.utils.set_random_seed(1)
      clf = mwn_tf.models.get("mlp", num_classes=K, input_shape=(D,),
                              hidden_sizes=(7,), dtype=dtype)
      model = mwn_tf.MetaWeightModel(clf, mwn_tf.WeightNet(hidden_units=(6,)),
                                     **options)
      optimizer = keras.optimizers.SGD(0.5, momentum=0.9)
      if initial_scale is not None:
        optimizer = keras.optimizers.LossScaleOptimizer(
            optimizer, initial_scale=initial_scale)
      model.compile(optimizer=optimizer,
                    meta_optimizer=keras.optimizers.Adam(0.01))
    start = _values(model.classifier.trainable_variables +
                    model.weight_net.trainable_variables)
    data = tf.data.Dataset.zip(tuple(
        tf.data.Dataset.from_tensor_slices(b).batch(8) for b in batches))
    trace = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda *_, **__: trace.append(
            _values(model.weight_net.trainable_variables)))
    model.fit(data, verbose=0, callbacks=[record])
    moved = [not all(np.array_equal(a, b) for a, b in zip(p, q))
             for p, q in zip(trace[:-1], trace[1:])]
    final = _values(model.classifier.trainable_variables +
                    model.weight_net.trainable_variables)
    scales = [float(o.dynamic_scale.numpy())
              for o in (model.optimizer, model.meta_optimizer)
              if isinstance(o, keras.optimizers.LossScaleOptimizer)]
    return start, final, moved, scales

  start, mirrored, moved, scales = run(
      tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
  _, single, _, single_scales = run(tf.distribute.get_strategy())
  print("RESULT" + json.dumps({
      "max_abs_diff": max(float(np.abs(a - b).max())
                          for a, b in zip(mirrored, single)),
      # |mirrored update - one-device update| / |one-device update|.
      "update_relative_error": float(_relative_error(
          [m - s0 for m, s0 in zip(mirrored, start)],
          [s1 - s0 for s1, s0 in zip(single, start)])),
      "unchanged": all(np.array_equal(m, s0)
                       for m, s0 in zip(mirrored, start)),
      "v_moved_after_step": moved,
      "scales": scales, "single_scales": single_scales}))


@pytest.mark.slow
@pytest.mark.parametrize("options", FAST_OPTIONS, ids=str)
def test_fast_modes_under_mirrored_strategy_match_one_device(options):
  case = _run_child(options)
  assert case["max_abs_diff"] < 2e-5, case
  # V moves on meta steps only: steps 0, k, 2k, ... (6 steps in all).
  k = options["meta_interval"]
  assert case["v_moved_after_step"] == [s % k == 0 for s in range(1, 6)], case


def _run_child(options):
  """Runs `_child_mirrored_vs_one_device(options)` in a fresh process."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run(
      [sys.executable, os.path.abspath(__file__), json.dumps(options)],
      cwd=root, env=env, capture_output=True, text=True, timeout=600)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
  assert proc.returncode == 0 and lines, proc.stderr[-4000:]
  return json.loads(lines[-1][len("RESULT"):])


@pytest.mark.slow
@pytest.mark.parametrize("policy,tolerance", [("mixed_bfloat16", 0.02),
                                              ("mixed_float16", 0.005)])
def test_mixed_precision_under_mirrored_strategy_matches_one_device(
    policy, tolerance):
  """2 replicas vs one device, same global batch, 6 exact steps: the updates
  agree to the policy's precision (float16: loss-scaled, both optimizers)."""
  case = _run_child({"dtype": policy})
  assert not case["unchanged"], case
  assert case["update_relative_error"] < tolerance, case
  assert case["v_moved_after_step"] == [True] * 5, case
  if policy == "mixed_float16":  # both loss scales, the same on both setups
    assert len(case["scales"]) == 2 and case["scales"] == case[
        "single_scales"], case


@pytest.mark.slow
def test_float16_overflow_under_mirrored_strategy_skips_on_every_replica():
  """A scale of 2^40 overflows float16 on every step: no replica moves the
  classifier or V, and the classifier's scale halves once per step."""
  case = _run_child({"dtype": "mixed_float16", "initial_scale": 2.0**40})
  assert case["unchanged"], case
  assert case["v_moved_after_step"] == [False] * 5, case
  assert case["scales"][0] == 2.0**(40 - 6) == case["single_scales"][0], case


if __name__ == "__main__":
  import json as _json  # pylint: disable=g-import-not-at-top
  import sys as _sys  # pylint: disable=g-import-not-at-top
  _child_mirrored_vs_one_device(_json.loads(_sys.argv[1]))
