"""Atomic SavedModel export of the classifier and of the weighting net V.

Both exports load with plain TensorFlow, no mwn_tf needed:

    classifier = tf.saved_model.load("runs/quickstart/export/classifier")
    probs = classifier.serve(images)["probabilities"]   # float32 [b, H, W, C]
    out = classifier.serve_images(raw)    # uint8 [b, H, W, C], as stored
    out["top_class"], out["probabilities"], out["class_names"]
    weight_net = tf.saved_model.load("runs/quickstart/export/weight_net")
    weights = weight_net.serve(losses)["weights"]   # [b] or [b, 1]

`serve` takes images preprocessed as the training pipeline feeds the
classifier and is also the `serving_default` signature (TF Serving,
saved_model_cli): input `images`, output `probabilities`. An export made with
the run's data (`export_classifier(..., data=splits)`) adds signatures for
raw images, which apply the dataset's evaluation preprocessing inside:

  serve_images   `images`: raw pixels [b, H, W, C] as the dataset stores them
                 (uint8; digits 0-16, CIFAR 0-255); for datasets of
                 variable-size images (Clothing1M) any H, W.
  serve_bytes    (variable-size datasets) `images`: tf.string [b], encoded
                 JPEG, PNG, GIF or BMP files. JPEGs are decoded exactly as
                 training decodes them.

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
      raw images (`serve_images`, and `serve_bytes` for encoded datasets) and
      records the class names and the preprocessing (module docstring).

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


def _raw_image_functions(probabilities, data, shape):
  """(serve_images, serve_bytes): raw pixels [b, *raw shape] or encoded files
  [b] -> probabilities, class names and top class, through `data.eval_fn`."""
  raw, names = data.raw_images, _class_names(data)
  model_input = tf.TensorSpec(shape, tf.float32)

  def labelled(images):
    """[b, *model input] -> the signatures' outputs."""
    probs = probabilities(images)
    table = tf.constant(names)
    return {"probabilities": probs,
            "class_names": tf.tile(table[None], [tf.shape(probs)[0], 1]),
            "top_class": tf.gather(table, tf.argmax(probs, -1))}

  def from_bytes(encoded):
    # JPEGs take the training decoder (inside eval_fn); other formats are
    # decoded to the uint8 pixels eval_fn also takes.
    return tf.cond(
        tf.io.is_jpeg(encoded), lambda: data.eval_fn(encoded),
        lambda: data.eval_fn(tf.io.decode_image(
            encoded, channels=raw.shape[-1], dtype=tf.uint8,
            expand_animations=False)))

  def serve_images(images):
    return labelled(tf.map_fn(data.eval_fn, images,
                              fn_output_signature=model_input))

  def serve_bytes(images):
    return labelled(tf.map_fn(from_bytes, images,
                              fn_output_signature=model_input))

  return serve_images, serve_bytes


def _add_raw_image_endpoints(archive, probabilities, data, shape) -> dict:
  """Adds `serve_images`, `serve_bytes` (encoded datasets) and `metadata`
  to `archive`; returns the files for `assets.extra/`."""
  raw, names = data.raw_images, _class_names(data)
  serve_images, serve_bytes = _raw_image_functions(probabilities, data, shape)
  signatures = {
      "serve": {"dtype": "float32", "shape": [None] + list(shape),
                "meaning": "images preprocessed as the training pipeline does"},
      "serve_images": {"dtype": raw.dtype, "shape": [None] + list(raw.shape),
                       "meaning": "raw pixels, as the dataset stores them"}}
  archive.add_endpoint(
      "serve_images", serve_images,
      input_signature=[tf.TensorSpec((None,) + tuple(raw.shape),
                                     tf.as_dtype(raw.dtype), name="images")])
  if raw.encoded:
    signatures["serve_bytes"] = {"dtype": "string", "shape": [None],
                                 "meaning": "encoded JPEG/PNG/GIF/BMP files"}
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


def export_weight_net(weight_net: keras.Model, path: str) -> str:
  """Writes the weighting net V as a SavedModel: losses -> weights.

  Args:
    weight_net: `WeightNet` mapping `[b, 1]` losses to `[b, 1]` weights.
    path: Destination folder (replaced atomically if it exists).

  Returns:
    `path`. The SavedModel's `serve(losses)` takes float32 losses of any
    shape (`[b]` or `[b, 1]`) and returns the weights in the same shape.
  """
  archive = keras.export.ExportArchive()
  archive.track(weight_net)

  def serve(losses):
    flat = tf.reshape(tf.cast(losses, tf.float32), [-1, 1])
    weights = tf.cast(weight_net(flat, training=False), tf.float32)
    return {"weights": tf.reshape(weights, tf.shape(losses))}

  archive.add_endpoint(
      "serve", serve,
      input_signature=[tf.TensorSpec(None, tf.float32, name="losses")])
  return _write_atomically(archive, path)
