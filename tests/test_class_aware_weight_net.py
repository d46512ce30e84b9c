"""The class-aware weighting net (CMW-Net's V) and its class clusters:
the k-means map from the noisy class counts, and V's choice of head."""

import numpy as np
import pytest
import tensorflow as tf

import mwn_tf
from mwn_tf import class_clusters
from mwn_tf.weight_net import curve_labels


# ----------------------------------------------------------------------------
# The cluster map.
# ----------------------------------------------------------------------------
def test_k_means_groups_counts_with_cluster_0_the_most_samples():
  counts = [500, 480, 50, 40, 5, 3, 200, 210]
  cluster_map = class_clusters.cluster_map_from_counts(counts, 3, seed=0)
  assert cluster_map == (0, 0, 2, 2, 2, 2, 1, 1)
  # The same whatever the seed: three well separated groups.
  for seed in (1, 7, 12345):
    assert class_clusters.cluster_map_from_counts(counts, 3, seed) == (
        cluster_map)
  assert class_clusters.cluster_counts(counts, cluster_map) == [
      (2, 980), (2, 410), (4, 98)]


def test_equal_counts_give_one_cluster_and_fewer_distinct_counts_fewer():
  assert class_clusters.cluster_map_from_counts([100] * 10, 3) == (0,) * 10
  assert class_clusters.cluster_map_from_counts([100, 100, 50], 3) == (
      0, 0, 1)
  # Never more clusters than classes.
  assert class_clusters.cluster_map_from_counts([9, 1], 5) == (0, 1)


@pytest.mark.parametrize("bad,why", [
    ((), "non-empty"), ((0, -1), "non-empty"), ((0, 2), "every cluster id"),
    ((0, 1.0), "non-empty"), ("01", "non-empty")])
def test_a_bad_map_is_refused(bad, why):
  with pytest.raises(ValueError, match=why):
    class_clusters.check_cluster_map(bad)
  with pytest.raises(ValueError, match="ClassAwareWeightNet.cluster_map"):
    mwn_tf.ClassAwareWeightNet(bad)


def test_the_map_must_have_one_id_per_class():
  with pytest.raises(ValueError, match="one cluster id per class"):
    class_clusters.check_cluster_map((0, 1), num_classes=3)


# ----------------------------------------------------------------------------
# V.
# ----------------------------------------------------------------------------
def test_each_sample_gets_its_cluster_s_head():
  net = mwn_tf.ClassAwareWeightNet((0, 1, 1, 2), hidden_units=(6,))
  assert net.takes_labels and net.num_clusters == 3
  # The paper's trunk and one Linear(6, 1) head per cluster.
  assert [tuple(v.shape) for v in net.trainable_variables] == [
      (1, 6), (6,), (6, 3), (3,)]
  losses = tf.constant([[0.5], [1.0], [2.0], [3.0], [0.5]])
  labels = tf.constant([0, 1, 2, 3, 3])
  got = net((losses, labels)).numpy()[:, 0]
  every_head = net.out(net.hidden[0](losses)).numpy()  # [5, 3]
  np.testing.assert_allclose(got, every_head[np.arange(5), [0, 1, 1, 2, 2]])
  assert ((got > 0) & (got < 1)).all()
  assert curve_labels(net) == [0, 1, 3]
  assert curve_labels(mwn_tf.WeightNet(hidden_units=(6,))) == [None]


def test_one_cluster_is_the_paper_s_v():
  tf.keras.utils.set_random_seed(3)
  plain = mwn_tf.WeightNet(hidden_units=(6,))
  aware = mwn_tf.ClassAwareWeightNet((0, 0, 0), hidden_units=(6,))
  assert [v.shape for v in plain.trainable_variables] == [
      v.shape for v in aware.trainable_variables]
  aware.set_weights(plain.get_weights())
  losses = tf.constant([[0.1], [2.0], [5.0]])
  np.testing.assert_allclose(aware((losses, tf.constant([0, 1, 2]))),
                             plain(losses), rtol=1e-6)


def test_the_model_feeds_labels_to_a_class_aware_v_only():
  classifier = tf.keras.Sequential([tf.keras.Input((3,)),
                                    tf.keras.layers.Dense(4)])
  aware = mwn_tf.MetaWeightModel(
      classifier, mwn_tf.ClassAwareWeightNet((0, 1, 1, 0), hidden_units=(6,)))
  losses, labels = tf.constant([0.5, 2.0]), tf.constant([0, 1])
  want = aware.weight_net((losses[:, None], labels)).numpy()[:, 0]
  np.testing.assert_allclose(aware.weights_for(losses, labels), want)
  with pytest.raises(ValueError, match=r"weights_for\(losses, labels\)"):
    aware.weights_for(losses)
  plain = mwn_tf.MetaWeightModel(classifier,
                                 mwn_tf.WeightNet(hidden_units=(6,)))
  np.testing.assert_allclose(plain.weights_for(losses, labels),
                             plain.weights_for(losses))
