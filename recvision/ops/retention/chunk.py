"""Chunkwise retention: PyTorch on CPU, Triton kernels on CUDA (kernels: TODO, being written)."""

from __future__ import annotations

import torch

from ...config import use_triton
from .naive import naive_chunk_retention

__all__ = ["chunk_retention"]


def chunk_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g_gamma: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunkwise retention (see :func:`~recvision.ops.retention.naive.naive_chunk_retention` for the maths)."""
    if use_triton(q, backend):
        raise NotImplementedError("Triton chunk kernels are not written yet")
    return naive_chunk_retention(q, k, v, g_gamma, scale, initial_state, output_final_state, chunk_size)
