"""Training of a fine-tuning run (the shape of timm's ``train.py``): one epoch of updates, evaluation, the results
table, and :func:`run`, which puts the pieces of :mod:`recvision.finetune` together."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from recvision.data.builtin import SplitDatasets
from recvision.finetune.args import PROG, FinetuneError, create_scheduler, parse_args
from recvision.finetune.checkpoint import load_checkpoint, save_checkpoint, save_results
from recvision.finetune.data import Loaders, build_loaders, load_data
from recvision.finetune.distributed import (
    DistInfo,
    resolve_amp,
    seed_everything,
    setup_distributed,
    unwrap,
    wrap_distributed,
)
from recvision.finetune.model import create_finetune_model

__all__ = [
    "FinetuneResult",
    "Optimization",
    "build_optimization",
    "evaluate",
    "format_results",
    "main",
    "run",
    "train_one_epoch",
]

PER_CLASS_MAX = 20  # the results table lists per-class accuracy up to this many classes


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    scheduler=None,
    start_step: int = 0,
    max_steps: int | None = None,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    clip_grad: float | None = None,
    mixup: Mixup | None = None,
    progress: bool = False,
    desc: str = "train",
) -> list[dict[str, float]]:
    """One pass over ``loader`` (at most ``max_steps`` updates). Returns one ``{"step", "loss", "lr"}`` per update;
    ``step`` counts from ``start_step`` and drives ``scheduler.step_update``. Losses are this process's."""
    model.train()
    total = len(loader) if max_steps is None else min(len(loader), max_steps)
    history = []
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for i, (images, targets) in enumerate(loader):
        if i >= total:
            break
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if mixup is not None:
            images, targets = mixup(images, targets)
        autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
        with autocast:
            loss = loss_fn(model(images), targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss {loss.item()} at step {start_step + i}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if clip_grad is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        step = start_step + i + 1
        if scheduler is not None:
            scheduler.step_update(num_updates=step)
        lr = optimizer.param_groups[0]["lr"]
        history.append({"step": step, "loss": loss.item(), "lr": lr})
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
        bar.update()
    bar.close()
    return history


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Mean cross-entropy, accuracy and the confusion matrix ``[true, predicted]`` of ``model`` on ``loader``,
    summed over all processes when distributed (each process evaluates its own shard)."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
        with autocast:
            logits = model(images)
        loss_sum += nn.functional.cross_entropy(logits.float(), targets, reduction="sum").double()
        confusion.index_put_(
            (targets, logits.argmax(-1)), torch.ones_like(targets, dtype=torch.float64), accumulate=True
        )
    if dist.is_initialized():
        dist.all_reduce(loss_sum)
        dist.all_reduce(confusion)
    count = confusion.sum().item()
    per_class_count = confusion.sum(1)
    per_class = (confusion.diagonal() / per_class_count.clamp(min=1)).tolist()
    return {
        "count": int(count),
        "loss": loss_sum.item() / max(count, 1),
        "accuracy": confusion.diagonal().sum().item() / max(count, 1),
        "per_class_accuracy": [a if n > 0 else None for a, n in zip(per_class, per_class_count.tolist(), strict=True)],
        "confusion": confusion.long().tolist(),
    }


def format_results(results: dict[str, dict[str, Any]], class_names: Sequence[str]) -> str:
    """The final table: one row per split with loss and accuracy, and per-class accuracy for few classes."""
    per_class = len(class_names) <= PER_CLASS_MAX
    header = ["split", "images", "loss", "accuracy"] + ([f"acc[{n}]" for n in class_names] if per_class else [])
    rows = []
    for split, r in results.items():
        row = [split, str(r["count"]), f"{r['loss']:.4f}", f"{100 * r['accuracy']:.2f}%"]
        if per_class:
            row += ["-" if a is None else f"{100 * a:.1f}%" for a in r["per_class_accuracy"]]
        rows.append(row)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


@dataclass
class FinetuneResult:
    """What :func:`run` produced: the trained model, the per-update and per-epoch history and the final table."""

    model: nn.Module
    class_names: list[str]
    steps: list[dict[str, float]]
    epochs: list[dict[str, float]]
    results: dict[str, dict[str, Any]]
    table: str


@dataclass
class Optimization:
    """How a run updates the model: timm's optimizer and per-update schedule, the fp16 gradient scaler (else
    ``None``), the loss and the optional Mixup / CutMix, and the autocast dtype (``None``: full precision)."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    mixup: Mixup | None
    amp_dtype: torch.dtype | None


def _build_loss(args: argparse.Namespace, num_classes: int) -> tuple[Callable, Mixup | None]:
    if args.mixup > 0 or args.cutmix > 0:
        mixup = Mixup(
            mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, label_smoothing=args.smoothing, num_classes=num_classes
        )
        return SoftTargetCrossEntropy(), mixup
    if args.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=args.smoothing), None
    return nn.CrossEntropyLoss(), None


def build_optimization(
    args: argparse.Namespace, model: nn.Module, num_classes: int, updates_per_epoch: int, amp_dtype: torch.dtype | None
) -> Optimization:
    """timm's optimizer and scheduler (stepped every update), the scaler for fp16 and the loss of ``args``."""
    optimizer = create_optimizer_v2(
        model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum
    )
    scheduler = create_scheduler(optimizer, args, updates_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    loss_fn, mixup = _build_loss(args, num_classes)
    return Optimization(optimizer, scheduler, scaler, loss_fn, mixup, amp_dtype)


def initial_state(args: argparse.Namespace, class_names: list[str]) -> dict[str, Any]:
    """The counters and history a run starts from (and saves in ``last.state.pt``)."""
    return {
        "model": args.model,
        "num_classes": len(class_names),
        "class_names": class_names,
        "epoch": 0,
        "step": 0,
        "best_accuracy": -1.0,
        "steps": [],
        "epochs": [],
    }


def resume(
    args: argparse.Namespace,
    model: nn.Module,
    opt: Optimization,
    state: dict[str, Any],
    device: torch.device,
    say: Callable[[str], None],
) -> None:
    """Load ``--resume``'s weights and optimizer / scaler state and continue its counters and history."""
    saved = load_checkpoint(Path(args.resume), model, device, args.model)
    if saved["model"] != args.model or saved["num_classes"] != state["num_classes"]:
        raise FinetuneError(
            f"--resume {args.resume}: checkpoint is {saved['model']} with {saved['num_classes']} classes, "
            f"this run is {args.model} with {state['num_classes']}"
        )
    opt.optimizer.load_state_dict(saved["optimizer"])
    # timm's schedules are functions of the update count: recompute the lr for --epochs rather than load the
    # old run's schedule, so a resumed run may also extend --epochs
    opt.scheduler.step_update(num_updates=saved["step"])
    if opt.scaler is not None and saved.get("scaler"):
        opt.scaler.load_state_dict(saved["scaler"])
    state.update({k: saved[k] for k in ("epoch", "step", "best_accuracy", "steps", "epochs")})
    say(f"resumed {args.resume} at epoch {state['epoch']} (step {state['step']})")


def describe(
    args: argparse.Namespace, model: nn.Module, data: SplitDatasets, loaders: Loaders, info: DistInfo, amp: Any
) -> str:
    """The line a run starts with: model size, data, input size, processes and precision."""
    n_params = sum(p.numel() for p in model.parameters())
    size = loaders.data_config["input_size"]
    return (
        f"{args.model}: {n_params / 1e6:.2f}M parameters; {args.data}: {len(data.train)} train / {len(data.val)} val "
        f"images, {len(data.class_names)} classes, {size[1]}x{size[2]} px; "
        f"{info.world_size} process(es) on {info.device}, amp {amp or 'off'}"
    )


def train_epoch(
    args: argparse.Namespace,
    epoch: int,
    model: nn.Module,
    loaders: Loaders,
    opt: Optimization,
    state: dict[str, Any],
    info: DistInfo,
    output: Path | None,
    say: Callable[[str], None],
) -> None:
    """Epoch ``epoch`` (from 0): the updates, the validation, the log line and the checkpoint; updates ``state``."""
    # everything random in an epoch (order, augmentation, drop-path) follows from (seed, epoch, rank): exact resume
    seed_everything(args.seed + 1000 * epoch + info.rank)
    loaders.train.sampler.set_epoch(epoch)
    steps = train_one_epoch(
        model,
        loaders.train,
        opt.loss_fn,
        opt.optimizer,
        device=info.device,
        scheduler=opt.scheduler,
        start_step=state["step"],
        max_steps=loaders.updates_per_epoch,
        amp_dtype=opt.amp_dtype,
        scaler=opt.scaler,
        clip_grad=args.clip_grad,
        mixup=opt.mixup,
        progress=args.progress and info.is_main,
        desc=f"epoch {epoch + 1}/{args.epochs}",
    )
    opt.scheduler.step(epoch + 1)
    state["step"] += len(steps)
    state["steps"] += [{**s, "epoch": epoch + 1} for s in steps]
    val = evaluate(model, loaders.eval["val"], state["num_classes"], device=info.device, amp_dtype=opt.amp_dtype)
    train_loss = sum(s["loss"] for s in steps) / len(steps)
    state["epochs"].append(
        {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val["loss"], "val_accuracy": val["accuracy"]}
    )
    is_best = val["accuracy"] > state["best_accuracy"]
    state["best_accuracy"] = max(state["best_accuracy"], val["accuracy"])
    state["epoch"] = epoch + 1
    say(
        f"epoch {epoch + 1}/{args.epochs}: train loss {train_loss:.4f}, val loss {val['loss']:.4f}, "
        f"val acc {100 * val['accuracy']:.2f}%, lr {opt.optimizer.param_groups[0]['lr']:.2e}"
    )
    if output is not None and info.is_main:
        checkpoint = {
            **state,
            "optimizer": opt.optimizer.state_dict(),
            "scaler": opt.scaler.state_dict() if opt.scaler is not None else None,
        }
        save_checkpoint(output, model, checkpoint, best=is_best)
    if info.distributed:
        dist.barrier()


def _quiet(_message: str) -> None:
    """The log of processes other than the main one."""


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> FinetuneResult:
    """Fine-tune as ``args`` (from :func:`parse_args`) says; ``log`` prints on the main process only."""
    info = setup_distributed(args.device)
    say = log if info.is_main else _quiet
    amp_dtype = resolve_amp(args.amp, info.device)
    seed_everything(args.seed)
    data, builtin = load_data(args)
    num_classes = len(data.class_names)
    model = create_finetune_model(args, num_classes, say).to(info.device)
    loaders = build_loaders(args, data, builtin, model, info)
    opt = build_optimization(args, model, num_classes, loaders.updates_per_epoch, amp_dtype)
    state = initial_state(args, data.class_names)
    if args.resume:
        resume(args, model, opt, state, info.device, say)
    output = Path(args.output) if args.output else (Path(args.resume) if args.resume else None)
    model = wrap_distributed(model, info)
    say(describe(args, model, data, loaders, info, amp_dtype))
    last_epoch = args.epochs if args.stop_after_epochs is None else min(args.epochs, args.stop_after_epochs)
    for epoch in range(state["epoch"], last_epoch):
        train_epoch(args, epoch, model, loaders, opt, state, info, output, say)
    results = {
        split: evaluate(model, loaders.eval[split], num_classes, device=info.device, amp_dtype=amp_dtype)
        for split in args.eval_splits
    }
    table = format_results(results, data.class_names)
    say(table)
    if state["epoch"] < args.epochs:  # --stop-after-epochs: the table is of a model in mid-schedule
        how = f"continue with --resume {output}" if output is not None else "no --output, so nothing to resume from"
        say(f"stopped at epoch {state['epoch']}/{args.epochs}; {how}")
    if output is not None and info.is_main:
        save_results(output, {"model": args.model, "data": args.data, "results": results, "epochs": state["epochs"]})
    return FinetuneResult(unwrap(model), data.class_names, state["steps"], state["epochs"], results, table)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: returns 0 on success, 2 on a bad argument or input (message on stderr)."""
    try:
        args = parse_args(argv)
        run(args)
    except SystemExit as exc:  # argparse's own errors (usage on stderr) and --help
        return exc.code if isinstance(exc.code, int) else 2
    except FinetuneError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0
