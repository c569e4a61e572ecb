"""The 2-D pLSTM token mixer: one layer that runs the pLSTM recurrence over the patch grid in all four orientations.

Pöppel et al., "pLSTM: parallelizable Linear Source Transition Mark networks"
(arXiv 2506.11997); reference code ``ml-jku/plstm`` (``pLSTM2DLayerFused`` and the vision configs of
``ml-jku/plstm_experiments``). Facts taken from there:

* queries, keys and values are linear projections of the token (with bias), one head axis, ``DK = DV = dim / H``;
* every gate is a scalar per cell, head and orientation (the vision models use state-tracking dims of 1):
  source and mark are ``sigmoid(b + W x)``, a transition is ``tanh(5 (b + W x))``, the direct gate is
  ``sigmoid(b)``, a learned constant per head shared by the orientations (the vision configs give it no weight);
  initial biases source -4, mark -4, direct -6, transition 1; gate weights start at zero, so at initialisation
  every gate is the same constant over the image;
* each gate head reads its own slice of the token (``4 H`` groups: one per orientation and head);
* P-mode (directed propagation) splits source and transition between the two outgoing edges with an orientation
  gate ``o = sigmoid(b + 0.5 (W x) / dim)`` (``b`` spaced from -2 to 2 over the heads, ``W`` zero at start);
  D-mode (diffusive distribution) has its own gates per edge, and chirality "L" keeps only the right-from-down
  crossing (see :func:`recvision.ops.plstm2d.d_mode_gates`);
* the four orientations (grid as is, flipped in X, in Y, in both) each have their own gates; their outputs are
  summed, which equals the reference's fused layer (it sums the four gating tensors; the direct term enters once).
  The reference's *unfused* layer flips the second axis with ``(orientation >> 2) % 2``, always 0 for orientations
  0..3, so it repeats two orientations; here the four flips are the four distinct ones;
* per-head RMSNorm (eps 1e-5) of the summed output, then the output projection (no bias).

Own choices: the grid axis X is the image height (rows), Y the width; the four orientations are stacked on the
batch axis so that one op call serves them all.
"""

from __future__ import annotations

import torch
from timm.models import register_notrace_module
from torch import nn

from ..ops.plstm2d import (
    chunk_plstm2d_torch as chunk_plstm2d,
)
from ..ops.plstm2d import (
    d_mode_gates,
    naive_plstm2d,
    orient,
    p_mode_gates,
    parallel_plstm2d,
    plstm2d,
    unorient,
)
from .lightnet import HeadRMSNorm

__all__ = ["PLSTM_IMPLS", "PLSTM_MODES", "PLSTM2D", "check_plstm_impl"]

PLSTM_MODES = ("P", "D")
PLSTM_IMPLS = ("auto", "chunk", "parallel", "naive")

# raw gate activations per mode, in the order of the gate projection's outputs
_GATES = {
    "P": ("source", "transition", "mark"),
    "D": ("source_r", "source_d", "trans_r", "trans_d", "trans_cross", "mark_l", "mark_u"),
}
_SOURCE_BIAS, _MARK_BIAS, _DIRECT_BIAS, _TRANSITION_BIAS = -4.0, -4.0, -6.0, 1.0
_TRANSITION_SCALE = 5.0
_ORIENTATION_SCALE = 0.5


def check_plstm_impl(impl: str) -> str:
    if impl not in PLSTM_IMPLS:
        raise ValueError(f"plstm_impl must be one of {PLSTM_IMPLS}; got {impl!r}")
    return impl


def _stack_orientations(per_orientation: list[torch.Tensor]) -> torch.Tensor:
    """Four ``[B, X, Y, ...]`` tensors, the ``o``-th put in grid orientation ``o`` -> ``[4 B, X, Y, ...]``."""
    return torch.cat([orient(t, o) for o, t in enumerate(per_orientation)], dim=0)


