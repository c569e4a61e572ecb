"""Chunkwise additive recurrence (LightNet) on Triton (forward and backward): the CUDA path of ``chunk_additive``.

Qin et al., "You Only Scan Once: Efficient Multi-dimension Sequential Modeling with LightNet" (arXiv 2405.21022).
The derivation of the formulas is in this folder's ``README.md``.

Layout follows flash-linear-attention: ``q, k, g [B, T, H, K]``, ``v [B, T, H, V]``. The wrapper computes
``z = logcumsumexp(g)`` over time (``log Δ_t``) in PyTorch, so the kernels see ``g`` and ``z`` as two inputs and
every exponent they form is ``<= 0``. The sequence is cut into ``NT = ceil(T / BT)`` chunks. Kernels:

* the state walks of :mod:`recvision.ops.common.chunk_state` (shared with retention): the normalised state
  ``s / Δ`` *before* every chunk ``h [B, H, NT, K, V]``, and in the backward pass the gradient of the state *after*
  every chunk ``dh [B, H, NT, K, V]`` (normalised at that chunk's last ``z``);
* ``additive_fwd_A_kernel``: one program per ``(chunk, b*h)``, intra-chunk scores
  ``A[t, s] = sum_c q_{t,c} k_{s,c} exp(g_{s,c} - z_{t,c})`` (``s <= t``) into ``A [B, H, NT, BT, BT]``;
* the per-chunk kernels of :mod:`recvision.ops.common.chunk_o` (also shared, ``KEY_DECAY=True``):
  ``o = (q ⊙ exp(zp - z)) h + A v`` per ``(V-block, chunk, b*h)``, and the gradients of v and of q, k (their
  per-channel intra-chunk part loops over the chunk's tokens).

The autograd function returns ``dg = k ⊙ dk`` (the direct path of ``g``) and ``dz = -q ⊙ dq``; autograd carries
``dz`` through ``torch.logcumsumexp`` to ``g``. Inputs are upcast to float32 (float64 stays float64) before the
kernels; ``tl.dot`` runs with ``input_precision="ieee"``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..common.chunk_o import chunk_bwd_dqkv, chunk_fwd_o, key_decay_column
from ..common.chunk_state import chunk_fwd_h
from ..common.triton_utils import (
    acc_dtypes,
    block_size,
    check_chunk_size,
    check_head_dims,
    chunk_program,
    chunk_rows,
)
from ..utils.guards import input_guard
from .common import compute_dtype

__all__ = ["ChunkAdditiveFunction", "chunk_additive_triton"]

# largest chunk: the per-channel intra-chunk loops hold [BT, BK] tiles per token of the chunk
MAX_CHUNK = 128


@triton.jit(do_not_specialize=["T"])
def additive_fwd_A_kernel(
    q, k, g, z, A, T,
    H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h, i_bh64, NT = chunk_program(i_bh, T, H, BT)

    o_t, m_t, o_row = chunk_rows(i_b, i_h, i_t, T, H, BT)
    b_A = tl.zeros([BT, BT], dtype=ACC)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        m_tk = m_t[:, None] & m_k[None, :]
        b_q = tl.load(q + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(ACC)
        b_z = tl.load(z + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(ACC)
        for j in range(BT):
            b_kj, b_w = key_decay_column(k, g, b_z, i_b, i_h, i_t, j, o_t, m_t, o_k, m_k, T, H, K, BT, ACC)
            b_col = tl.sum(b_q * b_kj[None, :] * b_w, axis=1)  # A[:, j] over this K-block
            b_A += tl.where(o_t[None, :] == j, b_col[:, None], 0)
    p_A = A + (i_bh64 * NT + tl.cast(i_t, tl.int64)) * BT * BT
    tl.store(p_A + o_t[:, None] * BT + o_t[None, :], b_A.to(A.dtype.element_ty))


def chunk_additive_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, z: torch.Tensor, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward pass on contiguous inputs of one dtype; returns ``o [B, T, H, V]`` and the scores ``A``."""
    B, T, H, K = q.shape
    BT, NT = chunk_size, triton.cdiv(T, chunk_size)
    h, _ = chunk_fwd_h(k, v, g, z, None, False, chunk_size)
    A = q.new_empty(B, H, NT, BT, BT)
    ACC = acc_dtypes(q.dtype)[1]
    additive_fwd_A_kernel[(NT, B * H)](q, k, g, z, A, T, H=H, K=K, BT=BT, BK=block_size(K), ACC=ACC)
    return chunk_fwd_o(q, k, v, h, g, z, A, 1.0, chunk_size), A


def chunk_additive_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    z: torch.Tensor,
    A: torch.Tensor,
    do: torch.Tensor,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward pass on contiguous inputs; returns ``dq, dk, dv`` (``z`` held fixed)."""
    dq, dk, dv, _ = chunk_bwd_dqkv(q, k, v, g, z, A, 1.0, None, do, None, chunk_size)
    return dq, dk, dv


class ChunkAdditiveFunction(torch.autograd.Function):
    """Autograd wrapper of the chunk kernels with ``z = logcumsumexp(g)`` as a separate input.

    ``forward(q, k, v, g, z, chunk_size)`` with ``q, k, g, z [B, T, H, K]`` and ``v [B, T, H, V]`` of one dtype
    (float32 or float64). The backward returns ``dg = k ⊙ dk`` (the direct path of ``g``) and ``dz = -q ⊙ dq``.
    """

    @staticmethod
    @input_guard
    def forward(ctx, q, k, v, g, z, chunk_size: int):
        o, A = chunk_additive_fwd(q, k, v, g, z, chunk_size)
        ctx.save_for_backward(q, k, v, g, z, A)
        ctx.chunk_size = chunk_size
        return o

    @staticmethod
    @input_guard
    def backward(ctx, do):
        q, k, v, g, z, A = ctx.saved_tensors
        dq, dk, dv = chunk_additive_bwd(q, k, v, g, z, A, do, ctx.chunk_size)
        return dq, dk, dv, k * dk, -q * dq, None


def chunk_additive_triton(
    q: torch.Tensor, k: torch.Tensor | None, v: torch.Tensor, g: torch.Tensor, scale: float, chunk_size: int
) -> torch.Tensor:
    """The causal Triton path of :func:`~recvision.ops.additive.chunk_additive`, on inputs it has already checked.

    Args:
        q, g: ``[B, T, H, K]``; k: ``[B, T, H, K]`` or ``None`` (all ones); v: ``[B, T, H, V]``.
        scale: the resolved query scale.
        chunk_size: tokens per chunk, a power of two in ``[16, 128]``.

    Returns:
        ``o [B, T, H, V]`` in the dtype of ``q``.

    Raises:
        ValueError: for ``K`` or ``V`` above 256 or a bad ``chunk_size``.
    """
    check_head_dims("chunk_additive", q.shape[-1], v.shape[-1])
    check_chunk_size("chunk_additive", chunk_size, MAX_CHUNK)
    dtype = compute_dtype(q.dtype)
    qf, vf, gf = q.to(dtype), v.to(dtype), g.to(dtype)
    if scale != 1.0:
        qf = qf * scale
    kf = torch.ones_like(qf) if k is None else k.to(dtype)
    z = torch.logcumsumexp(gf, dim=1)
    o = ChunkAdditiveFunction.apply(qf, kf, vf, gf, z, chunk_size)
    return o.to(q.dtype)
