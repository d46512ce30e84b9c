"""Tests for the model registry and builders in mwn_tf.models.

Expected numbers are computed independently of the builders: parameter counts
by formula from the architectures' descriptions (He et al. 2016 Sec. 4.2;
Zagoruyko & Komodakis 2016; Keras' ResNet50), initial statistics from the
official code's init rules, shortcut and padding behaviour by NumPy.
"""

import logging
import math

import gin
import numpy as np
import pytest
import tensorflow as tf
import keras

from mwn_tf import models
from mwn_tf.models import resnet50 as resnet50_lib
from mwn_tf.models.batch_norm import MetaBatchNormalization


def _tensor_copies(variables):
  return [tf.identity(v.value) for v in variables]


def _numpy(variables):
  return [np.array(v.numpy()) for v in variables]


# --- Parameter counts by formula: (trainable, non-trainable) ---

def _bn(c):
  # gamma, beta trainable; moving mean, moving variance not.
  return 2 * c, 2 * c


def _cifar_resnet_counts(n, num_classes):
  """6n+2 CIFAR ResNet, option-A shortcuts (no shortcut params)."""
  trainable, frozen = 3 * 3 * 3 * 16, 0
  t, f = _bn(16)
  trainable, frozen = trainable + t, frozen + f
  c_in = 16
  for width in (16, 32, 64):
    for _ in range(n):
      trainable += 3 * 3 * c_in * width + 3 * 3 * width * width
      t, f = _bn(width)
      trainable, frozen = trainable + 2 * t, frozen + 2 * f
      c_in = width
  trainable += 64 * num_classes + num_classes
  return trainable, frozen


def _wrn_counts(depth, k, num_classes):
  """Pre-activation WRN with 1x1 projections where widths change."""
  n = (depth - 4) // 6
  trainable, frozen = 3 * 3 * 3 * 16, 0
  c_in = 16
  for width in (16 * k, 32 * k, 64 * k):
    for _ in range(n):
      t1, f1 = _bn(c_in)
      t2, f2 = _bn(width)
      trainable += t1 + t2 + 3 * 3 * c_in * width + 3 * 3 * width * width
      frozen += f1 + f2
      if c_in != width:
        trainable += c_in * width
      c_in = width
  t, f = _bn(c_in)
  trainable += t + c_in * num_classes + num_classes
  return trainable, frozen + f


def _keras_resnet50_counts(num_classes):
  """Keras ResNet50 (convs with bias) notop + Dense(num_classes)."""
  def conv(k, c_in, c_out):
    return k * k * c_in * c_out + c_out

  trainable, frozen = conv(7, 3, 64) + 2 * 64, 2 * 64
  c_in = 64
  for f, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
    for b in range(blocks):
      if b == 0:
        trainable += conv(1, c_in, 4 * f) + 2 * 4 * f
        frozen += 2 * 4 * f
      trainable += (conv(1, c_in, f) + conv(3, f, f) + conv(1, f, 4 * f)
                    + 2 * (f + f + 4 * f))
      frozen += 2 * (f + f + 4 * f)
      c_in = 4 * f
  trainable += 2048 * num_classes + num_classes
  return trainable, frozen


def _counts(model):
  size = lambda vs: sum(int(np.prod(v.shape)) for v in vs)
  return size(model.trainable_variables), size(model.non_trainable_variables)


# --- Registry ---

def test_registry_names():
  assert models.names() == sorted(
      ["fmnist_cnn", "mlp", "resnet32", "resnet50", "small_cnn", "wide_resnet",
       "wrn28_10"])


def test_unknown_name_lists_known_models():
  with pytest.raises(ValueError) as err:
    models.get("resnet33", num_classes=10, input_shape=(32, 32, 3))
  message = str(err.value)
  assert "resnet33" in message
  for name in models.names():
    assert name in message


