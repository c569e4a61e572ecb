"""Parallel (quadratic) form of the 2-D pLSTM: the node-to-node gating tensor built by log-depth doubling.

Pöppel et al., "pLSTM: parallelizable Linear Source Transition Mark networks" (arXiv 2506.11997), §3.3 and the
reference code ``ml-jku/plstm`` (``torch/plstm_2d.py``, ``stmg_matrices``): the output is an attention-like sum

    o[c] = sum_{c'} G[c, c'] scale (q[c] . k[c']) v[c']

whose gating tensor ``G`` sums, over every monotone path from cell ``c'`` to cell ``c``, the product of the source
at ``c'``, the transitions at the cells passed and the mark at ``c`` (plus ``direct`` on the diagonal). ``G`` is
built for all blocks of a grid at once by doubling: blocks of ``sx x sy`` cells are described by four operators
(boundary-to-boundary transitions ``T``, cell-to-boundary sources ``S``, boundary-to-cell marks ``M`` and the
cell-to-cell ``G``), and two neighbouring blocks are merged with a handful of batched matmuls. Merges alternate
between the X and the Y axis; merging along X first and then along Y sums both path orders (right-then-down and
down-then-right) of the authors' 2x2 step. The derivation is in ``README.md``.

:func:`parallel_plstm2d` runs the doubling up to one block holding the whole (power-of-two padded) grid, so its
memory is ``O((X Y)^2)`` per head: use it on small grids and as the cross-check of the chunked form, which runs the
same doubling up to the chunk size only (:func:`plstm2d_blocks`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..utils.dtypes import autocast_off, matmul_dtype
from .common import GATE_NAMES, check_plstm2d_inputs, compute_dtype, gate_dict, next_power_of_two

__all__ = ["parallel_plstm2d", "plstm2d_blocks", "BlockOperators", "next_power_of_two"]


class BlockOperators(NamedTuple):
    """The four operators of every ``sx x sy`` block of a grid, batched over ``[N, nx, ny]`` (``N = B * H``).

    Boundary edges are numbered along the boundary: right-going edges (entering on the left, leaving on the right)
    by their row ``y`` in ``0..sy-1``, down-going edges (entering at the top, leaving at the bottom) by ``x``.

    Attributes:
        t_rr: right edge out <- right edge in ``[N, nx, ny, sy, sy]``.
        t_rd: right edge out <- down edge in ``[N, nx, ny, sy, sx]``.
        t_dr: down edge out <- right edge in ``[N, nx, ny, sx, sy]``.
        t_dd: down edge out <- down edge in ``[N, nx, ny, sx, sx]``.
        s_r: right edge out <- source at cell ``[N, nx, ny, sy, sx, sy]``.
        s_d: down edge out <- source at cell ``[N, nx, ny, sx, sx, sy]``.
        m_r: mark at cell <- right edge in ``[N, nx, ny, sx, sy, sy]``.
        m_d: mark at cell <- down edge in ``[N, nx, ny, sx, sy, sx]``.
        g: cell <- cell gating (direct term on the diagonal) ``[N, nx, ny, sx, sy, sx, sy]``.
    """

    t_rr: torch.Tensor
    t_rd: torch.Tensor
    t_dr: torch.Tensor
    t_dd: torch.Tensor
    s_r: torch.Tensor
    s_d: torch.Tensor
    m_r: torch.Tensor
    m_d: torch.Tensor
    g: torch.Tensor


def _cells(t: torch.Tensor, lead: int) -> torch.Tensor:
    """Merge the two cell axes that follow the first ``lead`` trailing dims... of ``t`` into one (a view)."""
    return t.flatten(lead, lead + 1)


def _zeros(like: torch.Tensor, *shape: int) -> torch.Tensor:
    return like.new_zeros(()).expand(*like.shape[:3], *shape)


def _merge_x(b: BlockOperators) -> BlockOperators:
    """Merge horizontally neighbouring blocks: ``[N, nx, ny]`` blocks of ``sx x sy`` -> ``[N, nx/2, ny]`` of
    ``2sx x sy``. ``P`` is the left block, ``Q`` the right one; ``P``'s right-going edges enter ``Q``."""
    P = BlockOperators(*(t[:, 0::2] for t in b))
    Q = BlockOperators(*(t[:, 1::2] for t in b))
    sy, sx = P.t_rd.shape[-2:]
    ps_r = P.s_r.flatten(-2)  # [.., sy, sx*sy]
    qm_r = Q.m_r.flatten(-3, -2)  # [.., sx*sy, sy]
    t_rr = Q.t_rr @ P.t_rr
    t_rd = torch.cat([Q.t_rr @ P.t_rd, Q.t_rd], dim=-1)
    t_dr = torch.cat([P.t_dr, Q.t_dr @ P.t_rr], dim=-2)
    t_dd = torch.cat(
        [torch.cat([P.t_dd, _zeros(P.t_dd, sx, sx)], dim=-1), torch.cat([Q.t_dr @ P.t_rd, Q.t_dd], dim=-1)], dim=-2
    )
    s_r = torch.cat([(Q.t_rr @ ps_r).unflatten(-1, (sx, sy)), Q.s_r], dim=-2)
    s_d = torch.cat(
        [
            torch.cat([P.s_d, _zeros(P.s_d, sx, sx, sy)], dim=-2),
            torch.cat([(Q.t_dr @ ps_r).unflatten(-1, (sx, sy)), Q.s_d], dim=-2),
        ],
        dim=-3,
    )
    m_r = torch.cat([P.m_r, (qm_r @ P.t_rr).unflatten(-2, (sx, sy))], dim=-3)
    m_d = torch.cat(
        [
            torch.cat([P.m_d, _zeros(P.m_d, sx, sy, sx)], dim=-1),
            torch.cat([(qm_r @ P.t_rd).unflatten(-2, (sx, sy)), Q.m_d], dim=-1),
        ],
        dim=-3,
    )
    g = torch.cat(
        [
            torch.cat([P.g, _zeros(P.g, sx, sy, sx, sy)], dim=-2),
            torch.cat([(qm_r @ ps_r).reshape(*qm_r.shape[:3], sx, sy, sx, sy), Q.g], dim=-2),
        ],
        dim=-4,
    )
    return BlockOperators(t_rr, t_rd, t_dr, t_dd, s_r, s_d, m_r, m_d, g)


