"""Recurrent retention, one token at a time: the :func:`fused_recurrent_retention` dispatcher.

Sun et al., "Retentive Network" (arXiv 2307.08621), eq. 1-2 (recurrent form); Hatamizadeh et al., "ViR"
(arXiv 2310.19731), §3. On CUDA the fused kernels of :mod:`~recvision.ops.retention.triton_fused_recurrent` keep
the state in registers; the PyTorch path is the step-by-step reference
:func:`~recvision.ops.retention.naive.naive_recurrent_retention` (for long sequences on the CPU,
:func:`~recvision.ops.retention.chunk_retention` is much faster).
"""

from __future__ import annotations

import torch

from ...config import use_triton
from .common import check_retention_inputs
from .naive import naive_recurrent_retention

__all__ = ["fused_recurrent_retention"]


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
    ``k``, ``v``, ``g_gamma`` and ``initial_state``; otherwise
    :func:`~recvision.ops.retention.naive.naive_recurrent_retention`.

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
        return naive_recurrent_retention(q, k, v, g_gamma, scale, initial_state, output_final_state)
    from .triton_fused_recurrent import fused_recurrent_retention_triton

    return fused_recurrent_retention_triton(q, k, v, g_gamma, scale, initial_state, output_final_state)
