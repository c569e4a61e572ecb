"""Arrow-pointing extrapolation (APE) on the CPU: train at 64x64, test at 64x64 and at 128x128.

A CPU-sized version of the pLSTM paper's protocol (arXiv 2506.11997: train at 192 px, test at 192 and 384 px, Tiny
models, 50 epochs of a fixed set of 100k images, batch 128, AdamW with warm-up and cosine, 5 seeds). Here all four
families are built at the same "femto" size (width 64, depth 4, 2 heads) and get the same budget: ``--steps`` AdamW
updates (default 3,000 of ``--batch-size`` 32 fresh images; lr ``--lr`` 1e-3, weight decay 0.05 except on 1-D
parameters and biases, the gradient's norm clipped to ``--clip-grad`` 1 as in the reference's optimizer config,
linear warm-up over the first ``--warmup`` = 5 % then cosine to lr / 100, via ``timm.optim`` / ``timm.scheduler``).
The input is the "ink" image ``1 - image`` (objects 1, background 0) by default; ``--input normalized`` gives the
usual ``(image - 0.5) / 0.5``. Every ``--eval-every`` steps the run measures the accuracy on ``--val-samples``
held-out images: the learning curve, printed, saved in the JSON and as CSV.

The default protocol differs from a straight 1/3-scale copy of the paper in three stated ways (README, "APE"):

* ``--arrow-scale 2``: arrows twice the reference's length and stroke width (10-20 px long, 1.3-2.7 px strokes, the
  head's strokes 4-8 px) on the 1/3-scale canvas and discs. At 1/3 scale the head is 2-4 px of sub-pixel strokes,
  and even a plain CNN that learns the task at 2x arrows did not leave the ``ln 2`` plateau in 800 updates at 1x.
* ``--stem-layers 3 --stem-norm batch``: the same convolutional stem in front of every model (three 3x3 stride-2
  convolutions, each followed by BatchNorm and GELU, ``--stem-width`` 32 channels), then the model's patch embedding
  with patch ``--patch-size / 8`` = 1 on the stem's map, so every model still sees 8x8 tokens at 64 px and 16x16 at
  128 px. The stem is local and shift-equivariant (15 px receptive field): it reads the arrow's direction, the
  models do the long-range part. Without the norm the image is 2-5 % of the embedded tokens at initialisation (the
  rest is the convolutions' biases), and the models spend most of the budget amplifying it.
* ``--plstm-pool avg``: pLSTM's head averages all tokens. The paper's head (``--plstm-pool corners``, the four
  corner tokens concatenated) depends only on the four corner cells at initialisation
  (``benchmarks/arrow_pointing_analysis.py sensitivity``), which never hold the arrow or the disc, so it has no
  gradient from them until the recurrence has learnt to carry them there; it stayed at chance in this budget.

``--steps 2000`` is protocol v2 (ViR ended at 86-90 %, its curves still rising; ``results/ape_cpu_v2.json``);
``--steps 2000 --stem-norm none --clip-grad 0 --plstm-pool corners`` the first protocol with the stem (v1: ViR and
LightNet ~80 %, ViT and pLSTM 57-64 %, ``results/ape_cpu_v1.json``); ``--arrow-scale 1 --stem-layers 0 --batch-size 64
--lr 2e-3 --clip-grad 0 --plstm-pool corners`` the one before it (every model at chance after 2,000 updates).
``--train-samples N`` trains on a fixed set of N images (seed 43 + run seed) as the paper does; ``--pos-embed-std``
re-initialises the learned absolute position embeddings (ViT, ViR, pLSTM) for probes.

* ``plstm``: recvision's ``plstm_femto`` (2 P/D pairs; the head: ``--plstm-pool``);
* ``vir``: ``vir_femto`` (class token last, chunkwise retention);
* ``lightnet``: ``lightnet_femto`` (MD-TPE + additive recurrence, average pooling);
* ``vit``: timm's ``VisionTransformer`` (``vit_tiny_patch16_224`` with the femto dimensions; the head:
  ``--vit-pool``, the class token by default);
* ``convnext``: an optional reference (``--models ... convnext``), not part of the comparison: timm's
  ``test_convnext`` (a 4-stage ConvNeXt of similar parameter count, no stem).

Every model is built with ``dynamic_img_size=True``: at 128 px the learned position embeddings (ViT, ViR, pLSTM) are
resampled bicubically to the 16x16 grid, LightNet has none. The image geometry (disc radius, arrow, padding) is the
same number of pixels at both sizes, as in the paper, so the test at 128 px shows objects as large as in training
but farther apart on a canvas with 4x the tokens. Data seeds follow the reference protocol (train 43, test 200042,
extrapolation test 200043; validation 200041), shifted by the run seed for training.

Each (model, seed) run is a fresh process with 1 thread; ``--jobs`` runs go in parallel. With ``--json`` the results
are written after every run and a second call with the same protocol skips the runs already there, so an interrupted
benchmark resumes where it stopped (per-run progress in ``<json stem>.runs/``, curves in ``<json stem>.curves.csv``).
Usage::

    python benchmarks/arrow_pointing.py --json results/ape_cpu.json --seeds 0 1 2 3 4   # the README table
    # the paper's protocol (Tiny models, 192 -> 384 px, full geometry, 39k updates of 128) on one GPU:
    python benchmarks/arrow_pointing.py --device cuda --jobs 1 --scale 1 --arrow-scale 1 --stem-layers 0 \
        --plstm-pool corners --train-size 192 --test-sizes 192 384 --embed-dim 192 --depth 12 --heads 3 \
        --patch-size 16 --steps 39000 --batch-size 128 --lr 1e-4 --train-samples 100000 --eval-every 1000 \
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
    "plstm": ("plstm_femto", {}),  # the head is --plstm-pool's
    "vir": ("vir_femto", {}),
    "lightnet": ("lightnet_femto", {}),
    "vit": ("vit_tiny_patch16_224", {}),
    "convnext": ("test_convnext", None),  # reference row: a CNN of the same parameter count, built as timm has it
}
RESULT_PREFIX = "APE_RESULT "
TRAIN_SEED, VAL_SEED, TEST_SEED, EXT_SEED = 43, 200041, 200042, 200043


def _ink(image):
    return 1.0 - image  # objects 1, background 0: the canvas added at test time is all zeros


def _normalize(image):
    return (image - 0.5) / 0.5  # the inception mean/std of the models' default cfgs


INPUTS = {"ink": _ink, "normalized": _normalize}


class ConvStem:
    """Factory for the optional convolutional stem every model gets alike (``--stem-layers``, ``--stem-norm``)."""

    @staticmethod
    def build(layers: int, width: int, norm: str = "none"):
        import torch.nn as nn
        from timm.layers import LayerNorm2d

        norms = {"none": None, "batch": nn.BatchNorm2d, "layer": LayerNorm2d}
        norm_layer = norms[norm]
        convs: list[nn.Module] = []
        channels = 3
        for _ in range(layers):  # 3x3 convolutions of stride 2 (+ norm), then GELU: a local, shift-equivariant map
            convs.append(nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=norm_layer is None))
            if norm_layer is not None:
                convs.append(norm_layer(width))
            convs.append(nn.GELU())
            channels = width
        return nn.Sequential(*convs)


def task_geometry(args: argparse.Namespace):
    """The task geometry: the reference one at ``--scale``, arrows ``--arrow-scale`` times larger."""
    from recvision.data import ArrowPointingConfig

    k = args.arrow_scale
    return ArrowPointingConfig(
        arrow_length_min=15.0 * k, arrow_length_max=30.0 * k, arrow_width_min=2.0 * k, arrow_width_max=4.0 * k,
        scale=args.scale,
    )  # fmt: skip


def build_model(family: str, args: argparse.Namespace):
    """The model of ``family`` at the benchmark's dimensions, behind the optional conv stem."""
    import timm
    import torch
    import torch.nn as nn

    import recvision  # noqa: F401  (registers the backbones)

    name, extra = MODELS[family]
    pool = {"plstm": args.plstm_pool, "vit": args.vit_pool}.get(family)
    if pool is not None:
        extra = {**extra, "global_pool": pool}
    if not timm.is_model(name):
        raise SystemExit(f"{family}: timm has no model {name!r} (is recvision up to date?)")
    if extra is None:  # a CNN: any input size as it is
        return timm.create_model(name, num_classes=2)
    factor = 2**args.stem_layers
    dims = dict(embed_dim=args.embed_dim, depth=args.depth, num_heads=args.heads, patch_size=args.patch_size // factor)
    in_chans = args.stem_width if args.stem_layers else 3
    model = timm.create_model(
        name, num_classes=2, img_size=args.train_size // factor, dynamic_img_size=True, in_chans=in_chans,
        **dims, **extra,
    )  # fmt: skip
    pos_embed = getattr(model, "pos_embed", None)
    if args.pos_embed_std and isinstance(pos_embed, nn.Parameter):  # LightNet has none: relative phases only
        with torch.no_grad():
            pos_embed.normal_(0.0, args.pos_embed_std)
    if args.stem_layers:
        model = nn.Sequential(ConvStem.build(args.stem_layers, args.stem_width, args.stem_norm), model)
    return model


def _render(dataset, indices) -> tuple[Any, Any]:
    """Images ``[N, 1, H, W]`` uint8 (255 = white) and labels ``[N]`` of ``dataset`` at ``indices``."""
    import numpy as np
    import torch

    from recvision.data import render

    samples = [dataset.sample(i) for i in indices]
    images = np.stack([render(sample, *dataset.image_size) for sample in samples])
    labels = torch.tensor([sample.label for sample in samples])
    return torch.from_numpy(np.round(images * 255).astype(np.uint8)).unsqueeze(1), labels


def _accuracy(model, images, labels, transform, batch_size: int) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(labels), batch_size):
            x = transform(images[i : i + batch_size].float().div(255).expand(-1, 3, -1, -1))
            correct += (model(x).argmax(-1) == labels[i : i + batch_size]).sum().item()
    model.train()
    return correct / len(labels)


