"""Clothing1M (Xiao et al., CVPR 2015): TFDS builder (manual download) and
loader. The meta set is the clean validation list (Shu et al. 2019, Sec. 5.3).

Splits: noisy_train (1M web images, noisy labels), clean_train, clean_val
(= meta), clean_test. Images stay JPEG-encoded on disk and are streamed.
`index` is the line number in the split's key-list file; `key` the image path.

The build fully decodes every image once, with the decoder training uses, and
stops with one ImageFileError naming every file that cannot be read or does
not decode (truncated, corrupt, empty, not JPEG); TFDS then deletes the
unfinished build, so a rerun after fixing the files starts clean. The check
costs about 0.35 ms per 224x224 JPEG (1.2 ms at 500x375) on one CPU core,
i.e. about 6 to 20 minutes for 1M images, once per build.
"""

import os
import re
from typing import Optional

from absl import logging
from etils import epath
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mwn_tf.data import corruption
from mwn_tf.data import preprocessing
from mwn_tf.data import registry
from mwn_tf.data import splits as splits_lib

# Order of category_names_eng.txt in the official release.
CLASS_NAMES = ("T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie",
               "Windbreaker", "Jacket", "Down Coat", "Suit", "Shawl", "Dress",
               "Vest", "Underwear")
SPLITS = ("noisy_train", "clean_train", "clean_val", "clean_test")
ANNOTATIONS = ("noisy_label_kv.txt", "clean_label_kv.txt",
               "noisy_train_key_list.txt", "clean_train_key_list.txt",
               "clean_val_key_list.txt", "clean_test_key_list.txt")

_INSTRUCTIONS = """\
Clothing1M is distributed by its authors on request
(https://github.com/Cysu/noisy_label). Put the extracted release in the manual
directory (default <data_dir>/downloads/manual/; or pass manual_dir=...):

  <manual_dir>/images/0/00/....jpg ... images/9/99/....jpg  (unpack all
                                       images/*.tar into images/)
  <manual_dir>/annotations/noisy_label_kv.txt       "images/x/yy/z.jpg label"
  <manual_dir>/annotations/clean_label_kv.txt       "images/x/yy/z.jpg label"
  <manual_dir>/annotations/noisy_train_key_list.txt  one image path per line
  <manual_dir>/annotations/clean_train_key_list.txt
  <manual_dir>/annotations/clean_val_key_list.txt
  <manual_dir>/annotations/clean_test_key_list.txt
  <manual_dir>/annotations/category_names_eng.txt   (optional, 14 lines)

Then `mwn_tf.data.get("clothing1m", data_dir=..., manual_dir=...)` (or
`tfds build` with --manual_dir) converts it once into <data_dir>/clothing1m/.
"""


def check_manual_dir(manual_dir: str) -> None:
  """Raises FileNotFoundError naming the missing folder or file."""
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f"Clothing1M manual folder {manual_dir} does not "
                            f"exist; bind clothing1m.manual_dir = "
                            f"'/path/to/release' (or clothing1m.data_dir, "
                            f"whose downloads/manual/ is the default). "
                            f"Expected layout:\n{_INSTRUCTIONS}")
  for name in ANNOTATIONS:
    path = os.path.join(manual_dir, "annotations", name)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"Clothing1M annotation file {path} is missing; "
                              f"copy annotations/{name} from the release "
                              f"there, or bind clothing1m.manual_dir to the "
                              f"release's folder. Expected layout:\n"
                              f"{_INSTRUCTIONS}")


def _read_kv(path: epath.Path) -> dict:
  out = {}
  for n, line in enumerate(path.read_text().splitlines(), 1):
    if line.strip():
      try:
        key, label = line.split()
        out[key] = int(label)
      except ValueError as e:
        raise ValueError(f"{path}:{n}: expected 'images/... label', got "
                         f"{line!r}.") from e
  return out


def _read_list(path: epath.Path) -> list:
  return [line.strip() for line in path.read_text().splitlines()
          if line.strip()]


class ImageFileError(ValueError):
  """Clothing1M images that cannot be read or do not fully decode as JPEG."""


