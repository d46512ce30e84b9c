r"""Step-time benchmark of MW-Net's modes against the plain step.

The command line of `mwn_tf.benchmark` (one module per task: step_time,
accuracy, passes, convs; the modes in modes.py).

  python -m mwn_tf.bench --model=resnet32 --batch_size=100 \
      --modes=plain,exact,interval10,last1 --out=bench.md

Every mode is timed in ONE process, through the real `fit()` train function
(`model.make_train_function()` then `model.train_function(iterator)`, exactly
what `fit()` calls each step), after a warm-up that traces and compiles it.
The modes are interleaved step by step (plain, mode A, mode B, plain, ...),
so machine load hits them alike; each round is a few steps of every mode, the
ratio to the plain step is taken within each round, and the median and the
range over rounds are reported. Inputs are synthetic (random images and
labels, one constant batch), so the input pipeline is not timed.

A mode is "+"-joined tokens (mwn_tf/benchmark/modes.py):
{modes}
Columns: median over rounds of the mean ms per step, and its range; × plain
(the per-round ratio: median and range); train examples per second; peak
memory of a step in MiB: the TF allocator's peak during the mode's steps
minus what was allocated before them (so the variables of every model built
here are not counted), on the CPU as on a GPU or TPU. The process's peak RSS
is in the header.

On a GPU it runs as is; `--strategy=mirrored` or `--strategy=tpu --tpu=...`
builds the models in that strategy's scope (the batch is then global).

`--task=accuracy` instead runs the offline quickstart (gin/quickstart.gin:
digits, 40% uniform noise, an MLP) through the runner once per mode and seed
and reports the final-epoch test accuracy (mean ± sd over seeds):

  python -m mwn_tf.bench --task=accuracy --modes=plain,exact,last1+interval2

`--task=passes` times the exact step's passes one at a time, through the
methods `MetaWeightModel.train_step` calls (see
`mwn_tf.benchmark.passes.pass_breakdown`), to show where its time goes:

  python -m mwn_tf.bench --task=passes --rounds=8

`--task=detection` scores label-noise detectors on one setting and seed:
cleanlab on K-fold out-of-sample probabilities of short plain trainings
against the finished MW-Net run's final weights and losses and the
baseline run's losses (`mwn_tf.benchmark.detection`):

  python -m mwn_tf.bench --task=detection \
      --gin_file=gin/fashion_mnist_uniform_60.gin --seed=0 \
      --mwn_run=RUN --baseline_run=RUN --output=detection.json

(`--over_training` adds the runs' signals at each kept checkpoint: their
mean over training and the loss at the epoch best on the meta set.)

`--task=convs` times, kernel by kernel, the convolutions that a plain and an
exact step must run (see `mwn_tf.benchmark.convs.conv_floor`): the exact step's floor if everything
else were free.

  python -m mwn_tf.bench --task=convs
"""


import sys

from mwn_tf.benchmark import modes as _modes

# --help prints this docstring: the token table is the modes module's own.
__doc__ = __doc__.replace("{modes}", _modes.TOKENS_HELP)


