"""2-D pLSTM as a per-cell Triton wavefront: forward and backward kernels for every input.

The CUDA path of :func:`~recvision.ops.plstm2d.plstm2d` is the chunked form in ``triton_chunk.py``; this cell-by-cell
form is kept as an independent implementation (tests, benchmarks) with the least memory per cell.

Pöppel et al., "pLSTM: parallelizable Linear Source Transition Mark networks" (arXiv 2506.11997), §3; reference
code ``ml-jku/plstm`` (``pLSTM2D_torch``, which propagates chunk states along anti-diagonals). Per batch and head,
with every gate taken at ``(x, y)`` and ``R[-1, y] = D[x, -1] = 0``::

    R[x, y] = trans_rl R[x-1, y] + trans_ru D[x, y-1] + source_r k v^T          (edge to the right, [DK, DV])
    D[x, y] = trans_du D[x, y-1] + trans_dl R[x-1, y] + source_d k v^T          (edge downwards)
    o[x, y] = scale q^T (mark_l R[x-1, y] + mark_u D[x, y-1]) + direct scale (q . k) v

Cells on one anti-diagonal ``x + y = d`` depend only on diagonal ``d - 1``, so the host launches one kernel per
diagonal, with one program per ``(cell on the diagonal, b*h)``; a program holds the full ``DK`` and loops over
``DV`` blocks. States live in two "front" buffers: ``R`` indexed by the row ``y`` (``[B*H, Y, DK, DV]``) and ``D``
by the column ``x`` (``[B*H, X, DK, DV]``). Diagonal ``d`` reads slot ``y`` / ``x`` of the front after ``d - 1``
and writes the front after ``d`` (in place when both are the same buffer: no other program of the launch touches
those slots).

Backward (``plstm2d_bwd_kernel``): the adjoint states ``A_R[x, y] = dL/dR[x, y]`` and ``A_D[x, y] = dL/dD[x, y]``
run the same recurrence towards ``-x, -y``::

    A_R[x-1, y] = scale mark_l q do^T + trans_rl A_R[x, y] + trans_dl A_D[x, y]
    A_D[x, y-1] = scale mark_u q do^T + trans_du A_D[x, y] + trans_ru A_R[x, y]

(gates and q, do at ``(x, y)``), one launch per diagonal in reverse order. With ``R_in = R[x-1, y]``,
``D_in = D[x, y-1]``, ``A_R = A_R[x, y]``, ``A_D = A_D[x, y]`` the gradients at a cell are::

    dq = scale (mark_l R_in + mark_u D_in) do + direct scale (v . do) k
    dk = (source_r A_R + source_d A_D) v + direct scale (v . do) q
    dv = (source_r A_R + source_d A_D)^T k + direct scale (q . k) do
    dsource_r = k^T A_R v          dsource_d = k^T A_D v
    dtrans_rl = <A_R, R_in>        dtrans_ru = <A_R, D_in>     dtrans_du = <A_D, D_in>    dtrans_dl = <A_D, R_in>
    dmark_l = scale q^T R_in do    dmark_u = scale q^T D_in do  ddirect = scale (q . k) (v . do)

The transition gradients need the forward states and the adjoint states at the same cell. Storing every state
costs ``2 X Y DK DV`` floats per head, so the forward pass keeps only the fronts before every ``chunk_size``-th
diagonal; the backward pass walks these segments of diagonals in reverse, recomputes a segment's fronts from its
checkpoint and then runs the adjoint launches through it (memory ``(X + Y) (ceil(N_d / C) + C)`` states per head,
``N_d = X + Y - 1``; the default ``C = ceil(sqrt(N_d))``).

Everything is computed in float32 (float64 for float64 inputs); inputs are loaded and cast, outputs and gradients
are written in the inputs' dtypes.

Cost: a forward pass is ``X + Y - 1`` launches, a backward pass twice that (recompute + adjoint). Each cell reads
and writes two ``[DK, DV]`` states, so the kernels are bound by memory traffic and, at small ``B * H``, by launch
latency; no tensor-core ``tl.dot`` is used (the contractions per cell are matrix-vector products).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..utils.guards import input_guard
from .common import GATE_NAMES, check_plstm2d_inputs, compute_dtype

__all__ = ["triton_wavefront_plstm2d", "TritonPlstm2dFunction", "default_segment"]

MAX_HEAD_DIM = 256
# elements of one [BK, BV] state tile; the backward kernel holds about ten of them
MAX_TILE = 2048
# The combine function of ``tl.sum``. The kernels call ``tl.reduce(x, axis, _sum_combine)`` instead of ``tl.sum``:
# compiled it is the same reduction, but Triton's interpreter re-patches its language module on every call of a
# jitted helper such as ``tl.sum`` (milliseconds each), which made the CPU tests several times slower.
_sum_combine = tl.standard._sum_combine


@triton.jit(do_not_specialize=["d", "x_lo"])
def plstm2d_fwd_kernel(
    q,
    k,
    v,
    source_r,
    source_d,
    trans_rl,
    trans_ru,
    trans_du,
    trans_dl,
    mark_l,
    mark_u,
    direct,
    o,
    r_src,
    r_dst,
    d_src,
    d_dst,
    scale,
    d,
    x_lo,
    X,
    Y,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    ACC: tl.constexpr,
    WRITE_O: tl.constexpr,
):
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_bh64 = tl.cast(i_bh, tl.int64)
    i_b = i_bh64 // H
    i_h = i_bh64 % H
    x = tl.cast(x_lo + i_c, tl.int64)
    y = tl.cast(d, tl.int64) - x
    # index of (b, x, y, h) in the [B, X, Y, H] gate layout
    row = ((i_b * X + x) * Y + y) * H + i_h
    has_l = x > 0
    has_u = y > 0
    has_r = x + 1 < X
    has_dn = y + 1 < Y

    o_k = tl.arange(0, BK)
    m_k = o_k < K
    b_q = tl.load(q + row * K + o_k, mask=m_k, other=0).to(ACC) * scale
    b_k = tl.load(k + row * K + o_k, mask=m_k, other=0).to(ACC)
    g_sr = tl.load(source_r + row).to(ACC)
    g_sd = tl.load(source_d + row).to(ACC)
    g_trl = tl.load(trans_rl + row).to(ACC)
    g_tru = tl.load(trans_ru + row).to(ACC)
    g_tdu = tl.load(trans_du + row).to(ACC)
    g_tdl = tl.load(trans_dl + row).to(ACC)
    g_ml = tl.load(mark_l + row).to(ACC)
    g_mu = tl.load(mark_u + row).to(ACC)
    g_dr = tl.load(direct + row).to(ACC)
    b_qk = tl.reduce(b_q * b_k, 0, _sum_combine)
    # slot y of the R front, slot x of the D front
    p_r = (i_bh64 * Y + y) * K * V
    p_d = (i_bh64 * X + x) * K * V

    for i_v in range((V + BV - 1) // BV):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        m_kv = m_k[:, None] & m_v[None, :]
        o_kv = o_k[:, None] * V + o_v[None, :]
        b_v = tl.load(v + row * V + o_v, mask=m_v, other=0).to(ACC)
        b_r = tl.load(r_src + p_r + o_kv, mask=m_kv & has_l, other=0).to(ACC)  # [BK, BV]
        b_d = tl.load(d_src + p_d + o_kv, mask=m_kv & has_u, other=0).to(ACC)
        if WRITE_O:
            b_o = tl.reduce(b_q[:, None] * (g_ml * b_r + g_mu * b_d), 0, _sum_combine) + g_dr * b_qk * b_v
            tl.store(o + row * V + o_v, b_o.to(o.dtype.element_ty), mask=m_v)
        b_kv = b_k[:, None] * b_v[None, :]
        # only the next diagonal reads a state, and only if its cell exists
        b_rn = g_trl * b_r + g_tru * b_d + g_sr * b_kv
        b_dn = g_tdu * b_d + g_tdl * b_r + g_sd * b_kv
        tl.store(r_dst + p_r + o_kv, b_rn.to(r_dst.dtype.element_ty), mask=m_kv & has_r)
        tl.store(d_dst + p_d + o_kv, b_dn.to(d_dst.dtype.element_ty), mask=m_kv & has_dn)


@triton.jit(do_not_specialize=["d", "x_lo", "N"])
def plstm2d_bwd_kernel(
    q,
    k,
    v,
    source_r,
    source_d,
    trans_rl,
    trans_ru,
    trans_du,
    trans_dl,
    mark_l,
    mark_u,
    direct,
    do,
    dq,
    dk,
    dv,
    dg,
    r_in,
    d_in,
    a_r,
    a_d,
    scale,
    d,
    x_lo,
    X,
    Y,
    N,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    ACC: tl.constexpr,
):
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_bh64 = tl.cast(i_bh, tl.int64)
    i_b = i_bh64 // H
    i_h = i_bh64 % H
    x = tl.cast(x_lo + i_c, tl.int64)
    y = tl.cast(d, tl.int64) - x
    row = ((i_b * X + x) * Y + y) * H + i_h
    has_l = x > 0
    has_u = y > 0
    has_r = x + 1 < X
    has_dn = y + 1 < Y

    o_k = tl.arange(0, BK)
    m_k = o_k < K
    b_q = tl.load(q + row * K + o_k, mask=m_k, other=0).to(ACC)
    b_k = tl.load(k + row * K + o_k, mask=m_k, other=0).to(ACC)
    g_sr = tl.load(source_r + row).to(ACC)
    g_sd = tl.load(source_d + row).to(ACC)
    g_trl = tl.load(trans_rl + row).to(ACC)
    g_tru = tl.load(trans_ru + row).to(ACC)
    g_tdu = tl.load(trans_du + row).to(ACC)
    g_tdl = tl.load(trans_dl + row).to(ACC)
    g_ml = tl.load(mark_l + row).to(ACC)
    g_mu = tl.load(mark_u + row).to(ACC)
    g_dr = tl.load(direct + row).to(ACC)
    b_qs = b_q * scale
    b_qk = tl.reduce(b_qs * b_k, 0, _sum_combine)
    p_r = (i_bh64 * Y + y) * K * V
    p_d = (i_bh64 * X + x) * K * V

    # partial sums over the V blocks, reduced once at the end (few reductions: each is costly when interpreted)
    b_ur = tl.full([BK], 0, dtype=ACC)  # A_R v
    b_ud = tl.full([BK], 0, dtype=ACC)  # A_D v
    b_wr = tl.full([BK], 0, dtype=ACC)  # R_in do
    b_wd = tl.full([BK], 0, dtype=ACC)  # D_in do
    b_trl = tl.full([BK], 0, dtype=ACC)
    b_tru = tl.full([BK], 0, dtype=ACC)
    b_tdu = tl.full([BK], 0, dtype=ACC)
    b_tdl = tl.full([BK], 0, dtype=ACC)
    b_vdo = tl.full([BV], 0, dtype=ACC)
    for i_v in range((V + BV - 1) // BV):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        m_kv = m_k[:, None] & m_v[None, :]
        o_kv = o_k[:, None] * V + o_v[None, :]
        b_v = tl.load(v + row * V + o_v, mask=m_v, other=0).to(ACC)
        b_do = tl.load(do + row * V + o_v, mask=m_v, other=0).to(ACC)
        b_r = tl.load(r_in + p_r + o_kv, mask=m_kv & has_l, other=0).to(ACC)  # R[x-1, y]
        b_d = tl.load(d_in + p_d + o_kv, mask=m_kv & has_u, other=0).to(ACC)  # D[x, y-1]
        b_ar = tl.load(a_r + p_r + o_kv, mask=m_kv & has_r, other=0).to(ACC)  # dL/dR[x, y]
        b_ad = tl.load(a_d + p_d + o_kv, mask=m_kv & has_dn, other=0).to(ACC)  # dL/dD[x, y]

        b_ur += tl.reduce(b_ar * b_v[None, :], 1, _sum_combine)
        b_ud += tl.reduce(b_ad * b_v[None, :], 1, _sum_combine)
        b_wr += tl.reduce(b_r * b_do[None, :], 1, _sum_combine)
        b_wd += tl.reduce(b_d * b_do[None, :], 1, _sum_combine)
        b_trl += tl.reduce(b_ar * b_r, 1, _sum_combine)
        b_tru += tl.reduce(b_ar * b_d, 1, _sum_combine)
        b_tdu += tl.reduce(b_ad * b_d, 1, _sum_combine)
        b_tdl += tl.reduce(b_ad * b_r, 1, _sum_combine)
        b_vdo += b_v * b_do
        # dv: the adjoint of what this cell's k v^T fed into, contracted with k
        b_dv = tl.reduce((g_sr * b_ar + g_sd * b_ad) * b_k[:, None], 0, _sum_combine)
        b_dv += g_dr * b_qk * b_do
        tl.store(dv + row * V + o_v, b_dv.to(dv.dtype.element_ty), mask=m_v)

        b_qdo = b_qs[:, None] * b_do[None, :]
        b_arn = g_ml * b_qdo + g_trl * b_ar + g_tdl * b_ad
        b_adn = g_mu * b_qdo + g_tdu * b_ad + g_tru * b_ar
        tl.store(a_r + p_r + o_kv, b_arn.to(a_r.dtype.element_ty), mask=m_kv & has_l)
        tl.store(a_d + p_d + o_kv, b_adn.to(a_d.dtype.element_ty), mask=m_kv & has_u)

    vdo = tl.reduce(b_vdo, 0, _sum_combine)
    b_dq = scale * (g_ml * b_wr + g_mu * b_wd) + g_dr * scale * vdo * b_k
    b_dk = g_sr * b_ur + g_sd * b_ud + g_dr * vdo * b_qs
    tl.store(dq + row * K + o_k, b_dq.to(dq.dtype.element_ty), mask=m_k)
    tl.store(dk + row * K + o_k, b_dk.to(dk.dtype.element_ty), mask=m_k)
    # gate gradients [9, B*X*Y*H] in GATE_NAMES order: rows of one [16, BK] tile, reduced once
    o_g = tl.arange(0, 16)
    b_t = tl.where(o_g[:, None] == 0, (b_k * b_ur)[None, :], 0.0)
    b_t = tl.where(o_g[:, None] == 1, (b_k * b_ud)[None, :], b_t)
    b_t = tl.where(o_g[:, None] == 2, b_trl[None, :], b_t)
    b_t = tl.where(o_g[:, None] == 3, b_tru[None, :], b_t)
    b_t = tl.where(o_g[:, None] == 4, b_tdu[None, :], b_t)
    b_t = tl.where(o_g[:, None] == 5, b_tdl[None, :], b_t)
    b_t = tl.where(o_g[:, None] == 6, (b_qs * b_wr)[None, :], b_t)
    b_t = tl.where(o_g[:, None] == 7, (b_qs * b_wd)[None, :], b_t)
    b_g = tl.where(o_g == 8, b_qk * vdo, tl.reduce(b_t, 1, _sum_combine))
    tl.store(dg + tl.cast(o_g, tl.int64) * N + row, b_g.to(dg.dtype.element_ty), mask=o_g < 9)


def _acc_dtype(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if compute_dtype(dtype) == torch.float64 else tl.float32


def _blocks(K: int, V: int) -> tuple[int, int]:
    """``(BK, BV)``: the full key dim and a value block keeping one state tile at most ``MAX_TILE`` elements."""
    BK = triton.next_power_of_2(K)
    BV = max(1, min(triton.next_power_of_2(V), MAX_TILE // BK))
    return BK, BV


def _num_warps(BK: int, BV: int, backward: bool = False) -> int:
    """Warps per program: at most 16 elements of a state tile per thread (8 in the backward kernel, which holds
    about ten tiles at once; with 16 it needs more than 255 registers at ``DK = 64``)."""
    per_thread = 8 if backward else 16
    return max(1, min(8, BK * BV // (32 * per_thread)))


def _diagonals(X: int, Y: int) -> list[tuple[int, int, int]]:
    """``(d, x_lo, n)`` for every anti-diagonal ``x + y = d``: its first column and its number of cells."""
    out = []
    for d in range(X + Y - 1):
        x_lo = max(0, d - Y + 1)
        out.append((d, x_lo, min(d, X - 1) - x_lo + 1))
    return out


def default_segment(X: int, Y: int) -> int:
    """Default checkpoint interval in diagonals: ``ceil(sqrt(X + Y - 1))`` (balances checkpoints and recompute)."""
    return max(1, math.ceil(math.sqrt(X + Y - 1)))


def _meta(q: torch.Tensor, v: torch.Tensor) -> dict:
    B, X, Y, H, K = q.shape
    V = v.shape[-1]
    BK, BV = _blocks(K, V)
    return dict(H=H, K=K, V=V, BK=BK, BV=BV, ACC=_acc_dtype(q.dtype))


def _fronts(q: torch.Tensor, v: torch.Tensor, *lead: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Empty R and D front buffers ``[*lead, B*H, Y, K, V]`` and ``[*lead, B*H, X, K, V]``."""
    B, X, Y, H, K = q.shape
    acc = compute_dtype(q.dtype)
    V = v.shape[-1]
    return (
        q.new_empty(*lead, B * H, Y, K, V, dtype=acc),
        q.new_empty(*lead, B * H, X, K, V, dtype=acc),
    )


