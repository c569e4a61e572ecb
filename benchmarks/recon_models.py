"""CPU benchmark of the recon models: per-slice inference time and peak memory.

Each model runs with its reference configuration (CIRIM: 5 cascades x 8 time steps, 64 channels, IndRNN; RIM: 8
steps, GRU, 64 channels; RecurrentVarNet: 8 steps, 128 hidden channels, 4 layers) on one slice of 320 x 320 with
15 coils (``--quick``: 64 x 64 with 4 coils), batch 1, forward only under ``torch.inference_mode()`` with
``torch.set_num_threads(2)``. Every model runs in a FRESH PROCESS (this script with the hidden ``--worker`` flag) so
that its peak memory is its own: the worker builds the model and the input, records its resident set size, resets
the kernel's RSS high-water mark (Linux), runs one warm-up forward (not timed) and ``--repeats`` timed forwards, and
prints the median time and the peak extra memory (``ru_maxrss - RSS before``) as JSON. Output: a markdown table.

Usage (from the repository root)::

    python benchmarks/recon_models.py            # full size (slow on 2 cores)
    python benchmarks/recon_models.py --quick
    python benchmarks/recon_models.py --models rim --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from _measure import maxrss_mib, median_time, reset_peak_rss, status_kib

NUM_THREADS = 2
RESULT_PREFIX = "BENCH_RESULT "
CONFIGS: dict[str, dict[str, Any]] = {
    "cirim": {"num_cascades": 5, "num_steps": 8, "hidden_channels": 64, "cell": "indrnn"},
    "rim": {"num_steps": 8, "hidden_channels": 64, "cell": "gru"},
    "recurrentvarnet": {"num_steps": 8, "hidden_channels": 128, "num_layers": 4},
}
LABELS = {"cirim": "CIRIM 5x8, 64 ch", "rim": "RIM 8 steps, GRU 64", "recurrentvarnet": "RecurrentVarNet 8, 128 ch x 4"}


def worker(name: str, size: int, coils: int, repeats: int) -> dict[str, Any]:
    """Time ``repeats`` forwards of one model on one slice (run in its own process)."""
    import torch

    from recon.models import create_model
    from recon.ops import fft2c, mask_kspace

    torch.set_num_threads(NUM_THREADS)
    torch.manual_seed(0)
    model = create_model(name, **CONFIGS[name]).eval()
    image = torch.randn(1, size, size, dtype=torch.complex64)
    sens = torch.randn(1, coils, size, size, dtype=torch.complex64)
    sens = sens / sens.abs().pow(2).sum(1, keepdim=True).sqrt()
    mask = torch.zeros(1, 1, 1, size)
    mask[..., ::4] = 1
    mask[..., size // 2 - size // 25 : size // 2 + size // 25] = 1
    kspace = mask_kspace(fft2c(image.unsqueeze(1) * sens), mask)
    params = sum(p.numel() for p in model.parameters())
    rss_before = status_kib("VmRSS")
    reset = reset_peak_rss()
    with torch.inference_mode():
        median_s, times = median_time(lambda: model(kspace, mask, sens), repeats)
    peak = maxrss_mib() - rss_before / 1024 if (reset and rss_before is not None) else None
    return {"model": name, "params": params, "median_s": median_s, "times_s": times, "peak_mib": peak}


def run_one(name: str, size: int, coils: int, repeats: int, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", name, "--size", str(size), "--coils", str(coils)]
    cmd += ["--repeats", str(repeats)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"model": name, "error": f"timeout after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
    return {"model": name, "error": tail[0]}


def table(results: list[dict[str, Any]], size: int, coils: int) -> str:
    lines = [
        f"Per-slice inference, {size}x{size}, {coils} coils, batch 1, {NUM_THREADS} threads (median, warm-up excluded)",
        "",
        "| model | params | time / slice (s) | peak extra memory (MiB) |",
        "|---|---:|---:|---:|",
    ]
    for r in results:
        label = LABELS[r["model"]]
        if "error" in r:
            lines.append(f"| {label} | - | {r['error']} | - |")
            continue
        peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        lines.append(f"| {label} | {r['params']:,} | {r['median_s']:.3f} | {peak} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--quick", action="store_true", help="64x64 with 4 coils instead of 320x320 with 15")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--coils", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per model")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = args.size or (64 if args.quick else 320)
    coils = args.coils or (4 if args.quick else 15)
    if args.repeats < 3:
        parser.error("--repeats must be at least 3")
    if args.worker is not None:
        print(RESULT_PREFIX + json.dumps(worker(args.worker, size, coils, args.repeats)), flush=True)
        return
    results = [run_one(name, size, coils, args.repeats, args.timeout) for name in args.models]
    print(table(results, size, coils))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"size": size, "coils": coils, "threads": NUM_THREADS, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
