"""Readable PyTorch references for multi-head retention with a constant per-head decay.

Recurrence (Sun et al., "Retentive Network", arXiv 2307.08621, eq. 1-2; Fan et al./Hatamizadeh et al.,
"ViR: Vision Retention Networks", arXiv 2310.19731, §3)::

    S_t = gamma_h * S_{t-1} + k_t^T v_t        S_t: [K, V] per (batch, head)
    o_t = (scale * q_t) S_t

Every function takes ``q, k [B, T, H, K]``, ``v [B, T, H, V]``, ``g_gamma [H] = log gamma`` (the
flash-linear-attention layout) and returns ``(o [B, T, H, V], final_state [B, H, K, V] or None)``.
Inputs are upcast to float32 (float64 stays float64); ``o`` is cast back to the input dtype and the
final state is returned in the accumulation dtype.
"""

from __future__ import annotations

import torch

from .common import check_retention_inputs, compute_dtype

__all__ = ["naive_recurrent_retention"]


def naive_recurrent_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g_gamma: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Step-by-step retention: a Python loop over T with an O(1) state of ``[B, H, K, V]``.

    Args:
        q: queries ``[B, T, H, K]``.
        k: keys ``[B, T, H, K]``.
        v: values ``[B, T, H, V]``.
        g_gamma: log decay per head ``[H]``; ``None`` uses RetNet's ``log(1 - 2^(-5-h))``.
        scale: query scale; ``None`` means ``K ** -0.5``.
        initial_state: state before the first step ``[B, H, K, V]``.
        output_final_state: also return the state after the last step.

    Returns:
        ``o [B, T, H, V]`` and the final state ``[B, H, K, V]`` (or ``None``).
    """
    g_gamma, scale = check_retention_inputs(q, k, v, g_gamma, scale, initial_state)
    dtype = compute_dtype(q.dtype)
    B, T, H, K = q.shape
    V = v.shape[-1]
    gamma = g_gamma.to(dtype).exp().view(1, H, 1, 1)
    qf, kf, vf = (x.to(dtype) for x in (q, k, v))
    state = q.new_zeros(B, H, K, V, dtype=dtype) if initial_state is None else initial_state.to(dtype)
    outputs = []
    for t in range(T):
        state = gamma * state + kf[:, t, :, :, None] * vf[:, t, :, None, :]
        outputs.append(torch.einsum("bhk,bhkv->bhv", qf[:, t] * scale, state))
    o = torch.stack(outputs, dim=1).to(q.dtype)
    return o, (state if output_final_state else None)