def plstm2d_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gates: tuple[torch.Tensor, ...],
    scale: float,
    segment: int | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Forward pass on contiguous inputs.

    Returns ``o [B, X, Y, H, DV]`` and, when ``segment`` is given, the checkpoint fronts
    ``R_f [NS, B*H, Y, DK, DV]`` and ``D_f [NS, B*H, X, DK, DV]`` (the fronts before diagonals ``0, C, 2C, ...``;
    ``NS = ceil((X + Y - 1) / C)``), else ``None, None``.
    """
    B, X, Y, H, K = q.shape
    meta = _meta(q, v)
    o = torch.empty_like(v)
    r, dn = _fronts(q, v)
    r_f = d_f = None
    if segment is not None:
        r_f, d_f = _fronts(q, v, triton.cdiv(X + Y - 1, segment))
    for d, x_lo, n in _diagonals(X, Y):
        # checkpoint 0 stays unwritten: diagonal 0 reads no state
        if segment is not None and d > 0 and d % segment == 0:
            r_f[d // segment].copy_(r)
            d_f[d // segment].copy_(dn)
        plstm2d_fwd_kernel[(n, B * H)](
            q, k, v, *gates, o, r, r, dn, dn, scale, d, x_lo, X, Y, WRITE_O=True,
            num_warps=_num_warps(meta["BK"], meta["BV"]), **meta
        )  # fmt: skip
    return o, r_f, d_f


def plstm2d_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gates: tuple[torch.Tensor, ...],
    scale: float,
    do: torch.Tensor,
    r_f: torch.Tensor,
    d_f: torch.Tensor,
    segment: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward pass on contiguous inputs and the checkpoints of :func:`plstm2d_fwd`.

    Returns ``dq, dk, dv`` and the gate gradients ``[9, B, X, Y, H]`` (in :data:`GATE_NAMES` order), all in the
    accumulation dtype.
    """
    B, X, Y, H, K = q.shape
    meta = _meta(q, v)
    acc = compute_dtype(q.dtype)
    dq = torch.empty_like(q, dtype=acc)
    dk = torch.empty_like(k, dtype=acc)
    dv = torch.empty_like(v, dtype=acc)
    dg = q.new_empty(9, B, X, Y, H, dtype=acc)
    a_r, a_d = _fronts(q, v)
    # fronts after the diagonals of one segment but its last one (slot j: after diagonal d0 + j)
    r_s, d_s = _fronts(q, v, max(segment - 1, 1))
    diagonals = _diagonals(X, Y)
    N = B * X * Y * H
    for s in reversed(range(r_f.shape[0])):
        d0 = s * segment
        part = diagonals[d0 : d0 + segment]

        # the fronts read by diagonal d0 + j: the checkpoint, then the recomputed ones
        fronts = [(r_f[s], d_f[s])] + [(r_s[j], d_s[j]) for j in range(len(part) - 1)]
        for j, (d, x_lo, n) in enumerate(part[:-1]):
            (r_src, d_src), (r_dst, d_dst) = fronts[j], fronts[j + 1]
            plstm2d_fwd_kernel[(n, B * H)](
                q, k, v, *gates, None, r_src, r_dst, d_src, d_dst, scale, d, x_lo, X, Y, WRITE_O=False,
                num_warps=_num_warps(meta["BK"], meta["BV"]), **meta
            )  # fmt: skip
        for j in reversed(range(len(part))):
            d, x_lo, n = part[j]
            r_in, d_in = fronts[j]
            plstm2d_bwd_kernel[(n, B * H)](
                q, k, v, *gates, do, dq, dk, dv, dg, r_in, d_in, a_r, a_d, scale, d, x_lo, X, Y, N,
                num_warps=_num_warps(meta["BK"], meta["BV"], backward=True), **meta
            )  # fmt: skip
    return dq, dk, dv, dg


