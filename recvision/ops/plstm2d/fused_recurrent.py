"""2-D pLSTM forward on the CPU by a native kernel: the recurrence cell by cell with the edge states in cache.

:func:`fused_recurrent_plstm2d` runs the recurrence of :func:`~recvision.ops.plstm2d.naive_plstm2d` in C
(``csrc/fused_recurrent.c``, compiled on first use by :mod:`recvision.ops.utils.native`), one task per (orientation,
batch, head, block of value columns), in row-major cell order. It needs ``8 DK DV`` multiply-adds per cell and head,
the fewest of all forms (the chunked form spends about ``4 (bx + by) DK DV`` on its boundary states), and keeps only
``Y + 1`` edge states per task, so it is the fastest CPU form for inference at every grid size we measured. It can
also run several grid orientations in one call and sum them (what the pLSTM layer does), walking a flipped axis
backwards instead of flipping copies of the inputs.

Forward only: there is no backward. Training uses :func:`~recvision.ops.plstm2d.chunk_plstm2d`.
"""

from __future__ import annotations

import ctypes
import operator
from collections.abc import Sequence
from pathlib import Path

import torch

from ..utils.native import NativeKernel, load_native, native_problem
from .common import GATE_NAMES, check_plstm2d_inputs, compute_dtype, gate_dict
from .gates import ORIENTATIONS

__all__ = ["fused_recurrent_available", "fused_recurrent_plstm2d"]

_P, _I = ctypes.c_void_p, ctypes.c_int64
_SIGNATURE = ([_P] * 6 + [_I] * 7 + [ctypes.c_double, ctypes.c_int], ctypes.c_int)
_KERNEL = NativeKernel(
    name="plstm2d_fused_recurrent",
    source=Path(__file__).with_name("csrc") / "fused_recurrent.c",
    signatures={"plstm2d_fused_recurrent_f32": _SIGNATURE, "plstm2d_fused_recurrent_f64": _SIGNATURE},
)


# the kernel's own cap (MAX_THREADS in csrc/fused_recurrent.c)
_MAX_THREADS = 256


def _orientation_codes(orientations: Sequence[int]) -> list[int]:
    """``orientations`` as a list of ints in 0..3 (numpy and torch integers accepted, bools not)."""
    try:
        codes = [None if isinstance(o, bool) else operator.index(o) for o in orientations]
    except TypeError:
        codes = [None]
    if not codes or any(c not in ORIENTATIONS for c in codes):
        raise ValueError(f"fused_recurrent_plstm2d: orientations must be values in 0..3; got {orientations!r}")
    return codes


def fused_recurrent_available() -> str | None:
    """``None`` if :func:`fused_recurrent_plstm2d` can run here, else one line saying why not (builds the kernel
    on first call; see :mod:`recvision.ops.utils.native`)."""
    return native_problem(_KERNEL)


