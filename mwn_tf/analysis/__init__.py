"""The analysis of trained runs (`python -m mwn_tf.analyze`).

It sits above the runner: it reads model_dir through `runner.run_dir` and
restores checkpoints through `runner.checkpointing`; the per-sample pass and
the figures it shares with the runner are in `mwn_tf.shared`, below both.

  detection   the per-sample table, its ranking, the detection metrics.
  sources     a run read back: its files, settings, and models from its
              exports or its newest checkpoint.
  report      the analysis of a run or of new data, and the ablation.
"""
