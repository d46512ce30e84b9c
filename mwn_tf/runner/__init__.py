"""The experiment runner: everything around `MetaWeightModel` that makes a run.

  train_eval     `train_eval`, the gin-configurable composition of the rest
  settings       ConfigError, the rules and check of every setting, the
                 schedule, optimiser and model factories, default model_dir
  run_dir        the model_dir contract: file names, writer, readers, who is
                 chief, clean-up of killed writes, the run lock, write errors
  checkpointing  what a checkpoint holds, restore, RunState, saves, NaN guard
  epochs         one deterministic data stream per epoch, the fit loop
  monitor        TensorBoard summaries, figures and the per-epoch history
  export         atomic SavedModel exports and atomic file writes
  strategy       `--strategy` / `--tpu` -> a `tf.distribute.Strategy`
  stopping       SIGTERM / SIGINT -> finish the step, checkpoint, stop
  exit_codes     the entry point's exit statuses and their meanings

`python -m mwn_tf.main` is the entry point; `mwn_tf.runner.train_eval` is not
imported here, so the submodule and the function of that name stay apart.
"""
