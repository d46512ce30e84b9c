"""The experiment runner: one gin-configurable `train_eval`.

    results = train_eval("runs/quickstart", strategy)   # settings from gin

`train_eval`'s keyword defaults are the paper's ResNet-32 noise setup
(MW-Net.py, docs/REFERENCE.md): classifier SGD 0.1, momentum 0.9, weight decay
5e-4, no Nesterov, 120 epochs with ×0.1 at epochs 80 and 100, batch 100, meta
batch 100; V = Linear(1,100)-ReLU-Linear(100,1)-sigmoid trained by Adam 1e-3
with weight decay 1e-4. One exception, on purpose: `normalize_weights="sum"`
(w / Σw, as the official WRN-28-10 and long-tail scripts) instead of
MW-Net.py's unnormalised mean, because without it V learns nothing on small
problems (see `MetaWeightModel`); the gin files of the MW-Net.py experiments
(flip noise) bind "none".

This module only composes the runner's parts: `settings` (check, schedule,
optimisers, model), `run_dir` (what model_dir holds; the writer),
`checkpointing` (what a checkpoint holds, restore, saves), `epochs` (one data
stream per epoch, the fit loop) and `monitor` (TensorBoard, history).

One run per model_dir: the chief holds `run_dir.lock` for the whole run.
SIGTERM or SIGINT stop it after the current step with a checkpoint
(`stopping`).

Resume: run the same command again. Each epoch's data stream is a pure
function of (seed, epoch), and a mid-epoch checkpoint resumes by skipping the
batches already trained on, so the resumed run sees exactly the batches of an
uninterrupted one.
"""

import functools
import inspect
import os
from typing import Optional, Sequence

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

from mwn_tf.errors import ConfigError
from mwn_tf.runner import checkpointing
from mwn_tf.runner import collapse
from mwn_tf.runner import declarations
from mwn_tf.runner import epochs as epochs_lib
from mwn_tf.runner import monitor as monitor_lib
from mwn_tf.runner import run_dir
from mwn_tf.runner import settings as settings_lib
from mwn_tf.runner import stopping
from mwn_tf.runner import strategy as strategy_lib
from mwn_tf.shared import figures
from mwn_tf.shared import samples as samples_lib


@gin.configurable("train_eval", module="mwn_tf",
                  denylist=["model_dir", "strategy", "reexport"])
