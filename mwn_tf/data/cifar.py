"""CIFAR-10 / CIFAR-100 through tensorflow_datasets (held in memory).

`index` is the position in the TFDS `train` (or `test`) split read with
shuffle_files=False; TFDS fixes that order when it builds the dataset, so it
is the same on every machine.
"""

import os
import socket
from typing import Optional

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from mwn_tf.data import corruption
from mwn_tf.data import in_memory
from mwn_tf.data import preprocessing
from mwn_tf.data import registry
from mwn_tf.data import splits as splits_lib


# Where TFDS downloads CIFAR (and CIFAR-N's images) from; probed before a
# download so that a machine without network fails in seconds, not after
# the downloader's retries (minutes).
DOWNLOAD_HOST = ("www.cs.toronto.edu", 443)
PROBE_TIMEOUT_S = 5.0
_PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def unreachable(host=None, timeout: float = PROBE_TIMEOUT_S) -> Optional[str]:
  """Why `host` (default `DOWNLOAD_HOST`) cannot be reached, or None.

  None too behind a proxy (the downloader goes through it, this probe would
  not), so a proxy user never gets a false "no network".
  """
  if any(os.environ.get(v) for v in _PROXY_VARIABLES):
    return None
  host = host or DOWNLOAD_HOST
  try:
    socket.create_connection(host, timeout=timeout).close()
    return None
  except OSError as e:
    return f"cannot reach {host[0]}:{host[1]}: {e.strerror or e}"


def _is_tfds_downloader(builder) -> bool:
  # Tests replace download_and_prepare (tfds.testing.mock_data, a fake
  # network error); the probe guards only TFDS's own downloader.
  return type(builder).download_and_prepare.__module__.startswith(
      "tensorflow_datasets.core")


def prepare_builder(
    name: str, data_dir: Optional[str], download: bool,
    download_config: Optional[tfds.download.DownloadConfig] = None
) -> tfds.core.DatasetBuilder:
  """A prepared TFDS builder, or one clear error saying how to get the data.

  `download_config` is passed to `download_and_prepare` (e.g. the manual
  folder of CIFAR-10N / CIFAR-100N).

  Raises:
    FileNotFoundError: the data is not under `data_dir` and could not be
      downloaded (no network, or download=False).
  """
  builder = tfds.builder(name, data_dir=data_dir)
  where = data_dir or tfds.core.constants.DATA_DIR
  offline_fix = (f"With no network: run `tfds build {name}` on a machine "
                 f"that has one, copy its ~/tensorflow_datasets/{name} "
                 f"folder into a folder DIR (as DIR/{name}) and bind "
                 f"{name}.data_dir = 'DIR' (now {where}); "
                 f"{name}.download = False then only reads prepared data.")
  if not download:
    if not builder.is_prepared():
      raise FileNotFoundError(f"{name} is not prepared under {where} and "
                              f"download=False. {offline_fix}")
    return builder
  if not builder.is_prepared() and _is_tfds_downloader(builder):
    reason = unreachable()
    if reason:
      raise FileNotFoundError(f"Could not download {name} into {where} (no "
                              f"network? {reason}). {offline_fix}")
  try:
    builder.download_and_prepare(download_config=download_config)
  except ImportError as e:
    # tensorflow-datasets 4.9.10 imports importlib_resources to build any
    # packaged dataset but declares it only for Python < 3.9.
    raise ImportError(f"tensorflow_datasets needs the {e.name!r} package to "
                      f"prepare {name}: pip install {e.name}.") from e
  except Exception as e:  # pylint: disable=broad-except
    # Network failures surface as many types (OSError, requests errors,
    # tfds DownloadError...); all mean the same thing to the user.
    raise FileNotFoundError(
        f"Could not download {name} into {where} ({type(e).__name__}: {e}). "
        f"{offline_fix}") from e
  return builder