# An ImageFileError names this many bad files, then only counts the rest.
_MAX_NAMED = 10
# Leading bytes of formats sometimes saved under a .jpg name, to say which.
_MAGIC = ((b"\x89PNG", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
          (b"RIFF", "RIFF (WebP)"), (b"II*\x00", "TIFF"),
          (b"MM\x00*", "TIFF"), (b"<", "text/HTML"))


def _check_jpeg(path: epath.Path) -> tuple:
  """Reads an image and decodes all of it, as training later will.

  Args:
    path: the image file.

  Returns:
    (bytes, None) for a JPEG that fully decodes, else (None, reason), reason
    being a phrase that follows the path in an error message.
  """
  try:
    data = path.read_bytes()
  except OSError as e:
    return None, f"cannot be read ({type(e).__name__}: {e.strerror or e})"
  if not data:
    return None, "is empty (0 bytes)"
  if data[:2] != b"\xff\xd8":
    # tf.io.decode_jpeg also decodes PNG, GIF and WebP (TF 2.21), so the JPEG
    # start-of-image marker is checked first: the feature stores JPEG.
    kind = next((n for magic, n in _MAGIC if data.startswith(magic)), None)
    return None, (f"holds {kind} data, not JPEG" if kind else
                  f"is not JPEG data (it starts with {data[:8]!r})")
  try:
    # Exactly preprocessing.decode_jpeg's call, so a JPEG passes here just
    # when the training pipeline can decode it. With try_recover_truncated
    # left False, TF failed on every truncated or corrupt JPEG tried
    # (baseline ones cut 10 bytes into the data, at half, at 90% or short of
    # only the last 1 or 2 bytes; progressive ones cut at half or 90%; random
    # or zero bytes after a valid header), whereas PIL's verify() passed them
    # all and its load() passed zeros after the header. A few flipped bytes
    # inside the image data mostly decode without error in TF and PIL alike;
    # no check sees those.
    tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
  except tf.errors.OpError as e:
    # Drop TF's "{{function_node ...}}" and "[Op:DecodeJpeg]" decorations.
    why = re.sub(r"\{\{.*?\}\}|\[Op:.*", "", e.message).strip()
    return None, f"is a truncated or corrupt JPEG (tf.io.decode_jpeg: {why})"
  return data, None


def _image_file_error(bad: dict, stopped_in: Optional[str] = None
                      ) -> ImageFileError:
  """One error naming the first _MAX_NAMED bad files and counting the rest.

  Args:
    bad: path -> (reason, [key-list files that name it]), in the order found.
    stopped_in: the key list whose split ended with no good image, if the
      build had to stop there (then later splits were not checked).

  Returns:
    The ImageFileError to raise.
  """
  n = len(bad)
  lines = [f"  {path} {why} [listed in {', '.join(lists)}]"
           for path, (why, lists) in list(bad.items())[:_MAX_NAMED]]
  if n > _MAX_NAMED:
    lines.append(f"  ... and {n - _MAX_NAMED} more (each was logged as a "
                 "warning when found).")
  partial = (f" The build stopped at {stopped_in}, whose images all failed, "
             "so the splits after it were not checked." if stopped_in else "")
  return ImageFileError(
      f"Clothing1M: {n} image file{'s' if n > 1 else ''} cannot be read or "
      f"do{'' if n > 1 else 'es'} not fully decode as JPEG:\n"
      + "\n".join(lines) + "\n"
      "Re-extract each from the official Clothing1M archive (images/*.tar), "
      "or download it again, to the same path; or delete its line from the "
      "annotations key list named in brackets. Then run again; this failed "
      "build left nothing in data_dir, so the next one starts afresh."
      + partial)


class Clothing1M(tfds.core.GeneratorBasedBuilder):
  """Clothing1M: 14 clothing classes, 1M noisy web labels + clean subsets."""

  name = "clothing1m"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  # TFDS 4.9.10's default code_path needs the (undeclared) importlib_resources
  # package; this module's own file is the right answer anyway.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3),
                                         encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            # Clean label where the authors provide one, else -1.
            "clean_label": tfds.features.Tensor(shape=(), dtype=np.int64),
            "key": tfds.features.Text(),
            "index": tfds.features.Tensor(shape=(), dtype=np.int64),
        }),
        supervised_keys=("image", "label"),
        homepage="https://github.com/Cysu/noisy_label",
        citation="Xiao et al., Learning from Massive Noisy Labeled Data for "
                 "Image Classification, CVPR 2015.",
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    root = epath.Path(dl_manager.manual_dir)
    check_manual_dir(os.fspath(root))
    ann = root / "annotations"
    names_file = ann / "category_names_eng.txt"
    if names_file.exists() and len(_read_list(names_file)) != len(CLASS_NAMES):
      raise ValueError(f"{names_file} should list {len(CLASS_NAMES)} classes.")
    noisy = _read_kv(ann / "noisy_label_kv.txt")
    clean = _read_kv(ann / "clean_label_kv.txt")
    keys = {s: _read_list(ann / f"{s}_key_list.txt") for s in SPLITS}
    stats = {}
    for split, split_keys in keys.items():
      table, table_name = ((noisy, "noisy_label_kv.txt")
                           if split == "noisy_train"
                           else (clean, "clean_label_kv.txt"))
      missing = [k for k in split_keys if k not in table]
      if missing:
        raise ValueError(f"{split}_key_list.txt lists {missing[0]} which has "
                         f"no label in {table_name}.")
      labels = np.array([table[k] for k in split_keys], np.int64)
      stats[split] = np.bincount(labels, minlength=len(CLASS_NAMES)).tolist()
    overlap = [(noisy[k], clean[k]) for k in keys["noisy_train"] if k in clean]
    self.info.metadata["class_counts"] = stats
    self.info.metadata["noisy_train_with_clean_label"] = len(overlap)
    self.info.metadata["noisy_train_overlap_noise_rate"] = (
        float(np.mean([a != b for a, b in overlap])) if overlap else None)
    return {s: self._generate_examples(root, keys[s],
                                       noisy if s == "noisy_train" else clean,
                                       clean, f"{s}_key_list.txt")
            for s in SPLITS}

  def _download_and_prepare(self, dl_manager, download_config):
    # Generation skips bad images and records them here, so that one error
    # names the bad files of all splits, not only the first one met. TFDS
    # (4.9.10) calls this inside incomplete_dir(), so raising here makes TFDS
    # delete the half-written folder: no later run takes it for a finished
    # build (tests/test_data_clothing1m.py checks both).
    self._bad_images = {}
    super()._download_and_prepare(dl_manager, download_config)
    if self._bad_images:
      raise _image_file_error(self._bad_images)

  def _generate_examples(self, root, keys, labels, clean, key_list):
    yielded = 0
    for index, key in enumerate(keys):
      path = root / key
      data, why = _check_jpeg(path)
      if why:
        # Logged now too: a full build is long, and the user can start
        # fixing files before the final error.
        logging.warning("Clothing1M image %s %s; the build will fail once "
                        "all images are checked.", path, why)
        lists = self._bad_images.setdefault(os.fspath(path), (why, []))[1]
        if key_list not in lists:
          lists.append(key_list)
        continue
      yielded += 1
      yield index, {"image": data, "label": labels[key],
                    "clean_label": clean.get(key, -1), "key": key,
                    "index": index}
    if not yielded and self._bad_images:
      # TFDS would fail this empty split with "No examples were yielded",
      # which names no file; say what is wrong instead.
      raise _image_file_error(self._bad_images, stopped_in=key_list)


