"""A person's review of the training labels, read back into a loader.

`python -m mwn_tf.analyze` writes `review.csv`: the most distrusted training
samples, one row each, with an `action` column prefilled `keep`. The user
edits `action` to

  keep                   train on the sample as labelled (the default)
  exclude                leave the sample out of training
  relabel:<class name>   train on it with this class instead

and binds the file to the loader (`folder.review_file`, `npz.review_file`);
the next run trains without (or with corrected) those samples. Only the
training split changes: the meta and test sets are never touched. Rows name
their sample by `file` (a folder: the path relative to train_dir) or by
`index` (an .npz: the position in x_train); other columns are ignored, and
samples without a row are kept.

Every row is checked before anything is trained or written: a bad action,
an unknown class name or a sample that is not in the training split is one
`ValueError` line naming the binding and the row.
"""

import csv
import dataclasses
import os
from typing import Sequence

import numpy as np

ACTIONS = ("keep", "exclude", "relabel:<class name>")
EXCLUDE = -1  # `Review.actions` value of an excluded sample.


@dataclasses.dataclass(frozen=True)
class Review:
  """The edited rows of a review file.

  Attributes:
    path: the file.
    binding: the gin binding that named it (for messages).
    actions: sample key (`file` str or `index` int) -> `EXCLUDE` or the new
      class; `keep` rows are left out.
    rows: key -> the row's line number in the file (for messages).
  """
  path: str
  binding: str
  actions: dict
  rows: dict

  def apply(self, keys: Sequence, labels: np.ndarray):
    """The training split after the review.

    Args:
      keys: `[n]` the training samples' keys (`file` or `index`), in order.
      labels: `[n]` int their labels.

    Returns:
      (`[n]` bool kept, `[n]` labels with the relabellings; same dtype).

    Raises:
      ValueError: a reviewed sample is not in the training split.
    """
    where = {k: i for i, k in enumerate(keys)}
    unknown = [k for k in self.actions if k not in where]
    if unknown:
      key = unknown[0]
      what = "file" if isinstance(key, str) else "index"
      raise ValueError(
          f"{self.binding} = {self.path!r}: line {self.rows[key]} names "
          f"{what} {key!r}, which is not in the training split (meta and "
          f"test samples cannot be reviewed; {len(unknown)} such row(s)); "
          "fix or delete the row, or write the file again with "
          "`python -m mwn_tf.analyze` from a run on this data.")
    keep = np.ones(len(where), bool)
    labels = np.array(labels, copy=True)
    for key, action in self.actions.items():
      if action == EXCLUDE:
        keep[where[key]] = False
      else:
        labels[where[key]] = action
    return keep, labels

  def summary(self, keep: np.ndarray, before: np.ndarray,
              after: np.ndarray) -> dict:
    """What the review changed, for the run's data summary."""
    return {"file": self.path, "excluded": int((~keep).sum()),
            "relabelled": int((keep & (before != after)).sum())}


def read(path: str, binding: str, class_names: Sequence[str],
         key: str) -> Review:
  """Reads and checks a review file.

  Args:
    path: the CSV file (columns `action` and `key`; others ignored).
    binding: the gin binding that named it, e.g. "folder.review_file".
    class_names: `[K]` the dataset's class names (relabel targets).
    key: "file" or "index": the column that names a sample.

  Returns:
    `Review`.

  Raises:
    ValueError: one line naming `binding`, the row and the fix.
  """
  def fail(message):
    raise ValueError(f"{binding} = {path!r}: {message}")

  if not os.path.isfile(path):
    fail("no such file; bind it to the review.csv that `python -m "
         "mwn_tf.analyze` wrote (edited), or to None.")
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  header = list(rows[0]) if rows else []
  if rows and ("action" not in header or key not in header):
    fail(f"needs the columns {key!r} and 'action'; it has "
         f"{', '.join(header)}.")
  names = {str(n): c for c, n in enumerate(class_names)}
  actions, lines = {}, {}
  for line, row in enumerate(rows, start=2):
    raw_key, action = (row.get(key) or "").strip(), (
        row.get("action") or "").strip()
    if not raw_key:
      fail(f"line {line} has no {key!r}.")
    if key == "index":
      try:
        sample = int(raw_key)
      except ValueError:
        fail(f"line {line}: index {raw_key!r} is not an integer.")
    else:
      sample = os.path.normpath(raw_key)
    if sample in lines:
      fail(f"lines {lines[sample]} and {line} both review {key} {raw_key!r}; "
           "keep one.")
    lines[sample] = line
    if action in ("", "keep"):
      continue
    if action == "exclude":
      actions[sample] = EXCLUDE
    elif action.startswith("relabel:"):
      target = action[len("relabel:"):].strip()
      if target not in names:
        fail(f"line {line}: {action!r} names no class; the classes are "
             f"{', '.join(map(str, class_names))}.")
      actions[sample] = names[target]
    else:
      fail(f"line {line}: action {action!r} is not one of "
           f"{', '.join(ACTIONS)}.")
  return Review(path=os.fspath(path), binding=binding, actions=actions,
                rows={k: lines[k] for k in actions})