def train_eval(
    model_dir: str,
    strategy: Optional[tf.distribute.Strategy] = None,
    reexport: bool = False,
    *,
    method: str = "mwn",
    dataset: str = "cifar10",
    model: str = "resnet32",
    seed: int = 0,
    # Classifier optimisation and schedule (MW-Net.py).
    epochs: int = 120,
    train_steps: Optional[int] = None,
    batch_size: int = 100,
    meta_batch_size: int = 100,
    learning_rate: float = 0.1,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 5e-4,
    lr_decay_epochs: Sequence[float] = (80, 100),
    lr_decay_steps: Optional[Sequence[int]] = None,
    lr_decay_factor: float = 0.1,
    # The weighting net V and its optimiser (MW-Net.py).
    weight_net_hidden_units: Sequence[int] = (100,),
    weight_net: str = "mlp",
    weight_net_clusters: int = 3,
    weight_net_cluster_map: Optional[Sequence[int]] = None,
    normalize_weights: str = "sum",
    meta_optimizer: str = "adam",
    meta_learning_rate: float = 1e-3,
    meta_momentum: float = 0.9,
    meta_nesterov: bool = False,
    meta_weight_decay: float = 1e-4,
    # Fast modes of the meta step (the defaults: the exact step).
    meta_interval: int = 1,
    virtual_layers: Optional[int] = None,
    hypergradient: str = "second_order",
    fd_epsilon: float = 0.01,
    exact_warmup_steps: int = 0,
    fast_mode: str = "off",
    # Engineering.
    jit_compile="auto",
    steps_per_execution: int = 1,
    deterministic: bool = False,
    eval_batch_size: int = 500,
    eval_every_n_epochs: int = 1,
    checkpoint_every_n_steps: int = 1000,
    max_checkpoints_to_keep: int = 3,
    summary_every_n_steps: int = 100,
    sample_every_n_epochs: int = 10,
    curve_max_loss: float = 10.0,
    export: bool = True,
    verbose="auto",
    progress_every_n_seconds: float = 60.0,
    # Multi-worker: the entry point's strategy (runner/strategy.py).
    collective_timeout_s: Optional[float] = 600.0,
    # The guard against collapsed sample weights (runner/collapse.py).
    collapse_ess_threshold: float = 0.35,
    collapse_window_steps: int = 50,
    on_weight_collapse: str = "warn") -> dict:
  """Trains a classifier with Meta-Weight-Net (or the baseline) and evaluates.

  Resumes from the newest checkpoint in `model_dir` if there is one. A run
  that already finished is not trained or exported again: the results of
  its results.json come back, with `already_finished` True (raise `epochs`
  or `train_steps` to train longer; `reexport` writes the final files and
  exports again).

  Args:
    model_dir: output folder (see the module docstring); created if needed.
    strategy: a `tf.distribute.Strategy` (None: the default strategy). The
      model, optimizers, metrics and the checkpoint restore are created in
      its scope; batch sizes are GLOBAL.
    reexport: if the run already finished, write its final files and
      exports again (`python -m mwn_tf.main --reexport`).
    The keyword arguments: the settings, each declared once (type,
      default, accepted values, meaning) in `runner.declarations`, which
      `--help` lists; the defaults here are the paper's and equal those
      declared (tests/runner/test_declarations.py).

  Returns:
    The results dict also written to `model_dir/results.json`.

  Raises:
    ConfigError: invalid setting (every argument is checked by
      `check_settings` before anything is loaded or written), or model_dir
      holds another experiment, or another run holds model_dir's lock.
    checkpointing.NonFiniteError: a loss or parameter became NaN/Inf.
    stopping.Stopped: SIGTERM or SIGINT arrived; a checkpoint of the step
      it stopped at was written.
    run_dir.WriteError: a write into model_dir failed (disk full, ...).
    strategy_lib.PeerLost: multi-worker: another worker died or hung.
  """
  # Settings: every argument, as passed (and the old spellings of the fast
  # modes, `MetaWeightModel.meta_interval`), before anything is loaded or
  # written.
  settings = settings_lib.with_constructor_bindings(dict(locals()))
  settings_lib.check_settings(settings)
  strategy = strategy or tf.distribute.get_strategy()
  if deterministic:
    tf.config.experimental.enable_op_determinism()
  keras.utils.set_random_seed(int(seed))
  splits = settings_lib.load_data(dataset, seed)
  settings_lib.check_meta_batch(splits, dataset=dataset,
                                meta_batch_size=meta_batch_size)
  plan = settings_lib.plan_steps(
      splits, dataset=dataset, epochs=epochs, train_steps=train_steps,
      batch_size=batch_size, lr_decay_epochs=lr_decay_epochs,
      lr_decay_steps=lr_decay_steps)
  # Model, optimizers and metrics, in the strategy's scope: before model_dir
  # is created, so a rejected model setting leaves no folder behind either.
  state = checkpointing.RunState()
  clusters = settings_lib.class_clusters(splits, settings)  # class_aware V
  with strategy.scope():
    meta_model, constant_lr = _build(splits, plan, settings, clusters)

  # Said here, not by the entry point: a run refused above never creates it.
  logging.info("model_dir: %s", model_dir)
  # The run's folder and its writer. The chief holds the folder's lock for
  # the whole run, from before the clean-up of what killed writes left; a
  # SIGTERM/SIGINT from here on stops after a step, with a checkpoint.
  tf.io.gfile.makedirs(model_dir)
  out = run_dir.Writer(model_dir, method, strategy)
  with run_dir.lock(model_dir, take=out.chief), stopping.SignalStop(
      strategy) as signals:
    if out.chief:
      run_dir.remove_unfinished_writes(model_dir, out.exports.values())
    try:
      return _run(model_dir, strategy, splits, plan, out, signals, settings,
                  meta_model, constant_lr, state, clusters)
    except (OSError, tf.errors.OpError) as e:
      # Disk full and the like, from any writer (checkpoints, summaries,
      # results, exports): one line, and the last checkpoint stays. Under
      # multi-worker, a dead or hung worker fails the others' collectives.
      error = (strategy_lib.peer_lost(e, strategy, collective_timeout_s) or
               run_dir.write_error(e, model_dir))
      if error is None:
        raise
      raise error from e


