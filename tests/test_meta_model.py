"""Exactness tests for MetaWeightModel's three-stage step.

Every expected value here is computed a different way from the
implementation: central finite differences; a hand-written forward pass with
the paper's per-sample-gradient formula for ∂L_meta/∂Θ (Shu et al. 2019,
eq. 6); or Keras's own `fit()` with sample weights.

Every EXACT variant of the step passes the same tests, unchanged (the
`exact_variant` tests at the end): they run again with
`mwn_tf.MetaWeightModel` swapped for the variant (XLA; loss scaling in
float64, which must not change the math).
"""

import numpy as np
import pytest
import tensorflow as tf
import keras

import mwn_tf
from exactness import BN_EPS
from exactness import D
from exactness import K
from exactness import M
from exactness import N
from exactness import central_differences
from exactness import classifier
from exactness import pair_dataset
from exactness import random_batch
from exactness import CLUSTER_MAP


def _model(batchnorm, mode, *, lr=0.5, meta_opt=None, wd=0.0, meta_wd=0.0,
           hidden=(100,), momentum=0.0, class_aware=False):
  clf = classifier(batchnorm)
  keras.utils.set_random_seed(7)
  vnet = (mwn_tf.ClassAwareWeightNet(CLUSTER_MAP, hidden_units=hidden,
                                     dtype="float64") if class_aware else
          mwn_tf.WeightNet(hidden_units=hidden, dtype="float64"))
  model = mwn_tf.MetaWeightModel(clf, vnet, normalize_weights=mode,
                                 weight_decay=wd, meta_weight_decay=meta_wd)
  model.compile(optimizer=keras.optimizers.SGD(lr, momentum=momentum),
                meta_optimizer=meta_opt or keras.optimizers.SGD(1.0))
  return model


def _numpy_vars(variables):
  return [np.array(v.numpy()) for v in variables]


# -------------------------------------------------------------- hand math --
def _hand_forward(theta, x, batchnorm):
  """Logits and batch statistics of Dense-[BN]-ReLU-Dense, training mode."""
  if batchnorm:
    w1, b1, gamma, beta, w2, b2 = theta
  else:
    w1, b1, w2, b2 = theta
  h = tf.matmul(x, w1) + b1
  stats = None
  if batchnorm:
    mean = tf.reduce_mean(h, 0)
    var = tf.reduce_mean(tf.square(h - mean), 0)
    h = (h - mean) / tf.sqrt(var + BN_EPS) * gamma + beta
    stats = (mean, var)
  return tf.matmul(tf.nn.relu(h), w2) + b2, stats


def _hand_ce(logits, y):
  picked = tf.gather(logits, y, batch_dims=1)
  return tf.reduce_logsumexp(logits, axis=1) - picked


def _hand_weights(phi, losses):
  """The default V by hand: sigmoid(relu(L W1 + b1) W2 + b2)."""
  w1, b1, w2, b2 = phi
  h = tf.nn.relu(losses[:, None] * w1[0] + b1)
  return tf.sigmoid(tf.matmul(h, w2) + b2)[:, 0]


def _hand_coeffs(w, mode):
  if mode == "none":
    return w / tf.cast(tf.size(w), w.dtype)
  return w / tf.reduce_sum(w)


