"""Shared pieces of the retention ops: argument checks, default decays, dtype policy, the log-decay gradient and the
autograd function of the Triton forms (which imports nothing from Triton itself)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..utils.checks import check_qkv
from ..utils.dtypes import compute_dtype
from ..utils.guards import input_guard

__all__ = [
    "TritonRetentionFunction",
    "check_retention_inputs",
    "compute_dtype",
    "retention_log_decay_grad",
    "retnet_g_gamma",
    "triton_retention",
]


def retnet_g_gamma(num_heads: int, device: torch.device | str | None = None) -> torch.Tensor:
    """RetNet's per-head log decay ``log(1 - 2^(-5 - h))``, the default of flash-linear-attention's retention.

    Sun et al., "Retentive Network" (arXiv 2307.08621), §2.2. Returns a float32 tensor of shape ``[H]``.
    """
    h = torch.arange(num_heads, dtype=torch.float64, device=device)
    return torch.log1p(-torch.pow(2.0, -5.0 - h)).float()


def check_retention_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g_gamma: torch.Tensor | None,
    scale: float | None,
    initial_state: torch.Tensor | None,
) -> tuple[torch.Tensor, float]:
    """Validate retention inputs and resolve the defaults.

    Args:
        q: queries ``[B, T, H, K]``.
        k: keys ``[B, T, H, K]``.
        v: values ``[B, T, H, V]``.
        g_gamma: per-head log decay ``[H]`` (all entries ``<= 0``), or ``None`` for RetNet's decays.
        scale: query scale, or ``None`` for ``K ** -0.5``.
        initial_state: ``[B, H, K, V]`` or ``None``.

    Returns:
        ``(g_gamma, scale)`` with the defaults filled in (a default ``g_gamma`` is float32 on ``q``'s device).
    """
    check_qkv("retention", q, k, v, "[B, T, H, K]", "[B, T, H, V]")
    if q.shape[1] == 0:
        raise ValueError("retention needs at least one time step (T >= 1); got T = 0")
    B, _, H, K = q.shape
    V = v.shape[-1]
    if g_gamma is None:
        g_gamma = retnet_g_gamma(H, device=q.device)
    if not isinstance(g_gamma, torch.Tensor):
        raise ValueError(f"g_gamma must be a tensor of shape [H] = [{H}]; got {type(g_gamma).__name__}")
    if g_gamma.shape != (H,):
        raise ValueError(f"g_gamma must have shape [H] = [{H}] (log decay per head); got {tuple(g_gamma.shape)}")
    # meta tensors (shape-only runs, e.g. timm's config tests on device="meta") have no values to check
    if g_gamma.device.type != "meta" and (bool((g_gamma > 0).any()) or not bool(torch.isfinite(g_gamma).all())):
        raise ValueError("g_gamma holds log decays and must be finite and <= 0 (decay gamma in (0, 1])")
    if initial_state is not None and initial_state.shape != (B, H, K, V):
        raise ValueError(
            f"initial_state must have shape [B, H, K, V] = {[B, H, K, V]}; got {tuple(initial_state.shape)}"
        )
    if scale is None:
        scale = 1.0 / math.sqrt(K)
    return g_gamma, float(scale)


def retention_log_decay_grad(
    q: torch.Tensor,
    k: torch.Tensor,
    dq: torch.Tensor,
    dk: torch.Tensor,
    final_state: torch.Tensor | None,
    dht: torch.Tensor | None,
) -> torch.Tensor:
    """Gradient of the loss w.r.t. the per-head log decay ``g_gamma [H]``, from the other gradients.

    With ``b_t = (t + 1) g`` every term of ``o_t`` carries ``exp(b_t)`` per query, every key ``exp(-b_s)`` and the
    final state ``exp(b_{T-1})``, so ``dL/dg = sum_t (t+1) (q_t . dq_t - k_t . dk_t) + T <dht, S_{T-1}>``
    (see ``README.md``). Per-token dot products are taken in ``dq``'s dtype, the weighted sum in float64.

    Args:
        q, k: ``[B, T, H, K]``.
        dq, dk: their gradients ``[B, T, H, K]`` (preferably float32, before rounding to a 16-bit input dtype).
        final_state: ``S_{T-1} [B, H, K, V]``; needed when ``dht`` is given.
        dht: gradient of the final state ``[B, H, K, V]`` or ``None``.

    Returns:
        ``dg [H]`` in float64.
    """
    T = q.shape[1]
    per_token = torch.einsum("bthk,bthk->bth", q.to(dq.dtype), dq) - torch.einsum("bthk,bthk->bth", k.to(dk.dtype), dk)
    weights = torch.arange(1, T + 1, device=q.device, dtype=torch.float64)
    dg = torch.einsum("bth,t->h", per_token.double(), weights)
    if dht is not None:
        if final_state is None:
            raise ValueError("retention_log_decay_grad needs the final state when dht is given")
        dg = dg + T * torch.einsum("bhkv,bhkv->h", dht.double(), final_state.double())
    return dg


class TritonRetentionFunction(torch.autograd.Function):
    """Autograd of a Triton form of retention; differentiable w.r.t. ``q, k, v, g, initial_state``.

    ``apply(q, k, v, g, scale, initial_state, output_final_state, fwd, bwd)`` with the form's host functions on
    contiguous inputs: ``fwd(q, k, v, g, scale, initial_state, output_final_state) -> (o, ht)`` and
    ``bwd(q, k, v, g, scale, initial_state, do, dht, grad_dtype) -> (dq, dk, dv, dh0)``, which returns ``dq, dk`` in
    ``grad_dtype`` (``None``: the input dtype) and ``dh0`` in the accumulation dtype. The gradient of the log decays
    comes from ``dq`` and ``dk`` (:func:`retention_log_decay_grad`), so they stay in the accumulation dtype until then.
    """

    @staticmethod
    @input_guard
    def forward(
        ctx,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        g: torch.Tensor,
        scale: float,
        initial_state: torch.Tensor | None,
        output_final_state: bool,
        fwd: Callable,
        bwd: Callable,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        o, ht = fwd(q, k, v, g, scale, initial_state, output_final_state)
        ctx.save_for_backward(q, k, v, g, initial_state, ht)
        ctx.scale = scale
        ctx.bwd = bwd
        return o, ht

    @staticmethod
    @input_guard
    def backward(ctx, do: torch.Tensor, dht: torch.Tensor | None):
        q, k, v, g, initial_state, ht = ctx.saved_tensors
        need_dg = ctx.needs_input_grad[3]
        grad_dtype = compute_dtype(q.dtype) if need_dg else None
        dq, dk, dv, dh0 = ctx.bwd(q, k, v, g, ctx.scale, initial_state, do, dht, grad_dtype)
        dg = None
        if need_dg:
            dg = retention_log_decay_grad(q, k, dq, dk, ht, dht).to(g.dtype)
        if dh0 is not None:
            dh0 = dh0.to(initial_state.dtype)
        return dq.to(q.dtype), dk.to(k.dtype), dv, dg, None, dh0, None, None, None


def triton_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g_gamma: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    fwd: Callable,
    bwd: Callable,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run a Triton form of retention (``fwd`` / ``bwd`` as in :class:`TritonRetentionFunction`) with the log
    decays ``g_gamma [H]`` as a contiguous accumulation-dtype tensor on ``q``'s device (still attached to the graph).

    Returns:
        ``o [B, T, H, V]`` and the final state ``[B, H, K, V]`` or ``None``.
    """
    g = g_gamma.to(device=q.device, dtype=compute_dtype(q.dtype)).contiguous()
    return TritonRetentionFunction.apply(q, k, v, g, scale, initial_state, output_final_state, fwd, bwd)
