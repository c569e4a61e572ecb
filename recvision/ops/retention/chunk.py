"""Chunkwise multi-head retention: the :func:`chunk_retention` dispatcher and its PyTorch form.

Sun et al., "Retentive Network: A Successor to Transformer for Large Language Models" (arXiv 2307.08621), §2.2
(chunkwise recurrent form); Hatamizadeh et al., "ViR: Towards Efficient Vision Retention Backbones"
(arXiv 2310.19731), §3. The maths is in this folder's ``README.md``.

:func:`chunk_retention` runs the Triton kernels of :mod:`~recvision.ops.retention.triton_chunk` (imported on the
first call that needs them, so that the CPU path never imports Triton) or :func:`chunk_retention_torch`.
"""

from __future__ import annotations

import torch

from ...config import use_triton
from ..utils.cache import DecayTableCache, cacheable, decay_key
from ..utils.dtypes import autocast_off, matmul_dtype
from .common import check_retention_inputs, compute_dtype

__all__ = ["CHUNK_TABLES", "chunk_retention", "chunk_retention_torch"]

# decay tables of the last few (chunk size, scale, decays, dtype, device); each is a few [H, C, C] tensors
CHUNK_TABLES = DecayTableCache(max_entries=8, max_bytes=64 << 20)


@torch.compiler.disable
def chunk_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g_gamma: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Multi-head retention with a constant per-head decay, computed chunk by chunk.

    Per batch ``b`` and head ``h`` with ``gamma = exp(g_gamma[h])``::

        S_t = gamma S_{t-1} + k_t^T v_t        o_t = scale * q_t S_t

    evaluated in chunks of ``chunk_size`` tokens: parallel (masked ``(q k^T ⊙ D) v``) inside a chunk and
    recurrent across chunks (Sun et al., RetNet, arXiv 2307.08621, eq. 7; used as the token mixer of ViR,
    Hatamizadeh et al., arXiv 2310.19731). The maths and the gradients are in ``README.md`` next to this file.

    On CUDA tensors (or with ``backend="triton"``) this runs the Triton kernels, differentiable w.r.t. ``q``,
    ``k``, ``v``, ``g_gamma`` and ``initial_state``; otherwise it runs
    :func:`chunk_retention_torch`. The Triton module is imported on the first call that takes the Triton path.

    Args:
        q: queries ``[B, T, H, K]``.
        k: keys ``[B, T, H, K]``.
        v: values ``[B, T, H, V]``.
        g_gamma: log decay per head ``[H]`` (``<= 0``); ``None`` uses RetNet's ``log(1 - 2^(-5-h))``.
        scale: query scale; ``None`` means ``K ** -0.5``.
        initial_state: state before the first token ``[B, H, K, V]``.
        output_final_state: also return the state after the last token.
        chunk_size: tokens per chunk; the Triton path needs a power of two in ``[16, 256]``.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``; ``None`` uses the global switch of
            :mod:`recvision.config`.

    Returns:
        ``o [B, T, H, V]`` in the input dtype, and the final state ``[B, H, K, V]`` (float32; float64 for
        float64 inputs) or ``None``.

    Raises:
        ValueError: on malformed inputs; on the Triton path also for ``K`` or ``V`` above 256 or a bad
            ``chunk_size``.
    """
    g_gamma, scale = check_retention_inputs(q, k, v, g_gamma, scale, initial_state)
    if not use_triton(q, backend):
        return chunk_retention_torch(q, k, v, g_gamma, scale, initial_state, output_final_state, chunk_size)
    from .triton_chunk import chunk_retention_triton

    return chunk_retention_triton(q, k, v, g_gamma, scale, initial_state, output_final_state, chunk_size)


def chunk_retention_torch(
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

    This is the CPU path of :func:`chunk_retention`; the tests check it and the kernels against
    :func:`~recvision.ops.retention.naive.naive_recurrent_retention`.
    For chunk ``c`` with positions ``i, j = 0..L-1`` (``L`` = chunk length, shorter for the last chunk) and
    the state ``S`` before the chunk (RetNet, arXiv 2307.08621, eq. 7)::

        o_i    = sum_{j<=i} gamma^(i-j) (q_i . k_j) v_j + gamma^(i+1) q_i S
        S_next = gamma^L S + sum_j gamma^(L-1-j) k_j^T v_j

    The sequence is processed in groups of about ``group_size`` tokens (whole chunks), each written straight
    into the output, so the temporaries stay cache-sized and the memory does not grow with T beyond ``o``.
    Decays are formed from non-negative exponents only, so nothing overflows however long T is. The decay tables
    are kept in :data:`CHUNK_TABLES` (bounded) unless ``g_gamma`` needs a gradient. Products run in bfloat16 for
    bfloat16 inputs or under bfloat16 autocast; the state, the decays and the sums stay in float32.

    Args:
        q, k, v, g_gamma, scale, initial_state, output_final_state: as in
            :func:`~recvision.ops.retention.naive.naive_recurrent_retention`.
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
    g = g_gamma.to(dtype)
    if not cacheable(g_gamma):
        tables = _ChunkDecays(g, scale, C)
    else:
        tables = CHUNK_TABLES.get(("chunk", C, scale, dtype, decay_key(g_gamma)), lambda: _ChunkDecays(g, scale, C))
    state = q.new_zeros(B, H, K, V, dtype=dtype) if initial_state is None else initial_state.to(dtype)
    group = C * max(1, group_size // C)
    o = q.new_empty(B, T, H, V, dtype=dtype)
    mm = matmul_dtype(q)
    with autocast_off(q):
        for begin in range(0, T, group):
            end = min(T, begin + group)
            o_group, state = _chunk_group(q[:, begin:end], k[:, begin:end], v[:, begin:end], state, tables, mm)
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
        self._group: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def group(self, N: int, last: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Key decays ``[H, N, C]`` and chunk decays ``[1, H, N, 1, 1]`` of ``N`` chunks, the last ``last`` long.

        A sequence has at most two group shapes (full groups and the last one); a few are kept.
        """
        key = (N, last)
        if key not in self._group:
            # a cached object is shared by later calls: build without autograd and never as inference tensors
            cached = not self.g.requires_grad
            with torch.inference_mode(False), torch.set_grad_enabled(torch.is_grad_enabled() and not cached):
                self._group[key] = self._group_decays(N, last)
            if len(self._group) > 4:
                self._group.pop(next(iter(self._group)))
        return self._group[key]

    def _group_decays(self, N: int, last: int) -> tuple[torch.Tensor, torch.Tensor]:
        g, C, H = self.g, self.chunk, self.g.shape[0]
        lengths = torch.full((N,), float(C), device=g.device, dtype=g.dtype)
        lengths[-1] = last
        # padded positions of the last chunk would get negative exponents; their keys are zero, so clamp to 0
        key_decay = torch.exp(g * (lengths.view(1, N, 1) - 1 - self.pos.view(1, 1, C)).clamp(min=0))
        chunk_decay = torch.exp(g.view(H, 1) * lengths.view(1, N)).view(1, H, N, 1, 1)
        return key_decay, chunk_decay


