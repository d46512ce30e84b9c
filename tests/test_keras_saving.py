"""Keras-native saving: `.keras` archives and `.weights.h5` files of
`MetaWeightModel`, `WeightNet` and `ClassAwareWeightNet`, and
`ModelCheckpoint` in a user's `fit()`.

A round trip is checked by what matters to a user who resumes from it: the
loaded model, trained on the same batches as the original, ends with every
variable (classifier, BatchNorm statistics, V, both optimizers' slots and
step counts) bit-identical to the original's.
"""

import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import mwn_tf
from mwn_tf import models

BATCH = 16
# A class-aware V's clusters of the ten digits.
CLUSTER_MAP = (0, 0, 1, 1, 1, 2, 2, 0, 1, 2)


@pytest.fixture(scope="module")
def batches():
  """Eight (train, meta) batches of noisy digits, as numpy, fixed order."""
  splits = mwn_tf.data.get("digits", noise_type="uniform", noise_rate=0.4)
  stream = splits.train_and_meta(BATCH).take(8)
  return list(stream.as_numpy_iterator())


def _dataset(batches):
  """The given (train, meta) batches, in order, as one tf.data pass."""
  stacked = tf.nest.map_structure(lambda *xs: np.stack(xs), *batches)
  return tf.data.Dataset.from_tensor_slices(stacked)


def _model(method="mwn", seed=3, class_aware=False, **options):
  """small_cnn (MetaBatchNormalization) + V (class-aware: on CLUSTER_MAP),
  compiled with stateful optimizers and a schedule that switches inside
  the test's steps."""
  keras.utils.set_random_seed(seed)
  classifier = models.get("small_cnn", num_classes=10, input_shape=(8, 8, 1))
  weight_net = (mwn_tf.ClassAwareWeightNet(CLUSTER_MAP) if class_aware else
                mwn_tf.WeightNet())
  model = mwn_tf.MetaWeightModel(classifier, weight_net,
                                 method=method, **options)
  model.compile(
      optimizer=keras.optimizers.SGD(
          keras.optimizers.schedules.PiecewiseConstantDecay([4], [0.1, 0.02]),
          momentum=0.9, nesterov=True),
      meta_optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-8))
  return model


def _state(model):
  """Every variable a resumed run depends on, as numpy arrays."""
  variables = (model.classifier.variables + model.weight_net.variables +
               model.optimizer.variables)
  if model.meta_optimizer is not None:
    variables += model.meta_optimizer.variables
  return [np.array(v.numpy()) for v in variables]


def _slots(optimizer):
  """Momentum / Adam moment variables (not the step count or the lr)."""
  return [v.numpy() for v in optimizer.variables
          if v.path.endswith(("_momentum", "_velocity"))]


def _json(config):
  return json.dumps(config, sort_keys=True)


def _assert_equal(got, expected):
  assert len(got) == len(expected)
  for i, (g, e) in enumerate(zip(got, expected)):
    np.testing.assert_array_equal(g, e, err_msg=f"variable {i}")


@pytest.mark.parametrize("method, options", [
    ("mwn", {}),
    ("baseline", {}),
    ("mwn", {"meta_interval": 2, "virtual_layers": 1,
             "normalize_weights": "none"}),
    ("mwn", {"class_aware": True}),
    # The fast modes feed labels to V too.
    ("mwn", {"class_aware": True, "meta_interval": 2, "virtual_layers": 1}),
])
def test_keras_round_trip_continues_training_bit_identically(
    batches, tmp_path, method, options):
  model = _model(method, **options)
  model.fit(_dataset(batches[:3]), epochs=1, verbose=0)
  path = str(tmp_path / "model.keras")
  model.save(path)
  saved = _state(model)

  loaded = keras.models.load_model(path)
  assert loaded is not model and type(loaded).__name__ == "MetaWeightModel"
  assert type(loaded.weight_net) is type(model.weight_net)
  assert getattr(loaded.weight_net, "cluster_map", None) == getattr(
      model.weight_net, "cluster_map", None)
  for key in ("method", "meta_interval", "virtual_layers", "normalize_weights"):
    assert getattr(loaded, key) == getattr(model, key)
  _assert_equal(_state(loaded), saved)
  # The restored optimizer state is not trivial: momentum slots, Adam moments
  # and both step counts have moved away from their initial values.
  assert int(loaded.optimizer.iterations) == 3
  assert _slots(loaded.optimizer)
  assert all(np.abs(s).max() > 0 for s in _slots(loaded.optimizer))
  if method == "mwn":
    # meta_interval=2 runs V's update on steps 0 and 2 only.
    assert int(loaded.meta_optimizer.iterations) == (
        3 if model.meta_interval == 1 else 2)
    assert all(np.abs(s).max() > 0 for s in _slots(loaded.meta_optimizer))
  else:
    assert loaded.meta_optimizer is None

  # Five more steps on the same batches (the schedule switches at step 4).
  history = model.fit(_dataset(batches[3:]), epochs=1, verbose=0).history
  history_loaded = loaded.fit(_dataset(batches[3:]), epochs=1,
                              verbose=0).history
  continued = _state(model)
  assert any(not np.array_equal(a, b) for a, b in zip(continued, saved))
  _assert_equal(_state(loaded), continued)
  assert history_loaded == history


