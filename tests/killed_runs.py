"""Runs killed at a chosen point of a write, and what they leave on disk.

`killed_run` starts `python -m mwn_tf.main` (smoke.gin plus the bindings,
helpers.REFERENCE_BINDINGS unless told) through `KILLER`, a bootstrap that
wraps one of TensorFlow's own file-writing functions so that the child
SIGKILLs itself at that point; `recorded`, `assert_nothing_left_over` and
`snapshot` read the model_dir afterwards. Shared by
tests/runner/test_robustness.py and tests/runner/test_recovery.py.
"""

import os
import re
import signal
import subprocess
import sys

import tensorflow as tf

import helpers

# `python -c KILLER <mwn_tf.main flags>` with MWN_KILL="<point>@<target>".
KILLER = r'''
import os, signal, sys, uuid
point, target = os.environ["MWN_KILL"].split("@", 1)
import tensorflow as tf
from tensorflow.python.checkpoint import checkpoint_management
from tensorflow.python.lib.io import file_io
from tensorflow.python.ops import gen_io_ops, io_ops


def die(what):
  print(f"KILLED at {point}: {what}", file=sys.stderr, flush=True)
  os.kill(os.getpid(), signal.SIGKILL)


def eager_path(t):
  # Saves traced into a SavedModel's graph write nothing; skip them.
  return t.numpy().decode() if hasattr(t, "numpy") else ""


def patch(owner, name, make):
  setattr(owner, name, make(getattr(owner, name)))


if point == "shard":
  # SaveV2 has written checkpoint <target>'s shard into <prefix>_temp/; the
  # merge into <prefix>.index/.data-* has not started.
  def make(real):
    def save_v2(prefix, *args, **kwargs):
      out = real(prefix, *args, **kwargs)
      if target + "_temp/" in eager_path(prefix):
        die(eager_path(prefix))
      return out
    return save_v2
  patch(io_ops, "save_v2", make)
elif point == "merge":
  # Halfway through MergeV2Checkpoints, done in its own order (MergeBundles
  # in tensor_bundle.cc): the data file is renamed into place, then the index
  # is written in place, not atomically; the kill falls inside the index.
  def make(real):
    def merge(prefixes, destination, *args, **kwargs):
      dest = eager_path(destination)
      if not dest.endswith("/" + target):
        return real(prefixes, destination, *args, **kwargs)
      (part,) = [eager_path(p) for p in prefixes]
      os.rename(part + ".data-00000-of-00001", dest + ".data-00000-of-00001")
      with open(part + ".index", "rb") as f:
        index = f.read()
      with open(dest + ".index", "wb") as f:
        f.write(index[:len(index) // 2])
      die(dest)
    return merge
  patch(gen_io_ops, "merge_v2_checkpoints", make)
elif point in ("record", "export"):
  # file_io's atomic write (temporary copy, then rename), killed halfway
  # through the copy. record: the checkpoint state file that would name
  # checkpoint <target>, whose files are complete. export: saved_model.pb of
  # a SavedModel whose path contains <target>, its variables written.
  def make(real):
    def atomic_write(filename, contents, overwrite=True):
      if point == "record":
        hit = (isinstance(contents, str) and
               f'model_checkpoint_path: "{target}"' in contents)
      else:
        hit = target in filename and filename.endswith("saved_model.pb")
      if hit:
        file_io.write_string_to_file(filename + ".tmp" + uuid.uuid4().hex,
                                     contents[:len(contents) // 2])
        die(filename)
      return real(filename, contents, overwrite)
    return atomic_write
  patch(file_io, "atomic_write_string_to_file", make)
elif point == "sweep":
  # The new checkpoint is recorded; deleting the oldest one (<target>.*) has
  # removed its first file.
  def make(real):
    def delete(filename):
      real(filename)
      if os.path.basename(filename).startswith(target + "."):
        die(filename)
    return delete
  patch(checkpoint_management, "_delete_file_if_exists", make)
elif point == "saved":
  # Checkpoint <target> is complete and recorded: a kill between two steps.
  def make(real):
    def save(self, *args, **kwargs):
      path = real(self, *args, **kwargs)
      if path and path.endswith("/" + target):
        die(path)
      return path
    return save
  patch(tf.train.CheckpointManager, "save", make)
else:
  raise SystemExit(f"unknown kill point {point!r}")

sys.argv = ["mwn_tf.main"] + sys.argv[1:]
from mwn_tf import main
main.run()
'''


def killed_run(model_dir, kill, bindings=helpers.REFERENCE_BINDINGS,
               extra_flags=()):
  """Runs the command under `KILLER` with MWN_KILL=`kill`; it must die
  there. Returns its stderr."""
  proc = subprocess.run(
      [sys.executable, "-c", KILLER] + helpers.flags(model_dir, bindings) +
      list(extra_flags),
      cwd=helpers.REPO, env=dict(helpers.ENV, MWN_KILL=kill),
      capture_output=True, text=True, timeout=600)
  assert proc.returncode == -signal.SIGKILL, (
      f"not killed at {kill} (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
  assert f"KILLED at {kill.split('@')[0]}" in proc.stderr
  return proc.stderr


def recorded(model_dir):
  """Names (ckpt-<n>) of the checkpoints the state file lists, oldest
  first."""
  state = tf.train.get_checkpoint_state(str(model_dir / "checkpoints"))
  return [os.path.basename(p) for p in state.all_model_checkpoint_paths
          ] if state else []


def assert_nothing_left_over(model_dir):
  """No temporary or partial file of any writer, and no checkpoint file that
  the state file does not name."""
  stray = [os.path.relpath(os.path.join(root, n), model_dir)
           for root, dirs, files in os.walk(model_dir) for n in dirs + files
           if re.search(r"_temp$|\.tmp|\.old-", n)]
  assert not stray, stray
  names = {re.sub(r"\.(index|data-.*)$", "", n)
           for n in os.listdir(model_dir / "checkpoints")
           if n.startswith("ckpt-")}
  assert names == set(recorded(model_dir))


def snapshot(folder):
  """Every path under `folder` with its bytes and modification time."""
  out = {}
  for root, dirs, files in os.walk(folder):
    for name in dirs + files:
      path = os.path.join(root, name)
      out[os.path.relpath(path, folder)] = (
          os.stat(path).st_mtime_ns,
          None if os.path.isdir(path) else open(path, "rb").read())
  return out
