"""Parallel (masked attention-like) form of retention.

RetNet (Sun et al., arXiv 2307.08621, eq. 5): ``O = (Q K^T ⊙ D) V`` with the causal decay mask
``D[n, m] = gamma^(n-m)`` for ``n >= m`` and 0 otherwise. No softmax. With an initial state ``S0`` the
output gains ``gamma^(n+1) q_n S0`` and the final state is ``gamma^T S0 + sum_m gamma^(T-1-m) k_m^T v_m``.
Memory is O(T^2) per head: use it for short sequences and as a cross-check of the other forms.
"""

from __future__ import annotations

import torch

from ..utils.cache import DecayTableCache, cacheable, decay_key
from ..utils.dtypes import autocast_off, matmul_dtype
from .common import check_retention_inputs, compute_dtype

__all__ = ["DECAY_TABLES", "parallel_retention"]

# The [H, T, T] masks of the last few (T, decays, dtype, device); a ViT-B-sized model at 1024 px needs one of
# 12 x 4097^2 float32, hence the byte budget.
DECAY_TABLES = DecayTableCache(max_entries=4, max_bytes=1 << 30)


def _decay_mask(g: torch.Tensor, T: int) -> torch.Tensor:
    """``D[h, n, m] = gamma_h^(n-m)`` for ``n >= m``, else 0; ``g [H, 1, 1]`` in the accumulation dtype."""
    pos = torch.arange(T, device=g.device, dtype=g.dtype)
    diff = pos[:, None] - pos[None, :]
    return torch.where(diff >= 0, torch.exp(g * diff.clamp(min=0)), torch.zeros((), dtype=g.dtype, device=g.device))


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

    The decay mask ``[H, T, T]`` is kept in :data:`DECAY_TABLES` (a small LRU cache bounded in entries and bytes)
    and rebuilt only for a new ``T``, decay, dtype or device; when ``g_gamma`` needs a gradient it is built on
    every call so that autograd sees it. Products run in bfloat16 for bfloat16 inputs or under bfloat16 autocast
    (the decay mask, the initial-state terms and the final state stay in float32).

    Args:
        q: queries ``[B, T, H, K]``.
        k: keys ``[B, T, H, K]``.
        v: values ``[B, T, H, V]``.
        g_gamma: log decay per head ``[H]``; ``None`` uses RetNet's ``log(1 - 2^(-5-h))``.
        scale: query scale; ``None`` means ``K ** -0.5``.
        initial_state: state before the first token ``[B, H, K, V]``.
        output_final_state: also return the state after the last token.

    Returns:
        ``o [B, T, H, V]`` in the input dtype and the final state ``[B, H, K, V]`` (float32; float64 for float64
        inputs) or ``None``.
    """
    g_gamma, scale = check_retention_inputs(q, k, v, g_gamma, scale, initial_state)
    dtype = compute_dtype(q.dtype)
    mm = matmul_dtype(q)
    T = q.shape[1]
    H = q.shape[2]
    g = g_gamma.to(dtype).view(H, 1, 1)
    if not cacheable(g_gamma):
        decay = _decay_mask(g, T)
    else:
        decay = DECAY_TABLES.get(("parallel", T, dtype, decay_key(g_gamma)), lambda: _decay_mask(g, T))
    with autocast_off(q):
        qh, kh, vh = (x.to(mm).transpose(1, 2) for x in (q, k, v))  # [B, H, T, D]
        scores = qh @ kh.transpose(-1, -2)  # [B, H, T, T]
        if mm == dtype and not torch.is_grad_enabled():
            # inference: the same arithmetic in place, sparing two [B, H, T, T] temporaries
            o = scores.mul_(scale).mul_(decay) @ vh
        else:
            o = (scores.to(dtype) * scale * decay).to(mm) @ vh  # [B, H, T, V]
        o = o.to(dtype)

        final_state = None
        pos = torch.arange(T, device=q.device, dtype=dtype)
        if initial_state is not None:
            s0 = initial_state.to(dtype)
            o = o + (qh.to(dtype) * (scale * torch.exp(g * (pos + 1).view(1, T, 1)))) @ s0
        if output_final_state:
            key_decay = torch.exp(g * (T - 1 - pos).view(1, T, 1))  # [H, T, 1]
            final_state = (kh.to(dtype) * key_decay).transpose(-1, -2) @ vh.to(dtype)
            if initial_state is not None:
                final_state = final_state + torch.exp(g * T).view(1, H, 1, 1) * initial_state.to(dtype)
    return o.transpose(1, 2).to(q.dtype), final_state
