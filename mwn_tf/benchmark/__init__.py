"""Benchmarks of the MW-Net step (`python -m mwn_tf.bench`), one task each.

  modes       the mode strings ("exact", "last1+interval2", ...).
  step_time   ms/step of each mode against the plain step, through the real
              `fit()` train function.
  accuracy    final test accuracy of each mode on the offline quickstart,
              through the runner.
  passes      the exact step's passes added one at a time, composed of the
              methods `MetaWeightModel.train_step` calls.
  convs       the convolutions a plain and an exact step must run, alone.

Not imported by `mwn_tf`: the library does not depend on its benchmarks.
"""