def test_register_rejects_a_second_builder_under_a_taken_name():
  with pytest.raises(ValueError, match="already registered"):
    models.register("mlp")(lambda num_classes, input_shape: None)


# --- Shapes, dtypes, counts ---

@pytest.mark.parametrize("name,input_shape,kwargs", [
    ("resnet32", (32, 32, 3), {}),
    ("wide_resnet", (32, 32, 3), dict(depth=10, widen_factor=2)),
    ("mlp", (8, 8, 1), {}),
    ("mlp", (8, 8, 1), dict(hidden_sizes=(16, 8), batch_norm=True)),
    ("small_cnn", (8, 8, 1), {}),
    ("small_cnn", (32, 32, 3), {}),
])
def test_output_shape_and_dtype(name, input_shape, kwargs):
  model = models.get(name, num_classes=7, input_shape=input_shape, **kwargs)
  x = np.random.default_rng(0).normal(size=(3,) + input_shape)
  for training in (True, False):
    y = model(x.astype("float32"), training=training)
    assert tuple(y.shape) == (3, 7)
    assert y.dtype == tf.float32
  assert model.layers[-1].activation is keras.activations.linear


def test_float64_models_are_float64_throughout():
  for name, shape in (("resnet32", (8, 8, 3)), ("small_cnn", (8, 8, 1)),
                      ("mlp", (8, 8, 1))):
    model = models.get(name, 5, shape, dtype="float64")
    assert {v.dtype for v in model.variables} == {"float64"}, name
    y = model(np.ones((2,) + shape), training=True)
    assert y.dtype == tf.float64


def test_mixed_policy_keeps_logits_float32():
  model = models.get("small_cnn", 4, (8, 8, 1), dtype="mixed_bfloat16")
  assert model.get_layer("conv1").compute_dtype == "bfloat16"
  y = model(np.ones((2, 8, 8, 1), "float32"))
  assert y.dtype == tf.float32


def test_resnet32_parameter_count():
  for k in (10, 100):
    model = models.get("resnet32", num_classes=k, input_shape=(32, 32, 3))
    assert _counts(model) == _cifar_resnet_counts(5, k)
  # He et al. (2016), Table 6: ResNet-32 has 0.46M parameters.
  assert round(_cifar_resnet_counts(5, 10)[0] / 1e6, 2) == 0.46


def test_resnet32_has_31_convs_and_one_dense():
  model = models.get("resnet32", 10, (32, 32, 3))
  convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
  dense = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
  assert len(convs) == 31 and len(dense) == 1
  assert all(not l.use_bias for l in convs)


@pytest.mark.slow
def test_wrn28_10_shape_and_parameter_count():
  model = models.get("wrn28_10", num_classes=10, input_shape=(8, 8, 3))
  assert model.name == "wrn28_10"
  assert _counts(model) == _wrn_counts(28, 10, 10)
  # Zagoruyko & Komodakis (2016), Table 1: WRN-28-10 has 36.5M parameters.
  assert round(_counts(model)[0] / 1e6, 1) == 36.5
  y = model(np.zeros((1, 8, 8, 3), "float32"), training=False)
  assert tuple(y.shape) == (1, 10)


def test_wide_resnet_small_parameter_count():
  model = models.get("wide_resnet", 100, (32, 32, 3), depth=16,
                     widen_factor=2)
  assert _counts(model) == _wrn_counts(16, 2, 100)


def test_wide_resnet_rejects_bad_depth():
  with pytest.raises(ValueError, match="6n"):
    models.get("wide_resnet", 10, (32, 32, 3), depth=27)


# --- Option-A shortcut and PyTorch padding ---

def test_option_a_shortcut_subsamples_and_zero_pads_channels():
  layer = models.layers.OptionAShortcut(32, 2)
  x = np.random.default_rng(1).normal(size=(2, 7, 7, 16)).astype("float32")
  y = np.asarray(layer(x))
  assert not layer.weights
  expected = np.zeros((2, 4, 4, 32), "float32")
  # The official code pads planes // 4 = 8 zero channels on each side.
  expected[..., 8:24] = x[:, ::2, ::2, :]
  np.testing.assert_array_equal(y, expected)


