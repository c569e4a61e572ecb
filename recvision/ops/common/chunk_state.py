"""The chunked state walks shared by retention and the additive recurrence (Triton).

Both ops carry a ``[K, V]`` state per batch and head across chunks of ``BT`` tokens (flash-linear-attention's
``chunk_fwd_h`` / ``chunk_bwd_dh``). They differ only in how a chunk's tokens are weighted and how the state decays
from one chunk to the next, selected by the constexpr ``KEY_DECAY``:

* ``KEY_DECAY=False`` (retention, :mod:`recvision.ops.retention.triton_chunk`): one log decay per head
  ``g [H]``; key ``j`` of a chunk of ``L`` tokens enters with ``gamma^(L-1-j)`` and the state decays by
  ``gamma^L``; the reverse walk weights query ``i`` by ``scale gamma^(i+1)``;
* ``KEY_DECAY=True`` (additive, :mod:`recvision.ops.additive.triton_chunk`): per-token, per-key log-weights
  ``g [B, T, H, K]`` and their running ``z = logcumsumexp(g)``; states are normalised by ``exp(z)`` at the chunk's
  last token ``zl``, key ``s`` enters with ``exp(g_s - zl)``, the state decays by ``exp(zp - zl)`` (``zp``: ``z``
  before the chunk); the reverse walk weights query ``t`` by ``exp(zp - z_t)``. Every exponent is ``<= 0``.

Kernels (one program per ``(K-block, V-block, b*h)``, walking the chunks one after another):

* ``chunk_fwd_h_kernel``: the state *before* every chunk into ``h [B, H, NT, K, V]`` (optionally from an initial
  state ``h0`` and writing the final state ``ht``);
* ``chunk_bwd_dh_kernel``: the reverse walk, the gradient of the state *after* every chunk into
  ``dh [B, H, NT, K, V]`` (optionally seeded with ``dht`` and writing ``dh0``);
* ``chunk_bwd_dqk_states``: a ``@triton.jit`` helper of both ops' ``dq`` / ``dk`` kernels, the products with the
  values and the states of one chunk.

The maths of each op is in its folder's ``README.md``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_utils import (
    chunk_launch_meta,
    chunk_program,
    chunk_rows,
    kernel_dtypes,
    load_row_vector,
    start_state,
    state_blocks,
    state_tile,
    store_state,
)

__all__ = ["chunk_bwd_dh", "chunk_fwd_h"]


@triton.jit
def chunk_z_bounds(
    z, i_b, i_h, i_t, T, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, o_k, m_k, ACC: tl.constexpr
):
    """``z`` of the additive form at chunk ``i_t``'s last token (``zl``) and at the token before the chunk (``zp``;
    chunk 0 reads token 0, which only has to be finite), both ``[BK]`` in ``ACC``."""
    t_last = tl.minimum(T, i_t * BT + BT) - 1
    t_prev = tl.maximum(i_t * BT - 1, 0)
    b_zl = load_row_vector(z, i_b, i_h, t_last, T, H, K, o_k, m_k).to(ACC)
    b_zp = load_row_vector(z, i_b, i_h, t_prev, T, H, K, o_k, m_k).to(ACC)
    return b_zl, b_zp


@triton.jit
def chunk_bwd_dqk_states(
    do, v, p_h, p_dh, o_row, m_t, o_k, m_k,
    V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr, DT: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    """The products of the ``dq`` / ``dk`` kernels of one chunk and K-block, summed over the V-blocks.

    ``p_h``, ``p_dh`` point at the chunk's ``[K, V]`` state and state gradient. Returns ``dA = do v^T [BT, BT]`` and
    the parts through the states, ``dq = do h^T`` and ``dk = v dh^T`` (``[BT, BK]``, before each op's decays).
    """
    b_dA = tl.zeros([BT, BT], dtype=ACC)
    b_dq = tl.zeros([BT, BK], dtype=ACC)
    b_dk = tl.zeros([BT, BK], dtype=ACC)
    for i_v in range(tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        m_tv = m_t[:, None] & m_v[None, :]
        m_kv = m_k[:, None] & m_v[None, :]
        b_do = tl.load(do + o_row[:, None] * V + o_v[None, :], mask=m_tv, other=0).to(DT)
        b_v = tl.load(v + o_row[:, None] * V + o_v[None, :], mask=m_tv, other=0).to(DT)
        b_h = tl.load(p_h + o_k[:, None] * V + o_v[None, :], mask=m_kv, other=0).to(DT)
        b_dh = tl.load(p_dh + o_k[:, None] * V + o_v[None, :], mask=m_kv, other=0).to(DT)
        b_dA += tl.dot(b_do, tl.trans(b_v), input_precision=PREC)
        b_dq += tl.dot(b_do, tl.trans(b_h), input_precision=PREC)
        b_dk += tl.dot(b_v, tl.trans(b_dh), input_precision=PREC)
    return b_dA, b_dq, b_dk


@triton.jit(do_not_specialize=["T"])
def chunk_fwd_h_kernel(
    k, v, g, z, h, h0, ht, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    ACC: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr,
    KEY_DECAY: tl.constexpr, USE_INITIAL_STATE: tl.constexpr, STORE_FINAL_STATE: tl.constexpr,
):  # fmt: skip
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h, i_bh64, NT = chunk_program(i_bh, T, H, BT)
    o_k, o_v, m_k, m_v, m_kv, o_kv = state_tile(i_k, i_v, K, V, BK, BV)
    if not KEY_DECAY:
        b_g = tl.load(g + i_h).to(ACC)

    b_h = start_state(h0, i_bh64, K, V, BK, BV, o_kv, m_kv, ACC, USE_INITIAL_STATE)

    for i_t in range(NT):
        i_t64 = tl.cast(i_t, tl.int64)
        tl.store(h + (i_bh64 * NT + i_t64) * K * V + o_kv, b_h.to(h.dtype.element_ty), mask=m_kv)
        o_t, m_t, o_row = chunk_rows(i_b, i_h, i_t, T, H, BT)
        if KEY_DECAY:
            m_tk = m_t[:, None] & m_k[None, :]
            b_k = tl.load(k + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(ACC)
            b_gk = tl.load(g + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(ACC)
            b_v = tl.load(v + o_row[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0).to(ACC)
            b_zl, b_zp = chunk_z_bounds(z, i_b, i_h, i_t, T, H, K, BT, o_k, m_k, ACC)
            b_kd = tl.where(m_tk, b_k * tl.exp(tl.minimum(b_gk - b_zl[None, :], 0)), 0)
            # chunk 0: b_h is zero, the decay only has to be finite
            b_h = b_h * tl.exp(tl.minimum(b_zp - b_zl, 0))[:, None]
            b_h += tl.dot(tl.trans(b_kd), b_v, input_precision=PREC)
        else:
            b_k = tl.load(k + o_row[:, None] * K + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0).to(ACC)
            b_v = tl.load(v + o_row[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0)
            # real length of this chunk (the last one may be short)
            L = tl.minimum(T - i_t * BT, BT)
            # gamma^(L-1-j) for the valid tokens, 0 for the padding
            b_dk = tl.where(m_t, tl.exp(b_g * tl.where(m_t, L - 1 - o_t, 0).to(ACC)), 0)
            b_kd = tl.trans(b_k * b_dk[:, None]).to(DT)  # [BK, BT]
            b_h = b_h * tl.exp(b_g * L) + tl.dot(b_kd, b_v.to(DT), input_precision=PREC)

    if STORE_FINAL_STATE:
        store_state(ht, b_h, i_bh64, K, V, o_kv, m_kv)


@triton.jit(do_not_specialize=["T"])
def chunk_bwd_dh_kernel(
    q, do, g, z, dh, dht, dh0, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    ACC: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr,
    KEY_DECAY: tl.constexpr, USE_FINAL_STATE_GRADIENT: tl.constexpr, STORE_INITIAL_STATE_GRADIENT: tl.constexpr,
):  # fmt: skip
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h, i_bh64, NT = chunk_program(i_bh, T, H, BT)
    o_k, o_v, m_k, m_v, m_kv, o_kv = state_tile(i_k, i_v, K, V, BK, BV)
    if not KEY_DECAY:
        b_g = tl.load(g + i_h).to(ACC)
        # scale * gamma^(i+1): how the state before a chunk reaches its queries
        b_dq = scale * tl.exp(b_g * (tl.arange(0, BT) + 1).to(ACC))

    b_dh = start_state(dht, i_bh64, K, V, BK, BV, o_kv, m_kv, ACC, USE_FINAL_STATE_GRADIENT)

    for i_r in range(NT):
        i_t = NT - 1 - i_r
        i_t64 = tl.cast(i_t, tl.int64)
        # gradient w.r.t. the state after chunk i_t
        tl.store(dh + (i_bh64 * NT + i_t64) * K * V + o_kv, b_dh.to(dh.dtype.element_ty), mask=m_kv)
        o_t, m_t, o_row = chunk_rows(i_b, i_h, i_t, T, H, BT)
        if KEY_DECAY:
            m_tk = m_t[:, None] & m_k[None, :]
            b_q = tl.load(q + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(ACC)
            b_z = tl.load(z + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(ACC)
            b_do = tl.load(do + o_row[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0).to(ACC)
            b_zl, b_zp = chunk_z_bounds(z, i_b, i_h, i_t, T, H, K, BT, o_k, m_k, ACC)
            b_qd = tl.where(m_tk, b_q * tl.exp(tl.minimum(b_zp[None, :] - b_z, 0)), 0)
            b_dh = b_dh * tl.exp(tl.minimum(b_zp - b_zl, 0))[:, None]
            b_dh += tl.dot(tl.trans(b_qd), b_do, input_precision=PREC)
        else:
            b_q = tl.load(q + o_row[:, None] * K + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0).to(ACC)
            b_do = tl.load(do + o_row[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0)
            L = tl.minimum(T - i_t * BT, BT)
            b_qd = tl.trans(b_q * b_dq[:, None]).to(DT)  # [BK, BT]
            b_dh = b_dh * tl.exp(b_g * L) + tl.dot(b_qd, b_do.to(DT), input_precision=PREC)

    if STORE_INITIAL_STATE_GRADIENT:
        store_state(dh0, b_dh, i_bh64, K, V, o_kv, m_kv)


def chunk_fwd_h(
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    z: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """States before every chunk, on contiguous inputs.

    Args:
        k: keys ``[B, T, H, K]``; v: values ``[B, T, H, V]``.
        g: log decay per head ``[H]`` (retention, ``z=None``) or log-weights ``[B, T, H, K]`` (additive).
        z: ``logcumsumexp(g)`` over time ``[B, T, H, K]`` for the additive form, else ``None``.
        initial_state: state before the first token ``[B, H, K, V]`` or ``None``.
        output_final_state: also return the state after the last token.
        chunk_size: tokens per chunk ``BT`` (a power of two, at least 16).

    Returns:
        ``h [B, H, NT, K, V]`` and the final state ``[B, H, K, V]`` (or ``None``), both in the accumulation dtype.
    """
    B, T, H, K = k.shape
    V = v.shape[-1]
    BK, BV = state_blocks(K, V, B * H, k.device)
    NT = triton.cdiv(T, chunk_size)
    acc = kernel_dtypes(k.dtype)[0]
    h = k.new_empty(B, H, NT, K, V, dtype=acc)
    ht = k.new_empty(B, H, K, V, dtype=acc) if output_final_state else None
    chunk_fwd_h_kernel[(triton.cdiv(K, BK), triton.cdiv(V, BV), B * H)](
        k=k,
        v=v,
        g=g,
        z=z,
        h=h,
        h0=initial_state,
        ht=ht,
        BK=BK,
        BV=BV,
        KEY_DECAY=z is not None,
        USE_INITIAL_STATE=initial_state is not None,
        STORE_FINAL_STATE=output_final_state,
        **chunk_launch_meta(k, v, chunk_size),
    )
    return h, ht


def chunk_bwd_dh(
    q: torch.Tensor,
    do: torch.Tensor,
    g: torch.Tensor,
    z: torch.Tensor | None,
    dht: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    scale: float,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradients of the states after every chunk, on contiguous inputs (the reverse walk).

    Args:
        q: queries ``[B, T, H, K]``; do: output gradient ``[B, T, H, V]``.
        g, z: as in :func:`chunk_fwd_h`.
        dht: gradient of the final state ``[B, H, K, V]`` or ``None``.
        initial_state: the forward pass's initial state (its gradient ``dh0`` is returned when given) or ``None``.
        scale: the query scale of retention (the additive form folds it into ``q`` and ignores this).
        chunk_size: tokens per chunk ``BT``.

    Returns:
        ``dh [B, H, NT, K, V]`` and ``dh0 [B, H, K, V]`` (or ``None``), both in the accumulation dtype.
    """
    B, T, H, K = q.shape
    V = do.shape[-1]
    BK, BV = state_blocks(K, V, B * H, q.device)
    NT = triton.cdiv(T, chunk_size)
    acc = kernel_dtypes(q.dtype)[0]
    dh = q.new_empty(B, H, NT, K, V, dtype=acc)
    dh0 = torch.empty_like(initial_state, dtype=acc) if initial_state is not None else None
    chunk_bwd_dh_kernel[(triton.cdiv(K, BK), triton.cdiv(V, BV), B * H)](
        q=q,
        do=do,
        g=g,
        z=z,
        dh=dh,
        dht=dht,
        dh0=dh0,
        scale=scale,
        BK=BK,
        BV=BV,
        KEY_DECAY=z is not None,
        USE_FINAL_STATE_GRADIENT=dht is not None,
        STORE_INITIAL_STATE_GRADIENT=dh0 is not None,
        **chunk_launch_meta(q, do, chunk_size),
    )
    return dh, dh0
