"""Tests that need data files installed on the machine (not generated).

`require_fashion_mnist()` skips a test, with a reason naming the package to
install, when Debian's Fashion-MNIST files are absent; under CI (environment
variable `CI` set) it fails instead, so a broken install in `.ci/run` never
turns into silent skips.
"""

import os

import pytest

from mwn_tf.data import fashion_mnist


def require(present: bool, what: str, fix: str) -> None:
  """Skips (fails under CI) unless `present`."""
  if present:
    return
  message = f"{what} is not installed: {fix}"
  if os.environ.get("CI"):
    pytest.fail(f"CI is set, so this test must run: {message}",
                pytrace=False)
  pytest.skip(message)


def require_fashion_mnist() -> str:
  """The folder holding the four Fashion-MNIST IDX files, or skip/fail."""
  path = fashion_mnist.DEFAULT_IDX_DIR
  require(fashion_mnist.has_idx_files(path), f"Fashion-MNIST ({path})",
          f"apt-get install {fashion_mnist.PACKAGE}")
  return path
