"""Helpers shared by the tests of the 2-D pLSTM Triton kernels (the chunk form).

Random inputs in every gate mode, a forward + backward runner, the comparison of the output and all twelve
gradients against ``naive_plstm2d``, and the ahead-of-time compile step of one kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from recvision.ops.plstm2d import GATE_NAMES, d_mode_gates, naive_plstm2d, p_mode_gates
from recvision.ops.utils import assert_close

INPUT_NAMES = ("q", "k", "v", *GATE_NAMES)
# relative RMS error allowed against the reference, by input dtype
RATIO = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 5e-3}
# shared memory per block on sm_80 / sm_90 with the opt-in carve-out, minus what the runtime keeps
SHARED_MEMORY_LIMIT = 101376
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


def random_gates(mode: str, shape: tuple[int, ...], device: str) -> dict[str, torch.Tensor]:
    """The nine gates ``[B, X, Y, H]`` of a P-mode, D-mode (chirality L / R) or unconstrained random layer."""

    def act(kind: str) -> torch.Tensor:
        x = torch.randn(shape, device=device)
        return torch.tanh(x) if kind == "tanh" else torch.sigmoid(x)

    if mode == "P":
        return p_mode_gates(act("sig"), act("tanh"), act("sig"), act("sig"), act("sig"))
    if mode in ("DL", "DR"):
        names = ("sig", "sig", "tanh", "tanh", "tanh", "sig", "sig", "sig")
        return d_mode_gates(*(act(n) for n in names), chirality=mode[1])
    # independent gates, negative transitions included, scaled so that states stay bounded
    return {name: act("tanh") * (0.5 if name.startswith("trans") else 1.0) for name in GATE_NAMES}


def random_inputs(B, X, Y, H, K, V, mode, device, dtype=torch.float32, gate_dtype=None) -> tuple[torch.Tensor, ...]:
    """``(q, k, v, *gates)`` with ``q, k [B, X, Y, H, K]``, ``v [B, X, Y, H, V]`` and gates in GATE_NAMES order."""
    q = torch.randn(B, X, Y, H, K, device=device).to(dtype)
    k = torch.randn(B, X, Y, H, K, device=device).to(dtype)
    v = torch.randn(B, X, Y, H, V, device=device).to(dtype)
    gates = random_gates(mode, (B, X, Y, H), device)
    gates = {name: g.to(gate_dtype or dtype) for name, g in gates.items()}
    return (q, k, v, *(gates[name] for name in GATE_NAMES))


def run_with_grads(fn: Callable, inputs, do: torch.Tensor, **kwargs) -> list[torch.Tensor]:
    """Forward + backward; returns ``[o, d<input> for every input]`` (zeros where autograd gives no gradient)."""
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    o = fn(*leaves, **kwargs)
    (o.double() * do.double()).sum().backward()
    return [o, *(torch.zeros_like(leaf) if leaf.grad is None else leaf.grad for leaf in leaves)]


def compare_with_naive(fn: Callable, inputs, ratio: float, ref_dtype=torch.float32, **kwargs) -> None:
    """``fn`` vs naive_plstm2d (run on the same values in ``ref_dtype``): output and every gradient, each in its
    input's dtype, driven by a random upstream gradient."""
    do = torch.randn_like(inputs[2], dtype=torch.float32)
    ref = run_with_grads(naive_plstm2d, [x.to(ref_dtype) for x in inputs], do, scale=kwargs.get("scale"))
    out = run_with_grads(fn, inputs, do, **kwargs)
    assert out[0].dtype == inputs[0].dtype
    for name, x, r, t in zip(("o", *INPUT_NAMES), (inputs[2], *inputs), ref, out, strict=True):
        assert t.dtype == x.dtype, name
        assert_close(name, r, t, ratio)


def aot_build(kernel, arch: int, pointers: dict, scalars: dict, constants: dict, num_warps: int) -> None:
    """Compile one variant of a jitted ``kernel`` for ``sm_<arch>`` and check its shared memory.

    Args:
        kernel: the ``@triton.jit`` function.
        arch: compute capability, e.g. 90.
        pointers: pointer arguments by name and element type (``"fp32"``...); ``None`` passes no pointer.
        scalars: runtime scalar arguments by name and type (``"i32"``, ``"fp32"``).
        constants: the constexpr arguments.
        num_warps: warps per program.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(kernel.arg_names):
        if pointers.get(name) is not None:
            signature[name] = "*" + pointers[name]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in scalars:
            signature[name] = scalars[name]
        else:
            signature[name] = "constexpr"
            constexprs[name] = constants.get(name)
    compiled = triton.compile(
        ASTSource(kernel, signature, constexprs, attrs),
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": num_warps},
    )
    shared = compiled.metadata.shared
    assert shared <= SHARED_MEMORY_LIMIT, f"{kernel.__name__} {constants}: {shared} B of shared memory"


def compare_partial_grads(fn: Callable, inputs, which: tuple[int, ...], ratio: float, **kwargs) -> None:
    """Only the inputs at positions ``which`` require gradients: ``fn`` and naive_plstm2d agree on those, and
    ``fn`` under ``no_grad`` agrees on the output."""
    with torch.no_grad():
        assert_close("o (no_grad)", naive_plstm2d(*inputs), fn(*inputs, **kwargs), ratio)
    grads = []
    for f in (naive_plstm2d, fn):
        args = [x.detach().clone().requires_grad_(True) if i in which else x for i, x in enumerate(inputs)]
        o = f(*args, **kwargs) if f is fn else f(*args)
        (o.double() * torch.linspace(-1, 1, o.numel(), dtype=torch.float64).view_as(o)).sum().backward()
        grads.append([args[i].grad for i in which])
    for i, r, t in zip(which, *grads, strict=True):
        assert_close(f"d{INPUT_NAMES[i]}", r, t, ratio)


def compare_options(fn: Callable, inputs, options: list[dict], ratio: float) -> None:
    """``fn`` gives the same output and gradients (up to ``ratio``) with every keyword set in ``options``."""
    do = torch.randn_like(inputs[2])
    results = [run_with_grads(fn, inputs, do, **kwargs) for kwargs in options]
    for other in results[1:]:
        for name, r, t in zip(("o", *INPUT_NAMES), results[0], other, strict=True):
            assert_close(name, r, t, ratio)


def check_rejects_bad_inputs(fn: Callable, device: str) -> None:
    """``fn`` raises a ValueError naming the problem: head dim above 256, a gate of the wrong shape, integer q, k, v."""
    inputs = list(random_inputs(1, 2, 2, 1, 4, 4, "P", device))
    with pytest.raises(ValueError, match="<= 256"):
        fn(*random_inputs(1, 1, 1, 1, 264, 4, "P", device))
    bad = inputs.copy()
    bad[7] = bad[7][..., :1, :]  # trans_du with the wrong shape
    with pytest.raises(ValueError, match="trans_du"):
        fn(*bad)
    with pytest.raises(ValueError, match="floating"):
        fn(*(x.long() if i < 3 else x for i, x in enumerate(inputs)))
