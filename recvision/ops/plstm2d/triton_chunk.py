"""Chunked 2-D pLSTM on Triton: ``tl.dot`` kernels inside chunks and an anti-diagonal sweep between them.

Pöppel et al., "pLSTM: parallelizable Linear Source Transition Mark networks" (arXiv 2506.11997), §3.3, and the
chunkwise form of the reference code ``ml-jku/plstm`` (``torch/plstm_2d.py``). The split follows the chunked
linear-attention kernels of flash-linear-attention (``chunk_gla``): the cheap operators that depend only on the
gates are built in PyTorch, and the contractions with ``q, k, v`` run in Triton.

The grid is cut into ``bx x by`` chunks (``C = bx by`` cells, ``E = bx + by`` boundary edges; cells in row-major
``(x, y)`` order, edges right-going first, numbered by ``y``, then down-going, numbered by ``x``). For every chunk,
:func:`~recvision.ops.plstm2d.parallel.plstm2d_blocks` gives the operators ``G [C, C]`` (cell to cell), ``T [E, E]``
(incoming to outgoing edge), ``S [E, C]`` (cell source to outgoing edge) and ``M [C, E]`` (incoming edge to cell
mark). PyTorch's autograd carries their gradients back to the nine gates. With ``H_in[e]``, ``H_out[f]`` the
``[DK, DV]`` boundary states entering / leaving a chunk (``q`` already scaled)::

    o[c]      = sum_c' G[c, c'] (q_c . k_c') v_c'  +  sum_e M[c, e] q_c^T H_in[e]
    H_out[f]  = sum_e T[f, e] H_in[e]  +  sum_c S[f, c] k_c v_c^T

Chunk ``(i, j)`` receives its right-going states from ``(i - 1, j)`` and its down-going ones from ``(i, j - 1)``.

Kernels (programs over chunks or blocks of cells, ``B*H`` and ``DV`` blocks; the full ``DK`` in one tile):

* ``chunk_plstm2d_intra_fwd_kernel``: ``o = ((q k^T) * G) v`` for all chunks in one launch. ``G`` is
  block-lower-triangular in row-major cell order (``G[c, c'] = 0`` unless ``x' <= x`` and ``y' <= y``), so a row
  block only visits the column blocks up to itself.
* ``chunk_plstm2d_sources_kernel``: every chunk's own term ``sum_c S[f, c] k_c v_c^T`` on its outgoing edges, all
  chunks in one launch.
* ``chunk_plstm2d_sweep_kernel``: ``H_out += T H_in``, one launch per anti-diagonal of the chunk grid
  (``nx + ny - 2`` launches). It is the only sequential part, and it holds no ``q, k, v`` contraction.
* ``chunk_plstm2d_marks_kernel``: ``o += sum_e M[:, e] q H_in[e]``, all chunks in one launch.
* Backward: ``chunk_plstm2d_intra_bwd_kernel``; then the adjoint states ``dH_in[e] = sum_c M[c, e] q_c do_c^T +
  sum_f T[f, e] dH_out[f]`` with the same sources and sweep kernels (``ADJOINT=True``, reverse diagonal order);
  then ``chunk_plstm2d_inter_bwd_kernel`` for the gradients through the boundary states, all chunks in one launch.
  The formulas are in ``README.md``.

The forward pass keeps every chunk's outgoing states for the backward pass: ``E DK DV`` floats per chunk, i.e.
``(1/bx + 1/by) DK DV`` per cell; no per-cell state is ever stored. All arithmetic is in float32 (float64 for
float64 inputs); ``tl.dot`` uses TF32 for 16-bit inputs, and for float32 inputs when PyTorch's float32 matmul
precision is not ``"highest"``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..common.triton_utils import MAX_HEAD_DIM, interpreted, sum_combine
from ..utils.guards import input_guard
from .common import check_plstm2d_inputs, chunk_sides, compute_dtype, gate_dict
from .parallel import from_blocks, pad_grid, plstm2d_blocks, to_blocks

__all__ = [
    "DEFAULT_TRITON_CHUNK_SIZE",
    "MIN_CHUNK_SIDE",
    "ChunkPlstm2dFunction",
    "chunk_operators",
    "chunk_plstm2d_triton",
    "triton_chunk_sides",
]

DEFAULT_TRITON_CHUNK_SIZE = 8
# tl.dot needs every tile side >= 16: a chunk has at least 4 x 4 = 16 cells
MIN_CHUNK_SIDE = 4
# rows of DK per program of the sweep kernel
SWEEP_ROWS = 16
# bytes of one register tile ([BC, BK], [BC, BV], [BK, BV]); the backward kernels hold about eight
TILE_BYTES = 16384


@triton.jit(do_not_specialize=["NCH"])
def chunk_plstm2d_intra_fwd_kernel(
    q,
    k,
    v,
    g,
    o,
    NCH,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    BC: tl.constexpr,
    PREC: tl.constexpr,
):
    i_cr, i_n, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    NR: tl.constexpr = C // BC
    ch = tl.cast(i_n, tl.int64) * NCH + i_cr // NR
    r = i_cr % NR
    o_c = tl.arange(0, BC)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    rows = ch * C + r * BC + o_c
    b_q = tl.load(q + rows[:, None] * K + o_k[None, :], mask=m_k[None, :], other=0)  # [BC, BK]
    b_o = tl.zeros([BC, BV], dtype=b_q.dtype)
    for cb in range(r + 1):
        cols = ch * C + cb * BC + o_c
        b_k = tl.load(k + cols[:, None] * K + o_k[None, :], mask=m_k[None, :], other=0)
        b_v = tl.load(v + cols[:, None] * V + o_v[None, :], mask=m_v[None, :], other=0)  # [BC, BV]
        b_g = tl.load(g + rows[:, None] * C + (cb * BC + o_c)[None, :])  # [BC, BC]
        b_a = tl.dot(b_q, tl.trans(b_k), input_precision=PREC) * b_g
        b_o += tl.dot(b_a, b_v, input_precision=PREC)
    tl.store(o + rows[:, None] * V + o_v[None, :], b_o, mask=m_v[None, :])


@triton.jit(do_not_specialize=["NX", "NY"])
def chunk_plstm2d_sources_kernel(
    a,
    b,
    w,
    h,
    NX,
    NY,
    K: tl.constexpr,
    V: tl.constexpr,
    BX: tl.constexpr,
    BY: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    BC: tl.constexpr,
    PREC: tl.constexpr,
    ADJOINT: tl.constexpr,
):
    # forward: h[f] = sum_c S[f, c] k_c v_c^T (a = k, b = v, w = S [E, C]) on the outgoing edges that have a reader;
    # adjoint: h[e] = sum_c M[c, e] q_c do_c^T (a = q, b = do, w = M [C, E]) on the incoming edges that have a writer
    i_ch, i_n, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    C: tl.constexpr = BX * BY
    E: tl.constexpr = BX + BY
    i = i_ch // NY
    j = i_ch % NY
    ch = tl.cast(i_n, tl.int64) * NX * NY + i_ch
    o_c = tl.arange(0, BC)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    o_kv = o_k[:, None] * V + o_v[None, :]
    for f in range(E):
        b_acc = tl.zeros([BK, BV], dtype=h.dtype.element_ty)
        for r in range(C // BC):
            rows = ch * C + r * BC + o_c
            b_a = tl.load(a + rows[:, None] * K + o_k[None, :], mask=m_k[None, :], other=0)
            b_b = tl.load(b + rows[:, None] * V + o_v[None, :], mask=m_v[None, :], other=0)
            if ADJOINT:
                b_w = tl.load(w + rows * E + f)
            else:
                b_w = tl.load(w + (ch * E + f) * C + r * BC + o_c)
            b_acc += tl.dot(tl.trans(b_a * b_w[:, None]), b_b, input_precision=PREC)
        if ADJOINT:
            has = tl.where(f < BY, i > 0, j > 0)
        else:
            has = tl.where(f < BY, i + 1 < NX, j + 1 < NY)
        tl.store(h + (ch * E + f) * K * V + o_kv, b_acc, mask=m_kv & has)


@triton.jit(do_not_specialize=["i_lo", "d", "NX", "NY"])
def chunk_plstm2d_sweep_kernel(
    t,
    h,
    i_lo,
    d,
    NX,
    NY,
    K: tl.constexpr,
    V: tl.constexpr,
    BX: tl.constexpr,
    BY: tl.constexpr,
    BKS: tl.constexpr,
    BV: tl.constexpr,
    ADJOINT: tl.constexpr,
):
    # the chunks (i, j) of one anti-diagonal i + j = d, in place on h [N, NCH, E, K, V], which holds their own terms:
    # forward: H_out[f] += sum_e T[f, e] H_in[e], H_in[e] = H_out[e] of the left (e < BY) or upper chunk;
    # adjoint: dH_in[e] += sum_f T[f, e] dH_out[f], dH_out[f] = dH_in[f] of the right (f < BY) or lower chunk.
    # No contraction over K here, so K is split into blocks of BKS rows too (more programs in the sequential part).
    i_c, i_n, i_kv = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    NKS: tl.constexpr = (K + BKS - 1) // BKS
    i_v = i_kv // NKS
    E: tl.constexpr = BX + BY
    i = i_lo + i_c
    j = d - i
    ch = (tl.cast(i_n, tl.int64) * NX + i) * NY + j
    o_k = (i_kv % NKS) * BKS + tl.arange(0, BKS)
    o_v = i_v * BV + tl.arange(0, BV)
    m_kv = (o_k < K)[:, None] & (o_v < V)[None, :]
    o_kv = o_k[:, None] * V + o_v[None, :]
    for x in range(E):
        is_r = x < BY
        if ADJOINT:
            has_out = tl.where(is_r, i > 0, j > 0)
        else:
            has_out = tl.where(is_r, i + 1 < NX, j + 1 < NY)
        p_out = h + (ch * E + x) * K * V + o_kv
        b_acc = tl.load(p_out, mask=m_kv & has_out, other=0)
        for y in range(E):
            is_ry = y < BY
            if ADJOINT:
                nb = tl.where(is_ry, ch + NY, ch + 1)
                has_in = tl.where(is_ry, i + 1 < NX, j + 1 < NY)
                b_t = tl.load(t + (ch * E + y) * E + x)
            else:
                nb = tl.where(is_ry, ch - NY, ch - 1)
                has_in = tl.where(is_ry, i > 0, j > 0)
                b_t = tl.load(t + (ch * E + x) * E + y)
            b_acc += b_t * tl.load(h + (nb * E + y) * K * V + o_kv, mask=m_kv & has_in, other=0)
        tl.store(p_out, b_acc, mask=m_kv & has_out)


@triton.jit(do_not_specialize=["NX", "NY"])
def chunk_plstm2d_marks_kernel(
    q,
    m,
    h,
    o,
    NX,
    NY,
    K: tl.constexpr,
    V: tl.constexpr,
    BX: tl.constexpr,
    BY: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    BC: tl.constexpr,
    PREC: tl.constexpr,
):
    # o[c] += sum_e M[c, e] q_c^T H_in[e] for one block of cells; H_in[e] = H_out[e] of the left or upper chunk
    i_cr, i_n, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    C: tl.constexpr = BX * BY
    E: tl.constexpr = BX + BY
    NR: tl.constexpr = C // BC
    i_ch = i_cr // NR
    i = i_ch // NY
    j = i_ch % NY
    ch = tl.cast(i_n, tl.int64) * NX * NY + i_ch
    o_c = tl.arange(0, BC)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    o_kv = o_k[:, None] * V + o_v[None, :]
    rows = ch * C + (i_cr % NR) * BC + o_c
    b_q = tl.load(q + rows[:, None] * K + o_k[None, :], mask=m_k[None, :], other=0)
    b_o = tl.load(o + rows[:, None] * V + o_v[None, :], mask=m_v[None, :], other=0)
    for e in range(E):
        is_r = e < BY
        src = tl.where(is_r, ch - NY, ch - 1)
        b_h = tl.load(h + (src * E + e) * K * V + o_kv, mask=m_kv & tl.where(is_r, i > 0, j > 0), other=0)
        b_o += tl.dot(b_q * tl.load(m + rows * E + e)[:, None], b_h, input_precision=PREC)
    tl.store(o + rows[:, None] * V + o_v[None, :], b_o, mask=m_v[None, :])


@triton.jit(do_not_specialize=["NCH", "NTOT"])
def chunk_plstm2d_intra_bwd_kernel(
    q,
    k,
    v,
    g,
    do,
    dq,
    dk,
    dv,
    dg,
    NCH,
    NTOT,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    BC: tl.constexpr,
    PREC: tl.constexpr,
):
    # program b: dq of row block b (from column blocks <= b); dk, dv, dG of column block b (from row blocks >= b)
    i_cb, i_n, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    NR: tl.constexpr = C // BC
    ch = tl.cast(i_n, tl.int64) * NCH + i_cb // NR
    b = i_cb % NR
    # dq, dk and dG are partial sums over the DV blocks: slot i_v of [NV, B*H, NCH, ...]
    part = tl.cast(i_v, tl.int64) * NTOT
    o_c = tl.arange(0, BC)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    own = ch * C + b * BC + o_c
    b_qb = tl.load(q + own[:, None] * K + o_k[None, :], mask=m_k[None, :], other=0)
    b_kb = tl.load(k + own[:, None] * K + o_k[None, :], mask=m_k[None, :], other=0)
    b_vb = tl.load(v + own[:, None] * V + o_v[None, :], mask=m_v[None, :], other=0)
    b_dob = tl.load(do + own[:, None] * V + o_v[None, :], mask=m_v[None, :], other=0)

    b_dq = tl.zeros([BC, BK], dtype=b_qb.dtype)
    for cb in range(b + 1):
        cols = ch * C + cb * BC + o_c
        b_k = tl.load(k + cols[:, None] * K + o_k[None, :], mask=m_k[None, :], other=0)
        b_v = tl.load(v + cols[:, None] * V + o_v[None, :], mask=m_v[None, :], other=0)
        b_g = tl.load(g + own[:, None] * C + (cb * BC + o_c)[None, :])
        b_dp = tl.dot(b_dob, tl.trans(b_v), input_precision=PREC)  # do v^T  [BC, BC]
        b_dq += tl.dot(b_dp * b_g, b_k, input_precision=PREC)
    tl.store(dq + (part * C + own)[:, None] * K + o_k[None, :], b_dq, mask=m_k[None, :])

    b_dk = tl.zeros([BC, BK], dtype=b_qb.dtype)
    b_dv = tl.zeros([BC, BV], dtype=b_qb.dtype)
    for r in range(NR):
        rows = ch * C + r * BC + o_c
        p_dg = dg + (part * C + rows)[:, None] * C + (b * BC + o_c)[None, :]
        if r < b:
            # G is zero above the diagonal blocks whatever the gates: its gradient there is never used
            tl.store(p_dg, tl.zeros([BC, BC], dtype=b_qb.dtype))
        else:
            b_q = tl.load(q + rows[:, None] * K + o_k[None, :], mask=m_k[None, :], other=0)
            b_do = tl.load(do + rows[:, None] * V + o_v[None, :], mask=m_v[None, :], other=0)
            b_g = tl.load(g + rows[:, None] * C + (b * BC + o_c)[None, :])
            b_a = tl.dot(b_q, tl.trans(b_kb), input_precision=PREC)  # q k^T  [BC, BC]
            b_dp = tl.dot(b_do, tl.trans(b_vb), input_precision=PREC)
            tl.store(p_dg, b_a * b_dp)
            b_dk += tl.dot(tl.trans(b_dp * b_g), b_q, input_precision=PREC)
            b_dv += tl.dot(tl.trans(b_a * b_g), b_do, input_precision=PREC)
    tl.store(dk + (part * C + own)[:, None] * K + o_k[None, :], b_dk, mask=m_k[None, :])
    tl.store(dv + own[:, None] * V + o_v[None, :], b_dv, mask=m_v[None, :])


@triton.jit(do_not_specialize=["NX", "NY", "NTOT"])
def chunk_plstm2d_inter_bwd_kernel(
    q,
    k,
    v,
    s,
    m,
    h,
    do,
    dh,
    dq,
    dk,
    dv,
    dt,
    ds,
    dm,
    NX,
    NY,
    NTOT,
    K: tl.constexpr,
    V: tl.constexpr,
    BX: tl.constexpr,
    BY: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    BC: tl.constexpr,
    PREC: tl.constexpr,
):
    # gradients through the boundary states of one block of cells, once H (forward) and dH (adjoint) are known;
    # dq, dk, dv are added to the intra part; dq, dk, dT, dS, dM are partial sums over the DV blocks (slot i_v)
    i_cr, i_n, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    C: tl.constexpr = BX * BY
    E: tl.constexpr = BX + BY
    NR: tl.constexpr = C // BC
    i_ch = i_cr // NR
    r = i_cr % NR
    i = i_ch // NY
    j = i_ch % NY
    ch = tl.cast(i_n, tl.int64) * NX * NY + i_ch
    part = tl.cast(i_v, tl.int64) * NTOT + ch
    o_c = tl.arange(0, BC)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    o_kv = o_k[:, None] * V + o_v[None, :]

    if r == 0:
        # dT[f, e] = <dH_out[f], H_in[e]>
        for e in range(E):
            is_r = e < BY
            src = tl.where(is_r, ch - NY, ch - 1)
            b_hin = tl.load(h + (src * E + e) * K * V + o_kv, mask=m_kv & tl.where(is_r, i > 0, j > 0), other=0)
            for f in range(E):
                is_rf = f < BY
                dst = tl.where(is_rf, ch + NY, ch + 1)
                has_dst = tl.where(is_rf, i + 1 < NX, j + 1 < NY)
                b_dho = tl.load(dh + (dst * E + f) * K * V + o_kv, mask=m_kv & has_dst, other=0)
                b_dt = tl.reduce(tl.reduce(b_dho * b_hin, 1, sum_combine), 0, sum_combine)
                tl.store(dt + (part * E + f) * E + e, b_dt)

    rows = ch * C + r * BC + o_c
    b_q = tl.load(q + rows[:, None] * K + o_k[None, :], mask=m_k[None, :], other=0)
    b_k = tl.load(k + rows[:, None] * K + o_k[None, :], mask=m_k[None, :], other=0)
    b_v = tl.load(v + rows[:, None] * V + o_v[None, :], mask=m_v[None, :], other=0)
    b_do = tl.load(do + rows[:, None] * V + o_v[None, :], mask=m_v[None, :], other=0)
    p_dq = dq + (part * C + r * BC + o_c)[:, None] * K + o_k[None, :]
    p_dk = dk + (part * C + r * BC + o_c)[:, None] * K + o_k[None, :]
    p_dv = dv + rows[:, None] * V + o_v[None, :]
    b_dq = tl.load(p_dq, mask=m_k[None, :], other=0)
    b_dk = tl.load(p_dk, mask=m_k[None, :], other=0)
    b_dv = tl.load(p_dv, mask=m_v[None, :], other=0)
    # dq_c += sum_e M[c, e] H_in[e] do_c;  dM[c, e] = q_c^T H_in[e] do_c
    for e in range(E):
        is_r = e < BY
        src = tl.where(is_r, ch - NY, ch - 1)
        b_hin = tl.load(h + (src * E + e) * K * V + o_kv, mask=m_kv & tl.where(is_r, i > 0, j > 0), other=0)
        b_z = tl.dot(b_do, tl.trans(b_hin), input_precision=PREC)  # [BC, BK]
        b_dq += tl.load(m + rows * E + e)[:, None] * b_z
        tl.store(dm + (part * C + r * BC + o_c) * E + e, tl.reduce(b_z * b_q, 1, sum_combine))
    # dk_c += sum_f S[f, c] dH_out[f] v_c;  dv_c += sum_f S[f, c] dH_out[f]^T k_c;  dS[f, c] = k_c^T dH_out[f] v_c
    for f in range(E):
        is_rf = f < BY
        dst = tl.where(is_rf, ch + NY, ch + 1)
        has_dst = tl.where(is_rf, i + 1 < NX, j + 1 < NY)
        b_dho = tl.load(dh + (dst * E + f) * K * V + o_kv, mask=m_kv & has_dst, other=0)
        b_s = tl.load(s + (ch * E + f) * C + r * BC + o_c)
        b_w = tl.dot(b_v, tl.trans(b_dho), input_precision=PREC)  # [BC, BK]
        b_dk += b_s[:, None] * b_w
        b_dv += b_s[:, None] * tl.dot(b_k, b_dho, input_precision=PREC)
        tl.store(ds + (part * E + f) * C + r * BC + o_c, tl.reduce(b_w * b_k, 1, sum_combine))
    tl.store(p_dq, b_dq, mask=m_k[None, :])
    tl.store(p_dk, b_dk, mask=m_k[None, :])
    tl.store(p_dv, b_dv, mask=m_v[None, :])


def _tiles(K: int, V: int, C: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """``(BK, BV, BC)``: the full key dim, a value block and a cell block; every side >= 16 (``tl.dot``), each
    register tile at most :data:`TILE_BYTES`."""
    elements = TILE_BYTES // (torch.finfo(dtype).bits // 8)
    BK = max(16, triton.next_power_of_2(K))
    BV = max(16, min(triton.next_power_of_2(V), elements // BK))
    # 32 cells: with 64-cell blocks the backward kernels need more than the ~100 KiB of shared memory of sm_80/90
    BC = max(16, min(C, 32, elements // max(BK, BV)))
    return BK, BV, BC


def _dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision for inputs of ``dtype`` (see the module docstring)."""
    if dtype == torch.float64 or (dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest"):
        return "ieee"
    return "tf32"


def _num_warps(BC: int, BK: int, BV: int) -> int:
    """8 warps once a register tile has 4096 elements (fewer registers per thread, no spills at DK = DV = 64)."""
    return 8 if max(BK * BV, BC * max(BK, BV)) >= 4096 else 4


class _Layout:
    """Sizes of one call: ``N = B*H``, the chunk grid ``nx x ny``, chunk sides and the kernel tiles."""

    def __init__(self, q: torch.Tensor, v: torch.Tensor, nx: int, ny: int, bx: int, by: int, precision: str):
        self.N, self.NCH, self.C, self.K = q.shape
        self.V = v.shape[-1]
        self.nx, self.ny, self.bx, self.by, self.E = nx, ny, bx, by, bx + by
        self.BK, self.BV, self.BC = _tiles(self.K, self.V, self.C, q.dtype)
        self.NV = triton.cdiv(self.V, self.BV)
        self.NR = self.C // self.BC
        self.meta = dict(K=self.K, V=self.V, BK=self.BK, BV=self.BV, BC=self.BC, PREC=precision)
        self.meta["num_warps"] = _num_warps(self.BC, self.BK, self.BV)


def _sweep(t: torch.Tensor, h: torch.Tensor, lay: _Layout, adjoint: bool) -> None:
    """Run the boundary-state sweep over the anti-diagonals of the chunk grid (in reverse for the adjoint)."""
    diagonals = _diagonals(lay.nx, lay.ny)
    # nothing enters the first chunk; nothing leaves the last one
    for d, i_lo, n in reversed(diagonals[:-1]) if adjoint else diagonals[1:]:
        chunk_plstm2d_sweep_kernel[(n, lay.N, lay.NV * triton.cdiv(lay.K, SWEEP_ROWS))](
            t, h, i_lo, d, lay.nx, lay.ny, K=lay.K, V=lay.V, BX=lay.bx, BY=lay.by, BKS=SWEEP_ROWS, BV=lay.BV,
            ADJOINT=adjoint, num_warps=4,
        )  # fmt: skip


def chunk_plstm2d_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    t: torch.Tensor,
    s: torch.Tensor,
    m: torch.Tensor,
    lay: _Layout,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Forward pass on contiguous chunked tensors (all in the accumulation dtype).

    Four steps: the intra-chunk output, every chunk's own source terms on its outgoing edges (both one launch for
    all chunks), the sweep that adds the transported incoming states (one launch per anti-diagonal of the chunk
    grid), and the marks of the incoming states on the cells (one launch).

    Args:
        q, k: scaled queries and keys ``[N, NCH, C, DK]`` (``NCH = nx ny`` chunks in row-major order).
        v: values ``[N, NCH, C, DV]``.
        g, t, s, m: chunk operators ``[N, NCH, C, C]``, ``[N, NCH, E, E]``, ``[N, NCH, E, C]``, ``[N, NCH, C, E]``.
        lay: sizes and tiles.

    Returns:
        ``o [N, NCH, C, DV]`` and the outgoing boundary states ``H [N, NCH, E, DK, DV]`` (``None`` for one chunk;
        the states of edges that leave the grid are not written).
    """
    o = torch.empty_like(v)
    chunk_plstm2d_intra_fwd_kernel[(lay.NCH * lay.NR, lay.N, lay.NV)](q, k, v, g, o, lay.NCH, C=lay.C, **lay.meta)
    if lay.NCH == 1:
        return o, None
    h = q.new_empty(lay.N, lay.NCH, lay.E, lay.K, lay.V)
    edges = dict(BX=lay.bx, BY=lay.by, **lay.meta)
    chunk_plstm2d_sources_kernel[(lay.NCH, lay.N, lay.NV)](k, v, s, h, lay.nx, lay.ny, ADJOINT=False, **edges)
    _sweep(t, h, lay, adjoint=False)
    chunk_plstm2d_marks_kernel[(lay.NCH * lay.NR, lay.N, lay.NV)](q, m, h, o, lay.nx, lay.ny, **edges)
    return o, h


def chunk_plstm2d_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    t: torch.Tensor,
    s: torch.Tensor,
    m: torch.Tensor,
    h: torch.Tensor | None,
    do: torch.Tensor,
    lay: _Layout,
) -> tuple[torch.Tensor, ...]:
    """Backward pass: gradients of ``q, k, v, g, t, s, m`` (shapes as in :func:`chunk_plstm2d_fwd`).

    The adjoint states ``dH [N, NCH, E, DK, DV]`` (of the incoming edges) are built like the forward states: the
    marks' terms for all chunks, then the reverse sweep; the gradients through the boundary states then take one
    launch for all chunks.
    """
    N, NCH, C, E, NV = lay.N, lay.NCH, lay.C, lay.E, lay.NV
    dq = q.new_empty(NV, N, NCH, C, lay.K)
    dk = q.new_empty(NV, N, NCH, C, lay.K)
    dv = torch.empty_like(v)
    dg = q.new_empty(NV, N, NCH, C, C)
    chunk_plstm2d_intra_bwd_kernel[(NCH * lay.NR, N, NV)](q, k, v, g, do, dq, dk, dv, dg, NCH, N * NCH, C=C, **lay.meta)
    if h is None:
        dt, ds, dm = torch.zeros_like(t), torch.zeros_like(s), torch.zeros_like(m)
    else:
        edges = dict(BX=lay.bx, BY=lay.by, **lay.meta)
        dh = torch.empty_like(h)
        chunk_plstm2d_sources_kernel[(NCH, N, NV)](q, do, m, dh, lay.nx, lay.ny, ADJOINT=True, **edges)
        _sweep(t, dh, lay, adjoint=True)
        dt = q.new_empty(NV, N, NCH, E, E)
        ds = q.new_empty(NV, N, NCH, E, C)
        dm = q.new_empty(NV, N, NCH, C, E)
        chunk_plstm2d_inter_bwd_kernel[(NCH * lay.NR, N, NV)](
            q, k, v, s, m, h, do, dh, dq, dk, dv, dt, ds, dm, lay.nx, lay.ny, N * NCH, **edges
        )
        dt, ds, dm = dt.sum(0), ds.sum(0), dm.sum(0)
    return dq.sum(0), dk.sum(0), dv, dg.sum(0), dt, ds, dm


class ChunkPlstm2dFunction(torch.autograd.Function):
    """Autograd wrapper of the chunk kernels; differentiable w.r.t. ``q, k, v`` and the chunk operators."""

    @staticmethod
    @input_guard
    def forward(ctx, q, k, v, g, t, s, m, nx, ny, bx, by, precision):
        lay = _Layout(q, v, nx, ny, bx, by, precision)
        o, h = chunk_plstm2d_fwd(q, k, v, g, t, s, m, lay)
        if any(ctx.needs_input_grad[:7]):
            ctx.save_for_backward(q, k, v, g, t, s, m, h)
        ctx.lay = lay
        return o

    @staticmethod
    @torch.autograd.function.once_differentiable
    @input_guard
    def backward(ctx, do: torch.Tensor):
        q, k, v, g, t, s, m, h = ctx.saved_tensors
        return (*chunk_plstm2d_bwd(q, k, v, g, t, s, m, h, do, ctx.lay), None, None, None, None, None)


def _interpreted() -> bool:
    """Whether the kernels run in Triton's interpreter (``TRITON_INTERPRET=1`` when they were defined)."""
    return interpreted(chunk_plstm2d_intra_fwd_kernel)


