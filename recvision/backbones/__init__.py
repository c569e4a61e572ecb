"""timm-registered backbones. Importing a family module registers its models with timm."""

from .vir import VisionRetention

__all__ = ["VisionRetention"]
