"""The per-chunk output and gradient kernels shared by retention and the additive recurrence (Triton).

With the states of :mod:`recvision.ops.common.chunk_state` in hand, every chunk of ``BT`` tokens is independent:
its output is the inter-chunk part (queries read the state before the chunk) plus the intra-chunk part (scores
``A [BT, BT]`` times the values), and its gradients are the same two parts transposed (flash-linear-attention's
``chunk_fwd_o`` / ``chunk_bwd_dv`` / ``chunk_bwd_dqk``). The constexpr ``KEY_DECAY`` selects the decay, as in the
state walks:

* ``KEY_DECAY=False`` (retention): one log decay per head ``g [H]``; query ``i`` reads the state with
  ``scale gamma^(i+1)``, key ``j`` writes it with ``gamma^(L-1-j)`` and the scores ``q_i k_j^T`` decay by
  ``gamma^(i-j)`` (``i >= j``); the kernels build the scores from ``q`` and ``k`` in their K-block loop;
* ``KEY_DECAY=True`` (additive): per-key log-weights ``g`` and ``z = logcumsumexp(g)`` (``[B, T, H, K]``);
  query ``t`` reads the state with ``exp(zp - z_t)``, key ``s`` writes it with ``exp(g_s - zl)``, and the scores
  weigh every key channel on its own, so they come precomputed (``A [B, H, NT, BT, BT]``) and ``dq`` / ``dk``
  have a per-channel intra-chunk loop. ``scale`` is folded into ``q`` by the caller and not used here.

Kernels (one program per ``(V- or K-block, chunk, b*h)``):

* ``chunk_fwd_o_kernel``: ``o [B, T, H, V]``;
* ``chunk_bwd_dv_kernel``: ``dv [B, T, H, V]`` from the state gradients ``dh`` and the transposed scores;
* ``chunk_bwd_dqk_kernel``: ``dq``, ``dk [B, T, H, K]`` from the states, the state gradients and ``do v^T``.

:func:`chunk_bwd_dqkv` runs the whole backward pass of both ops (state walks included). The maths of each op is in
its folder's ``README.md``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .chunk_state import chunk_bwd_dh, chunk_bwd_dqk_states, chunk_fwd_h, chunk_z_bounds
from .triton_utils import block_size, chunk_launch_meta, chunk_program, chunk_rows, load_row_vector

__all__ = ["chunk_bwd_dqkv", "chunk_fwd_o", "key_decay_column"]


@triton.jit
def chunk_block(i_x, i_t, i_bh, T, H: tl.constexpr, X: tl.constexpr, BT: tl.constexpr, BX: tl.constexpr):
    """Program ``(i_x, i_t, i_bh)`` over ``(X-block, chunk, b*h)``.

    Returns the batch ``i_b`` and head ``i_h``, the chunk number ``i_c`` among all ``B*H*NT`` chunks (int64), the
    positions ``o_t [BT]`` in the chunk with their validity ``m_t`` and row offsets ``o_row``, the block's channels
    ``o_x [BX]`` with their mask ``m_x``, and the tile mask ``m_tx [BT, BX]``.
    """
    i_b, i_h, i_bh64, NT = chunk_program(i_bh, T, H, BT)
    o_t, m_t, o_row = chunk_rows(i_b, i_h, i_t, T, H, BT)
    o_x = i_x * BX + tl.arange(0, BX)
    m_x = o_x < X
    m_tx = m_t[:, None] & m_x[None, :]
    i_c = i_bh64 * NT + tl.cast(i_t, tl.int64)
    return i_b, i_h, i_c, o_t, m_t, o_row, o_x, m_x, m_tx


@triton.jit
def head_decay_powers(b_g, o_t, m_t, T, i_t, BT: tl.constexpr, ACC: tl.constexpr):
    """``gamma^(L-1-j)`` of a chunk's valid tokens ``j`` (0 for the padding), ``L`` the chunk's real length."""
    L = tl.minimum(T - i_t * BT, BT)
    return tl.where(m_t, tl.exp(b_g * tl.where(m_t, L - 1 - o_t, 0).to(ACC)), 0)


@triton.jit
def head_decay_scores(b_A, b_g, o_t, ACC: tl.constexpr):
    """Causal scores ``b_A[i, j] gamma^(i-j)`` for ``i >= j``, 0 above the diagonal."""
    m_A = o_t[:, None] >= o_t[None, :]
    return tl.where(m_A, b_A * tl.exp(b_g * tl.where(m_A, o_t[:, None] - o_t[None, :], 0).to(ACC)), 0)


@triton.jit(do_not_specialize=["T"])
def chunk_fwd_o_kernel(
    q, k, v, h, g, z, A, o, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    ACC: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr,
    KEY_DECAY: tl.constexpr,
):  # fmt: skip
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h, i_c, o_t, m_t, o_row, o_v, m_v, m_tv = chunk_block(i_v, i_t, i_bh, T, H, V, BT, BV)
    if KEY_DECAY:
        t_prev = tl.maximum(i_t * BT - 1, 0)
    else:
        b_g = tl.load(g + i_h).to(ACC)
        b_A = tl.zeros([BT, BT], dtype=ACC)

    b_o = tl.zeros([BT, BV], dtype=ACC)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        m_tk = m_t[:, None] & m_k[None, :]
        b_q = tl.load(q + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(DT)
        b_h = tl.load(h + i_c * K * V + o_k[:, None] * V + o_v[None, :], mask=m_k[:, None] & m_v[None, :], other=0)
        if KEY_DECAY:
            b_z = tl.load(z + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(ACC)
            b_zp = load_row_vector(z, i_b, i_h, t_prev, T, H, K, o_k, m_k).to(ACC)
            b_q = b_q * tl.exp(tl.minimum(b_zp[None, :] - b_z, 0))
        else:
            b_k = tl.load(k + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(DT)
            b_A += tl.dot(b_q, tl.trans(b_k), input_precision=PREC)  # [BT, BT] intra-chunk scores
        b_o += tl.dot(b_q, b_h.to(DT), input_precision=PREC)  # [BT, BV] inter-chunk part

    if KEY_DECAY:
        b_A = tl.load(A + i_c * BT * BT + o_t[:, None] * BT + o_t[None, :]).to(ACC)
    else:
        b_o = b_o * tl.exp(b_g * (o_t + 1).to(ACC))[:, None]
        b_A = head_decay_scores(b_A, b_g, o_t, ACC)
    b_v = tl.load(v + o_row[:, None] * V + o_v[None, :], mask=m_tv, other=0).to(DT)
    b_o += tl.dot(b_A.to(DT), b_v, input_precision=PREC)
    if not KEY_DECAY:
        b_o = b_o * scale
    tl.store(o + o_row[:, None] * V + o_v[None, :], b_o.to(o.dtype.element_ty), mask=m_tv)


@triton.jit(do_not_specialize=["T"])
def chunk_bwd_dv_kernel(
    q, k, g, z, A, do, dh, dv, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    ACC: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr,
    KEY_DECAY: tl.constexpr,
):  # fmt: skip
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h, i_c, o_t, m_t, o_row, o_v, m_v, m_tv = chunk_block(i_v, i_t, i_bh, T, H, V, BT, BV)
    if KEY_DECAY:
        t_last = tl.minimum(T, i_t * BT + BT) - 1
    else:
        b_g = tl.load(g + i_h).to(ACC)
        b_A = tl.zeros([BT, BT], dtype=ACC)  # b_A[j, i] = k_j . q_i

    b_dv = tl.zeros([BT, BV], dtype=ACC)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        m_tk = m_t[:, None] & m_k[None, :]
        b_k = tl.load(k + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(DT)
        b_dh = tl.load(dh + i_c * K * V + o_k[:, None] * V + o_v[None, :], mask=m_k[:, None] & m_v[None, :], other=0)
        if KEY_DECAY:
            b_gk = tl.load(g + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(ACC)
            b_zl = load_row_vector(z, i_b, i_h, t_last, T, H, K, o_k, m_k).to(ACC)
            b_k = tl.where(m_tk, b_k * tl.exp(tl.minimum(b_gk - b_zl[None, :], 0)), 0)
        else:
            b_q = tl.load(q + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(DT)
            b_A += tl.dot(b_k, tl.trans(b_q), input_precision=PREC)
        b_dv += tl.dot(b_k, b_dh.to(DT), input_precision=PREC)

    if KEY_DECAY:
        b_A = tl.trans(tl.load(A + i_c * BT * BT + o_t[:, None] * BT + o_t[None, :]).to(ACC))
    else:
        b_dv = b_dv * head_decay_powers(b_g, o_t, m_t, T, i_t, BT, ACC)[:, None]
        # keep j <= i, decay gamma^(i-j) (head_decay_scores, transposed)
        m_A = o_t[:, None] <= o_t[None, :]
        b_A = tl.where(m_A, b_A * tl.exp(b_g * tl.where(m_A, o_t[None, :] - o_t[:, None], 0).to(ACC)), 0) * scale
    b_do = tl.load(do + o_row[:, None] * V + o_v[None, :], mask=m_tv, other=0).to(DT)
    b_dv += tl.dot(b_A.to(DT), b_do, input_precision=PREC)
    tl.store(dv + o_row[:, None] * V + o_v[None, :], b_dv.to(dv.dtype.element_ty), mask=m_tv)


@triton.jit
def key_decay_column(
    k, g, b_z, i_b, i_h, i_t, j, o_t, m_t, o_k, m_k, T, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr,
    ACC: tl.constexpr,
):  # fmt: skip
    """Key ``j`` of chunk ``i_t`` in the additive form: its channels ``b_kj [BK]`` and the weights
    ``exp(g_{j,c} - z_{t,c}) [BT, BK]`` with which it reaches the chunk's queries ``t >= j`` (0 before ``j``)."""
    t_j = i_t * BT + j
    b_kj = load_row_vector(k, i_b, i_h, t_j, T, H, K, o_k, m_k).to(ACC)
    b_gj = load_row_vector(g, i_b, i_h, t_j, T, H, K, o_k, m_k).to(ACC)
    m_j = (o_t >= j) & m_t
    return b_kj, tl.where(m_j[:, None], tl.exp(tl.minimum(b_gj[None, :] - b_z, 0)), 0)


