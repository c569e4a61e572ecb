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

__all__ = ["naive_recurrent_retention", "naive_chunk_retention"]


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


def naive_chunk_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g_gamma: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunkwise retention in PyTorch: parallel inside chunks, recurrent across chunks.

    This is the CPU path of :func:`~recvision.ops.retention.chunk_retention` and the reference of its kernels.
    For chunk ``c`` with positions ``i, j = 0..L-1`` (``L`` = chunk length, shorter for the last chunk) and
    the state ``S`` before the chunk (RetNet, arXiv 2307.08621, eq. 7)::

        o_i    = sum_{j<=i} gamma^(i-j) (q_i . k_j) v_j + gamma^(i+1) q_i S
        S_next = gamma^L S + sum_j gamma^(L-1-j) k_j^T v_j

    Decays are formed from non-negative exponents only, so nothing overflows however long T is.

    Args:
        q, k, v, g_gamma, scale, initial_state, output_final_state: as in :func:`naive_recurrent_retention`.
        chunk_size: tokens per chunk.

    Returns:
        ``o [B, T, H, V]`` and the final state ``[B, H, K, V]`` (or ``None``).
    """
    g_gamma, scale = check_retention_inputs(q, k, v, g_gamma, scale, initial_state)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    dtype = compute_dtype(q.dtype)
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = min(chunk_size, T)
    N = -(-T // C)
    pad = N * C - T
    device = q.device

    def to_chunks(x: torch.Tensor) -> torch.Tensor:
        # [B, T, H, D] -> [B, H, N, C, D]
        x = x.to(dtype).transpose(1, 2)
        if pad:
            x = torch.nn.functional.pad(x, (0, 0, 0, pad))
        return x.reshape(B, H, N, C, x.shape[-1])

    qc, kc, vc = to_chunks(q), to_chunks(k), to_chunks(v)
    g = g_gamma.to(dtype).view(H, 1, 1)
    pos = torch.arange(C, device=device, dtype=dtype)
    lengths = torch.full((N,), float(C), device=device, dtype=dtype)
    lengths[-1] = C - pad

    # the query scale is folded into the two decay tables that multiply q-rows
    diff = pos[:, None] - pos[None, :]
    zero = torch.zeros((), dtype=dtype, device=device)
    intra_decay = torch.where(diff >= 0, scale * torch.exp(g * diff.clamp(min=0)), zero)  # [H, C, C]
    query_decay = (scale * torch.exp(g * (pos + 1))).view(1, H, 1, C, 1)
    # padded positions of the last chunk would get negative exponents; their keys are zero, so clamp them to 0
    key_decay = torch.exp(g * (lengths.view(1, N, 1) - 1 - pos.view(1, 1, C)).clamp(min=0))  # [H, N, C]
    chunk_decay = torch.exp(g.view(H, 1) * lengths.view(1, N)).view(1, H, N, 1, 1)

    chunk_updates = (kc * key_decay[None, ..., None]).transpose(-1, -2) @ vc  # [B, H, N, K, V]
    state = q.new_zeros(B, H, K, V, dtype=dtype) if initial_state is None else initial_state.to(dtype)
    states_before = torch.empty(B, H, N, K, V, dtype=dtype, device=device)
    for c in range(N):
        states_before[:, :, c] = state
        state = torch.addcmul(chunk_updates[:, :, c], chunk_decay[:, :, c], state)

    scores = qc @ kc.transpose(-1, -2)  # [B, H, N, C, C]
    o = qc @ states_before  # [B, H, N, C, V]
    if torch.is_grad_enabled():
        o = o * query_decay + (scores * intra_decay[None, :, None]) @ vc
    else:  # inference: the same arithmetic, in place, to spare two full-size temporaries
        o.mul_(query_decay).add_(scores.mul_(intra_decay[None, :, None]) @ vc)

    o = o.reshape(B, H, N * C, V)[:, :, :T].transpose(1, 2).to(q.dtype)
    return o, (state if output_final_state else None)