def _diagonals(X: int, Y: int) -> list[tuple[int, int, int]]:
    """``(d, x_lo, n)`` for every anti-diagonal ``x + y = d`` of the chunk grid: its first row and its length."""
    out = []
    for d in range(X + Y - 1):
        x_lo = max(0, d - Y + 1)
        out.append((d, x_lo, min(d, X - 1) - x_lo + 1))
    return out


def triton_chunk_sides(X: int, Y: int, chunk_size: int | None) -> tuple[int, int]:
    """Chunk sides of the Triton kernels: :func:`~recvision.ops.plstm2d.common.chunk_sides` (default
    :data:`DEFAULT_TRITON_CHUNK_SIZE`), raised to at least :data:`MIN_CHUNK_SIDE` (the grid is padded)."""
    bx, by = chunk_sides(X, Y, DEFAULT_TRITON_CHUNK_SIZE if chunk_size is None else chunk_size)
    return max(bx, MIN_CHUNK_SIDE), max(by, MIN_CHUNK_SIDE)


def chunk_operators(
    flat: dict[str, torch.Tensor], bx: int, by: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The operators of every chunk, built in PyTorch by log-depth doubling (differentiable).

    Args:
        flat: the nine gates ``[N, X, Y]`` (``X``, ``Y`` multiples of ``bx``, ``by``).
        bx, by: chunk sides.

    Returns:
        ``G [N, NCH, C, C]``, ``T [N, NCH, E, E]``, ``S [N, NCH, E, C]``, ``M [N, NCH, C, E]`` with ``C = bx by``,
        ``E = bx + by`` (right-going edges first) and the ``NCH`` chunks in row-major order.
    """
    b = plstm2d_blocks(flat, bx, by)
    N, nx, ny = b.g.shape[:3]
    C, E = bx * by, bx + by
    t = torch.cat([torch.cat([b.t_rr, b.t_rd], -1), torch.cat([b.t_dr, b.t_dd], -1)], -2)
    s = torch.cat([b.s_r.flatten(-2), b.s_d.flatten(-2)], -2)
    m = torch.cat([b.m_r.flatten(-3, -2), b.m_d.flatten(-3, -2)], -1)
    return (
        b.g.reshape(N, nx * ny, C, C),
        t.reshape(N, nx * ny, E, E),
        s.reshape(N, nx * ny, E, C),
        m.reshape(N, nx * ny, C, E),
    )


@torch.compiler.disable
def chunk_plstm2d_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    source_r: torch.Tensor,
    source_d: torch.Tensor,
    trans_rl: torch.Tensor,
    trans_ru: torch.Tensor,
    trans_du: torch.Tensor,
    trans_dl: torch.Tensor,
    mark_l: torch.Tensor,
    mark_u: torch.Tensor,
    direct: torch.Tensor,
    *,
    scale: float | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """2-D pLSTM in chunks on Triton kernels, differentiable w.r.t. every tensor input.

    Same semantics as :func:`~recvision.ops.plstm2d.chunk_plstm2d_torch` (module docstring and ``README.md`` for the
    maths). The grid is zero-padded at its far ends to whole chunks. Runs on CUDA tensors, or on CPU tensors under
    ``TRITON_INTERPRET=1``.

    Args:
        q: queries ``[B, X, Y, H, DK]``.
        k: keys ``[B, X, Y, H, DK]``.
        v: values ``[B, X, Y, H, DV]``.
        source_r, source_d, trans_rl, trans_ru, trans_du, trans_dl, mark_l, mark_u, direct: the nine gates,
            ``[B, X, Y, H]`` each (any floating dtype).
        scale: query scale; ``None`` means ``DK ** -0.5``.
        chunk_size: chunk side, a power of two, clipped to the grid's power-of-two size and then raised to at least
            :data:`MIN_CHUNK_SIDE` (:func:`triton_chunk_sides`); ``None`` means :data:`DEFAULT_TRITON_CHUNK_SIZE`.
            Does not change the result beyond rounding.

    Returns:
        ``o [B, X, Y, H, DV]`` in q's dtype (computed in float32, float64 for float64 inputs).

    Raises:
        ValueError: on malformed inputs (the message names the argument), ``DK`` or ``DV`` above 256, a
            ``chunk_size`` that is not a power of two, or CPU tensors outside the interpreter.
    """
    gates = gate_dict(source_r, source_d, trans_rl, trans_ru, trans_du, trans_dl, mark_l, mark_u, direct)
    scale = check_plstm2d_inputs(q, k, v, gates, scale)
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(f"chunk_plstm2d_triton supports float16/bfloat16/float32/float64 q, k, v; got {q.dtype}")
    if q.shape[-1] > MAX_HEAD_DIM or v.shape[-1] > MAX_HEAD_DIM:
        raise ValueError(
            f"chunk_plstm2d_triton supports head dims DK, DV <= {MAX_HEAD_DIM}; got DK={q.shape[-1]}, DV={v.shape[-1]}"
        )
    if not q.is_cuda and not _interpreted():
        raise ValueError(
            f"chunk_plstm2d_triton needs CUDA tensors (or TRITON_INTERPRET=1 set before Triton is imported); q is on "
            f"{q.device}. Use chunk_plstm2d_torch or plstm2d on the CPU."
        )
    B, X, Y, H, _ = q.shape
    bx, by = triton_chunk_sides(X, Y, chunk_size)
    nx, ny = -(-X // bx), -(-Y // by)
    qp, kp, vp, flat = pad_grid(q, k, v, gates, nx * bx, ny * by, compute_dtype(q.dtype))
    g, t, s, m = chunk_operators(flat, bx, by)
    qb, kb, vb = (to_blocks(x, bx, by).flatten(1, 2) for x in (qp * scale, kp, vp))
    o = ChunkPlstm2dFunction.apply(qb, kb, vb, g, t, s, m, nx, ny, bx, by, _dot_precision(q.dtype))
    o = from_blocks(o.view(B * H, nx, ny, bx * by, -1), B, H, bx, by)
    return o[:, :X, :Y].to(q.dtype)
