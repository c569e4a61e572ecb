"""Time the retention implementations on a CUDA GPU (a script, not a test).

Compares, for ``B, H, K = V = 1, 12, 64`` and ``T`` in 1024, 4096, 16384, forward and forward + backward:

* ``chunk_retention`` (Triton kernels),
* ``chunk_retention_torch`` (PyTorch chunkwise),
* ``parallel_retention`` (PyTorch, O(T^2) memory),
* causal ``scaled_dot_product_attention`` restricted to the flash backend (the softmax-attention yardstick).

Times are medians of ``triton.testing.do_bench`` (warm-up included); the ratio column is time / chunk (Triton).
Before timing, the Triton output is checked against the PyTorch chunkwise one.

Usage::

    python benchmarks/bench_retention_gpu.py [--dtype bf16|fp16|fp32] [--T 1024 4096 16384] [--chunk-size 64]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _bench(fn: Callable[[], object], grad_to_none: list[torch.Tensor] | None) -> float | str:
    """Median milliseconds of ``fn``, or a short reason why it could not run."""
    import triton.testing

    try:
        return triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="median")
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "OOM"
    except RuntimeError as error:  # e.g. no flash kernel for this dtype
        torch.cuda.empty_cache()
        return f"n/a ({str(error).splitlines()[0][:40]})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--T", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--B", type=int, default=1)
    parser.add_argument("--H", type=int, default=12)
    parser.add_argument("--K", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=64)
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print("bench_retention_gpu.py needs a CUDA GPU (torch.cuda.is_available() is False); nothing to time.")
        return 1
    try:
        import triton  # noqa: F401
    except ImportError:
        print("bench_retention_gpu.py needs the triton package; install it (pip install triton).")
        return 1

    from torch.nn.attention import SDPBackend, sdpa_kernel

    from recvision.ops.retention import chunk_retention, chunk_retention_torch, parallel_retention, retnet_g_gamma
    from recvision.ops.utils import relative_rms_error

    device = torch.device("cuda")
    dtype = DTYPES[args.dtype]
    B, H, K = args.B, args.H, args.K
    g = retnet_g_gamma(H, device=device)
    print(f"{torch.cuda.get_device_name(device)}, dtype {args.dtype}, B={B} H={H} K=V={K}, chunk {args.chunk_size}")

    methods: dict[str, Callable[..., torch.Tensor]] = {
        "chunk (triton)": lambda q, k, v: chunk_retention(q, k, v, g, chunk_size=args.chunk_size, backend="triton")[0],
        "chunk (torch)": lambda q, k, v: chunk_retention_torch(q, k, v, g, chunk_size=args.chunk_size)[0],
        "parallel (torch)": lambda q, k, v: parallel_retention(q, k, v, g)[0],
    }

    def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # [B, T, H, D] -> [B, H, T, D] views; flash attention only
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            o = torch.nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
            )
        return o.transpose(1, 2)

    methods["sdpa flash (softmax)"] = sdpa

    header = f"{'T':>6} {'mode':>8} " + " ".join(f"{name:>22}" for name in methods)
    print(header)
    print("-" * len(header))
    for T in args.T:
        q, k, v = (torch.randn(B, T, H, K, device=device, dtype=dtype) / math.sqrt(math.sqrt(K)) for _ in range(3))
        do = torch.randn(B, T, H, K, device=device, dtype=dtype)
        with torch.no_grad():
            ref = chunk_retention_torch(q, k, v, g, chunk_size=args.chunk_size)[0]
            tri = methods["chunk (triton)"](q, k, v)
        err = relative_rms_error(ref.float(), tri.float())
        print(f"{T:>6} check: relative RMS error of chunk (triton) vs chunk (torch): {err:.2e}")

        for mode in ("fwd", "fwd+bwd"):
            times: dict[str, float | str] = {}
            for name, fn in methods.items():
                if mode == "fwd":
                    with torch.no_grad():
                        times[name] = _bench(lambda fn=fn, inputs=(q, k, v): fn(*inputs), None)
                else:
                    leaves = [x.detach().clone().requires_grad_(True) for x in (q, k, v)]

                    def step(fn=fn, leaves=leaves, do=do) -> None:
                        fn(*leaves).backward(do)

                    times[name] = _bench(step, leaves)
                torch.cuda.empty_cache()
            base = times["chunk (triton)"]
            cells = []
            for name in methods:
                t = times[name]
                if isinstance(t, str) or isinstance(base, str):
                    cells.append(f"{t if isinstance(t, str) else f'{t:.3f} ms':>22}")
                else:
                    cells.append(f"{f'{t:.3f} ms (x{t / base:.2f})':>22}")
            print(f"{T:>6} {mode:>8} " + " ".join(cells))
    print("ratios: time / chunk (triton); > 1 means slower than the Triton kernels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
