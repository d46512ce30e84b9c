"""Label corruption, meta split and long tail (pure NumPy, generated labels)."""

import math

import numpy as np
import pytest

from mwn_tf.data import corruption

K = 10
Z = 5.0  # Binomial bounds at 5 sigma: a false failure has probability < 1e-6.


def _balanced_labels(per_class, k=K, seed=123):
  labels = np.repeat(np.arange(k), per_class)
  return np.random.default_rng(seed).permutation(labels)


def _within_binomial(observed, p, n):
  return abs(observed - p) <= Z * math.sqrt(max(p * (1 - p), 1e-12) / n)


# ---------------------------------------------------------------- matrices
@pytest.mark.parametrize("r", [0.0, 0.2, 0.6, 1.0])
def test_uniform_matrix_entries(r):
  c = corruption.transition_matrix("uniform", r, K)
  for i in range(K):
    for j in range(K):
      want = (1 - r) + r / K if i == j else r / K
      assert c[i, j] == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("noise_type,n_targets", [("flip", 1), ("flip2", 2)])
def test_flip_matrix_entries(noise_type, n_targets):
  r = 0.4
  c = corruption.transition_matrix(noise_type, r, K,
                                   rng=np.random.default_rng(7))
  for i in range(K):
    assert c[i, i] == pytest.approx(1 - r)
    off = np.delete(c[i], i)
    assert np.sum(off > 0) == n_targets
    np.testing.assert_allclose(off[off > 0], r / n_targets)
  np.testing.assert_allclose(c.sum(axis=1), 1.0)


def test_flip_targets_are_seeded():
  mats = [corruption.transition_matrix("flip", 0.3, K,
                                       rng=np.random.default_rng(s))
          for s in (0, 0, 1)]
  np.testing.assert_array_equal(mats[0], mats[1])
  assert not np.array_equal(mats[0], mats[2])


def test_hierarchical_matrix_entries():
  r, superclass = 0.4, np.arange(20) // 5  # 4 superclasses of 5 classes.
  c = corruption.transition_matrix("hierarchical", r, 20,
                                   superclass=superclass)
  for i in range(20):
    for j in range(20):
      if i == j:
        want = 1 - r
      elif superclass[i] == superclass[j]:
        want = r / 4
      else:
        want = 0.0
      assert c[i, j] == pytest.approx(want, abs=1e-12)


def test_none_has_no_matrix():
  assert corruption.transition_matrix("none", 0.0, K) is None


# ---------------------------------------------------------- sampled labels
@pytest.mark.parametrize("noise_type,r", [("uniform", 0.4), ("uniform", 0.8),
                                          ("flip", 0.2), ("flip2", 0.4),
                                          ("hierarchical", 0.4)])
def test_realised_rate_and_empirical_matrix(noise_type, r):
  n_per_class = 5000
  k = 20 if noise_type == "hierarchical" else K
  superclass = np.arange(k) // 5 if noise_type == "hierarchical" else None
  clean = _balanced_labels(n_per_class, k)
  c = corruption.transition_matrix(noise_type, r, k,
                                   rng=np.random.default_rng(3),
                                   superclass=superclass)
  observed = corruption.corrupt_labels(clean, c, np.random.default_rng(4))
  expected_rate = r * (k - 1) / k if noise_type == "uniform" else r
  assert _within_binomial(np.mean(observed != clean), expected_rate,
                          clean.size)
  # Every cell of the empirical matrix is within its binomial bound, and
  # zero-probability cells are never hit.
  counts = np.zeros((k, k))
  np.add.at(counts, (clean, observed), 1)
  for i in range(k):
    for j in range(k):
      freq = counts[i, j] / n_per_class
      if c[i, j] == 0:
        assert counts[i, j] == 0
      else:
        assert _within_binomial(freq, c[i, j], n_per_class), (i, j)


