"""Unit tests of the runner's callbacks and figures."""

import types

import numpy as np
import pytest
import tensorflow as tf

from mwn_tf.runner import checkpointing
from mwn_tf.runner import monitor


def _fake_model(step):
  return types.SimpleNamespace(
      optimizer=types.SimpleNamespace(iterations=tf.Variable(step, tf.int64)))


def _manager(tmp_path, variables, state):
  ckpt = tf.train.Checkpoint(vars=variables, run=state.checkpoint_items())
  return ckpt, tf.train.CheckpointManager(ckpt, str(tmp_path), max_to_keep=3)


def test_checkpointer_never_saves_non_finite_parameters(tmp_path):
  weights = tf.Variable([1.0, 2.0])
  state = checkpointing.RunState()
  _, manager = _manager(tmp_path, [weights], state)
  saver = checkpointing.Checkpointer(manager, [weights], state, every_n_steps=1)
  saver.set_model(_fake_model(3))
  good = saver.save(3)
  weights.assign([1.0, np.nan])
  with pytest.raises(checkpointing.NonFiniteError, match="by step 4") as err:
    saver.save(4)
  assert err.value.step == 4
  assert good in str(err.value)  # names the last good checkpoint
  assert manager.latest_checkpoint == good
  assert tf.train.load_variable(good, "vars/0/.ATTRIBUTES/VARIABLE_VALUE"
                                ).tolist() == [1.0, 2.0]


def test_checkpointer_interval_skips_the_epochs_last_batch(tmp_path):
  weights = tf.Variable(1.0)
  state = checkpointing.RunState()
  _, manager = _manager(tmp_path, [weights], state)
  saver = checkpointing.Checkpointer(manager, [weights], state, every_n_steps=2)
  model = _fake_model(0)
  saver.set_model(model)
  saver.set_params({"steps": 5})
  saver.on_train_begin()
  for batch in range(5):
    model.optimizer.iterations.assign_add(1)
    saver.on_train_batch_end(batch)
  # Steps 2 and 4 saved; step 5 (last batch) is left to on_epoch_end.
  assert [int(p.rsplit("-", 1)[1]) for p in manager.checkpoints] == [2, 4]
  saver.on_epoch_end(0)
  assert manager.latest_checkpoint.endswith("ckpt-5")


def test_guard_names_the_step_and_batch():
  guard = checkpointing.NonFiniteGuard(lambda: "ckpt-10 (step 10)", steps_per_epoch=4)
  guard.set_model(_fake_model(11))
  guard.on_train_batch_end(0, {"loss": 1.0, "meta_loss": 2.0})
  with pytest.raises(checkpointing.NonFiniteError) as err:
    guard.on_train_batch_end(2, {"loss": 1.0, "meta_loss": float("nan")})
  message = str(err.value)
  assert "meta_loss became nan at step 11" in message
  assert "epoch 3, batch 3/4" in message and "ckpt-10" in message
  assert err.value.step == 11
  with pytest.raises(checkpointing.NonFiniteError, match="inf"):
    guard.on_train_batch_end(3, {"loss": float("inf")})


def test_run_state_round_trips_through_a_checkpoint(tmp_path):
  state = checkpointing.RunState()
  ckpt, manager = _manager(tmp_path, [], state)
  state.append({"epoch": 1, "test": {"accuracy": 0.5}})
  state.append({"epoch": 2, "test": {"accuracy": 0.75}})
  state.wall_time.assign(12.5)
  manager.save()
  fresh = checkpointing.RunState()
  tf.train.Checkpoint(vars=[], run=fresh.checkpoint_items()).restore(
      manager.latest_checkpoint).assert_existing_objects_matched()
  assert fresh.history == state.history
  assert int(fresh.epochs_done.numpy()) == 2
  fresh.start_session()
  assert fresh.elapsed() >= 12.5


def test_history_is_strict_json():
  assert monitor._clean_json({"a": [float("nan"), 1.0], "b": np.float32(np.inf)}
                        ) == {"a": [None, 1.0], "b": None}
