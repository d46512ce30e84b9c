"""`DataSplits`: the train / meta / test pipelines every experiment consumes.

Batches are dicts:
  image       float32 [b, H, W, C]  normalised
  label       int32   [b]           observed (possibly corrupted) label
  clean_label int32   [b]           true label (-1 where unknown, Clothing1M)
  index       int64   [b]           position in the ORIGINAL source split
  is_noisy    bool    [b]           label != clean_label (False if unknown)

Pipelines are strategy-aware: with a `tf.distribute.Strategy` they are built
with `distribute_datasets_from_function`, sharded by input pipeline, batched
per replica, and the pipeline id is folded into every shuffle/augment seed.
"""

import dataclasses
from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

_AUTOTUNE = tf.data.AUTOTUNE
# Stream ids folded into the TF seeds (fixed forever).
_TRAIN_SHUFFLE, _TRAIN_AUG, _META_SHUFFLE, _META_AUG = 11, 12, 21, 22


def tf_seed(seed: int, stream: int, pipeline_id: int = 0) -> int:
  """A 31-bit TF op seed derived from (seed, stream, input pipeline id)."""
  return int(np.random.SeedSequence([int(seed), stream, pipeline_id])
             .generate_state(1)[0] & 0x7FFFFFFF)


def _pipeline(ctx: Optional[tf.distribute.InputContext]) -> tuple[int, int]:
  """(number of input pipelines, this pipeline's id)."""
  return (ctx.num_input_pipelines, ctx.input_pipeline_id) if ctx else (1, 0)


