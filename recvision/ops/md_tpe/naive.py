"""Readable PyTorch reference of MD-TPE, the multi-dimensional Toeplitz positional encoding of LightNet.

Qin et al., "You Only Scan Once: Efficient Multi-dimension Sequential Modeling with LightNet" (arXiv 2405.21022).
TPE is a per-head exponential Toeplitz kernel applied along one axis; MD-TPE sums it over the two spatial axes of a
channels-last grid ``x [B, H, W, C]`` (``C = num_heads * head_dim``, ``lambda_h = exp(log_decay[h])``)::

    causal:         y_t = sum_{s <= t} lambda^(t - s) x_s
    bidirectional:  y_t = sum_s lambda^|t - s| x_s            (s = t counted once)
    md_tpe(x) = scan_rows(x) + scan_cols(x)

It upcasts to float32 (float64 stays float64) and return the input dtype. The maths is in ``README.md``.
"""

from __future__ import annotations

import torch

from .common import check_md_tpe_inputs, compute_dtype

__all__ = ["naive_md_tpe"]


def _naive_axis_scan(x: torch.Tensor, lam: torch.Tensor, dim: int, causal: bool) -> torch.Tensor:
    """Step-by-step scan of ``x [B, H, W, nh, D]`` along ``dim`` (1 or 2) with decay ``lam [nh, 1]``."""
    L = x.shape[dim]
    steps = x.unbind(dim)
    state = torch.zeros_like(steps[0])
    forward = []
    for t in range(L):
        state = lam * state + steps[t]
        forward.append(state)
    if causal:
        return torch.stack(forward, dim)
    state = torch.zeros_like(steps[0])
    out: list[torch.Tensor] = [steps[0]] * L
    for t in reversed(range(L)):
        state = lam * state + steps[t]
        out[t] = forward[t] + state - steps[t]
    return torch.stack(out, dim)


def naive_md_tpe(x: torch.Tensor, log_decay: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """Readable reference of :func:`~recvision.ops.md_tpe.md_tpe`: explicit Python loops over both axes.

    Args:
        x: channels-last grid ``[B, H, W, C]``, ``C = num_heads * head_dim``.
        log_decay: ``log(lambda)`` per head ``[num_heads]``, finite and ``<= 0``.
        causal: scan only from the start of each axis (``s <= t``) instead of both ways.

    Returns:
        ``y [B, H, W, C]`` in ``x``'s dtype; differentiable w.r.t. ``x`` and ``log_decay``.
    """
    D = check_md_tpe_inputs(x, log_decay)
    dtype = compute_dtype(x.dtype)
    B, H, W, C = x.shape
    nh = C // D
    xf = x.to(dtype).reshape(B, H, W, nh, D)
    lam = log_decay.to(device=x.device, dtype=dtype).exp().view(nh, 1)
    y = _naive_axis_scan(xf, lam, 1, causal) + _naive_axis_scan(xf, lam, 2, causal)
    return y.reshape(B, H, W, C).to(x.dtype)
