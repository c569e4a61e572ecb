"""CPU benchmark of the 2-D pLSTM op in three forms: the chunked wavefront (``chunk_plstm2d_torch``), the one-chunk
parallel form (``parallel_plstm2d``, the full ``(X Y) x (X Y)`` gating tensor per head) and the native C kernel
(``fused_recurrent_plstm2d``, the recurrence cell by cell, forward only).

Grids of 16x16, 32x32, 64x64 and 128x128 tokens by default; B=1, H=4, DK=DV=32, float32, P-mode gates bounded as
in the paper (sigmoid source/mark/direct/orientation, tanh transition). Every (form, grid, pass) runs in a FRESH
PROCESS (this script with the hidden ``--worker`` flag), so its peak memory is its own. The worker builds the
inputs, records its resident set size, resets the kernel's RSS high-water mark, runs one warm-up call (not timed)
and ``--repeats`` timed calls, and reports:

* the median wall time;
* the median CPU time (``process_time``, summed over threads): waiting for a core is not counted, so on a shared
  machine it is the steadier number;
* ``ru_maxrss - RSS before``, the peak extra memory of the calls.

``--passes fwd`` times the forward under ``torch.inference_mode()``; ``fwd+bwd`` adds the backward of ``o.sum()``
w.r.t. every input. The parallel form is skipped (with the memory it would need) where its gating tensor alone
exceeds ``--max-parallel-gib``. The fused form has no backward, so it is skipped for ``fwd+bwd`` without starting a
worker, and it is skipped with the reason where ``fused_recurrent_available()`` says the kernel cannot be built or
loaded (no C compiler, native kernels turned off).

The table has, per form requested, its wall time, CPU time and peak extra memory and, for every form other than
chunk (when chunk is requested), its speed-up over chunk (chunk time / form time: above 1x the form is faster), its
CPU speed-up and its memory ratio (form peak / chunk peak).

Workers use ``torch.set_num_threads(2)`` (``--threads``). With busy cores, waiting OpenMP threads spin, which
inflates the CPU time of multi-threaded runs; ``--threads 1`` gives the cleanest CPU-time comparison.

Usage (from the repository root)::

    python benchmarks/bench_plstm_op.py                              # all three forms, 16..128, forward only
    python benchmarks/bench_plstm_op.py --sides 64 --passes fwd fwd+bwd --json results/plstm_op.json
    python benchmarks/bench_plstm_op.py --forms chunk fused --sides 32 64 128 256 --threads 1
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _measure import maxrss_mib, reset_peak_rss, status_kib

FORMS = ("chunk", "parallel", "fused")
PASSES = ("fwd", "fwd+bwd")
RESULT_PREFIX = "BENCH_RESULT "


def _next_power_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def parallel_gating_gib(side: int, batch: int, heads: int) -> float:
    """Size in GiB of the parallel form's float32 gating tensor (grid padded to a power of two), a lower bound
    of its memory: the ``q k^T`` scores and the doubling's last merge each need as much again."""
    cells = _next_power_of_two(side) ** 2
    return batch * heads * cells**2 * 4 / 2**30


