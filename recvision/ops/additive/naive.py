"""Readable PyTorch reference of LightNet's additive linear recurrence (Qin et al., arXiv 2405.21022).

Per batch, head and key channel ``c`` (``g_t`` is a log-weight)::

    s_t[c, :] = s_{t-1}[c, :] + exp(g_{t,c}) k_{t,c} v_t        Δ_t[c] = Δ_{t-1}[c] + exp(g_{t,c})
    o_t = sum_c q_{t,c} s_t[c, :] / Δ_t[c]

so ``o_t`` reads a softmax(g)-weighted average of ``k v`` over the prefix ``s <= t`` (per key channel). With
``causal=False`` every token reads the final ``s_T / Δ_T`` (a global average, one O(T) pass).

Every function takes ``q, k, g [B, T, H, K]`` (``k`` may be ``None``: all ones, LightNet's form in which the key is
its own log-weight ``g``), ``v [B, T, H, V]``, ``scale`` (``None``: q is used as is) and returns
``(o [B, T, H, V], None)``. Inputs are upcast to float32 (float64 stays float64); ``o`` is cast back to the dtype
of ``q``. All exponentials have non-positive arguments, so ``|g|`` of 50 (or more) does not overflow.
See ``README.md`` in this folder for the derivations.
"""

from __future__ import annotations

import torch

from .common import check_additive_inputs, upcast_inputs

__all__ = ["naive_recurrent_additive"]


def naive_recurrent_additive(
    q: torch.Tensor,
    k: torch.Tensor | None,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    causal: bool = True,
) -> tuple[torch.Tensor, None]:
    """Step-by-step additive recurrence in the running-max form (the reference).

    With ``m_t = max(m_{t-1}, g_t)`` (per key channel) it keeps ``S = s_t exp(-m_t)`` and ``D = Δ_t exp(-m_t)``::

        S <- exp(m_{t-1} - m_t) S + exp(g_t - m_t) k_t^T v_t,   D <- exp(m_{t-1} - m_t) D + exp(g_t - m_t)
        o_t = sum_c q_{t,c} S[c, :] / D[c]

    ``m`` only stabilises (the output does not depend on it), so it is detached from the graph.

    Args:
        q: queries ``[B, T, H, K]``.
        k: keys ``[B, T, H, K]`` or ``None`` (all ones).
        v: values ``[B, T, H, V]``.
        g: log-weights ``[B, T, H, K]``.
        scale: multiplies q; ``None`` means 1 (q used as is).
        causal: ``False``: every token reads the state after the last step, ``o_t = sum_c q_{t,c} S_T[c] / D_T[c]``.

    Returns:
        ``(o [B, T, H, V], None)``.
    """
    scale = check_additive_inputs(q, k, v, g, scale)
    qf, kf, vf, gf = upcast_inputs(q, k, v, g, scale)
    T = q.shape[1]
    m = gf[:, 0].detach()  # [B, H, K]
    state = None
    denom = None
    outputs = []
    for t in range(T):
        m_new = torch.maximum(m, gf[:, t]).detach()
        w = torch.exp(gf[:, t] - m_new)  # [B, H, K], <= 1
        wk = w if kf is None else w * kf[:, t]
        update = wk[..., None] * vf[:, t, :, None, :]  # [B, H, K, V]
        if state is None:
            state, denom = update, w
        else:
            decay = torch.exp(m - m_new)
            state = decay[..., None] * state + update
            denom = decay * denom + w
        m = m_new
        if causal:
            outputs.append(torch.einsum("bhk,bhkv->bhv", qf[:, t] / denom, state))
    if not causal:
        outputs = [torch.einsum("bhk,bhkv->bhv", qf[:, t] / denom, state) for t in range(T)]
    o = torch.stack(outputs, dim=1)
    return o.to(q.dtype), None
