"""mwn_tf: Meta-Weight-Net (Shu et al., NeurIPS 2019) in TensorFlow 2 / Keras 3.

Public API:
  MetaWeightModel: a keras.Model whose train_step is the three-stage MW-Net step.
  WeightNet: the weighting MLP V (loss -> weight in (0, 1)).
  data.get(name, ...): datasets with label noise, long tails and clean meta sets.
  models.get(name, ...): the paper's classifiers.
"""

from mwn_tf.meta_model import MetaWeightModel
from mwn_tf.weight_net import WeightNet
from mwn_tf import data
from mwn_tf import models

__all__ = ["MetaWeightModel", "WeightNet", "data", "models"]
