"""Chunkwise multi-head retention on Triton (forward and backward): the CUDA path of ``chunk_retention``.

Sun et al., "Retentive Network: A Successor to Transformer for Large Language Models" (arXiv 2307.08621), §2.2
(chunkwise recurrent form); Hatamizadeh et al., "ViR: Towards Efficient Vision Retention Backbones"
(arXiv 2310.19731), §3. The derivation of the kernels' formulas is in this folder's ``README.md``.

Layout follows flash-linear-attention: ``q, k [B, T, H, K]``, ``v [B, T, H, V]``, ``g_gamma [H] = log gamma``.
The sequence is cut into ``NT = ceil(T / BT)`` chunks of ``BT`` tokens (the last one may be shorter). Kernels:

* the state walks of :mod:`recvision.ops.common.chunk_state` (shared with the additive recurrence): the state
  *before* every chunk ``h [B, H, NT, K, V]`` (and the final state), and in the backward pass the gradient of the
  state *after* every chunk ``dh [B, H, NT, K, V]`` (seeded with ``dht``) and ``dh0``;
* the per-chunk kernels of :mod:`recvision.ops.common.chunk_o` (also shared): ``o = scale * ((q k^T ⊙ D) v +
  gamma^(i+1) q h)`` per ``(V-block, chunk, b*h)``, and the gradients ``dv``, ``dq``, ``dk`` per
  ``(block, chunk, b*h)``.

This module keeps what is retention's own: the chunk-size limit and the host functions that
:class:`~recvision.ops.retention.common.TritonRetentionFunction` (the autograd function of both Triton forms) runs.

Element-wise maths runs in float32 (float64 for float64 inputs). ``tl.dot`` operands are in the input dtype for
float16/bfloat16 (tensor cores, float32 accumulation) and float32 with ``input_precision="ieee"`` otherwise.
:mod:`~recvision.ops.retention.chunk` imports this module only when a call takes the Triton path.
"""

from __future__ import annotations

from functools import partial

import torch

from ..common.chunk_o import chunk_bwd_dqkv, chunk_fwd_o
from ..common.chunk_state import chunk_fwd_h
from ..common.triton_utils import check_chunk_size, check_head_dims
from .common import triton_retention

__all__ = ["chunk_retention_bwd", "chunk_retention_fwd", "chunk_retention_triton"]

# largest chunk: a [BT, BT] score tile of 256 x 256 float32 is the most one program holds
MAX_CHUNK = 256


def chunk_retention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Forward pass on contiguous inputs; returns ``o [B, T, H, V]`` and the final state (or ``None``)."""
    h, ht = chunk_fwd_h(k, v, g, None, initial_state, output_final_state, chunk_size)
    return chunk_fwd_o(q, k, v, h, g, None, None, scale, chunk_size), ht


def chunk_retention_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    do: torch.Tensor,
    dht: torch.Tensor | None,
    grad_dtype: torch.dtype | None,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Backward pass on contiguous inputs; returns ``dq, dk`` (in ``grad_dtype``), ``dv`` and ``dh0`` (or ``None``)."""
    return chunk_bwd_dqkv(q, k, v, g, None, None, scale, initial_state, do, dht, chunk_size, grad_dtype)


def chunk_retention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g_gamma: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The Triton path of :func:`~recvision.ops.retention.chunk_retention`, on inputs it has already checked.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]`` (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``).
        g_gamma: log decay per head ``[H]``; scale: the query scale (both resolved).
        initial_state, output_final_state, chunk_size: as in :func:`~recvision.ops.retention.chunk_retention`.

    Returns:
        ``o [B, T, H, V]`` and the final state ``[B, H, K, V]`` or ``None``.

    Raises:
        ValueError: for ``K`` or ``V`` above 256, or a ``chunk_size`` that is not a power of two in ``[16, 256]``.
    """
    check_head_dims("chunk_retention", q.shape[-1], v.shape[-1])
    check_chunk_size("chunk_retention", chunk_size, MAX_CHUNK)
    fwd = partial(chunk_retention_fwd, chunk_size=chunk_size)
    bwd = partial(chunk_retention_bwd, chunk_size=chunk_size)
    return triton_retention(q, k, v, g_gamma, scale, initial_state, output_final_state, fwd, bwd)
