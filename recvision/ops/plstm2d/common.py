"""Shared pieces of the 2-D pLSTM ops: argument checks, the gate names, the dtype policy and the chunk sides."""

from __future__ import annotations

import math

import torch

from ..utils.checks import check_qkv
from ..utils.dtypes import compute_dtype

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "GATE_NAMES",
    "SCAN_MAX_CELLS",
    "check_plstm2d_inputs",
    "chunk_sides",
    "compute_dtype",
    "gate_dict",
    "next_power_of_two",
]

# Keyword names of the nine per-cell gates, in the order of the public signatures.
GATE_NAMES = ("source_r", "source_d", "trans_rl", "trans_ru", "trans_du", "trans_dl", "mark_l", "mark_u", "direct")


def gate_dict(*gates: torch.Tensor) -> dict[str, torch.Tensor]:
    """The nine gates, given positionally in :data:`GATE_NAMES` order, keyed by name."""
    return dict(zip(GATE_NAMES, gates, strict=True))


def check_plstm2d_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: dict[str, torch.Tensor], scale: float | None
) -> float:
    """Validate the inputs of a pLSTM 2-D op and resolve the default query scale.

    Args:
        q: queries ``[B, X, Y, H, DK]``.
        k: keys ``[B, X, Y, H, DK]``.
        v: values ``[B, X, Y, H, DV]``.
        gates: the nine gates keyed by :data:`GATE_NAMES`, each ``[B, X, Y, H]``.
        scale: query scale, or ``None`` for ``DK ** -0.5``.

    Returns:
        The query scale as a float.
    """
    check_qkv("plstm2d", q, k, v, "[B, X, Y, H, DK]", "[B, X, Y, H, DV]")
    if min(q.shape) == 0 or v.shape[-1] == 0:
        raise ValueError(f"plstm2d: every dimension must be non-empty; got q {tuple(q.shape)}, v {tuple(v.shape)}")
    expected = tuple(q.shape[:4])
    for name in GATE_NAMES:
        gate = gates.get(name)
        if not isinstance(gate, torch.Tensor):
            raise ValueError(f"plstm2d: gate {name} must be a tensor of shape [B, X, Y, H] = {list(expected)}")
        if tuple(gate.shape) != expected:
            raise ValueError(
                f"plstm2d: gate {name} must have shape [B, X, Y, H] = {list(expected)}; got {tuple(gate.shape)}"
            )
        if not gate.is_floating_point():
            raise ValueError(f"plstm2d: gate {name} must be a floating tensor; got {gate.dtype}")
        if gate.device != q.device:
            raise ValueError(f"plstm2d: gate {name} is on {gate.device} but q is on {q.device}")
    if scale is None:
        return 1.0 / math.sqrt(q.shape[-1])
    return float(scale)


def next_power_of_two(n: int) -> int:
    """Smallest power of two ``>= n`` (``n >= 1``)."""
    return 1 << (n - 1).bit_length()


DEFAULT_CHUNK_SIZE = 4
# Chunks of up to this many cells get their operators from the anti-diagonal scan (fewer, larger tensor ops: faster
# than the doubling on the CPU at 4x4 and 8x8, see benchmarks/bench_plstm_op.py); larger ones, where the
# scan's bx + by - 1 steps over bx*by + bx + by coefficients cost more, from the log-depth doubling.
SCAN_MAX_CELLS = 64


def chunk_sides(X: int, Y: int, chunk_size: int | None) -> tuple[int, int]:
    """Chunk sides ``(bx, by)`` for an ``X x Y`` grid: ``chunk_size`` clipped to the grid's power-of-two size.

    Args:
        X, Y: grid size.
        chunk_size: requested chunk side, a power of two; ``None`` means one chunk for grids that pad to at most
            :data:`SCAN_MAX_CELLS` cells (e.g. 8x8), :data:`DEFAULT_CHUNK_SIZE` otherwise.
    """
    if chunk_size is None and next_power_of_two(X) * next_power_of_two(Y) <= SCAN_MAX_CELLS:
        # a small grid is fastest as one chunk: the boundary states of a split cost DK*DV per edge, more than the
        # whole gating tensor (slower per training step of plstm_femto at 8x8 tokens with 4x4 chunks)
        return next_power_of_two(X), next_power_of_two(Y)
    size = DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size
    if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size & (size - 1):
        raise ValueError(f"plstm2d: chunk_size must be a power of two >= 1 (or None); got {chunk_size!r}")
    return min(size, next_power_of_two(X)), min(size, next_power_of_two(Y))
