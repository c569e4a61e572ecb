"""Chunked 2-D pLSTM: the :func:`chunk_plstm2d` dispatcher (also named :func:`plstm2d`) and its PyTorch form.

Pöppel et al., "pLSTM: parallelizable Linear Source Transition Mark networks" (arXiv 2506.11997), §3.3, and the
chunkwise form of the reference code ``ml-jku/plstm`` (``torch/plstm_2d.py``). The grid is cut into chunks of
``bx x by`` cells (powers of two). Inside a chunk the output is the parallel form with the chunk's gating tensor;
between chunks only boundary edge states travel: ``by`` right-going states ``[DK, DV]`` leave a chunk on its right
side and ``bx`` down-going ones at its bottom. A chunk needs the states of its left and upper neighbours, which
lie on the previous anti-diagonal of the chunk grid, so the chunk grid is swept diagonal by diagonal (``nx + ny -
1`` sequential steps, every chunk of a diagonal in one batched matmul)::

    R_out = T_rr R_in + T_rd D_in + S_r (k v^T)        D_out = T_dr R_in + T_dd D_in + S_d (k v^T)
    o     = ((q k^T) * G) v + q^T (M_r R_in + M_d D_in)

with the chunk operators ``T, S, M, G``: built by :func:`~recvision.ops.plstm2d.block_scan.scan_plstm2d_blocks`
(one anti-diagonal scan of coefficient vectors, the faster builder on the CPU) for chunks of up to
:data:`SCAN_MAX_CELLS` cells, by the log-depth doubling :func:`~recvision.ops.plstm2d.parallel.plstm2d_blocks` for
larger ones; both give the same operators. Memory is ``O(B H X Y (bx by + (bx + by) DK + (bx + by) DK DV / (bx
by)))``, linear in the number of cells for a fixed chunk size (``(X Y)^2`` for the parallel form).
"""

from __future__ import annotations

import torch

from ...config import use_triton
from ..utils.dtypes import autocast_off, matmul_dtype
from .block_scan import scan_plstm2d_blocks
from .common import (
    DEFAULT_CHUNK_SIZE,
    SCAN_MAX_CELLS,
    check_plstm2d_inputs,
    chunk_sides,
    compute_dtype,
    gate_dict,
)
from .parallel import BlockOperators, from_blocks, intra_block_output, pad_grid, plstm2d_blocks, to_blocks

__all__ = ["DEFAULT_CHUNK_SIZE", "chunk_plstm2d", "chunk_plstm2d_torch", "chunk_sides", "plstm2d"]


def _diagonal_order(nx: int, ny: int) -> tuple[list[tuple[int, int]], list[int]]:
    """Chunks sorted by anti-diagonal ``i + j``: the ``(lo, count)`` of every diagonal and the flat indices."""
    spans, flat = [], []
    for d in range(nx + ny - 1):
        lo, hi = max(0, d - ny + 1), min(d, nx - 1)
        spans.append((lo, hi - lo + 1))
        flat.extend(i * ny + d - i for i in range(lo, hi + 1))
    return spans, flat


def _inter_chunk_output(qb: torch.Tensor, kb: torch.Tensor, vb: torch.Tensor, blocks: BlockOperators) -> torch.Tensor:
    """Output of every chunk due to the boundary states entering it, by the anti-diagonal sweep.

    Args:
        qb: scaled queries ``[N, nx, ny, C, DK]``; kb: keys ``[N, nx, ny, C, DK]``; vb: values ``[N, nx, ny, C, DV]``.
        blocks: chunk operators batched over ``[N, nx, ny]``.

    Returns:
        ``q^T (M_r R_in + M_d D_in)`` for every cell, ``[N, nx, ny, C, DV]``.
    """
    N, nx, ny, C, DK = kb.shape
    DV = vb.shape[-1]
    bx, by = blocks.t_dd.shape[-1], blocks.t_rr.shape[-1]
    spans, flat = _diagonal_order(nx, ny)
    perm = torch.tensor(flat, device=kb.device)

    def by_diagonal(t: torch.Tensor) -> torch.Tensor:
        # [N, nx, ny, ...] -> [nb, N, ...] with the chunks of one diagonal next to each other
        return t.flatten(1, 2).transpose(0, 1).index_select(0, perm)

    # The by right-going and bx down-going edges of a chunk are handled as one set of E = by + bx edges (right
    # first), so that every step below is one matmul for both kinds.
    E = bx + by
    t = torch.cat([torch.cat([blocks.t_rr, blocks.t_rd], -1), torch.cat([blocks.t_dr, blocks.t_dd], -1)], -2)
    s = torch.cat([blocks.s_r.flatten(-2), blocks.s_d.flatten(-2)], -2)  # [N, nx, ny, E, C]
    m = torch.cat([blocks.m_r.flatten(-3, -2), blocks.m_d.flatten(-3, -2)], -1)  # [N, nx, ny, C, E]
    # one piece per diagonal (split, not repeated slicing: the backward of a slice materialises its whole input)
    sizes = [n for _, n in spans]
    q, k, v, t, s, m = (by_diagonal(x).split(sizes) for x in (qb, kb, vb, t, s, m))

    # The state [DK, DV] of edge e is kept as rows e*DK .. e*DK+DK-1 of one [E*DK, DV] matrix, so that sources and
    # marks each become a single matmul: u[(e, i), :] = sum_c s[e, c] k[c, i] v[c, :] (what a chunk's own cells
    # put on its outgoing edges) and o[c, :] = sum_(e, i) m[c, e] q[c, i] state[(e, i), :]. They are formed per
    # diagonal so that only one diagonal's [E*DK, C] products exist at a time.
    def sources(d: int) -> torch.Tensor:
        k_t = k[d].transpose(-1, -2)[..., None, :, :]  # [n, N, 1, DK, C]
        return (s[d][..., :, None, :] * k_t).flatten(-3, -2) @ v[d]  # [n, N, E*DK, DV]

    R = by * DK  # rows of the right-going edges
    zero = q[0].new_zeros(1, N, E * DK, DV)
    outputs = [q[0].new_zeros(1, N, C, DV)]  # nothing enters the first chunk
    out = sources(0)
    for d in range(1, len(spans)):
        (prev_lo, _), (lo, n) = spans[d - 1], spans[d]
        # chunk (i, j) reads the right-going states of its left neighbour (i-1, j) and the down-going ones of its
        # upper neighbour (i, j-1), both on the previous diagonal, padded with a zero state at both ends
        offset = lo - prev_lo
        prev = torch.cat([zero, out, zero])
        state = torch.cat([prev[offset : offset + n, :, :R], prev[offset + 1 : offset + 1 + n, :, R:]], dim=2)
        outputs.append((m[d][..., None] * q[d][..., :, None, :]).flatten(-2) @ state)  # [n, N, C, DV]
        if d < len(spans) - 1:
            out = sources(d) + (t[d] @ state.view(n, N, E, DK * DV)).view(n, N, E * DK, DV)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel(), device=perm.device)
    o = torch.cat(outputs).index_select(0, inverse)  # [nx*ny, N, C, DV]
    return o.transpose(0, 1).reshape(N, nx, ny, C, DV)