# -------------------------------------------------------------------- main --
def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  from mwn_tf import console  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  # As `mwn_tf.main`: no TensorFlow start-up lines unless -v. Building one
  # model per mode retraces Keras' step function once each, which TF
  # reports as excessive retracing; it is expected here.
  console.start_tensorflow(console.loud(f))
  command = "python -m mwn_tf.bench " + " ".join(sys.argv[1:])
  if f.task == "accuracy" and not f["model"].present:
    f.model = "mlp"
  if f.task == "detection":
    _detection(f, command)
    return
  if f.gin_param:
    import gin  # pylint: disable=g-import-not-at-top
    import mwn_tf.models  # pylint: disable=g-import-not-at-top,unused-import
    # The registry's builders are gin configurables: e.g. the Fashion-MNIST
    # results model is fmnist_cnn.filters=(32,64), hidden_units=(128,).
    try:
      gin.parse_config(f.gin_param)
    except Exception as e:  # pylint: disable=broad-except
      # Parsing runs no user code: every exception is a binding problem.
      sys.stderr.write(f"mwn_tf.bench: error: --gin_param: "
                       f"{str(e).splitlines()[0]}\n")
      sys.exit(2)
  if f.task == "speed":
    from mwn_tf.runner.strategy import get_strategy  # pylint: disable=g-import-not-at-top
    from mwn_tf.benchmark import step_time  # pylint: disable=g-import-not-at-top
    shape = tuple(int(s) for s in f.input_shape.split(","))
    results = step_time.run(f.modes, model=f.model, batch_size=f.batch_size,
                  input_shape=shape, num_classes=f.num_classes,
                  rounds=f.rounds, steps=f.steps, warmup=f.warmup,
                  strategy=get_strategy(f.strategy, f.tpu))
    text = step_time.to_markdown(results, command=command, model=f.model,
                       batch_size=f.batch_size, input_shape=shape,
                       rounds=f.rounds, steps=results[0].steps // f.rounds)
  elif f.task == "passes":
    from mwn_tf.benchmark import passes  # pylint: disable=g-import-not-at-top
    shape = tuple(int(s) for s in f.input_shape.split(","))
    results = passes.pass_breakdown(f.model, f.batch_size, shape, f.num_classes,
                             rounds=f.rounds, warmup=f.warmup)
    text = passes.passes_markdown(results, command=command)
  elif f.task == "convs":
    from mwn_tf.benchmark import convs  # pylint: disable=g-import-not-at-top
    shape = tuple(int(s) for s in f.input_shape.split(","))
    floor = convs.conv_floor(f.model, f.batch_size, shape, f.num_classes,
                       rounds=f.rounds)
    text = convs.conv_floor_markdown(floor, command=command)
  else:
    from mwn_tf.benchmark import accuracy  # pylint: disable=g-import-not-at-top
    results = accuracy.quickstart_accuracy(
        f.modes, [int(s) for s in f.seeds], gin_file=f.gin_file,
        model=f.model, work_dir=f.work_dir)
    text = accuracy.accuracy_markdown(results, command=command, model=f.model)
  print(text)
  if f.out:
    with open(f.out, "w") as out:
      out.write(text)


def _detection(f, command: str) -> None:
  """--task=detection: prints the table; --output writes JSON, .md and the
  out-of-sample probabilities. Bad input: one line, exit 2, nothing
  written."""
  from mwn_tf.benchmark import detection  # pylint: disable=g-import-not-at-top
  from mwn_tf.errors import ConfigError  # pylint: disable=g-import-not-at-top
  try:
    result = detection.run(f.gin_file, f.gin_param, seed=f.seed,
                           folds=f.folds, fold_epochs=f.fold_epochs,
                           mwn_run=f.mwn_run, baseline_run=f.baseline_run,
                           over_training=f.over_training)
  except ConfigError as e:
    sys.stderr.write(f"mwn_tf.bench: error: {str(e).splitlines()[0]}\n")
    sys.exit(2)
  text = detection.to_markdown(result, command)
  print(text)
  if f.output:
    paths = detection.write(result, f.output, text)
    print("Wrote " + ", ".join(paths.values()))
  if f.out:
    with open(f.out, "w") as out:
      out.write(text)


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_enum("task", "speed", ["speed", "passes", "convs", "accuracy",
                                      "detection"],
                    "speed: time the steps; passes: the exact step's passes "
                    "one at a time; convs: the convolutions a plain and an "
                    "exact step must run, timed alone; accuracy: run the "
                    "quickstart; detection: label-noise detectors (cleanlab "
                    "vs MW-Net's weights and losses) on one setting.")
  flags.DEFINE_string("model", "resnet32", "Classifier registry name.")
  flags.DEFINE_integer("batch_size", 100, "Train batch size.")
  flags.DEFINE_string("input_shape", "32,32,3", "Synthetic image shape.")
  flags.DEFINE_integer("num_classes", 10, "Classes.")
  flags.DEFINE_list("modes", ["plain", "exact"], "Mode strings; see --help.")
  flags.DEFINE_integer("steps", None, "Steps of each mode per round (default: "
                       "lcm of the meta intervals, at least 4).")
  flags.DEFINE_integer("rounds", 5, "Timed rounds.")
  flags.DEFINE_integer("warmup", 2, "Untimed steps per mode first.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "accuracy: seeds.")
  flags.DEFINE_string("gin_file", "gin/quickstart.gin", "accuracy: config; "
                      "detection: the setting the runs trained on.")
  flags.DEFINE_integer("seed", 0, "detection: train_eval.seed of the runs "
                       "(the noisy labels) and of the folds.")
  flags.DEFINE_integer("folds", 4, "detection: K of the K-fold out-of-sample "
                       "probabilities for cleanlab (0: skip cleanlab).",
                       lower_bound=0)
  flags.DEFINE_integer("fold_epochs", 4, "detection: epochs of each fold's "
                       "plain training at the recipe's rate; short, so a "
                       "fold stops before it memorises the noisy labels "
                       "(see mwn_tf/benchmark/detection.py).", lower_bound=1)
  flags.DEFINE_string("mwn_run", None, "detection: a finished MW-Net run "
                      "(model_dir) of the same setting and seed.")
  flags.DEFINE_string("baseline_run", None, "detection: a finished baseline "
                      "run (model_dir) of the same setting and seed.")
  flags.DEFINE_bool("over_training", False, "detection: also score every "
                    "checkpoint the runs kept (train them with "
                    "train_eval.max_checkpoints_to_keep >= their epochs): "
                    "loss and weight averaged over training, the loss at "
                    "the epoch most accurate on the meta set, per-epoch "
                    "AUROC.")
  flags.DEFINE_string("output", None, "detection: write the JSON here, the "
                      "markdown table next to it (.md) and the out-of-sample "
                      "probabilities (_pred_probs.npz).")
  flags.DEFINE_string("work_dir", None, "accuracy: keep the runs' model dirs "
                      "here (default: a temporary folder, deleted).")
  flags.DEFINE_multi_string("gin_param", [], "Gin bindings applied before the "
                            "models are built, e.g. "
                            "'fmnist_cnn.hidden_units = (128,)'.")
  flags.DEFINE_string("out", None, "Also write the markdown here.")
  flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "tpu"],
                    "speed: build the models in this strategy's scope.")
  flags.DEFINE_string("tpu", None, "speed: TPU name or address for "
                      "--strategy=tpu.")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