def _is_oom(exc: BaseException) -> bool:
    """Whether an exception raised by PyTorch means the allocation failed."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def make_inputs(side: int, batch: int, heads: int, head_dim: int, requires_grad: bool) -> dict[str, Any]:
    """``q, k, v [B, side, side, H, D]`` and bounded P-mode gates, as keyword arguments of the ops."""
    import torch

    from recvision.ops.plstm2d import p_mode_gates

    shape = (batch, side, side, heads)
    q, k, v = (torch.randn(*shape, head_dim) for _ in range(3))
    gates = p_mode_gates(
        torch.randn(shape).sigmoid(),
        (5 * (1 + torch.randn(shape))).tanh(),
        torch.randn(shape).sigmoid(),
        torch.randn(shape).sigmoid(),
        torch.randn(shape).sigmoid(),
    )
    inputs = {"q": q, "k": k, "v": v, **gates}
    if requires_grad:
        inputs = {name: t.requires_grad_() for name, t in inputs.items()}
    return inputs


def _timed(fn: Callable[[], object], repeats: int) -> tuple[float, list[float], float, list[float]]:
    """Median wall and CPU (``process_time``, all threads) seconds of ``fn()`` over ``repeats`` calls after one
    untimed warm-up. On a shared machine the CPU time is the less noisy of the two: waiting for a core is not
    counted."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), wall, statistics.median(cpu), cpu


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Measure one (form, side, pass) in this process; returns the JSON-able result."""
    import torch

    from recvision.ops.plstm2d import (
        chunk_plstm2d_torch,
        fused_recurrent_available,
        fused_recurrent_plstm2d,
        parallel_plstm2d,
    )

    torch.set_num_threads(args.threads)
    form, side, mode = args.worker
    side = int(side)
    result: dict[str, Any] = {"form": form, "side": side, "pass": mode}
    if form == "fused":
        # Checked (and the kernel built and loaded) before the RSS baseline, so neither the compiler run nor the
        # shared library counts as memory of the calls; a missing kernel is a property of the machine, not a
        # failure of the op, hence "skipped".
        problem = fused_recurrent_available()
        if problem is not None:
            result.update(status="skipped", error=problem)
            return result
    try:
        inputs = make_inputs(side, args.batch, args.heads, args.head_dim, requires_grad=mode == "fwd+bwd")
        if form == "chunk":

            def op() -> torch.Tensor:
                return chunk_plstm2d_torch(**inputs, chunk_size=args.chunk_size)
        elif form == "parallel":

            def op() -> torch.Tensor:
                return parallel_plstm2d(**inputs)
        else:

            def op() -> torch.Tensor:
                return fused_recurrent_plstm2d(**inputs)

        def call() -> None:
            if mode == "fwd":
                with torch.inference_mode():
                    op()
            else:
                for t in inputs.values():
                    t.grad = None
                op().sum().backward()

        gc.collect()
        rss_kib = status_kib("VmRSS")
        rss_before = maxrss_mib() if rss_kib is None else rss_kib / 1024
        peak_reset = reset_peak_rss()
        median_s, times, cpu_median_s, cpu_times = _timed(call, args.repeats)
        peak = maxrss_mib()
    except Exception as exc:  # reported in the table: one failed configuration must not end the run
        result.update(status="oom" if _is_oom(exc) else "error", error=f"{type(exc).__name__}: {exc}"[:500])
        return result
    result.update(
        status="ok",
        median_s=median_s,
        times_s=times,
        cpu_median_s=cpu_median_s,
        cpu_times_s=cpu_times,
        rss_before_mib=rss_before,
        peak_extra_mib=peak - rss_before,
        peak_reset=peak_reset,
    )
    return result


def spawn_worker(form: str, side: int, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`run_worker` in a fresh Python process and collect its result (or why there is none)."""
    base: dict[str, Any] = {"form": form, "side": side, "pass": mode}
    if form == "fused" and mode != "fwd":
        return {**base, "status": "skipped", "error": "forward only (no backward)"}
    if form == "parallel":
        need = parallel_gating_gib(side, args.batch, args.heads)
        if need > args.max_parallel_gib:
            return {
                **base,
                "status": "skipped",
                "error": f"gating tensor alone needs {need:.1f} GiB (> --max-parallel-gib {args.max_parallel_gib:g}); "
                f"with the scores and the last merge at least {3 * need:.0f} GiB",
            }
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", form, str(side), mode]
    cmd += ["--repeats", str(args.repeats), "--batch", str(args.batch), "--heads", str(args.heads)]
    cmd += ["--head-dim", str(args.head_dim)]
    if args.chunk_size is not None:
        cmd += ["--chunk-size", str(args.chunk_size)]
    cmd += ["--threads", str(args.threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**base, "status": "timeout", "error": f"worker exceeded --timeout {args.timeout:g} s"}
    wall = time.perf_counter() - start
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return {**json.loads(line[len(RESULT_PREFIX) :]), "worker_wall_s": wall}
    if proc.returncode == -signal.SIGKILL:
        return {**base, "status": "oom", "error": "worker killed by SIGKILL (most likely the out-of-memory killer)"}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {**base, "status": "error", "error": f"worker exit code {proc.returncode}: {' | '.join(tail)}"}


def _cell(result: dict[str, Any] | None, key: str, fmt: str) -> str:
    if result is None:
        return "—"
    if result["status"] != "ok":
        return result["status"]
    return format(result[key], fmt)


def _ratio(num: dict[str, Any] | None, den: dict[str, Any] | None, key: str) -> str:
    """``num[key] / den[key]`` as ``"4.2x"``; below 1 with two significant digits (``"0.80x"``, ``"0.012x"``), so
    that a form many times slower than chunk does not print as ``"0.0x"``."""
    if num is None or den is None or num["status"] != "ok" or den["status"] != "ok" or den[key] <= 0:
        return "—"
    value = num[key] / den[key]
    return f"{value:.1f}x" if value >= 1 else f"{value:#.2g}x"


# (metric key, column label, number format, ratio label, whether the ratio is chunk / form rather than form / chunk)
_METRICS = (
    ("median_ms", "(ms)", ".1f", "speed-up", True),
    ("cpu_ms", "CPU (ms)", ".1f", "CPU speed-up", True),
    ("peak_extra_mib", "peak (MiB)", ".0f", "memory ratio", False),
)


def table(results: list[dict[str, Any]], sides: list[int], passes: list[str], forms: list[str]) -> str:
    """Markdown table, one row per (grid, pass): per metric, each form's value, then each non-chunk form's ratio
    to chunk (speed-ups are chunk / form, the memory ratio is form / chunk; no ratios without chunk)."""
    by_key = {(r["form"], r["side"], r["pass"]): r for r in results}
    others = [form for form in forms if form != "chunk"] if "chunk" in forms else []
    header = ["grid", "tokens", "pass"]
    for _, label, _, ratio_label, _ in _METRICS:
        header += [f"{form} {label}" for form in forms]
        header += [f"{form} {ratio_label}" for form in others]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for side in sides:
        for mode in passes:
            cell = {form: by_key.get((form, side, mode)) for form in forms}
            row = [f"{side}x{side}", str(side * side), mode]
            for key, _, fmt, _, chunk_over_form in _METRICS:
                row += [_cell(cell[form], key, fmt) for form in forms]
                for form in others:
                    num, den = (cell["chunk"], cell[form]) if chunk_over_form else (cell[form], cell["chunk"])
                    row.append(_ratio(num, den, key))
            lines.append("| " + " | ".join(row) + " |")
    notes = [r for r in results if r["status"] != "ok"]
    if notes:
        lines.append("")
    for r in notes:
        lines.append(f"- {r['form']} @ {r['side']}x{r['side']} ({r['pass']}): {r['status']}: {r.get('error', '')}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags (``--worker FORM SIDE PASS`` is internal: it is how the script calls itself)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sides", type=int, nargs="+", default=[16, 32, 64, 128], help="grid sides (tokens)")
    parser.add_argument("--forms", nargs="+", choices=FORMS, default=list(FORMS), help="forms to benchmark")
    parser.add_argument("--passes", nargs="+", choices=PASSES, default=["fwd"], help="what is timed")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median; >= 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker")
    parser.add_argument("--batch", type=int, default=1, help="B")
    parser.add_argument("--heads", type=int, default=4, help="H")
    parser.add_argument("--head-dim", type=int, default=32, help="DK = DV")
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="chunk side of chunk_plstm2d_torch (default: op's)"
    )
    parser.add_argument(
        "--max-parallel-gib", type=float, default=2.0, help="skip the parallel form where its gating tensor is larger"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per worker process")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also save all results as JSON")
    parser.add_argument("--worker", nargs=3, default=None, metavar=("FORM", "SIDE", "PASS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error(f"--repeats must be >= 3 (median of at least three runs); got {args.repeats}")
    if min(args.sides) < 1:
        parser.error(f"--sides must be positive; got {args.sides}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        print(RESULT_PREFIX + json.dumps(run_worker(args)), flush=True)
        return
    import torch

    from recvision.ops.plstm2d import DEFAULT_CHUNK_SIZE

    chunk = args.chunk_size or DEFAULT_CHUNK_SIZE
    print(
        f"pLSTM 2-D op, CPU, {args.threads} threads, float32, B={args.batch}, H={args.heads}, "
        f"DK=DV={args.head_dim}, P-mode gates, chunk side {chunk} (clipped to the grid), "
        f"median of {args.repeats} after one warm-up, fresh process per cell; load average at start "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (torch {torch.__version__})",
        flush=True,
    )
    # Canonical order, duplicates dropped: the table's columns do not depend on how --forms was spelled.
    forms = [form for form in FORMS if form in args.forms]
    results = []
    for side in args.sides:
        for mode in args.passes:
            for form in forms:
                r = spawn_worker(form, side, mode, args)
                if r["status"] == "ok":
                    r["median_ms"], r["cpu_ms"] = r["median_s"] * 1e3, r["cpu_median_s"] * 1e3
                results.append(r)
                status = r["status"]
                if status == "ok":
                    status = f"{r['median_ms']:.1f} ms (CPU {r['cpu_ms']:.1f} ms), {r['peak_extra_mib']:.0f} MiB"
                print(f"  {form:8s} {side}x{side} {mode:7s}: {status}", file=sys.stderr, flush=True)
    print()
    print(table(results, args.sides, args.passes, forms))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "num_threads": args.threads,
            "loadavg_at_end": list(os.getloadavg()),
            "chunk_size": chunk,
        }
        payload = {"meta": meta, "args": {**vars(args), "json": str(args.json)}, "results": results}
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1))
        tmp.replace(args.json)  # never leave a half-written results file


if __name__ == "__main__":
    main()
