"""Models: ResNets with injectable convolution and activation."""

from east_jax.models.resnet import BasicBlock
from east_jax.models.resnet import Bottleneck
from east_jax.models.resnet import MODEL_NAMES
from east_jax.models.resnet import ReLU
from east_jax.models.resnet import ResNet
from east_jax.models.resnet import create_model

__all__ = ["BasicBlock", "Bottleneck", "MODEL_NAMES", "ReLU", "ResNet", "create_model"]