def _run(model_dir: str, strategy, splits, plan: settings_lib.StepPlan,
         out: run_dir.Writer, signals: stopping.SignalStop, s: dict,
         meta_model, constant_lr: bool, state, clusters) -> dict:
  """`train_eval` once the data is loaded, the model built and model_dir
  locked: restore, train, evaluate, write; returns the results
  (`clusters`: a class-aware V's, `settings.class_clusters`)."""
  method, export = s["method"], s["export"]
  # The restore, in the strategy's scope.
  with strategy.scope():
    checkpoint = checkpointing.make_checkpoint(meta_model, state)
    manager, restored = checkpointing.restore(
        checkpoint, model_dir, out.save_dir, s["max_checkpoints_to_keep"],
        legacy=checkpointing.make_checkpoint(meta_model, state, legacy=True))
    if restored:
      # A constant learning rate lives in an optimizer variable and was just
      # overwritten by the checkpoint's; the config decides, as for the rest.
      if constant_lr:
        meta_model.optimizer.learning_rate = float(s["learning_rate"])
      if method == "mwn":
        meta_model.meta_optimizer.learning_rate = float(
            s["meta_learning_rate"])

  # Where to continue: epochs done and classifier steps come from the
  # checkpoint; the data stream of each epoch is a function of (seed, epoch).
  checkpointing.check_same_experiment(
      state, restored, checkpointing.fingerprint(splits, s["batch_size"]),
      model_dir)
  step = int(meta_model.optimizer.iterations.numpy())
  state.start_session(step)
  _check_not_shorter(state, step, plan, restored, s["train_steps"])
  if restored and step >= plan.total_steps and not s["reexport"]:
    previous = _finished_results(model_dir, export)
    if previous is not None:
      return previous
  start_epoch, skip, mid_epoch = _resume_point(state, step, plan,
                                               restored)

  # Summaries and results.
  if out.chief:
    # Drop from TensorBoard what a killed session logged after `step`.
    monitor_lib.mark_session_start(model_dir, step + 1 if restored else 0)
  writer = (tf.summary.create_file_writer(model_dir) if out.chief
            else tf.summary.create_noop_writer())
  data_summary = splits.summary(include_matrix=False)
  hparams = monitor_lib.hparams(s, data_summary, plan.total_steps)
  if not restored:
    monitor_lib.write_run_header(writer, hparams, data_summary,
                                 run_dir.trial_id(model_dir))
  guard = _guard(s, manager, restored, model_dir)
  results = functools.partial(
      _results, out, meta_model, state, plan, export, guard, {
          "method": method, "dataset": s["dataset"], "model": s["model"],
          "seed": int(s["seed"]),
          "realised_noise_rate": data_summary["realised_noise_rate"],
          "realised_noise_rate_measured_on":
              data_summary["realised_noise_rate_measured_on"]}, {
              "data": data_summary, "hparams": hparams,
              "settings": declarations.resolved(s),
              "class_clusters": clusters})

  def write_operative_config():
    text = gin.operative_config_str()
    out.write_operative_config(text)
    monitor_lib.operative_config_summary(
        writer, text, int(meta_model.optimizer.iterations.numpy()))

  console = monitor_lib.Console(
      monitor_lib.console_mode(s["verbose"]), plan.steps_per_epoch,
      plan.total_steps, plan.num_epochs, s["progress_every_n_seconds"])
  sample_models = samples_lib.KerasModels(meta_model)
  sample_pass = lambda data: samples_lib.sample_pass(sample_models, data,
                                                     strategy)
  sample_data = lambda: splits.train_for_eval(s["eval_batch_size"], strategy)
  monitor = monitor_lib.TrainingMonitor(
      writer=writer, state=state, sample_pass=sample_pass,
      sample_data=sample_data, total_epochs=plan.num_epochs,
      summary_every_n_steps=s["summary_every_n_steps"],
      sample_every_n_epochs=s["sample_every_n_epochs"],
      curve_max_loss=s["curve_max_loss"],
      write_operative_config=write_operative_config,
      on_epoch_recorded=lambda: results(False), console=console,
      caption=figures.caption(s["dataset"], data_summary.get("noise_type"),
                              data_summary.get("noise_rate")))

  # The loop.
  try:
    epochs_lib.train_epochs(
        meta_model, splits, start_epoch=start_epoch, skip=skip,
        num_epochs=plan.num_epochs, steps_per_epoch=plan.steps_per_epoch,
        total_steps=plan.total_steps, batch_size=s["batch_size"],
        meta_batch_size=s["meta_batch_size"], strategy=strategy,
        test_data=splits.test(s["eval_batch_size"], strategy),
        eval_every_n_epochs=s["eval_every_n_epochs"],
        callbacks=_callbacks(meta_model, state, manager, monitor, plan,
                             s["checkpoint_every_n_steps"], signals,
                             mid_epoch=mid_epoch, console=console,
                             guard=guard),
        # `console` shows the progress and the epoch lines, not Keras.
        verbose=0)
    stop = signals.requested()
    if stop:
      # Trained to the end (its checkpoint is written); the final files are
      # left to the rerun.
      raise stopping.Stopped(stop, int(meta_model.optimizer.iterations.numpy()))
  except checkpointing.NonFiniteError as e:
    writer.flush()
    results(False, error=str(e))
    raise
  except stopping.Stopped:
    writer.flush()
    raise
  except collapse.WeightCollapse as e:
    writer.flush()
    results(False, error=str(e))
    raise

  # Final files: what the final model does on the training split.
  if monitor.last_samples and monitor.last_samples[0] == plan.num_epochs:
    samples = monitor.last_samples[1]
  else:
    samples = sample_pass(sample_data())
  monitor.set_model(meta_model)
  out.write_final(samples, monitor.curve() if method == "mwn" else None,
                  meta_model if export else None, splits)
  writer.flush()
  final = results(True, extra=_final_weights(samples))
  out.cleanup()
  return final


