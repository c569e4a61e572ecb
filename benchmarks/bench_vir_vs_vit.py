"""CPU benchmark: ViR-B/16 (retention, chunkwise and recurrent), LightNet-B/16 and pLSTM-B/16 against ViT-B/16.

Two parts, both in one run:

1. **Models.** For each image size (224, 512, 1024, 2048 px by default), batch 1, forward only under
   ``torch.inference_mode()``: timm's ``vit_base_patch16_224`` and recvision's ``vir_base`` in
   ``retention_mode="chunkwise"`` and ``"recurrent"``, ``lightnet_base`` and ``plstm_base`` (the 2-D pLSTM, its
   default op: Triton on CUDA, the PyTorch chunked wavefront on CPU; opt-in with ``--models``), each built with
   ``img_size`` set to the size. Every (model, size) runs in a FRESH PROCESS (this script with the hidden
   ``--worker`` flag), so that its peak memory is its own. The worker builds the model and the input, records its
   resident set size (RSS), resets the kernel's high-water mark, runs one warm-up forward (not timed) and
   ``--repeats`` timed forwards, and reports the median time and ``ru_maxrss - RSS before`` (the peak extra memory
   of the forward passes) as JSON. A worker that exceeds ``--timeout`` or runs out of memory is reported as such in
   the table.
   ``--passes fwd train`` adds a training step (``train()`` mode, forward, ``logits.sum().backward()``, gradients
   cleared to ``None`` before every step) at the ``--train-sizes`` (224 px by default), also in fresh processes;
   its peak includes the gradient buffers.
2. **Op efficiency.** ``recvision.ops.retention.chunk_retention`` on the CPU (B=1, H=12, K=V=64,
   T=4096 and 16384) achieves ``2*B*H*T*(C*K + C*V + 2*K*V)`` FLOP per forward (C = chunk size: intra-chunk
   ``q k^T``, intra-chunk ``scores @ v``, the chunk state update ``k^T v`` and the inter-chunk ``q @ S``). Its FLOP/s
   is divided by the FLOP/s of a plain fp32 ``torch.matmul`` (2048 x 2048 @ 2048 x 2048) on the same machine.

``--precision bf16`` runs every model forward (and training step) under ``torch.autocast("cpu",
dtype=torch.bfloat16)``: the linear layers and the ops' products in bfloat16, states and sums in float32 (the
weights stay float32). The op-efficiency part is always float32.

All measurements use ``torch.set_num_threads(2)`` (``--threads``). Usage (from the repository root)::

    python benchmarks/bench_vir_vs_vit.py                                  # everything (about 20 minutes on 2 cores)
    python benchmarks/bench_vir_vs_vit.py --sizes 224 --models vit --skip-op
    python benchmarks/bench_vir_vs_vit.py --sizes 224 512 --models vit vir-chunk plstm --skip-op
    python benchmarks/bench_vir_vs_vit.py --skip-models --chunk-size 64 128 --json op.json
    python benchmarks/bench_vir_vs_vit.py --sizes 224 1024 --models vit plstm --passes fwd train --skip-op
    python benchmarks/bench_vir_vs_vit.py --sizes 1024 2048 --models vit vir-chunk --precision bf16 --skip-op
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
from pathlib import Path
from typing import Any

from _measure import maxrss_mib, median_time, reset_peak_rss, status_kib

# benchmark the recvision next to this script (a worktree), not whichever copy happens to be pip-installed: a
# script's sys.path starts with its own folder, not the working directory
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

NUM_THREADS = 2
MODELS = ("vit", "vir-chunk", "vir-rec", "lightnet", "plstm")
# pLSTM is opt-in (``--models ... plstm``): its CPU forward at 1024-2048 px takes far longer than the others
DEFAULT_MODELS = ("vit", "vir-chunk", "vir-rec", "lightnet")
MODEL_LABELS = {"vit": "ViT", "vir-chunk": "ViR-chunk", "vir-rec": "ViR-rec", "lightnet": "LightNet", "plstm": "pLSTM"}
VIR_MODES = {"vir-chunk": "chunkwise", "vir-rec": "recurrent"}
RESULT_PREFIX = "BENCH_RESULT "
PASSES = ("fwd", "train")
PASS_LABELS = {"fwd": "forward (inference mode)", "train": "training step (forward + backward)"}
PRECISIONS = ("fp32", "bf16")


# ----------------------------------------------------------------------------------------------------------------
# Memory and timing helpers


def _is_oom(exc: BaseException) -> bool:
    """Whether an exception raised by PyTorch means the allocation failed."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