def test_resnet32_downsampling_block_identity_path():
  """With the residual branch silenced, the block outputs its shortcut."""
  model = models.get("resnet32", 10, (8, 8, 3), dtype="float64")
  block = [l for l in model.layers if l.name.startswith("stage2_block1")]
  assert sum(len(l.weights) for l in block
             if "shortcut" in l.name) == 0
  bn2 = model.get_layer("stage2_block1_bn2")
  bn2.gamma.assign(np.zeros(32))
  bn2.beta.assign(np.zeros(32))
  probe = keras.Model(model.input, [
      model.get_layer("stage1_block5_out").output,
      model.get_layer("stage2_block1_out").output])
  x = np.random.default_rng(2).normal(size=(4, 8, 8, 3))
  block_in, block_out = [np.asarray(t) for t in probe(x, training=True)]
  expected = np.zeros((4, 4, 4, 32))
  expected[..., 8:24] = block_in[:, ::2, ::2, :]
  np.testing.assert_allclose(block_out, expected, atol=1e-12)
  assert block_in.min() >= 0 and np.abs(block_out[..., 8:24]).sum() > 0


def test_wide_resnet_block_shortcuts():
  """Projection on the pre-activated input; identity on the raw input."""
  model = models.get("wide_resnet", 10, (8, 8, 3), depth=16, widen_factor=1,
                     dtype="float64")
  for block in ("stage2_block1", "stage2_block2"):
    conv2 = model.get_layer(f"{block}_conv2")
    conv2.kernel.assign(np.zeros(conv2.kernel.shape))  # silence the branch
  probe = keras.Model(model.input, [
      model.get_layer("stage2_block1_relu1").output,  # relu(bn1(x))
      model.get_layer("stage2_block1_add").output,
      model.get_layer("stage2_block2_add").output])
  x = np.random.default_rng(14).normal(size=(3, 8, 8, 3))
  pre, out1, out2 = [np.asarray(t) for t in probe(x, training=True)]
  projection = model.get_layer("stage2_block1_shortcut").kernel.numpy()[0, 0]
  np.testing.assert_allclose(out1, pre[:, ::2, ::2, :] @ projection,
                             atol=1e-12)
  np.testing.assert_allclose(out2, out1, atol=1e-12)


@pytest.mark.parametrize("name,block_input", [
    ("resnet32", "stage1_block5_out"),
    ("wide_resnet", "stage2_block1_relu1"),  # the pre-activated input
])
def test_strided_conv_pads_like_pytorch(name, block_input):
  """A centre-tap kernel must sample x[2i, 2j], as PyTorch's padding=1 does.

  Keras' padding="same" would sample x[2i+1, 2j+1] on even inputs.
  """
  kwargs = dict(depth=10, widen_factor=1) if name == "wide_resnet" else {}
  model = models.get(name, 10, (8, 8, 3), dtype="float64", **kwargs)
  conv = model.get_layer("stage2_block1_conv1")
  kernel = np.zeros(conv.kernel.shape)
  c = kernel.shape[2]
  kernel[1, 1, np.arange(c), np.arange(c)] = 1.0
  conv.kernel.assign(kernel)
  probe = keras.Model(model.input, [model.get_layer(block_input).output,
                                    conv.output])
  x = np.random.default_rng(3).normal(size=(2, 8, 8, 3))
  block_in, out = [np.asarray(t) for t in probe(x, training=True)]
  assert out.shape == (2, 4, 4, 2 * c)
  np.testing.assert_allclose(out[..., :c], block_in[:, ::2, ::2, :],
                             atol=1e-12)
  np.testing.assert_array_equal(out[..., c:], 0.0)


