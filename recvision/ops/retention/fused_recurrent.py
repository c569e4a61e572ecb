"""Recurrent retention, one token at a time: the :func:`fused_recurrent_retention` dispatcher.

Sun et al., "Retentive Network" (arXiv 2307.08621), eq. 1-2 (recurrent form); Hatamizadeh et al., "ViR"
(arXiv 2310.19731), §3. On CUDA the fused kernels of :mod:`~recvision.ops.retention.triton_fused_recurrent` keep
the state in registers; the PyTorch path is :func:`fused_recurrent_retention_torch`, a token loop of elementwise
operations on a float32 state (for long sequences on the CPU, :func:`~recvision.ops.retention.chunk_retention` is
much faster: it does the same work as matrix products).
"""

from __future__ import annotations

import torch

from ...config import use_triton
from .common import check_retention_inputs, compute_dtype

__all__ = ["fused_recurrent_retention", "fused_recurrent_retention_torch"]


@torch.compiler.disable
def fused_recurrent_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g_gamma: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Multi-head retention with a constant per-head decay, one token at a time with an O(1) state.

    Per batch ``b`` and head ``h`` with ``gamma = exp(g_gamma[h])``: ``S_t = gamma S_{t-1} + k_t^T v_t`` and
    ``o_t = scale * q_t S_t`` (RetNet, arXiv 2307.08621, eq. 1-2; ViR, arXiv 2310.19731). On CUDA tensors (or with
    ``backend="triton"``) this runs the fused Triton kernels of
    :mod:`~recvision.ops.retention.triton_fused_recurrent` (imported on first use), differentiable w.r.t. ``q``,
    ``k``, ``v``, ``g_gamma`` and ``initial_state``; otherwise :func:`fused_recurrent_retention_torch`.

    Args:
        q: queries ``[B, T, H, K]``.
        k: keys ``[B, T, H, K]``.
        v: values ``[B, T, H, V]``.
        g_gamma: log decay per head ``[H]`` (``<= 0``); ``None`` uses RetNet's ``log(1 - 2^(-5-h))``.
        scale: query scale; ``None`` means ``K ** -0.5``.
        initial_state: state before the first token ``[B, H, K, V]``.
        output_final_state: also return the state after the last token.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``; ``None`` uses the global switch of
            :mod:`recvision.config`.

    Returns:
        ``o [B, T, H, V]`` in the input dtype, and the final state ``[B, H, K, V]`` (float32; float64 for
        float64 inputs) or ``None``.

    Raises:
        ValueError: on malformed inputs; on the Triton path also for ``K`` or ``V`` above 256.
    """
    g_gamma, scale = check_retention_inputs(q, k, v, g_gamma, scale, initial_state)
    if not use_triton(q, backend):
        return fused_recurrent_retention_torch(q, k, v, g_gamma, scale, initial_state, output_final_state)
    from .triton_fused_recurrent import fused_recurrent_retention_triton

    return fused_recurrent_retention_triton(q, k, v, g_gamma, scale, initial_state, output_final_state)


def fused_recurrent_retention_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g_gamma: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Recurrent retention in PyTorch: one step per token on a ``[B, H, K, V]`` state, the CPU path.

    Each step is elementwise (``S = gamma S + k_t^T v_t`` as a broadcast product, ``o_t = sum_k q_t[k] S[k, :]``):
    a tiny batched matrix product per token costs far more in dispatch and layout copies than these few passes
    over a state that stays in cache. The state is kept in float32 (float64 for float64 inputs) whatever the input
    dtype, and there is no matrix product for autocast to lower. Without autograd the state is updated in place;
    with it, every step makes a new state, so autograd keeps ``T`` of them (``T * K * V`` floats per batch and
    head, as the reference does) and differentiates w.r.t. ``q``, ``k``, ``v``, ``g_gamma`` and
    ``initial_state``.

    Args:
        q, k, v, g_gamma, scale, initial_state, output_final_state: as in
            :func:`~recvision.ops.retention.naive.naive_recurrent_retention`.

    Returns:
        ``o [B, T, H, V]`` in the input dtype, and the final state ``[B, H, K, V]`` (float32; float64 for float64
        inputs) or ``None``.
    """
    g_gamma, scale = check_retention_inputs(q, k, v, g_gamma, scale, initial_state)
    dtype = compute_dtype(q.dtype)
    B, T, H, K = q.shape
    V = v.shape[-1]
    gamma = g_gamma.to(dtype).exp().view(1, H, 1, 1)
    # [B, T, H, D] -> [T, B, H, D]: every step then reads one contiguous slice
    qt, kt, vt = (x.to(dtype).transpose(0, 1).contiguous() for x in (q, k, v))
    if scale != 1.0:
        qt = qt * scale
    state = q.new_zeros(B, H, K, V, dtype=dtype) if initial_state is None else initial_state.to(dtype)
    o = q.new_empty(T, B, H, V, dtype=dtype)
    track = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v, g_gamma, initial_state) if x is not None)
    if track:
        outputs = []
        for t in range(T):
            state = gamma * state + kt[t, :, :, :, None] * vt[t, :, :, None, :]
            outputs.append((qt[t, :, :, :, None] * state).sum(-2))
        o = torch.stack(outputs)
    else:
        if initial_state is not None:
            state = state.clone()  # updated in place below; the caller's tensor stays as it was
        for t in range(T):
            state.mul_(gamma).addcmul_(kt[t, :, :, :, None], vt[t, :, :, None, :])
            torch.sum(qt[t, :, :, :, None] * state, dim=-2, out=o[t])
    return o.transpose(0, 1).to(q.dtype), (state if output_final_state else None)