# ----------------------------------------------------------------------------------------------------------------
# Model construction


def _require_vir() -> None:
    """Exit with a clear message unless ``import recvision`` registers ``vir_base`` with timm."""
    import timm

    try:
        import recvision  # noqa: F401  (importing registers the backbones with timm)
    except ImportError as exc:
        raise SystemExit(
            f"cannot import recvision ({exc}); install the repository (pip install -e .) to benchmark ViR"
        ) from exc
    if "vir_base" not in timm.list_models("vir_*"):
        raise SystemExit(
            "timm has no model 'vir_base' after `import recvision`: the ViR backbone is not registered yet "
            "(recvision/backbones/vir.py); run with --models vit to benchmark ViT only"
        )


def build_model(name: str, size: int, vir_chunk_size: int | None = None) -> Any:
    """Build one benchmarked model, in eval mode, for ``size`` x ``size`` inputs.

    Args:
        name: ``"vit"``, ``"vir-chunk"``, ``"vir-rec"``, ``"lightnet"`` or ``"plstm"``.
        size: image side in pixels; the position embedding is made for this size (``img_size=size``).
        vir_chunk_size: ``chunk_size`` of the ViR model (``None`` keeps the model's default).
    """
    import timm

    if name == "vit":
        model = timm.create_model("vit_base_patch16_224", pretrained=False, img_size=size)
    elif name in VIR_MODES:
        _require_vir()
        kwargs: dict[str, Any] = {"retention_mode": VIR_MODES[name], "img_size": size}
        if vir_chunk_size is not None:
            kwargs["chunk_size"] = vir_chunk_size
        model = timm.create_model("vir_base", pretrained=False, **kwargs)
    elif name == "lightnet":
        import recvision  # noqa: F401  (registers lightnet_base)

        model = timm.create_model("lightnet_base", pretrained=False, img_size=size)
    elif name == "plstm":
        import recvision  # noqa: F401  (registers plstm_base)

        model = timm.create_model("plstm_base", pretrained=False, img_size=size)
    else:
        raise ValueError(f"model must be one of {MODELS}; got {name!r}")
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------
# Worker: one model at one size, in its own process