def test_config_round_trips_every_option(tmp_path):
  keras.utils.set_random_seed(0)
  classifier = models.get("mlp", num_classes=10, input_shape=(8, 8, 1),
                          batch_norm=True)
  model = mwn_tf.MetaWeightModel(
      classifier, mwn_tf.WeightNet(hidden_units=(7, 5)), method="mwn",
      normalize_weights="none", weight_decay=1e-3, meta_weight_decay=2e-4,
      check_labels=False, virtual_step="local", sync_batchnorm=True,
      meta_interval=3, virtual_layers=1, name="my_mwn")
  path = str(tmp_path / "uncompiled.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  # Compared as JSON, the archive's format (tuples come back as lists).
  assert _json(loaded.get_config()) == _json(model.get_config())
  assert loaded.get_config()["meta_interval"] == 3
  assert loaded.weight_net.hidden_units == (7, 5)
  assert all(layer.synchronized for layer in loaded.classifier.layers
             if isinstance(layer, keras.layers.BatchNormalization))
  # Saved uncompiled, loaded uncompiled: compile() then works as usual.
  assert loaded.meta_optimizer is None and not loaded.compiled
  loaded.compile(optimizer="sgd", meta_optimizer=keras.optimizers.Adam())
  assert loaded.meta_optimizer.built


@pytest.mark.parametrize("kwargs", [{}, {"hidden_units": (10, 4)},
                                    {"dtype": "float64"}])
def test_weight_net_round_trip(tmp_path, kwargs):
  keras.utils.set_random_seed(1)
  net = mwn_tf.WeightNet(**kwargs)
  count = len(net.variables)
  # Building a built V again (as Keras' loader and users do) adds nothing;
  # it used to make the Dense variables twice, which Keras refuses.
  net.build((None, 1))
  assert len(net.variables) == count
  path = str(tmp_path / "v.keras")
  net.save(path)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # e.g. "cannot be built automatically"
    loaded = keras.models.load_model(path)
  assert _json(loaded.get_config()) == _json(net.get_config())
  assert loaded.dtype_policy.name == net.dtype_policy.name
  _assert_equal([v.numpy() for v in loaded.variables],
                [v.numpy() for v in net.variables])
  losses = np.linspace(0.0, 6.0, 7).astype(net.dtype)[:, None]
  np.testing.assert_array_equal(loaded(losses).numpy(), net(losses).numpy())


def test_class_aware_weight_net_round_trip(tmp_path):
  keras.utils.set_random_seed(1)
  net = mwn_tf.ClassAwareWeightNet(CLUSTER_MAP, hidden_units=(10, 4))
  count = len(net.variables)
  net.build(None)
  assert len(net.variables) == count
  path = str(tmp_path / "v.keras")
  net.save(path)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    loaded = keras.models.load_model(path)
  assert _json(loaded.get_config()) == _json(net.get_config())
  assert loaded.cluster_map == CLUSTER_MAP and loaded.takes_labels
  _assert_equal([v.numpy() for v in loaded.variables],
                [v.numpy() for v in net.variables])
  losses = np.linspace(0.0, 6.0, 10).astype(np.float32)[:, None]
  labels = np.arange(10, dtype=np.int32)
  np.testing.assert_array_equal(loaded((losses, labels)).numpy(),
                                net((losses, labels)).numpy())


def test_weight_net_loads_inside_a_functional_model(tmp_path):
  keras.utils.set_random_seed(2)
  inputs = keras.Input((1,))
  outer = keras.Model(inputs, mwn_tf.WeightNet(hidden_units=(3,))(inputs))
  path = str(tmp_path / "outer.keras")
  outer.save(path)
  loaded = keras.models.load_model(path)
  losses = np.array([[0.1], [2.0]], np.float32)
  np.testing.assert_array_equal(loaded(losses).numpy(),
                                outer(losses).numpy())


def test_model_checkpoint_in_a_users_fit(batches, tmp_path):
  model = _model()
  callbacks = [
      keras.callbacks.ModelCheckpoint(str(tmp_path / "e{epoch}.keras")),
      keras.callbacks.ModelCheckpoint(str(tmp_path / "e{epoch}.weights.h5"),
                                      save_weights_only=True)]
  model.fit(_dataset(batches[:4]).repeat(2), steps_per_epoch=4, epochs=2,
            verbose=0, callbacks=callbacks)
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "e1.keras", "e1.weights.h5", "e2.keras", "e2.weights.h5"]
  final = _state(model)

  _assert_equal(_state(keras.models.load_model(str(tmp_path / "e2.keras"))),
                final)
  # Weights only: into a freshly made and compiled model (other init seed).
  fresh = _model(seed=9)
  fresh.load_weights(str(tmp_path / "e2.weights.h5"))
  _assert_equal(_state(fresh), final)
  # The first epoch's checkpoint holds the first epoch's state, not the last.
  first = _state(keras.models.load_model(str(tmp_path / "e1.keras")))
  assert any(not np.array_equal(a, b) for a, b in zip(first, final))


def test_mixed_float16_round_trip_keeps_both_loss_scale_optimizers(
    batches, tmp_path):
  keras.utils.set_random_seed(6)
  classifier = models.get("small_cnn", num_classes=10, input_shape=(8, 8, 1),
                          dtype="mixed_float16")
  model = mwn_tf.MetaWeightModel(classifier)
  model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                meta_optimizer=keras.optimizers.Adam(1e-3))
  model.fit(_dataset(batches[:2]), epochs=1, verbose=0)
  path = str(tmp_path / "mixed.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  for optimizer in (loaded.optimizer, loaded.meta_optimizer):
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
  assert loaded.classifier.layers[1].dtype_policy.name == "mixed_float16"
  _assert_equal(_state(loaded), _state(model))
  model.fit(_dataset(batches[2:4]), epochs=1, verbose=0)
  loaded.fit(_dataset(batches[2:4]), epochs=1, verbose=0)
  _assert_equal(_state(loaded), _state(model))