def test_prepare_reports_realised_rate():
  clean = _balanced_labels(400)
  prep = corruption.prepare(clean, K, num_meta=100, noise_type="uniform",
                            noise_rate=0.5, seed=1)
  np.testing.assert_array_equal(prep.train_clean, clean[prep.train_index])
  assert prep.realised_noise_rate == np.mean(
      prep.train_labels != prep.train_clean)
  assert prep.expected_noise_rate == pytest.approx(0.5 * (K - 1) / K)


# ------------------------------------------------------------ meta / long tail
@pytest.mark.parametrize("seed", range(6))
def test_meta_disjoint_clean_balanced(seed):
  clean = _balanced_labels(300)
  prep = corruption.prepare(clean, K, num_meta=200, noise_type="uniform",
                            noise_rate=0.6, imbalance_factor=10, seed=seed)
  assert not set(prep.meta_index) & set(prep.train_index)
  np.testing.assert_array_equal(prep.meta_labels, clean[prep.meta_index])
  np.testing.assert_array_equal(np.bincount(prep.meta_labels, minlength=K),
                                [20] * K)


@pytest.mark.parametrize("imbalance_factor", [1, 10, 50, 100, 200])
def test_long_tail_counts_equal_formula(imbalance_factor):
  per_class, num_meta = 500, 10 * K
  clean = _balanced_labels(per_class)
  prep = corruption.prepare(clean, K, num_meta=num_meta,
                            imbalance_factor=imbalance_factor,
                            noise_type="flip", noise_rate=0.3, seed=2)
  n_max = per_class - num_meta // K
  want = [math.floor(n_max * (1 / imbalance_factor) ** (i / (K - 1)))
          for i in range(K)]
  # Counts are of the CLEAN labels: long tail first, then noise.
  np.testing.assert_array_equal(np.bincount(prep.train_clean, minlength=K),
                                want)


def test_long_tail_examples_seeded_and_from_rest():
  clean = _balanced_labels(200)
  a = corruption.prepare(clean, K, num_meta=50, imbalance_factor=20, seed=0)
  b = corruption.prepare(clean, K, num_meta=50, imbalance_factor=20, seed=1)
  assert not np.array_equal(a.train_index, b.train_index)
  assert np.array_equal(np.bincount(a.train_clean), np.bincount(b.train_clean))


def test_determinism_same_and_different_seed():
  clean = _balanced_labels(300)
  kw = dict(num_meta=100, noise_type="flip2", noise_rate=0.4,
            imbalance_factor=5)
  a = corruption.prepare(clean, K, seed=11, **kw)
  b = corruption.prepare(clean, K, seed=11, **kw)
  c = corruption.prepare(clean, K, seed=12, **kw)
  for field in ("train_index", "train_labels", "meta_index"):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(getattr(a, field), getattr(c, field))
  np.testing.assert_array_equal(a.matrix, b.matrix)


# --------------------------------------------------------------------- errors
_RANGE = r"noise_rate must be in \[0, 1\]"


@pytest.mark.parametrize("kwargs,message", [
    (dict(noise_type="uniform", noise_rate=1.5), _RANGE),
    (dict(noise_type="uniform", noise_rate=-0.1), _RANGE),
    (dict(noise_type="gaussian", noise_rate=0.1), "Unknown noise_type"),
    (dict(noise_type="none", noise_rate=0.3), "set noise_type"),
    (dict(noise_type="hierarchical", noise_rate=0.3), "needs superclasses"),
    (dict(imbalance_factor=0.5), "imbalance_factor must be >= 1"),
    (dict(num_meta=105), "multiple of the 10 classes"),
    (dict(num_meta=10 * 301), "class 0 has only 300 training examples"),
])
def test_bad_settings_messages(kwargs, message):
  args = dict(num_meta=100, noise_type="none", noise_rate=0.0,
              imbalance_factor=1.0, seed=0)
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    corruption.prepare(_balanced_labels(300), K, **args)


def test_hierarchical_lonely_class_message():
  with pytest.raises(ValueError, match="class 2 is alone in superclass 1"):
    corruption.transition_matrix("hierarchical", 0.2, 3,
                                 superclass=np.array([0, 0, 1]))
