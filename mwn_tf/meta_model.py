"""The Meta-Weight-Net training step as a Keras 3 model.

Shu et al., NeurIPS 2019, Algorithm 1. Each step on a train batch (x, y) of
size n and a clean meta batch (x', y') of size m:

  1. Virtual step (eq. 3):  θ̂(Θ) = θ − α_t ∇θ Σ_i c_i(Θ) L_i(θ),
       c_i = V(L_i; Θ) / n          (normalize_weights="none", MW-Net.py)
       c_i = V(L_i; Θ) / Σ_j V(L_j)  (normalize_weights="sum", WRN/long-tail code)
     with α_t the classifier optimizer's current learning rate, plain SGD, and
     L_i fed to V detached.
  2. Meta update (eq. 4):   Θ ← meta_optimizer(∇Θ (1/m) Σ_j L'_j(θ̂(Θ))),
     second order through stage 1.
  3. Actual update (eq. 5): c_i from the *updated* V (no gradient), then
     θ ← optimizer(∇θ Σ_i c_i L_i(θ) + weight_decay · θ).

Stage 3 reuses the stage-1 forward pass: it is the same θ on the same batch in
training mode, so the logits (and the BatchNorm batch statistics) are
identical to a fresh forward; only its backward pass is new. BatchNorm moving
statistics are taken from that one forward and written once, so the virtual
and meta forwards never move them.

Under a `tf.distribute` strategy with N replicas and the same GLOBAL batch
(n train, m meta samples in all), the step means the same as on one device:
every Σ over samples is a cross-replica sum (`ReplicaContext.all_reduce`,
which is differentiable, so the tapes see through it), the virtual step uses
the all-reduced gradient, c_i is normalised by the global n or Σw, the meta
loss is the global meta-batch mean, and each replica hands the optimizers its
*share* of the global gradient, which `optimizer.apply` sums across replicas
exactly once. Two things are per replica unless asked otherwise:

  * BatchNorm batch statistics (each replica normalises by its own n/N
    samples, as Keras does; `sync_batchnorm=True` makes them global). The
    moving statistics written in stage 3 are the replica MEAN of each
    replica's update, so every replica holds the same values (Keras' own BN
    would let the replicas' copies drift apart and checkpoint replica 0's).
  * `virtual_step="local"` (cheaper) keeps stages 1-2 on each replica's own
    samples; see `MetaWeightModel`.

Speed (measured in docs/speed.md): the exact step above costs two
forward passes, three backward passes (stage 1, the meta batch, stage 3) and
one second-order pass, which runs forward through the network like a JVP
(∂L_meta/∂c_i = −α ∇θL_i · ∇θ̂L_meta is a per-sample directional
derivative). Options trade exactness for speed: `meta_interval` (stages 1-2
every k steps), `virtual_layers` (the virtual step moves the last layers
only), `hypergradient="finite_difference"` (no second-order pass;
`mwn_tf.hypergradient`), `exact_warmup_steps` (exact first) and the data's
smaller meta batch; `fast_mode="recommended"` picks them. Mixed precision
(mixed_bfloat16, or mixed_float16 with loss scaling through the second-order
path) is supported; see `MetaWeightModel`. Their helpers: `mwn_tf.fast_step`.
"""

from typing import Optional

import gin
import keras
import tensorflow as tf

from mwn_tf import batches
from mwn_tf import fast_step
from mwn_tf import hypergradient as hypergradient_lib
from mwn_tf.choices import FAST_MODES
from mwn_tf.choices import HYPERGRADIENTS
from mwn_tf.choices import METHODS
from mwn_tf.choices import NORMALIZATIONS
from mwn_tf.choices import VIRTUAL_STEPS
from mwn_tf.models.batch_norm import synchronize_batchnorm
from mwn_tf.replicas import cross_replica_sum
from mwn_tf.replicas import global_results
from mwn_tf.replicas import num_replicas
from mwn_tf.replicas import replica_local
from mwn_tf.replicas import replica_mean
from mwn_tf.sample_weights import effective_sample_size
from mwn_tf.sample_weights import loss_coefficients
from mwn_tf.sample_weights import per_sample_loss  # re-exported: its old home
from mwn_tf.weight_net import WeightNet