def _parse(example: dict) -> dict:
  return {"image": example["image"],
          "label": tf.cast(example["label"], tf.int32),
          "clean_label": tf.cast(example["clean_label"], tf.int32),
          "index": example["index"]}


def _labels(builder, split: str) -> np.ndarray:
  """[n] labels of a split in index order (reads records, skips decoding)."""
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={"image": tfds.decode.SkipDecoding()})
  ds = ds.map(lambda ex: (ex["index"], ex["label"])).batch(65536)
  index, label = zip(*tfds.as_numpy(ds))
  out = np.empty(sum(len(i) for i in index), np.int64)
  out[np.concatenate(index)] = np.concatenate(label)
  return out


def _key_names(builder, split: str):
  """`SampleNames.files` of a split: index -> image key ("images/x/yy/z.jpg").

  The keys are read (one pass over the split's records, images not decoded)
  on the first call, so training never pays for them.
  """
  cache = []

  def files(index):
    if not cache:
      ds = builder.as_dataset(split=split, shuffle_files=False,
                              decoders={"image": tfds.decode.SkipDecoding()})
      ds = ds.map(lambda ex: (ex["index"], ex["key"])).batch(65536)
      index_parts, key_parts = zip(*tfds.as_numpy(ds))
      keys = np.empty(sum(len(i) for i in index_parts), object)
      keys[np.concatenate(index_parts)] = [
          k.decode() for k in np.concatenate(key_parts)]
      cache.append(keys)
    return cache[0][np.asarray(index, np.int64)]

  return files


