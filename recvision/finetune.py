"""Fine-tune any timm image classifier (recvision's backbones or timm's own) on an image folder or a built-in dataset.

In timm's idiom: the model comes from ``timm.create_model``, the optimizer from ``timm.optim.create_optimizer_v2``, the
learning-rate schedule from ``timm.scheduler.create_scheduler_v2`` (stepped every update), the preprocessing and
augmentation from ``timm.data`` (``resolve_data_config``, ``create_transform``, optional ``Mixup``/CutMix). AMP runs
on CUDA (bf16 where supported, else fp16 with a gradient scaler) and is off on the CPU. Under ``torchrun`` the model is
wrapped in ``DistributedDataParallel`` (NCCL on CUDA, gloo on the CPU) and every process reads its own shard through
a ``DistributedSampler``; ``--batch-size`` is per process.

Checkpoints (``--output DIR``): ``last.safetensors`` / ``best.safetensors`` hold the model weights, ``last.state.pt``
the optimizer and gradient-scaler state, the epoch and update counters and the history, read back with
``torch.load(weights_only=True)``. ``--resume DIR`` continues a run exactly where it stopped: data order and
randomness are seeded per epoch, and the learning rate is recomputed from the update count.

Examples::

    recvision-finetune --model vir_femto --data digits --img-size 32 --epochs 5 --output runs/digits
    recvision-finetune --model vit_tiny_patch16_224 --data path/to/imagefolder --img-size 224 --pretrained-file w.pth
    torchrun --nproc-per-node 2 -m recvision.finetune --model lightnet_femto --data digits --epochs 3
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import random
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.distributed as dist
from timm.data import Mixup, create_transform, resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

import recvision  # noqa: F401  (registers recvision's backbones with timm)
from recvision.data.builtin import BUILTIN_DATASETS, SplitDatasets, load_builtin, stratified_split

__all__ = [
    "FinetuneResult",
    "build_parser",
    "evaluate",
    "format_results",
    "main",
    "make_loader",
    "parse_args",
    "run",
    "train_one_epoch",
]

PROG = "recvision-finetune"
LAST, BEST, STATE = "last.safetensors", "best.safetensors", "last.state.pt"
PER_CLASS_MAX = 20  # the results table lists per-class accuracy up to this many classes


class FinetuneError(ValueError):
    """A bad argument or input, reported to the user as one line."""


# ----------------------------------------------------------------------------------------------------------------
# Arguments


def _model_kwargs(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # a bare word, e.g. global_pool=avg


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (names follow timm's ``train.py`` where it has them)."""
    p = argparse.ArgumentParser(prog=PROG, description="Fine-tune a timm model (recvision's or timm's).")
    p.add_argument("--model", required=True, help="timm model name, e.g. vir_femto, lightnet_tiny, resnet18")
    p.add_argument(
        "--model-kwargs",
        nargs="*",
        type=_model_kwargs,
        default=[],
        metavar="KEY=VALUE",
        help="extra create_model arguments, e.g. embed_dim=64 depth=4",
    )
    p.add_argument(
        "--data",
        required=True,
        help=f"ImageFolder root (with train/ and val/, or class folders) or one of {sorted(BUILTIN_DATASETS)}",
    )
    p.add_argument("--val-split", type=float, default=0.2, help="held-out share when the data has no val split")
    p.add_argument("--img-size", type=int, default=None, help="input side (default: the model's)")
    p.add_argument("--crop-pct", type=float, default=None, help="eval crop fraction (default: 1.0 for built-ins)")
    p.add_argument(
        "--aug",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random training augmentation (default: on for folders, per dataset for built-ins)",
    )
    p.add_argument("--hflip", type=float, default=0.5, help="horizontal flip probability when augmenting")
    p.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0 = off)")
    p.add_argument("--cutmix", type=float, default=0.0, help="cutmix alpha (0 = off)")
    p.add_argument("--smoothing", type=float, default=0.0, help="label smoothing")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps-per-epoch", type=int, default=None, help="cap on updates per epoch (quick runs)")
    p.add_argument(
        "--stop-after-epochs",
        type=int,
        default=None,
        help="end this job after N epochs, keeping the --epochs schedule (continue with --resume)",
    )
    p.add_argument("--batch-size", "-b", type=int, default=64, help="per process")
    p.add_argument("--opt", default="adamw", help="timm optimizer name")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--clip-grad", type=float, default=None, help="gradient-norm clip")
    p.add_argument("--sched", default="cosine", help="timm scheduler name")
    p.add_argument("--warmup-epochs", type=int, default=0)
    p.add_argument("--warmup-lr", type=float, default=1e-5)
    p.add_argument("--min-lr", type=float, default=0.0)
    p.add_argument("--drop-path", type=float, default=None, help="stochastic depth rate")
    p.add_argument("--pretrained-file", default=None, help="local weights (.safetensors, .pth) to start from")
    p.add_argument("--output", default=None, help="checkpoint folder (default: no checkpoints)")
    p.add_argument("--resume", default=None, help="checkpoint folder of a previous run to continue")
    p.add_argument(
        "--amp",
        choices=("auto", "bf16", "fp16", "off"),
        default="auto",
        help="mixed precision; auto = bf16/fp16 on CUDA, off on the CPU",
    )
    p.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK if available, else cpu")
    p.add_argument("--workers", "-j", type=int, default=0, help="data-loader processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-splits", default="train,val", help="splits in the final table")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bar")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the arguments that need no model or data (raises :class:`FinetuneError`)."""
    args = build_parser().parse_args(argv)
    positive = {"epochs": args.epochs, "batch-size": args.batch_size, "lr": args.lr}
    if args.img_size is not None:
        positive["img-size"] = args.img_size
    if args.steps_per_epoch is not None:
        positive["steps-per-epoch"] = args.steps_per_epoch
    if args.stop_after_epochs is not None:
        positive["stop-after-epochs"] = args.stop_after_epochs
    for name, value in positive.items():
        if not value > 0:
            raise FinetuneError(f"--{name} must be positive; got {value}")
    for name in ("mixup", "cutmix", "smoothing", "weight_decay", "warmup_epochs", "min_lr", "workers"):
        if getattr(args, name) < 0:
            raise FinetuneError(f"--{name.replace('_', '-')} must be >= 0; got {getattr(args, name)}")
    if not 0 < args.val_split < 1:
        raise FinetuneError(f"--val-split must be in (0, 1); got {args.val_split}")
    if args.crop_pct is not None and not 0 < args.crop_pct <= 1:
        raise FinetuneError(f"--crop-pct must be in (0, 1]; got {args.crop_pct}")
    splits = [s for s in args.eval_splits.split(",") if s]
    if not splits or set(splits) - {"train", "val"}:
        raise FinetuneError(f"--eval-splits must be a comma list of train, val; got {args.eval_splits!r}")
    args.eval_splits = splits
    args.model_kwargs = dict(args.model_kwargs)
    if not timm.is_model(args.model):
        close = difflib.get_close_matches(args.model, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise FinetuneError(f"--model: unknown timm model {args.model!r}{hint}")
    if args.pretrained_file is not None and not Path(args.pretrained_file).is_file():
        raise FinetuneError(f"--pretrained-file: no such file {args.pretrained_file!r}")
    if args.resume is not None and not (Path(args.resume) / STATE).is_file():
        raise FinetuneError(f"--resume: {args.resume!r} holds no checkpoint ({STATE} missing)")
    if args.resume is None and args.output is not None and (Path(args.output) / STATE).exists():
        raise FinetuneError(
            f"--output: {args.output!r} already holds a checkpoint; pass --resume {args.output} or another --output"
        )
    return args


# ----------------------------------------------------------------------------------------------------------------
# Processes and devices


@dataclass
class DistInfo:
    """This process's place in the job (a single process has rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str | None = None) -> DistInfo:
    """Join the ``torchrun`` process group if the environment names one (gloo on the CPU, NCCL on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FinetuneError(f"--device {device}: CUDA is not available")
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    return DistInfo(rank, world_size, local_rank, dev)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp`` on ``device`` (``None`` = full precision)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise FinetuneError(f"--amp {amp} needs a CUDA device; got {device} (use --amp off or auto on the CPU)")
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------------
# Data


class TransformedDataset(Dataset):
    """``(transform(image), label)`` over a dataset of ``(PIL image, label)``."""

    def __init__(self, dataset: Dataset, transform: Callable | None) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return (self.transform(image) if self.transform is not None else image), label


def load_image_folder(root: Path, val_split: float, seed: int) -> SplitDatasets:
    """Splits of an ImageFolder tree: ``root/train`` + ``root/val`` (or ``validation``) if present, else the class
    folders of ``root`` split ``val_split`` per class."""
    from torchvision.datasets import ImageFolder

    def folder(path: Path) -> ImageFolder:
        try:
            return ImageFolder(str(path))
        except (FileNotFoundError, RuntimeError) as exc:
            raise FinetuneError(
                f"--data: {path} is not an ImageFolder (one sub-folder of images per class): {exc}"
            ) from exc

    val_dir = next((root / name for name in ("val", "validation") if (root / name).is_dir()), None)
    if (root / "train").is_dir() and val_dir is not None:
        train, val = folder(root / "train"), folder(val_dir)
        if train.classes != val.classes:
            raise FinetuneError(f"--data: class folders differ between {root / 'train'} and {val_dir}")
        return SplitDatasets(train, val, list(train.classes), augment=True)
    full = folder(root)
    train_idx, val_idx = stratified_split(full.targets, val_split, seed)
    return SplitDatasets(Subset(full, train_idx), Subset(full, val_idx), list(full.classes), augment=True)


def load_data(args: argparse.Namespace) -> tuple[SplitDatasets, bool]:
    """The dataset named by ``--data`` and whether it is a built-in one."""
    path = Path(args.data)
    if path.is_dir():
        return load_image_folder(path, args.val_split, args.seed), False
    if args.data in BUILTIN_DATASETS:
        try:
            return load_builtin(
                args.data, img_size=args.img_size or 64, seed=args.seed, val_fraction=args.val_split
            ), True
        except ValueError as exc:
            raise FinetuneError(f"--data {args.data}: {exc}") from exc
    raise FinetuneError(
        f"--data: {args.data!r} is neither an existing folder nor a built-in dataset ({', '.join(BUILTIN_DATASETS)})"
    )


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    dist_info: DistInfo,
    seed: int = 0,
    workers: int = 0,
) -> DataLoader:
    """A loader over this process's shard. Training shuffles with ``seed + epoch`` (call
    ``loader.sampler.set_epoch``) and drops the last partial batch, so every process makes the same number of steps;
    evaluation gives each process a disjoint strided shard, without padding duplicates."""
    if train:
        sampler = DistributedSampler(
            dataset, num_replicas=dist_info.world_size, rank=dist_info.rank, shuffle=True, seed=seed, drop_last=True
        )
        return DataLoader(dataset, batch_size, sampler=sampler, num_workers=workers, drop_last=True)
    shard = Subset(dataset, range(dist_info.rank, len(dataset), dist_info.world_size))
    return DataLoader(shard, batch_size, shuffle=False, num_workers=workers)


# ----------------------------------------------------------------------------------------------------------------
# Model


def _file_num_classes(path: str, classifier: str | None) -> int | None:
    """Output count of the classifier stored in a weights file, if it has one named ``classifier``."""
    if not classifier:
        return None
    key = f"{classifier}.weight"
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return f.get_slice(key).get_shape()[0] if key in f.keys() else None
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else {}
    weight = state.get(key) if isinstance(state, dict) else None
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else None


def create_finetune_model(args: argparse.Namespace, num_classes: int) -> nn.Module:
    """``timm.create_model`` for ``--model`` with ``num_classes`` outputs, ``--img-size`` (for models that take an
    ``img_size``; CNNs do not need one) and ``--pretrained-file`` weights (a classifier of another size is dropped,
    as timm does)."""
    kwargs: dict[str, Any] = dict(num_classes=num_classes)
    pretrained_cfg = timm.get_pretrained_cfg(args.model)
    if args.drop_path is not None:
        kwargs["drop_path_rate"] = args.drop_path
    kwargs.update(args.model_kwargs)
    if args.pretrained_file:
        overlay: dict[str, Any] = dict(file=str(args.pretrained_file))
        file_classes = _file_num_classes(str(args.pretrained_file), getattr(pretrained_cfg, "classifier", None))
        if file_classes is not None:
            overlay["num_classes"] = file_classes
        kwargs.update(pretrained=True, pretrained_cfg_overlay=overlay)
    try:
        if args.img_size is not None and "img_size" not in kwargs:
            try:
                return timm.create_model(args.model, img_size=args.img_size, **kwargs)
            except TypeError as exc:
                if "img_size" not in str(exc):
                    raise
        return timm.create_model(args.model, **kwargs)
    except TypeError as exc:
        raise FinetuneError(f"--model {args.model}: cannot build it with {kwargs}: {exc}") from exc
    except RuntimeError as exc:
        if args.pretrained_file:
            raise FinetuneError(f"--pretrained-file {args.pretrained_file}: does not fit {args.model}: {exc}") from exc
        raise


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ----------------------------------------------------------------------------------------------------------------
# Training and evaluation


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


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` to a uniquely named temporary beside ``path``, then rename (two writers never share a temporary)."""
    # recon._atomic imports only the standard library (and recon/__init__ only sets the version): no MRI stack
    from recon._atomic import atomic_write

    atomic_write(path, lambda tmp: write(Path(tmp)))


def save_checkpoint(folder: Path, model: nn.Module, state: dict[str, Any], best: bool = False) -> None:
    """Write ``last.safetensors`` (+ ``best.safetensors``) and ``last.state.pt``, each atomically."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    model = unwrap(model)
    metadata = {"model": str(state["model"]), "epoch": str(state["epoch"])}
    _atomic_write(folder / LAST, lambda p: save_model(model, str(p), metadata=metadata))
    if best:
        _atomic_write(folder / BEST, lambda p: save_model(model, str(p), metadata=metadata))
    _atomic_write(folder / STATE, lambda p: torch.save(state, p))


def load_checkpoint(folder: Path, model: nn.Module, device: torch.device) -> dict[str, Any]:
    """Load ``last.safetensors`` into ``model`` and return the training state (``weights_only=True``)."""
    from safetensors.torch import load_model

    state = torch.load(folder / STATE, map_location=device, weights_only=True)
    missing, unexpected = load_model(unwrap(model), str(folder / LAST), strict=False, device=str(device))
    if missing or unexpected:
        raise FinetuneError(
            f"--resume {folder}: weights do not fit {state.get('model')!r}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    return state


# ----------------------------------------------------------------------------------------------------------------
# The run


@dataclass
class FinetuneResult:
    """What :func:`run` produced: the trained model, the per-update and per-epoch history and the final table."""

    model: nn.Module
    class_names: list[str]
    steps: list[dict[str, float]]
    epochs: list[dict[str, float]]
    results: dict[str, dict[str, Any]]
    table: str


def _build_loss(args: argparse.Namespace, num_classes: int) -> tuple[Callable, Mixup | None]:
    if args.mixup > 0 or args.cutmix > 0:
        mixup = Mixup(
            mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, label_smoothing=args.smoothing, num_classes=num_classes
        )
        return SoftTargetCrossEntropy(), mixup
    if args.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=args.smoothing), None
    return nn.CrossEntropyLoss(), None


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> FinetuneResult:
    """Fine-tune as ``args`` (from :func:`parse_args`) says; ``log`` prints on the main process only."""
    info = setup_distributed(args.device)
    say = log if info.is_main else (lambda _msg: None)
    amp_dtype = resolve_amp(args.amp, info.device)
    seed_everything(args.seed)

    data, builtin = load_data(args)
    num_classes = len(data.class_names)
    model = create_finetune_model(args, num_classes).to(info.device)
    data_config = resolve_data_config(
        {
            "img_size": args.img_size,
            "crop_pct": args.crop_pct if args.crop_pct is not None else (1.0 if builtin else None),
        },
        model=model,
    )
    augment = data.augment if args.aug is None else args.aug
    train_tf = create_transform(**data_config, is_training=True, no_aug=not augment, hflip=args.hflip)
    eval_tf = create_transform(**data_config, is_training=False)
    if len(data.train) < args.batch_size * info.world_size:
        raise FinetuneError(
            f"--batch-size {args.batch_size}: the train split has only {len(data.train)} images for "
            f"{info.world_size} process(es)"
        )
    train_loader = make_loader(
        TransformedDataset(data.train, train_tf),
        args.batch_size,
        train=True,
        dist_info=info,
        seed=args.seed,
        workers=args.workers,
    )
    eval_loaders = {
        "train": make_loader(TransformedDataset(data.train, eval_tf), args.batch_size, train=False, dist_info=info),
        "val": make_loader(TransformedDataset(data.val, eval_tf), args.batch_size, train=False, dist_info=info),
    }
    updates_per_epoch = (
        len(train_loader) if args.steps_per_epoch is None else min(len(train_loader), args.steps_per_epoch)
    )
    optimizer = create_optimizer_v2(
        model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum
    )
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=args.sched,
        num_epochs=args.epochs,
        warmup_epochs=args.warmup_epochs,
        warmup_lr=args.warmup_lr,
        min_lr=args.min_lr,
        step_on_epochs=False,
        updates_per_epoch=updates_per_epoch,
    )
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    loss_fn, mixup = _build_loss(args, num_classes)

    state: dict[str, Any] = {
        "model": args.model,
        "num_classes": num_classes,
        "class_names": data.class_names,
        "epoch": 0,
        "step": 0,
        "best_accuracy": -1.0,
        "steps": [],
        "epochs": [],
    }
    if args.resume:
        saved = load_checkpoint(Path(args.resume), model, info.device)
        if saved["model"] != args.model or saved["num_classes"] != num_classes:
            raise FinetuneError(
                f"--resume {args.resume}: checkpoint is {saved['model']} with {saved['num_classes']} classes, "
                f"this run is {args.model} with {num_classes}"
            )
        optimizer.load_state_dict(saved["optimizer"])
        # timm's schedules are functions of the update count: recompute the lr for --epochs rather than load the
        # old run's schedule, so a resumed run may also extend --epochs
        scheduler.step_update(num_updates=saved["step"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        state.update({k: saved[k] for k in ("epoch", "step", "best_accuracy", "steps", "epochs")})
        say(f"resumed {args.resume} at epoch {state['epoch']} (step {state['step']})")
    output = Path(args.output) if args.output else (Path(args.resume) if args.resume else None)

    if info.distributed:
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    n_params = sum(p.numel() for p in model.parameters())
    say(
        f"{args.model}: {n_params / 1e6:.2f}M parameters; {args.data}: {len(data.train)} train / {len(data.val)} val "
        f"images, {num_classes} classes, {data_config['input_size'][1]}x{data_config['input_size'][2]} px; "
        f"{info.world_size} process(es) on {info.device}, amp {amp_dtype or 'off'}"
    )

    last_epoch = args.epochs if args.stop_after_epochs is None else min(args.epochs, args.stop_after_epochs)
    for epoch in range(state["epoch"], last_epoch):
        # everything random in an epoch (order, augmentation, drop-path) follows from (seed, epoch, rank): exact resume
        seed_everything(args.seed + 1000 * epoch + info.rank)
        train_loader.sampler.set_epoch(epoch)
        steps = train_one_epoch(
            model,
            train_loader,
            loss_fn,
            optimizer,
            device=info.device,
            scheduler=scheduler,
            start_step=state["step"],
            max_steps=updates_per_epoch,
            amp_dtype=amp_dtype,
            scaler=scaler,
            clip_grad=args.clip_grad,
            mixup=mixup,
            progress=args.progress and info.is_main,
            desc=f"epoch {epoch + 1}/{args.epochs}",
        )
        scheduler.step(epoch + 1)
        state["step"] += len(steps)
        state["steps"] += [{**s, "epoch": epoch + 1} for s in steps]
        val = evaluate(model, eval_loaders["val"], num_classes, device=info.device, amp_dtype=amp_dtype)
        train_loss = sum(s["loss"] for s in steps) / len(steps)
        state["epochs"].append(
            {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val["loss"], "val_accuracy": val["accuracy"]}
        )
        is_best = val["accuracy"] > state["best_accuracy"]
        state["best_accuracy"] = max(state["best_accuracy"], val["accuracy"])
        state["epoch"] = epoch + 1
        say(
            f"epoch {epoch + 1}/{args.epochs}: train loss {train_loss:.4f}, val loss {val['loss']:.4f}, "
            f"val acc {100 * val['accuracy']:.2f}%, lr {optimizer.param_groups[0]['lr']:.2e}"
        )
        if output is not None and info.is_main:
            checkpoint = {
                **state,
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
            }
            save_checkpoint(output, model, checkpoint, best=is_best)
        if info.distributed:
            dist.barrier()

    results = {
        split: evaluate(model, eval_loaders[split], num_classes, device=info.device, amp_dtype=amp_dtype)
        for split in args.eval_splits
    }
    table = format_results(results, data.class_names)
    say(table)
    if output is not None and info.is_main:
        summary = {"model": args.model, "data": args.data, "results": results, "epochs": state["epochs"]}
        output.mkdir(parents=True, exist_ok=True)
        _atomic_write(output / "results.json", lambda p: p.write_text(json.dumps(summary, indent=1)))
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


if __name__ == "__main__":
    sys.exit(main())
