"""The experiment runner: everything around `MetaWeightModel` that makes a run.

  train_eval     `train_eval`, the gin-configurable composition of the rest
  declarations   every setting declared once: type, default, check, help;
                 what --help, hparams and results.json list (no TensorFlow)
  settings       the check of the settings, the schedule, optimiser and
                 model factories, default model_dir
  run_dir        the model_dir contract: file names, atomic file writes,
                 writer, readers, who is chief, clean-up of killed writes,
                 the run lock, write errors
  checkpointing  what a checkpoint holds, restore, RunState, saves, NaN guard
  epochs         one deterministic data stream per epoch, the fit loop
  monitor        TensorBoard summaries, figures and the per-epoch history
  export         atomic SavedModel exports
  strategy       `--strategy` / `--tpu` -> a `tf.distribute.Strategy`
  stopping       SIGTERM / SIGINT -> finish the step, checkpoint, stop
  exit_codes     the entry point's exit statuses and their meanings
  usage          the entry point's --help text (no TensorFlow)

It sits above the model stack (data, models, weight_net, meta_model) and
`mwn_tf.shared` (the per-sample pass, the figures), below the analysis and
the entry points; `ConfigError` is in `mwn_tf.errors`.

`python -m mwn_tf.main` is the entry point; `mwn_tf.runner.train_eval` is not
imported here, so the submodule and the function of that name stay apart.
"""
