"""A real TensorBoard server on localhost serves the runner's summaries."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import gin
import pytest

from mwn_tf.runner import train_eval as train_eval_lib
from helpers import REPO


def get_json(base, path, **query):
  url = f"{base}{path}" + (f"?{urllib.parse.urlencode(query)}" if query
                           else "")
  with urllib.request.urlopen(url, timeout=10) as response:
    return json.loads(response.read())


def start_tensorboard(logdir):
  """Starts `tensorboard --logdir logdir` on 127.0.0.1; returns (proc, url)."""
  proc = subprocess.Popen(
      [sys.executable, "-m", "tensorboard.main", f"--logdir={logdir}",
       "--host=127.0.0.1", "--port=0", "--reload_interval=1"],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 120
  for line in proc.stdout:
    match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
    if match:
      return proc, match.group(1)
    assert time.time() < deadline, "TensorBoard did not start"
  raise AssertionError(f"TensorBoard exited with {proc.wait()}")


@pytest.mark.slow
def test_tensorboard_serves_scalars_images_histograms(tmp_path):
  gin.parse_config_files_and_bindings([os.path.join(REPO, "gin/smoke.gin")],
                                      [])
  train_eval_lib.train_eval(str(tmp_path))
  gin.clear_config()
  proc, base = start_tensorboard(tmp_path)
  try:
    deadline = time.time() + 120
    while True:
      scalars = get_json(base, "/data/plugin/scalars/tags")
      images = get_json(base, "/data/plugin/images/tags")
      histograms = get_json(base, "/data/plugin/histograms/tags")
      loaded = scalars and images and histograms
      if loaded and "test/accuracy" in scalars.get(".", {}):
        break
      assert time.time() < deadline, (scalars, images, histograms)
      time.sleep(1)
    assert {"train/loss", "meta/loss", "test/accuracy", "train/weight_clean",
            "train/weight_noisy"} <= set(scalars["."])
    assert {"meta/weighting_function", "train/sample_weight_distribution",
            "train/weight_variation"} <= set(images["."])
    assert {"train/sample_weight/clean", "train/sample_weight/corrupted"
            } <= set(histograms["."])
    points = get_json(base, "/data/plugin/scalars/scalars", run=".",
                      tag="test/accuracy")
    assert len(points) == 1 and 0.0 <= points[0][2] <= 1.0
    (image,) = get_json(base, "/data/plugin/images/images", run=".",
                        tag="meta/weighting_function", sample=0)
    with urllib.request.urlopen(
        f"{base}/data/plugin/images/individualImage?{image['query']}",
        timeout=10) as response:
      assert response.read(8) == b"\x89PNG\r\n\x1a\n"
    hist = get_json(base, "/data/plugin/histograms/histograms", run=".",
                    tag="train/sample_weight/corrupted")
    assert hist and hist[0][2]  # [wall_time, step, buckets]
  finally:
    proc.terminate()
    proc.wait(timeout=30)


def _readme_scalars():
  """The scalar tags the docs' TensorBoard section names (braces expanded)."""
  with open(os.path.join(REPO, "docs", "tensorboard.md"),
            encoding="utf-8") as f:
    section = f.read().split("\n## TensorBoard\n", 1)[1].split("\n## ", 1)[0]
  section = section.split("Images:", 1)[0]
  tags = set()
  for token in re.findall(r"`([\w/<>]+(?:\{[\w,/<>]+\})?)`", section):
    head, _, rest = token.partition("{")
    names = rest.rstrip("}").split(",") if rest else [""]
    tags |= {head + n for n in names}
  return tags


def test_readme_names_every_scalar_a_run_writes(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  gin.parse_config_files_and_bindings(
      [os.path.join(REPO, "gin/smoke.gin")], ["train_eval.export = False"])
  train_eval_lib.train_eval(str(tmp_path))
  gin.clear_config()
  written = set()
  for name in os.listdir(tmp_path):
    if name.startswith("events.out.tfevents"):
      for event in tf.compat.v1.train.summary_iterator(str(tmp_path / name)):
        written |= {v.tag for v in event.summary.value
                    if v.metadata.plugin_data.plugin_name == "scalars"}
  documented = _readme_scalars()
  assert "train/epoch" in written and "train/sample_weight_clean" in written
  missing = {t for t in written
             if re.sub(r"weight_at_loss/.*", "weight_at_loss/<L>", t)
             not in documented}
  assert not missing, (missing, documented)