def run_one(family: str, seed: int, args: argparse.Namespace, log=None, weights: Path | None = None) -> dict[str, Any]:
    """Train one model at ``args.train_size`` and test it at every ``args.test_sizes`` (in this process).

    With ``weights``, the trained model's ``state_dict`` is saved there (``torch.save``) before the tests.
    """
    import torch
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    from recvision.data import ArrowPointingDataset

    def say(message: str) -> None:
        if log is not None:
            print(message, file=log, flush=True)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    geometry = task_geometry(args)
    transform = INPUTS[args.input]
    torch.manual_seed(seed)
    model = build_model(family, args).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    start = time.perf_counter()
    if args.train_samples:  # a fixed training set, rendered once, reshuffled every epoch (the paper's setting)
        train = ArrowPointingDataset(args.train_samples, args.train_size, TRAIN_SEED + seed, geometry)
        train_images, train_labels = _render(train, range(args.train_samples))
    else:  # fresh images: the steps x batch images of one long dataset, in order
        train = ArrowPointingDataset(args.steps * args.batch_size, args.train_size, TRAIN_SEED + seed, geometry)
    val = ArrowPointingDataset(args.val_samples, args.train_size, VAL_SEED, geometry)
    val_images, val_labels = _render(val, range(args.val_samples))
    render_s = time.perf_counter() - start
    say(f"{family} seed {seed}: {n_params} parameters, data rendered in {render_s:.0f} s")
    optimizer = create_optimizer_v2(model, opt="adamw", lr=args.lr, weight_decay=args.weight_decay)
    warmup = max(1, round(args.steps * args.warmup))
    scheduler, _ = create_scheduler_v2(
        optimizer, sched="cosine", num_epochs=args.steps, warmup_epochs=warmup, warmup_lr=args.lr / 100,
        min_lr=args.lr / 100, step_on_epochs=False, updates_per_epoch=1,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    losses: list[float] = []
    curve: list[dict[str, float]] = []
    model.train()
    start = time.perf_counter()
    for step in range(args.steps):
        if args.train_samples:
            if len(order) < args.batch_size:
                order = torch.randperm(args.train_samples, generator=generator)
            batch, order = order[: args.batch_size], order[args.batch_size :]
            images, labels = train_images[batch], train_labels[batch]
        else:
            images, labels = _render(train, range(step * args.batch_size, (step + 1) * args.batch_size))
        x = transform(images.float().div(255).expand(-1, 3, -1, -1)).to(device)
        loss = torch.nn.functional.cross_entropy(model(x), labels.to(device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
        optimizer.step()
        scheduler.step_update(num_updates=step + 1)
        losses.append(loss.item())
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            train_loss = sum(losses[-args.eval_every :]) / len(losses[-args.eval_every :])
            val_acc = _accuracy(model, val_images.to(device), val_labels.to(device), transform, args.eval_batch_size)
            curve.append({"step": step + 1, "train_loss": train_loss, "val_acc": val_acc,
                          "s": time.perf_counter() - start})  # fmt: skip
            say(f"  step {step + 1}: train loss {train_loss:.3f}, val acc {100 * val_acc:.1f}%, "
                f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    train_s = time.perf_counter() - start
    if weights is not None:
        torch.save(model.state_dict(), weights)
    result = {
        "family": family, "model": MODELS[family][0], "seed": seed, "params": n_params, "steps": len(losses),
        "train_s": train_s, "s_per_step": train_s / len(losses), "render_s": render_s,
        "final_train_loss": curve[-1]["train_loss"], "curve": curve, "accuracy": {},
    }  # fmt: skip
    for size in args.test_sizes:
        data_seed = TEST_SEED if size == args.train_size else EXT_SEED
        test = ArrowPointingDataset(args.test_samples, size, data_seed, geometry)
        start = time.perf_counter()
        images, labels = _render(test, range(args.test_samples))
        result["accuracy"][str(size)] = _accuracy(model, images.to(device), labels.to(device), transform,
                                                  args.eval_batch_size)  # fmt: skip
        result[f"eval_s_{size}"] = time.perf_counter() - start
        say(f"  test @{size} px: {100 * result['accuracy'][str(size)]:.1f}%")
    return result


def _worker_main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    log = None
    if args.worker_log:
        log = open(args.worker_log, "w")  # noqa: SIM115  (open for the whole run: progress lines as they come)
    weights = Path(args.worker_log).with_suffix(".pt") if args.worker_log and args.save_weights else None
    result = run_one(args.worker_family, args.worker_seed, args, log, weights)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def _launch(family: str, seed: int, argv: list[str], timeout: float, log: Path | None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, *argv, "--worker-family", family, "--worker-seed", str(seed)]
    if log is not None:
        cmd += ["--worker-log", str(log)]
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


# arguments that do not change what a run computes: a results file can be resumed with other values of these
NOT_PROTOCOL = {"models", "seeds", "jobs", "timeout", "json", "threads", "device", "eval_batch_size", "save_weights",
                "worker_family", "worker_seed", "worker_log"}  # fmt: skip


# arguments added after results files had been written: a saved protocol without one ran with the value given here
ADDED_LATER = {"stem_norm": "none", "plstm_pool": "corners", "vit_pool": "token", "clip_grad": 0.0}


def protocol(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments that define a run: finished runs in ``--json`` are reused only when these match."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in NOT_PROTOCOL}


def load_finished(path: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Finished runs (no error) in the results file ``path``; [] when it does not exist. Exits on another protocol."""
    if not path.exists():
        return []
    try:
        saved = json.loads(path.read_text())
        saved_protocol, results = {**ADDED_LATER, **saved["protocol"]}, saved["results"]
    except (ValueError, KeyError, TypeError) as error:
        raise SystemExit(f"--json {path}: not a results file of this script ({error!r}); give another path") from None
    if saved_protocol != protocol(args):
        keys = sorted(set(saved_protocol) | set(protocol(args)))
        differ = [k for k in keys if saved_protocol.get(k) != protocol(args).get(k)]
        raise SystemExit(
            f"--json {path} holds runs of another protocol (differs in: {', '.join(differ)}); give another path "
            "or the same arguments"
        )
    return [r for r in results if "error" not in r]


def write_results(path: Path, args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    """The results JSON (atomically) and, beside it, every run's learning curve as CSV (``<stem>.curves.csv``)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"protocol": protocol(args), "results": results}, indent=1))
    tmp.replace(path)
    rows = ["model,seed,step,train_loss,val_acc,seconds"]
    for r in sorted((r for r in results if "curve" in r), key=lambda r: (r["family"], r["seed"])):
        rows += [f"{r['family']},{r['seed']},{c['step']},{c['train_loss']:.4f},{c['val_acc']:.4f},{c['s']:.0f}"
                 for c in r["curve"]]  # fmt: skip
    path.with_suffix(".curves.csv").write_text("\n".join(rows) + "\n")


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
    p.add_argument("--steps", type=int, default=3000, help="AdamW updates per run")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument(
        "--clip-grad", type=float, default=1.0,
        help="clip the gradient's global norm to this before each update (the reference uses 1; 0: no clipping)",
    )  # fmt: skip
    p.add_argument("--warmup", type=float, default=0.05, help="share of the steps with a linear warm-up")
    p.add_argument("--input", choices=list(INPUTS), default="ink", help="ink: 1 - image; normalized: (image - .5) / .5")
    p.add_argument("--train-size", type=int, default=64)
    p.add_argument("--test-sizes", nargs="+", type=int, default=[64, 128])
    p.add_argument(
        "--train-samples",
        type=int,
        default=0,
        help="size of a fixed training set (seed 43 + run seed), reshuffled every epoch; 0: fresh images",
    )
    p.add_argument("--val-samples", type=int, default=512, help="images of the validation set (learning curve)")
    p.add_argument("--eval-every", type=int, default=100, help="steps between two points of the learning curve")
    p.add_argument("--test-samples", type=int, default=1024, help="images per test set")
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--device", default="cpu", help="torch device of every run, e.g. cuda (one run per GPU: --jobs 1)")
    p.add_argument("--scale", type=float, default=1 / 3, help="task geometry relative to the paper's 192 px images")
    p.add_argument(
        "--arrow-scale", type=float, default=2.0,
        help="arrow length and stroke width relative to the reference's proportions (disc and canvas unchanged)",
    )  # fmt: skip
    p.add_argument("--embed-dim", type=int, default=FEMTO["embed_dim"], help="width of every model")
    p.add_argument("--depth", type=int, default=FEMTO["depth"], help="blocks of every model")
    p.add_argument("--heads", type=int, default=FEMTO["num_heads"], help="attention / recurrence heads")
    p.add_argument("--patch-size", type=int, default=FEMTO["patch_size"], help="input pixels per token (side)")
    p.add_argument(
        "--stem-layers",
        type=int,
        default=3,
        help="3x3 stride-2 conv + GELU layers before every model's patch embedding (0: none)",
    )
    p.add_argument(
        "--pos-embed-std", type=float, default=0.0,
        help="re-initialise every learned absolute position embedding as N(0, std^2) (0: the model's own init)",
    )  # fmt: skip
    p.add_argument("--stem-width", type=int, default=32, help="channels of the conv stem")
    p.add_argument(
        "--plstm-pool", choices=["corners", "corners_avg", "avg"], default="avg",
        help="pLSTM head: the four corner tokens concatenated (the paper's), their mean, or the mean of all tokens",
    )  # fmt: skip
    p.add_argument(
        "--vit-pool", choices=["token", "avg"], default="token",
        help="ViT head: the class token (timm's default) or the mean of the patch tokens",
    )  # fmt: skip
    p.add_argument(
        "--stem-norm", choices=["none", "batch", "layer"], default="batch",
        help="normalisation after each stem convolution: BatchNorm2d, a per-pixel LayerNorm over channels, or none",
    )  # fmt: skip
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    p.add_argument("--timeout", type=float, default=7200, help="seconds per run before it is reported as failed")
    p.add_argument(
        "--json",
        default=None,
        help="results file: written after every run, and runs of the same protocol already in it are "
        "skipped (resume); learning curves go to <stem>.curves.csv, progress to <stem>.runs/",
    )
    p.add_argument(
        "--save-weights", action="store_true",
        help="with --json: save each trained model's state_dict as <stem>.runs/<model>_seed<seed>.pt",
    )  # fmt: skip
    p.add_argument("--worker-family", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-seed", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-log", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.worker_family is not None:
        _worker_main(argv)
        return
    positive = ("steps", "batch_size", "val_samples", "eval_every", "test_samples", "eval_batch_size", "jobs",
                "threads", "embed_dim", "depth", "heads", "patch_size", "stem_width")  # fmt: skip
    for name in positive:
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    if args.stem_layers < 0 or args.patch_size % 2**args.stem_layers:
        raise SystemExit(f"--stem-layers {args.stem_layers}: must be >= 0 with 2**layers dividing --patch-size "
                         f"{args.patch_size}")  # fmt: skip
    if args.train_samples and args.train_samples < args.batch_size:
        raise SystemExit(f"--train-samples {args.train_samples}: must be 0 (fresh images) or >= --batch-size")
    try:
        smallest = task_geometry(args).min_image_size()
    except ValueError as error:
        raise SystemExit(f"--scale / --arrow-scale: {error}") from None
    for size in (args.train_size, *args.test_sizes):
        if size < smallest or size % args.patch_size:
            raise SystemExit(
                f"image size {size} px: must be >= {smallest} (the geometry at --scale {args.scale:.3g}) and a "
                f"multiple of --patch-size {args.patch_size}"
            )
    json_path = Path(args.json) if args.json else None
    results = load_finished(json_path, args) if json_path else []
    done = {(r["family"], r["seed"]) for r in results}
    jobs = [(family, seed) for seed in args.seeds for family in args.models if (family, seed) not in done]
    stem = f"{args.stem_layers}-layer conv stem, " if args.stem_layers else ""
    data = f"a fixed set of {args.train_samples}" if args.train_samples else "fresh images"
    print(
        f"APE: {len(args.models)} models x {len(args.seeds)} seeds, {stem}{args.steps} steps of {args.batch_size} "
        f"images at {args.train_size} px ({data}), test {args.test_samples} images at {args.test_sizes} px; "
        f"{args.jobs} parallel runs",
        flush=True,
    )
    skipped = [(f, s) for f, s in done if f in args.models and s in args.seeds]
    if skipped:
        print(f"  {len(skipped)} runs already in {json_path}, skipped: "
              f"{', '.join(f'{f} seed {s}' for f, s in sorted(skipped))}", flush=True)  # fmt: skip
    log_dir = json_path.with_suffix(".runs") if json_path else None
    if log_dir is not None and jobs:
        log_dir.mkdir(parents=True, exist_ok=True)
        print(f"  progress of each run: {log_dir}/<model>_seed<seed>.log", flush=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(_launch, family, seed, argv, args.timeout,
                        log_dir / f"{family}_seed{seed}.log" if log_dir else None)
            for family, seed in jobs
        ]  # fmt: skip
        for future in as_completed(futures):
            r = future.result()
            results.append(r)
            if "error" in r:
                print(f"  {r['family']} seed {r['seed']}: FAILED {r['error']}", flush=True)
            else:
                accs = ", ".join(f"@{s}: {100 * a:.1f}%" for s, a in r["accuracy"].items())
                curve = " ".join(f"{100 * c['val_acc']:.0f}" for c in r["curve"])
                print(
                    f"  {r['family']} seed {r['seed']}: {accs}; val acc % every {args.eval_every} steps: {curve}; "
                    f"train {r['train_s']:.0f} s ({r['s_per_step']:.2f} s/step), wall {r['wall_s']:.0f} s",
                    flush=True,
                )
            if json_path:  # rewritten after every run: an interrupted benchmark keeps what it finished
                write_results(json_path, args, results)
    print(f"\ntotal wall time {(time.perf_counter() - start) / 60:.1f} min\n")
    shown = [r for r in results if r["family"] in args.models and r["seed"] in args.seeds]
    print(format_table(shown, args.models, args.test_sizes, args.train_size))


if __name__ == "__main__":
    main()