def load_arrays(builder: tfds.core.DatasetBuilder, split: str) -> dict:
  """Whole split as numpy arrays, in TFDS file order."""
  ds = builder.as_dataset(split=split, shuffle_files=False)
  chunks = list(tfds.as_numpy(ds.batch(8192)))
  return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def superclass_map(fine: np.ndarray, coarse: np.ndarray,
                   num_classes: int) -> np.ndarray:
  """[K] superclass of each fine class, by majority over the examples.

  In real CIFAR-100 every fine class has one coarse label; a disagreement is
  logged (it happens with mocked data).
  """
  table = np.zeros((num_classes, int(coarse.max()) + 1), np.int64)
  np.add.at(table, (fine, coarse), 1)
  mapping = table.argmax(axis=1)
  disagree = 1.0 - table.max(axis=1).sum() / max(1, table.sum())
  if disagree > 0:
    logging.warning("coarse_label is not a function of label on %.1f%% of "
                    "examples; using the majority superclass.", 100 * disagree)
  return mapping


def _cifar(name: str, num_classes: int, *, data_dir, num_meta, noise_type,
           noise_rate, imbalance_factor, seed, augment, download):
  corruption.validate(noise_type, noise_rate, imbalance_factor,
                      has_superclasses=(name == "cifar100"), dataset=name)
  if num_meta is None:
    num_meta = in_memory.default_num_meta(num_classes, imbalance_factor, 1000)
  builder = prepare_builder(name, data_dir, download)
  train, test = load_arrays(builder, "train"), load_arrays(builder, "test")
  superclass = None
  if name == "cifar100":
    superclass = superclass_map(train["label"], train["coarse_label"],
                                num_classes)
  return in_memory.from_arrays(
      name, train_images=train["image"], train_labels=train["label"],
      test_images=test["image"], test_labels=test["label"],
      num_classes=num_classes, num_meta=num_meta, noise_type=noise_type,
      noise_rate=noise_rate, imbalance_factor=imbalance_factor, seed=seed,
      augment=augment, train_fn=preprocessing.cifar_train,
      eval_fn=preprocessing.cifar_eval, image_shape=(32, 32, 3),
      preprocessing=preprocessing.CIFAR_EVAL,
      superclass=superclass,
      class_names=list(builder.info.features["label"].names),
      config={"data_dir": data_dir},
      sample_names=splits_lib.SampleNames(f"tfds {name}", "train"))


@registry.register("cifar10")
def cifar10(data_dir: Optional[str] = None, num_meta: Optional[int] = None,
            noise_type: str = "none", noise_rate: float = 0.0,
            imbalance_factor: float = 1.0, seed: int = 0,
            augment: bool = True, download: bool = True):
  """CIFAR-10 with a clean balanced meta set, label noise and/or long tail.

  Args:
    data_dir: TFDS data dir (None: TFDS default, ~/tensorflow_datasets).
    num_meta: meta-set size, multiple of 10; None: the paper's, 1000
      (100/class) for noise, 100 (10/class) when imbalance_factor > 1.
    noise_type: none, uniform, flip or flip2.
    noise_rate: in [0, 1].
    imbalance_factor: >= 1; the long tail is applied first, then noise.
    seed: experiment seed (meta set, long tail, labels, shuffles, crops).
    augment: the paper's pad-4/crop/flip on train and meta (never on test).
    download: let TFDS download if the data is missing.

  Returns:
    DataSplits; images float32 [32, 32, 3], per-channel standardised.
  """
  return _cifar("cifar10", 10, data_dir=data_dir, num_meta=num_meta,
                noise_type=noise_type, noise_rate=noise_rate,
                imbalance_factor=imbalance_factor, seed=seed, augment=augment,
                download=download)


@registry.register("cifar100")
def cifar100(data_dir: Optional[str] = None, num_meta: Optional[int] = None,
             noise_type: str = "none", noise_rate: float = 0.0,
             imbalance_factor: float = 1.0, seed: int = 0,
             augment: bool = True, download: bool = True):
  """CIFAR-100; as `cifar10`, plus hierarchical noise via coarse_label.

  num_meta None: 1000 (10/class) for noise, 1000 (10/class) for long tail.
  """
  return _cifar("cifar100", 100, data_dir=data_dir, num_meta=num_meta,
                noise_type=noise_type, noise_rate=noise_rate,
                imbalance_factor=imbalance_factor, seed=seed, augment=augment,
                download=download)
