"""THE model_dir contract: what a run writes where, who writes, how to read it.

A run's folder (`model_dir`) holds:

  events.out.tfevents.*   TensorBoard (see `runner.monitor`)
  checkpoints/            `tf.train.CheckpointManager` files ckpt-<step>
                          (what they hold: `runner.checkpointing`)
  operative_config.gin    the resolved gin config, after the first step
  results.json            test accuracies (final and best epoch), noise rate,
                          seed, data summary, resolved settings, history;
                          rewritten each epoch
  weight_curve.csv        the final weighting function: loss,weight (MW-Net;
                          class-aware V: loss,weight_cluster_0,...)
  sample_weights.npz      per training sample: index, label, clean_label,
                          is_noisy, loss, weight (final model)
  export/classifier       SavedModel: images -> class probabilities
  export/weight_net       SavedModel: losses -> weights (MW-Net)
  workertemp_<task id>/   a non-chief worker's scratch checkpoints (removed
                          at the end of its run)
  .lock                   the run lock (`lock`): who runs on this folder now

Every other module (the runner, the analysis, the benchmark, launch/) names
these files through the constants and functions here. Only the chief writes
(`is_chief`); every process writes through `Writer`, which skips the files
on the others. Plain files are written atomically (`write_file_atomically`);
the SavedModel folders by `runner.export`.
"""

import contextlib
import fcntl
import io
import json
import os
import re
import shutil
import socket
import time
import uuid
from typing import Iterable, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from mwn_tf.errors import ConfigError
from mwn_tf.runner import export as export_lib

RESULTS = "results.json"
SAMPLE_WEIGHTS = "sample_weights.npz"
OPERATIVE_CONFIG = "operative_config.gin"
WEIGHT_CURVE = "weight_curve.csv"
EVENTS = "events.out.tfevents.*"  # tf.summary's and Keras' event files.
CHECKPOINTS = "checkpoints"
EXPORT = "export"
CLASSIFIER_EXPORT = os.path.join(EXPORT, "classifier")
WEIGHT_NET_EXPORT = os.path.join(EXPORT, "weight_net")
WORKER_SCRATCH = "workertemp_{task_id}"
LOCK = ".lock"
CHECKPOINT_PREFIX = "ckpt"  # tf.train.CheckpointManager's default.
# What tf.train.CheckpointManager (prefix "ckpt") writes for checkpoint <n>.
_CHECKPOINT_FILE = re.compile(
    CHECKPOINT_PREFIX + r"-(\d+)(_temp|\.index|\.data-\d+-of-\d+)")
# The temporary copy `write_file_atomically` renames into place.
_TMP_MARK = ".tmp-"
_TMP_FILE = re.compile(r".+\.tmp-[0-9a-f]{8}")


# ----------------------------------------------------------------------------
# Names.
# ----------------------------------------------------------------------------
def files(model_dir: str, method: str) -> dict:
  """The plain files (and the checkpoint folder) a run of `method` writes:
  name -> path, as results.json's `files` lists them."""
  join = lambda name: os.path.join(model_dir, name)
  out = {"results": join(RESULTS), "sample_weights": join(SAMPLE_WEIGHTS),
         "operative_config": join(OPERATIVE_CONFIG),
         "checkpoints": join(CHECKPOINTS)}
  if method == "mwn":
    out["weight_curve"] = join(WEIGHT_CURVE)
  return out


def exports(model_dir: str, method: str) -> dict:
  """The SavedModel folders a run of `method` writes: name -> path."""
  out = {"classifier": os.path.join(model_dir, CLASSIFIER_EXPORT)}
  if method == "mwn":
    out["weight_net"] = os.path.join(model_dir, WEIGHT_NET_EXPORT)
  return out


def checkpoint_dir(model_dir: str) -> str:
  return os.path.join(model_dir, CHECKPOINTS)


def trial_id(model_dir: str) -> str:
  """The run's name in TensorBoard's hparams view: its folder's name."""
  return os.path.basename(os.path.normpath(model_dir))