def fused_recurrent_plstm2d(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    source_r: torch.Tensor,
    source_d: torch.Tensor,
    trans_rl: torch.Tensor,
    trans_ru: torch.Tensor,
    trans_du: torch.Tensor,
    trans_dl: torch.Tensor,
    mark_l: torch.Tensor,
    mark_u: torch.Tensor,
    direct: torch.Tensor,
    *,
    scale: float | None = None,
    orientations: Sequence[int] | None = None,
    num_threads: int | None = None,
) -> torch.Tensor:
    """2-D pLSTM forward by the native CPU kernel (no autograd).

    Args:
        q, k, v, source_r, ..., direct, scale: as in :func:`~recvision.ops.plstm2d.naive_plstm2d`; CPU tensors.
        orientations: ``None`` for one run of the op as it is (every gate ``[B, X, Y, H]``). Otherwise a sequence of
            ``O`` grid orientations (0: as is, 1: X flipped, 2: Y flipped, 3: both; see
            :func:`~recvision.ops.plstm2d.orient`), every gate ``[O, B, X, Y, H]`` with gate ``o`` on the unflipped
            grid, and the result is ``sum_o unorient(plstm2d(orient(q, o), ..., orient(gate[o], o)), o)``.
        num_threads: worker threads (default :func:`torch.get_num_threads`). The result does not depend on it.

    Returns:
        ``o [B, X, Y, H, DV]`` in q's dtype (computed in float32, float64 for float64 inputs).

    Raises:
        RuntimeError: if the kernel is not available here (:func:`fused_recurrent_available` says why), if an input
            requires a gradient while grad mode is on, or if the kernel could not allocate its work buffers.
    """
    gates = gate_dict(source_r, source_d, trans_rl, trans_ru, trans_du, trans_dl, mark_l, mark_u, direct)
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        # the kernel writes through raw pointers, which a trace or a compiled graph would not record
        raise RuntimeError("fused_recurrent_plstm2d cannot be traced or compiled; use chunk_plstm2d there")
    if orientations is None:
        scale = check_plstm2d_inputs(q, k, v, gates, scale)
        codes, stacked = [0], [g[None] for g in gates.values()]
    else:
        codes = _orientation_codes(orientations)
        if not isinstance(q, torch.Tensor) or q.ndim != 5:
            check_plstm2d_inputs(q, k, v, {}, scale)  # raises its one line about q
        expected = (len(codes), *q.shape[:4])
        for name, g in gates.items():
            if not isinstance(g, torch.Tensor) or tuple(g.shape) != expected:
                got = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
                raise ValueError(
                    f"fused_recurrent_plstm2d: gate {name} must have shape [O, B, X, Y, H] = {list(expected)} "
                    f"for {len(codes)} orientations; got {got}"
                )
        scale = check_plstm2d_inputs(q, k, v, {name: g[0] for name, g in gates.items()}, scale)
        stacked = list(gates.values())
    for name, t in (("q", q), ("k", k), ("v", v), *zip(GATE_NAMES, stacked, strict=True)):
        # the kernel reads raw CPU pointers: any other device (cuda, meta) must be refused here
        if t.device.type != "cpu" or t.layout != torch.strided:
            raise ValueError(
                f"fused_recurrent_plstm2d runs on dense CPU tensors; got {name} on {t.device} ({t.layout})"
            )
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, *stacked)):
        raise RuntimeError(
            "fused_recurrent_plstm2d has no backward: call it under torch.no_grad() / inference_mode(), or use "
            "chunk_plstm2d for training"
        )
    lib = load_native(_KERNEL)
    if lib is None:
        raise RuntimeError(fused_recurrent_available())
    dtype = compute_dtype(q.dtype)
    B, X, Y, H, DK = q.shape
    DV = v.shape[-1]
    qc, kc, vc = (t.to(dtype).contiguous() for t in (q, k, v))
    g = torch.stack([t.to(dtype) for t in stacked])  # [9, O, B, X, Y, H], contiguous
    # one output per orientation, summed below: tasks of different orientations never write the same memory
    out = torch.empty(len(codes), B, X, Y, H, DV, dtype=dtype)
    orient_codes = torch.tensor(codes, dtype=torch.int32)
    fn = lib.plstm2d_fused_recurrent_f64 if dtype == torch.float64 else lib.plstm2d_fused_recurrent_f32
    threads = torch.get_num_threads() if num_threads is None else operator.index(num_threads)
    if threads < 1:
        raise ValueError(f"fused_recurrent_plstm2d: num_threads must be >= 1; got {num_threads}")
    threads = min(threads, _MAX_THREADS)
    status = fn(
        qc.data_ptr(), kc.data_ptr(), vc.data_ptr(), g.data_ptr(), out.data_ptr(), orient_codes.data_ptr(),
        len(codes), B, X, Y, H, DK, DV, scale, threads,
    )  # fmt: skip
    if status != 0:
        raise RuntimeError("fused_recurrent_plstm2d: the kernel could not allocate its work buffers (out of memory)")
    out = out[0] if len(codes) == 1 else out.sum(0)
    return out.to(q.dtype)
