"""mwn_tf: Meta-Weight-Net (Shu et al., NeurIPS 2019) in TensorFlow 2 / Keras 3."""

from mwn_tf.meta_model import MetaWeightModel
from mwn_tf.weight_net import WeightNet

__all__ = ["MetaWeightModel", "WeightNet"]
