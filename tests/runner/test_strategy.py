"""get_strategy(), the chief helpers and synchronize_batchnorm.

The TPU path is checked up to the strategy boundary: which resolver calls
`get_strategy("tpu", ...)` makes for each kind of address (with TF's TPU
functions replaced by recorders), and the errors on this TPU-less machine.
"""

import json
import types

import keras
import pytest
import tensorflow as tf

from mwn_tf.models import batch_norm
from mwn_tf.runner import run_dir
from mwn_tf.runner import strategy as strategy_lib


def test_unknown_name_lists_the_choices():
  with pytest.raises(ValueError, match=r"Unknown strategy 'gpu'.*'mirrored'"):
    strategy_lib.get_strategy("gpu")


def test_tpu_address_without_tpu_strategy_is_an_error():
  with pytest.raises(ValueError, match="--strategy=tpu"):
    strategy_lib.get_strategy("mirrored", tpu="local")


def test_default_and_mirrored():
  default = strategy_lib.get_strategy()
  assert default is tf.distribute.get_strategy()
  assert default.num_replicas_in_sync == 1
  mirrored = strategy_lib.get_strategy("mirrored")
  assert isinstance(mirrored, tf.distribute.MirroredStrategy)
  # No GPU here and the CPU not split in this process: one replica.
  assert mirrored.num_replicas_in_sync == len(
      tf.config.list_logical_devices("GPU") or
      tf.config.list_logical_devices("CPU"))
  for s in (default, mirrored):
    assert run_dir.is_chief(s)
    assert run_dir.work_dir("/runs/x", s) == "/runs/x"


@pytest.mark.parametrize("tf_config,match", [
    ("{not json", "TF_CONFIG is not valid"),
    (json.dumps({"cluster": {"worker": ["a:1"]}}), "TF_CONFIG is not valid"),
    (json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                 "task": {"type": "worker", "index": 2}}), "out of range"),
])
def test_broken_tf_config_is_a_clear_error(monkeypatch, tf_config, match):
  monkeypatch.setenv("TF_CONFIG", tf_config)
  with pytest.raises(ValueError, match=match):
    strategy_lib.get_strategy("multi_worker")


class _Recorder:
  """Stands in for TF's TPU entry points and records how they are called."""

  def __init__(self, monkeypatch):
    self.calls = []
    rec = self

    class Resolver:
      def __init__(self, tpu=None):
        rec.calls.append(("resolver", tpu))
        if tpu is None:
          raise ValueError("Please provide a TPU Name to connect to.")

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver",
                        Resolver)
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster",
                        lambda r: rec.calls.append(("connect",)))
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system",
                        lambda r: rec.calls.append(("initialize",)))
    monkeypatch.setattr(tf.distribute, "TPUStrategy",
                        lambda r: types.SimpleNamespace(resolver=r))


@pytest.mark.parametrize("tpu,connects", [
    ("local", False),                  # Cloud TPU VM: the chips are local
    ("grpc://10.0.0.2:8470", True),    # TPU node by address
    ("my-tpu", True),                  # TPU node by name
])
def test_tpu_resolver_arguments(monkeypatch, tpu, connects):
  rec = _Recorder(monkeypatch)
  strategy_lib.get_strategy("tpu", tpu=tpu)
  expected = [("resolver", tpu)] + ([("connect",)] if connects else []) + [
      ("initialize",)]
  assert rec.calls == expected


def test_tpu_not_found_is_a_runtime_error(monkeypatch):
  _Recorder(monkeypatch)
  monkeypatch.delenv("TPU_NAME", raising=False)
  with pytest.raises(RuntimeError, match="Cannot find the TPU.*--tpu=local"):
    strategy_lib.get_strategy("tpu", tpu=None)


def test_real_tpu_resolver_on_a_machine_without_tpu(monkeypatch):
  """No mocks: no TPU name fails at the resolver, with advice."""
  monkeypatch.delenv("TPU_NAME", raising=False)
  with pytest.raises(RuntimeError, match="Cannot find the TPU"):
    strategy_lib.tpu_resolver(None)
  # "local" resolves (it names no remote host); initialising it is what
  # fails here: covered in a fresh process by test_distribute_tpu.py.
  assert strategy_lib.tpu_resolver("local").master() == ""


def test_synchronize_batchnorm_switches_nested_layers():
  inner = keras.Sequential([keras.Input((3,)),
                            keras.layers.BatchNormalization()])
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3), inner,
                            keras.layers.BatchNormalization()])
  assert batch_norm.synchronize_batchnorm(model) == 2
  bns = [l for l in model._flatten_layers()  # pylint: disable=protected-access
         if isinstance(l, keras.layers.BatchNormalization)]
  assert len(bns) == 2 and all(l.synchronized for l in bns)
  assert all(l.get_config()["synchronized"] for l in bns)
