"""Recurrent retention, one token at a time, on fused Triton kernels: the CUDA path of ``fused_recurrent_retention``.

Sun et al., "Retentive Network" (arXiv 2307.08621), eq. 1-2 (recurrent form); Hatamizadeh et al., "ViR"
(arXiv 2310.19731), §3. Per batch and head, with ``gamma = exp(g_gamma[h])``::

    S_t = gamma S_{t-1} + k_t^T v_t        o_t = scale * q_t S_t

The state lives in registers for the whole sequence, so nothing of size ``T x K x V`` is written. Kernels:

* ``fused_recurrent_retention_fwd_kernel``: the forward walk ``t = 0..T-1``, one program per ``(V-block, b*h)``
  writing ``o`` and the final state; with ``DQ=True`` the backward pass replays it, one program per
  ``(K-block, b*h)``, writing ``dq_t = scale * S_t do_t``;
* ``fused_recurrent_retention_bwd_dkv_kernel``: one program per ``(V-block, b*h)`` walks backwards with the state
  gradient ``dS_t = gamma dS_{t+1} + scale q_t^T do_t`` (seeded with ``dht``) and writes ``dk_t = dS_t v_t``
  (partial over V-blocks), ``dv_t = k_t dS_t`` and ``dh0 = gamma dS_0``.

All maths runs in float32 (float64 for float64 inputs); there is no ``tl.dot``. Best for short sequences and
decoding; for long sequences :func:`~recvision.ops.retention.chunk_retention` exposes far more parallelism.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..common.triton_utils import (
    check_head_dims,
    head_program,
    kernel_dtypes,
    start_state,
    state_tile,
    store_state,
)
from .common import triton_retention

__all__ = ["fused_recurrent_retention_bwd", "fused_recurrent_retention_fwd", "fused_recurrent_retention_triton"]

# elements of the [BK, BV] state one program keeps in registers
MAX_STATE_BLOCK = 4096


@triton.jit(do_not_specialize=["T"])
def fused_recurrent_retention_fwd_kernel(
    x, k, v, g, y, h0, ht, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr,
    DQ: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr, STORE_FINAL_STATE: tl.constexpr,
):  # fmt: skip
    """The forward walk ``S_t = gamma S_{t-1} + k_t^T v_t``, reading the state at every token.

    ``DQ=False`` (the output): ``x = q [B, T, H, K]``, ``y = o = scale q_t S_t [B, T, H, V]``, one program per
    ``(V-block, b*h)``. ``DQ=True`` (the backward pass replays the walk): ``x = do [B, T, H, V]``,
    ``y = dq = scale S_t do_t [B, T, H, K]``, one program per ``(K-block, b*h)``.
    """
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h, i_bh64 = head_program(i_bh, H)
    b_gamma = tl.exp(tl.load(g + i_h).to(ACC))

    # token 0 of this (batch, head) in [B, T, H, *]
    row = i_b * T * H + i_h
    if DQ:
        o_k, o_v, m_k, m_v, m_kv, o_kv = state_tile(i_n, 0, K, V, BK, BV)
        p_x = x + row * V + o_v
        p_y = y + row * K + o_k
    else:
        o_k, o_v, m_k, m_v, m_kv, o_kv = state_tile(0, i_n, K, V, BK, BV)
        p_x = x + row * K + o_k
        p_y = y + row * V + o_v
    p_k = k + row * K + o_k
    p_v = v + row * V + o_v

    b_h = start_state(h0, i_bh64, K, V, BK, BV, o_kv, m_kv, ACC, USE_INITIAL_STATE)
    for _ in range(T):
        b_k = tl.load(p_k, mask=m_k, other=0).to(ACC)
        b_v = tl.load(p_v, mask=m_v, other=0).to(ACC)
        b_h = b_h * b_gamma + b_k[:, None] * b_v[None, :]
        if DQ:
            b_do = tl.load(p_x, mask=m_v, other=0).to(ACC)
            b_dq = tl.sum(b_h * b_do[None, :], axis=1) * scale  # [BK]
            tl.store(p_y, b_dq.to(y.dtype.element_ty), mask=m_k)
            p_x += H * V
            p_y += H * K
        else:
            b_q = tl.load(p_x, mask=m_k, other=0).to(ACC) * scale
            b_o = tl.sum(b_h * b_q[:, None], axis=0)  # [BV]
            tl.store(p_y, b_o.to(y.dtype.element_ty), mask=m_v)
            p_x += H * K
            p_y += H * V
        p_k += H * K
        p_v += H * V

    if STORE_FINAL_STATE:
        store_state(ht, b_h, i_bh64, K, V, o_kv, m_kv)


@triton.jit(do_not_specialize=["T"])
def fused_recurrent_retention_bwd_dkv_kernel(
    q, k, v, g, do, dk, dv, dht, dh0, scale, T, B,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr,
    USE_FINAL_STATE_GRADIENT: tl.constexpr, STORE_INITIAL_STATE_GRADIENT: tl.constexpr,
):  # fmt: skip
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h, i_bh64 = head_program(i_bh, H)
    b_gamma = tl.exp(tl.load(g + i_h).to(ACC))

    o_k, o_v, m_k, m_v, m_kv, o_kv = state_tile(0, i_v, K, V, BK, BV)

    # last token of this (batch, head); dk is [NV, B, T, H, K] (partial sums over the V-blocks)
    row = (i_b * T + T - 1) * H + i_h
    row_dk = ((tl.cast(i_v, tl.int64) * B + i_b) * T + T - 1) * H + i_h
    p_q = q + row * K + o_k
    p_k = k + row * K + o_k
    p_v = v + row * V + o_v
    p_do = do + row * V + o_v
    p_dk = dk + row_dk * K + o_k
    p_dv = dv + row * V + o_v

    b_dh = start_state(dht, i_bh64, K, V, BK, BV, o_kv, m_kv, ACC, USE_FINAL_STATE_GRADIENT)
    for _ in range(T):
        b_q = tl.load(p_q, mask=m_k, other=0).to(ACC) * scale
        b_k = tl.load(p_k, mask=m_k, other=0).to(ACC)
        b_v = tl.load(p_v, mask=m_v, other=0).to(ACC)
        b_do = tl.load(p_do, mask=m_v, other=0).to(ACC)
        # gradient w.r.t. S_t
        b_dh += b_q[:, None] * b_do[None, :]
        b_dk = tl.sum(b_dh * b_v[None, :], axis=1)  # [BK]
        b_dv = tl.sum(b_dh * b_k[:, None], axis=0)  # [BV]
        tl.store(p_dk, b_dk.to(dk.dtype.element_ty), mask=m_k)
        tl.store(p_dv, b_dv.to(dv.dtype.element_ty), mask=m_v)
        b_dh *= b_gamma
        p_q -= H * K
        p_k -= H * K
        p_v -= H * V
        p_do -= H * V
        p_dk -= H * K
        p_dv -= H * V

    if STORE_INITIAL_STATE_GRADIENT:
        store_state(dh0, b_dh, i_bh64, K, V, o_kv, m_kv)


def _blocks(full: int, split: int) -> tuple[int, int]:
    """Block sizes ``(B_full, B_split)``: the first dimension whole, the second split to bound the state block."""
    b_full = triton.next_power_of_2(full)
    b_split = min(triton.next_power_of_2(split), max(1, MAX_STATE_BLOCK // b_full))
    return b_full, b_split


def fused_recurrent_retention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Forward pass on contiguous inputs; returns ``o [B, T, H, V]`` and the final state (or ``None``)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    BK, BV = _blocks(K, V)
    acc, ACC = kernel_dtypes(q.dtype)[:2]
    o = torch.empty_like(v)
    ht = q.new_empty(B, H, K, V, dtype=acc) if output_final_state else None
    fused_recurrent_retention_fwd_kernel[(triton.cdiv(V, BV), B * H)](
        x=q, k=k, v=v, g=g, y=o, h0=initial_state, ht=ht, scale=scale, T=T, H=H, K=K, V=V, BK=BK, BV=BV, ACC=ACC,
        USE_INITIAL_STATE=initial_state is not None, STORE_FINAL_STATE=output_final_state, DQ=False, num_warps=4,
    )  # fmt: skip
    return o, ht


def fused_recurrent_retention_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    do: torch.Tensor,
    dht: torch.Tensor | None,
    grad_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Backward pass on contiguous inputs; returns ``dq, dk`` (in ``grad_dtype``), ``dv`` and ``dh0`` (or ``None``)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    acc, ACC = kernel_dtypes(q.dtype)[:2]

    grad_dtype = grad_dtype or q.dtype
    BV_full, BK = _blocks(V, K)
    dq = torch.empty_like(q, dtype=grad_dtype)
    fused_recurrent_retention_fwd_kernel[(triton.cdiv(K, BK), B * H)](
        x=do, k=k, v=v, g=g, y=dq, h0=initial_state, ht=None, scale=scale, T=T, H=H, K=K, V=V, BK=BK, BV=BV_full,
        ACC=ACC, USE_INITIAL_STATE=initial_state is not None, STORE_FINAL_STATE=False, DQ=True, num_warps=4,
    )  # fmt: skip

    BK_full, BV = _blocks(K, V)
    NV = triton.cdiv(V, BV)
    # dk needs a sum over V: each V-block writes its own partial sum, in the accumulation dtype when split
    dk = q.new_empty(NV, B, T, H, K, dtype=acc if NV > 1 else grad_dtype)
    dv = torch.empty_like(v)
    dh0 = torch.empty_like(initial_state, dtype=acc) if initial_state is not None else None
    fused_recurrent_retention_bwd_dkv_kernel[(NV, B * H)](
        q=q, k=k, v=v, g=g, do=do, dk=dk, dv=dv, dht=dht, dh0=dh0, scale=scale, T=T, B=B, H=H, K=K, V=V,
        BK=BK_full, BV=BV, ACC=ACC, USE_FINAL_STATE_GRADIENT=dht is not None,
        STORE_INITIAL_STATE_GRADIENT=dh0 is not None, num_warps=4,
    )  # fmt: skip
    return dq, dk.sum(0) if NV > 1 else dk[0], dv, dh0


def fused_recurrent_retention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g_gamma: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The Triton path of :func:`~recvision.ops.retention.fused_recurrent_retention`, on checked inputs.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]`` (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``).
        g_gamma: log decay per head ``[H]``; scale: the query scale (both resolved).
        initial_state, output_final_state: as in :func:`~recvision.ops.retention.fused_recurrent_retention`.

    Returns:
        ``o [B, T, H, V]`` and the final state ``[B, H, K, V]`` or ``None``.

    Raises:
        ValueError: for ``K`` or ``V`` above 256.
    """
    check_head_dims("fused_recurrent_retention", q.shape[-1], v.shape[-1])
    fwd, bwd = fused_recurrent_retention_fwd, fused_recurrent_retention_bwd
    return triton_retention(q, k, v, g_gamma, scale, initial_state, output_final_state, fwd, bwd)
