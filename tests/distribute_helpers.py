"""The tiny models, data and fits of the distribution tests.

Shared by tests/test_distribute.py, tests/test_distribute_multi_worker.py
and tests/test_distribute_tpu.py, in their test processes and in the child
processes they run (each child is its test file run as a script, with
tests/ on sys.path). TensorFlow, Keras and mwn_tf are imported inside the
functions: a child configures its devices before TensorFlow starts.
"""

import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Global train / meta batch, inputs, hidden units, classes.
N, M, D, H, K = 12, 8, 5, 7, 4
STEPS = 3
RTOL, ATOL = 2e-5, 2e-6   # float32, a few ops of rounding amplified by 3 steps


def assert_close(got, want, what):
  assert len(got) == len(want), what
  for i, (g, w) in enumerate(zip(got, want)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=RTOL,
                               atol=ATOL, err_msg=f"{what}, variable {i}")


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
  """Classifier Dense(L2)-[BN]-ReLU-Dense and V (class-aware: clusters
  (0, 1, 1, 2) of the K = 4 classes), compiled; float32.

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
