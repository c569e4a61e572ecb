"""Parallel (masked attention-like) form of retention.

RetNet (Sun et al., arXiv 2307.08621, eq. 5): ``O = (Q K^T ⊙ D) V`` with the causal decay mask
``D[n, m] = gamma^(n-m)`` for ``n >= m`` and 0 otherwise. No softmax. With an initial state ``S0`` the
output gains ``gamma^(n+1) q_n S0`` and the final state is ``gamma^T S0 + sum_m gamma^(T-1-m) k_m^T v_m``.
Memory is O(T^2) per head: use it for short sequences and as a cross-check of the other forms.
"""

from __future__ import annotations

import torch

from .common import check_retention_inputs, compute_dtype

__all__ = ["parallel_retention"]


def parallel_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g_gamma: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Retention in its parallel form.

    Args:
        q: queries ``[B, T, H, K]``.
        k: keys ``[B, T, H, K]``.
        v: values ``[B, T, H, V]``.
        g_gamma: log decay per head ``[H]``; ``None`` uses RetNet's ``log(1 - 2^(-5-h))``.
        scale: query scale; ``None`` means ``K ** -0.5``.
        initial_state: state before the first token ``[B, H, K, V]``.
        output_final_state: also return the state after the last token.

    Returns:
        ``o [B, T, H, V]`` and the final state ``[B, H, K, V]`` (or ``None``).
    """
    g_gamma, scale = check_retention_inputs(q, k, v, g_gamma, scale, initial_state)
    dtype = compute_dtype(q.dtype)
    T = q.shape[1]
    H = q.shape[2]
    qh, kh, vh = (x.to(dtype).transpose(1, 2) for x in (q, k, v))  # [B, H, T, D]
    g = g_gamma.to(dtype).view(H, 1, 1)
    pos = torch.arange(T, device=q.device, dtype=dtype)
    diff = pos[:, None] - pos[None, :]
    decay = torch.where(diff >= 0, torch.exp(g * diff.clamp(min=0)), torch.zeros((), dtype=dtype, device=q.device))
    o = ((qh @ kh.transpose(-1, -2)) * scale * decay) @ vh  # [B, H, T, V]

    final_state = None
    if initial_state is not None:
        s0 = initial_state.to(dtype)
        o = o + (qh * (scale * torch.exp(g * (pos + 1).view(1, T, 1)))) @ s0
    if output_final_state:
        key_decay = torch.exp(g * (T - 1 - pos).view(1, T, 1))  # [H, T, 1]
        final_state = (kh * key_decay).transpose(-1, -2) @ vh
        if initial_state is not None:
            final_state = final_state + torch.exp(g * T).view(1, H, 1, 1) * initial_state.to(dtype)
    return o.transpose(1, 2).to(q.dtype), final_state
