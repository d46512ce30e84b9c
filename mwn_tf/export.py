"""Atomic SavedModel export of the classifier and of the weighting net V.

Both exports load with plain TensorFlow, no mwn_tf needed:

    classifier = tf.saved_model.load("runs/quickstart/export/classifier")
    probs = classifier.serve(images)            # [b, H, W, C] -> [b, K]
    names = classifier.class_names()            # [K] string (when known)
    weight_net = tf.saved_model.load("runs/quickstart/export/weight_net")
    weights = weight_net.serve(losses)          # [b] or [b, 1] -> same shape

`serve` is also the `serving_default` signature (TF Serving, saved_model_cli):
its input is named `images` / `losses` and its output `probabilities` /
`weights`.

An export is written to a temporary folder next to its destination and
renamed into place, so a crash never leaves a half-written SavedModel where a
reader expects one: the destination holds either the previous complete export
or the new complete one (on a local or POSIX file system; object stores such
as GCS have no atomic folder rename).
"""

import os
import logging as std_logging
import re
import uuid

import keras
import tensorflow as tf

_TMP_MARK = ".tmp-"
_OLD_MARK = ".old-"
_TMP_FILE = re.compile(r".+\.tmp-[0-9a-f]{8}")  # see write_file_atomically


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


def _write_atomically(archive: keras.export.ExportArchive, path: str) -> str:
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
  _replace_dir(tmp, path)
  return path


def export_classifier(classifier: keras.Model, path: str,
                      class_names=None) -> str:
  """Writes `classifier` as a SavedModel: images -> class probabilities.

  Args:
    classifier: Keras model mapping images `[b, H, W, C]` to logits `[b, K]`.
    path: Destination folder (replaced atomically if it exists).
    class_names: optional K names in label order (name of class i first).

  Returns:
    `path`. The SavedModel's `serve(images)` takes float32 `[b, H, W, C]`
    (preprocessed as the training pipeline does) and returns float32
    probabilities `[b, K]` (softmax of the logits, inference mode). With
    `class_names`, `class_names()` (also a signature) returns them as a
    string `[K]`, so a reader maps probability column i to its class.
  """
  shape = tuple(classifier.inputs[0].shape[1:])
  archive = keras.export.ExportArchive()
  archive.track(classifier)

  def serve(images):
    logits = classifier(images, training=False)
    return {"probabilities": tf.nn.softmax(tf.cast(logits, tf.float32), -1)}

  archive.add_endpoint(
      "serve", serve,
      input_signature=[tf.TensorSpec((None,) + shape, tf.float32,
                                     name="images")])
  if class_names is not None:
    names = [str(n) for n in class_names]
    archive.add_endpoint("class_names", tf.function(
        lambda: tf.constant(names), input_signature=[]))
  return _write_atomically(archive, path)


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


def remove_stale_files(folder: str) -> None:
  """Removes `<name>.tmp-*` files of `write_file_atomically` calls killed
  before their rename; call only when no such write can be in progress."""
  if not tf.io.gfile.isdir(folder):
    return
  for entry in tf.io.gfile.listdir(folder):
    full = os.path.join(folder, entry.rstrip("/"))
    if _TMP_FILE.fullmatch(entry) and not tf.io.gfile.isdir(full):
      tf.io.gfile.remove(full)


def write_file_atomically(path: str, data) -> str:
  """Writes `data` (bytes or str) to `path` via a temporary file and a rename,
  so readers (and a resumed run) see the old file or the new one, never a
  truncated one."""
  tmp = f"{path}{_TMP_MARK}{uuid.uuid4().hex[:8]}"
  mode = "w" if isinstance(data, str) else "wb"
  with tf.io.gfile.GFile(tmp, mode) as f:
    f.write(data)
  tf.io.gfile.rename(tmp, path, overwrite=True)
  return path
