"""Chunkwise multi-head retention on Triton (forward and backward): the CUDA path of ``chunk_retention``.

Sun et al., "Retentive Network: A Successor to Transformer for Large Language Models" (arXiv 2307.08621), §2.2
(chunkwise recurrent form); Hatamizadeh et al., "ViR: Towards Efficient Vision Retention Backbones"
(arXiv 2310.19731), §3. The derivation of the kernels' formulas is in this folder's ``README.md``.

Layout follows flash-linear-attention: ``q, k [B, T, H, K]``, ``v [B, T, H, V]``, ``g_gamma [H] = log gamma``.
The sequence is cut into ``NT = ceil(T / BT)`` chunks of ``BT`` tokens (the last one may be shorter). Kernels:

* the state walks of :mod:`recvision.ops.common.chunk_state` (shared with the additive recurrence): the state
  *before* every chunk ``h [B, H, NT, K, V]`` (and the final state), and in the backward pass the gradient of the
  state *after* every chunk ``dh [B, H, NT, K, V]`` (seeded with ``dht``) and ``dh0``;
* ``chunk_retention_fwd_o_kernel``: one program per ``(V-block, chunk, b*h)``,
  ``o = scale * ((q k^T ⊙ D) v + gamma^(i+1) q h)``;
* ``chunk_retention_bwd_dv_kernel`` / ``chunk_retention_bwd_dqk_kernel``: per ``(block, chunk, b*h)`` gradients.

Element-wise maths runs in float32 (float64 for float64 inputs). ``tl.dot`` operands are in the input dtype for
float16/bfloat16 (tensor cores, float32 accumulation) and float32 with ``input_precision="ieee"`` otherwise.
:mod:`~recvision.ops.retention.chunk` imports this module only when a call takes the Triton path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..common.chunk_state import chunk_bwd_dh, chunk_bwd_dqk_states, chunk_fwd_h
from ..common.triton_utils import (
    block_size,
    check_chunk_size,
    check_head_dims,
    chunk_launch_meta,
    chunk_program,
    chunk_rows,
    kernel_dtypes,
)
from ..utils.guards import input_guard
from .common import retention_log_decay_grad

__all__ = ["ChunkRetentionFunction", "chunk_retention_triton"]

# largest chunk: a [BT, BT] score tile of 256 x 256 float32 is the most one program holds
MAX_CHUNK = 256


@triton.jit(do_not_specialize=["T"])
def chunk_retention_fwd_o_kernel(
    q,
    k,
    v,
    h,
    g,
    o,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    ACC: tl.constexpr,
    DT: tl.constexpr,
    PREC: tl.constexpr,
):
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h, i_bh64, NT = chunk_program(i_bh, T, H, BT)
    b_g = tl.load(g + i_h).to(ACC)

    o_t, m_t, o_row = chunk_rows(i_b, i_h, i_t, T, H, BT)
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    p_h = h + (i_bh64 * NT + tl.cast(i_t, tl.int64)) * K * V

    b_o = tl.zeros([BT, BV], dtype=ACC)
    b_A = tl.zeros([BT, BT], dtype=ACC)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        m_tk = m_t[:, None] & m_k[None, :]
        b_q = tl.load(q + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(DT)
        b_k = tl.load(k + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(DT)
        b_h = tl.load(p_h + o_k[:, None] * V + o_v[None, :], mask=m_k[:, None] & m_v[None, :], other=0).to(DT)
        # [BT, BV] inter-chunk part, [BT, BT] intra-chunk scores
        b_o += tl.dot(b_q, b_h, input_precision=PREC)
        b_A += tl.dot(b_q, tl.trans(b_k), input_precision=PREC)

    b_o = b_o * tl.exp(b_g * (o_t + 1).to(ACC))[:, None]
    m_A = o_t[:, None] >= o_t[None, :]
    b_A = tl.where(m_A, b_A * tl.exp(b_g * tl.where(m_A, o_t[:, None] - o_t[None, :], 0).to(ACC)), 0)
    b_v = tl.load(v + o_row[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0).to(DT)
    b_o = (b_o + tl.dot(b_A.to(DT), b_v, input_precision=PREC)) * scale
    tl.store(o + o_row[:, None] * V + o_v[None, :], b_o.to(o.dtype.element_ty), mask=m_t[:, None] & m_v[None, :])


@triton.jit(do_not_specialize=["T"])
def chunk_retention_bwd_dv_kernel(
    q,
    k,
    do,
    dh,
    g,
    dv,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    ACC: tl.constexpr,
    DT: tl.constexpr,
    PREC: tl.constexpr,
):
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h, i_bh64, NT = chunk_program(i_bh, T, H, BT)
    b_g = tl.load(g + i_h).to(ACC)

    o_t, m_t, o_row = chunk_rows(i_b, i_h, i_t, T, H, BT)
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    m_tv = m_t[:, None] & m_v[None, :]
    p_dh = dh + (i_bh64 * NT + tl.cast(i_t, tl.int64)) * K * V

    # b_A[j, i] = k_j . q_i
    b_A = tl.zeros([BT, BT], dtype=ACC)
    b_dv = tl.zeros([BT, BV], dtype=ACC)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        m_tk = m_t[:, None] & m_k[None, :]
        b_q = tl.load(q + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(DT)
        b_k = tl.load(k + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(DT)
        b_dh = tl.load(p_dh + o_k[:, None] * V + o_v[None, :], mask=m_k[:, None] & m_v[None, :], other=0).to(DT)
        b_A += tl.dot(b_k, tl.trans(b_q), input_precision=PREC)
        b_dv += tl.dot(b_k, b_dh, input_precision=PREC)

    L = tl.minimum(T - i_t * BT, BT)
    b_dv = b_dv * tl.where(m_t, tl.exp(b_g * tl.where(m_t, L - 1 - o_t, 0).to(ACC)), 0)[:, None]
    # keep i >= j, decay gamma^(i-j)
    m_A = o_t[:, None] <= o_t[None, :]
    b_A = tl.where(m_A, b_A * tl.exp(b_g * tl.where(m_A, o_t[None, :] - o_t[:, None], 0).to(ACC)), 0) * scale
    b_do = tl.load(do + o_row[:, None] * V + o_v[None, :], mask=m_tv, other=0).to(DT)
    b_dv += tl.dot(b_A.to(DT), b_do, input_precision=PREC)
    tl.store(dv + o_row[:, None] * V + o_v[None, :], b_dv.to(dv.dtype.element_ty), mask=m_tv)


@triton.jit(do_not_specialize=["T"])
def chunk_retention_bwd_dqk_kernel(
    q,
    k,
    v,
    h,
    do,
    dh,
    g,
    dq,
    dk,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    ACC: tl.constexpr,
    DT: tl.constexpr,
    PREC: tl.constexpr,
):
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h, i_bh64, NT = chunk_program(i_bh, T, H, BT)
    b_g = tl.load(g + i_h).to(ACC)

    o_t, m_t, o_row = chunk_rows(i_b, i_h, i_t, T, H, BT)
    o_k = i_k * BK + tl.arange(0, BK)
    m_k = o_k < K
    m_tk = m_t[:, None] & m_k[None, :]
    o_hc = (i_bh64 * NT + tl.cast(i_t, tl.int64)) * K * V

    # b_dA[i, j] = do_i . v_j
    b_dA, b_dq, b_dk = chunk_bwd_dqk_states(
        do, v, h + o_hc, dh + o_hc, o_row, m_t, o_k, m_k, V, BT, BK, BV, ACC, DT, PREC
    )

    L = tl.minimum(T - i_t * BT, BT)
    b_dq = b_dq * (scale * tl.exp(b_g * (o_t + 1).to(ACC)))[:, None]
    b_dk = b_dk * tl.where(m_t, tl.exp(b_g * tl.where(m_t, L - 1 - o_t, 0).to(ACC)), 0)[:, None]
    m_A = o_t[:, None] >= o_t[None, :]
    b_dA = tl.where(m_A, b_dA * tl.exp(b_g * tl.where(m_A, o_t[:, None] - o_t[None, :], 0).to(ACC)), 0) * scale
    b_dA = b_dA.to(DT)
    b_q = tl.load(q + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(DT)
    b_k = tl.load(k + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(DT)
    b_dq += tl.dot(b_dA, b_k, input_precision=PREC)
    b_dk += tl.dot(tl.trans(b_dA), b_q, input_precision=PREC)
    tl.store(dq + o_row[:, None] * K + o_k[None, :], b_dq.to(dq.dtype.element_ty), mask=m_tk)
    tl.store(dk + o_row[:, None] * K + o_k[None, :], b_dk.to(dk.dtype.element_ty), mask=m_tk)


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
    B, T, H, K = q.shape
    V = v.shape[-1]
    BK, BV = block_size(K), block_size(V)
    h, ht = chunk_fwd_h(k, v, g, None, initial_state, output_final_state, chunk_size)
    o = torch.empty_like(v)
    grid = (triton.cdiv(V, BV), triton.cdiv(T, chunk_size), B * H)
    chunk_retention_fwd_o_kernel[grid](
        q=q, k=k, v=v, h=h, g=g, o=o, scale=scale, BK=BK, BV=BV, **chunk_launch_meta(q, v, chunk_size)
    )
    return o, ht


def chunk_retention_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    do: torch.Tensor,
    dht: torch.Tensor | None,
    chunk_size: int,
    final_state: torch.Tensor | None = None,
    need_dg: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Backward pass on contiguous inputs.

    Returns ``dq, dk, dv`` (input dtype), ``dh0`` (or ``None``) and, if ``need_dg``, the gradient of the log
    decays ``dg [H]`` (else ``None``; ``final_state`` is needed for it when ``dht`` is given).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT, BK, BV = chunk_size, block_size(K), block_size(V)
    NT = triton.cdiv(T, BT)
    NK, NV = triton.cdiv(K, BK), triton.cdiv(V, BV)
    acc = kernel_dtypes(q.dtype)[0]
    # recompute the states before every chunk instead of keeping them from the forward pass
    h, _ = chunk_fwd_h(k, v, g, None, initial_state, False, chunk_size)
    dh, dh0 = chunk_bwd_dh(q, do, g, None, dht, initial_state, scale, chunk_size)
    common = chunk_launch_meta(q, v, chunk_size)
    # dg is computed from dq and dk: keep them in the accumulation dtype until then
    grad_dtype = acc if need_dg else None
    dq, dk, dv = torch.empty_like(q, dtype=grad_dtype), torch.empty_like(k, dtype=grad_dtype), torch.empty_like(v)
    chunk_retention_bwd_dv_kernel[(NV, NT, B * H)](
        q=q, k=k, do=do, dh=dh, g=g, dv=dv, scale=scale, BK=BK, BV=BV, **common
    )
    chunk_retention_bwd_dqk_kernel[(NK, NT, B * H)](
        q=q, k=k, v=v, h=h, do=do, dh=dh, g=g, dq=dq, dk=dk, scale=scale, BK=BK, BV=BV, **common
    )
    dg = None
    if need_dg:
        dg = retention_log_decay_grad(q, k, dq, dk, final_state, dht)
        dq, dk = dq.to(q.dtype), dk.to(k.dtype)
    if dh0 is not None:
        dh0 = dh0.to(initial_state.dtype)
    return dq, dk, dv, dh0, dg


class ChunkRetentionFunction(torch.autograd.Function):
    """Autograd wrapper of the chunk kernels; differentiable w.r.t. ``q, k, v, g, initial_state``."""

    @staticmethod
    @input_guard
    def forward(
        ctx,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        g: torch.Tensor,
        scale: float,
        initial_state: torch.Tensor | None,
        output_final_state: bool,
        chunk_size: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        o, ht = chunk_retention_fwd(q, k, v, g, scale, initial_state, output_final_state, chunk_size)
        ctx.save_for_backward(q, k, v, g, initial_state, ht)
        ctx.scale = scale
        ctx.chunk_size = chunk_size
        return o, ht

    @staticmethod
    @input_guard
    def backward(ctx, do: torch.Tensor, dht: torch.Tensor | None):
        q, k, v, g, initial_state, ht = ctx.saved_tensors
        need_dg = ctx.needs_input_grad[3]
        dq, dk, dv, dh0, dg = chunk_retention_bwd(
            q, k, v, g, ctx.scale, initial_state, do, dht, ctx.chunk_size, final_state=ht, need_dg=need_dg
        )
        if dg is not None:
            dg = dg.to(g.dtype)
        return dq, dk, dv, dg, None, dh0, None, None


def _prepare_g(g_gamma: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Log decays as a contiguous accumulation-dtype tensor on ``q``'s device (still attached to the graph)."""
    return g_gamma.to(device=q.device, dtype=kernel_dtypes(q.dtype)[0]).contiguous()


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
    g = _prepare_g(g_gamma, q)
    return ChunkRetentionFunction.apply(q, k, v, g, scale, initial_state, output_final_state, chunk_size)
