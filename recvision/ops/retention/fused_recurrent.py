"""Recurrent retention, one token at a time: PyTorch loop on CPU, fused Triton kernel on CUDA (TODO)."""

from __future__ import annotations

import torch

from ...config import use_triton
from .naive import naive_recurrent_retention

__all__ = ["fused_recurrent_retention"]


def fused_recurrent_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g_gamma: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Recurrent retention with an O(1) state."""
    if use_triton(q, backend):
        raise NotImplementedError("Triton recurrent kernel is not written yet")
    return naive_recurrent_retention(q, k, v, g_gamma, scale, initial_state, output_final_state)
