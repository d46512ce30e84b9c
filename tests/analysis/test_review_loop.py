"""The label-review loop through its entry points: train on an image folder
(`mwn_tf.main`), name the distrusted files (`mwn_tf.analyze`: suspects.csv,
review.csv, contact sheets), edit review.csv, train again with
`folder.review_file`; and the report's columns for a folder run and an
in-memory run."""

import csv
import json
import os

from absl import flags
import gin
import numpy as np
import pytest

from helpers import call_main
from helpers import error_lines
import mwn_tf.data
from mwn_tf import analyze
from mwn_tf.analysis import detection
from mwn_tf.analysis import suspects
import photo_folders

# A few steps of small_cnn on 32x32 crops; no exports (analysis reads
# sample_weights.npz).
SHRINK = ["folder.image_size = 32", "train_eval.model = 'small_cnn'",
          "train_eval.train_steps = 3", "train_eval.batch_size = 8",
          "train_eval.meta_batch_size = 4", "train_eval.lr_decay_epochs = ()",
          "train_eval.eval_batch_size = 16", "train_eval.verbose = 0",
          "train_eval.export = False", "resnet50.weights_path = None"]


def _train(model_dir, dirs, capsys, extra=()):
  params = SHRINK + [f"folder.{k} = '{v}'" for k, v in dirs.items()]
  params += list(extra)
  return call_main(["--gin_file=gin/folder_example.gin",
                    f"--model_dir={model_dir}"] +
                   [f"--gin_param={p}" for p in params], capsys)


def _analyze(model_dir, *args):
  fv = flags.FlagValues()
  analyze.define_flags(fv)
  fv(["mwn_tf.analyze", f"--model_dir={model_dir}"] + list(args))
  return analyze.run(["mwn_tf.analyze"], fv)


