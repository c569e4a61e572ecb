"""Helpers of the training and I/O code, independent of the models (as ``timm.utils``)."""

from recvision.utils.atomic import atomic_dir, atomic_write

__all__ = ["atomic_dir", "atomic_write"]
