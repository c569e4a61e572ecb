"""LightNet token mixing for images: the additive linear recurrence with MD-LRPE, and MD-TPE positional mixing.

Sources (no vision configuration of LightNet is published; choices are documented here):

* Additive recurrence ("you only scan once"): Qin et al., "You Only Scan Once: Efficient Multi-dimension
  Sequential Modeling with LightNet" (arXiv 2405.21022). As in flash-linear-attention's ``LightNetAttention``,
  the projected key is the per-channel log-weight ``g`` of the recurrence, ``q = SiLU(W_q x)``, and the output is
  ``o_proj(RMSNorm(o) ⊙ SiLU(gate(x)))`` with a low-rank gate.
* MD-LRPE (cosine): ``q`` and the unit key are mapped to ``[x cos φ, x sin φ]`` with ``φ`` built from the token's
  grid index per axis and learnable frequencies, so ``q·k`` depends on the relative position only.
* MD-TPE: a per-head exponentially decayed (Toeplitz) scan along each image axis, summed over axes, with learned
  decay and per-head gain, then group RMSNorm and an output projection (xmixers' TPE applied per axis).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.models import register_notrace_module
from torch import nn

from ..ops.additive import chunk_additive, global_additive_readout, global_additive_state
from ..ops.md_lrpe import md_lrpe_cosine, md_lrpe_phase, md_lrpe_theta_dim
from ..ops.md_tpe import md_tpe
from ..ops.utils.dtypes import compute_dtype, matmul_dtype

__all__ = ["LightNetMixer", "MDTPE", "HeadRMSNorm"]


class HeadRMSNorm(nn.Module):
    """RMSNorm over the last dimension of ``[..., H, D]`` per head, with a learned ``[H * D]`` weight."""

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        eps: float = 1e-6,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_heads, head_dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., H, D]`` -> ``[..., H, D]``."""
        y = F.rms_norm(x, (x.shape[-1],), eps=self.eps)
        if torch.is_grad_enabled() or torch.result_type(y, self.weight) != y.dtype:
            return y * self.weight
        return y.mul_(self.weight)  # without autograd, into the norm's own output