def bound_settings() -> dict:
  """`train_eval`'s keyword arguments as gin will pass them: the defaults,
  overridden by the current bindings (so a CLI can check them before it
  creates model_dir or starts devices); raises `ConfigError` on a binding
  of a constructor argument that a setting sets
  (`settings.with_constructor_bindings`)."""
  params = inspect.signature(train_eval.__wrapped__).parameters
  settings = {name: p.default for name, p in params.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY}
  settings.update(gin.get_bindings(train_eval))
  return settings_lib.with_constructor_bindings(settings)


def _guard(s: dict, manager, restored, model_dir: str):
  """The weight-collapse guard of settings `s` (MW-Net only, else None);
  a resumed run keeps the collapse its results.json recorded."""
  if s["method"] != "mwn" or not s["collapse_ess_threshold"]:
    return None

  def checkpoint_now(step: int):
    if manager.latest_checkpoint != os.path.join(manager.directory,
                                                 f"ckpt-{step}"):
      manager.save(checkpoint_number=step)

  guard = collapse.CollapseGuard(
      s["collapse_ess_threshold"], s["collapse_window_steps"],
      s["on_weight_collapse"], checkpoint_now)
  if restored:
    try:
      guard.restore(run_dir.read_results(model_dir).get("weight_collapse"))
    except (OSError, ValueError):
      pass  # no readable results.json: nothing was recorded
  return guard


