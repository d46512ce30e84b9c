"""Datasets for Meta-Weight-Net: registry, sources and pipelines.

    splits = mwn_tf.data.get("cifar10", noise_type="uniform", noise_rate=0.4)
    for train_batch, meta_batch in splits.train_and_meta(100):
      ...

See `registry.get`, `splits.DataSplits` and each loader's docstring.
"""

from mwn_tf.data.registry import get, names, register
from mwn_tf.data.splits import DataSplits, RawImages

# Importing the loaders registers them.
from mwn_tf.data import cifar  # pylint: disable=g-bad-import-order
from mwn_tf.data import cifar_n
from mwn_tf.data import clothing1m
from mwn_tf.data import digits
from mwn_tf.data import folder
from mwn_tf.data import npz

__all__ = ["DataSplits", "RawImages", "get", "names", "register", "cifar",
           "cifar_n", "clothing1m", "digits", "folder", "npz"]
