"""timm-registered backbones. Importing a family module registers its models with timm."""

from .lightnet import LightNet
from .plstm import PLSTMVision
from .vir import VisionRetention

__all__ = ["LightNet", "PLSTMVision", "VisionRetention"]