def _callbacks(meta_model, state, manager, monitor, plan, every_n_steps: int,
               signals: stopping.SignalStop, mid_epoch: bool, console,
               guard=None) -> list:
  """NaN guard, monitor, checkpointer: in this order, so a bad step is never
  recorded or saved, and a stop on a signal saves what was recorded; then
  the weight-collapse guard (a stop reuses the checkpointer's save) and the
  console's progress."""
  items = meta_model.checkpoint_items()
  metric_variables = items["metrics"] + items["ess_metric"]
  return [
      checkpointing.NonFiniteGuard(
          lambda: checkpointing.describe_checkpoint(manager),
          plan.steps_per_epoch),
      monitor,
      checkpointing.Checkpointer(
          manager, meta_model.classifier.variables +
          meta_model.weight_net.variables, state, every_n_steps,
          metric_variables,
          # Mid-epoch: the epoch's running means continue from the checkpoint.
          [np.asarray(v) for v in metric_variables] if mid_epoch else None,
          signals.requested)] + ([guard] if guard else []) + [console]


def _finished_results(model_dir: str, export: bool) -> Optional[dict]:
  """The results of a run that already finished (None if its results.json
  is missing or not final, or its exports are: then the end is redone)."""
  try:
    previous = run_dir.read_results(model_dir)
  except (OSError, ValueError):
    return None
  exports = previous.get("exports") or {}
  exported = bool(exports) and all(tf.io.gfile.exists(p)
                                   for p in exports.values())
  if not previous.get("finished") or (export and not exported):
    return None
  # The caller says so (main: "already finished: ..."); absl -v 1 here.
  logging.debug("%s already finished: %d steps.", model_dir,
                previous["steps"])
  return {**previous, "already_finished": True}


def _build(splits, plan: settings_lib.StepPlan, s: dict, clusters=None):
  """The compiled `MetaWeightModel` of settings `s` (a class-aware V on
  `clusters`), and whether its classifier learning rate is constant (no
  decay boundaries)."""
  meta_model = settings_lib.build_model(splits, s, clusters)
  schedule = settings_lib.lr_schedule(s["learning_rate"], plan.boundaries,
                                      s["lr_decay_factor"])
  meta_model.compile(
      optimizer=settings_lib.make_optimizer("sgd", schedule, s["momentum"],
                                            s["nesterov"]),
      meta_optimizer=settings_lib.make_optimizer(
          s["meta_optimizer"], s["meta_learning_rate"], s["meta_momentum"],
          s["meta_nesterov"]),
      jit_compile=s["jit_compile"],
      steps_per_execution=s["steps_per_execution"])
  constant = not isinstance(schedule,
                            keras.optimizers.schedules.LearningRateSchedule)
  return meta_model, constant


def _check_not_shorter(state, step: int, plan: settings_lib.StepPlan,
                       restored: Optional[str], train_steps: Optional[int]):
  """Refuses a run shorter than what the restored one has already done."""
  start_epoch = int(state.epochs_done.numpy())
  if not restored or (start_epoch <= plan.num_epochs and
                      step <= plan.total_steps):
    return
  folder = os.path.dirname(os.path.dirname(restored))
  if train_steps:
    raise ConfigError(
        f"the run in {folder} has done {step} steps ({start_epoch} epochs), "
        f"more than train_eval.train_steps = {train_steps}; bind "
        f"train_eval.train_steps >= {step} to continue it, or use another "
        f"--model_dir.")
  raise ConfigError(
      f"the run in {folder} has {start_epoch} epochs done (step {step}), more "
      f"than train_eval.epochs = {plan.num_epochs}; bind train_eval.epochs >= "
      f"{start_epoch} to continue it, or use another --model_dir.")