def _hand_step(theta, phi, x, y, xm, ym, *, alpha, mode, batchnorm,
               meta_lr, meta_wd, wd):
  """One MW-Net step from first principles (paper eq. 6), plain SGD for both.

  Returns (new theta, new phi, batch stats of the train batch).
  """
  theta = [tf.constant(t) for t in theta]
  phi = [tf.constant(p) for p in phi]
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(theta)
    logits, stats = _hand_forward(theta, x, batchnorm)
    losses = _hand_ce(logits, y)
  # Per-sample gradients J[i] = ∇θ L_i, flattened: [n, |θ|].
  jac = tape.jacobian(losses, theta)
  jac = tf.concat([tf.reshape(j, [N, -1]) for j in jac], axis=1)
  flat_theta = tf.concat([tf.reshape(t, [-1]) for t in theta], 0)

  def unflatten(flat):
    out, start = [], 0
    for t in theta:
      size = int(np.prod(t.shape))
      out.append(tf.reshape(flat[start:start + size], t.shape))
      start += size
    return out

  with tf.GradientTape() as vtape:
    vtape.watch(phi)
    coeffs = _hand_coeffs(_hand_weights(phi, losses), mode)
  fast = flat_theta - alpha * tf.linalg.matvec(jac, coeffs, transpose_a=True)
  with tf.GradientTape() as mtape:
    mtape.watch(fast)
    meta_logits, _ = _hand_forward(unflatten(fast), xm, batchnorm)
    meta_loss = tf.reduce_mean(_hand_ce(meta_logits, ym))
  v = mtape.gradient(meta_loss, fast)
  # ∂L_meta/∂c_i = −α ∇θ L_i · ∇θ̂ L_meta  (the paper's eq. 6).
  dmeta_dc = -alpha * tf.linalg.matvec(jac, v)
  grads_phi = vtape.gradient(coeffs, phi, output_gradients=dmeta_dc)
  new_phi = [p - meta_lr * (g + meta_wd * p) for p, g in zip(phi, grads_phi)]
  new_coeffs = _hand_coeffs(_hand_weights(new_phi, losses), mode)
  grad_theta = tf.linalg.matvec(jac, new_coeffs, transpose_a=True)
  new_theta = flat_theta - alpha * (grad_theta + wd * flat_theta)
  return ([t.numpy() for t in unflatten(new_theta)],
          [p.numpy() for p in new_phi], stats)


# ----------------------------------------------------------------- tests --
@pytest.mark.parametrize("class_aware", [False, True])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_meta_gradient_matches_central_finite_differences(batchnorm,
                                                         class_aware):
  """∇Θ L_meta(θ̂(Θ)) from the nested tapes vs central differences, float64;
  for the paper's V and for a class-aware V (each sample's weight from its
  label's cluster head, so every head gets its own clusters' gradient)."""
  x, y, xm, ym = random_batch()
  alpha, eps = 0.5, 1e-6
  model = _model(batchnorm, "sum", lr=alpha, hidden=(6,),
                 class_aware=class_aware)
  theta = [v.numpy() for v in model.classifier.trainable_variables]
  phi0 = _numpy_vars(model.weight_net.trainable_variables)
  state = [v.numpy() for v in model.classifier.non_trainable_variables]
  clf, vnet = model.classifier, model.weight_net

  def meta_objective(phi):
    with tf.GradientTape() as tape:
      tape.watch(theta_t := [tf.constant(t) for t in theta])
      logits, _ = clf.stateless_call(theta_t, state, x, training=True)
      losses = keras.ops.sparse_categorical_crossentropy(y, logits, True)
      v_in = tf.reshape(losses, [-1, 1])
      w, _ = vnet.stateless_call([tf.constant(p) for p in phi], [],
                                 (v_in, y) if class_aware else v_in)
      w = tf.stop_gradient(tf.reshape(w, [-1]))
      total = tf.reduce_sum(w / tf.reduce_sum(w) * losses)
    grads = tape.gradient(total, theta_t)
    fast = [t - alpha * g for t, g in zip(theta_t, grads)]
    meta_logits, _ = clf.stateless_call(fast, state, xm, training=True)
    return float(tf.reduce_mean(
        keras.ops.sparse_categorical_crossentropy(ym, meta_logits, True)))

  expected = central_differences(meta_objective, phi0, eps)

  # meta optimizer is SGD(1.0) without decay, so Θ_before − Θ_after = ∇Θ.
  model.fit(pair_dataset(x, y, xm, ym), epochs=1, verbose=0)
  got = [before - after for before, after in
         zip(phi0, _numpy_vars(model.weight_net.trainable_variables))]
  assert max(np.abs(g).max() for g in expected) > 1e-4  # not a vacuous test
  if class_aware:  # every head is used by this batch, and gets a gradient
    assert set(CLUSTER_MAP[c] for c in y) == {0, 1, 2}
    assert (np.abs(expected[-2]).max(axis=0) > 1e-6).all()
  for e, g in zip(expected, got):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("mode", ["none", "sum"])
