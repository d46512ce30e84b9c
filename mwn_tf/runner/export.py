"""Atomic SavedModel export of the classifier and of the weighting net V.

Both exports load with plain TensorFlow, no mwn_tf needed:

    classifier = tf.saved_model.load("runs/quickstart/export/classifier")
    probs = classifier.serve(images)["probabilities"]   # float32 [b, H, W, C]
    out = classifier.serve_images(raw)    # uint8 [b, H, W, C], as stored
    out["top_class"], out["probabilities"], out["class_names"]
    weight_net = tf.saved_model.load("runs/quickstart/export/weight_net")
    weights = weight_net.serve(losses)["weights"]   # [b] or [b, 1]
    weights = weight_net.serve(losses, labels)["weights"]  # class-aware V

`serve` takes images preprocessed as the training pipeline feeds the
classifier and is also the `serving_default` signature (TF Serving,
saved_model_cli): input `images`, output `probabilities`. An export made with
the run's data (`export_classifier(..., data=splits)`) adds signatures for
raw images, which apply the dataset's evaluation preprocessing inside:

  serve_images   `images`: raw pixels [b, H, W, C] as the dataset stores them
                 (uint8; digits 0-16, CIFAR 0-255; an npz of floats: float32
                 0-1), or [b, H, W]. Grey images for an RGB model are
                 repeated to 3 channels, RGB for a grey model converted
                 (tf.image.rgb_to_grayscale); other sizes are resized as the
                 variable-size datasets' evaluation resizes (shorter side,
                 bilinear antialiased, centre crop); variable-size datasets
                 (Clothing1M, folder) take any H, W. Other ranks or channel
                 counts fail with one message saying what is taken.
  serve_bytes    `images`: tf.string [b], encoded JPEG or PNG files of any
                 size (every image dataset), decoded to the model's channels,
                 resized as above, rescaled from 0-255 to the dataset's raw
                 range (`RawImages.pixel_max`; rounded for integer pixels),
                 then as serve_images. Clothing1M and folder decode JPEGs
                 exactly as training does and also take GIF and BMP.

Both return `probabilities` [b, K] float32, `class_names` [b, K] string (the
same K names in each row, so every output has the batch dimension TF
Serving's row format needs) and `top_class` [b] string. The `metadata`
signature (no input) returns `class_names` [K] and `preprocessing` (the
evaluation preprocessing in words); the same facts are in
`assets.extra/metadata.json` and `assets.extra/class_names.txt`.

An export is written to a temporary folder next to its destination and
renamed into place, so a crash never leaves a half-written SavedModel where a
reader expects one: the destination holds either the previous complete export
or the new complete one (on a local or POSIX file system; object stores such
as GCS have no atomic folder rename).
"""

import json
import os
import logging as std_logging
from typing import Optional
import uuid

import keras
import tensorflow as tf

from mwn_tf.data import preprocessing

_TMP_MARK = ".tmp-"
_OLD_MARK = ".old-"


def _replace_dir(tmp: str, path: str) -> None:
  """Moves the complete folder `tmp` to `path`, replacing what was there."""
  if not tf.io.gfile.exists(path):
    tf.io.gfile.rename(tmp, path)
    return
  # A folder cannot be renamed over a non-empty one: move the old export
  # aside first; until it is deleted it is the complete previous version.
  old = f"{path}{_OLD_MARK}{uuid.uuid4().hex[:8]}"
  tf.io.gfile.rename(path, old)
  tf.io.gfile.rename(tmp, path)
  tf.io.gfile.rmtree(old)


def clean_stale(path: str) -> None:
  """Removes leftovers of an export killed before its rename (`path.tmp-*`),
  and restores `path` from `path.old-*` if a kill fell between the two
  renames of `_replace_dir`."""
  parent, name = os.path.split(path)
  if not tf.io.gfile.isdir(parent or "."):
    return
  for entry in tf.io.gfile.listdir(parent or "."):
    entry = entry.rstrip("/")
    full = os.path.join(parent, entry)
    if entry.startswith(name + _TMP_MARK):
      tf.io.gfile.rmtree(full)
    elif entry.startswith(name + _OLD_MARK):
      if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(full)
      else:
        tf.io.gfile.rename(full, path)