def test_resnet32_saves_and_loads_as_keras_file(tmp_path):
  """OptionAShortcut is registered: loading needs no custom_objects."""
  model = models.get("resnet32", 10, (8, 8, 3))
  path = str(tmp_path / "resnet32.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  x = np.random.default_rng(15).normal(size=(2, 8, 8, 3)).astype("float32")
  np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6, atol=1e-6)


# --- BatchNorm ---

@pytest.mark.parametrize("name,kwargs", [
    ("resnet32", {}),
    ("wide_resnet", dict(depth=10, widen_factor=1)),
    ("small_cnn", {}),
    ("mlp", dict(batch_norm=True)),
])
def test_batchnorm_matches_pytorch_defaults(name, kwargs):
  model = models.get(name, 10, (8, 8, 3), **kwargs)
  bns = [l for l in model.layers
         if isinstance(l, keras.layers.BatchNormalization)]
  assert bns
  for bn in bns:
    assert bn.momentum == pytest.approx(0.9)  # PyTorch momentum 0.1
    assert bn.epsilon == pytest.approx(1e-5)
    assert bn.axis in (-1, len(bn.input.shape) - 1)  # channels_last


def test_batchnorm_moving_mean_moves_by_a_tenth():
  """PyTorch: running = 0.9 running + 0.1 batch (from running = 0)."""
  model = models.get("resnet32", 10, (8, 8, 3), dtype="float64")
  stem = keras.Model(model.input, model.get_layer("stem_conv").output)
  x = np.random.default_rng(4).normal(size=(6, 8, 8, 3)) + 0.5
  batch_mean = np.asarray(stem(x)).mean(axis=(0, 1, 2))
  model(x, training=True)
  moving_mean = model.get_layer("stem_bn").moving_mean.numpy()
  np.testing.assert_allclose(moving_mean, 0.1 * batch_mean, rtol=1e-10,
                             atol=1e-12)


# --- Initialization ---

def _assert_normal_std(w, std, rel_tol):
  w = np.asarray(w).ravel()
  assert abs(w.mean()) < 4 * std / math.sqrt(w.size)
  assert w.std() == pytest.approx(std, rel=rel_tol)


def test_resnet32_init_matches_official():
  keras.utils.set_random_seed(5)
  model = models.get("resnet32", 10, (32, 32, 3))
  for i in range(2, 6):  # stage-3 convs: [3, 3, 64, 64], fan_in = 576
    kernel = model.get_layer(f"stage3_block{i}_conv2").kernel.numpy()
    _assert_normal_std(kernel, math.sqrt(2.0 / 576), 0.03)
    # kaiming_normal_ is not truncated: 36864 draws exceed 3.5 sigma (p<1e-3
    # each) almost surely, while Keras' HeNormal caps them at 2.3 sigma.
    assert np.abs(kernel).max() > 3.5 * math.sqrt(2.0 / 576)
  stem = model.get_layer("stem_conv").kernel.numpy()  # fan_in = 27
  _assert_normal_std(stem, math.sqrt(2.0 / 27), 0.25)
  dense = model.get_layer("logits")
  _assert_normal_std(dense.kernel.numpy(), math.sqrt(2.0 / 64), 0.2)
  bias = dense.bias.numpy()
  assert np.all(np.abs(bias) <= 1 / 8) and np.any(bias != 0)
  for bn in (l for l in model.layers
             if isinstance(l, keras.layers.BatchNormalization)):
    np.testing.assert_array_equal(bn.gamma.numpy(), 1.0)
    np.testing.assert_array_equal(bn.beta.numpy(), 0.0)


