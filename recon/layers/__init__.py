"""Reusable ``nn.Module`` building blocks for MRI reconstruction networks."""

from recon.layers import dc
from recon.layers.dc import *  # noqa: F403 - the public names of dc.py, listed once there

__all__ = list(dc.__all__)
