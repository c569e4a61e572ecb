"""Input checks shared by the ops: one ``ValueError`` line that names the argument, raised before any work."""

from __future__ import annotations

import torch

__all__ = ["check_qkv"]


def check_qkv(op: str, q: object, k: object, v: object, qk_layout: str, v_layout: str) -> None:
    """Check that ``q, k, v`` are tensors of one floating dtype, ``q`` and ``k`` of one shape, ``v`` matching them
    in every dimension but the last.

    Args:
        op: the op's name, the start of every message.
        q, k: queries and keys, laid out as ``qk_layout`` (e.g. ``"[B, T, H, K]"``; its number of entries is the
            number of dimensions).
        v: values, laid out as ``v_layout`` (e.g. ``"[B, T, H, V]"``).

    Raises:
        ValueError: naming the offending argument and giving the shapes or dtypes seen.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{op}: {name} must be a tensor; got {type(t).__name__}")
    ndim = qk_layout.count(",") + 1
    if q.ndim != ndim or k.ndim != ndim or v.ndim != ndim:
        raise ValueError(
            f"{op} expects q, k of shape {qk_layout} and v of shape {v_layout}; got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if q.shape != k.shape:
        raise ValueError(
            f"{op}: q and k must have the same shape {qk_layout}; got q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
    if v.shape[:-1] != q.shape[:-1]:
        lead = qk_layout[1:].rsplit(",", 1)[0]  # "[B, T, H, K]" -> "B, T, H"
        raise ValueError(f"{op}: v must be {v_layout} with {lead} of q {tuple(q.shape[:-1])}; got {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        raise ValueError(f"{op}: q, k, v must share one floating dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
