"""Shared input handling of the MD-TPE ops (argument checks and the dtype policy)."""

from __future__ import annotations

import torch

from ..utils.dtypes import compute_dtype

__all__ = ["check_md_tpe_inputs", "compute_dtype"]


def check_md_tpe_inputs(x: torch.Tensor, log_decay: torch.Tensor) -> int:
    """Validate MD-TPE inputs and return the head dimension ``D = C // num_heads``.

    Args:
        x: channels-last image grid ``[B, H, W, C]`` with ``C = num_heads * head_dim``.
        log_decay: ``log(lambda_h)`` per head ``[num_heads]``, finite and ``<= 0`` (``lambda`` in ``(0, 1]``).

    Raises:
        ValueError: naming the offending argument.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a channels-last grid [B, H, W, C]; got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor; got {x.dtype}")
    if min(x.shape) < 1:
        raise ValueError(f"x must have B, H, W, C >= 1; got {tuple(x.shape)}")
    if not isinstance(log_decay, torch.Tensor) or log_decay.ndim != 1 or log_decay.numel() < 1:
        shape = tuple(log_decay.shape) if isinstance(log_decay, torch.Tensor) else type(log_decay).__name__
        raise ValueError(f"log_decay must be a 1-D tensor [num_heads]; got {shape}")
    if not log_decay.is_floating_point():
        raise ValueError(f"log_decay must be a floating-point tensor; got {log_decay.dtype}")
    num_heads, C = log_decay.shape[0], x.shape[-1]
    if C % num_heads:
        raise ValueError(f"x's channel dim C = {C} must be divisible by num_heads = len(log_decay) = {num_heads}")
    # meta tensors (shape-only runs, e.g. timm's config tests on device="meta") have no values to check
    if log_decay.device.type != "meta" and (not bool(torch.isfinite(log_decay).all()) or bool((log_decay > 0).any())):
        raise ValueError("log_decay holds log(lambda) and must be finite and <= 0 (lambda in (0, 1])")
    return C // num_heads
