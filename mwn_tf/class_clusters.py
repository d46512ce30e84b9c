"""Class clusters for the class-aware weighting net: class id -> cluster id.

CMW-Net (Shu et al., "CMW-Net: Learning a Class-Aware Sample Weighting
Mapping for Robust Deep Learning", TPAMI 2023; code: xjtushujun/CMW-Net)
groups the classes by their number of training samples with k-means, three
groups by default, and gives each group its own output head of V
(`mwn_tf.weight_net.ClassAwareWeightNet`). The counts are those of the
labels the classifier is trained on, i.e. the NOISY labels: that is all a
user of noisy data knows.

NumPy and scikit-learn only (no TensorFlow): the runner computes the map
once, before training, from the loaded data.
"""

from typing import Sequence, Tuple

import numpy as np

# k-means restarts: CMW-Net's clustering is one 1-D k-means, cheap enough to
# restart a few times so that the map does not hinge on one initialisation.
N_INIT = 10


def cluster_map_from_counts(counts: Sequence[int], num_clusters: int = 3,
                            seed: int = 0) -> Tuple[int, ...]:
  """Clusters classes by their sample counts (CMW-Net's k-means).

  k-means (`sklearn.cluster.KMeans`, `n_init=N_INIT`, `random_state=seed`)
  on the 1-D counts. Clusters are renumbered so that cluster 0 holds the
  classes with the most samples (by the cluster's mean count, then by its
  smallest class id), so the map depends on the counts and the seed only.

  Fewer clusters than asked: k-means needs at least as many distinct counts
  as clusters, so with fewer distinct counts (e.g. a balanced dataset, where
  every class has the same count) it uses one cluster per distinct count;
  equal counts give one cluster, i.e. the plain `WeightNet`'s single head.
  Likewise never more clusters than classes.

  Args:
    counts: `[K]` training samples per class (noisy labels), >= 0.
    num_clusters: the clusters wanted, >= 1 (CMW-Net: 3).
    seed: k-means' `random_state`.

  Returns:
    `[K]` cluster ids in 0..C-1, C <= num_clusters, each id used.
  """
  counts = np.asarray(counts, np.float64).reshape(-1)
  if counts.size == 0 or int(num_clusters) < 1:
    raise ValueError(f"cluster_map_from_counts needs counts of >= 1 class and "
                     f"num_clusters >= 1, got {counts.size} counts and "
                     f"num_clusters={num_clusters!r}.")
  k = min(int(num_clusters), np.unique(counts).size)
  if k == 1:
    return (0,) * counts.size
  # Imported here: scikit-learn is slow to import and only this needs it.
  from sklearn.cluster import KMeans  # pylint: disable=g-import-not-at-top
  labels = KMeans(n_clusters=k, n_init=N_INIT,
                  random_state=int(seed)).fit_predict(counts[:, None])
  found = np.unique(labels)
  order = sorted(found, key=lambda c: (-counts[labels == c].mean(),
                                       int(np.flatnonzero(labels == c)[0])))
  renumber = {int(c): i for i, c in enumerate(order)}
  return tuple(renumber[int(c)] for c in labels)


def check_cluster_map(cluster_map, num_classes=None) -> Tuple[int, ...]:
  """`cluster_map` as a tuple of ints, or ValueError saying what is wrong.

  A valid map is a non-empty sequence of integers whose ids are exactly
  0..C-1 (every head is used by some class), and, when `num_classes` is
  given, has one entry per class.
  """
  values = list(cluster_map) if isinstance(cluster_map, (list, tuple)) else (
      None)
  if not values or not all(
      isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 0
      for c in values):
    raise ValueError(f"must be a non-empty tuple of cluster ids >= 0, one "
                     f"per class, got {cluster_map!r}")
  if set(values) != set(range(max(values) + 1)):
    raise ValueError(f"must use every cluster id from 0 to its largest, got "
                     f"{tuple(values)!r}")
  if num_classes is not None and len(values) != int(num_classes):
    raise ValueError(f"must have one cluster id per class ({num_classes} "
                     f"classes), got {len(values)}")
  return tuple(int(c) for c in values)


def cluster_counts(counts: Sequence[int],
                   cluster_map: Sequence[int]) -> list:
  """Per cluster: (number of classes, training samples), for logs and
  results.json."""
  counts = np.asarray(counts).reshape(-1)
  cluster_map = np.asarray(cluster_map)
  return [(int(np.sum(cluster_map == c)),
           int(counts[cluster_map == c].sum()))
          for c in range(int(cluster_map.max()) + 1)]