def run_worker(
    name: str, size: int, repeats: int, vir_chunk_size: int | None, pass_: str = "fwd", precision: str = "fp32"
) -> dict[str, Any]:
    """Measure one (model, size, pass) in this process; returns the JSON-able result.

    ``pass_`` is ``"fwd"`` (forward under ``torch.inference_mode()``) or ``"train"`` (forward and backward of the
    summed logits in train mode, gradients set to ``None`` first). ``precision="bf16"`` runs the forward under
    CPU autocast to bfloat16.
    """
    import torch

    torch.set_num_threads(NUM_THREADS)
    result: dict[str, Any] = {"model": name, "size": size, "tokens": (size // 16) ** 2, "pass": pass_}
    result["precision"] = precision
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    try:
        model = build_model(name, size, vir_chunk_size)
        if pass_ == "train":
            model.train()
        x = torch.randn(1, 3, size, size)
        gc.collect()
        rss_before_kib = status_kib("VmRSS")
        if rss_before_kib is None:  # no procfs: the peak since start is the best available lower bound
            rss_before_mib = maxrss_mib()
        else:
            rss_before_mib = rss_before_kib / 1024
        peak_reset = reset_peak_rss()

        def forward() -> None:
            with torch.inference_mode(), autocast:
                model(x)

        def train_step() -> None:
            model.zero_grad(set_to_none=True)
            with autocast:
                logits = model(x)
            logits.float().sum().backward()

        median_s, times = median_time(train_step if pass_ == "train" else forward, repeats)
        peak_mib = maxrss_mib()
    except SystemExit as exc:
        result.update(status="error", error=str(exc))
        return result
    except Exception as exc:  # reported in the table, not raised: one failed configuration must not end the run
        result.update(status="oom" if _is_oom(exc) else "error", error=f"{type(exc).__name__}: {exc}"[:500])
        return result
    result.update(
        status="ok",
        median_s=median_s,
        times_s=times,
        rss_before_mib=rss_before_mib,
        peak_rss_mib=peak_mib,
        peak_extra_mib=peak_mib - rss_before_mib,
        peak_reset=peak_reset,
        num_params=sum(p.numel() for p in model.parameters()),
    )
    return result


def spawn_worker(
    name: str,
    size: int,
    repeats: int,
    timeout: float,
    vir_chunk_size: int | None,
    pass_: str = "fwd",
    precision: str = "fp32",
) -> dict[str, Any]:
    """Run :func:`run_worker` in a fresh Python process and collect its result (or why there is none)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, str(size), "--repeats", str(repeats)]
    cmd += ["--threads", str(NUM_THREADS), "--worker-pass", pass_, "--precision", precision]
    if vir_chunk_size is not None:
        cmd += ["--vir-chunk-size", str(vir_chunk_size)]
    env = dict(os.environ, OMP_NUM_THREADS=str(NUM_THREADS), MKL_NUM_THREADS=str(NUM_THREADS))
    base: dict[str, Any] = {"model": name, "size": size, "tokens": (size // 16) ** 2, "pass": pass_}
    base["precision"] = precision
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**base, "status": "timeout", "error": f"worker exceeded --timeout {timeout:g} s"}
    wall = time.perf_counter() - start
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return {**json.loads(line[len(RESULT_PREFIX) :]), "worker_wall_s": wall, "loadavg_before": load_before}
    if proc.returncode == -signal.SIGKILL:
        return {**base, "status": "oom", "error": "worker killed by SIGKILL (most likely the out-of-memory killer)"}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {**base, "status": "error", "error": f"worker exit code {proc.returncode}: {' | '.join(tail)}"}


# ----------------------------------------------------------------------------------------------------------------
# Op efficiency: chunk_retention FLOP/s relative to matmul FLOP/s


def matmul_flops_per_s(n: int = 2048, repeats: int = 5) -> dict[str, Any]:
    """FLOP/s of an fp32 ``n x n @ n x n`` ``torch.matmul`` (median of ``repeats`` after one warm-up)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    median_s, times = median_time(lambda: torch.matmul(a, b), repeats)
    flops = 2.0 * n**3
    return {"n": n, "flop": flops, "median_s": median_s, "times_s": times, "flop_per_s": flops / median_s}


def chunk_retention_flop(B: int, H: int, T: int, K: int, V: int, C: int) -> float:
    """FLOP of one chunkwise-retention forward: intra ``q k^T`` and ``scores @ v``, state update and ``q @ S``."""
    return 2.0 * B * H * T * (C * K + C * V + 2 * K * V)


def op_flops_per_s(T: int, chunk_size: int, repeats: int, B: int = 1, H: int = 12, K: int = 64, V: int = 64) -> dict:
    """Achieved FLOP/s of ``chunk_retention`` (fp32, CPU, forward under ``inference_mode``)."""
    import torch

    from recvision.ops.retention import chunk_retention

    q, k, v = torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V)

    def forward() -> None:
        with torch.inference_mode():
            chunk_retention(q, k, v, chunk_size=chunk_size)

    median_s, times = median_time(forward, repeats)
    flops = chunk_retention_flop(B, H, T, K, V, chunk_size)
    return {
        "B": B,
        "H": H,
        "T": T,
        "K": K,
        "V": V,
        "chunk_size": chunk_size,
        "flop": flops,
        "median_s": median_s,
        "times_s": times,
        "flop_per_s": flops / median_s,
    }


def additive_flops_per_s(T: int, repeats: int, B: int = 1, H: int = 12, K: int = 128, V: int = 64) -> dict:
    """Achieved FLOP/s of LightNet's non-causal additive op (``chunk_additive(causal=False)``, fp32, CPU).

    FLOP: ``2*B*H*T*K*V`` for the softmax-weighted state ``sum_t w_t k_t^T v_t`` plus as much for ``q @ S``
    (K = 128: MD-LRPE doubles LightNet's 64-wide keys).
    """
    import torch

    from recvision.ops.additive import chunk_additive

    q, k, g, v = torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V)

    def forward() -> None:
        with torch.inference_mode():
            chunk_additive(q, k, v, g, causal=False)

    median_s, times = median_time(forward, repeats)
    flops = 4.0 * B * H * T * K * V
    return {
        "B": B,
        "H": H,
        "T": T,
        "K": K,
        "V": V,
        "flop": flops,
        "median_s": median_s,
        "times_s": times,
        "flop_per_s": flops / median_s,
    }


