"""Shape checks without :func:`torch.broadcast_shapes`, whose first call imports sympy (~40 MiB, ~1 s) in torch 2.x."""

from __future__ import annotations

from collections.abc import Sequence


def broadcast_shape(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...] | None:
    """NumPy broadcasting of two shapes: the broadcast shape, or ``None`` when they do not broadcast."""
    ndim = max(len(a), len(b))
    a = (1,) * (ndim - len(a)) + tuple(a)
    b = (1,) * (ndim - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b, strict=True):
        if x != y and x != 1 and y != 1:
            return None
        out.append(y if x == 1 else x)
    return tuple(out)