def _chunk_group(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: torch.Tensor,
    tables: _ChunkDecays,
    mm: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Retention over one group of whole chunks, ``q, k [B, Tg, H, K]``, ``v [B, Tg, H, V]``, starting from
    ``state [B, H, K, V]`` (accumulation dtype), products in ``mm``; returns ``o [B, Tg, H, V]`` and the state after
    the group, both in the accumulation dtype."""
    B, Tg, H, K = q.shape
    V = v.shape[-1]
    C, dtype = tables.chunk, state.dtype
    N = -(-Tg // C)
    pad = N * C - Tg

    def to_chunks(x: torch.Tensor) -> torch.Tensor:
        # [B, Tg, H, D] -> [B, H, N, C, D]
        x = x.to(mm).transpose(1, 2)
        if pad:
            x = torch.nn.functional.pad(x, (0, 0, 0, pad))
        # contiguous once here, rather than a hidden copy inside each of the two matmuls that read it
        return x.reshape(B, H, N, C, x.shape[-1]).contiguous()

    qc, kc, vc = to_chunks(q), to_chunks(k), to_chunks(v)
    key_decay, chunk_decay = tables.group(N, C - pad)  # [H, N, C], [1, H, N, 1, 1]

    chunk_updates = (kc * key_decay[None, ..., None]).to(mm).transpose(-1, -2) @ vc  # [B, H, N, K, V]
    # the states are accumulated in `dtype`; only the copies that feed the products are in `mm`
    states_before = torch.empty(B, H, N, K, V, dtype=mm, device=q.device)
    for c in range(N):
        states_before[:, :, c] = state
        state = torch.addcmul(chunk_updates[:, :, c], chunk_decay[:, :, c], state)

    scores = qc @ kc.transpose(-1, -2)  # [B, H, N, C, C]
    o = qc @ states_before  # [B, H, N, C, V]
    if torch.is_grad_enabled() or mm != dtype:
        o = o.to(dtype) * tables.query + ((scores.to(dtype) * tables.intra[None, :, None]).to(mm) @ vc).to(dtype)
    else:  # inference: the same arithmetic in place, sparing the full-size temporaries
        o.mul_(tables.query)
        scores.mul_(tables.intra[None, :, None])
        o.view(-1, C, V).baddbmm_(scores.view(-1, C, C), vc.view(-1, C, V))
    return o.reshape(B, H, N * C, V)[:, :, :Tg].transpose(1, 2), state