def test_wide_resnet_init_matches_official():
  keras.utils.set_random_seed(6)
  model = models.get("wide_resnet", 10, (32, 32, 3), depth=10,
                     widen_factor=4)
  # std = sqrt(2 / (k * k * out_channels)), i.e. fan_out.
  conv = model.get_layer("stage3_block1_conv2").kernel.numpy()  # 256 -> 256
  _assert_normal_std(conv, math.sqrt(2.0 / (9 * 256)), 0.02)
  proj = model.get_layer("stage3_block1_shortcut").kernel.numpy()  # 128->256
  _assert_normal_std(proj, math.sqrt(2.0 / 256), 0.03)
  first = model.get_layer("stage2_block1_conv1").kernel.numpy()  # 64 -> 128
  _assert_normal_std(first, math.sqrt(2.0 / (9 * 128)), 0.03)
  dense = model.get_layer("logits")
  kernel = dense.kernel.numpy()  # fan_in = 256: U(-1/16, 1/16)
  assert np.abs(kernel).max() <= 1 / 16
  assert kernel.std() == pytest.approx(1 / 16 / math.sqrt(3), rel=0.1)
  np.testing.assert_array_equal(dense.bias.numpy(), 0.0)
  for bn in (l for l in model.layers
             if isinstance(l, keras.layers.BatchNormalization)):
    np.testing.assert_array_equal(bn.gamma.numpy(), 1.0)
    np.testing.assert_array_equal(bn.beta.numpy(), 0.0)


# --- stateless_call, the contract of the meta step ---

_STATELESS_CASES = [
    ("resnet32", (8, 8, 3), {}),
    ("wide_resnet", (8, 8, 3), dict(depth=10, widen_factor=1,
                                     dropout_rate=0.3)),
    ("mlp", (8, 8, 1), dict(hidden_sizes=(16,), batch_norm=True)),
    ("small_cnn", (8, 8, 1), dict(filters=(4, 8))),
]


@pytest.mark.parametrize("name,shape,kwargs", _STATELESS_CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_stateless_call_with_fast_weights(name, shape, kwargs, dtype):
  keras.utils.set_random_seed(7)
  model = models.get(name, 5, shape, dtype=dtype, **kwargs)
  rng = np.random.default_rng(8)
  x = rng.normal(size=(6,) + shape).astype(dtype)
  labels = rng.integers(0, 5, size=6)
  before = _numpy(model.variables)
  trainables = _tensor_copies(model.trainable_variables)
  frozen = _tensor_copies(model.non_trainable_variables)

  with tf.GradientTape() as tape:
    tape.watch(trainables)
    logits, new_frozen = model.stateless_call(trainables, frozen, x,
                                              training=True)
    loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, logits))
  grads = tape.gradient(loss, trainables)
  assert logits.dtype == dtype and tuple(logits.shape) == (6, 5)
  for v, g in zip(model.trainable_variables, grads):
    assert g is not None, v.path
    assert np.all(np.isfinite(g)) and np.any(np.asarray(g) != 0), v.path

  # Fast weights θ - α g as tensors: the output changes, no variable moves.
  fast = [t - 0.1 * g for t, g in zip(trainables, grads)]
  fast_logits, _ = model.stateless_call(fast, frozen, x, training=True)
  assert np.abs(np.asarray(fast_logits) - np.asarray(logits)).max() > 1e-4
  for v, old in zip(model.variables, before):
    np.testing.assert_array_equal(v.numpy(), old, err_msg=v.path)
  # BatchNorm statistics come back as values instead of being written.
  moved = [not np.array_equal(a, b) for a, b in zip(new_frozen, frozen)]
  assert any(moved)

  if "dropout_rate" not in kwargs:  # dropout draws differ between calls
    np.testing.assert_allclose(model(x, training=True), logits,
                               rtol=1e-5, atol=1e-5)


