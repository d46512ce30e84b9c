"""The analysis of trained runs (`python -m mwn_tf.analyze`).

  samples     the one per-sample loss -> weight pass (also the runner's).
  detection   the per-sample table, its ranking, the detection metrics.
  sources     a run read back: its files, settings, and models from its
              exports or its newest checkpoint.
  figures     the paper's figures, built once, saved as PNG files or
              written as TensorBoard images (also the runner's).
  report      the analysis of a run or of new data, and the ablation.
"""