# ----------------------------------------------------------------------------
# Who writes.
# ----------------------------------------------------------------------------
def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes checkpoints, summaries and results.

  TF's own rule (`strategy.extended.should_checkpoint`): True for every
  single-process strategy; under MultiWorkerMirroredStrategy only the chief,
  task "chief", or worker 0 when the cluster has no "chief".
  """
  return bool(strategy.extended.should_checkpoint)


def work_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
  """Where this process saves checkpoints: `model_dir`, or a scratch folder.

  Every MultiWorkerMirroredStrategy worker must take part in a checkpoint save
  (reading the metrics' on-read variables runs collectives), but only the
  chief's copy is kept: the others save into `model_dir/workertemp_<id>` and
  delete it at the end. All workers RESTORE from the chief's checkpoints.
  """
  if is_chief(strategy):
    return model_dir
  return os.path.join(model_dir, WORKER_SCRATCH.format(
      task_id=strategy.cluster_resolver.task_id))


def remove_unfinished_writes(model_dir: str, export_dirs: Iterable[str]
                             ) -> None:
  """Deletes what writes killed midway left in model_dir (chief, at start).

  Only names that are provably unfinished go: a temporary copy that only
  the dead writer would have renamed into place or deleted. They are
  `<file>.tmp-*` of `write_file_atomically`, the `.tmp-` and `.old-`
  folders of an export (`export.clean_stale`), TF's `checkpoint.tmp*` copy
  of the checkpoint state file and the `ckpt-<n>_temp/` shards of a
  checkpoint whose merge never ran. `ckpt-<n>.index` / `.data-*` files are
  never deleted here, recorded or not: a save killed between its merge and
  its record leaves a complete checkpoint, which `checkpointing.restore`
  uses, and a half-merged one is skipped there and overwritten when the run
  saves that step again. Call it while holding `lock` (no other run can be
  writing these names then).

  Args:
    model_dir: the run's folder.
    export_dirs: the run's SavedModel folders (`exports(...).values()`).
  """
  remove_stale_files(model_dir)
  for path in export_dirs:
    export_lib.clean_stale(path)
  directory = checkpoint_dir(model_dir)
  if not tf.io.gfile.isdir(directory):
    return
  for entry in tf.io.gfile.listdir(directory):
    entry = entry.rstrip("/")
    match = _CHECKPOINT_FILE.fullmatch(entry)
    if entry.startswith("checkpoint.tmp") or (match and match[2] == "_temp"):
      path = os.path.join(directory, entry)
      logging.info("Removing %s, left by a write that was killed.", path)
      if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
      else:
        tf.io.gfile.remove(path)


def checkpoints_on_disk(directory: str) -> list:
  """Prefixes `directory/ckpt-<n>` of every checkpoint with an index file,
  newest (largest n) first, whether the state file names it or not."""
  if not tf.io.gfile.isdir(directory):
    return []
  steps = {int(m[1]) for m in map(_CHECKPOINT_FILE.fullmatch,
                                  tf.io.gfile.listdir(directory))
           if m and m[2] == ".index"}
  return [os.path.join(directory, f"{CHECKPOINT_PREFIX}-{n}")
          for n in sorted(steps, reverse=True)]


def checkpoint_state(directory: str):
  """TF's checkpoint state file of `directory` as a `CheckpointState`, or
  None if it is missing, unreadable or garbled (TF raises on some garbage,
  logs and ignores other)."""
  try:
    return tf.train.get_checkpoint_state(directory)
  except (ValueError, tf.errors.OpError):
    return None


def write_checkpoint_state(directory: str, paths: Sequence[str]) -> None:
  """Writes TF's checkpoint state file naming `paths` (oldest first; the last
  is the newest), atomically, as `tf.train.CheckpointManager` would: relative
  names, and the files' times, so the manager rotates them out in turn."""
  times = [tf.io.gfile.stat(p + ".index").mtime_nsec / 1e9 for p in paths]
  names = [os.path.basename(p) for p in paths]
  text = f'model_checkpoint_path: "{names[-1]}"\n' + "".join(
      f'all_model_checkpoint_paths: "{n}"\n' for n in names) + "".join(
          f"all_model_checkpoint_timestamps: {t!r}\n" for t in times) + (
              f"last_preserved_timestamp: {min(times) - 1.0!r}\n")
  write_file_atomically(os.path.join(directory, "checkpoint"),
                                   text)


# ----------------------------------------------------------------------------
# Atomic file writes: a reader (and a resumed run) never sees half a file.
# ----------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------
# Write failures.
# ----------------------------------------------------------------------------
class WriteError(OSError):
  """A write into model_dir failed (disk full, quota, permissions, file
  size limit); its message is one line naming the path, the reason, the
  free space there and the checkpoint a rerun resumes from."""


