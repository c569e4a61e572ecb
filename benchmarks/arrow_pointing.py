"""Arrow-pointing extrapolation (APE) on the CPU: train at 64x64, test at 64x64 and at 128x128.

A CPU-sized version of the pLSTM paper's protocol (arXiv 2506.11997: train at 192 px, test at 192 and 384 px, Tiny
models, 50 epochs of 100k images, batch 128, AdamW with warm-up and cosine, 5 seeds). Here all four families are
built at the same "femto" size — width 64, depth 4, 2 heads, patch 8, so 8x8 tokens at 64 px and 16x16 at 128 px —
and get the same budget: ``--steps`` AdamW updates (default 2,000; lr ``--lr`` 2e-3, weight decay 0.05, linear
warm-up over the first ``--warmup`` = 5% then cosine, via ``timm.optim`` / ``timm.scheduler``) on freshly generated
images of batch ``--batch-size`` (64). The input is the "ink" image ``1 - image`` (objects 1, background 0) by default;
``--input normalized`` gives the usual ``(image - 0.5) / 0.5``.

Why these settings: the label is an interaction (arrow direction x relative disc position) that no single feature
predicts, so every model first sits on the ``ln 2`` loss plateau. Probes with timm's ViT at these dimensions left it
after about 1,300 updates at lr 2e-3 with ink input, and not within 1,500 at lr 1e-3 or 2,000 at 3e-3; the
per-tenth training-loss curve of every run is printed and saved to show where each model leaves it. 2,000 steps keep
the slowest model (``plstm_femto``, ~0.42 s per step on one thread) within 15 minutes per run.

* ``plstm``: recvision's ``plstm_femto`` (corner pooling, 2 P/D pairs);
* ``vir``: ``vir_femto`` (class token last, chunkwise retention);
* ``lightnet``: ``lightnet_femto`` (MD-TPE + additive recurrence, average pooling);
* ``vit``: timm's ``VisionTransformer`` (``vit_tiny_patch16_224`` with the femto dimensions, class token);
* ``convnext``: an optional reference (``--models ... convnext``), not part of the comparison: timm's
  ``test_convnext`` (a 4-stage ConvNeXt of similar parameter count).

Every model is built with ``dynamic_img_size=True``: at 128 px the learned position embeddings (ViT, ViR, pLSTM) are
resampled bicubically to the 16x16 grid, LightNet has none. The image geometry (disc radius, arrow length, padding) is
the same number of pixels at both sizes, as in the paper, so the test at 128 px shows objects as large as in training
but farther apart on a canvas with 4x the tokens. Data seeds follow the reference protocol (train 43, test 200042,
extrapolation test 200043), shifted by the run seed for training.

Each (model, seed) run is a fresh process with 1 thread; ``--jobs`` runs go in parallel. Usage::

    python benchmarks/arrow_pointing.py --models plstm vir lightnet vit   # the README table: 3 seeds, ~60 min
    # the paper's protocol (Tiny models, 192 -> 384 px, full geometry, 39k updates of 128) on one GPU:
    python benchmarks/arrow_pointing.py --device cuda --jobs 1 --scale 1 --train-size 192 --test-sizes 192 384 \
        --embed-dim 192 --depth 12 --heads 3 --patch-size 16 --steps 39000 --batch-size 128 --lr 1e-4 \
        --seeds 0 1 2 3 4 --timeout 86400
    python benchmarks/arrow_pointing.py --models vir vit --seeds 0 --steps 50 --test-samples 128   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

# train the recvision next to this script (a worktree), not whichever copy is pip-installed: a script's sys.path
# starts with its own folder, and the worker processes are this script again
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

FEMTO = dict(embed_dim=64, depth=4, num_heads=2, patch_size=8)
MODELS = {
    "plstm": ("plstm_femto", {}),  # the op picks one 8x8 chunk at 64 px and 4x4 chunks at 128 px
    "vir": ("vir_femto", {}),
    "lightnet": ("lightnet_femto", {}),
    "vit": ("vit_tiny_patch16_224", {}),
    "convnext": ("test_convnext", None),  # reference row: a CNN of the same parameter count, built as timm has it
}
RESULT_PREFIX = "APE_RESULT "
TRAIN_SEED, TEST_SEED, EXT_SEED = 43, 200042, 200043


def _ink(image):
    return 1.0 - image  # objects 1, background 0: the canvas added at test time is all zeros


def _normalize(image):
    return (image - 0.5) / 0.5  # the inception mean/std of the models' default cfgs


INPUTS = {"ink": _ink, "normalized": _normalize}


def run_one(family: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one model at ``args.train_size`` and test it at every ``args.test_sizes`` (in this process)."""
    import timm
    import torch
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from torch.utils.data import DataLoader

    import recvision  # noqa: F401  (registers the backbones)
    from recvision.data import ArrowPointingConfig, ArrowPointingDataset
    from recvision.finetune import evaluate, train_one_epoch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    geometry = ArrowPointingConfig(scale=args.scale)
    dims = dict(embed_dim=args.embed_dim, depth=args.depth, num_heads=args.heads, patch_size=args.patch_size)
    torch.manual_seed(seed)
    name, extra = MODELS[family]
    if not timm.is_model(name):
        raise SystemExit(f"{family}: timm has no model {name!r} (is recvision up to date?)")
    if extra is None:  # a CNN: any input size as it is
        model = timm.create_model(name, num_classes=2)
    else:
        model = timm.create_model(name, num_classes=2, img_size=args.train_size, dynamic_img_size=True, **dims, **extra)
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    train = ArrowPointingDataset(
        args.steps * args.batch_size, args.train_size, TRAIN_SEED + seed, geometry, INPUTS[args.input]
    )
    loader = DataLoader(train, args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = create_optimizer_v2(model, opt="adamw", lr=args.lr, weight_decay=args.weight_decay)
    warmup = max(1, round(args.steps * args.warmup))
    scheduler, _ = create_scheduler_v2(
        optimizer, sched="cosine", num_epochs=args.steps, warmup_epochs=warmup, warmup_lr=args.lr / 100,
        min_lr=args.lr / 100, step_on_epochs=False, updates_per_epoch=1,
    )  # fmt: skip
    start = time.perf_counter()
    steps = train_one_epoch(model, loader, torch.nn.functional.cross_entropy, optimizer, device=device,
                            scheduler=scheduler, max_steps=args.steps)  # fmt: skip
    train_s = time.perf_counter() - start
    tenth = max(1, len(steps) // 10)
    loss_curve = [  # mean training loss of every tenth of the run: shows when (if) a model leaves the ln 2 plateau
        sum(s["loss"] for s in steps[i : i + tenth]) / len(steps[i : i + tenth]) for i in range(0, len(steps), tenth)
    ]
    result = {
        "family": family, "model": name, "seed": seed, "params": n_params, "steps": len(steps),
        "train_s": train_s, "final_train_loss": loss_curve[-1], "loss_curve": loss_curve, "accuracy": {},
    }  # fmt: skip
    for size in args.test_sizes:
        data_seed = TEST_SEED if size == args.train_size else EXT_SEED
        test = ArrowPointingDataset(args.test_samples, size, data_seed, geometry, INPUTS[args.input])
        start = time.perf_counter()
        metrics = evaluate(model, DataLoader(test, args.eval_batch_size), 2, device=device)
        result["accuracy"][str(size)] = metrics["accuracy"]
        result[f"eval_s_{size}"] = time.perf_counter() - start
    return result


def _worker_main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    result = run_one(args.worker_family, args.worker_seed, args)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def _launch(family: str, seed: int, argv: list[str], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, *argv, "--worker-family", family, "--worker-seed", str(seed)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"family": family, "seed": seed, "error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
            result["wall_s"] = time.perf_counter() - start
            return result
    return {"family": family, "seed": seed, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"}


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * std:.1f}"


def format_table(results: list[dict[str, Any]], families: list[str], sizes: list[int], train_size: int) -> str:
    """Markdown table: accuracy mean ± std over seeds per test size, parameters and training time per run."""
    head = ["model", "params", "seeds"] + [
        f"acc @{s} px" + (" (train size)" if s == train_size else " (extrapolation)") for s in sizes
    ]
    head += ["train min / run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for family in families:
        ok = [r for r in results if r["family"] == family and "error" not in r]
        failed = [r for r in results if r["family"] == family and "error" in r]
        cells = [MODELS[family][0], f"{ok[0]['params'] / 1e3:.0f}k" if ok else "-", str(len(ok))]
        cells += [_mean_std([r["accuracy"][str(s)] for r in ok]) for s in sizes]
        cells.append(f"{statistics.mean(r['train_s'] for r in ok) / 60:.1f}" if ok else "-")
        if failed:
            cells[2] += f" ({len(failed)} failed: {failed[0]['error'][:60]})"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=["plstm", "vir", "lightnet", "vit"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=2000, help="AdamW updates per run")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=float, default=0.05, help="share of the steps with a linear warm-up")
    p.add_argument("--input", choices=list(INPUTS), default="ink", help="ink: 1 - image; normalized: (image - .5) / .5")
    p.add_argument("--train-size", type=int, default=64)
    p.add_argument("--test-sizes", nargs="+", type=int, default=[64, 128])
    p.add_argument("--test-samples", type=int, default=1024, help="images per test set")
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--device", default="cpu", help="torch device of every run, e.g. cuda (one run per GPU: --jobs 1)")
    p.add_argument("--scale", type=float, default=1 / 3, help="task geometry relative to the paper's 192 px images")
    p.add_argument("--embed-dim", type=int, default=FEMTO["embed_dim"], help="width of every model")
    p.add_argument("--depth", type=int, default=FEMTO["depth"], help="blocks of every model")
    p.add_argument("--heads", type=int, default=FEMTO["num_heads"], help="attention / recurrence heads")
    p.add_argument("--patch-size", type=int, default=FEMTO["patch_size"])
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    p.add_argument("--timeout", type=float, default=1500, help="seconds per run before it is reported as failed")
    p.add_argument("--json", default=None, help="also write every run's result here")
    p.add_argument("--worker-family", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-seed", type=int, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.worker_family is not None:
        _worker_main(argv)
        return
    for name in ("steps", "batch_size", "test_samples", "jobs", "threads", "embed_dim", "depth", "heads", "patch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    from recvision.data import ArrowPointingConfig

    try:
        smallest = ArrowPointingConfig(scale=args.scale).min_image_size()
    except ValueError as error:
        raise SystemExit(f"--scale: {error}") from None
    for size in (args.train_size, *args.test_sizes):
        if size < smallest or size % args.patch_size:
            raise SystemExit(
                f"image size {size} px: must be >= {smallest} (the geometry at --scale {args.scale:.3g}) and a "
                f"multiple of --patch-size {args.patch_size}"
            )
    jobs = [(family, seed) for seed in args.seeds for family in args.models]
    print(
        f"APE: {len(args.models)} models x {len(args.seeds)} seeds, {args.steps} steps of {args.batch_size} images at "
        f"{args.train_size} px, test {args.test_samples} images at {args.test_sizes} px; {args.jobs} parallel runs",
        flush=True,
    )
    results = []
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(_launch, family, seed, argv, args.timeout) for family, seed in jobs]
        for future in as_completed(futures):
            r = future.result()
            results.append(r)
            if "error" in r:
                print(f"  {r['family']} seed {r['seed']}: FAILED {r['error']}", flush=True)
            else:
                accs = ", ".join(f"@{s}: {100 * a:.1f}%" for s, a in r["accuracy"].items())
                print(
                    f"  {r['family']} seed {r['seed']}: {accs}; train loss by tenths "
                    f"{' '.join(f'{x:.2f}' for x in r['loss_curve'])}, "
                    f"train {r['train_s']:.0f} s, wall {r['wall_s']:.0f} s",
                    flush=True,
                )
            if args.json:  # rewritten after every run, so an interrupted benchmark keeps what it finished
                Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    print(f"\ntotal wall time {(time.perf_counter() - start) / 60:.1f} min\n")
    print(format_table(results, args.models, args.test_sizes, args.train_size))


if __name__ == "__main__":
    main()
