"""Readable PyTorch forms of LightNet's additive linear recurrence (Qin et al., arXiv 2405.21022).

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
import torch.nn.functional as F

from .common import check_additive_inputs, compute_dtype

__all__ = ["naive_recurrent_additive", "naive_chunk_additive", "global_additive"]


def _upcast(
    q: torch.Tensor, k: torch.Tensor | None, v: torch.Tensor, g: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    dtype = compute_dtype(q.dtype)
    qf = q.to(dtype)
    if scale != 1.0:
        qf = qf * scale
    return qf, (None if k is None else k.to(dtype)), v.to(dtype), g.to(dtype)


def global_additive(
    q: torch.Tensor,
    k: torch.Tensor | None,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    causal: bool = False,
) -> tuple[torch.Tensor, None]:
    """Non-causal additive recurrence: every token reads the final normalised state ``s_T / Δ_T``.

    ``s_T / Δ_T = sum_s softmax_s(g)[s, c] k_{s,c} v_s`` (softmax over time, per key channel), so
    ``o_t = q_t (s_T / Δ_T)``: one O(T) pass, order-independent.

    Args:
        q, k, v, g, scale: as in :func:`naive_recurrent_additive`.
        causal: must be ``False`` (present so that all forms share one signature).

    Returns:
        ``(o [B, T, H, V], None)``.
    """
    scale = check_additive_inputs(q, k, v, g, scale)
    if causal:
        raise ValueError("causal must be False for global_additive (use naive_chunk_additive for the causal form)")
    qf, kf, vf, gf = _upcast(q, k, v, g, scale)
    w = torch.softmax(gf, dim=1)  # [B, T, H, K], sums to 1 over T
    if kf is not None:
        w = w * kf
    state = torch.einsum("bthk,bthv->bhkv", w, vf)
    o = torch.einsum("bthk,bhkv->bthv", qf, state)
    return o.to(q.dtype), None


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
        causal: ``False`` runs :func:`global_additive`.

    Returns:
        ``(o [B, T, H, V], None)``.
    """
    if not causal:
        return global_additive(q, k, v, g, scale, causal=False)
    scale = check_additive_inputs(q, k, v, g, scale)
    qf, kf, vf, gf = _upcast(q, k, v, g, scale)
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
        outputs.append(torch.einsum("bhk,bhkv->bhv", qf[:, t] / denom, state))
    o = torch.stack(outputs, dim=1)
    return o.to(q.dtype), None


def naive_chunk_additive(
    q: torch.Tensor,
    k: torch.Tensor | None,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    causal: bool = True,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, None]:
    """Chunkwise additive recurrence in PyTorch: softmax-weighted masked form inside chunks, recurrent across.

    This is the CPU path of :func:`~recvision.ops.additive.chunk_additive` and the reference of its kernels. With
    ``z_t = logcumsumexp_{s<=t} g_s = log Δ_t`` (per key channel), the normalised state before a chunk
    ``h = s / Δ`` taken at ``zp`` (``z`` of the last token of the previous chunk) and ``zl`` (``z`` of the
    chunk's last token)::

        o_t    = sum_c q_{t,c} exp(zp_c - z_{t,c}) h[c, :]                                  inter
               + sum_{s<=t in chunk} [sum_c q_{t,c} k_{s,c} exp(g_{s,c} - z_{t,c})] v_s      intra
        h_next = exp(zp - zl) ⊙ h + sum_{s in chunk} (k_s ⊙ exp(g_s - zl))^T v_s

    Every exponent is ``<= 0``. The carried ``(h, z)`` is the running-max triple ``(s e^{-m}, Δ e^{-m}, m)`` in
    normalised form (``h = s / Δ``, ``z = m + log(Δ e^{-m})``). The intra weights are per key channel, so the
    intra-chunk part builds a ``[B, H, N, C, C, K]`` tensor: cost and memory grow as ``T * C * K``.

    Args:
        q, k, v, g, scale, causal: as in :func:`naive_recurrent_additive`.
        chunk_size: tokens per chunk (>= 1).

    Returns:
        ``(o [B, T, H, V], None)``.
    """
    if not causal:
        return global_additive(q, k, v, g, scale, causal=False)
    scale = check_additive_inputs(q, k, v, g, scale)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1; got {chunk_size!r}")
    qf, kf, vf, gf = _upcast(q, k, v, g, scale)
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = min(chunk_size, T)
    N = -(-T // C)
    pad = N * C - T
    z = torch.logcumsumexp(gf, dim=1)  # [B, T, H, K] = log Δ_t
    if kf is None:
        kf = torch.ones_like(qf)
    if pad:
        # padded tokens: q = k = v = 0 and g = z = z_{T-1} (finite, exponents stay <= 0, no weight reaches them)
        last = z[:, -1:].detach().expand(B, pad, H, K)
        qf, kf = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (qf, kf))
        vf = F.pad(vf, (0, 0, 0, 0, 0, pad))
        gf, z = torch.cat([gf, last], dim=1), torch.cat([z, last], dim=1)

    def to_chunks(x: torch.Tensor) -> torch.Tensor:
        # [B, N*C, H, D] -> [B, H, N, C, D]
        return x.transpose(1, 2).reshape(B, H, N, C, x.shape[-1])

    qc, kc, vc, gc, zc = (to_chunks(x) for x in (qf, kf, vf, gf, z))
    zl = zc[:, :, :, -1]  # [B, H, N, K]: z of each chunk's last token
    zp = torch.cat([zl[:, :, :1], zl[:, :, :-1]], dim=2)  # z before each chunk (chunk 0: unused, its h is 0)

    # intra: A[t, s] = sum_c q_{t,c} k_{s,c} exp(g_{s,c} - z_{t,c}) for s <= t
    causal_mask = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()[:, :, None]  # [t, s, 1]
    expo = gc[..., None, :, :] - zc[..., :, None, :]  # [B, H, N, t, s, K]
    # mask before exp: the unused upper triangle may be large and positive
    weights = torch.exp(torch.where(causal_mask, expo, torch.full_like(expo, float("-inf"))))
    scores = torch.einsum("bhntk,bhnsk,bhntsk->bhnts", qc, kc, weights)
    o = scores @ vc  # [B, H, N, C, V]

    if N > 1:
        key = kc * torch.exp(gc - zl[:, :, :, None])  # [B, H, N, C, K]
        updates = key.transpose(-1, -2) @ vc  # [B, H, N, K, V], normalised at zl
        chunk_decay = torch.exp(zp - zl)[..., None]  # [B, H, N, K, 1]
        state = torch.zeros(B, H, K, V, dtype=qf.dtype, device=q.device)
        before = [state]
        for c in range(N - 1):
            state = chunk_decay[:, :, c] * state + updates[:, :, c]
            before.append(state)
        states = torch.stack(before, dim=2)  # [B, H, N, K, V], normalised at zp
        query = qc * torch.exp((zp[:, :, :, None] - zc).clamp(max=0))
        o = o + query @ states
    o = o.reshape(B, H, N * C, V)[:, :, :T].transpose(1, 2)
    return o.to(q.dtype), None
