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
    group_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunkwise retention in PyTorch: parallel inside chunks, recurrent across chunks.

    This is the CPU path of :func:`~recvision.ops.retention.chunk_retention` and the reference of its kernels.
    For chunk ``c`` with positions ``i, j = 0..L-1`` (``L`` = chunk length, shorter for the last chunk) and
    the state ``S`` before the chunk (RetNet, arXiv 2307.08621, eq. 7)::

        o_i    = sum_{j<=i} gamma^(i-j) (q_i . k_j) v_j + gamma^(i+1) q_i S
        S_next = gamma^L S + sum_j gamma^(L-1-j) k_j^T v_j

    The sequence is processed in groups of about ``group_size`` tokens (whole chunks), each written straight
    into the output, so the temporaries stay cache-sized and the memory does not grow with T beyond ``o``.
    Decays are formed from non-negative exponents only, so nothing overflows however long T is.

    Args:
        q, k, v, g_gamma, scale, initial_state, output_final_state: as in :func:`naive_recurrent_retention`.
        chunk_size: tokens per chunk.
        group_size: tokens per group of chunks (rounded to whole chunks); only affects speed and memory.

    Returns:
        ``o [B, T, H, V]`` and the final state ``[B, H, K, V]`` (or ``None``).
    """
    g_gamma, scale = check_retention_inputs(q, k, v, g_gamma, scale, initial_state)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1; got {group_size}")
    dtype = compute_dtype(q.dtype)
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = min(chunk_size, T)
    tables = _ChunkDecays(g_gamma.to(dtype), scale, C)
    state = q.new_zeros(B, H, K, V, dtype=dtype) if initial_state is None else initial_state.to(dtype)
    group = C * max(1, group_size // C)
    o = q.new_empty(B, T, H, V, dtype=dtype)
    for begin in range(0, T, group):
        end = min(T, begin + group)
        o_group, state = _chunk_group(q[:, begin:end], k[:, begin:end], v[:, begin:end], state, tables)
        o[:, begin:end] = o_group
    return o.to(q.dtype), (state if output_final_state else None)


class _ChunkDecays:
    """Decay tables of one chunk size, shared by all groups: ``[H, C, C]`` intra-chunk, ``[H, C]`` per position."""

    def __init__(self, g: torch.Tensor, scale: float, chunk: int) -> None:
        H = g.shape[0]
        self.g = g.view(H, 1, 1)
        self.chunk = chunk
        pos = torch.arange(chunk, device=g.device, dtype=g.dtype)
        self.pos = pos
        diff = pos[:, None] - pos[None, :]
        zero = torch.zeros((), dtype=g.dtype, device=g.device)
        # the query scale is folded into the two tables that multiply q-rows
        self.intra = torch.where(diff >= 0, scale * torch.exp(self.g * diff.clamp(min=0)), zero)  # [H, C, C]
        self.query = (scale * torch.exp(self.g * (pos + 1))).view(1, H, 1, chunk, 1)


def _chunk_group(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: torch.Tensor, tables: _ChunkDecays
) -> tuple[torch.Tensor, torch.Tensor]:
    """Retention over one group of whole chunks, ``q, k [B, Tg, H, K]``, ``v [B, Tg, H, V]``, starting from
    ``state [B, H, K, V]``; returns ``o [B, Tg, H, V]`` and the state after the group."""
    B, Tg, H, K = q.shape
    V = v.shape[-1]
    C, g, dtype = tables.chunk, tables.g, state.dtype
    N = -(-Tg // C)
    pad = N * C - Tg

    def to_chunks(x: torch.Tensor) -> torch.Tensor:
        # [B, Tg, H, D] -> [B, H, N, C, D]
        x = x.to(dtype).transpose(1, 2)
        if pad:
            x = torch.nn.functional.pad(x, (0, 0, 0, pad))
        # contiguous once here, rather than a hidden copy inside each of the two matmuls that read it
        return x.reshape(B, H, N, C, x.shape[-1]).contiguous()

    qc, kc, vc = to_chunks(q), to_chunks(k), to_chunks(v)
    lengths = torch.full((N,), float(C), device=q.device, dtype=dtype)
    lengths[-1] = C - pad
    # padded positions of the last chunk would get negative exponents; their keys are zero, so clamp them to 0
    key_decay = torch.exp(g * (lengths.view(1, N, 1) - 1 - tables.pos.view(1, 1, C)).clamp(min=0))  # [H, N, C]
    chunk_decay = torch.exp(g.view(H, 1) * lengths.view(1, N)).view(1, H, N, 1, 1)

    chunk_updates = (kc * key_decay[None, ..., None]).transpose(-1, -2) @ vc  # [B, H, N, K, V]
    states_before = torch.empty(B, H, N, K, V, dtype=dtype, device=q.device)
    for c in range(N):
        states_before[:, :, c] = state
        state = torch.addcmul(chunk_updates[:, :, c], chunk_decay[:, :, c], state)

    scores = qc @ kc.transpose(-1, -2)  # [B, H, N, C, C]
    o = qc @ states_before  # [B, H, N, C, V]
    if torch.is_grad_enabled():
        o = o * tables.query + (scores * tables.intra[None, :, None]) @ vc
    else:  # inference: the same arithmetic in place, sparing the full-size temporaries
        o.mul_(tables.query)
        scores.mul_(tables.intra[None, :, None])
        o.view(-1, C, V).baddbmm_(scores.view(-1, C, C), vc.view(-1, C, V))
    return o.reshape(B, H, N * C, V)[:, :, :Tg].transpose(1, 2), state
