"""Multi-head retention as a token mixer (the MHR layer of ViR).

Hatamizadeh et al., "ViR: Vision Retention Networks" (arXiv 2310.19731), §3: retention with a fixed,
head-specific decay, no softmax, no gate and no group norm. The decays are log-spaced from ``1 - 1/32`` to
``1 - 1/512`` over the heads, whatever the number of heads (authors' code, class ``DecayMask``).
"""

from __future__ import annotations

import math

import torch
from timm.models import register_notrace_module
from torch import nn

from ..config import use_triton
from ..ops.retention import chunk_retention, fused_recurrent_retention, parallel_retention

__all__ = ["RETENTION_MODES", "MultiHeadRetention", "vir_log_decay"]

RETENTION_MODES = ("parallel", "chunkwise", "recurrent")


def vir_log_decay(num_heads: int, device: torch.device | str | None = None) -> torch.Tensor:
    """ViR's per-head log decay: ``log(1 - exp(linspace(log(1/32), log(1/512), H)))``, shape ``[H]`` (float32)."""
    rates = torch.exp(torch.linspace(math.log(1 / 32), math.log(1 / 512), num_heads, dtype=torch.float64))
    return torch.log1p(-rates).to(device=device, dtype=torch.float32)


def check_retention_mode(mode: str) -> str:
    if mode not in RETENTION_MODES:
        raise ValueError(f"retention_mode must be one of {RETENTION_MODES}; got {mode!r}")
    return mode


@register_notrace_module  # FX feature extraction treats the mixer as a leaf (its ops check inputs eagerly)
class MultiHeadRetention(nn.Module):
    """Causal multi-head retention over a token sequence.

    The three forms compute the same function (tested): ``"parallel"`` builds the masked ``T x T`` decay
    matrix, ``"chunkwise"`` is parallel inside chunks and recurrent across them, ``"recurrent"`` steps one
    token at a time with an O(1) state of ``[B, H, K, V]``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        proj_drop: float = 0.0,
        retention_mode: str = "chunkwise",
        chunk_size: int = 64,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """
        Args:
            dim: token width; must be divisible by ``num_heads``.
            num_heads: number of retention heads, each with its own decay.
            qkv_bias: bias in the query/key/value projection.
            proj_bias: bias in the output projection.
            proj_drop: dropout after the output projection.
            retention_mode: ``"parallel"``, ``"chunkwise"`` or ``"recurrent"``.
            chunk_size: tokens per chunk in chunkwise mode.
            device: factory device.
            dtype: factory dtype.
        """
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.retention_mode = check_retention_mode(retention_mode)
        self.chunk_size = chunk_size
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, bias=proj_bias, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def log_decay(self, device: torch.device) -> torch.Tensor:
        """Per-head log decay ``[H]``; fixed, so it is made on the fly rather than stored in the state dict."""
        return vir_log_decay(self.num_heads, device=device)

    def _split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.num_heads, self.head_dim)  # [B, T, 3, H, D]
        return qkv.unbind(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mix a whole sequence.

        Args:
            x: tokens ``[B, T, C]``.

        Returns:
            ``[B, T, C]``.
        """
        q, k, v = self._split_heads(x)
        g = self.log_decay(x.device)
        if self.retention_mode == "parallel":
            o, _ = parallel_retention(q, k, v, g, self.scale)
        elif self.retention_mode == "chunkwise":
            o, _ = chunk_retention(q, k, v, g, self.scale, chunk_size=self.chunk_size)
        else:
            o, _ = fused_recurrent_retention(q, k, v, g, self.scale)
        return self.proj_drop(self.proj(o.flatten(2)))

    def forward_stream(self, x: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix the next tokens of a stream, carrying the recurrent state.

        On CUDA (and with the Triton backend) the tokens go through the fused recurrent kernel; on the CPU a
        single token goes through the token loop and a block of tokens through the chunk form, both starting
        from ``state``.

        Args:
            x: the next tokens ``[B, T, C]`` (``T`` may be 1).
            state: state after the previous tokens ``[B, H, D, D]`` (float32), or ``None`` at the start.

        Returns:
            Output ``[B, T, C]`` and the state after these tokens.
        """
        q, k, v = self._split_heads(x)
        g = self.log_decay(x.device)
        if x.shape[1] > 1 and not use_triton(q):
            # On the CPU a block of tokens is mixed chunk by chunk from the carried state: the same recurrence as
            # the token loop, as matrix products, and still nothing larger than the block is made.
            o, state = chunk_retention(
                q, k, v, g, self.scale, initial_state=state, output_final_state=True, chunk_size=self.chunk_size
            )
        else:
            o, state = fused_recurrent_retention(q, k, v, g, self.scale, initial_state=state, output_final_state=True)
        return self.proj_drop(self.proj(o.flatten(2))), state
