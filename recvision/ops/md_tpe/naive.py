"""PyTorch implementations of MD-TPE, the multi-dimensional Toeplitz positional encoding of LightNet.

Qin et al., "You Only Scan Once: Efficient Multi-dimension Sequential Modeling with LightNet" (arXiv 2405.21022).
TPE is a per-head exponential Toeplitz kernel applied along one axis; MD-TPE sums it over the two spatial axes of a
channels-last grid ``x [B, H, W, C]`` (``C = num_heads * head_dim``, ``lambda_h = exp(log_decay[h])``)::

    causal:         y_t = sum_{s <= t} lambda^(t - s) x_s
    bidirectional:  y_t = sum_s lambda^|t - s| x_s            (s = t counted once)
    md_tpe(x) = scan_rows(x) + scan_cols(x)

Both functions upcast to float32 (float64 stays float64) and return the input dtype. The maths is in ``README.md``.
"""

from __future__ import annotations

import torch

from .common import check_md_tpe_inputs, compute_dtype

__all__ = ["naive_md_tpe", "md_tpe_torch"]


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


def _causal_scan_chunked(x: torch.Tensor, g: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Causal scan along dim -3 of ``x [N, L, nh, D]`` with log decay ``g [nh]``, chunk by chunk.

    Inside a chunk of ``c`` tokens: ``y = Dm x`` with ``Dm[i, j] = lambda^(i-j)`` for ``i >= j`` (else 0);
    across chunks: ``y_i += lambda^(i+1) Y_prev`` where ``Y_prev`` is the output at the last token of the previous
    chunk. Every decay is ``exp(g n)`` with ``n >= 0``, so nothing overflows. Memory: ``O(c^2 nh)`` for the table
    plus ``O(L)`` per line.
    """
    N, L, nh, D = x.shape
    c = min(chunk_size, L)
    K = -(-L // c)
    pad = K * c - L
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad))
    xc = x.reshape(N, K, c, nh, D)
    pos = torch.arange(c, device=x.device, dtype=x.dtype)
    diff = pos[:, None] - pos[None, :]
    gv = g.view(nh, 1, 1)
    table = torch.where(diff >= 0, torch.exp(gv * diff.clamp(min=0)), torch.zeros((), dtype=x.dtype, device=x.device))
    intra = torch.einsum("hij,nkjhd->nkihd", table, xc)  # [N, K, c, nh, D]
    if K == 1:
        return intra.reshape(N, c, nh, D)[:, :L]
    carry_decay = torch.exp(g.view(1, nh) * (pos + 1).view(c, 1)).view(1, c, nh, 1)  # lambda^(i+1)
    chunks = [intra[:, 0]]
    for k in range(1, K):
        chunks.append(intra[:, k] + carry_decay * chunks[-1][:, -1:])
    return torch.stack(chunks, 1).reshape(N, K * c, nh, D)[:, :L]


def _axis_scan_torch(x: torch.Tensor, g: torch.Tensor, causal: bool, chunk_size: int) -> torch.Tensor:
    """Scan of ``x [N, L, nh, D]`` along dim 1, causal or bidirectional."""
    y = _causal_scan_chunked(x, g, chunk_size)
    if causal:
        return y
    return y + _causal_scan_chunked(x.flip(1), g, chunk_size).flip(1) - x


def md_tpe_torch(x: torch.Tensor, log_decay: torch.Tensor, causal: bool = False, chunk_size: int = 64) -> torch.Tensor:
    """Efficient PyTorch MD-TPE (the CPU path of :func:`~recvision.ops.md_tpe.md_tpe`).

    Each axis scan is chunked: a ``[c, c]`` decay-matrix product inside chunks of ``chunk_size`` tokens and a
    short recurrence across chunks; the bidirectional scan is ``forward + reversed - x``.

    Args:
        x: channels-last grid ``[B, H, W, C]``, ``C = num_heads * head_dim``.
        log_decay: ``log(lambda)`` per head ``[num_heads]``, finite and ``<= 0``.
        causal: scan only from the start of each axis.
        chunk_size: tokens per chunk (only affects speed and memory).

    Returns:
        ``y [B, H, W, C]`` in ``x``'s dtype; differentiable w.r.t. ``x`` and ``log_decay``.
    """
    D = check_md_tpe_inputs(x, log_decay)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    dtype = compute_dtype(x.dtype)
    B, H, W, C = x.shape
    nh = C // D
    g = log_decay.to(device=x.device, dtype=dtype)
    xf = x.to(dtype).reshape(B, H, W, nh, D)
    # along W: lines are (b, h)
    y_w = _axis_scan_torch(xf.reshape(B * H, W, nh, D), g, causal, chunk_size).reshape(B, H, W, nh, D)
    # along H: lines are (b, w)
    x_h = xf.transpose(1, 2).reshape(B * W, H, nh, D)
    y_h = _axis_scan_torch(x_h, g, causal, chunk_size).reshape(B, W, H, nh, D).transpose(1, 2)
    return (y_w + y_h).reshape(B, H, W, C).to(x.dtype)