@triton.jit
def key_decay_intra_dqk(
    k, g, b_q, b_z, b_dA, b_dq, b_dk, i_b, i_h, i_t, o_t, m_t, o_k, m_k, T,
    H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """Add the intra-chunk parts of ``dq`` and ``dk`` ``[BT, BK]`` of the additive form, one key token at a time:
    every key channel ``c`` has its own weight ``exp(g_{j,c} - z_{t,c})`` for ``t >= j``."""
    for j in range(BT):
        b_kj, b_w = key_decay_column(k, g, b_z, i_b, i_h, i_t, j, o_t, m_t, o_k, m_k, T, H, K, BT, ACC)
        b_col = tl.sum(tl.where(o_t[None, :] == j, b_dA, 0), axis=1)  # dA[:, j]
        b_dq += b_col[:, None] * b_kj[None, :] * b_w
        b_dkj = tl.sum(b_col[:, None] * b_q * b_w, axis=0)  # [BK]
        b_dk += tl.where(o_t[:, None] == j, b_dkj[None, :], 0)
    return b_dq, b_dk


@triton.jit(do_not_specialize=["T"])
def chunk_bwd_dqk_kernel(
    q, k, v, g, z, h, do, dh, dq, dk, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    ACC: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr,
    KEY_DECAY: tl.constexpr,
):  # fmt: skip
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h, i_c, o_t, m_t, o_row, o_k, m_k, m_tk = chunk_block(i_k, i_t, i_bh, T, H, K, BT, BK)

    # b_dA[i, j] = do_i . v_j; b_dq, b_dk: the parts through the states, before the decays
    b_dA, b_dq, b_dk = chunk_bwd_dqk_states(
        do, v, h + i_c * K * V, dh + i_c * K * V, o_row, m_t, o_k, m_k, V, BT, BK, BV, ACC, DT, PREC
    )
    b_q = tl.load(q + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(DT)
    if KEY_DECAY:
        b_gk = tl.load(g + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(ACC)
        b_z = tl.load(z + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(ACC)
        b_zl, b_zp = chunk_z_bounds(z, i_b, i_h, i_t, T, H, K, BT, o_k, m_k, ACC)
        b_dq = tl.where(m_tk, b_dq * tl.exp(tl.minimum(b_zp[None, :] - b_z, 0)), 0)
        b_dk = tl.where(m_tk, b_dk * tl.exp(tl.minimum(b_gk - b_zl[None, :], 0)), 0)
        b_dq, b_dk = key_decay_intra_dqk(
            k, g, b_q, b_z, b_dA, b_dq, b_dk, i_b, i_h, i_t, o_t, m_t, o_k, m_k, T, H, K, BT, ACC
        )
    else:
        b_g = tl.load(g + i_h).to(ACC)
        b_dq = b_dq * (scale * tl.exp(b_g * (o_t + 1).to(ACC)))[:, None]
        b_dk = b_dk * head_decay_powers(b_g, o_t, m_t, T, i_t, BT, ACC)[:, None]
        b_dA = (head_decay_scores(b_dA, b_g, o_t, ACC) * scale).to(DT)
        b_k = tl.load(k + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0).to(DT)
        b_dq += tl.dot(b_dA, b_k, input_precision=PREC)
        b_dk += tl.dot(tl.trans(b_dA), b_q, input_precision=PREC)
    tl.store(dq + o_row[:, None] * K + o_k[None, :], b_dq.to(dq.dtype.element_ty), mask=m_tk)
    tl.store(dk + o_row[:, None] * K + o_k[None, :], b_dk.to(dk.dtype.element_ty), mask=m_tk)


def chunk_fwd_o(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    h: torch.Tensor,
    g: torch.Tensor,
    z: torch.Tensor | None,
    A: torch.Tensor | None,
    scale: float,
    chunk_size: int,
) -> torch.Tensor:
    """Outputs of every chunk, on contiguous inputs.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; h: the states before every chunk ``[B, H, NT, K, V]``
            (:func:`~recvision.ops.common.chunk_state.chunk_fwd_h`).
        g, z: as in :func:`~recvision.ops.common.chunk_state.chunk_fwd_h` (``z=None``: one decay per head).
        A: the additive form's intra-chunk scores ``[B, H, NT, BT, BT]`` (``None`` for retention).
        scale: retention's query scale (the additive form folds it into ``q``).
        chunk_size: tokens per chunk ``BT``.

    Returns:
        ``o [B, T, H, V]`` in the dtype of ``v``.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    BK, BV = block_size(K), block_size(V)
    o = torch.empty_like(v)
    chunk_fwd_o_kernel[(triton.cdiv(V, BV), triton.cdiv(T, chunk_size), B * H)](
        q=q, k=k, v=v, h=h, g=g, z=z, A=A, o=o, scale=scale, BK=BK, BV=BV, KEY_DECAY=z is not None,
        **chunk_launch_meta(q, v, chunk_size),
    )  # fmt: skip
    return o


def chunk_bwd_dqkv(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    z: torch.Tensor | None,
    A: torch.Tensor | None,
    scale: float,
    initial_state: torch.Tensor | None,
    do: torch.Tensor,
    dht: torch.Tensor | None,
    chunk_size: int,
    grad_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The backward pass of a chunked op on contiguous inputs: the states are recomputed, not kept.

    Args:
        q, k, v, g, z, A, scale, chunk_size: as in :func:`chunk_fwd_o`.
        initial_state: the forward pass's initial state ``[B, H, K, V]`` or ``None``.
        do: output gradient ``[B, T, H, V]``; dht: gradient of the final state ``[B, H, K, V]`` or ``None``.
        grad_dtype: dtype of ``dq`` and ``dk`` (``None``: the dtype of ``q``).

    Returns:
        ``dq, dk [B, T, H, K]``, ``dv [B, T, H, V]`` (dtype of ``v``) and ``dh0 [B, H, K, V]`` in the accumulation
        dtype (``None`` without an initial state).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    NT = triton.cdiv(T, chunk_size)
    BK, BV = block_size(K), block_size(V)
    h, _ = chunk_fwd_h(k, v, g, z, initial_state, False, chunk_size)
    dh, dh0 = chunk_bwd_dh(q, do, g, z, dht, initial_state, scale, chunk_size)
    meta = dict(BK=BK, BV=BV, KEY_DECAY=z is not None, **chunk_launch_meta(q, v, chunk_size))
    dq, dk, dv = torch.empty_like(q, dtype=grad_dtype), torch.empty_like(k, dtype=grad_dtype), torch.empty_like(v)
    chunk_bwd_dv_kernel[(triton.cdiv(V, BV), NT, B * H)](
        q=q, k=k, g=g, z=z, A=A, do=do, dh=dh, dv=dv, scale=scale, **meta
    )
    chunk_bwd_dqk_kernel[(triton.cdiv(K, BK), NT, B * H)](
        q=q, k=k, v=v, g=g, z=z, h=h, do=do, dh=dh, dq=dq, dk=dk, scale=scale, **meta
    )
    return dq, dk, dv, dh0