def run_op_part(seq_lens: list[int], chunk_sizes: list[int], repeats: int) -> dict[str, Any]:
    """Measure ``chunk_retention`` FLOP/s for every (T, chunk size) and its ratio to matmul FLOP/s.

    The matmul reference is measured again right before every op measurement and each ratio uses its own
    reference, so that a change in machine load during the run does not bias one configuration against another.
    """
    import torch

    torch.set_num_threads(NUM_THREADS)
    references, runs = [], []
    for chunk_size in chunk_sizes:
        for T in seq_lens:
            reference = matmul_flops_per_s(repeats=max(5, repeats))
            run = op_flops_per_s(T, chunk_size, repeats)
            run["matmul_flop_per_s"] = reference["flop_per_s"]
            run["ratio_to_matmul"] = run["flop_per_s"] / reference["flop_per_s"]
            references.append(reference)
            runs.append(run)
    additive = []
    for T in seq_lens:
        reference = matmul_flops_per_s(repeats=max(5, repeats))
        run = additive_flops_per_s(T, repeats)
        run["matmul_flop_per_s"] = reference["flop_per_s"]
        run["ratio_to_matmul"] = run["flop_per_s"] / reference["flop_per_s"]
        references.append(reference)
        additive.append(run)
    matmul = {**references[0], "flop_per_s": statistics.median(r["flop_per_s"] for r in references)}
    matmul["median_s"] = matmul["flop"] / matmul["flop_per_s"]
    return {"matmul": matmul, "matmul_runs": references, "chunk_retention": runs, "global_additive": additive}


# ----------------------------------------------------------------------------------------------------------------
# Report


def _cell(result: dict[str, Any] | None, key: str, fmt: str) -> str:
    """A table cell: the formatted value, or the reason there is none."""
    if result is None:
        return "—"
    if result["status"] != "ok":
        return {"timeout": "timeout", "oom": "OOM"}.get(result["status"], "error")
    return format(result[key], fmt)


def _ratio(num: dict[str, Any] | None, den: dict[str, Any] | None, key: str) -> str:
    """``num[key] / den[key]`` as ``1.23x``, or ``—`` when either run has no value."""
    if num is None or den is None or num["status"] != "ok" or den["status"] != "ok" or den[key] == 0:
        return "—"
    return f"{num[key] / den[key]:.2f}x"


