"""The named choices of the algorithm's settings, importing nothing.

`MetaWeightModel` checks its arguments against them and the runner's setting
declarations (`runner.declarations`, read by `--help` without TensorFlow)
list them, so each list is written once, here.
"""

# train_eval.method / MetaWeightModel(method=...).
METHODS = ("mwn", "baseline")
# How V's weights become loss coefficients (see `meta_model.loss_coefficients`).
NORMALIZATIONS = ("none", "sum")
# MetaWeightModel(virtual_step=...): all-reduced ("global") or per replica.
VIRTUAL_STEPS = ("global", "local")
# train_eval.weight_net: the paper's V, or CMW-Net's class-aware V.
WEIGHT_NETS = ("mlp", "class_aware")
# train_eval.meta_optimizer: V's optimiser.
META_OPTIMIZERS = ("adam", "sgd")
# What the weight-collapse guard does when it fires (runner/collapse.py).
COLLAPSE_ACTIONS = ("warn", "stop", "reset_v")
# MetaWeightModel(hypergradient=...): V's gradient through the virtual step by
# the second-order pass (exact) or by central finite differences of the train
# losses along the meta gradient (no second-order pass).
HYPERGRADIENTS = ("second_order", "finite_difference")
# train_eval.fast_mode / MetaWeightModel(fast_mode=...): "off" (the options as
# set, by default the exact step) or the recommended fast configuration.
FAST_MODES = ("off", "recommended")
