"""The command line of ``recvision-finetune``: the parser (names follow timm's ``train.py``) and the checks that need
no model or data."""

from __future__ import annotations

import argparse
import ast
import difflib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm

from recvision.data.builtin import BUILTIN_DATASETS

__all__ = ["PROG", "FinetuneError", "build_parser", "parse_args"]

PROG = "recvision-finetune"


class FinetuneError(ValueError):
    """A bad argument or input, reported to the user as one line."""


def _model_kwargs(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # a bare word, e.g. global_pool=avg


EXAMPLES = f"""\
examples:
  {PROG} --model vir_femto --data digits --img-size 32 --epochs 5 --stop-after-epochs 2 --output runs/ft
  {PROG} --model vir_femto --data digits --img-size 32 --epochs 5 --resume runs/ft   # continue a stopped run
  {PROG} --model vit_tiny_patch16_224 --data path/to/imagefolder --pretrained-file w.safetensors
  {PROG} --model resnet18 --data lfw --opt sgd --lr 0.05 --sched step --mixup 0.2
  torchrun --nproc-per-node 2 -m recvision.finetune --model lightnet_femto --data digits --epochs 3
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The epilog as written, and "(default: X)" after each option that has a default worth showing: not ``None``
    (its help says what happens instead) and not where the help already names the default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # identity, not ==: a default of 0 (== False) is worth showing
        if (
            action.default is None
            or action.default is False
            or action.default == []
            or "default" in (action.help or "")
        ):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (names follow timm's ``train.py`` where it has them)."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Fine-tune a timm model (recvision's or timm's).",
        epilog=EXAMPLES,
        formatter_class=_HelpFormatter,
    )
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
    p.add_argument("--epochs", type=int, default=10, help="length of the schedule")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="cap on updates per epoch (quick runs)")
    p.add_argument(
        "--stop-after-epochs",
        type=int,
        default=None,
        help="end this job after N epochs, keeping the --epochs schedule (continue with --resume)",
    )
    p.add_argument("--batch-size", "-b", type=int, default=64, help="per process")
    p.add_argument("--opt", default="adamw", help="timm optimizer name")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=0.05, help="decoupled weight decay")
    p.add_argument("--momentum", type=float, default=0.9, help="for SGD-like optimizers")
    p.add_argument("--clip-grad", type=float, default=None, help="gradient-norm clip")
    p.add_argument("--sched", default="cosine", help="timm scheduler name")
    p.add_argument("--warmup-epochs", type=int, default=0, help="linear warmup length")
    p.add_argument("--warmup-lr", type=float, default=1e-5, help="learning rate warmup starts at")
    p.add_argument("--min-lr", type=float, default=0.0, help="floor of the schedule")
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
    p.add_argument("--seed", type=int, default=0, help="seed of data order, augmentation and init")
    p.add_argument("--eval-splits", default="train,val", help="splits in the final table")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bar")
    return p


def _check_opt_and_sched(args: argparse.Namespace) -> None:
    """Ask timm's own registries now, so that a misspelt ``--opt`` / ``--sched`` fails before data and model load."""
    import torch
    from timm.optim import list_optimizers
    from timm.optim._optim_factory import default_registry

    # create_optimizer_v2 looks up the last '_'-part of the name (a 'lookahead_' prefix wraps the optimizer)
    try:
        default_registry.get_optimizer_info(args.opt.lower().split("_")[-1])
    except ValueError:
        close = difflib.get_close_matches(args.opt.lower(), list_optimizers(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise FinetuneError(f"--opt: unknown timm optimizer {args.opt!r}{hint}") from None
    # timm's scheduler factory has no list of names: build the schedule on a one-tensor optimizer, as run() will
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=args.lr)
    try:
        create_scheduler(probe, args, updates_per_epoch=1)
    except (ValueError, AssertionError) as exc:  # timm asserts some of its constraints (e.g. plateau per epoch)
        raise FinetuneError(f"--sched {args.sched}: {exc or 'not supported with per-update steps'}") from None


def create_scheduler(optimizer: Any, args: argparse.Namespace, updates_per_epoch: int) -> Any:
    """timm's learning-rate schedule for ``args`` (``--sched``, warm-up, ``--min-lr``), stepped every update."""
    from timm.scheduler import create_scheduler_v2

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
    return scheduler


def _check_output(folder: str) -> None:
    """Fail now, not after the first epoch, where the checkpoint folder cannot be created or written."""
    path = Path(folder)
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise FinetuneError(f"--output: {str(parent)!r} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise FinetuneError(f"--output: {str(parent)!r} is not writable")
            return


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the arguments that need no model or data (raises :class:`FinetuneError`)."""
    # here: checkpoint.py raises this module's FinetuneError
    from recvision.finetune.checkpoint import STATE, checkpoint_model_name

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
    saved = checkpoint_model_name(Path(args.resume)) if args.resume is not None else None
    if saved not in (None, args.model):
        raise FinetuneError(f"--resume: {args.resume} holds a {saved} checkpoint, --model is {args.model}")
    _check_opt_and_sched(args)
    if args.pretrained_file is not None:
        from recvision.finetune.model import check_weights_file  # here: model.py imports this module

        check_weights_file(args.pretrained_file)
    if args.output is not None:
        _check_output(args.output)
    if args.resume is None and args.output is not None and (Path(args.output) / STATE).exists():
        raise FinetuneError(
            f"--output: {args.output!r} already holds a checkpoint; pass --resume {args.output} or another --output"
        )
    return args
