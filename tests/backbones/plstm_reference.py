"""Frozen copy of the pLSTM layer's forward as it was before the fast path (commit 60363c2), kept as a test reference.

It reads the parameters of a :class:`~recvision.layers.plstm.PLSTM2D` (whose parameter layout did not change) and
recomputes the layer output the old way: the gate projection as a block-diagonal einsum, the orientation gate as its
own einsum, the four grid orientations stacked on the batch axis with flipped copies of q, k, v and every gate, one
call of the chunked (or cell-by-cell) op, and the four outputs flipped back and summed. Do not "improve" this file:
its only job is to stay what the layer used to compute.
"""

from __future__ import annotations

import torch

from recvision.layers.plstm import PLSTM2D
from recvision.ops.plstm2d import chunk_plstm2d_torch, d_mode_gates, naive_plstm2d, orient, unorient

_GATES = {
    "P": ("source", "transition", "mark"),
    "D": ("source_r", "source_d", "trans_r", "trans_d", "trans_cross", "mark_l", "mark_u"),
}


def _stack_orientations(per_orientation: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([orient(t, o) for o, t in enumerate(per_orientation)], dim=0)


def reference_gate_activations(layer: PLSTM2D, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The old ``PLSTM2D.gate_activations``: each gate ``[B, X, Y, 4, H]``, ``direct [H]``."""
    B, X, Y, C = x.shape
    G, H = layer.gate_groups, layer.num_heads
    names = _GATES[layer.mode]
    logits = torch.einsum("bxygc,gtjc->bxytgj", x.reshape(B, X, Y, G, C // G), layer.gate_weight)
    logits = logits.reshape(B, X, Y, len(names), 4, H) + layer.gate_bias
    out = {}
    for i, name in enumerate(names):
        if name.startswith("trans"):
            out[name] = torch.tanh(5.0 * logits[:, :, :, i])
        else:
            out[name] = torch.sigmoid(logits[:, :, :, i])
    out["direct"] = torch.sigmoid(layer.direct_bias)
    if layer.orientation_weight is not None:
        o = torch.einsum("bxyc,ohc->bxyoh", x, layer.orientation_weight)
        out["orientation"] = torch.sigmoid(layer.orientation_bias + 0.5 * o / C)
    return out


def reference_plstm_forward(layer: PLSTM2D, x: torch.Tensor, op: str = "chunk") -> torch.Tensor:
    """The old ``PLSTM2D.forward`` on ``x [B, X, Y, C]`` -> ``[B, X, Y, C]`` with ``op`` ``"chunk"`` or ``"naive"``
    (P-mode gates in the form ``(1 - o) S``, ``(1 - o) T``: the only form the old layer had)."""
    B, X, Y, C = x.shape
    H, D = layer.num_heads, layer.head_dim
    q, k, v = layer.qkv(x).view(B, X, Y, 3, H, D).unbind(3)
    act = reference_gate_activations(layer, x)

    def stacked(name: str) -> torch.Tensor:
        return _stack_orientations(list(act[name].unbind(3)))

    direct = act["direct"].to(x.dtype).expand(B, X, Y, H)
    direct = torch.cat([direct, direct.new_zeros(3 * B, X, Y, H)], dim=0)
    if layer.mode == "P":
        source, transition, orientation = stacked("source"), stacked("transition"), stacked("orientation")
        mark = stacked("mark")
        right, down = orientation, 1 - orientation
        gates = {
            "source_r": right * source,
            "source_d": down * source,
            "trans_rl": right * transition,
            "trans_ru": right * transition,
            "trans_du": down * transition,
            "trans_dl": down * transition,
            "mark_l": mark,
            "mark_u": mark,
            "direct": direct,
        }
    else:
        gates = d_mode_gates(*(stacked(name) for name in _GATES["D"]), direct, chirality=layer.chirality)
    qkv4 = [_stack_orientations([t] * 4) for t in (q, k, v)]
    fn = chunk_plstm2d_torch if op == "chunk" else naive_plstm2d
    out = fn(*qkv4, **gates).reshape(4, B, X, Y, H, D)
    out = sum(unorient(out[o], o) for o in range(4))
    out = layer.norm(out).reshape(B, X, Y, C)
    return layer.proj(out)
