"""Time the 2-D pLSTM implementations on a CUDA GPU (a script, not a test).

Compares, on square grids of ``side x side`` tokens (default 32, 64, 96, 128), forward and forward + backward
(gradients of q, k, v and all nine gates), and the peak CUDA memory of one forward + backward:

* ``triton_chunk_plstm2d`` (Triton wavefront kernels),
* ``chunk_plstm2d`` (PyTorch chunked wavefront),
* ``parallel_plstm2d`` (PyTorch log-depth build of the full gating tensor, quadratic memory).

Gates are P-mode gates of random activations. Times are medians of ``triton.testing.do_bench`` (warm-up
included); the ratio column is time / Triton. Before timing, the Triton output is checked against the PyTorch
chunked one. Out-of-memory runs are reported as ``OOM``.

Usage::

    python benchmarks/bench_plstm_gpu.py [--dtype bf16|fp16|fp32] [--sides 32 64 96 128] [--B 2] [--H 4] [--D 64]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _bench(fn: Callable[[], object], grad_to_none: list[torch.Tensor] | None) -> float | str:
    """Median milliseconds of ``fn``, or a short reason why it could not run."""
    import triton.testing

    try:
        return triton.testing.do_bench(fn, warmup=10, rep=50, grad_to_none=grad_to_none, return_mode="median")
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "OOM"
    except RuntimeError as error:
        torch.cuda.empty_cache()
        return f"n/a ({str(error).splitlines()[0][:40]})"


def _peak_mib(fn: Callable[[], object]) -> str:
    """Peak CUDA memory allocated during one call of ``fn`` (MiB, including the inputs), or ``OOM``."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    try:
        fn()
        torch.cuda.synchronize()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "OOM"
    return f"{torch.cuda.max_memory_allocated() / 2**20:.0f}"


def _inputs(B: int, side: int, H: int, D: int, dtype: torch.dtype) -> list[torch.Tensor]:
    from recvision.ops.plstm2d import GATE_NAMES, p_mode_gates

    shape = (B, side, side, H)
    q, k, v = (torch.randn(*shape, D, device="cuda", dtype=dtype) for _ in range(3))
    acts = [torch.randn(shape, device="cuda") for _ in range(5)]
    gates = p_mode_gates(
        torch.sigmoid(acts[0]),
        torch.tanh(acts[1]),
        torch.sigmoid(acts[2]),
        torch.sigmoid(acts[3]),
        torch.sigmoid(acts[4]),
    )
    return [q, k, v, *(gates[name].to(dtype) for name in GATE_NAMES)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--sides", type=int, nargs="+", default=[32, 64, 96, 128])
    parser.add_argument("--B", type=int, default=2)
    parser.add_argument("--H", type=int, default=4)
    parser.add_argument("--D", type=int, default=64, help="head dim DK = DV")
    parser.add_argument("--chunk-size", type=int, default=None, help="chunk size of the PyTorch chunked form")
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print("bench_plstm_gpu.py needs a CUDA GPU (torch.cuda.is_available() is False); nothing to time.")
        return 1
    try:
        import triton  # noqa: F401
    except ImportError:
        print("bench_plstm_gpu.py needs the triton package; install it (pip install triton).")
        return 1

    from recvision.ops.plstm2d import chunk_plstm2d, parallel_plstm2d
    from recvision.ops.plstm2d.triton_chunk import triton_chunk_plstm2d
    from recvision.ops.utils import relative_rms_error

    dtype = DTYPES[args.dtype]
    B, H, D = args.B, args.H, args.D
    print(f"{torch.cuda.get_device_name()}, dtype {args.dtype}, B={B} H={H} DK=DV={D}")
    methods: dict[str, Callable[..., torch.Tensor]] = {
        "triton (wavefront)": triton_chunk_plstm2d,
        "chunk (torch)": lambda *a: chunk_plstm2d(*a, chunk_size=args.chunk_size),
        "parallel (torch)": parallel_plstm2d,
    }
    header = f"{'grid':>9} {'mode':>8} " + " ".join(f"{name:>24}" for name in methods)
    print(header)
    print("-" * len(header))
    for side in args.sides:
        inputs = _inputs(B, side, H, D, dtype)
        do = torch.randn_like(inputs[2])
        with torch.no_grad():
            ref = methods["chunk (torch)"](*inputs)
            tri = triton_chunk_plstm2d(*inputs)
        err = relative_rms_error(ref.float(), tri.float())
        print(f"{side:>4}x{side:<4} check: relative RMS error of triton vs chunk (torch): {err:.2e}")
        del ref, tri
        peaks: dict[str, str] = {}
        for mode in ("fwd", "fwd+bwd"):
            times: dict[str, float | str] = {}
            for name, fn in methods.items():
                if mode == "fwd":
                    with torch.no_grad():
                        times[name] = _bench(lambda fn=fn, inputs=inputs: fn(*inputs), None)
                else:
                    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]

                    def step(fn=fn, leaves=leaves, do=do) -> None:
                        fn(*leaves).backward(do)

                    times[name] = _bench(step, leaves)
                    peaks[name] = _peak_mib(step)
                    del leaves
                torch.cuda.empty_cache()
            base = times["triton (wavefront)"]
            cells = []
            for name in methods:
                t = times[name]
                if isinstance(t, str) or isinstance(base, str):
                    cells.append(f"{t if isinstance(t, str) else f'{t:.3f} ms':>24}")
                else:
                    cells.append(f"{f'{t:.3f} ms (x{t / base:.2f})':>24}")
            print(f"{side:>4}x{side:<4} {mode:>8} " + " ".join(cells))
        print(f"{side:>4}x{side:<4} {'peak MiB':>8} " + " ".join(f"{peaks[name]:>24}" for name in methods))
    print("ratios: time / triton; > 1 means slower than the Triton kernels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
