"""The MLP of the recvision blocks: timm's ``Mlp`` with its activation in place when autograd is off."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp as TimmMlp
from torch import nn

__all__ = ["Mlp"]


def _activation_in_place(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(x)`` written into ``x`` for the activations that have an in-place kernel; otherwise ``act(x)``."""
    if type(act) is nn.GELU:
        return torch.ops.aten.gelu_(x, approximate=act.approximate)
    if type(act) is nn.SiLU:
        return F.silu(x, inplace=True)
    if type(act) is nn.ReLU:
        return F.relu(x, inplace=True)
    return act(x)


class Mlp(TimmMlp):
    """timm's ``Mlp`` (same arguments, submodules and state dict), whose activation overwrites ``fc1``'s output
    when autograd is off.

    The hidden activation ``[B, N, mlp_ratio * C]`` is the largest tensor of an isotropic block's forward, and
    without autograd nothing else reads ``fc1``'s output, so a second tensor of that size is not needed. The
    in-place kernels compute the same values as the out-of-place ones.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., in_features]`` -> ``[..., out_features]``."""
        x = self.fc1(x)
        x = self.act(x) if torch.is_grad_enabled() else _activation_in_place(self.act, x)
        x = self.drop1(x)
        x = self.norm(x)
        x = self.fc2(x)
        return self.drop2(x)
