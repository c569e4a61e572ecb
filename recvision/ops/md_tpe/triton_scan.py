"""MD-TPE axis scans on Triton (forward and backward): the CUDA path of ``md_tpe``.

Qin et al., "You Only Scan Once" (LightNet, arXiv 2405.21022), MD-TPE. For a channels-last grid
``x [B, H, W, C]`` (``C = num_heads * head_dim``) and ``lambda_h = exp(g_h)``, each axis scan is, per line and
channel::

    causal:         y_t = sum_{s <= t} lambda^(t-s) x_s
    bidirectional:  y_t = sum_s lambda^|t-s| x_s

and ``md_tpe(x) = scan along H + scan along W``. The maths of the backward pass is in this folder's ``README.md``.

Kernels (one call per axis; the second call accumulates into the first one's buffer):

* ``md_tpe_fwd_kernel``: one program per ``(channel block, line)`` walks the line forwards (and, when
  bidirectional, backwards) with a ``[BC]`` state;
* ``md_tpe_bwd_kernel``: same grid; ``dx`` is the transposed scan of ``dy`` (reverse scan when causal, the same
  bidirectional scan otherwise) and the partial ``dg`` per ``(line, channel)`` is ``sum_t dy_t . z_t`` with
  ``z_t = sum_s |t-s| lambda^|t-s| x_s`` built by the recurrence ``z_t = lambda (z_{t-1} + y_{t-1})``.

A line is addressed as ``base + t * stride_t + c`` with ``base = b * stride_b + m * stride_m`` (``m`` = index
along the other spatial axis). Everything is computed in float32 (float64 for float64 inputs); the buffers are
in that dtype and cast to the input dtype at the end.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..common.triton_utils import kernel_dtypes
from ..utils.guards import input_guard

__all__ = ["MdTpeFunction", "md_tpe_triton"]

MAX_BLOCK_C = 256


@triton.jit(do_not_specialize=["L", "M", "stride_b", "stride_m", "stride_t"])
def md_tpe_fwd_kernel(
    x,
    g,
    y,
    L,
    M,
    stride_b,
    stride_m,
    stride_t,
    C: tl.constexpr,
    D: tl.constexpr,
    BC: tl.constexpr,
    ACC: tl.constexpr,
    CAUSAL: tl.constexpr,
    ACCUMULATE: tl.constexpr,
):
    i_c, i_n = tl.program_id(0), tl.program_id(1)
    i_b = tl.cast(i_n // M, tl.int64)
    i_m = tl.cast(i_n % M, tl.int64)
    base = i_b * stride_b + i_m * stride_m
    o_c = i_c * BC + tl.arange(0, BC)
    m_c = o_c < C
    b_lam = tl.exp(tl.load(g + o_c // D, mask=m_c, other=0).to(ACC))

    b_s = tl.zeros([BC], dtype=ACC)
    for t in range(L):
        p = base + tl.cast(t, tl.int64) * stride_t + o_c
        b_x = tl.load(x + p, mask=m_c, other=0).to(ACC)
        b_s = b_s * b_lam + b_x
        b_y = b_s
        if ACCUMULATE:
            b_y += tl.load(y + p, mask=m_c, other=0).to(ACC)
        tl.store(y + p, b_y.to(y.dtype.element_ty), mask=m_c)

    if not CAUSAL:
        # anti-causal half: y_t += sum_{s >= t} lambda^(s-t) x_s - x_t (the diagonal is already in)
        b_s = tl.zeros([BC], dtype=ACC)
        for r in range(L):
            t = L - 1 - r
            p = base + tl.cast(t, tl.int64) * stride_t + o_c
            b_x = tl.load(x + p, mask=m_c, other=0).to(ACC)
            b_s = b_s * b_lam + b_x
            b_y = tl.load(y + p, mask=m_c, other=0).to(ACC) + b_s - b_x
            tl.store(y + p, b_y.to(y.dtype.element_ty), mask=m_c)


@triton.jit(do_not_specialize=["L", "M", "stride_b", "stride_m", "stride_t"])
def md_tpe_bwd_kernel(
    x,
    dy,
    g,
    dx,
    dg,
    L,
    M,
    stride_b,
    stride_m,
    stride_t,
    C: tl.constexpr,
    D: tl.constexpr,
    BC: tl.constexpr,
    ACC: tl.constexpr,
    CAUSAL: tl.constexpr,
    ACCUMULATE: tl.constexpr,
):
    i_c, i_n = tl.program_id(0), tl.program_id(1)
    i_b = tl.cast(i_n // M, tl.int64)
    i_m = tl.cast(i_n % M, tl.int64)
    base = i_b * stride_b + i_m * stride_m
    o_c = i_c * BC + tl.arange(0, BC)
    m_c = o_c < C
    b_lam = tl.exp(tl.load(g + o_c // D, mask=m_c, other=0).to(ACC))

    # forward walk: y (causal scan of x), z = sum_{s<t} (t-s) lambda^(t-s) x_s, and dg += dy_t * z_t;
    # when bidirectional also the causal scan of dy, the anti-causal half of dx
    b_y = tl.zeros([BC], dtype=ACC)
    b_z = tl.zeros([BC], dtype=ACC)
    b_a = tl.zeros([BC], dtype=ACC)
    b_dg = tl.zeros([BC], dtype=ACC)
    for t in range(L):
        p = base + tl.cast(t, tl.int64) * stride_t + o_c
        b_x = tl.load(x + p, mask=m_c, other=0).to(ACC)
        b_dy = tl.load(dy + p, mask=m_c, other=0).to(ACC)
        b_z = b_lam * (b_z + b_y)
        b_y = b_y * b_lam + b_x
        b_dg += b_dy * b_z
        if not CAUSAL:
            b_a = b_a * b_lam + b_dy
            b_dx = b_a
            if ACCUMULATE:
                b_dx += tl.load(dx + p, mask=m_c, other=0).to(ACC)
            tl.store(dx + p, b_dx.to(dx.dtype.element_ty), mask=m_c)

    # backward walk: the reverse scan of dy (dx of the causal half); when bidirectional also the anti-causal
    # y and z of x for dg
    b_a = tl.zeros([BC], dtype=ACC)
    b_y = tl.zeros([BC], dtype=ACC)
    b_z = tl.zeros([BC], dtype=ACC)
    for r in range(L):
        t = L - 1 - r
        p = base + tl.cast(t, tl.int64) * stride_t + o_c
        b_dy = tl.load(dy + p, mask=m_c, other=0).to(ACC)
        b_a = b_a * b_lam + b_dy
        if CAUSAL:
            b_dx = b_a
            if ACCUMULATE:
                b_dx += tl.load(dx + p, mask=m_c, other=0).to(ACC)
        else:
            b_x = tl.load(x + p, mask=m_c, other=0).to(ACC)
            b_z = b_lam * (b_z + b_y)
            b_y = b_y * b_lam + b_x
            b_dg += b_dy * b_z
            b_dx = tl.load(dx + p, mask=m_c, other=0).to(ACC) + b_a - b_dy
        tl.store(dx + p, b_dx.to(dx.dtype.element_ty), mask=m_c)

    tl.store(dg + tl.cast(i_n, tl.int64) * C + o_c, b_dg.to(dg.dtype.element_ty), mask=m_c)


def _axes(shape: torch.Size) -> tuple[tuple[int, int, int, int, int], ...]:
    """``(L, M, stride_b, stride_m, stride_t)`` of the scan along W and of the scan along H."""
    B, H, W, C = shape
    return ((W, H, H * W * C, W * C, C), (H, W, H * W * C, C, W * C))


def _meta(x: torch.Tensor, D: int) -> dict:
    C = x.shape[-1]
    BC = min(MAX_BLOCK_C, triton.next_power_of_2(C))
    return dict(C=C, D=D, BC=BC, ACC=kernel_dtypes(x.dtype)[:2][1], num_warps=4 if BC >= 128 else 1)


def md_tpe_fwd(x: torch.Tensor, g: torch.Tensor, D: int, causal: bool) -> torch.Tensor:
    """Forward pass on contiguous ``x [B, H, W, C]`` and ``g [nh]`` (accumulation dtype)."""
    acc = kernel_dtypes(x.dtype)[:2][0]
    meta = _meta(x, D)
    y = torch.empty_like(x, dtype=acc)
    B = x.shape[0]
    for i, (L, M, sb, sm, st) in enumerate(_axes(x.shape)):
        md_tpe_fwd_kernel[(triton.cdiv(meta["C"], meta["BC"]), B * M)](
            x, g, y, L, M, sb, sm, st, CAUSAL=causal, ACCUMULATE=i > 0, **meta
        )
    return y.to(x.dtype)


def md_tpe_bwd(
    x: torch.Tensor, g: torch.Tensor, dy: torch.Tensor, D: int, causal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward pass on contiguous inputs: ``dx`` (``x``'s dtype) and ``dg [nh]`` (accumulation dtype)."""
    acc = kernel_dtypes(x.dtype)[:2][0]
    meta = _meta(x, D)
    B, _, _, C = x.shape
    dx = torch.empty_like(x, dtype=acc)
    dg = torch.zeros(C, dtype=acc, device=x.device)
    for i, (L, M, sb, sm, st) in enumerate(_axes(x.shape)):
        part = torch.empty(B * M, C, dtype=acc, device=x.device)
        md_tpe_bwd_kernel[(triton.cdiv(C, meta["BC"]), B * M)](
            x, dy, g, dx, part, L, M, sb, sm, st, CAUSAL=causal, ACCUMULATE=i > 0, **meta
        )
        dg += part.sum(0)
    return dx.to(x.dtype), dg.view(C // D, D).sum(1)


class MdTpeFunction(torch.autograd.Function):
    """Autograd wrapper of the MD-TPE kernels; differentiable w.r.t. ``x`` and the log decays ``g``."""

    @staticmethod
    @input_guard
    def forward(ctx, x: torch.Tensor, g: torch.Tensor, head_dim: int, causal: bool) -> torch.Tensor:
        ctx.save_for_backward(x, g)
        ctx.head_dim = head_dim
        ctx.causal = causal
        return md_tpe_fwd(x, g, head_dim, causal)

    @staticmethod
    @input_guard
    def backward(ctx, dy: torch.Tensor):
        x, g = ctx.saved_tensors
        dx, dg = md_tpe_bwd(x, g, dy, ctx.head_dim, ctx.causal)
        return dx, dg.to(g.dtype), None, None


def md_tpe_triton(x: torch.Tensor, log_decay: torch.Tensor, head_dim: int, causal: bool) -> torch.Tensor:
    """The Triton path of :func:`~recvision.ops.md_tpe.md_tpe`, on inputs it has already checked.

    Args:
        x: channels-last grid ``[B, H, W, C]``; log_decay: ``[C // head_dim]``; head_dim: channels per head.
        causal: scan only from the start of each axis.

    Returns:
        ``y [B, H, W, C]`` in ``x``'s dtype.
    """
    g = log_decay.to(device=x.device, dtype=kernel_dtypes(x.dtype)[0]).contiguous()
    return MdTpeFunction.apply(x, g, head_dim, bool(causal))