def _transpose(b: BlockOperators) -> BlockOperators:
    """The same blocks seen with X and Y (and so right- and down-going edges) swapped; all views."""
    return BlockOperators(
        t_rr=b.t_dd.transpose(1, 2),
        t_rd=b.t_dr.transpose(1, 2),
        t_dr=b.t_rd.transpose(1, 2),
        t_dd=b.t_rr.transpose(1, 2),
        s_r=b.s_d.transpose(1, 2).transpose(-1, -2),
        s_d=b.s_r.transpose(1, 2).transpose(-1, -2),
        m_r=b.m_d.transpose(1, 2).transpose(-3, -2),
        m_d=b.m_r.transpose(1, 2).transpose(-3, -2),
        g=b.g.transpose(1, 2).transpose(-4, -3).transpose(-2, -1),
    )


def _merge_y(b: BlockOperators) -> BlockOperators:
    """Merge vertically neighbouring blocks (``sx x sy`` -> ``sx x 2sy``), as an X merge of the transposed grid."""
    return _transpose(_merge_x(_transpose(b)))


def plstm2d_blocks(gates: dict[str, torch.Tensor], block_x: int, block_y: int) -> BlockOperators:
    """Operators of every ``block_x x block_y`` block of a grid of per-cell gates, by log-depth doubling.

    Args:
        gates: the nine gates (:data:`~recvision.ops.plstm2d.common.GATE_NAMES`), each ``[N, X, Y]`` with ``X``
            a multiple of ``block_x`` and ``Y`` of ``block_y``.
        block_x, block_y: block sides, powers of two.

    Returns:
        :class:`BlockOperators` batched over ``[N, X / block_x, Y / block_y]``.
    """
    for name, side in (("block_x", block_x), ("block_y", block_y)):
        if side < 1 or side & (side - 1):
            raise ValueError(f"plstm2d_blocks: {name} must be a power of two; got {side}")
    g = {name: gates[name][..., None, None] for name in GATE_NAMES}  # [N, X, Y, 1, 1]
    b = BlockOperators(
        t_rr=g["trans_rl"],
        t_rd=g["trans_ru"],
        t_dr=g["trans_dl"],
        t_dd=g["trans_du"],
        s_r=g["source_r"][..., None],
        s_d=g["source_d"][..., None],
        m_r=g["mark_l"][..., None],
        m_d=g["mark_u"][..., None],
        g=g["direct"][..., None, None],
    )
    sx = sy = 1
    while sx < block_x or sy < block_y:
        if sx < block_x:
            b = _merge_x(b)
            sx *= 2
        if sy < block_y:
            b = _merge_y(b)
            sy *= 2
    return b