def precision_table(results: list[dict[str, Any]], sizes: list[int], pass_: str = "fwd") -> str:
    """Markdown table of bf16 against fp32 per model and size: throughput ``t_fp32 / t_bf16`` and memory ratio."""
    by_key = {(r["model"], r["size"], r.get("precision", "fp32")): r for r in results if r.get("pass") == pass_}
    models = [m for m in MODELS if any(key[0] == m for key in by_key)]
    header = ["size (px)"] + [f"throughput {MODEL_LABELS[m]} bf16/fp32" for m in models]
    header += [f"memory {MODEL_LABELS[m]} bf16/fp32" for m in models]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for size in sizes:
        pairs = [(by_key.get((m, size, "bf16")), by_key.get((m, size, "fp32"))) for m in models]
        row = [str(size)] + [_ratio(fp32, bf16, "median_s") for bf16, fp32 in pairs]
        row += [_ratio(bf16, fp32, "peak_extra_mib") for bf16, fp32 in pairs]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def model_table(results: list[dict[str, Any]], sizes: list[int], pass_: str = "fwd", precision: str = "fp32") -> str:
    """Markdown table of one pass: times (s), peak extra memory (MiB) and model/ViT ratios, one row per size."""
    results = [r for r in results if r.get("pass", "fwd") == pass_ and r.get("precision", "fp32") == precision]
    sizes = [s for s in sizes if any(r["size"] == s for r in results)]
    by_key = {(r["model"], r["size"]): r for r in results}
    models = [m for m in MODELS if any(r["model"] == m for r in results)]
    others = [m for m in models if m != "vit"]
    header = ["size (px)", "tokens"]
    header += [f"{MODEL_LABELS[m]} (s)" for m in models] + [f"{MODEL_LABELS[m]} peak (MiB)" for m in models]
    header += [f"throughput {MODEL_LABELS[m]}/ViT" for m in others] + [f"memory {MODEL_LABELS[m]}/ViT" for m in others]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for size in sizes:
        runs = {m: by_key.get((m, size)) for m in models}
        vit = runs.get("vit")
        row = [str(size), str((size // 16) ** 2)]
        row += [_cell(runs[m], "median_s", ".3f") for m in models]
        row += [_cell(runs[m], "peak_extra_mib", ".0f") for m in models]
        # throughput ratio = t_vit / t_model; memory ratio = peak_model / peak_vit
        row += [_ratio(vit, runs[m], "median_s") for m in others]
        row += [_ratio(runs[m], vit, "peak_extra_mib") for m in others]
        lines.append("| " + " | ".join(row) + " |")
    failures = [r for r in results if r["status"] != "ok"]
    for r in failures:
        lines.append(f"\n- {MODEL_LABELS[r['model']]} @ {r['size']} px: {r['status']}: {r.get('error', '')}")
    return "\n".join(lines)


def op_table(op: dict[str, Any]) -> str:
    """Markdown table of the chunkwise op's FLOP/s and its ratio to matmul FLOP/s."""
    mm = op["matmul"]
    lines = [
        f"fp32 matmul {mm['n']}x{mm['n']} @ {mm['n']}x{mm['n']}: {mm['flop_per_s'] / 1e9:.1f} GFLOP/s "
        "(median over the measurements; each ratio below uses the matmul measured just before it)",
        "",
        "| T | chunk size | median (ms) | GFLOP | GFLOP/s | matmul GFLOP/s | ratio to matmul |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in op["chunk_retention"]:
        lines.append(
            f"| {run['T']} | {run['chunk_size']} | {run['median_s'] * 1e3:.1f} | {run['flop'] / 1e9:.2f} | "
            f"{run['flop_per_s'] / 1e9:.1f} | {run['matmul_flop_per_s'] / 1e9:.1f} | {run['ratio_to_matmul']:.3f} |"
        )
    lines += [
        "",
        "LightNet's non-causal additive op (`chunk_additive(causal=False)`, H=12, K=128, V=64):",
        "",
        "| T | median (ms) | GFLOP | GFLOP/s | matmul GFLOP/s | ratio to matmul |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for run in op.get("global_additive", []):
        lines.append(
            f"| {run['T']} | {run['median_s'] * 1e3:.1f} | {run['flop'] / 1e9:.2f} | {run['flop_per_s'] / 1e9:.1f} | "
            f"{run['matmul_flop_per_s'] / 1e9:.1f} | {run['ratio_to_matmul']:.3f} |"
        )
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    """Versions and settings that the numbers depend on."""
    import timm
    import torch

    import recvision

    return {
        "recvision": os.path.dirname(recvision.__file__),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "num_threads": NUM_THREADS,
        "timm_fused_attn": bool(timm.layers.use_fused_attn()),
        "loadavg_at_start": list(os.getloadavg()),
    }


# ----------------------------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags (``--worker`` is internal: it is how the script calls itself)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512, 1024, 2048], help="image sides in px")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median; >= 3)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(DEFAULT_MODELS), help="models to benchmark")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per worker process")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also save all results as JSON")
    parser.add_argument(
        "--chunk-size", type=int, nargs="+", default=[64], help="chunk size(s) of the op FLOP/s measurement"
    )
    parser.add_argument(
        "--seq-lens", type=int, nargs="+", default=[4096, 16384], help="sequence lengths T of the op measurement"
    )
    parser.add_argument("--vir-chunk-size", type=int, default=None, help="chunk_size of the ViR models")
    parser.add_argument("--threads", type=int, default=NUM_THREADS, help="torch / OpenMP threads of every measurement")
    parser.add_argument(
        "--passes", nargs="+", choices=PASSES, default=["fwd"], help="forward and/or training step (fwd+bwd)"
    )
    parser.add_argument(
        "--train-sizes", type=int, nargs="+", default=[224], help="image sides of the training-step pass"
    )
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=PRECISIONS,
        default=["fp32"],
        help="fp32 and/or bf16 (CPU autocast) for the models; with both, each (model, size) runs in both",
    )
    parser.add_argument("--skip-models", action="store_true", help="only measure the op FLOP/s ratio")
    parser.add_argument("--skip-op", action="store_true", help="only benchmark the models")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "SIZE"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-pass", choices=PASSES, default="fwd", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1; got {args.threads}")
    if args.repeats < 3:
        parser.error(f"--repeats must be >= 3 (the median of at least three runs); got {args.repeats}")
    if any(s < 16 or s % 16 for s in args.sizes + args.train_sizes):
        parser.error(f"--sizes must be positive multiples of the patch size 16; got {args.sizes}")
    if any(c < 1 for c in args.chunk_size) or any(t < 1 for t in args.seq_lens):
        parser.error("--chunk-size and --seq-lens must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or, with ``--worker``, one measurement) and print the report."""
    global NUM_THREADS
    args = parse_args(argv)
    NUM_THREADS = args.threads
    if args.worker is not None:
        name, size = args.worker
        result = run_worker(name, int(size), args.repeats, args.vir_chunk_size, args.worker_pass, args.precision[0])
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return

    if not args.skip_models and any(m in VIR_MODES for m in args.models):
        _require_vir()  # fail before hours of ViT runs, not after
    report: dict[str, Any] = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()}}
    machine = report["machine"]
    print(f"torch {machine['torch']}, timm {machine['timm']}, {NUM_THREADS} threads")
    print(f"recvision from {machine['recvision']}\n")
    load = os.getloadavg()[0]
    if load > 0.5:
        print(
            f"warning: 1-minute load average is {load:.2f}; other processes on the machine will distort the timings",
            file=sys.stderr,
        )

    if not args.skip_models:
        results = []
        jobs = [(p, size) for p in args.passes for size in (args.train_sizes if p == "train" else args.sizes)]
        for pass_, size in jobs:
            for name in MODELS:
                if name not in args.models:
                    continue
                # the precisions of one (model, size) run next to each other, so that their ratio sees one load
                for precision in args.precision:
                    label = f"{MODEL_LABELS[name]} @ {size} px, {pass_}, {precision}"
                    print(f"running {label} ...", file=sys.stderr, flush=True)
                    result = spawn_worker(name, size, args.repeats, args.timeout, args.vir_chunk_size, pass_, precision)
                    print(f"  -> {result['status']} {result.get('median_s', '')}", file=sys.stderr, flush=True)
                    results.append(result)
        report["models"] = results
        for pass_ in args.passes:
            sizes = sorted({s for p, s in jobs if p == pass_})
            for precision in args.precision:
                print(
                    f"## ViR-B/16, LightNet-B/16 and pLSTM-B/16 vs ViT-B/16, batch 1, {PASS_LABELS[pass_]}, "
                    f"{precision}, median of {args.repeats}\n"
                )
                print(model_table(results, sizes, pass_, precision))
                print()
            if len(args.precision) == 2:
                print(f"## bf16 vs fp32, {PASS_LABELS[pass_]}: throughput and peak memory ratios\n")
                print(precision_table(results, sizes, pass_))
                print()

    if not args.skip_op:
        print("running chunk_retention FLOP/s ...", file=sys.stderr, flush=True)
        report["op"] = run_op_part(args.seq_lens, args.chunk_size, args.repeats)
        print("## chunk_retention (CPU, fp32, B=1, H=12, K=V=64) FLOP/s vs matmul FLOP/s\n")
        print(op_table(report["op"]))
        print()

    report["machine"]["loadavg_at_end"] = list(os.getloadavg())
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"results saved to {args.json}")


if __name__ == "__main__":
    main()