def test_second_order_gradient_through_a_virtual_step():
  """d L_meta(θ - α ∇θ Σ w_i L_i) / d w_0 agrees with finite differences."""
  keras.utils.set_random_seed(9)
  model = models.get("small_cnn", 3, (8, 8, 1), filters=(3, 4),
                     dtype="float64")
  rng = np.random.default_rng(10)
  x, y = rng.normal(size=(5, 8, 8, 1)), rng.integers(0, 3, size=5)
  x_meta, y_meta = rng.normal(size=(4, 8, 8, 1)), rng.integers(0, 3, size=4)
  theta = _tensor_copies(model.trainable_variables)
  frozen = _tensor_copies(model.non_trainable_variables)
  ce = tf.nn.sparse_softmax_cross_entropy_with_logits

  def meta_loss(w):
    with tf.GradientTape() as inner:
      inner.watch(theta)
      logits, _ = model.stateless_call(theta, frozen, x, training=True)
      train_loss = tf.reduce_sum(w * ce(y, logits))
    grads = inner.gradient(train_loss, theta)
    fast = [t - 0.5 * g for t, g in zip(theta, grads)]
    meta_logits, _ = model.stateless_call(fast, frozen, x_meta, training=True)
    return tf.reduce_mean(ce(y_meta, meta_logits))

  w = tf.constant(np.full(5, 0.2))
  with tf.GradientTape() as outer:
    outer.watch(w)
    loss = meta_loss(w)
  dw = outer.gradient(loss, w).numpy()
  eps = 1e-6
  e0 = np.eye(5)[0]
  fd = (meta_loss(w + eps * e0) - meta_loss(w - eps * e0)).numpy() / (2 * eps)
  assert dw[0] == pytest.approx(fd, rel=1e-5, abs=1e-9)
  assert abs(dw[0]) > 1e-6


# --- gin ---

def test_gin_bindings_reach_the_builders():
  gin.parse_config("""
      resnet32.blocks_per_stage = 3
      mlp.hidden_sizes = (6, 5)
      wrn.depth = 10
      wrn.widen_factor = 1
      resnet50.weights_path = None
  """)
  resnet20 = models.get("resnet32", 10, (8, 8, 3))
  assert resnet20.name == "resnet20"
  assert _counts(resnet20) == _cifar_resnet_counts(3, 10)
  assert models.get("mlp", 10, (8, 8, 1)).get_layer("dense2").units == 5
  assert models.get("wide_resnet", 10, (8, 8, 3)).name == "wrn10_1"


def test_gin_cannot_bind_data_dependent_arguments():
  with pytest.raises(ValueError):
    gin.parse_config("resnet32.num_classes = 3")


# --- ResNet-50 ---

@pytest.fixture(scope="module")
def resnet50_model():
  keras.utils.set_random_seed(11)
  return models.get("resnet50", num_classes=14, input_shape=(32, 32, 3))


def _backbone_weights(model):
  return {w.path: w.numpy() for w in resnet50_lib.backbone(model).weights}


@pytest.mark.slow
def test_resnet50_shape_count_and_batchnorm(resnet50_model):
  model = resnet50_model
  y = model(np.zeros((2, 32, 32, 3), "float32"), training=False)
  assert tuple(y.shape) == (2, 14) and y.dtype == tf.float32
  assert _counts(model) == _keras_resnet50_counts(14)
  bns = [l for l in model.layers
         if isinstance(l, keras.layers.BatchNormalization)]
  assert len(bns) == 53
  assert all(bn.momentum == pytest.approx(0.9) for bn in bns)
  # keras.applications' BN layers, swapped for the cheap-second-derivative
  # subclass with their names and epsilon kept.
  assert all(type(bn) is MetaBatchNormalization for bn in bns)
  assert all(bn.epsilon == pytest.approx(1.001e-5) for bn in bns)
  assert "conv1_bn" in [bn.name for bn in bns]


