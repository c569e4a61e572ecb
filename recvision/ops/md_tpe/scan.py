"""MD-TPE axis scans: the :func:`md_tpe` dispatcher and its PyTorch form :func:`md_tpe_torch`.

Qin et al., "You Only Scan Once" (LightNet, arXiv 2405.21022), MD-TPE. For a channels-last grid
``x [B, H, W, C]`` (``C = num_heads * head_dim``) and ``lambda_h = exp(g_h)``, each axis scan is, per line and
channel::

    causal:         y_t = sum_{s <= t} lambda^(t-s) x_s
    bidirectional:  y_t = sum_s lambda^|t-s| x_s

and ``md_tpe(x) = scan along H + scan along W``. The maths is in this folder's ``README.md``; the Triton kernels are
in :mod:`~recvision.ops.md_tpe.triton_scan`, imported only when a call takes the Triton path.
"""

from __future__ import annotations

import torch

from ...config import use_triton
from .common import check_md_tpe_inputs, compute_dtype

__all__ = ["md_tpe", "md_tpe_torch"]


@torch.compiler.disable
def md_tpe(x: torch.Tensor, log_decay: torch.Tensor, causal: bool = False, backend: str | None = None) -> torch.Tensor:
    r"""MD-TPE: per-head exponential Toeplitz scans along both spatial axes of ``x``, summed.

    Per head ``h`` with ``lambda = exp(log_decay[h])`` and along each axis (Qin et al., LightNet,
    arXiv 2405.21022)::

        causal:         y_t = sum_{s <= t} lambda^(t-s) x_s
        bidirectional:  y_t = sum_s lambda^|t-s| x_s
        md_tpe(x) = scan along H + scan along W

    On CUDA tensors (or with ``backend="triton"``) this runs the Triton kernels, differentiable w.r.t. ``x`` and
    ``log_decay`` (:mod:`~recvision.ops.md_tpe.triton_scan`, imported on first use); otherwise
    :func:`md_tpe_torch`.

    Args:
        x: channels-last grid ``[B, H, W, C]``, ``C = num_heads * head_dim``; any H, W >= 1.
        log_decay: ``log(lambda)`` per head ``[num_heads]``, finite and ``<= 0``.
        causal: scan only from the start of each axis instead of both ways.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``; ``None`` uses the global switch of
            :mod:`recvision.config`.

    Returns:
        ``y [B, H, W, C]`` in ``x``'s dtype.

    Raises:
        ValueError: on malformed inputs (the message names the argument).
    """
    D = check_md_tpe_inputs(x, log_decay)
    if not use_triton(x, backend):
        return md_tpe_torch(x, log_decay, causal)
    from .triton_scan import md_tpe_triton

    return md_tpe_triton(x, log_decay, D, causal)


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
    backward = _causal_scan_chunked(x.flip(1), g, chunk_size).flip(1)
    if torch.is_grad_enabled() or torch.result_type(y, x) != y.dtype:
        return y + backward - x
    # without autograd the sum goes into the scan's own output (the same operations in the same order)
    return y.add_(backward).sub_(x)


def md_tpe_torch(x: torch.Tensor, log_decay: torch.Tensor, causal: bool = False, chunk_size: int = 64) -> torch.Tensor:
    """Efficient PyTorch MD-TPE (the CPU path of :func:`md_tpe`).

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
    y = y_w + y_h if torch.is_grad_enabled() or torch.result_type(y_w, y_h) != y_w.dtype else y_w.add_(y_h)
    return y.reshape(B, H, W, C).to(x.dtype)
