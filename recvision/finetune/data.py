"""Data of a fine-tuning run: an ImageFolder tree or a built-in dataset, timm's transforms and the sharded loaders."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from timm.data import create_transform, resolve_data_config
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from recvision.data.builtin import BUILTIN_DATASETS, SplitDatasets, load_builtin, stratified_split
from recvision.finetune.args import FinetuneError
from recvision.finetune.distributed import DistInfo

__all__ = ["Loaders", "TransformedDataset", "build_loaders", "load_data", "load_image_folder", "make_loader"]


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


@dataclass
class Loaders:
    """The loaders of a run.

    Attributes:
        train: Shuffled, augmented training batches of this process's shard.
        eval: ``{"train": ..., "val": ...}`` with the evaluation transform.
        data_config: timm's resolved data config (``input_size`` ``(C, H, W)``, crop, mean / std).
        updates_per_epoch: Optimizer updates per epoch (``--steps-per-epoch`` caps it).
    """

    train: DataLoader
    eval: dict[str, DataLoader]
    data_config: dict[str, Any]
    updates_per_epoch: int


def build_loaders(
    args: argparse.Namespace, data: SplitDatasets, builtin: bool, model: nn.Module, info: DistInfo
) -> Loaders:
    """timm's training and evaluation transforms for ``model`` and the loaders over this process's shards."""
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
    return Loaders(train_loader, eval_loaders, data_config, updates_per_epoch)
