"""Gate constructors and grid orientations of the 2-D pLSTM (Pöppel et al., "pLSTM: parallelizable Linear Source
Transition Mark networks", arXiv 2506.11997, §3-4; reference code ``ml-jku/plstm``).

The layer produces raw activations; these pure functions turn them into the nine per-cell gates that the ops take
as keyword arguments (``plstm2d(q, k, v, **gates)``). All gates are ``[B, X, Y, H]``.
"""

from __future__ import annotations

import torch

__all__ = ["p_mode_gates", "d_mode_gates", "orient", "unorient", "ORIENTATIONS", "P_GATE_FORMS"]

# How P-mode shares source and transition between the two outgoing edges (see :func:`p_mode_gates`).
P_GATE_FORMS = ("split", "complement")

# orientation -> grid axes flipped (X = dim 1, Y = dim 2)
ORIENTATIONS: dict[int, tuple[int, ...]] = {0: (), 1: (1,), 2: (2,), 3: (1, 2)}


def _same_shape(named: dict[str, torch.Tensor], fn: str) -> None:
    shapes = {name: tuple(t.shape) for name, t in named.items()}
    first = next(iter(shapes.values()))
    if any(s != first for s in shapes.values()):
        raise ValueError(f"{fn}: all activations must share one shape [B, X, Y, H]; got {shapes}")


def p_mode_gates(
    source: torch.Tensor,
    transition: torch.Tensor,
    mark: torch.Tensor,
    direct: torch.Tensor,
    orientation: torch.Tensor,
    form: str = "split",
) -> dict[str, torch.Tensor]:
    """Gates of the propagation (P) mode: one source/transition/mark shared between the two outgoing edges.

    With the orientation gate ``o`` in ``[0, 1]``, ``form="split"`` (the default) divides ``S`` and ``T``::

        source_r = o S        source_d = (1 - o) S
        trans_rl = trans_ru = o T        trans_du = trans_dl = (1 - o) T
        mark_l = mark_u = M              direct = D

    so the transitions leaving one incoming edge sum to ``T``; ``|T| <= 1`` keeps every state bounded.
    ``form="complement"`` is what the authors' code builds (``ml-jku/plstm``, ``pLSTM2DLayer`` and
    ``pLSTM2DLayerFused``: ``s_d = 1 - s_r``, ``t_du = t_dl = 1 - t_rl`` with ``s_r = o S``, ``t_rl = o T``)::

        source_r = o S        source_d = 1 - o S
        trans_rl = trans_ru = o T        trans_du = trans_dl = 1 - o T

    There the down-going edge gets the complement of the right-going gate, not its share: the two transitions
    leaving an incoming edge always sum to 1 (whatever ``T``), and the down-going source ``1 - o S`` is near 1
    where ``S`` is small (at the reference initialisation ``S ~ 0.02``). With ``T`` from a tanh, ``1 - o T`` lies in
    ``[0, 2]``: where ``o T < 0`` the absolute transitions leaving an edge sum to ``1 + 2 |o T| > 1``, so the gates
    alone no longer bound the states (the split form keeps that sum at ``|T| <= 1``). Use it to reproduce a model
    trained with the authors' code.

    Args:
        source: source activation ``S`` ``[B, X, Y, H]`` (e.g. a sigmoid).
        transition: transition activation ``T`` ``[B, X, Y, H]`` (e.g. a tanh).
        mark: mark activation ``M`` ``[B, X, Y, H]``.
        direct: direct (skip) activation ``D`` ``[B, X, Y, H]``.
        orientation: orientation gate ``o`` ``[B, X, Y, H]`` in ``[0, 1]`` (not the grid orientation of
            :func:`orient`).
        form: ``"split"`` or ``"complement"`` (see above).

    Returns:
        The nine gates keyed like the op's keyword arguments.
    """
    _same_shape(
        {"source": source, "transition": transition, "mark": mark, "direct": direct, "orientation": orientation},
        "p_mode_gates",
    )
    if form not in P_GATE_FORMS:
        raise ValueError(f"p_mode_gates: form must be one of {P_GATE_FORMS}; got {form!r}")
    source_r, trans_r = orientation * source, orientation * transition
    if form == "split":
        source_d, trans_d = (1 - orientation) * source, (1 - orientation) * transition
    else:
        source_d, trans_d = 1 - source_r, 1 - trans_r
    return {
        "source_r": source_r,
        "source_d": source_d,
        "trans_rl": trans_r,
        "trans_ru": trans_r,
        "trans_du": trans_d,
        "trans_dl": trans_d,
        "mark_l": mark,
        "mark_u": mark,
        "direct": direct,
    }


