"""The error a user fixes by changing a setting: `ConfigError`.

A module of its own, importing nothing, so that whoever refuses a setting or
a model_dir (the settings' check, the run lock, a checkpoint of another
experiment) and whoever reads a run back (`runner.run_dir`,
`launch/collect_results.py`) can name it without loading TensorFlow or the
data, model and meta-model stack.
"""


class ConfigError(ValueError):
  """A setting is invalid or inconsistent with model_dir; one-line message
  naming the binding (or flag) to change. The entry point exits 2 on it."""
