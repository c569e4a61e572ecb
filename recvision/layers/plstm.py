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

Own choices: the grid axis X is the image height (rows), Y the width. Three equivalent ways to run the four
orientations (same parameters, same outputs up to float rounding, tested against a frozen copy of the first):

* **stacked**: the four orientations stacked on the batch axis (flipped copies of q, k, v and the gates), one call
  of the op (chunked PyTorch, or Triton on CUDA), the four outputs flipped back and summed. Memory and time are
  linear in the cells; used on CUDA and for training on large grids on the CPU, where the op is called per
  orientation and group of :data:`CPU_HEADS_PER_CALL` heads so that its working memory stays a fraction of the
  stacked call's.
* **combined**: q, k and v are the same in every orientation, only the gates differ, so the sum of the four outputs
  is one attention-like product ``((q k^T) * G) v`` with ``G`` the sum of the four (flipped back) node-to-node
  gating matrices of the parallel form. ``G`` is built per orientation and head by one anti-diagonal scan over the
  grid (:func:`~recvision.ops.plstm2d.block_scan.scan_plstm2d_blocks` with one block holding the whole grid); it is
  ``[B, H, XY, XY]``, quadratic in the cells, so this form serves training on small grids (``impl="auto"`` on the
  CPU up to :data:`COMBINED_MAX_CELLS` cells, e.g. the 14 x 14 grid of a 224 px image at patch 16): one ``q k^T``
  and one product with ``v`` per head instead of four chunked recurrences with ``DK x DV`` edge states.
* **fused** (inference on the CPU): all four orientations in one call of the native kernel
  :func:`~recvision.ops.plstm2d.fused_recurrent_plstm2d` (C, compiled on first use), which runs the recurrence cell
  by cell with the edge states in cache and walks flipped axes backwards instead of flipping copies. It has no
  backward, so ``impl="auto"`` takes it on the CPU whenever no gradient is needed (``torch.no_grad()``,
  ``inference_mode()``, frozen parameters and input) and the kernel can be built, at every grid size; otherwise the
  forms above.

The gate projection and the P-mode orientation projection are run as one matmul (the block-diagonal gate weight
expanded to a dense ``[C, kinds * 4 H]`` matrix), the parameters keep their block-diagonal layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models import register_notrace_module
from torch import nn

from ..config import use_native, use_triton
from ..ops.plstm2d import (
    chunk_plstm2d_torch,
    d_mode_gates,
    fused_recurrent_available,
    fused_recurrent_plstm2d,
    naive_plstm2d,
    orient,
    p_mode_gates,
    parallel_plstm2d,
    plstm2d,
    unorient,
)
from ..ops.plstm2d.block_scan import scan_plstm2d_blocks
from ..ops.plstm2d.gates import P_GATE_FORMS
from .lightnet import HeadRMSNorm

__all__ = [
    "COMBINED_MAX_CELLS",
    "CPU_CHUNK_SIZE",
    "CPU_HEADS_PER_CALL",
    "PLSTM_IMPLS",
    "PLSTM_MODES",
    "PLSTM2D",
    "check_plstm_impl",
]

PLSTM_MODES = ("P", "D")
PLSTM_IMPLS = ("auto", "fused", "combined", "chunk", "parallel", "naive")
# impl="auto" on the CPU: grids of up to this many cells use the combined form (its G is [B, H, XY, XY]: 14 x 14
# and 16 x 16 grids, where it is cheaper than four chunked recurrences and costs about the memory of ViT's attention
# matrix); larger grids use the stacked chunked op with CPU_CHUNK_SIZE (8 x 8 chunks get their operators from the
# anti-diagonal scan and need fewer sequential chunk steps than the op's default 4; see benchmarks/README.md)
COMBINED_MAX_CELLS = 256
CPU_CHUNK_SIZE = 8
# impl="auto" on the CPU, stacked form: the chunked op is called per orientation and group of this many heads, which
# divides its peak working memory by 4 H / CPU_HEADS_PER_CALL at the cost of a few more (large) op calls
CPU_HEADS_PER_CALL = 4

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


def check_gate_form(gate_form: str) -> str:
    if gate_form not in P_GATE_FORMS:
        raise ValueError(f"gate_form must be one of {P_GATE_FORMS}; got {gate_form!r}")
    return gate_form


def _stack_orientations(per_orientation: list[torch.Tensor]) -> torch.Tensor:
    """Four ``[B, X, Y, ...]`` tensors, the ``o``-th put in grid orientation ``o`` -> ``[4 B, X, Y, ...]``."""
    return torch.cat([orient(t, o) for o, t in enumerate(per_orientation)], dim=0)