def _read(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _write(path, rows):
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


@pytest.fixture(autouse=True)
def no_gin_bindings():
  """A run's bindings (say folder.review_file) must not reach the next
  test's loader."""
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  return photo_folders.write(tmp_path_factory.mktemp("photos"))


@pytest.mark.slow
def test_review_exclude_relabel_train_again(tmp_path, photos, capsys):
  first = tmp_path / "first"
  status, _, err = _train(first, photos, capsys)
  assert status == 0, err[-2000:]
  assert _analyze(first, "--contact_sheet_size=6", "--review_size=0") == 0
  out = first / "analysis"
  for name in ("suspects.csv", "review.csv", "distrusted.png",
               "trusted.png", "ranking.csv"):
    assert (out / name).is_file(), name
  rows = _read(out / "suspects.csv")
  assert list(rows[0]) == list(suspects.SUSPECT_COLUMNS)
  assert len(rows) == 26
  # The default ranking (--rank_by=loss): the highest loss first.
  losses = [float(r["loss"]) for r in rows]
  assert losses == sorted(losses, reverse=True)
  # Every row names its file, relative to train_dir, and its classes.
  train_dir = photos["train_dir"]
  for r in rows:
    assert os.path.isfile(os.path.join(train_dir, r["file"]))
    assert r["file"].split(os.sep)[0] == r["given_class"]
    assert r["predicted_class"] in ("china", "flower")
    assert 0.5 <= float(r["probability"]) <= 1.0
    assert r["source"] == f"folder {train_dir}" and r["split"] == ""
  review = _read(out / "review.csv")
  assert {r["action"] for r in review} == {"keep"} and len(review) == 26

  # The user's edits: leave one file out, give another the other class.
  excluded, relabelled = review[0]["file"], review[1]["file"]
  new_class = ("flower" if review[1]["given_class"] == "china"
               else "china")
  review[0]["action"] = "exclude"
  review[1]["action"] = f"relabel:{new_class}"
  edited = tmp_path / "review.csv"
  _write(edited, review)

  second = tmp_path / "second"
  status, _, err = _train(second, photos, capsys,
                          [f"folder.review_file = '{edited}'"])
  assert status == 0, err[-2000:]
  results = json.loads((second / "results.json").read_text())
  assert results["data"]["num_train"] == 25
  assert results["data"]["review"] == {"file": str(edited), "excluded": 1,
                                       "relabelled": 1}
  gin.clear_config()  # The run's bindings: the loader below gets its own.
  data = mwn_tf.data.get("folder", image_size=32, validate=False,
                         review_file=str(edited), **photos)
  files = list(data.sample_names.files(data.arrays["train"]["index"]))
  assert excluded not in files and len(files) == 25
  label = data.arrays["train"]["label"][files.index(relabelled)]
  assert data.class_names[label] == new_class
  # Meta and test sets are the same as without the review.
  plain = mwn_tf.data.get("folder", image_size=32, validate=False, **photos)
  for split in ("meta", "test"):
    for key in ("path", "label"):
      np.testing.assert_array_equal(data.arrays[split][key],
                                    plain.arrays[split][key])
  # The run trained on that split: its samples lack the excluded file and
  # carry the new label.
  samples = np.load(second / "sample_weights.npz")
  position = plain.sample_names.files(plain.arrays["train"]["index"])
  by_file = dict(zip(position, plain.arrays["train"]["index"]))
  assert by_file[excluded] not in samples["index"]
  row = list(samples["index"]).index(by_file[relabelled])
  assert data.class_names[samples["label"][row]] == new_class


@pytest.mark.parametrize("action, expected", [
    ("delete", "action 'delete' is not one of keep, exclude"),
    ("relabel:tulip", "'relabel:tulip' names no class; the classes are "
     "china, flower"),
])
def test_bad_review_rows_exit_2_in_one_line(tmp_path, photos, capsys, action,
                                            expected):
  review = tmp_path / "review.csv"
  _write(review, [{"file": os.path.join("china", "china.jpg"),
                   "action": action}])
  model_dir = tmp_path / "run"
  status, _, err = _train(model_dir, photos, capsys,
                          [f"folder.review_file = '{review}'"])
  assert status == 2
  errors = error_lines(err)
  assert len(errors) == 1
  assert f"folder.review_file = '{review}': line 2" in errors[0]
  assert expected in errors[0]
  assert not model_dir.exists()


def test_unknown_file_and_meta_file_are_refused(tmp_path, photos):
  for name in ("china/none.jpg", "../meta/china/china_0.jpg"):
    review = tmp_path / "review.csv"
    _write(review, [{"file": name, "action": "exclude"}])
    with pytest.raises(ValueError, match="line 2 names file .* not in the "
                       "training split"):
      mwn_tf.data.get("folder", image_size=32, validate=False,
                      review_file=str(review), **photos)


def test_folder_report_columns(photos):
  data = mwn_tf.data.get("folder", image_size=32, validate=False, **photos)
  index = data.arrays["train"]["index"]
  n = index.size
  samples = detection.samples_from_arrays(
      {"index": index, "label": data.arrays["train"]["label"],
       "clean_label": data.arrays["train"]["clean_label"],
       "loss": np.linspace(0, 1, n), "weight": np.linspace(1, 0, n),
       "predicted": np.zeros(n, int), "probability": np.full(n, 0.75)}, "t")
  rows = suspects.suspect_rows(samples, data.class_names, data.sample_names)
  top = rows[0]  # Highest loss, lowest weight: the last training file.
  assert top == {
      "rank": 1, "source": f"folder {photos['train_dir']}", "split": "",
      "index": int(index[-1]),
      "file": os.path.relpath(data.arrays["train"]["path"][-1],
                              photos["train_dir"]),
      "given_label": 1, "given_class": "flower", "predicted_label": 0,
      "predicted_class": "china", "probability": "0.7500",
      "clean_class": "", "loss": "1", "weight": "0"}


def test_in_memory_report_columns():
  data = mwn_tf.data.get("digits", noise_type="uniform", noise_rate=0.4)
  train = data.arrays["train"]
  n = train["index"].size
  samples = detection.samples_from_arrays(
      {"index": train["index"], "label": train["label"],
       "clean_label": train["clean_label"], "loss": np.linspace(0, 1, n),
       "weight": np.linspace(1, 0, n)}, "t")  # An older run: no predictions.
  rows = suspects.suspect_rows(samples, data.class_names, data.sample_names)
  top = rows[0]
  assert list(top) == list(suspects.SUSPECT_COLUMNS)
  assert top["source"] == "sklearn load_digits" and top["split"] == ""
  assert top["index"] == int(train["index"][-1]) and top["file"] == ""
  assert top["given_class"] == str(train["label"][-1])
  assert top["clean_class"] == str(train["clean_label"][-1])
  assert top["predicted_label"] == top["predicted_class"] == ""
  assert top["probability"] == ""
  # The contact sheet's images are the stored pixels of those samples.
  image = data.train_images([top["index"]])[0]
  assert image.shape == (8, 8, 1)