def write_error(error: Exception, model_dir: str) -> Optional[WriteError]:
  """`error` as a `WriteError` if it is an OSError or a TF error about a
  path in model_dir (TF names the file in its message: ResourceExhausted
  "No space left on device", OutOfRange "File too large", ...), else None.
  Errors about other paths (the data) or none (out of memory) are not
  write errors."""
  if isinstance(error, OSError) and not isinstance(error, WriteError):
    where, reason = error.filename, error.strerror or str(error)
  elif isinstance(error, tf.errors.OpError):
    where, reason = error.message, error.message
  else:
    return None
  roots = {model_dir, os.path.abspath(model_dir)}
  found = [token for token in str(where or "").split()
           if any(root in token for root in roots)]
  if not found:
    return None
  path = found[0].strip(";:,'\"()[]")
  reason = str(reason).split(";")[-1].splitlines()[0].strip()
  try:
    free = f"{shutil.disk_usage(model_dir).free / 2**20:.1f} MiB free there"
  except OSError:
    free = "free space unknown"
  latest = latest_checkpoint(model_dir)
  kept = (f"the last good checkpoint, {os.path.basename(latest)}, is kept"
          if latest else "no checkpoint was written yet")
  return WriteError(f"cannot write {path}: {reason} ({free}); {kept}: free "
                    f"some space (or fix the permissions) and rerun the same "
                    f"command to resume.")


