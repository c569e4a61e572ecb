"""Readable PyTorch reference of the 2-D pLSTM: one cell at a time, in anti-diagonal order.

Pöppel et al., "pLSTM: parallelizable Linear Source Transition Mark networks" (arXiv 2506.11997), §3, on the 2-D
grid DAG (one node per cell, outgoing edges to the right (+x) and down (+y)). Edge states, ``[DK, DV]`` per head::

    R[x, y] = trans_rl R[x-1, y] + trans_ru D[x, y-1] + source_r k v^T          (edge to the right)
    D[x, y] = trans_du D[x, y-1] + trans_dl R[x-1, y] + source_d k v^T          (edge downwards)
    o[x, y] = scale q^T (mark_l R[x-1, y] + mark_u D[x, y-1]) + direct scale (q . k) v

with every gate taken at ``(x, y)`` and ``R[-1, y] = D[x, -1] = 0``. The maths is in this folder's ``README.md``.
"""

from __future__ import annotations

import torch

from .common import check_plstm2d_inputs, compute_dtype, gate_dict

__all__ = ["naive_plstm2d"]


def naive_plstm2d(
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
    """2-D pLSTM by the recurrence itself: a Python loop over the cells, ``O(X Y)`` sequential steps.

    Cells on one anti-diagonal ``x + y = d`` only read states of diagonal ``d - 1``; the loop visits them in that
    order. Slow; meant for tests on small grids.

    Args:
        q: queries ``[B, X, Y, H, DK]``.
        k: keys ``[B, X, Y, H, DK]``.
        v: values ``[B, X, Y, H, DV]``.
        source_r, source_d: sources onto the right/down edge, ``[B, X, Y, H]`` each.
        trans_rl, trans_ru: transitions into the right edge from the left/upper edge.
        trans_du, trans_dl: transitions into the down edge from the upper/left edge.
        mark_l, mark_u: marks of the edge from the left/above.
        direct: direct (skip) gate.
        scale: query scale; ``None`` means ``DK ** -0.5``.

    Returns:
        ``o [B, X, Y, H, DV]`` in q's dtype (computed in float32, float64 for float64 inputs).
    """
    gates = gate_dict(source_r, source_d, trans_rl, trans_ru, trans_du, trans_dl, mark_l, mark_u, direct)
    scale = check_plstm2d_inputs(q, k, v, gates, scale)
    dtype = compute_dtype(q.dtype)
    B, X, Y, H, DK = q.shape
    DV = v.shape[-1]
    qf, kf, vf = q.to(dtype) * scale, k.to(dtype), v.to(dtype)
    g = {name: gate.to(dtype)[..., None, None] for name, gate in gates.items()}  # [B, X, Y, H, 1, 1]
    zero = q.new_zeros(B, H, DK, DV, dtype=dtype)
    right: dict[tuple[int, int], torch.Tensor] = {}
    down: dict[tuple[int, int], torch.Tensor] = {}
    out: dict[tuple[int, int], torch.Tensor] = {}
    for d in range(X + Y - 1):
        for x in range(max(0, d - Y + 1), min(d, X - 1) + 1):
            y = d - x
            r_in = right[x - 1, y] if x > 0 else zero
            d_in = down[x, y - 1] if y > 0 else zero
            kv = kf[:, x, y, :, :, None] * vf[:, x, y, :, None, :]  # [B, H, DK, DV]
            gate = {name: t[:, x, y] for name, t in g.items()}
            right[x, y] = gate["trans_rl"] * r_in + gate["trans_ru"] * d_in + gate["source_r"] * kv
            down[x, y] = gate["trans_du"] * d_in + gate["trans_dl"] * r_in + gate["source_d"] * kv
            state = gate["mark_l"] * r_in + gate["mark_u"] * d_in + gate["direct"] * kv
            out[x, y] = torch.einsum("bhk,bhkv->bhv", qf[:, x, y], state)
    o = torch.stack([torch.stack([out[x, y] for y in range(Y)], dim=1) for x in range(X)], dim=1)
    return o.to(q.dtype)