def test_two_steps_match_hand_computation(mode, batchnorm):
  """Two full steps (with a learning-rate change between them) vs plain TF."""
  x, y, xm, ym = random_batch()
  x2, y2, xm2, ym2 = random_batch(seed=2)
  meta_lr, meta_wd, wd = 0.3, 1e-2, 5e-2
  schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0], [0.5, 0.2])
  model = _model(batchnorm, mode, lr=schedule, wd=wd, meta_wd=meta_wd,
                 meta_opt=keras.optimizers.SGD(meta_lr))
  theta = _numpy_vars(model.classifier.trainable_variables)
  phi = _numpy_vars(model.weight_net.trainable_variables)
  # Keras keeps learning rates in float32; round the hand values the same way.
  for alpha, batch in ((0.5, (x, y, xm, ym)), (0.2, (x2, y2, xm2, ym2))):
    theta, phi, _ = _hand_step(theta, phi, *batch, alpha=float(np.float32(alpha)),
                               mode=mode, batchnorm=batchnorm,
                               meta_lr=float(np.float32(meta_lr)),
                               meta_wd=meta_wd, wd=wd)
  pairs = pair_dataset(x, y, xm, ym).concatenate(
      pair_dataset(x2, y2, xm2, ym2))
  model.fit(pairs, epochs=1, verbose=0)
  for got, want in zip(model.classifier.trainable_variables, theta):
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-12)
  for got, want in zip(model.weight_net.trainable_variables, phi):
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mode", ["none", "sum"])
def test_batchnorm_statistics_move_once_on_the_train_batch(mode):
  x, y, xm, ym = random_batch()
  model = _model(True, mode)
  reference = classifier(True)
  reference.set_weights(model.classifier.get_weights())
  reference(x, training=True)  # one training-mode forward, train batch alone
  model.fit(pair_dataset(x, y, xm, ym), epochs=1, verbose=0)
  got = model.classifier.non_trainable_variables
  want = reference.non_trainable_variables
  assert len(got) == 2
  for g, w in zip(got, want):
    np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-12, atol=1e-14)
  # And they did move: a forward on the meta batch would give other values.
  assert not np.allclose(got[0].numpy(), 0.0)


@pytest.mark.parametrize("mode", ["none", "sum"])
def test_frozen_constant_weight_net_is_ordinary_weighted_training(mode):
  """V ≡ w0 and frozen: the classifier must follow Keras' own weighted fit."""
  x, y, xm, ym = random_batch()
  steps, w0 = 3, 0.3
  model = _model(True, mode, lr=0.1, momentum=0.9,
                 meta_opt=keras.optimizers.SGD(0.0))
  for v in model.weight_net.trainable_variables:
    v.assign(np.zeros(v.shape))
  bias = model.weight_net.trainable_variables[-1]
  bias.assign(np.full(bias.shape, np.log(w0 / (1 - w0))))  # sigmoid(b) = w0
  reference = classifier(True)
  reference.set_weights(model.classifier.get_weights())
  reference.compile(
      optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                     dtype="float64"))
  # "none": Σ w0·L / n is Keras' mean of sample-weighted losses;
  # "sum": w0 / Σ w0 = 1/n, the plain mean.
  sample_weight = np.full(N, w0 if mode == "none" else 1.0)
  # Through tf.data: Keras would cast NumPy inputs to float32.
  reference.fit(tf.data.Dataset.from_tensors((x, y, sample_weight)).repeat(
      steps), epochs=1, verbose=0)
  model.fit(pair_dataset(x, y, xm, ym, steps=steps), epochs=1, verbose=0)
  for got, want in zip(model.classifier.weights, reference.weights):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-9,
                               atol=1e-12, err_msg=got.path)