def _write_atomically(archive: keras.export.ExportArchive, path: str,
                      extra_files: Optional[dict] = None) -> str:
  """Writes `archive` (plus `extra_files`: name -> text, into the
  SavedModel's `assets.extra/`) to a temporary folder, then renames it."""
  clean_stale(path)
  tmp = f"{path}{_TMP_MARK}{uuid.uuid4().hex[:8]}"
  # TF's SavedModel writer raises the process-wide "absl" logger to WARNING;
  # put it back so exporting does not silence the rest of the run's logs.
  absl_logger = std_logging.getLogger("absl")
  level = absl_logger.level
  try:
    archive.write_out(tmp, verbose=False)
  finally:
    absl_logger.setLevel(level)
  if extra_files:
    # TF Serving's folder for files the graph does not reference.
    tf.io.gfile.makedirs(os.path.join(tmp, "assets.extra"))
    for name, text in extra_files.items():
      with tf.io.gfile.GFile(os.path.join(tmp, "assets.extra", name), "w") as f:
        f.write(text)
  _replace_dir(tmp, path)
  return path


def export_classifier(classifier: keras.Model, path: str,
                      data=None) -> str:
  """Writes `classifier` as a SavedModel: images -> class probabilities.

  Args:
    classifier: Keras model mapping images `[b, H, W, C]` to logits `[b, K]`.
    path: Destination folder (replaced atomically if it exists).
    data: Optional: the run's `mwn_tf.data` `DataSplits` (its `eval_fn`,
      `raw_images`, `class_names`, `name`). With it, the export also takes
      raw images (`serve_images`) and encoded files (`serve_bytes`, where the
      raw pixel range is known) and records the class names and the
      preprocessing (module docstring).

  Returns:
    `path`. The SavedModel's `serve(images)` takes float32 `[b, H, W, C]`
    (preprocessed as the training pipeline does) and returns float32
    probabilities `[b, K]` (softmax of the logits, inference mode).
  """
  shape = tuple(classifier.inputs[0].shape[1:])
  archive = keras.export.ExportArchive()
  archive.track(classifier)

  def probabilities(images):
    logits = classifier(images, training=False)
    return tf.nn.softmax(tf.cast(logits, tf.float32), -1)

  archive.add_endpoint(
      "serve", lambda images: {"probabilities": probabilities(images)},
      input_signature=[tf.TensorSpec((None,) + shape, tf.float32,
                                     name="images")])
  extra_files = None
  if data is not None and data.raw_images is not None:
    extra_files = _add_raw_image_endpoints(archive, probabilities, data,
                                           shape)
  return _write_atomically(archive, path, extra_files)


def _class_names(data) -> list:
  num_classes = int(data.num_classes)
  names = [str(n) for n in (data.class_names or range(num_classes))]
  if len(names) != num_classes:
    raise ValueError(f"{len(names)} class names for {num_classes} classes.")
  return names


def _accepts(raw) -> str:
  """What `serve_images` takes, in words (its error message and metadata)."""
  height, width, channels = raw.shape
  model = (f"[b, {height}, {width}, {channels}]; other sizes are resized"
           if height is not None else f"[b, H, W, {channels}], any H, W")
  return (f"serve_images takes {raw.dtype} images [b, H, W, C] with C 1 or 3,"
          f" or [b, H, W] (this model: {model}, the other channel count is "
          f"converted)")