@keras.saving.register_keras_serializable(package="mwn_tf")
class MetaWeightModel(keras.Model):
  """A classifier trained with Meta-Weight-Net sample weights.

  `fit()` takes a dataset of `(train_batch, meta_batch)` pairs (each a dict
  with `image` `[b, ...]` and `label` `[b]`, optionally `is_noisy` `[b]`, or an
  `(x, y)` tuple). `evaluate()` and `predict()` use the classifier alone.

  Why `normalize_weights="sum"` is the default: with the unnormalised
  Σ w·L / n of MW-Net.py, V can lower the meta loss just by scaling every
  weight up (a larger effective learning rate), and on small problems it drives
  all weights to ≈1 and stops telling samples apart. Dividing by Σw removes
  that scale, leaving only the relative weighting to learn; the official WRN
  and class-imbalance scripts (the paper's headline tables) do this. Measured
  on digits at 40% and 60% uniform noise: see docs/algorithm.md, "Choice of
  weight normalisation". `"none"` stays available for MW-Net.py's ResNet-32
  setup.

  Distributed training: build this model, `compile()` it (both
  optimizers) and restore checkpoints inside `strategy.scope()`, and feed
  each replica global_batch / N samples. With `virtual_step="global"` (the
  default) N replicas take exactly the step one device takes on the global
  batch (up to float rounding and the BatchNorm note in the module doc).
  `virtual_step="local"` skips the all-reduce of the classifier gradient
  inside the tapes (it is one |θ|-sized all-reduce forward and one more in
  the meta backward pass, per step): each replica then takes its virtual step
  with c_i normalised over its own n/N samples and its own gradient, and
  differentiates its own meta-batch share through that, so V's update is the
  MEAN over replicas of N single-device meta-gradients at batch n/N, m/N
  (train and meta samples interact only within a replica). The actual
  classifier update (stage 3) is unchanged and global in both modes. On one
  device the two modes are identical.

  Args:
    classifier: A built `keras.Model` mapping images to logits
      `[batch, num_classes]`.
    weight_net: The weighting MLP V; defaults to the paper's `WeightNet()`.
      A V whose `takes_labels` is True (`ClassAwareWeightNet`) is fed
      `(losses, labels)` wherever V is called (`weights_for`).
    method: "mwn" (the three stages) or "baseline" (every weight 1, no meta
      stage: plain training through the same model and pipeline).
    normalize_weights: "sum" or "none", see above.
    weight_decay: L2 coefficient added to the classifier's gradient in the
      actual step (PyTorch-style coupled decay, so it passes through momentum
      as in the official code; Keras optimizers' own `weight_decay` is
      decoupled, leave it unset). Not applied in the virtual step.
    meta_weight_decay: The same for V's gradient (official: 1e-4 with Adam).
    check_labels: Assert that labels lie in [0, num_classes).
    virtual_step: "global" (exact, the default) or "local", see above.
    sync_batchnorm: Switch every BatchNormalization layer of `classifier` to
      `synchronized=True` (batch statistics over the global batch, in all
      three stages; costs an all-reduce per BN layer per forward and its
      backward). Without a strategy it changes nothing but float rounding.
    meta_interval: k >= 1. Stages 1-2 (virtual step and V's update) run on
      steps 0, k, 2k, ... of the classifier optimizer; the other steps take
      the actual update with the current V (a plain step plus V's forward).
      1 is the exact algorithm. A fast mode, see docs/speed.md.
    virtual_layers: None (exact) or k >= 1: the virtual step moves only the
      trainable variables of the last k layers of `classifier.layers` that own
      any (k = 1: the logits layer of the registry's models); the other
      variables stay at θ in the meta forward, so the meta-gradient ignores
      how their virtual update depends on V, and the stage-1 and meta
      backward passes stop at those layers. A fast mode, see docs/speed.md.
    hypergradient: "second_order" (exact) or "finite_difference": V's
      gradient −α Σ_i ∂c_i/∂Θ (∇θL_i · v), v = ∇θ̂ L_meta, with the
      directional derivatives ∇θL_i · v taken as central differences
      (L_i(θ + εv) − L_i(θ − εv)) / 2ε, ε = `fd_epsilon` / ‖v‖ (DARTS'
      estimator): no second-order pass, two more forward passes of the
      train batch. Exact up to O(ε²). A fast mode, see docs/speed.md.
    fd_epsilon: The finite difference's step along v/‖v‖ (DARTS: 0.01).
    exact_warmup_steps: n >= 0: classifier steps [0, n) take the exact meta
      update whatever the fast options; they apply from step n on.
    fast_mode: "off" (the options above as given) or "recommended": the
      fast configuration docs/speed.md recommends (`fast_step.RECOMMENDED`),
      with the options above left at their exact defaults.
    name: Keras name.

  Mixed precision: build the classifier with a mixed policy
  (`models.get(..., dtype="mixed_bfloat16")` or `"mixed_float16"`). V runs
  in the variables' dtype (float32) by default. Under mixed_float16 Keras
  wraps the classifier optimizer in a `LossScaleOptimizer`, and `compile()`
  wraps V's optimizer in one too: the stage-1 backward pass runs on losses
  scaled by the classifier's scale S and the meta loss by V's scale S_V, the
  virtual step divides by S in a way that keeps the second-order pass scaled
  (`fast_step.unscale`), and V's gradient is divided by S at the end, so
  each optimizer sees gradients scaled by its own scale only, unscales them,
  and skips its update (halving its scale) when they are not finite. A
  float16 overflow anywhere in the step makes both sets of gradients
  non-finite, so the whole step is skipped. Scales are powers of two, so in
  float32 scaling changes no bit of the math.
  """

  def __init__(self,
               classifier: keras.Model,
               weight_net: Optional[keras.Model] = None,
               *,
               method: str = "mwn",
               normalize_weights: str = "sum",
               weight_decay: float = 5e-4,
               meta_weight_decay: float = 1e-4,
               check_labels: bool = True,
               virtual_step: str = "global",
               sync_batchnorm: bool = False,
               meta_interval: int = 1,
               virtual_layers: Optional[int] = None,
               hypergradient: str = "second_order",
               fd_epsilon: float = 0.01,
               exact_warmup_steps: int = 0,
               fast_mode: str = "off",
               name: str = "meta_weight_model"):
    if not isinstance(classifier, keras.Model):
      raise TypeError(
          f"classifier must be a Keras 3 `keras.Model` (got "
          f"{type(classifier).__module__}.{type(classifier).__name__}); wrap "
          f"your network in keras.Model / keras.Sequential, or pick one from "
          f"mwn_tf.models.")
    if not classifier.built:
      raise ValueError(
          "classifier is not built, so its variables do not exist yet: call "
          "classifier.build((None, height, width, channels)) or call it on one "
          "batch before wrapping it.")
    if method not in METHODS:
      raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if normalize_weights not in NORMALIZATIONS:
      raise ValueError(f"normalize_weights must be one of {NORMALIZATIONS}, "
                       f"got {normalize_weights!r}.")
    if virtual_step not in VIRTUAL_STEPS:
      raise ValueError(f"virtual_step must be one of {VIRTUAL_STEPS}, got "
                       f"{virtual_step!r}.")
    for arg, value in (("weight_decay", weight_decay),
                       ("meta_weight_decay", meta_weight_decay)):
      if not value >= 0:
        raise ValueError(f"{arg} must be >= 0, got {value!r}.")
    if int(meta_interval) != meta_interval or meta_interval < 1:
      raise ValueError(f"meta_interval must be an integer >= 1 (1: the exact "
                       f"step), got {meta_interval!r}.")
    if hypergradient not in HYPERGRADIENTS:
      raise ValueError(f"hypergradient must be one of {HYPERGRADIENTS}, got "
                       f"{hypergradient!r}.")
    if not fd_epsilon > 0:
      raise ValueError(f"fd_epsilon must be > 0, got {fd_epsilon!r}.")
    if int(exact_warmup_steps) != exact_warmup_steps or exact_warmup_steps < 0:
      raise ValueError(f"exact_warmup_steps must be an integer >= 0, got "
                       f"{exact_warmup_steps!r}.")
    if fast_mode not in FAST_MODES:
      raise ValueError(f"fast_mode must be one of {FAST_MODES}, got "
                       f"{fast_mode!r}.")
    if (hypergradient == "finite_difference" and
        fast_step.computes_in_float16(classifier)):
      raise ValueError("hypergradient = 'finite_difference' differences "
                       "losses, which float16 cannot resolve; use "
                       "mixed_bfloat16, float32 or 'second_order'.")
    fast = fast_step.resolve(fast_mode, {
        "meta_interval": int(meta_interval), "virtual_layers": virtual_layers,
        "hypergradient": hypergradient,
        "exact_warmup_steps": int(exact_warmup_steps)})
    super().__init__(name=name, dtype=classifier.dtype_policy)
    # Inputs go to the classifier untouched; it casts them as it would alone.
    self._convert_input_args = False
    self.classifier = classifier
    # V is tiny: under a mixed policy it runs in the variable dtype.
    self.weight_net = weight_net if weight_net is not None else WeightNet(
        dtype=classifier.dtype_policy.variable_dtype)
    self.method = method
    self.normalize_weights = normalize_weights
    self.virtual_step = virtual_step
    self.fast_mode = fast_mode
    # The options as given (get_config) and in effect (the step).
    self._given = {"meta_interval": int(meta_interval),
                   "virtual_layers": virtual_layers,
                   "hypergradient": hypergradient,
                   "exact_warmup_steps": int(exact_warmup_steps)}
    self.meta_interval = fast["meta_interval"]
    self.virtual_layers = fast["virtual_layers"]
    self.hypergradient = fast["hypergradient"]
    self.exact_warmup_steps = fast["exact_warmup_steps"]
    self.fd_epsilon = float(fd_epsilon)
    # Indices of the variables that take the virtual step: all (exact, and
    # the warm-up), and those of the fast phase.
    self._all = fast_step.virtual_variable_indices(classifier, None)
    self._virtual = fast_step.virtual_variable_indices(classifier,
                                                       self.virtual_layers)
    self.sync_batchnorm = bool(sync_batchnorm)
    if sync_batchnorm:
      synchronize_batchnorm(classifier)
    self.weight_decay = float(weight_decay)
    self.meta_weight_decay = float(meta_weight_decay)
    self.check_labels = check_labels
    self.num_classes = int(classifier.outputs[0].shape[-1]) if getattr(
        classifier, "outputs", None) else None
    self.meta_optimizer = None
    self._noise_flag_seen = False
    self._train_metrics = {
        "loss": keras.metrics.Mean(name="loss"),
        "weighted_loss": keras.metrics.Mean(name="weighted_loss"),
        "accuracy": keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        "meta_loss": keras.metrics.Mean(name="meta_loss"),
        "meta_accuracy": keras.metrics.SparseCategoricalAccuracy(
            name="meta_accuracy"),
        "weight_mean": keras.metrics.Mean(name="weight_mean"),
        "weight_clean": keras.metrics.Mean(name="weight_clean"),
        "weight_noisy": keras.metrics.Mean(name="weight_noisy"),
        # Per step, the global batch's (sample_weights.effective_sample_size).
        "weight_ess": keras.metrics.Mean(name="weight_ess"),
    }
    # Both sub-models are built, so this model is too; marking it spares
    # fit() a symbolic build that would not understand (train, meta) pairs.
    self.built = True

  def compile(self, optimizer="sgd", meta_optimizer=None, **kwargs):
    """Configures both optimizers.

    Args:
      optimizer: The classifier's optimizer (paper: SGD 0.1, momentum 0.9).
      meta_optimizer: V's optimizer (MW-Net.py: Adam 1e-3). Ignored by the
        baseline.
      **kwargs: Passed to `keras.Model.compile` (e.g. `jit_compile`,
        `steps_per_execution`). No `loss`/`metrics`: the step defines them.
        With float16 layers in the classifier (mixed_float16) both
        optimizers are wrapped in `LossScaleOptimizer`s unless
        `auto_scale_loss=False`.
    """
    for key in ("loss", "metrics"):
      if kwargs.get(key) is not None:
        raise ValueError(f"MetaWeightModel defines its own {key}; do not pass "
                         f"{key}= to compile().")
    # Keras wraps the optimizer for loss scaling when the MODEL's policy is
    # mixed_float16; a functional classifier keeps the global policy even
    # when its layers are float16, so look at the layers.
    if kwargs.get("auto_scale_loss", True) and fast_step.computes_in_float16(
        self.classifier):
      optimizer = keras.optimizers.get(optimizer)
      if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    super().compile(optimizer=optimizer, **kwargs)
    # Built here, on the classifier alone, so the classifier optimizer holds
    # no slots for V and the meta optimizer none for the classifier.
    self.optimizer.build(self.classifier.trainable_variables)
    if self.method == "mwn":
      self.meta_optimizer = keras.optimizers.get(
          meta_optimizer if meta_optimizer is not None else
          keras.optimizers.Adam(1e-3))
      # The meta loss runs through the float16 classifier too: scale it.
      if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer) and (
          not isinstance(self.meta_optimizer,
                         keras.optimizers.LossScaleOptimizer)):
        self.meta_optimizer = keras.optimizers.LossScaleOptimizer(
            self.meta_optimizer)
      self.meta_optimizer.build(self.weight_net.trainable_variables)

  def checkpoint_items(self) -> dict:
    """`tf.train.Checkpoint` items: `classifier`, `weight_net` (variable
    lists: Keras 3 models are not tracked by attribute), `metrics` (every
    train metric's variables, in a fixed order), `ess_metric` (`weight_ess`'s,
    added later: old runs' checkpoints lack it) and, once compiled,
    `optimizer` and (MW-Net) `meta_optimizer`. Old runs use these keys."""
    items = {"classifier": list(self.classifier.variables),
             "weight_net": list(self.weight_net.variables),
             "metrics": [v for k, m in self._train_metrics.items()
                         if k != "weight_ess" for v in m.variables],
             "ess_metric": list(self._train_metrics["weight_ess"].variables)}
    if self.compiled:
      items["optimizer"] = self.optimizer
      if self.method == "mwn":
        items["meta_optimizer"] = self.meta_optimizer
    return items

  # Keras saving: `save("m.keras")` stores this config, the compile config
  # (both optimizers) and every variable; `load_model` rebuilds, compiles
  # (building both optimizers) and loads, so training continues exactly.
  def get_config(self):
    return {
        "classifier": keras.saving.serialize_keras_object(self.classifier),
        "weight_net": keras.saving.serialize_keras_object(self.weight_net),
        "method": self.method, "normalize_weights": self.normalize_weights,
        "weight_decay": self.weight_decay,
        "meta_weight_decay": self.meta_weight_decay,
        "check_labels": self.check_labels, "virtual_step": self.virtual_step,
        "sync_batchnorm": self.sync_batchnorm,
        **self._given, "fd_epsilon": self.fd_epsilon,
        "fast_mode": self.fast_mode, "name": self.name}

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    for key in ("classifier", "weight_net"):
      config[key] = keras.saving.deserialize_keras_object(
          config[key], custom_objects=custom_objects)
    return cls(**config)

  def get_compile_config(self):
    # Keras records only what reaches `keras.Model.compile`; V's optimizer
    # goes beside it, so that loading compiles (and builds) both.
    config = super().get_compile_config()
    if config and self.meta_optimizer is not None:
      config["meta_optimizer"] = keras.saving.serialize_keras_object(
          self.meta_optimizer)
    return config

  def compile_from_config(self, config):
    self.compile(**keras.saving.deserialize_keras_object(config))

  def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    # Keras 3 (TF backend), for a model made under a strategy, builds it in
    # fit()/evaluate() by all-reducing one whole input batch with MEAN: that
    # fails on bool tensors (our batches' `is_noisy`) and ships a batch of
    # images between devices for nothing. Both sub-models are built in
    # __init__ and both optimizers in compile(), so there is nothing to build.
    del iterator, data_batch

  @property
  def metrics(self):
    names = ["loss", "weighted_loss", "accuracy"]
    if self.method == "mwn":
      names += ["meta_loss", "meta_accuracy", "weight_mean", "weight_ess"]
      if self._noise_flag_seen:
        names += ["weight_clean", "weight_noisy"]
    return [self._train_metrics[n] for n in names]

  def call(self, inputs, training=False):
    if isinstance(inputs, dict):
      inputs = inputs["image"]
    return self.classifier(inputs, training=training)

  def weights_for(self, losses, labels=None):
    """V's weights for per-sample `losses` `[batch]` of samples labelled
    `labels` `[batch]` (read by a class-aware V only, which needs them):
    `[batch]`, in the losses' dtype (a V with a mixed policy computes in
    another)."""
    inputs = tf.reshape(losses, [-1, 1])
    if getattr(self.weight_net, "takes_labels", False):
      if labels is None:
        raise ValueError(f"{type(self.weight_net).__name__} weighs a loss by "
                         "its label: call weights_for(losses, labels).")
      inputs = (inputs, tf.reshape(labels, [-1]))
    weights = self.weight_net(inputs)
    return tf.cast(tf.reshape(weights, [-1]), losses.dtype)

  # --------------------------------------------------------------------------
  # The step. The three stages of Algorithm 1 are the three blocks below.
  # --------------------------------------------------------------------------
  def train_step(self, data):
    (x, y, noisy), (x_meta, y_meta) = self._read_pair(data)
    # The backend tf.Variables: tapes watch and differentiate these.
    theta = [v.value for v in self.classifier.trainable_variables]
    state = [v.value for v in self.classifier.non_trainable_variables]
    phi = [v.value for v in self.weight_net.trainable_variables]
    # Loss scales (mixed_float16), Python 1s otherwise: see the class doc.
    scale, meta_scale = fast_step.loss_scales(self.optimizer,
                                              self.meta_optimizer)

    if self.method == "baseline":
      with tf.GradientTape() as tape:
        logits, new_state, reg = self.classifier.stateless_call(
            theta, state, x, training=True, return_losses=True)
        losses = per_sample_loss(y, logits)
        coeffs = loss_coefficients(tf.ones_like(losses), "none")
        # This replica's share of Σ c L + reg; optimizer.apply sums shares.
        objective = (tf.reduce_sum(coeffs * losses) +
                     self._sum(reg) / num_replicas())
      grads = tape.gradient(fast_step.scaled([objective], scale)[0], theta)
      self._apply_classifier_update(grads, theta, new_state, scale)
      return self._report(losses, coeffs, logits, y, None, noisy)

    # The train batch's forward pass, in training mode: stage 1
    # differentiates it, and stage 3 reuses it (same θ, same batch).
    tape, logits, new_state, reg, losses = self.train_forward(theta, state,
                                                              x, y)

    def virtual_and_meta_update(virtual, hypergradient):
      if hypergradient == "finite_difference":  # stages 1-2 without 2nd order
        meta_grads, meta_losses, meta_logits = (
            hypergradient_lib.finite_difference(
                self, tape, losses, (theta, state), (x, y), (x_meta, y_meta),
                phi, virtual))
      else:
        with tf.GradientTape(watch_accessed_variables=False) as meta_tape:
          meta_tape.watch(phi)
          # Stage 1: virtual step θ̂(Θ) = θ − α ∇θ Σ c_i(Θ) L_i(θ).
          fast_theta = self.virtual_weights(tape, losses, y, theta, scale,
                                            virtual)
          # Stage 2: meta loss of the virtual classifier on the clean batch.
          meta_loss, meta_losses, meta_logits = self.meta_objective(
              fast_theta, state, x_meta, y_meta, meta_scale)
        meta_grads = meta_tape.gradient(meta_loss, phi)
        # The second-order pass kept S (`unscale`); V's optimizer removes S_V.
        meta_grads = fast_step.scaled(meta_grads, fast_step.inverse(scale))
      self.meta_optimizer.apply(
          self._decayed(meta_grads, phi, self.meta_weight_decay, meta_scale),
          phi)
      self._update_meta_metrics(meta_losses, meta_logits, y_meta)

    # Stages 1-2: exact through the warm-up, then the fast options (every
    # `meta_interval`-th step); every step, exactly, by default.
    fast_step.schedule(
        self.optimizer.iterations, self.meta_interval, self.exact_warmup_steps,
        lambda: virtual_and_meta_update(self._all, "second_order"),
        lambda: virtual_and_meta_update(self._virtual, self.hypergradient))

    # Stage 3: weights from the updated V, no gradient; the actual update
    # reuses stage 1's forward (same θ, same batch) through the kept tape.
    weights = tf.stop_gradient(self.weights_for(tf.stop_gradient(losses), y))
    coeffs = loss_coefficients(weights, self.normalize_weights)
    grads = self.actual_gradients(tape, losses, reg, theta, coeffs, scale)
    del tape
    self._apply_classifier_update(grads, theta, new_state, scale)
    self._update_weight_metrics(weights, noisy)
    return self._report(losses, coeffs, logits, y, weights, noisy)

  # --------------------------------------------------------------------------
  # The passes of the step, one method each; `train_step` above composes
  # them, and `mwn_tf.benchmark.passes` times them one at a time.
  # --------------------------------------------------------------------------
  def train_forward(self, theta, state, x, y):
    """The forward pass on train images `x` `[n, ...]`, labels `y` `[n]`,
    in training mode at values `theta` (trainable) and `state`.

    Returns (persistent tape watching `theta`, logits `[n, K]`, new state,
    regularisation losses, per-sample losses `[n]`)."""
    with tf.GradientTape(persistent=True,
                         watch_accessed_variables=False) as tape:
      tape.watch(theta)
      logits, new_state, reg = self.classifier.stateless_call(
          theta, state, x, training=True, return_losses=True)
      losses = per_sample_loss(y, logits)
    return tape, logits, new_state, reg, losses

  def virtual_weights(self, tape, losses, labels, theta, scale=1,
                      virtual=None):
    """Stage 1: θ̂(Θ) = θ − α_t ∇θ Σ c_i(Θ) L_i(θ), a list like `theta`.

    Plain SGD at the classifier optimizer's current rate on the variables
    `virtual` (indices into `theta`; default: the `virtual_layers` ones),
    through `train_forward`'s `tape` and its `[n]` `losses` (fed to V
    detached, with the `[n]` `labels`); `scale`: the classifier's loss
    scale. Differentiable w.r.t. V when an enclosing tape watches it."""
    virtual = self._virtual if virtual is None else virtual
    alpha = self.optimizer.learning_rate  # α_t: the schedule's current value
    total = self.stage_sum()
    moving = [theta[i] for i in virtual]  # all of θ unless fast
    coeffs = loss_coefficients(self.weights_for(tf.stop_gradient(losses),
                                                labels),
                               self.normalize_weights, total)
    grads = total(tape.gradient(
        losses, moving, output_gradients=fast_step.scaled([coeffs], scale)[0]))
    fast_theta = list(theta)
    for i, g in zip(virtual, grads):
      fast_theta[i] = theta[i] - tf.cast(alpha, g.dtype) * (
          fast_step.unscale(g, scale))
    return fast_theta

  def meta_objective(self, fast_theta, state, x_meta, y_meta, meta_scale=1):
    """Stage 2's objective: the loss of θ̂ (`fast_theta`) on the meta batch
    `x_meta` `[m, ...]`, `y_meta` `[m]`, in training mode; `state` unchanged.

    Returns (this replica's share of the global meta-batch mean, scaled by
    V's `meta_scale`; per-sample meta losses `[m]`; meta logits `[m, K]`)."""
    meta_n = cross_replica_sum(tf.cast(tf.shape(y_meta)[0], tf.float32))
    meta_logits, _ = self.classifier.stateless_call(
        fast_theta, state, x_meta, training=True)
    meta_losses = per_sample_loss(y_meta, meta_logits)
    meta_loss = tf.reduce_sum(meta_losses) / tf.cast(meta_n,
                                                  meta_losses.dtype)
    return (fast_step.scaled([meta_loss], meta_scale)[0], meta_losses,
            meta_logits)

  def actual_gradients(self, tape, losses, reg, theta, coeffs, scale=1):
    """Stage 3's gradient ∇θ (Σ c_i L_i + reg) through `train_forward`'s
    `tape`, for `[n]` `coeffs` (no gradient into them): this replica's
    share, one tensor per entry of `theta`, scaled by `scale`."""
    return tape.gradient(
        [losses] + list(reg), theta,
        output_gradients=fast_step.scaled([coeffs] + self._shares(reg),
                                          scale))

  # --------------------------------------------------------------------------
  def stage_sum(self):
    """How stages 1-2 sum over samples: `cross_replica_sum` (global, exact)
    or `replica_local` (`virtual_step="local"`, see the class doc)."""
    return cross_replica_sum if self.virtual_step == "global" else (
        replica_local)

  def _apply_classifier_update(self, grads, theta, new_state, scale=1):
    self.optimizer.apply(
        self._decayed(grads, theta, self.weight_decay, scale), theta)
    # BatchNorm moving statistics from the one training-mode forward on the
    # train batch; the virtual and meta forwards never reach the variables.
    # Their aggregation is NONE, so in a replica context each replica writes
    # its own copy: write the same replica mean everywhere.
    for variable, value in zip(self.classifier.non_trainable_variables,
                               replica_mean(new_state)):
      variable.assign(value)

  @staticmethod
  def _decayed(grads, variables, decay, scale=1):
    """grads + decay·θ, per replica: `optimizer.apply` all-reduces with SUM,
    so each replica adds 1/N of the decay and the sum holds it once. Loss-
    scaled grads (`scale` S) get S·decay·θ, which the optimizer unscales."""
    share = decay / num_replicas()
    if fast_step.is_unit(scale):
      return [g + share * v for g, v in zip(grads, variables)]
    return [g + (share * tf.cast(scale, v.dtype)) * v
            for g, v in zip(grads, variables)]

  @staticmethod
  def _shares(reg):
    """d(objective)/d(reg loss) per replica: 1/N, for the same reason."""
    return [tf.cast(1.0 / num_replicas(), r.dtype) for r in reg]

  def _update_meta_metrics(self, meta_losses, meta_logits, y_meta):
    """Meta-batch metrics: on the steps that take stages 1-2 only."""
    m = self._train_metrics
    m["meta_loss"].update_state(meta_losses)
    m["meta_accuracy"].update_state(y_meta, meta_logits)

  def _update_weight_metrics(self, weights, noisy):
    m = self._train_metrics
    m["weight_mean"].update_state(weights)
    m["weight_ess"].update_state(effective_sample_size(weights))
    if noisy is not None:
      noisy = tf.cast(noisy, weights.dtype)
      m["weight_clean"].update_state(weights, sample_weight=1.0 - noisy)
      m["weight_noisy"].update_state(weights, sample_weight=noisy)

  def _report(self, losses, coeffs, logits, y, weights, noisy):
    m = self._train_metrics
    m["loss"].update_state(losses)
    m["weighted_loss"].update_state(
        cross_replica_sum(tf.reduce_sum(coeffs * losses)))
    m["accuracy"].update_state(y, logits)
    return global_results(self.metrics)

  @staticmethod
  def _sum(reg):
    return tf.add_n(reg) if reg else 0.0

  def test_step(self, data):
    x, y, _ = batches.unpack_batch(data, "evaluation")
    y = batches.check_labels(y, self.num_classes if self.check_labels else
                             None)
    logits = self.classifier(x, training=False)
    m = self._train_metrics
    m["loss"].update_state(per_sample_loss(y, logits))
    m["accuracy"].update_state(y, logits)
    return global_results([m["loss"], m["accuracy"]])

  # --------------------------------------------------------------------------
  def _read_pair(self, data):
    """((x, y, is_noisy or None), (x_meta, y_meta)) of a fit() element,
    validated at trace time (`mwn_tf.batches`)."""
    train, meta = batches.read_pair(data, self.method)
    if train[2] is not None:
      self._noise_flag_seen = True
    check = (lambda y: batches.check_labels(
        y, self.num_classes if self.check_labels else None))
    return (train[0], check(train[1]), train[2]), (meta[0], check(meta[1]))


# Registered this way (not with @gin.configurable on the class) because Keras 3
# inspects __init__'s argument list, which gin's in-place wrapper hides. Gin's
# wrapper makes instances of the class above, which Keras knows by the name
# "mwn_tf>MetaWeightModel".
MetaWeightModel = gin.external_configurable(MetaWeightModel, module="mwn_tf")