def test_baseline_is_plain_training():
  x, y, xm, ym = random_batch()
  clf = classifier(True)
  model = mwn_tf.MetaWeightModel(clf, method="baseline", weight_decay=0.0)
  model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
  reference = classifier(True)
  reference.set_weights(clf.get_weights())
  reference.compile(
      optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                     dtype="float64"))
  reference.fit(tf.data.Dataset.from_tensors((x, y)).repeat(2), verbose=0)
  logs = model.fit(pair_dataset(x, y, xm, ym, steps=2), verbose=0).history
  assert "meta_loss" not in logs
  for got, want in zip(clf.weights, reference.weights):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-9,
                               atol=1e-12)


def test_metrics_report_clean_and_corrupted_weights():
  x, y, xm, ym = random_batch()
  noisy = np.arange(N) % 3 == 0
  model = _model(False, "sum")
  train = tf.data.Dataset.from_tensors({"image": x, "label": y,
                                        "is_noisy": noisy})
  meta = tf.data.Dataset.from_tensors({"image": xm, "label": ym})
  logs = model.fit(tf.data.Dataset.zip((train, meta)), verbose=0).history
  for key in ("loss", "weighted_loss", "meta_loss", "accuracy",
              "meta_accuracy", "weight_mean", "weight_clean", "weight_noisy"):
    assert key in logs, key
  losses = keras.ops.sparse_categorical_crossentropy(
      y, model.classifier(x, training=False), True)
  del losses  # metrics are taken before the update; check consistency only:
  mean = logs["weight_mean"][0]
  clean, dirty = logs["weight_clean"][0], logs["weight_noisy"][0]
  np.testing.assert_allclose(mean, (clean * (~noisy).sum() +
                                    dirty * noisy.sum()) / N, rtol=1e-6)
  assert 0 < clean < 1 and 0 < dirty < 1


def test_evaluate_and_predict_use_the_classifier_alone():
  x, y, _, _ = random_batch()
  model = _model(True, "sum")
  probs = model.predict(tf.data.Dataset.from_tensors({"image": x}), verbose=0)
  np.testing.assert_allclose(probs, model.classifier(x, training=False))
  res = model.evaluate(tf.data.Dataset.from_tensors({"image": x, "label": y}),
                       return_dict=True, verbose=0)
  logits = model.classifier(x, training=False).numpy()
  np.testing.assert_allclose(res["accuracy"],
                             np.mean(logits.argmax(1) == y), rtol=1e-6)


# ---------------------------------------------- exact variants, same tests --
def _loss_scaled(optimizer):
  # 2^10: a power of two, so scaling and unscaling are exact in float64.
  return keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=2.0**10)


EXACT_VARIANTS = {
    # XLA-compiled step (compile(jit_compile=True)).
    "xla": dict(compile_kwargs={"jit_compile": True}),
    # Both optimizers loss-scaled: the mixed_float16 code path, in float64.
    "loss_scaled": dict(wrap=_loss_scaled),
}