def chunk_plstm2d_torch(
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
    """2-D pLSTM in chunks: parallel gating inside ``bx x by`` chunks, an anti-diagonal sweep between them.

    The grid is zero-padded at its far ends to whole chunks (zero gates: padding never reaches a real cell).
    Differentiable through autograd.

    Args:
        q, k, v, source_r, ..., direct, scale: as in :func:`~recvision.ops.plstm2d.naive_plstm2d`.
        chunk_size: chunk side, a power of two, clipped to the grid's power-of-two size (:func:`chunk_sides`);
            ``None`` means one chunk for grids that pad to at most :data:`SCAN_MAX_CELLS` cells (e.g. 8x8) and
            :data:`DEFAULT_CHUNK_SIZE` otherwise. Chunks of up to :data:`SCAN_MAX_CELLS` cells get their operators
            from the anti-diagonal scan, larger ones from the log-depth doubling; neither choice changes the result
            beyond rounding.

    Returns:
        ``o [B, X, Y, H, DV]`` in q's dtype (computed in float32, float64 for float64 inputs; the intra-chunk
        products in bfloat16 for bfloat16 inputs or under bfloat16 autocast).
    """
    gates = gate_dict(source_r, source_d, trans_rl, trans_ru, trans_du, trans_dl, mark_l, mark_u, direct)
    scale = check_plstm2d_inputs(q, k, v, gates, scale)
    B, X, Y, H, _ = q.shape
    bx, by = chunk_sides(X, Y, chunk_size)
    Xp, Yp = -(-X // bx) * bx, -(-Y // by) * by
    mm = matmul_dtype(q)
    # the gate operators and the boundary states between chunks stay in float32; only the intra-chunk products
    # (scores and their product with the values) run in `mm`
    with autocast_off(q):
        qp, kp, vp, flat = pad_grid(q, k, v, gates, Xp, Yp, compute_dtype(q.dtype))
        one_chunk = Xp == bx and Yp == by
        if bx * by <= SCAN_MAX_CELLS:
            blocks = scan_plstm2d_blocks(flat, bx, by, boundary=not one_chunk)
        else:
            blocks = plstm2d_blocks(flat, bx, by)
        qb, kb, vb = to_blocks(qp * scale, bx, by), to_blocks(kp, bx, by), to_blocks(vp, bx, by)
        o = intra_block_output(qb, kb, vb, blocks.g, mm)
        if not one_chunk:
            o = o + _inter_chunk_output(qb, kb, vb, blocks)
    return from_blocks(o, B, H, bx, by)[:, :X, :Y].to(q.dtype)


def chunk_plstm2d(
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
    backend: str | None = None,
) -> torch.Tensor:
    """2-D pLSTM in chunks, dispatched to the Triton kernels or to :func:`chunk_plstm2d_torch`.

    :func:`recvision.config.use_triton` decides (``backend`` overrides the global setting for this call). The
    Triton module :mod:`~recvision.ops.plstm2d.triton_chunk` is imported on the first call that takes the Triton
    path, so that CPU-only use never imports Triton. :func:`plstm2d` is the same function.

    Args:
        q, k, v, source_r, ..., direct, scale: as in :func:`~recvision.ops.plstm2d.naive_plstm2d`.
        chunk_size: chunk side (a power of two), or ``None`` for the default of the chosen form
            (:func:`chunk_sides` for PyTorch; ``triton_chunk.DEFAULT_TRITON_CHUNK_SIZE`` = 8 for Triton, which also
            raises sides below 4 to 4). Either way it does not change the result beyond rounding.
        backend: ``"auto"``, ``"torch"``, ``"triton"`` or ``None`` (the global backend).

    Returns:
        ``o [B, X, Y, H, DV]`` in q's dtype.
    """
    args = (q, k, v, source_r, source_d, trans_rl, trans_ru, trans_du, trans_dl, mark_l, mark_u, direct)
    if use_triton(q, backend):
        from .triton_chunk import chunk_plstm2d_triton

        return chunk_plstm2d_triton(*args, scale=scale, chunk_size=chunk_size)
    return chunk_plstm2d_torch(*args, scale=scale, chunk_size=chunk_size)


# the name the layers and the README use for the dispatcher
plstm2d = chunk_plstm2d