# ----------------------------------------------------------------------------
# One run per model_dir.
# ----------------------------------------------------------------------------
@contextlib.contextmanager
def lock(model_dir: str, take: bool = True):
  """Holds model_dir's run lock (`model_dir/.lock`) for the block.

  An OS lock (`flock`), so it dies with its holder: `kill -9` leaves no
  stale lock. The holder writes who it is into the file (host, PID, start
  time, UTC); a second run on the same folder gets `ConfigError` naming
  them, before it cleans up or writes anything. The file itself stays (an
  unlocked file is no lock). Under MultiWorkerMirroredStrategy only the
  chief takes it (`take=is_chief(...)`): the workers write only their own
  scratch folders. Folders that are not local paths (gs://...) get no lock,
  with a warning.

  Raises:
    ConfigError: another live process holds the lock.
  """
  if not take or "://" in model_dir:
    if take:
      logging.warning("No run lock on %s (flock needs a local path): do not "
                      "start a second run on it.", model_dir)
    yield
    return
  fd = os.open(os.path.join(model_dir, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 1024, 0).decode(errors="replace").strip()
      raise ConfigError(
          f"{model_dir} is in use by another run ({holder or 'starting'}); "
          f"wait for it to end (or stop it), or use another --model_dir."
      ) from None
    os.ftruncate(fd, 0)
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    os.pwrite(fd, f"host {socket.gethostname()}, PID {os.getpid()}, since "
              f"{since}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # Releases the lock.


# ----------------------------------------------------------------------------
# The writer.
# ----------------------------------------------------------------------------
def _npz_bytes(arrays: dict) -> bytes:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  return buf.getvalue()


def _curve_csv(curve: np.ndarray) -> str:
  """`[p, 1 + C]` (loss, C weights) as CSV: `loss,weight` for one curve,
  `loss,weight_cluster_0,...` for a class-aware V's C > 1."""
  header = ["loss"] + (["weight"] if curve.shape[1] == 2 else
                       [f"weight_cluster_{c}" for c in range(curve.shape[1]
                                                              - 1)])
  return ",".join(header) + "\n" + "".join(
      ",".join(f"{v:.6g}" for v in row) + "\n" for row in curve)


class Writer:
  """The plain files and exports of a run (the chief writes, others skip).

  Every file is written atomically (a temporary file, then a rename), so a
  reader, or a resumed run, sees the previous version or the new one.

  Args:
    model_dir: the run's folder.
    method: "mwn" or "baseline" (the baseline has no V to write).
    strategy: the run's strategy (who is chief, where a worker's scratch
      checkpoints go).
  """

  def __init__(self, model_dir: str, method: str,
               strategy: tf.distribute.Strategy):
    self.model_dir = model_dir
    self.chief = is_chief(strategy)
    self.files = files(model_dir, method)
    self.exports = exports(model_dir, method)
    scratch = work_dir(model_dir, strategy)
    self._scratch = None if self.chief else scratch
    self.save_dir = checkpoint_dir(scratch)

  def write_results(self, results: dict) -> dict:
    if self.chief:
      write_file_atomically(self.files["results"],
                                       json.dumps(results, indent=1))
    return results

  def write_operative_config(self, text: str) -> None:
    if self.chief:
      write_file_atomically(self.files["operative_config"], text)

  def write_final(self, samples: dict, curve: Optional[np.ndarray],
                  meta_model, splits=None) -> None:
    """Per-sample weights, the weighting curve and (if `meta_model`) the
    SavedModels of its classifier (raw-image signatures from `splits`) and
    V."""
    if not self.chief:
      return
    write_file_atomically(self.files["sample_weights"],
                                     _npz_bytes(samples))
    if curve is not None:
      write_file_atomically(self.files["weight_curve"],
                                       _curve_csv(curve))
    if meta_model is not None:
      export_lib.export_classifier(meta_model.classifier,
                                   self.exports["classifier"], splits)
      if "weight_net" in self.exports:
        export_lib.export_weight_net(meta_model.weight_net,
                                     self.exports["weight_net"])

  def cleanup(self) -> None:
    """Removes a non-chief worker's scratch folder."""
    if self._scratch:
      tf.io.gfile.rmtree(self._scratch)


# ----------------------------------------------------------------------------
# Readers.
# ----------------------------------------------------------------------------
def path(model_dir: str, name: str) -> Optional[str]:
  """`model_dir/name` if that file or folder exists, else None."""
  full = os.path.join(model_dir, name)
  return full if tf.io.gfile.exists(full) else None


def is_run_folder(model_dir: str) -> bool:
  """Whether `model_dir` is a folder (local, gs://..., any tf.io.gfile
  filesystem)."""
  return tf.io.gfile.isdir(model_dir)


def savedmodel(model_dir: str, name: str) -> Optional[str]:
  """`model_dir/name` if it is a SavedModel folder (has saved_model.pb),
  e.g. `name` = `CLASSIFIER_EXPORT`; else None."""
  full = os.path.join(model_dir, name)
  return full if tf.io.gfile.exists(os.path.join(full, "saved_model.pb")) \
      else None


def event_dirs(model_dir: str) -> list:
  """The folders that hold a run's TensorBoard event files, sorted: the
  runner's writer logs into model_dir; Keras' TensorBoard callback (a user's
  own `fit()`) into its subfolders train/ and validation/. Only these two
  levels are searched, so a folder of several runs is not taken for one."""
  found = tf.io.gfile.glob(os.path.join(model_dir, EVENTS)) + (
      tf.io.gfile.glob(os.path.join(model_dir, "*", EVENTS)))
  return sorted({os.path.dirname(p) for p in found})


def glob(model_dir: str, pattern: str) -> list:
  """The paths in model_dir (not below) that match `pattern`, sorted."""
  return sorted(tf.io.gfile.glob(os.path.join(model_dir, pattern)))


def read_file(path: str, binary: bool = False):
  """A run's file, read whole through tf.io.gfile (`str`, or `bytes` if
  `binary`).

  Raises:
    OSError: it cannot be read (the message names `path`).
  """
  try:
    with tf.io.gfile.GFile(path, "rb" if binary else "r") as f:
      return f.read()
  except tf.errors.OpError as e:
    raise OSError(f"Cannot read {path}: {e.message}") from e


def read_results(model_dir_or_file: str) -> dict:
  """results.json of a run (its folder, or the file itself).

  Raises:
    OSError: no such file; ValueError: not JSON.
  """
  name = model_dir_or_file
  if tf.io.gfile.isdir(name):
    name = os.path.join(name, RESULTS)
  return json.loads(read_file(name))


def find_results(roots: Iterable[str]) -> list:
  """(run name, path) of every results.json under `roots`, sorted.

  The run name is the run folder relative to its root (the root's own name
  when the root is the run folder or the file itself).
  """
  found = []
  for root in roots:
    if os.path.isfile(root):
      found.append((os.path.basename(os.path.dirname(os.path.abspath(root))),
                    root))
      continue
    for dirpath, _, filenames in os.walk(root):
      if RESULTS in filenames:
        name = os.path.relpath(dirpath, root)
        if name == ".":
          name = os.path.basename(os.path.abspath(root))
        found.append((name, os.path.join(dirpath, RESULTS)))
  return sorted(found)


def checkpoints(model_dir: str) -> list:
  """The recorded checkpoints of a run (paths without suffix), oldest first;
  [] if it has none."""
  state = tf.train.get_checkpoint_state(checkpoint_dir(model_dir))
  if not state:
    return []
  return [p if os.path.isabs(p) else os.path.join(checkpoint_dir(model_dir), p)
          for p in state.all_model_checkpoint_paths]


def checkpoint_step(path: str) -> int:
  """The step at which checkpoint `path` (`.../ckpt-<n>`) was written."""
  return int(path.rsplit("-", 1)[1])


def latest_checkpoint(model_dir: str) -> Optional[str]:
  """The newest recorded checkpoint of a run, or None."""
  return tf.train.latest_checkpoint(checkpoint_dir(model_dir))