@pytest.fixture(params=list(EXACT_VARIANTS))
def exact_variant(request, monkeypatch):
  """Makes `mwn_tf.MetaWeightModel` build the variant, for the core tests."""
  spec = EXACT_VARIANTS[request.param]
  base = mwn_tf.MetaWeightModel

  class Variant(base):

    def __init__(self, *args, **kwargs):
      super().__init__(*args, **{**kwargs, **spec.get("model_kwargs", {})})

    def compile(self, optimizer="sgd", meta_optimizer=None, **kwargs):
      wrap = spec.get("wrap", lambda o: o)
      if meta_optimizer is None:
        meta_optimizer = keras.optimizers.Adam(1e-3)
      super().compile(optimizer=wrap(keras.optimizers.get(optimizer)),
                      meta_optimizer=wrap(meta_optimizer),
                      **{**kwargs, **spec.get("compile_kwargs", {})})
      if "wrap" in spec:  # the scaled path is really the one taken
        assert isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(self.meta_optimizer,
                          keras.optimizers.LossScaleOptimizer)

  monkeypatch.setattr(mwn_tf, "MetaWeightModel", Variant)
  return request.param


@pytest.mark.slow
@pytest.mark.parametrize("batchnorm", [False, True])
def test_exact_variant_meta_gradient_matches_finite_differences(
    exact_variant, batchnorm):
  test_meta_gradient_matches_central_finite_differences(batchnorm,
                                                       class_aware=False)


@pytest.mark.slow
@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("mode", ["none", "sum"])
def test_exact_variant_two_steps_match_hand_computation(exact_variant, mode,
                                                        batchnorm):
  test_two_steps_match_hand_computation(mode, batchnorm)


@pytest.mark.parametrize("mode", ["none", "sum"])
def test_exact_variant_batchnorm_statistics(exact_variant, mode):
  test_batchnorm_statistics_move_once_on_the_train_batch(mode)


@pytest.mark.parametrize("mode", ["none", "sum"])
def test_exact_variant_frozen_weight_net_is_weighted_training(
    exact_variant, mode):
  test_frozen_constant_weight_net_is_ordinary_weighted_training(mode)


# ------------------------------------------------------------ bad input --
def test_rejects_non_kerasclassifier():
  with pytest.raises(TypeError, match="must be a Keras 3 `keras.Model`"):
    mwn_tf.MetaWeightModel(tf.Module())


def test_rejects_unbuiltclassifier():
  with pytest.raises(ValueError, match="not built"):
    mwn_tf.MetaWeightModel(keras.Sequential([keras.layers.Dense(3)]))


def test_rejects_bad_options():
  clf = classifier(False)
  with pytest.raises(ValueError, match="normalize_weights"):
    mwn_tf.MetaWeightModel(clf, normalize_weights="mean")
  with pytest.raises(ValueError, match="method"):
    mwn_tf.MetaWeightModel(clf, method="l2rw")
  with pytest.raises(ValueError, match="weight_decay"):
    mwn_tf.MetaWeightModel(clf, weight_decay=-1.0)


def test_rejects_element_without_meta_batch():
  x, y, _, _ = random_batch()
  model = _model(False, "sum")
  data = tf.data.Dataset.from_tensors((x, y))
  with pytest.raises(TypeError, match=r"needs elements \(train_batch, meta"):
    model.fit(data, verbose=0)


def test_rejects_mismatched_train_and_meta_shapes():
  x, y, _, _ = random_batch()
  model = _model(False, "sum")
  meta = {"image": np.zeros((M, D + 1)), "label": np.zeros(M, np.int32)}
  with pytest.raises(ValueError, match="meta images"):
    model.fit(pair_dataset(x, y, meta["image"], meta["label"]), verbose=0)


def test_rejects_batch_dict_without_label():
  x, y, xm, ym = random_batch()
  model = _model(False, "sum")
  data = tf.data.Dataset.zip((tf.data.Dataset.from_tensors({"image": x}),
                              tf.data.Dataset.from_tensors((xm, ym))))
  with pytest.raises(ValueError, match=r"lacks \['label'\]"):
    model.fit(data, verbose=0)


def test_rejects_labels_out_of_range():
  x, y, xm, ym = random_batch()
  model = _model(False, "sum")
  with pytest.raises(tf.errors.InvalidArgumentError, match="Label out of range"):
    model.fit(pair_dataset(x, np.full_like(y, K), xm, ym), verbose=0)