@registry.register("clothing1m")
def clothing1m(data_dir: Optional[str] = None,
               manual_dir: Optional[str] = None,
               num_meta: Optional[int] = None, seed: int = 0,
               augment: bool = True, image_size: int = 224,
               resize_size: int = 256, train_split: str = "noisy_train",
               shuffle_buffer: int = 10_000):
  """Clothing1M streamed from TFDS, built from the manual folder on first use.

  Args:
    data_dir: TFDS data dir (None: ~/tensorflow_datasets).
    manual_dir: the extracted release (None: <data_dir>/downloads/manual).
    num_meta: None: all of clean_val (the paper); else a seeded class-balanced
      subset of clean_val of this size (multiple of 14).
    seed: shuffles, crops and the meta subset.
    augment: random crop + flip on train and meta (else centre crop).
    image_size: crop size (224 for ResNet-50).
    resize_size: shorter side before cropping (256).
    train_split: noisy_train (the paper) or clean_train.
    shuffle_buffer: examples in the train/meta shuffle buffers.

  Returns:
    DataSplits; images float32 [image_size, image_size, 3], ImageNet-normalised.
    Its labels are the real noisy ones: transition_matrix, noise_rate and
    expected_noise_rate are None, and realised_noise_rate is measured on the
    noisy_train images that also have a clean label
    (`noise_rate_measured_on` of them; None if there are none).

  Raises:
    FileNotFoundError: the manual folder or an annotation file is missing.
    ImageFileError: (first build only) images that cannot be read or do not
      fully decode as JPEG; it names them, and nothing is left in data_dir.
  """
  if train_split not in ("noisy_train", "clean_train"):
    raise ValueError(f"train_split must be noisy_train or clean_train, got "
                     f"{train_split!r}.")
  builder = Clothing1M(data_dir=data_dir)
  if not builder.is_prepared():
    root = builder.data_dir_root if data_dir is None else data_dir
    manual_dir = manual_dir or os.path.join(root, "downloads", "manual")
    check_manual_dir(manual_dir)
    logging.info("Building Clothing1M from %s into %s (once).", manual_dir,
                 builder.data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir))
  info = builder.info
  meta_keep, meta_counts = None, info.metadata["class_counts"]["clean_val"]
  if num_meta is not None:
    val_labels = _labels(builder, "clean_val")
    chosen, _ = corruption.split_meta(val_labels, num_meta, len(CLASS_NAMES),
                                      corruption.rng_for(seed, 1),
                                      "clothing1m.num_meta")
    meta_keep = np.zeros(val_labels.shape[0], bool)
    meta_keep[chosen] = True
    meta_counts = np.bincount(val_labels[chosen], minlength=len(CLASS_NAMES))

  def source(split, keep=None, n=None):
    return splits_lib.TfdsSource(
        builder, split, n or info.splits[split].num_examples, _parse, keep,
        shuffle_buffer)

  is_noisy = train_split == "noisy_train"
  # Web labels: the rate is unknown except on the noisy_train images that the
  # authors also labelled by hand; clean_train is clean by definition.
  rate = info.metadata["noisy_train_overlap_noise_rate"] if is_noisy else 0.0
  measured_on = (info.metadata["noisy_train_with_clean_label"] if is_noisy
                 else None)
  return splits_lib.DataSplits(
      name="clothing1m", num_classes=len(CLASS_NAMES),
      image_shape=(image_size, image_size, 3),
      train_source=source(train_split),
      meta_source=source("clean_val", meta_keep, num_meta),
      test_source=source("clean_test"),
      train_fn=lambda b, s: preprocessing.resnet_train(b, s, image_size,
                                                       resize_size),
      eval_fn=lambda b: preprocessing.resnet_eval(b, image_size, resize_size),
      augment=bool(augment), seed=int(seed), transition_matrix=None,
      realised_noise_rate=rate, expected_noise_rate=None,
      noise_rate_measured_on=measured_on,
      class_counts=np.array(info.metadata["class_counts"][train_split]),
      meta_class_counts=np.array(meta_counts),
      config={"data_dir": data_dir, "train_split": train_split,
              "noise_type": "real (web labels)" if is_noisy else "none",
              "noise_rate": None if is_noisy else 0.0,
              "imbalance_factor": 1.0, "noise_rate_measured_on": measured_on,
              "image_size": image_size, "resize_size": resize_size},
      class_names=list(CLASS_NAMES),
      sample_names=splits_lib.SampleNames(
          "tfds clothing1m", train_split, _key_names(builder, train_split)),
      raw_images=splits_lib.RawImages(
          shape=(None, None, 3), dtype="uint8", encoded=True,
          description=preprocessing.resnet_eval_description(image_size,
                                                            resize_size),
          pixel_max=255))
