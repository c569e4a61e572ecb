"""Shared input handling for the additive-recurrence ops (argument checks, dtype policy)."""

from __future__ import annotations

import torch

from ..utils.dtypes import compute_dtype

__all__ = ["check_additive_inputs", "compute_dtype", "upcast_inputs"]


def _shape(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def check_additive_inputs(
    q: torch.Tensor,
    k: torch.Tensor | None,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None,
) -> float:
    """Validate the inputs of an additive-recurrence op and resolve the scale.

    Args:
        q: queries ``[B, T, H, K]``.
        k: keys ``[B, T, H, K]`` or ``None`` (all ones).
        v: values ``[B, T, H, V]``.
        g: log-weights ``[B, T, H, K]`` (any floating dtype).
        scale: query scale, or ``None`` for ``1.0`` (q used as is).

    Returns:
        The scale as a float.

    Raises:
        ValueError: naming the offending argument.
    """
    for name, x in (("q", q), ("k", k), ("v", v), ("g", g)):
        if name == "k" and x is None:
            continue
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a tensor; got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"{name} must be 4-D ([B, T, H, D]); got shape {_shape(x)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating tensor; got {x.dtype}")
    if k is not None and k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {_shape(q)} (or be None); got {_shape(k)}")
    if g.shape != q.shape:
        raise ValueError(f"g must have the shape of q {_shape(q)} ([B, T, H, K] log-weights); got {_shape(g)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be [B, T, H, V] with B, T, H of q {_shape(q)[:3]}; got {_shape(v)}")
    if q.shape[1] == 0:
        raise ValueError("q: the additive recurrence needs at least one time step (T >= 1); got T = 0")
    if v.dtype != q.dtype or (k is not None and k.dtype != q.dtype):
        kd = None if k is None else k.dtype
        raise ValueError(f"q, k, v must share one floating dtype; got q {q.dtype}, k {kd}, v {v.dtype}")
    devices = {x.device for x in (q, k, v, g) if x is not None}
    if len(devices) != 1:
        raise ValueError(f"q, k, v, g must be on one device; got {sorted(str(d) for d in devices)}")
    if scale is None:
        return 1.0
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise ValueError(f"scale must be a number or None; got {type(scale).__name__}")
    return float(scale)


def upcast_inputs(
    q: torch.Tensor, k: torch.Tensor | None, v: torch.Tensor, g: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """``q * scale, k, v, g`` in the accumulation dtype (float32; float64 stays float64); ``k`` may be ``None``."""
    dtype = compute_dtype(q.dtype)
    qf = q.to(dtype)
    if scale != 1.0:
        qf = qf * scale
    return qf, (None if k is None else k.to(dtype)), v.to(dtype), g.to(dtype)