class ArraySource:
  """A split held in memory. Yields raw examples (image uint8/float32).

  Shuffling permutes int64 positions and gathers, so the shuffle buffer is
  small however large the images are.
  """

  in_memory = True

  def __init__(self, images: np.ndarray, label: np.ndarray,
               clean_label: np.ndarray, index: np.ndarray):
    """images [n, H, W, C]; label, clean_label [n] int; index [n] int."""
    self.num_examples = int(images.shape[0])
    self._numpy = {"image": images,
                   "label": np.asarray(label, np.int32),
                   "clean_label": np.asarray(clean_label, np.int32),
                   "index": np.asarray(index, np.int64)}
    self._tensors = None

  def _host_tensors(self) -> dict:
    # Created on first use, not in __init__: building DataSplits must not
    # initialise the TF runtime (the runner may still configure devices),
    # and the arrays belong in host memory, not on an accelerator.
    if self._tensors is None:
      with tf.device("/cpu:0"):
        self._tensors = {k: tf.convert_to_tensor(v)
                         for k, v in self._numpy.items()}
    return self._tensors

  def make(self, ctx, *, shuffle_seed: Optional[int],
           order_seed: Optional[int], repeat: bool,
           equal_shards: bool) -> tf.data.Dataset:
    """Raw examples for this input pipeline, optionally shuffled/repeated.

    Args:
      ctx: tf.distribute.InputContext or None.
      shuffle_seed: per-pipeline shuffle seed; None: source order.
      order_seed: unused (positions are sharded before shuffling).
      repeat: repeat forever.
      equal_shards: truncate shards to the same length.
    """
    del order_seed
    n_pipes, pipe_id = _pipeline(ctx)
    ds = tf.data.Dataset.range(self.num_examples)
    if n_pipes > 1:
      ds = ds.shard(n_pipes, pipe_id)
      if equal_shards:  # Same step count on every pipeline (no hangs).
        ds = ds.take(self.num_examples // n_pipes)
    if shuffle_seed is not None:
      ds = ds.shuffle(self.num_examples, seed=shuffle_seed,
                      reshuffle_each_iteration=True)
    if repeat:
      ds = ds.repeat()
    tensors = self._host_tensors()
    return ds.map(lambda i: {k: tf.gather(v, i) for k, v in tensors.items()},
                  num_parallel_calls=_AUTOTUNE)

  def images_of(self, index: np.ndarray) -> list:
    """The raw images (as `make` yields them) of the samples with these
    `index` values, for a person to look at; not used in training.

    Args:
      index: `[n]` int sample ids (the `index` field), each in this split.

    Returns:
      n raw images (`[H, W, C]` arrays here; file bytes for `FileSource`).

    Raises:
      KeyError: an `index` that is not in this split.
    """
    ids = self._numpy["index"]
    index = np.asarray(index, np.int64)
    order = np.argsort(ids, kind="stable")
    found = np.minimum(np.searchsorted(ids, index, sorter=order),
                       ids.size - 1)
    positions = order[found]
    missing = index[ids[positions] != index]
    if missing.size:
      raise KeyError(f"{missing.size} index value(s) are not in this split, "
                     f"e.g. {int(missing[0])}")
    return [self._numpy["image"][p] for p in positions]


class TfdsSource:
  """A split streamed from a prepared TFDS builder (images stay encoded).

  `parse` maps a TFDS example (image not decoded) to the raw dict with keys
  image, label, clean_label, index; `keep` optionally filters by index.
  """

  in_memory = False

  def __init__(self, builder: tfds.core.DatasetBuilder, split: str,
               num_examples: int, parse: Callable[[dict], dict],
               keep: Optional[np.ndarray] = None,
               shuffle_buffer: int = 10_000):
    self.num_examples = int(num_examples)
    self._builder, self._split, self._parse = builder, split, parse
    self._keep = None if keep is None else np.asarray(keep, bool)
    self._shuffle_buffer = shuffle_buffer

  def make(self, ctx, *, shuffle_seed: Optional[int],
           order_seed: Optional[int], repeat: bool,
           equal_shards: bool) -> tf.data.Dataset:
    """As `ArraySource.make`; `order_seed` shuffles the file order and must be
    the same on every pipeline, so that element sharding stays disjoint."""
    n_pipes, pipe_id = _pipeline(ctx)
    read_config = tfds.ReadConfig(shuffle_seed=order_seed,
                                  shuffle_reshuffle_each_iteration=True,
                                  try_autocache=False)
    ds = self._builder.as_dataset(
        split=self._split, shuffle_files=shuffle_seed is not None,
        read_config=read_config,
        decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.map(self._parse, num_parallel_calls=_AUTOTUNE)
    if self._keep is not None:
      keep = tf.constant(self._keep)  # [split size] bool, small.
      ds = ds.filter(lambda ex: tf.gather(keep, ex["index"]))
    if n_pipes > 1:
      ds = ds.shard(n_pipes, pipe_id)
      if equal_shards:
        ds = ds.take(self.num_examples // n_pipes)
    if shuffle_seed is not None:
      ds = ds.shuffle(self._shuffle_buffer, seed=shuffle_seed,
                      reshuffle_each_iteration=True)
    return ds.repeat() if repeat else ds

  def images_of(self, index: np.ndarray) -> list:
    """As `ArraySource.images_of` (encoded bytes); one pass over the split's
    records (no decoding), so it costs a read of the whole split."""
    wanted = np.asarray(index, np.int64)
    keep = np.zeros(int(wanted.max()) + 1, bool)
    keep[wanted] = True
    keep = tf.constant(keep)
    ds = self._builder.as_dataset(
        split=self._split, shuffle_files=False,
        decoders={"image": tfds.decode.SkipDecoding()}).map(self._parse)
    ds = ds.filter(lambda ex: tf.logical_and(
        ex["index"] < tf.size(keep, out_type=tf.int64),
        tf.gather(keep, tf.minimum(ex["index"], tf.size(keep, tf.int64) - 1))))
    found = {int(ex["index"]): ex["image"] for ex in tfds.as_numpy(ds)}
    missing = [int(i) for i in wanted if int(i) not in found]
    if missing:
      raise KeyError(f"{len(missing)} index value(s) are not in this split, "
                     f"e.g. {missing[0]}")
    return [found[int(i)] for i in wanted]


@dataclasses.dataclass(frozen=True)
class SampleNames:
  """What names a training sample for a person, beyond its `index`.

  Attributes:
    source: where the training split comes from, e.g. "folder /data/train",
      "tfds cifar10", "npz /data/x.npz", "sklearn load_digits".
    split: the source's split that `index` counts in ("train",
      "noisy_train", "x_train"; "" for a folder, whose index counts files).
    files: optional `[n]` int index -> `[n]` str: the sample's file (a
      folder: its path relative to train_dir; Clothing1M: its image key);
      None where samples are no files.
  """
  source: str
  split: str
  files: Optional[Callable[[np.ndarray], np.ndarray]] = None


def _float_or_none(x) -> Optional[float]:
  return None if x is None else float(x)


@dataclasses.dataclass(frozen=True)
class RawImages:
  """The images a deployed classifier receives: what `eval_fn` takes.

  Attributes:
    shape: (H, W, C) of one raw image; H and W are None when sizes vary.
    dtype: numpy dtype name of the raw pixels ("uint8"; an npz of floats
      keeps "float32").
    encoded: the sources hold encoded files (JPEG); `eval_fn` then takes the
      encoded bytes (scalar string) or the decoded uint8 pixels [h, w, C].
    description: what `eval_fn` does, in words (written into exports).
    pixel_max: the raw value of a white pixel (255 for uint8 photographs, 16
      for digits, 1.0 for an npz of floats in [0, 1]): exports rescale
      decoded JPEG/PNG pixels (0-255) to it. None: unknown, so an export of
      a dataset that is not `encoded` takes no encoded files.
  """
  shape: tuple
  dtype: str
  encoded: bool
  description: str
  pixel_max: Optional[float] = None


@dataclasses.dataclass
class DataSplits:
  """Train, meta and test splits of one experiment plus their statistics.

  Attributes:
    name: dataset name.
    num_classes: K.
    image_shape: (H, W, C) after preprocessing.
    train_source, meta_source, test_source: `ArraySource` or `TfdsSource`.
    train_fn: (raw image, [2] int64 seed) -> float32 [H, W, C], augmentation.
    eval_fn: raw image -> float32 [H, W, C], no augmentation.
    raw_images: what `eval_fn` takes (`RawImages`), for exports that accept
      raw images; None if not described.
    augment: apply `train_fn` on train and meta (else `eval_fn`).
    seed: experiment seed (labels, meta set, long tail, shuffles).
    transition_matrix: [K, K] requested corruption, or None.
    realised_noise_rate: fraction of train labels != clean label, over the
      train samples whose clean label is known; None when none is known
      (real noise without a clean subset).
    class_counts: [K] train counts (after the long tail).
    meta_class_counts: [K] meta counts.
    config: the loader settings, echoed in `summary()`.
    expected_noise_rate: the rate the transition matrix implies; None for
      real noise (no matrix).
    noise_rate_measured_on: how many train samples have a known clean label
      (the sample behind `realised_noise_rate`); None: all of them.
    arrays: numpy label/clean_label/index per split (in-memory sources).
    sample_names: what names a training sample (`SampleNames`), for the
      per-sample report; None if the loader does not say.
  """
  name: str
  num_classes: int
  image_shape: tuple
  train_source: Any
  meta_source: Any
  test_source: Any
  train_fn: Callable
  eval_fn: Callable
  augment: bool
  seed: int
  transition_matrix: Optional[np.ndarray]
  realised_noise_rate: Optional[float]
  class_counts: np.ndarray
  meta_class_counts: np.ndarray
  config: dict
  expected_noise_rate: Optional[float] = 0.0
  class_names: Optional[list] = None
  arrays: Optional[dict] = None
  noise_rate_measured_on: Optional[int] = None
  raw_images: Optional[RawImages] = None
  sample_names: Optional[SampleNames] = None

  @property
  def num_train(self) -> int:
    return self.train_source.num_examples

  @property
  def num_meta(self) -> int:
    return self.meta_source.num_examples

  @property
  def num_test(self) -> int:
    return self.test_source.num_examples

  def train_images(self, index: np.ndarray) -> list:
    """Raw training images by `index` (for review figures, not training):
    `[H, W, C]` arrays, or a file's bytes for encoded sources."""
    return self.train_source.images_of(np.asarray(index, np.int64))

  def train_label_counts(self) -> np.ndarray:
    """`[K]` training samples per class by the labels trained on (the noisy
    ones; `class_counts` counts clean labels where they are known). Sources
    without label arrays (Clothing1M) count their given labels in
    `class_counts` already."""
    if self.arrays is not None and "train" in self.arrays:
      return np.bincount(np.asarray(self.arrays["train"]["label"]),
                         minlength=self.num_classes)
    return np.asarray(self.class_counts)

  def steps_per_epoch(self, global_batch_size: int) -> int:
    """Full train batches per epoch (drop_remainder); equal for every shard."""
    return self.num_train // int(global_batch_size)

  def summary(self, include_matrix: bool = True) -> dict:
    """JSON-serialisable description for results.json and logs."""
    out = {
        "dataset": self.name, "num_classes": int(self.num_classes),
        "image_shape": [int(d) for d in self.image_shape],
        "num_train": self.num_train, "num_meta": self.num_meta,
        "num_test": self.num_test, "seed": int(self.seed),
        "augment": bool(self.augment),
        "realised_noise_rate": _float_or_none(self.realised_noise_rate),
        "realised_noise_rate_measured_on": self._measured_on(),
        "expected_noise_rate": _float_or_none(self.expected_noise_rate),
        "class_counts": [int(c) for c in self.class_counts],
        "meta_class_counts": [int(c) for c in self.meta_class_counts],
    }
    out.update({k: v for k, v in self.config.items() if k not in out})
    if include_matrix:
      out["transition_matrix"] = (
          None if self.transition_matrix is None
          else np.round(self.transition_matrix, 6).tolist())
    return out

  def _measured_on(self) -> str:
    """Which train samples `realised_noise_rate` is the corrupted share of."""
    if self.noise_rate_measured_on is None:
      return f"all {self.num_train} training samples"
    return (f"the {self.noise_rate_measured_on} of {self.num_train} training "
            "samples that have a clean label")

  # ----------------------------------------------------------------- pipelines
  def _examples(self, source, ctx, *, augment: bool,
                shuffle_stream: Optional[int], aug_stream: int, repeat: bool,
                equal_shards: bool) -> tf.data.Dataset:
    """Unbatched, preprocessed examples of `source` for one input pipeline."""
    _, pipe_id = _pipeline(ctx)
    shuffle_seed = order_seed = None
    if shuffle_stream is not None:
      shuffle_seed = tf_seed(self.seed, shuffle_stream, pipe_id)
      order_seed = tf_seed(self.seed, shuffle_stream)  # Same on all pipelines.
    ds = source.make(ctx, shuffle_seed=shuffle_seed, order_seed=order_seed,
                     repeat=repeat, equal_shards=equal_shards)

    def finish(raw, image):
      label, clean = raw["label"], raw["clean_label"]
      return {"image": image, "label": label, "clean_label": clean,
              "index": raw["index"],
              "is_noisy": tf.logical_and(tf.not_equal(label, clean),
                                         clean >= 0)}

    if augment:
      # One stateless [2] seed per example: reproducible under parallel map,
      # different every epoch.
      seeds = tf.data.Dataset.random(
          seed=tf_seed(self.seed, aug_stream, pipe_id),
          rerandomize_each_iteration=True).batch(2)
      ds = tf.data.Dataset.zip(ds, seeds).map(
          lambda raw, s: finish(raw, self.train_fn(raw["image"], s)),
          num_parallel_calls=_AUTOTUNE)
    else:
      ds = ds.map(lambda raw: finish(raw, self.eval_fn(raw["image"])),
                  num_parallel_calls=_AUTOTUNE)
    return ds

  @staticmethod
  def _distribute(dataset_fn, strategy):
    if strategy is None:
      return dataset_fn(None)
    return strategy.distribute_datasets_from_function(dataset_fn)

  @staticmethod
  def _batch_size(global_batch_size: int, ctx) -> int:
    if ctx is None:
      return int(global_batch_size)
    return ctx.get_per_replica_batch_size(int(global_batch_size))

  def train_and_meta(self, global_batch_size: int,
                     meta_batch_size: Optional[int] = None,
                     strategy: Optional[tf.distribute.Strategy] = None):
    """Zipped (train_batch, meta_batch) stream for one epoch per iteration.

    Train: one shuffled, augmented pass over the training split, full batches
    only (drop_remainder) so shapes are static. Meta: an infinite shuffled
    repeat of the meta set, augmented like train. Iterating the returned
    dataset again starts a new epoch with a new order.

    Args:
      global_batch_size: train batch summed over replicas.
      meta_batch_size: global meta batch; defaults to `global_batch_size`.
      strategy: optional tf.distribute strategy.

    Returns:
      tf.data.Dataset (or DistributedDataset) of (train, meta) batch dicts,
      each [global_batch_size / replicas, ...] per replica.
    """
    return self._distribute(
        self.train_and_meta_fn(global_batch_size, meta_batch_size), strategy)

  def train_and_meta_fn(self, global_batch_size: int,
                        meta_batch_size: Optional[int] = None):
    """The input function of `train_and_meta`: `InputContext` (or None) ->
    this input pipeline's `tf.data.Dataset` of (train, meta) batch dicts.

    For callers that change the per-pipeline dataset before distributing it
    (e.g. the runner skips the batches a resumed epoch already trained on).
    """
    meta_batch_size = meta_batch_size or global_batch_size
    if self.steps_per_epoch(global_batch_size) < 1:
      raise ValueError(f"global_batch_size={global_batch_size} is larger than "
                       f"the {self.num_train} training examples; lower it.")

    def dataset_fn(ctx=None):
      train = self._examples(self.train_source, ctx, augment=self.augment,
                             shuffle_stream=_TRAIN_SHUFFLE,
                             aug_stream=_TRAIN_AUG, repeat=False,
                             equal_shards=True)
      train = train.batch(self._batch_size(global_batch_size, ctx),
                          drop_remainder=True)
      meta = self._examples(self.meta_source, ctx, augment=self.augment,
                            shuffle_stream=_META_SHUFFLE, aug_stream=_META_AUG,
                            repeat=True, equal_shards=False)
      meta = meta.batch(self._batch_size(meta_batch_size, ctx),
                        drop_remainder=True)
      return tf.data.Dataset.zip(train, meta).prefetch(_AUTOTUNE)

    return dataset_fn

  def _eval(self, source, global_batch_size, strategy, cache: bool):
    def dataset_fn(ctx=None):
      ds = self._examples(source, ctx, augment=False, shuffle_stream=None,
                          aug_stream=0, repeat=False, equal_shards=False)
      if cache:
        ds = ds.cache()
      ds = ds.batch(self._batch_size(global_batch_size, ctx))
      return ds.prefetch(_AUTOTUNE)
    return self._distribute(dataset_fn, strategy)

  def test(self, global_batch_size: int,
           strategy: Optional[tf.distribute.Strategy] = None):
    """Test split: no augmentation, source order, one pass, remainder kept."""
    return self._eval(self.test_source, global_batch_size, strategy,
                      cache=self.test_source.in_memory)

  def train_for_eval(self, global_batch_size: int,
                 strategy: Optional[tf.distribute.Strategy] = None):
    """Training split as trained on (observed labels) for per-sample
    analysis: no augmentation, no shuffle (ascending `index` for in-memory
    sources, TFDS file order for Clothing1M), one pass, remainder kept."""
    return self._eval(self.train_source, global_batch_size, strategy,
                      cache=False)

  def meta_eval(self, global_batch_size: int,
                strategy: Optional[tf.distribute.Strategy] = None):
    """Meta set, no augmentation, one pass, remainder kept."""
    return self._eval(self.meta_source, global_batch_size, strategy,
                      cache=self.meta_source.in_memory)