class TritonPlstm2dFunction(torch.autograd.Function):
    """Autograd wrapper of the wavefront kernels; differentiable w.r.t. q, k, v and all nine gates."""

    @staticmethod
    @input_guard
    def forward(ctx, q, k, v, *args):
        *gates, scale, segment = args
        gates = tuple(gates)
        need_grad = any(ctx.needs_input_grad[: 3 + len(gates)])
        o, r_f, d_f = plstm2d_fwd(q, k, v, gates, scale, segment if need_grad else None)
        if need_grad:
            ctx.save_for_backward(q, k, v, *gates, r_f, d_f)
        ctx.scale = scale
        ctx.segment = segment
        return o

    @staticmethod
    @torch.autograd.function.once_differentiable
    @input_guard
    def backward(ctx, do: torch.Tensor):
        q, k, v, *gates, r_f, d_f = ctx.saved_tensors
        dq, dk, dv, dg = plstm2d_bwd(q, k, v, tuple(gates), ctx.scale, do, r_f, d_f, ctx.segment)
        d_gates = tuple(g_grad.to(g.dtype) for g_grad, g in zip(dg.unbind(0), gates, strict=True))
        return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), *d_gates, None, None)


@torch.compiler.disable
def triton_wavefront_plstm2d(
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
    """2-D pLSTM on Triton kernels: an anti-diagonal wavefront, differentiable w.r.t. every tensor input.

    Same semantics as :func:`~recvision.ops.plstm2d.naive_plstm2d` (see the module docstring for the recurrence
    and the gradients). Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1``.

    Args:
        q: queries ``[B, X, Y, H, DK]``.
        k: keys ``[B, X, Y, H, DK]``.
        v: values ``[B, X, Y, H, DV]``.
        source_r, source_d, trans_rl, trans_ru, trans_du, trans_dl, mark_l, mark_u, direct: the nine gates,
            ``[B, X, Y, H]`` each (any floating dtype).
        scale: query scale; ``None`` means ``DK ** -0.5``.
        chunk_size: anti-diagonals between the states the forward pass keeps for the backward pass (the backward
            recomputes the others); ``None`` means ``ceil(sqrt(X + Y - 1))``. Does not change the result.

    Returns:
        ``o [B, X, Y, H, DV]`` in q's dtype.

    Raises:
        ValueError: on malformed inputs (the message names the argument), ``DK`` or ``DV`` above 256, or a
            ``chunk_size`` that is not a positive integer.
    """
    gate_list = (source_r, source_d, trans_rl, trans_ru, trans_du, trans_dl, mark_l, mark_u, direct)
    scale = check_plstm2d_inputs(q, k, v, dict(zip(GATE_NAMES, gate_list, strict=True)), scale)
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(f"triton_wavefront_plstm2d supports float16/bfloat16/float32/float64 q, k, v; got {q.dtype}")
    if q.shape[-1] > MAX_HEAD_DIM or v.shape[-1] > MAX_HEAD_DIM:
        raise ValueError(
            f"triton_wavefront_plstm2d supports head dims DK, DV <= {MAX_HEAD_DIM}; "
            f"got DK={q.shape[-1]}, DV={v.shape[-1]}"
        )
    X, Y = q.shape[1], q.shape[2]
    if chunk_size is None:
        segment = default_segment(X, Y)
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"triton_wavefront_plstm2d: chunk_size must be a positive int or None; got {chunk_size!r}")
    else:
        segment = min(chunk_size, X + Y - 1)
    return TritonPlstm2dFunction.apply(q, k, v, *gate_list, scale, segment)
