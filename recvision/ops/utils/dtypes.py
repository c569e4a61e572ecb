"""The dtype policy shared by every op.

States, decays, cumulative sums and normalisers accumulate in float32 (float64 stays float64). The matrix
products of the PyTorch forms run in bfloat16 when the inputs are bfloat16 or CPU/CUDA autocast to bfloat16 is on
(the products accumulate in float32 inside the kernel; their results are rounded to bfloat16 and then added into
float32). The forms switch autocast off inside and cast each product's operands themselves, so that autocast
cannot lower the float32 parts. Float16 inputs keep float32 products (float16's range is too small for
unnormalised retention scores).
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast_off", "compute_dtype", "matmul_dtype"]

_AUTOCAST_DEVICES = ("cpu", "cuda")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 stays float64, everything else runs in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """Dtype of the matrix-product operands of an op called on ``x``: bfloat16 for bfloat16 inputs or under a
    bfloat16 autocast of ``x``'s device, else :func:`compute_dtype`."""
    device = x.device.type
    if (
        device in _AUTOCAST_DEVICES
        and torch.is_autocast_enabled(device)
        and torch.get_autocast_dtype(device) == torch.bfloat16
    ):
        return torch.bfloat16
    return torch.bfloat16 if x.dtype == torch.bfloat16 else compute_dtype(x.dtype)


def autocast_off(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """A context in which autocast is off for ``x``'s device (a no-op context where autocast does not apply)."""
    device = x.device.type
    if device in _AUTOCAST_DEVICES and torch.is_autocast_enabled(device):
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()
