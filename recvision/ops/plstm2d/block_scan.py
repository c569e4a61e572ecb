"""Chunk operators of the 2-D pLSTM by one anti-diagonal scan inside the chunk (the fast CPU builder).

Pöppel et al., "pLSTM: parallelizable Linear Source Transition Mark networks" (arXiv 2506.11997), §3: the gating of a
chunk is a sum over monotone paths of products of source, transitions and mark. :func:`plstm2d_blocks` in
``parallel.py`` builds the chunk operators by log-depth doubling (the authors' construction, ``log2`` merge levels of
many small batched matmuls and concatenations). This module computes the same :class:`BlockOperators` by running the
recurrence itself once, with *coefficient vectors* as states: every edge state of the chunk is a linear combination of
``P = bx*by + by + bx`` unit inputs (a source at each cell, each right-going edge entering on the left, each
down-going edge entering at the top), and that combination is propagated cell by cell::

    R[x, y] = trans_rl R_in + trans_ru D_in + source_r e_cell          R_in = R[x-1, y] or e_left(y) at x = 0
    D[x, y] = trans_du D_in + trans_dl R_in + source_d e_cell          D_in = D[x, y-1] or e_top(x)  at y = 0
    mark row of (x, y) = mark_l R_in + mark_u D_in + direct e_cell

The mark rows are ``[G | M_r | M_d]``, the right-going states leaving at ``x = bx - 1`` are ``[S_r | T_rr | T_rd]``
and the down-going ones leaving at ``y = by - 1`` are ``[S_d | T_dr | T_dd]``. Cells of one anti-diagonal are
independent, so there are ``bx + by - 1`` vectorised steps of a few elementwise ops over ``[N, nx, ny, cells, P]``
each: ``O(bx by P)`` work per chunk like the doubling, but an order of magnitude fewer (and larger) tensor ops, which
is what costs time on the CPU for the chunk sides used there (4 to 16).
"""

from __future__ import annotations

import torch

from .common import GATE_NAMES
from .parallel import BlockOperators

__all__ = ["scan_plstm2d_blocks"]


def _diagonals(bx: int, by: int) -> list[tuple[int, int]]:
    """``(lo, hi)`` x-range of every anti-diagonal ``x + y = d`` of a ``bx x by`` chunk."""
    return [(max(0, d - by + 1), min(d, bx - 1)) for d in range(bx + by - 1)]