def d_mode_gates(
    source_r: torch.Tensor,
    source_d: torch.Tensor,
    trans_r: torch.Tensor,
    trans_d: torch.Tensor,
    trans_cross: torch.Tensor,
    mark_l: torch.Tensor,
    mark_u: torch.Tensor,
    direct: torch.Tensor,
    chirality: str = "L",
) -> dict[str, torch.Tensor]:
    """Gates of the diffusion (D) mode: independent gates, one of the two turning transitions switched off.

    ``trans_rl = trans_r`` and ``trans_du = trans_d`` carry a state straight on; ``trans_cross`` turns it. With
    chirality ``"L"`` only down-to-right turns exist (``trans_ru = trans_cross``, ``trans_dl = 0``), with ``"R"``
    only right-to-down turns (``trans_dl = trans_cross``, ``trans_ru = 0``). Either way there is at most one path
    between two cells (the edge graph is a multitree, paper §4 "D-mode"), so ``|T| <= 1`` bounds every state.

    Args:
        source_r, source_d: sources onto the right/down edge ``[B, X, Y, H]``.
        trans_r, trans_d, trans_cross: straight-right, straight-down and turning transitions ``[B, X, Y, H]``.
        mark_l, mark_u: marks of the edge from the left/above ``[B, X, Y, H]``.
        direct: direct (skip) gate ``[B, X, Y, H]``.
        chirality: ``"L"`` or ``"R"``.

    Returns:
        The nine gates keyed like the op's keyword arguments.
    """
    if chirality not in ("L", "R"):
        raise ValueError(f"d_mode_gates: chirality must be 'L' or 'R'; got {chirality!r}")
    _same_shape(
        {
            "source_r": source_r,
            "source_d": source_d,
            "trans_r": trans_r,
            "trans_d": trans_d,
            "trans_cross": trans_cross,
            "mark_l": mark_l,
            "mark_u": mark_u,
            "direct": direct,
        },
        "d_mode_gates",
    )
    zero = torch.zeros_like(trans_cross)
    gates = {
        "source_r": source_r,
        "source_d": source_d,
        "trans_rl": trans_r,
        "trans_ru": trans_cross if chirality == "L" else zero,
        "trans_du": trans_d,
        "trans_dl": zero if chirality == "L" else trans_cross,
        "mark_l": mark_l,
        "mark_u": mark_u,
        "direct": direct,
    }
    return gates


def orient(t: torch.Tensor, orientation: int) -> torch.Tensor:
    """Flip the grid axes of ``t [B, X, Y, ...]`` so that the op's ``+x, +y`` flow runs in another direction.

    ``orientation`` 0 keeps the grid, 1 flips X, 2 flips Y, 3 flips both. Apply it to q, k, v and every gate
    before the op and :func:`unorient` to its output; a layer sums or averages the four orientations.
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orient: orientation must be one of 0, 1, 2, 3; got {orientation!r}")
    if t.ndim < 3:
        raise ValueError(f"orient: expected a tensor [B, X, Y, ...]; got shape {tuple(t.shape)}")
    dims = ORIENTATIONS[orientation]
    return t.flip(dims) if dims else t


def unorient(t: torch.Tensor, orientation: int) -> torch.Tensor:
    """Inverse of :func:`orient` (flips are their own inverse)."""
    return orient(t, orientation)
