"""Chunkwise additive recurrence (LightNet): the :func:`chunk_additive` dispatcher and its PyTorch forms.

Qin et al., "You Only Scan Once: Efficient Multi-dimension Sequential Modeling with LightNet" (arXiv 2405.21022).
The derivation of the formulas is in this folder's ``README.md``. :func:`chunk_additive` runs the Triton kernels of
:mod:`~recvision.ops.additive.triton_chunk` (imported on the first call that needs them, so that the CPU path never
imports Triton), :func:`chunk_additive_torch` (causal) or :func:`global_additive` (``causal=False``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...config import use_triton
from ..utils.dtypes import autocast_off, matmul_dtype
from .common import check_additive_inputs, upcast_inputs

__all__ = [
    "chunk_additive",
    "chunk_additive_torch",
    "global_additive",
    "global_additive_readout",
    "global_additive_state",
]


@torch.compiler.disable
def chunk_additive(
    q: torch.Tensor,
    k: torch.Tensor | None,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    causal: bool = True,
    chunk_size: int = 64,
    backend: str | None = None,
) -> tuple[torch.Tensor, None]:
    r"""LightNet's additive linear recurrence, computed chunk by chunk.

    Per batch, head and key channel ``c``::

        s_t = s_{t-1} + exp(g_t) ⊙ k_t^T v_t      Δ_t = Δ_{t-1} + exp(g_t)      o_t = sum_c q_{t,c} s_t[c] / Δ_t[c]

    (Qin et al., LightNet, arXiv 2405.21022). On CUDA tensors (or with ``backend="triton"``) the causal form runs
    the Triton kernels, differentiable w.r.t. ``q``, ``k``, ``v`` and ``g``; otherwise
    :func:`chunk_additive_torch`. ``causal=False`` (every token reads the final ``s_T / Δ_T``) always runs
    the PyTorch :func:`global_additive` (two einsums and a softmax, already O(T)), on every backend.

    Args:
        q: queries ``[B, T, H, K]``.
        k: keys ``[B, T, H, K]`` or ``None`` (all ones: LightNet's form in which the key is its own log-weight).
        v: values ``[B, T, H, V]``.
        g: log-weights ``[B, T, H, K]``.
        scale: multiplies q; ``None`` means 1 (q used as is).
        causal: ``False`` for the global (bidirectional) form.
        chunk_size: tokens per chunk; the Triton path needs a power of two in ``[16, 128]``.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``; ``None`` uses the global switch of
            :mod:`recvision.config`.

    Returns:
        ``(o [B, T, H, V], None)``, ``o`` in the dtype of ``q``. The kernels compute in float32 (float64 for
        float64 inputs); 16-bit inputs are upcast first.

    Raises:
        ValueError: on malformed inputs; on the Triton path also for ``K`` or ``V`` above 256 or a bad
            ``chunk_size``.
    """
    scale = check_additive_inputs(q, k, v, g, scale)
    if not causal:
        return global_additive(q, k, v, g, scale, causal=False)
    if not use_triton(q, backend):
        return chunk_additive_torch(q, k, v, g, scale, causal=True, chunk_size=chunk_size)
    from .triton_chunk import chunk_additive_triton

    return chunk_additive_triton(q, k, v, g, scale, chunk_size), None


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
        q, k, v, g, scale: as in :func:`~recvision.ops.additive.naive.naive_recurrent_additive`.
        causal: must be ``False`` (present so that all forms share one signature).

    Returns:
        ``(o [B, T, H, V], None)``.
    """
    scale = check_additive_inputs(q, k, v, g, scale)
    if causal:
        raise ValueError("causal must be False for global_additive (use chunk_additive_torch for the causal form)")
    qf, kf, vf, gf = upcast_inputs(q, k, v, g, scale)
    mm = matmul_dtype(q)
    w = torch.softmax(gf, dim=1)  # [B, T, H, K], sums to 1 over T (normalised in float32)
    del gf
    if kf is not None:
        # w is this function's own tensor: without autograd it takes the key in place
        w = w * kf if torch.is_grad_enabled() else w.mul_(kf)
    state = global_additive_state(w, vf, mm)
    del w, vf
    return global_additive_readout(qf, state).to(q.dtype), None


def global_additive_state(w: torch.Tensor, v: torch.Tensor, mm: torch.dtype) -> torch.Tensor:
    """The normalised global state ``sum_t w_t^T v_t`` of :func:`global_additive`.

    Args:
        w: per-token key weights ``[B, T, H, K]``, ``softmax_t(g) ⊙ k`` (float32).
        v: values ``[B, T, H, V]``.
        mm: dtype of the product's operands (:func:`~recvision.ops.utils.dtypes.matmul_dtype` of the inputs).

    Returns:
        ``state [B, H, K, V]`` in ``mm``.
    """
    with autocast_off(w):
        # the sum over T of the state happens inside the product, which accumulates in float32
        return torch.einsum("bthk,bthv->bhkv", w.to(mm), v.to(mm))


def global_additive_readout(q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """Every token's read of the global state, ``o_t = q_t state``, as in :func:`global_additive`.

    Args:
        q: scaled queries ``[B, T, H, K]`` (float32).
        state: ``[B, H, K, V]`` from :func:`global_additive_state`; its dtype is the product's.

    Returns:
        ``o [B, T, H, V]`` in ``state``'s dtype.
    """
    with autocast_off(q):
        return torch.einsum("bthk,bhkv->bthv", q.to(state.dtype), state)


def chunk_additive_torch(
    q: torch.Tensor,
    k: torch.Tensor | None,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    causal: bool = True,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, None]:
    """Chunkwise additive recurrence in PyTorch: softmax-weighted masked form inside chunks, recurrent across.

    This is the CPU path of :func:`chunk_additive`; the tests check it and the kernels against
    :func:`~recvision.ops.additive.naive.naive_recurrent_additive`. With
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
        q, k, v, g, scale, causal: as in :func:`~recvision.ops.additive.naive.naive_recurrent_additive`.
        chunk_size: tokens per chunk (>= 1).

    Returns:
        ``(o [B, T, H, V], None)``.
    """
    if not causal:
        return global_additive(q, k, v, g, scale, causal=False)
    scale = check_additive_inputs(q, k, v, g, scale)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1; got {chunk_size!r}")
    qf, kf, vf, gf = upcast_inputs(q, k, v, g, scale)
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
    mm = matmul_dtype(q)
    with autocast_off(q):
        scores = torch.einsum("bhntk,bhnsk,bhntsk->bhnts", qc, kc, weights)
        o = (scores.to(mm) @ vc.to(mm)).to(qf.dtype)  # [B, H, N, C, V]
    if N > 1:
        key = kc * torch.exp(gc - zl[:, :, :, None])  # [B, H, N, C, K]
        with autocast_off(q):
            updates = (key.to(mm).transpose(-1, -2) @ vc.to(mm)).to(qf.dtype)  # [B, H, N, K, V], normalised at zl
        chunk_decay = torch.exp(zp - zl)[..., None]  # [B, H, N, K, 1]
        state = torch.zeros(B, H, K, V, dtype=qf.dtype, device=q.device)
        before = [state]
        for c in range(N - 1):
            state = chunk_decay[:, :, c] * state + updates[:, :, c]
            before.append(state)
        states = torch.stack(before, dim=2)  # [B, H, N, K, V], normalised at zp
        query = qc * torch.exp((zp[:, :, :, None] - zc).clamp(max=0))
        with autocast_off(q):
            o = o + (query.to(mm) @ states.to(mm)).to(qf.dtype)
    o = o.reshape(B, H, N * C, V)[:, :, :T].transpose(1, 2)
    return o.to(q.dtype), None