def _resume_point(state, step: int, plan: settings_lib.StepPlan,
                  restored: Optional[str]):
  """(first epoch to train, its steps already done, whether the metrics'
  running means continue from the checkpoint) of a restored run."""
  start_epoch = int(state.epochs_done.numpy())
  continued = restored and step < min(start_epoch * plan.steps_per_epoch,
                                      plan.total_steps)
  if continued:
    # A finished run whose last epoch was cut short (train_steps), rerun
    # with more steps: that epoch continues, and is recorded again at its
    # new end. Its checkpoint was written after the test evaluation, which
    # reused the metrics: the epoch's train and meta running means restart
    # here (they cover the steps of this session only).
    state.drop_last_epoch()
    start_epoch = int(state.epochs_done.numpy())
  # The last epoch may be partial (train_steps), so cap at total_steps.
  skip = step - min(start_epoch * plan.steps_per_epoch, plan.total_steps)
  if not 0 <= skip < plan.steps_per_epoch:
    raise ConfigError(f"{restored} is at step {step} with {start_epoch} "
                      f"epochs done, which does not fit {plan.steps_per_epoch}"
                      f" steps per epoch; use another --model_dir.")
  if restored:
    logging.info("Resuming from %s: epoch %d, step %d (%d steps into the "
                 "epoch).", restored, start_epoch + 1, step, skip)
  return start_epoch, skip, skip > 0 and not continued


def summarize(history: list) -> dict:
  """Final-epoch and best-epoch test accuracy of a history."""
  accs = [h["test"]["accuracy"] for h in history]
  valid = [(a, i) for i, a in enumerate(accs) if a is not None]
  if not valid:
    return {"final_epoch_test_accuracy": None,
            "best_epoch_test_accuracy": None, "best_epoch": None}
  best_acc, best_i = max(valid, key=lambda t: (t[0], -t[1]))
  return {"final_epoch_test_accuracy": accs[-1],
          "best_epoch_test_accuracy": best_acc,
          "best_epoch": history[best_i]["epoch"]}


def _results(out: run_dir.Writer, meta_model, state, plan, export: bool,
             guard, head: dict, tail: dict, finished: bool,
             error: Optional[str] = None, extra: Optional[dict] = None):
  """Writes (on the chief) and returns the run's results.json content."""
  history = state.history
  return out.write_results({
      **head, **summarize(history),
      "final_epoch_test_loss": (history[-1]["test"]["loss"] if history
                                else None),
      "epochs": plan.num_epochs, "epochs_done": int(state.epochs_done.numpy()),
      "steps": int(meta_model.optimizer.iterations.numpy()),
      "total_steps": plan.total_steps,
      "steps_per_epoch": plan.steps_per_epoch,
      "wall_time_s": round(state.elapsed(), 3), "finished": finished,
      # What this process ran (a resumed run's earlier sessions excluded).
      "session": {"steps": int(meta_model.optimizer.iterations.numpy()) -
                              state.session_first_step,
                  "wall_time_s": round(state.session_elapsed(), 3)},
      "error": error, "model_dir": out.model_dir, "files": out.files,
      "exports": out.exports if finished and export else {},
      **(guard.results() if guard else {}),
      **tail, **(extra or {}), "history": history})


def _final_weights(samples: dict) -> dict:
  """Mean final weight of the clean and of the corrupted training samples."""
  noisy = samples["is_noisy"].astype(bool)
  mean = lambda mask: (float(np.mean(samples["weight"][mask])) if mask.any()
                       else None)
  return {"final_sample_weight_clean": mean(~noisy),
          "final_sample_weight_noisy": mean(noisy)}