@register_notrace_module  # FX feature extraction treats the mixer as a leaf (the op checks its inputs eagerly)
class PLSTM2D(nn.Module):
    """pLSTM over a 2-D grid of tokens, four orientations summed, P-mode or D-mode gating."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mode: str = "P",
        chirality: str = "L",
        qkv_bias: bool = True,
        proj_bias: bool = False,
        norm_eps: float = 1e-5,
        gate_groups: int | None = None,
        impl: str = "auto",
        chunk_size: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """
        Args:
            dim: token width; must be divisible by ``num_heads``.
            num_heads: heads (each with its own gates per orientation).
            mode: ``"P"`` (directed propagation) or ``"D"`` (diffusive distribution).
            chirality: D-mode crossing, ``"L"`` or ``"R"``.
            qkv_bias: bias in the query/key/value projection.
            proj_bias: bias in the output projection (the reference has none).
            norm_eps: epsilon of the per-head RMSNorm.
            gate_groups: the source/transition/mark gates read the token in this many equal slices (one slice per
                group of gate heads); default ``4 * num_heads`` as in the reference, 1 = a dense projection.
            impl: op used: ``"auto"`` (:func:`~recvision.ops.plstm2d.plstm2d`: Triton on CUDA, else the PyTorch
                chunked form), ``"chunk"``, ``"parallel"`` or ``"naive"`` (cell by cell; for tests).
            chunk_size: chunk side of the chunked op (``None``: the op's default).
            device: factory device.
            dtype: factory dtype.
        """
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        if mode not in PLSTM_MODES:
            raise ValueError(f"mode must be one of {PLSTM_MODES}; got {mode!r}")
        if chirality not in ("L", "R"):
            raise ValueError(f"chirality must be 'L' or 'R'; got {chirality!r}")
        gate_heads = 4 * num_heads
        gate_groups = gate_heads if gate_groups is None else gate_groups
        if gate_groups < 1 or dim % gate_groups or gate_heads % gate_groups:
            raise ValueError(f"gate_groups ({gate_groups}) must divide dim ({dim}) and 4 * num_heads ({gate_heads})")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.mode = mode
        self.chirality = chirality
        self.gate_groups = gate_groups
        self.impl = check_plstm_impl(impl)
        self.chunk_size = chunk_size
        n_types = len(_GATES[mode])

        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias, **dd)
        # gate logits b + W x with a block-diagonal W: gate heads (orientation, head), flattened, fall into
        # gate_groups consecutive groups, and every gate of group g reads only slice g of the token
        self.gate_weight = nn.Parameter(
            torch.empty(gate_groups, n_types, gate_heads // gate_groups, dim // gate_groups, **dd)
        )
        self.gate_bias = nn.Parameter(torch.empty(n_types, 4, num_heads, **dd))
        self.direct_bias = nn.Parameter(torch.empty(num_heads, **dd))
        if mode == "P":
            self.orientation_weight = nn.Parameter(torch.empty(4, num_heads, dim, **dd))
            self.orientation_bias = nn.Parameter(torch.empty(4, num_heads, **dd))
        else:
            self.register_parameter("orientation_weight", None)
            self.register_parameter("orientation_bias", None)
        self.norm = HeadRMSNorm(num_heads, self.head_dim, eps=norm_eps, **dd)
        self.proj = nn.Linear(dim, dim, bias=proj_bias, **dd)
        if self.gate_bias.device.type != "meta":
            self.init_weights()

    def init_weights(self) -> None:
        """Reference gate initialisation (zero weights, constant biases), unit norm scale, trunc-normal linears."""
        with torch.no_grad():
            self.gate_weight.zero_()
            for i, name in enumerate(_GATES[self.mode]):
                if name.startswith("source"):
                    self.gate_bias[i].fill_(_SOURCE_BIAS)
                elif name.startswith("mark"):
                    self.gate_bias[i].fill_(_MARK_BIAS)
                else:
                    self.gate_bias[i].fill_(_TRANSITION_BIAS)
            self.direct_bias.fill_(_DIRECT_BIAS)
            if self.orientation_weight is not None:
                self.orientation_weight.zero_()
                spread = torch.linspace(-2.0, 2.0, self.num_heads, device=self.orientation_bias.device)
                self.orientation_bias.copy_(spread.expand(4, -1))
            self.norm.weight.fill_(1.0)
        for linear in (self.qkv, self.proj):
            nn.init.trunc_normal_(linear.weight, std=0.02)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)

    @property
    def gate_names(self) -> tuple[str, ...]:
        """Names of the gates produced by the block-diagonal projection, in the order of ``gate_bias``."""
        return _GATES[self.mode]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, mode={self.mode!r}, impl={self.impl!r}"

    def gate_activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Bounded raw gates of ``x [B, X, Y, C]``: each ``[B, X, Y, 4, H]`` (orientation, head), ``direct [H]``
        and, in P-mode, ``orientation [B, X, Y, 4, H]``."""
        B, X, Y, C = x.shape
        G, H = self.gate_groups, self.num_heads
        names = _GATES[self.mode]
        logits = torch.einsum("bxygc,gtjc->bxytgj", x.reshape(B, X, Y, G, C // G), self.gate_weight)
        logits = logits.reshape(B, X, Y, len(names), 4, H) + self.gate_bias  # head (g, j) is o * H + h
        out = {}
        for i, name in enumerate(names):
            if name.startswith("trans"):
                out[name] = torch.tanh(_TRANSITION_SCALE * logits[:, :, :, i])
            else:
                out[name] = torch.sigmoid(logits[:, :, :, i])
        out["direct"] = torch.sigmoid(self.direct_bias)
        if self.orientation_weight is not None:
            o = torch.einsum("bxyc,ohc->bxyoh", x, self.orientation_weight)
            out["orientation"] = torch.sigmoid(self.orientation_bias + _ORIENTATION_SCALE * o / C)
        return out

    def _op(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.impl == "auto":
            return plstm2d(q, k, v, **gates, chunk_size=self.chunk_size)
        if self.impl == "chunk":
            return chunk_plstm2d(q, k, v, **gates, chunk_size=self.chunk_size)
        if self.impl == "parallel":
            return parallel_plstm2d(q, k, v, **gates)
        return naive_plstm2d(q, k, v, **gates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, X, Y, C]`` tokens on the patch grid -> ``[B, X, Y, C]``."""
        B, X, Y, C = x.shape
        H, D = self.num_heads, self.head_dim
        q, k, v = self.qkv(x).view(B, X, Y, 3, H, D).unbind(3)
        act = self.gate_activations(x)

        def stacked(name: str) -> torch.Tensor:  # [B, X, Y, 4, H] -> [4 B, X, Y, H], each orientation flipped
            return _stack_orientations(list(act[name].unbind(3)))

        # the direct term is shared by the orientations: counted once, in orientation 0
        direct = act["direct"].to(x.dtype).expand(B, X, Y, H)
        direct = torch.cat([direct, direct.new_zeros(3 * B, X, Y, H)], dim=0)
        if self.mode == "P":
            gates = p_mode_gates(
                stacked("source"), stacked("transition"), stacked("mark"), direct, stacked("orientation")
            )
        else:
            gates = d_mode_gates(
                *(stacked(name) for name in _GATES["D"]),
                direct,
                chirality=self.chirality,
            )
        qkv4 = [_stack_orientations([t] * 4) for t in (q, k, v)]
        out = self._op(*qkv4, gates).reshape(4, B, X, Y, H, D)  # [4, B, X, Y, H, D]
        out = sum(unorient(out[o], o) for o in range(4))
        out = self.norm(out).reshape(B, X, Y, C)
        return self.proj(out)
