"""Time the 2-D pLSTM implementations on a CUDA GPU (a script, not a test).

Compares, on square grids of ``side x side`` tokens (default 32, 64, 96, 128), forward and forward + backward
(gradients of q, k, v and all nine gates), and the peak memory of one forward + backward:

* ``chunk_plstm2d_triton`` with chunk sides 8 and 16 (chunked Triton kernels; the CUDA default, side 8),
* ``chunk_plstm2d_torch`` (PyTorch chunk form),
* ``parallel_plstm2d`` (PyTorch log-depth build of the full gating tensor, quadratic memory).

Gates are P-mode gates of random activations. Times are medians of ``triton.testing.do_bench`` (warm-up
included); the ratio column is time / ``triton chunk 8``. Before timing, every output and all twelve gradients
are checked against the PyTorch chunk form (relative RMS error, row ``check``). Out-of-memory runs are reported
as ``OOM``.

``--dry-run`` runs the same code paths on the CPU under ``TRITON_INTERPRET=1`` on a tiny grid (wall-clock medians,
no memory column): a check that the script works, not a measurement.

Usage::

    python benchmarks/bench_plstm_gpu.py [--dtype bf16|fp16|fp32] [--sides 32 64 96 128] [--B 2] [--H 4] [--D 64]
    python benchmarks/bench_plstm_gpu.py --dry-run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
BASELINE = "triton chunk 8"


def _bench(fn: Callable[[], object], grad_to_none: list[torch.Tensor], device: str, reps: int) -> float | str:
    """Median milliseconds of ``fn``, or a short reason why it could not run."""
    try:
        if device == "cuda":
            import triton.testing

            return triton.testing.do_bench(fn, warmup=10, rep=50, grad_to_none=grad_to_none, return_mode="median")
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "OOM"
    except RuntimeError as error:
        if device == "cuda":
            torch.cuda.empty_cache()
        return f"n/a ({str(error).splitlines()[0][:40]})"


def _peak_mib(fn: Callable[[], object], device: str) -> str:
    """Peak CUDA memory allocated during one call of ``fn`` (MiB, including the inputs), or ``OOM``."""
    if device != "cuda":
        return "n/a"
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    try:
        fn()
        torch.cuda.synchronize()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "OOM"
    return f"{torch.cuda.max_memory_allocated() / 2**20:.0f}"


def _inputs(B: int, side: int, H: int, D: int, dtype: torch.dtype, device: str) -> list[torch.Tensor]:
    from recvision.ops.plstm2d import GATE_NAMES, p_mode_gates

    shape = (B, side, side, H)
    q, k, v = (torch.randn(*shape, D, device=device, dtype=dtype) for _ in range(3))
    acts = [torch.randn(shape, device=device) for _ in range(5)]
    gates = p_mode_gates(
        torch.sigmoid(acts[0]),
        torch.tanh(acts[1]),
        torch.sigmoid(acts[2]),
        torch.sigmoid(acts[3]),
        torch.sigmoid(acts[4]),
    )
    return [q, k, v, *(gates[name].to(dtype) for name in GATE_NAMES)]


def _methods(torch_chunk_size: int | None) -> dict[str, Callable[..., torch.Tensor]]:
    from recvision.ops.plstm2d import chunk_plstm2d_torch, parallel_plstm2d
    from recvision.ops.plstm2d.triton_chunk import chunk_plstm2d_triton

    return {
        BASELINE: lambda *a: chunk_plstm2d_triton(*a, chunk_size=8),
        "triton chunk 16": lambda *a: chunk_plstm2d_triton(*a, chunk_size=16),
        "torch chunk": lambda *a: chunk_plstm2d_torch(*a, chunk_size=torch_chunk_size),
        "torch parallel": parallel_plstm2d,
    }


def _cell(t: float | str, base: float | str) -> str:
    if isinstance(t, str):
        return f"{t:>24}"
    if isinstance(base, str):
        return f"{f'{t:.3f} ms':>24}"
    return f"{f'{t:.3f} ms (x{t / base:.2f})':>24}"


def _outputs_and_grads(fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor], do: torch.Tensor) -> list:
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    o = fn(*leaves)
    o.backward(do)
    return [o.detach().float(), *(leaf.grad.float() for leaf in leaves)]


def _check(methods: dict[str, Callable[..., torch.Tensor]], inputs: list[torch.Tensor], do: torch.Tensor) -> list[str]:
    """Relative RMS error against the PyTorch chunk form: of ``o`` and the worst of the twelve gradients."""
    from recvision.ops.utils import relative_rms_error

    ref = _outputs_and_grads(methods["torch chunk"], inputs, do)
    cells = []
    for fn in methods.values():
        try:
            out = _outputs_and_grads(fn, inputs, do)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
            cells.append("OOM" if isinstance(error, torch.cuda.OutOfMemoryError) else "error")
            continue
        errors = [relative_rms_error(r, t) for r, t in zip(ref, out, strict=True)]
        cells.append(f"o {errors[0]:.0e}, grads {max(errors[1:]):.0e}")
    return cells


def run(args: argparse.Namespace) -> int:
    """Check and time every method on every grid size; prints one table."""
    dtype, device = DTYPES[args.dtype], args.device
    B, H, D = args.B, args.H, args.D
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (TRITON_INTERPRET=1, not a measurement)"
    print(f"{name}, dtype {args.dtype}, B={B} H={H} DK=DV={D}")
    methods = _methods(args.chunk_size)
    header = f"{'grid':>9} {'mode':>8} " + " ".join(f"{m:>24}" for m in methods)
    print(header)
    print("-" * len(header))
    for side in args.sides:
        inputs = _inputs(B, side, H, D, dtype, device)
        do = torch.randn_like(inputs[2])
        print(f"{side:>4}x{side:<4} {'check':>8} " + " ".join(f"{c:>24}" for c in _check(methods, inputs, do)))
        peaks: dict[str, str] = {}
        for mode in ("fwd", "fwd+bwd"):
            times: dict[str, float | str] = {}
            for m, fn in methods.items():
                if mode == "fwd":
                    with torch.no_grad():
                        times[m] = _bench(lambda fn=fn, inputs=inputs: fn(*inputs), [], device, args.reps)
                else:
                    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]

                    def step(fn=fn, leaves=leaves, do=do) -> None:
                        fn(*leaves).backward(do)

                    times[m] = _bench(step, leaves, device, args.reps)
                    peaks[m] = _peak_mib(step, device)
                    del leaves
                if device == "cuda":
                    torch.cuda.empty_cache()
            print(f"{side:>4}x{side:<4} {mode:>8} " + " ".join(_cell(times[m], times[BASELINE]) for m in methods))
        print(f"{side:>4}x{side:<4} {'peak MiB':>8} " + " ".join(f"{peaks[m]:>24}" for m in methods))
    print(f"ratios: time / {BASELINE}; > 1 means slower than the chunked Triton kernels at chunk side 8")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--sides", type=int, nargs="+", default=[32, 64, 96, 128])
    parser.add_argument("--B", type=int, default=2)
    parser.add_argument("--H", type=int, default=4)
    parser.add_argument("--D", type=int, default=64, help="head dim DK = DV")
    parser.add_argument("--chunk-size", type=int, default=None, help="chunk side of the PyTorch chunk form")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="run every code path on the CPU under TRITON_INTERPRET=1 on a tiny grid (fp32, sides 6, B=H=1, D=16)",
    )
    args = parser.parse_args(argv)
    args.device, args.reps = "cuda", 1
    if args.dry_run:
        # must be set before triton is imported (the recvision modules are imported lazily below)
        os.environ["TRITON_INTERPRET"] = "1"
        args.device, args.dtype, args.sides, args.B, args.H, args.D = "cpu", "fp32", [6], 1, 1, 16
    elif not torch.cuda.is_available():
        print("bench_plstm_gpu.py needs a CUDA GPU (torch.cuda.is_available() is False); try --dry-run.")
        return 1
    try:
        import triton  # noqa: F401
    except ImportError:
        print("bench_plstm_gpu.py needs the triton package; install it (pip install triton).")
        return 1
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