def _conform(images: tf.Tensor, raw) -> tf.Tensor:
  """Images a user sends -> the raw images `eval_fn` takes.

  Args:
    images: `raw.dtype` [b, h, w] or [b, h, w, c], c 1 or 3 (else one
      InvalidArgumentError saying what is taken).
    raw: the dataset's `RawImages`.

  Returns:
    `raw.dtype` [b, H, W, C] (H, W as sent for variable-size datasets).
  """
  shape = tf.shape(images)
  # Padded so that any rank yields 4 entries: the check below runs first.
  shape4 = tf.concat([shape, [1, 1, 1, 1]], 0)[:4]
  rank, got = tf.rank(images), shape4[3]
  valid = tf.logical_and(
      tf.logical_or(tf.equal(rank, 3), tf.equal(rank, 4)),
      tf.logical_or(tf.equal(got, 1), tf.equal(got, 3)))
  check = tf.debugging.Assert(valid, [_accepts(raw) + "; got shape", shape],
                              summarize=8)
  with tf.control_dependencies([check]):
    images = tf.reshape(images, shape4)  # [b, h, w] -> [b, h, w, 1]
  height, width, channels = raw.shape
  if channels == 3:
    images = tf.tile(images, [1, 1, 1, 3 // got])  # grey -> RGB
  else:
    images = tf.cond(tf.equal(got, 3),
                     lambda: tf.image.rgb_to_grayscale(images),
                     lambda: images)
  images = tf.ensure_shape(images, [None, None, None, channels])
  return _resize(images, height, width)


def _resize(images: tf.Tensor, height, width) -> tf.Tensor:
  """[b, h, w, C] -> [b, height, width, C] in the same dtype, as the
  variable-size datasets' evaluation resizes (`resize_centre_crop`); as
  sent where height is None or the size already fits."""
  if height is None:
    return images

  def resized():
    out = preprocessing.resize_centre_crop(tf.cast(images, tf.float32),
                                           height, width)
    if images.dtype.is_integer:  # As a user's image editor would store it.
      out = tf.round(out)
    return tf.saturate_cast(out, images.dtype)

  fits = tf.reduce_all(tf.equal(tf.shape(images)[1:3], [height, width]))
  images = tf.cond(fits, lambda: images, resized)
  return tf.ensure_shape(images, [None, height, width, images.shape[-1]])


def _from_unit_range(image: tf.Tensor, raw) -> tf.Tensor:
  """Decoded uint8 pixels 0-255 -> the dataset's raw range 0-pixel_max in
  its dtype (rounded to integers for integer dtypes: digits' 0-16 values
  survive the trip through round(v * 255 / 16) exactly)."""
  dtype = tf.as_dtype(raw.dtype)
  if dtype == tf.uint8 and raw.pixel_max == 255:
    return image
  scaled = tf.cast(image, tf.float32) * (raw.pixel_max / 255.0)
  if dtype.is_integer:
    scaled = tf.round(scaled)
  return tf.saturate_cast(scaled, dtype)


def _raw_image_functions(probabilities, data, shape):
  """(serve_images, serve_bytes): raw pixels [b, h, w(, c)] or encoded files
  [b] -> probabilities, class names and top class, through `data.eval_fn`."""
  raw, names = data.raw_images, _class_names(data)
  height, width, channels = raw.shape
  model_input = tf.TensorSpec(shape, tf.float32)

  def labelled(images):
    """[b, *model input] -> the signatures' outputs."""
    probs = probabilities(images)
    table = tf.constant(names)
    return {"probabilities": probs,
            "class_names": tf.tile(table[None], [tf.shape(probs)[0], 1]),
            "top_class": tf.gather(table, tf.argmax(probs, -1))}

  def decoded(encoded):
    return tf.io.decode_image(encoded, channels=channels, dtype=tf.uint8,
                              expand_animations=False)

  def from_bytes(encoded):
    if not raw.encoded:  # Pixel arrays: resize in 0-255, then rescale.
      image = _resize(tf.ensure_shape(decoded(encoded), [None, None,
                                                         channels])[None],
                      height, width)[0]
      return data.eval_fn(_from_unit_range(image, raw))
    # JPEGs take the training decoder (inside eval_fn); other formats are
    # decoded to the uint8 pixels eval_fn also takes.
    return tf.cond(tf.io.is_jpeg(encoded), lambda: data.eval_fn(encoded),
                   lambda: data.eval_fn(decoded(encoded)))

  def serve_images(images):
    return labelled(tf.map_fn(data.eval_fn, _conform(images, raw),
                              fn_output_signature=model_input))

  def serve_bytes(images):
    return labelled(tf.map_fn(from_bytes, images,
                              fn_output_signature=model_input))

  return serve_images, serve_bytes


def _add_raw_image_endpoints(archive, probabilities, data, shape) -> dict:
  """Adds `serve_images`, `serve_bytes` (encoded datasets, and those whose
  pixel range is known) and `metadata` to `archive`; returns the files for
  `assets.extra/`."""
  raw, names = data.raw_images, _class_names(data)
  serve_images, serve_bytes = _raw_image_functions(probabilities, data, shape)
  signatures = {
      "serve": {"dtype": "float32", "shape": [None] + list(shape),
                "meaning": "images preprocessed as the training pipeline does"},
      "serve_images": {"dtype": raw.dtype, "shape": [None] + list(raw.shape),
                       "meaning": "raw pixels, as the dataset stores them",
                       "accepts": _accepts(raw)}}
  # Any rank: a wrong one gets `_accepts`' message, not a TensorSpec error.
  archive.add_endpoint(
      "serve_images", serve_images,
      input_signature=[tf.TensorSpec(None, tf.as_dtype(raw.dtype),
                                     name="images")])
  if raw.encoded or raw.pixel_max is not None:
    signatures["serve_bytes"] = {"dtype": "string", "shape": [None],
                                 "meaning": _bytes_meaning(raw)}
    archive.add_endpoint(
        "serve_bytes", serve_bytes,
        input_signature=[tf.TensorSpec((None,), tf.string, name="images")])
  archive.add_endpoint(
      "metadata", lambda: {"class_names": tf.constant(names),
                           "preprocessing": tf.constant(raw.description)},
      input_signature=[])
  metadata = {"dataset": data.name, "num_classes": len(names),
              "class_names": names, "preprocessing": raw.description,
              "signatures": signatures}
  return {"metadata.json": json.dumps(metadata, indent=1),
          "class_names.txt": "".join(n + "\n" for n in names)}


def _bytes_meaning(raw) -> str:
  """What `serve_bytes` does, in words (metadata.json)."""
  height, width, channels = raw.shape
  if raw.encoded:
    return "encoded JPEG/PNG/GIF/BMP files"
  return (f"encoded JPEG or PNG files of any size: decoded to {channels} "
          f"channel(s), resized to {height}x{width} as serve_images does, "
          f"pixels 0-255 scaled to the dataset's 0-{raw.pixel_max:g} "
          f"({raw.dtype}), then as serve_images")


def export_weight_net(weight_net: keras.Model, path: str) -> str:
  """Writes the weighting net V as a SavedModel: losses -> weights.

  Args:
    weight_net: `WeightNet` mapping `[b, 1]` losses to `[b, 1]` weights, or
      a V with `takes_labels` (`ClassAwareWeightNet`): `([b, 1] losses,
      [b] labels)` to `[b, 1]` weights.
    path: Destination folder (replaced atomically if it exists).

  Returns:
    `path`. The SavedModel's `serve(losses)` takes float32 losses of any
    shape (`[b]` or `[b, 1]`) and returns the weights in the same shape; a
    class-aware V's is `serve(losses, labels)`, with int32 class ids
    `labels` of the losses' shape, and its `cluster_map()` returns
    `cluster_map` `[K]`, each class id's cluster.
  """
  archive = keras.export.ExportArchive()
  archive.track(weight_net)
  losses_spec = tf.TensorSpec(None, tf.float32, name="losses")

  def weigh(losses, inputs):
    weights = tf.cast(weight_net(inputs, training=False), tf.float32)
    return {"weights": tf.reshape(weights, tf.shape(losses))}

  if getattr(weight_net, "takes_labels", False):
    archive.add_endpoint(
        "serve", lambda losses, labels: weigh(losses, (
            tf.reshape(losses, [-1, 1]), tf.reshape(labels, [-1]))),
        input_signature=[losses_spec,
                         tf.TensorSpec(None, tf.int32, name="labels")])
    # What the analysis needs to draw one curve per cluster.
    archive.add_endpoint(
        "cluster_map", lambda: {"cluster_map": tf.constant(
            list(weight_net.cluster_map), tf.int32)}, input_signature=[])
  else:
    archive.add_endpoint(
        "serve", lambda losses: weigh(losses, tf.reshape(losses, [-1, 1])),
        input_signature=[losses_spec])
  return _write_atomically(archive, path)