def to_blocks(t: torch.Tensor, block_x: int, block_y: int) -> torch.Tensor:
    """``[B, X, Y, H, D]`` -> ``[B*H, X/bx, Y/by, bx*by, D]`` (cells of a block in row-major ``(x, y)`` order)."""
    B, X, Y, H, D = t.shape
    t = t.reshape(B, X // block_x, block_x, Y // block_y, block_y, H, D)
    return t.permute(0, 5, 1, 3, 2, 4, 6).reshape(B * H, X // block_x, Y // block_y, block_x * block_y, D)


def from_blocks(t: torch.Tensor, B: int, H: int, block_x: int, block_y: int) -> torch.Tensor:
    """Inverse of :func:`to_blocks`: ``[B*H, nx, ny, bx*by, D]`` -> ``[B, nx*bx, ny*by, H, D]``."""
    _, nx, ny, _, D = t.shape
    t = t.reshape(B, H, nx, ny, block_x, block_y, D).permute(0, 2, 4, 3, 5, 1, 6)
    return t.reshape(B, nx * block_x, ny * block_y, H, D)


def pad_grid(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gates: dict[str, torch.Tensor],
    X: int,
    Y: int,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Cast to ``dtype`` and zero-pad the grid to ``X x Y`` at its far ends; gates come back as ``[B*H, X, Y]``.

    Padding sits after the last row and column, downstream of every real cell, so it cannot reach them.
    """
    pad_x, pad_y = X - q.shape[1], Y - q.shape[2]

    def pad(t: torch.Tensor, trailing: int) -> torch.Tensor:
        t = t.to(dtype)
        return F.pad(t, (0, 0) * trailing + (0, pad_y, 0, pad_x)) if pad_x or pad_y else t

    B, H = q.shape[0], q.shape[3]
    # [B, X, Y, H] -> [B*H, X, Y]
    flat = {name: pad(t, 1).permute(0, 3, 1, 2).reshape(B * H, X, Y) for name, t in gates.items()}
    return pad(q, 2), pad(k, 2), pad(v, 2), flat


def intra_block_output(
    qb: torch.Tensor, kb: torch.Tensor, vb: torch.Tensor, g: torch.Tensor, mm: torch.dtype | None = None
) -> torch.Tensor:
    """``o[c] = sum_{c'} G[c, c'] (q[c] . k[c']) v[c']`` inside each block.

    Args:
        qb, kb: scaled queries and keys ``[N, nx, ny, C, DK]`` (``C`` cells per block).
        vb: values ``[N, nx, ny, C, DV]``.
        g: gating ``[N, nx, ny, bx, by, bx, by]``.
        mm: dtype of the two products' operands (``None``: ``qb``'s); the gating is applied in ``g``'s dtype.

    Returns:
        ``[N, nx, ny, C, DV]`` in ``g``'s dtype.
    """
    C = qb.shape[-2]
    mm = qb.dtype if mm is None else mm
    scores = (qb.to(mm) @ kb.to(mm).transpose(-1, -2)).to(g.dtype)
    return ((scores * g.reshape(*g.shape[:3], C, C)).to(mm) @ vb.to(mm)).to(g.dtype)


def parallel_plstm2d(
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
) -> torch.Tensor:
    """2-D pLSTM as one attention-like product with the full gating tensor ``G [XY, XY]`` per head.

    The grid is zero-padded to powers of two and ``G`` built by log-depth doubling (see the module docstring).
    Memory ``O(B H (X Y)^2)``.

    Args:
        q, k, v, source_r, ..., direct, scale: as in :func:`~recvision.ops.plstm2d.naive_plstm2d`.

    Returns:
        ``o [B, X, Y, H, DV]`` in q's dtype.
    """
    gates = gate_dict(source_r, source_d, trans_rl, trans_ru, trans_du, trans_dl, mark_l, mark_u, direct)
    scale = check_plstm2d_inputs(q, k, v, gates, scale)
    B, X, Y, H, _ = q.shape
    bx, by = next_power_of_two(X), next_power_of_two(Y)
    mm = matmul_dtype(q)
    with autocast_off(q):
        qp, kp, vp, flat = pad_grid(q, k, v, gates, bx, by, compute_dtype(q.dtype))
        blocks = plstm2d_blocks(flat, bx, by)
        qb, kb, vb = to_blocks(qp * scale, bx, by), to_blocks(kp, bx, by), to_blocks(vp, bx, by)
        o = intra_block_output(qb, kb, vb, blocks.g, mm)
    return from_blocks(o, B, H, bx, by)[:, :X, :Y].to(q.dtype)