def _direct_in_first_orientation(direct: torch.Tensor) -> torch.Tensor:
    """The direct gate of every cell ``direct [...]`` -> ``[4, ...]`` per orientation: the direct term is shared by the
    orientations, so it is counted once, in orientation 0, and the other three get zeros."""
    return torch.stack([direct, *[direct.new_zeros(()).expand(direct.shape)] * 3])


def _flip_grid(t: torch.Tensor, orientation: int, x_dims: tuple[int, ...], y_dims: tuple[int, ...]) -> torch.Tensor:
    """Put ``t`` in grid ``orientation`` (0: as is, 1: X flipped, 2: Y flipped, 3: both) by flipping the listed
    X and Y axes; its own inverse. Same convention as :func:`~recvision.ops.plstm2d.orient`."""
    dims = (x_dims if orientation in (1, 3) else ()) + (y_dims if orientation in (2, 3) else ())
    return t.flip(dims) if dims else t


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
        gate_form: str = "split",
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
            impl: how the recurrence is run: ``"auto"`` (where :func:`recvision.config.use_triton` picks Triton,
                e.g. on CUDA, the stacked orientations through :func:`~recvision.ops.plstm2d.plstm2d`; on the CPU
                without gradients the fused native kernel where :func:`recvision.config.use_native` allows it and it
                builds; on the CPU otherwise the combined form for grids of up to :data:`COMBINED_MAX_CELLS` cells,
                else the stacked chunked op), ``"fused"`` (always the native kernel: inference only),
                ``"combined"`` (always the combined form), or the stacked orientations through one op: ``"chunk"``,
                ``"parallel"`` or ``"naive"`` (cell by cell; for tests). All give the same output up to float
                rounding.
            chunk_size: chunk side of the chunked op (``None``: :data:`CPU_CHUNK_SIZE` for ``"auto"`` on the CPU,
                else the op's default).
            gate_form: P-mode gate form, ``"split"`` (``source_d = (1 - o) S``, ``trans_d = (1 - o) T``; the
                default) or ``"complement"`` (``1 - o S``, ``1 - o T``, as the authors' code builds them; see
                :func:`~recvision.ops.plstm2d.p_mode_gates`). Ignored in D-mode.
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
        self.gate_form = check_gate_form(gate_form)
        # heads per op call in the stacked form (None: all orientations and heads in one call); "auto" on the CPU
        # uses CPU_HEADS_PER_CALL, see _heads_per_call
        self.heads_per_call: int | None = None
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
        form = f", gate_form={self.gate_form!r}" if self.mode == "P" else ""
        return f"dim={self.dim}, num_heads={self.num_heads}, mode={self.mode!r}, impl={self.impl!r}{form}"

    # -------------------------------------------------------------------------------------------------------------
    # gates

    def _gate_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The gate (and P-mode orientation) projection as one dense matmul: weight ``[K * 4 H, C]`` and bias
        ``[K * 4 H]``, ``K`` gate kinds (+1 for the orientation gate), rows ordered ``(kind, orientation, head)``.

        The block-diagonal ``gate_weight [G, T, J, C / G]`` is expanded with zeros (it is small: ``T 4 H C``
        entries), so the logits cost one GEMM instead of an einsum over groups plus a second one for the
        orientation gate; the orientation rows carry the reference's ``0.5 / C`` scale.
        """
        G, T, J, Cg = self.gate_weight.shape
        eye = torch.eye(G, dtype=self.gate_weight.dtype, device=self.gate_weight.device)
        weight = torch.einsum("gtjc,gh->tgjhc", self.gate_weight, eye).reshape(T * G * J, G * Cg)
        bias = self.gate_bias.reshape(-1)
        if self.orientation_weight is not None:
            scale = _ORIENTATION_SCALE / self.dim
            weight = torch.cat([weight, self.orientation_weight.reshape(-1, self.dim) * scale])
            bias = torch.cat([bias, self.orientation_bias.reshape(-1)])
        return weight, bias

    def _gate_kinds(self, x: torch.Tensor) -> torch.Tensor:
        """Bounded gates of ``x [B, X, Y, C]`` as one tensor ``[B, X, Y, K, 4, H]``: the kinds of
        :attr:`gate_names` (tanh(5 .) for transitions, sigmoid otherwise), then in P-mode the orientation gate."""
        B, X, Y, _ = x.shape
        weight, bias = self._gate_projection()
        logits = F.linear(x, weight, bias).view(B, X, Y, -1, 4, self.num_heads)
        names = _GATES[self.mode]
        trans = [i for i, name in enumerate(names) if name.startswith("trans")]
        # the transitions are consecutive kinds: one tanh over their slice, one sigmoid over everything else
        lo, hi = trans[0], trans[-1] + 1
        return torch.cat(
            [
                torch.sigmoid(logits[:, :, :, :lo]),
                torch.tanh(_TRANSITION_SCALE * logits[:, :, :, lo:hi]),
                torch.sigmoid(logits[:, :, :, hi:]),
            ],
            dim=3,
        )

    def gate_activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Bounded raw gates of ``x [B, X, Y, C]``: each ``[B, X, Y, 4, H]`` (orientation, head), ``direct [H]``
        and, in P-mode, ``orientation [B, X, Y, 4, H]``."""
        kinds = self._gate_kinds(x)
        names = _GATES[self.mode] + (("orientation",) if self.mode == "P" else ())
        out = {name: kinds[:, :, :, i] for i, name in enumerate(names)}
        out["direct"] = torch.sigmoid(self.direct_bias)
        return out

    def _cell_gates(self, kinds: list[torch.Tensor], direct: torch.Tensor) -> dict[str, torch.Tensor]:
        """The op's nine gates from the per-kind activations (all one shape) and the direct gate of that shape."""
        if self.mode == "P":
            source, transition, mark, orientation = kinds
            return p_mode_gates(source, transition, mark, direct, orientation, form=self.gate_form)
        return d_mode_gates(*kinds, direct, chirality=self.chirality)

    # -------------------------------------------------------------------------------------------------------------
    # the two forms

    def _auto_on_cpu(self, x: torch.Tensor) -> bool:
        """``impl="auto"`` running the PyTorch forms on the CPU (not Triton: the global backend may force it)."""
        return self.impl == "auto" and x.device.type == "cpu" and not use_triton(x)

    def _use_fused(self, x: torch.Tensor) -> bool:
        if self.impl == "fused":
            return True
        if not (self._auto_on_cpu(x) and use_native(x)):
            return False
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return False  # the native kernel writes through raw pointers, which a trace or graph cannot record
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())):
            return False  # the native kernel has no backward
        return fused_recurrent_available() is None

    def _use_combined(self, x: torch.Tensor) -> bool:
        if self.impl == "combined":
            return True
        return self._auto_on_cpu(x) and x.shape[1] * x.shape[2] <= COMBINED_MAX_CELLS

    def _heads_per_call(self, q: torch.Tensor) -> int | None:
        if self.heads_per_call is not None:
            return self.heads_per_call
        return CPU_HEADS_PER_CALL if self._auto_on_cpu(q) else None

    def _op(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gates: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.impl == "auto":
            chunk_size = self.chunk_size
            if chunk_size is None and self._auto_on_cpu(q):
                chunk_size = CPU_CHUNK_SIZE
            return plstm2d(q, k, v, **gates, chunk_size=chunk_size)
        if self.impl == "chunk":
            return chunk_plstm2d_torch(q, k, v, **gates, chunk_size=self.chunk_size)
        if self.impl == "parallel":
            return parallel_plstm2d(q, k, v, **gates)
        return naive_plstm2d(q, k, v, **gates)

    def _stacked(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
        """Four orientations stacked on the batch axis, one op call; ``q, k, v [B, X, Y, H, D]``, ``kinds [B, X,
        Y, K, 4, H]`` -> summed output ``[B, X, Y, H, D]``."""
        B, X, Y, H, D = v.shape
        # [B, X, Y, K, 4, H] -> K tensors [4 B, X, Y, H], orientation o flipped into place
        stacked = _stack_orientations(list(kinds.movedim(4, 0))).view(4, B, X, Y, -1, H)
        stacked = stacked.movedim(4, 0).reshape(-1, 4 * B, X, Y, H).unbind(0)
        direct = _direct_in_first_orientation(torch.sigmoid(self.direct_bias).to(v.dtype).expand(B, X, Y, H))
        gates = self._cell_gates(list(stacked), direct.flatten(0, 1))
        heads_per_call = self._heads_per_call(q)
        if heads_per_call is None:
            qkv4 = [_stack_orientations([t] * 4) for t in (q, k, v)]
            out = self._op(*qkv4, gates).view(4, B, X, Y, H, D)
            return unorient(out[0], 0) + unorient(out[1], 1) + unorient(out[2], 2) + unorient(out[3], 3)
        # one op call per orientation and group of heads: the op's working memory (chunk operators, boundary
        # states) is proportional to the sequences in one call, and the calls are independent
        total = None
        for o in range(4):
            q_o, k_o, v_o = (orient(t, o) for t in (q, k, v))
            parts = []
            for h in range(0, H, heads_per_call):
                heads = slice(h, h + heads_per_call)
                part = {name: g[o * B : (o + 1) * B, :, :, heads] for name, g in gates.items()}
                parts.append(self._op(q_o[:, :, :, heads], k_o[:, :, :, heads], v_o[:, :, :, heads], part))
            out = unorient(torch.cat(parts, dim=3) if len(parts) > 1 else parts[0], o)
            total = out if total is None else total + out
        return total

    def _fused(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
        """The four orientations in one call of the native CPU kernel (forward only); ``q, k, v [B, X, Y, H, D]``,
        ``kinds [B, X, Y, K, 4, H]`` -> summed output ``[B, X, Y, H, D]``. The kernel walks the flipped axes
        backwards, so the gates stay on the image grid and nothing is flipped."""
        B, X, Y, H, _ = v.shape
        per_kind = list(kinds.permute(3, 4, 0, 1, 2, 5).unbind(0))  # K x [4, B, X, Y, H]
        direct = _direct_in_first_orientation(torch.sigmoid(self.direct_bias).to(v.dtype).expand(B, X, Y, H))
        gates = self._cell_gates(per_kind, direct)
        return fused_recurrent_plstm2d(q, k, v, **gates, orientations=(0, 1, 2, 3))

    def _combined(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
        """Sum of the four orientations as one gated attention-like product; ``q, k, v [B, X, Y, H, D]``, ``kinds
        [B, X, Y, K, 4, H]`` -> ``[B, X, Y, H, D]``.

        ``G_o[c, c']`` (orientation ``o``, flipped back to the image grid) is the parallel form's gating from cell
        ``c'`` to cell ``c``; the output is ``sum_c' (sum_o G_o[c, c']) scale (q_c . k_c') v_c'``.
        """
        B, X, Y, H, D = v.shape
        L = X * Y
        ct = torch.float64 if v.dtype == torch.float64 else torch.float32  # the ops' compute dtype
        # [B, X, Y, K, 4, H] -> [4, B, H, K, X, Y], each orientation flipped into place
        per_o = kinds.to(ct).permute(4, 0, 5, 3, 1, 2)
        oriented = torch.stack([_flip_grid(per_o[o], o, (-2,), (-1,)) for o in range(4)])
        n = 4 * B * H
        direct = torch.sigmoid(self.direct_bias).to(ct)[None, :, None, None].expand(B, H, X, Y)
        direct = _direct_in_first_orientation(direct).reshape(n, X, Y)
        gates = self._cell_gates(list(oriented.reshape(n, -1, X, Y).unbind(1)), direct)
        g = scan_plstm2d_blocks(gates, X, Y, boundary=False).g.view(4, B, H, X, Y, X, Y)
        gsum = g[0] + _flip_grid(g[1], 1, (2, 4), (3, 5))
        gsum = gsum + _flip_grid(g[2], 2, (2, 4), (3, 5))
        gsum = gsum + _flip_grid(g[3], 3, (2, 4), (3, 5))  # [B, H, X, Y, X, Y]
        qh, kh, vh = (t.to(ct).permute(0, 3, 1, 2, 4).reshape(B, H, L, D) for t in (q, k, v))
        scores = (qh * D**-0.5) @ kh.transpose(-1, -2)  # [B, H, L, L]
        out = (scores * gsum.view(B, H, L, L)) @ vh  # [B, H, L, D]
        return out.view(B, H, X, Y, D).permute(0, 2, 3, 1, 4).to(v.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, X, Y, C]`` tokens on the patch grid -> ``[B, X, Y, C]``."""
        B, X, Y, C = x.shape
        H, D = self.num_heads, self.head_dim
        q, k, v = self.qkv(x).view(B, X, Y, 3, H, D).unbind(3)
        kinds = self._gate_kinds(x)
        if self._use_fused(x):
            out = self._fused(q, k, v, kinds)
        elif self._use_combined(x):
            out = self._combined(q, k, v, kinds)
        else:
            out = self._stacked(q, k, v, kinds)
        out = self.norm(out).reshape(B, X, Y, C)
        return self.proj(out)
