"""Shape helpers: broadcasting checks without :func:`torch.broadcast_shapes` (whose first call imports sympy,
~40 MiB, ~1 s, in torch 2.x) and the one centre crop used by training, inference and the writer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

ArrayT = TypeVar("ArrayT")


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


def center_crop(x: ArrayT, shape: Sequence[int]) -> ArrayT:
    """Centre crop of the last two dimensions ``[..., H, W] -> [..., h, w]`` (fastMRI's ``center_crop``: the crop
    starts at ``(H - h) // 2``, ``(W - w) // 2``); a view of a numpy array or torch tensor.

    Args:
        x: Array or tensor ``[..., H, W]``.
        shape: ``(h, w)`` with ``0 < h <= H`` and ``0 < w <= W``.

    Raises:
        ValueError: If ``shape`` is not positive or does not fit in the image.
    """
    h, w = (int(c) for c in shape)
    height, width = x.shape[-2:]  # type: ignore[attr-defined]
    if not (0 < h <= height and 0 < w <= width):
        raise ValueError(f"crop size {(h, w)} must be positive and fit in the image size {(int(height), int(width))}")
    top, left = (height - h) // 2, (width - w) // 2
    return x[..., top : top + h, left : left + w]  # type: ignore[index]