@register_notrace_module
class MDTPE(nn.Module):
    """Multi-dimensional Toeplitz positional encoding: ``o_proj(GroupRMSNorm(gain_h * Σ_axes scan_λh(x)))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        causal: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.num_heads = num_heads
        self.causal = causal
        # decays sigmoid(θ) from ~0.5 to ~0.95 over the heads: short and long positional ranges
        self.decay_logit = nn.Parameter(torch.linspace(0.0, 3.0, num_heads, **dd))
        self.gain = nn.Parameter(torch.ones(num_heads, **dd))
        self.norm = HeadRMSNorm(num_heads, dim // num_heads, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``x [B, N, C]`` tokens in row-major order over ``grid`` -> ``[B, N, C]``."""
        B, N, C = x.shape
        log_decay = F.logsigmoid(self.decay_logit.float())
        y = md_tpe(x.reshape(B, *grid, C), log_decay, causal=self.causal)  # [B, gh, gw, C]
        y = y.reshape(B, N, self.num_heads, C // self.num_heads)
        gain = self.gain.view(1, 1, -1, 1)
        # without autograd the gain goes into the scan's own output
        y = y * gain if torch.is_grad_enabled() or torch.result_type(y, gain) != y.dtype else y.mul_(gain)
        return self.proj(self.norm(y).reshape(B, N, C))


@register_notrace_module
class LightNetMixer(nn.Module):
    """Additive linear recurrence over the image tokens with MD-LRPE, output norm and low-rank gate.

    Non-causal by default (one global pass: every token reads the softmax-weighted global state); ``causal=True``
    gives the raster-order autoregressive form.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        causal: bool = False,
        gate_rank: int = 64,
        chunk_size: int = 64,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.causal = causal
        self.chunk_size = chunk_size
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.q_proj = nn.Linear(dim, dim, **dd)
        self.k_proj = nn.Linear(dim, dim, **dd)  # per-channel log-weights of the additive recurrence
        self.v_proj = nn.Linear(dim, dim, **dd)
        freqs = md_lrpe_theta_dim(self.head_dim, 2)
        # RoPE-like log-spaced initial frequencies, learnable (LRPE)
        theta = 10000.0 ** (-torch.arange(freqs, dtype=torch.float32) / max(1, freqs))
        self.lrpe_theta = nn.Parameter(theta.repeat(num_heads, 1).to(**dd))
        self.gate = nn.Sequential(nn.Linear(dim, gate_rank, bias=False, **dd), nn.Linear(gate_rank, dim, **dd))
        self.norm = HeadRMSNorm(num_heads, self.head_dim, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``x [B, N, C]`` tokens in row-major order over ``grid`` -> ``[B, N, C]``."""
        if not self.causal and not torch.is_grad_enabled():
            return self._forward_global_no_grad(x, grid)
        B, N, C = x.shape
        shape = (B, N, self.num_heads, self.head_dim)
        q = F.silu(self.q_proj(x)).view(shape)
        g = self.k_proj(x).view(shape)
        v = self.v_proj(x).view(shape)
        q = md_lrpe_cosine(q, self.lrpe_theta, grid)  # [B, N, H, 2D]
        # unit key carrying only the phase: the same for every image, so one copy expanded over the batch
        k = md_lrpe_cosine(g.new_ones(1, N, self.num_heads, self.head_dim), self.lrpe_theta, grid).expand(B, -1, -1, -1)
        g = torch.cat([g, g], dim=-1)  # the cos and sin halves share their channel's log-weight
        o, _ = chunk_additive(q, k, v, g, scale=self.scale, causal=self.causal, chunk_size=self.chunk_size)
        return self._output(o, x)

    def _forward_global_no_grad(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """:meth:`forward` of the non-causal mixer without autograd: the same arithmetic, in another order.

        :meth:`forward` holds ``q``, the unit key and ``cat([g, g])`` (each ``[B, N, H, 2D]``) at once through the
        op. Here the state ``sum_t softmax_t(g) k_t^T v_t`` is built first and the queries afterwards, the softmax
        runs once on ``g`` (each channel's softmax over the tokens does not depend on the other channels, so the
        two halves of ``cat([g, g])`` hold the same values) and the ``[B, N, H, 2D]`` tensors are written in
        place, so that at most one of them is alive at a time. Every element goes through the same operations
        and roundings as in :meth:`forward`, so the outputs are the same bits (the tests check this).
        """
        B, N, C = x.shape
        H, D = self.num_heads, self.head_dim
        shape = (B, N, H, D)
        phi = md_lrpe_phase(self.lrpe_theta.to(x.device), grid, D)  # [N, H, D]
        cos, sin = phi.cos(), phi.sin()
        del phi

        g = self.k_proj(x).view(shape)
        key_dtype, dtype, mm = g.dtype, compute_dtype(g.dtype), matmul_dtype(g)
        weight = torch.softmax(g.to(dtype), dim=1)  # [B, N, H, D]: softmax over the tokens, per channel
        del g
        # one [B, N, H, 2D] buffer holds the state's key weights and then the queries: a second allocation of this
        # size after the smaller ones in between would rarely find the freed block whole again
        buf = weight.new_empty(B, N, H, 2 * D)
        # the unit key md_lrpe_cosine(ones) is [cos φ, sin φ] rounded to the projections' dtype
        torch.mul(weight, cos.to(key_dtype), out=buf[..., :D])
        torch.mul(weight, sin.to(key_dtype), out=buf[..., D:])
        del weight
        if buf.dtype != mm:
            # the product reads a copy in its own dtype anyway: make it now, so that the buffer is not alive beside it
            buf = buf.to(mm)
        state = global_additive_state(buf, self.v_proj(x).view(shape), mm)  # [B, H, 2D, D]

        q = F.silu(self.q_proj(x), inplace=True).view(shape)
        query_dtype = torch.promote_types(q.dtype, cos.dtype)
        if buf.dtype != query_dtype:
            del buf
            buf = torch.empty(B, N, H, 2 * D, dtype=query_dtype, device=x.device)
        torch.mul(q, cos, out=buf[..., :D])
        torch.mul(q, sin, out=buf[..., D:])
        del cos, sin
        # md_lrpe_cosine returns the queries in their own dtype, and the op scales them in its compute dtype
        qf = buf.to(q.dtype)
        del buf
        qf = qf.to(dtype)
        if self.scale != 1.0:
            qf.mul_(self.scale)
        o = global_additive_readout(qf, state).to(q.dtype)
        del qf, q
        return self._output(o, x)

    def _output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``proj(RMSNorm(o) ⊙ SiLU(gate(x)))`` for the op's output ``o [B, N, H, D]`` and the mixer's input ``x``."""
        B, N, C = x.shape
        o = self.norm(o) * F.silu(self.gate(x)).view(o.shape)
        return self.proj(o.reshape(B, N, C))