def scan_plstm2d_blocks(
    gates: dict[str, torch.Tensor], block_x: int, block_y: int, *, boundary: bool = True
) -> BlockOperators:
    """Operators of every ``block_x x block_y`` block of a grid of per-cell gates, by an anti-diagonal scan.

    Equal to :func:`~recvision.ops.plstm2d.parallel.plstm2d_blocks` (tested); differentiable through autograd.

    Args:
        gates: the nine gates (:data:`~recvision.ops.plstm2d.common.GATE_NAMES`), each ``[N, X, Y]`` with ``X`` a
            multiple of ``block_x`` and ``Y`` of ``block_y``.
        block_x, block_y: block sides (any positive ints; the chunked op uses powers of two).
        boundary: also compute the boundary operators ``T``, ``S``, ``M``. With ``False`` (a grid of one block,
            where nothing enters or leaves) only ``g`` is computed and the other fields are ``None``.

    Returns:
        :class:`BlockOperators` batched over ``[N, X / block_x, Y / block_y]``.
    """
    bx, by = block_x, block_y
    if bx < 1 or by < 1:
        raise ValueError(f"scan_plstm2d_blocks: block sides must be >= 1; got {bx} x {by}")
    N, X, Y = gates["direct"].shape
    if X % bx or Y % by:
        raise ValueError(f"scan_plstm2d_blocks: grid {X} x {Y} is not a whole number of {bx} x {by} blocks")
    nx, ny, C = X // bx, Y // by, bx * by
    P = C + (by + bx if boundary else 0)  # unit inputs: cells (row-major), left edges (by y), top edges (by x)
    spans = _diagonals(bx, by)
    order = [x * by + d - x for d, (lo, hi) in enumerate(spans) for x in range(lo, hi + 1)]
    sizes = [hi - lo + 1 for lo, hi in spans]
    ref = gates["direct"]
    perm = torch.tensor(order, device=ref.device)

    def by_diagonal(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # [N, X, Y] -> per diagonal [N, nx, ny, n_d, 1], cells of the diagonal in increasing x
        blocks = t.reshape(N, nx, bx, ny, by).permute(0, 1, 3, 2, 4).reshape(N, nx, ny, C)
        return blocks.index_select(-1, perm)[..., None].split(sizes, dim=-2)

    g = {name: by_diagonal(gates[name]) for name in GATE_NAMES}
    eye = torch.eye(P, dtype=ref.dtype, device=ref.device)
    cell_units = eye[perm].split(sizes)  # the unit vector of every cell's own source, per diagonal
    left_units = eye[C : C + by] if boundary else None
    top_units = eye[C + by :] if boundary else None

    marks, right_out, down_out = [], [], []
    R_prev = D_prev = None
    for d, (lo, hi) in enumerate(spans):
        # R_in of cell x is R[x-1, y] (cell x-1-lo_prev of the previous diagonal) or, at x = 0, the left edge y = d
        # D_in of cell x is D[x, y-1] (cell x-lo_prev) or, at y = 0 (x = d), the top edge x = d
        parts_r, parts_d = [], []
        if lo == 0:
            parts_r.append(_unit(left_units, d, ref, (N, nx, ny, 1, P)))
        if d > 0:
            lo_prev, hi_prev = spans[d - 1]
            parts_r.append(R_prev[..., max(lo, 1) - 1 - lo_prev : hi - lo_prev, :])
            parts_d.append(D_prev[..., lo - lo_prev : min(hi, d - 1) + 1 - lo_prev, :])
        if hi == d:
            parts_d.append(_unit(top_units, d, ref, (N, nx, ny, 1, P)))
        R_in = parts_r[0] if len(parts_r) == 1 else torch.cat(parts_r, dim=-2)
        D_in = parts_d[0] if len(parts_d) == 1 else torch.cat(parts_d, dim=-2)
        own = cell_units[d]
        marks.append(g["mark_l"][d] * R_in + g["mark_u"][d] * D_in + g["direct"][d] * own)
        if d == len(spans) - 1 and not boundary:
            break
        R_prev = g["trans_rl"][d] * R_in + g["trans_ru"][d] * D_in + g["source_r"][d] * own
        D_prev = g["trans_du"][d] * D_in + g["trans_dl"][d] * R_in + g["source_d"][d] * own
        if boundary and hi == bx - 1:  # the last cell (x = bx - 1) sends a right-going edge out of the chunk
            right_out.append(R_prev[..., -1, :])
        if boundary and d - lo == by - 1:  # the first cell (y = by - 1) sends a down-going edge out
            down_out.append(D_prev[..., 0, :])

    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(C, device=perm.device)
    rows = torch.cat(marks, dim=-2).index_select(-2, inverse)  # [N, nx, ny, C, P], cells back in row-major order
    G = rows[..., :C].reshape(N, nx, ny, bx, by, bx, by)
    if not boundary:
        return BlockOperators(None, None, None, None, None, None, None, None, G)
    right, down = torch.stack(right_out, dim=-2), torch.stack(down_out, dim=-2)  # [.., by, P], [.., bx, P]
    return BlockOperators(
        t_rr=right[..., C : C + by],
        t_rd=right[..., C + by :],
        t_dr=down[..., C : C + by],
        t_dd=down[..., C + by :],
        s_r=right[..., :C].unflatten(-1, (bx, by)),
        s_d=down[..., :C].unflatten(-1, (bx, by)),
        m_r=rows[..., C : C + by].unflatten(-2, (bx, by)),
        m_d=rows[..., C + by :].unflatten(-2, (bx, by)),
        g=G,
    )


def _unit(units: torch.Tensor | None, index: int, ref: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The incoming boundary edge ``index`` as a ``[N, nx, ny, 1, P]`` unit state (zero without boundary inputs)."""
    if units is None:
        return ref.new_zeros(()).expand(shape)
    return units[index].expand(shape)