@pytest.mark.slow
def test_resnet50_restores_checkpoints_of_the_keras_bn_graph(tmp_path):
  """Checkpoints written before the BN swap (keras.applications' own
  layers) restore into the registry model, and it computes the same."""
  inputs = keras.Input((32, 32, 3), name="images")
  features = keras.applications.ResNet50(
      include_top=False, weights=None, input_tensor=inputs,
      input_shape=(32, 32, 3), pooling="avg")
  old = keras.Model(inputs, keras.layers.Dense(14, name="logits")(
      features.output))
  rng = np.random.default_rng(0)
  for v in old.variables:
    value = rng.uniform(0.0, 0.1, v.shape)
    v.assign(value + 0.5 if "variance" in v.path else value)
  tf.train.Checkpoint(model=old).write(str(tmp_path / "ckpt"))
  new = models.get("resnet50", num_classes=14, input_shape=(32, 32, 3))
  tf.train.Checkpoint(model=new).read(str(tmp_path / "ckpt")).assert_consumed()
  x = rng.normal(size=(2, 32, 32, 3)).astype("float32")
  np.testing.assert_array_equal(new(x, training=False).numpy(),
                                old(x, training=False).numpy())


def test_resnet50_from_scratch_logs_it(caplog):
  with caplog.at_level(logging.INFO, logger="absl"):
    models.get("resnet50", num_classes=2, input_shape=(32, 32, 3))
  assert any("from scratch" in r.getMessage() for r in caplog.records)


def test_resnet50_missing_weights_file(tmp_path):
  path = str(tmp_path / "nowhere" / "resnet50_notop.h5")
  with pytest.raises(FileNotFoundError) as err:
    models.get("resnet50", 14, (32, 32, 3), weights_path=path)
  message = str(err.value)
  assert path in message
  assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message


def _assert_same_backbone(reference, model, x):
  expected, actual = _backbone_weights(reference), _backbone_weights(model)
  assert expected.keys() == actual.keys()
  for key in expected:
    np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
  features = [resnet50_lib.backbone(m)(x, training=False)
              for m in (reference, model)]
  np.testing.assert_allclose(features[1], features[0], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_resnet50_weights_round_trip(resnet50_model, tmp_path, caplog):
  path = str(tmp_path / "backbone.weights.h5")
  resnet50_lib.backbone(resnet50_model).save_weights(path)
  with caplog.at_level(logging.INFO, logger="absl"):
    model = models.get("resnet50", 14, (32, 32, 3), weights_path=path)
  assert any(path in r.getMessage() for r in caplog.records)
  x = np.random.default_rng(12).normal(size=(2, 32, 32, 3)).astype("float32")
  _assert_same_backbone(resnet50_model, model, x)
  # The head is new: only the backbone is loaded.
  assert not np.array_equal(model.get_layer("logits").kernel.numpy(),
                            resnet50_model.get_layer("logits").kernel.numpy())


@pytest.mark.slow
def test_resnet50_loads_legacy_h5_like_keras_imagenet_file(resnet50_model,
                                                           tmp_path):
  """Keras ships the ImageNet notop weights in the legacy HDF5 layout."""
  h5py = pytest.importorskip("h5py")
  # Private Keras API, used only to write a file in the legacy layout.
  legacy_h5_format = pytest.importorskip(
      "keras.src.legacy.saving.legacy_h5_format")
  path = str(tmp_path / "resnet50_notop.h5")
  with h5py.File(path, "w") as f:
    legacy_h5_format.save_weights_to_hdf5_group(
        f, resnet50_lib.backbone(resnet50_model))
  model = models.get("resnet50", 14, (32, 32, 3), weights_path=path)
  x = np.random.default_rng(13).normal(size=(2, 32, 32, 3)).astype("float32")
  _assert_same_backbone(resnet50_model, model, x)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Keras' skip notices
def test_resnet50_rejects_a_file_of_another_model(tmp_path):
  path = str(tmp_path / "mlp.weights.h5")
  models.get("mlp", 14, (8, 8, 1)).save_weights(path)
  with pytest.raises(ValueError, match="Could not load"):
    models.get("resnet50", 14, (32, 32, 3), weights_path=path)
