"""The training loop: AdamW, warm-up + cosine LR, gradient clipping, bf16 autocast, a DataLoader, checkpoints, DDP.

Data order is a function of ``(seed, epoch)`` only (a seeded permutation per epoch, sharded by rank under DDP), so
a resumed run sees exactly the batches an uninterrupted run would, and two runs with the same seed on the CPU give
identical weights, with any number of DataLoader workers (a batch sampler yields ``(epoch, index)`` pairs and the
dataset is told the epoch inside the worker that reads the item). Under ``torchrun`` (``WORLD_SIZE > 1``) the
process group is initialised (gloo on the CPU, nccl on CUDA) unless it already is, the model is wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`, each rank trains on its shard and the gradients are averaged;
only rank 0 writes checkpoints.

Dataset items are mappings with keys ``masked_kspace`` ``[C, H, W]`` complex, ``mask`` (broadcastable to
``[1, 1|H, W]``), ``sens_maps`` ``[C, H, W]`` complex and ``target`` ``[h, w]`` (magnitude or complex; ``h, w <= H, W``:
predictions are centre-cropped to it), or tuples in that order. An optional validation hook runs on rank 0 every
``val_every`` steps and after the last one (:func:`recon.training.data.make_validator`: fastMRI SSIM / PSNR / NMSE
per volume); a tqdm bar shows progress on rank 0 with ``progress=True``.

Speed on the CPU: ``precision="bf16"`` runs the forward under ``torch.autocast`` with bfloat16 (the convolutions and
recurrent cells in bf16 on CPUs with native bf16; the models keep FFTs, coil operators and data consistency in
complex64, see :func:`recon.models._common.channels_to_complex`), and ``channels_last`` stores the conv weights in
NHWC, the layout oneDNN's fast convolution kernels want. Parameters, gradients and optimizer state stay fp32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from recon.config import PRECISIONS, TrainConfig
from recon.ops.noise import add_noise_floor
from recon.training.checkpoint import load_checkpoint, save_checkpoint
from recon.training.losses import center_crop, weighted_prediction_loss

__all__ = ["PRECISIONS", "TrainConfig", "TrainResult", "build_scheduler", "make_loader", "train"]

KEYS = ("masked_kspace", "mask", "sens_maps", "target")


@dataclass
class TrainResult:
    """What :func:`train` returns: the (unwrapped) model, the loss of each step taken, the final step, and the
    validation records ``{"step": s, **metrics}`` of the runs of the validation hook (rank 0)."""

    model: nn.Module
    losses: list[float]
    step: int
    validations: list[dict[str, float]] = field(default_factory=list)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay (or constant), as a :class:`LambdaLR` stepped once per optimizer step."""
    warmup, total, floor = config.warmup_steps, max(config.max_steps, 1), config.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if config.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _Predictions(nn.Module):
    """Makes ``model.predictions`` the forward, so that DDP sees (and synchronises) the pass the loss uses."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor) -> Any:
        return self.model.predictions(masked_kspace, mask, sens_maps)


def _unpack(item: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(item, Mapping):
        missing = [k for k in KEYS if k not in item]
        if missing:
            raise KeyError(f"dataset items lack keys {missing}; need {list(KEYS)}")
        floor = (torch.as_tensor(item["noise_floor"], dtype=torch.float32),) if "noise_floor" in item else ()
        return tuple(torch.as_tensor(item[k]) for k in KEYS) + floor
    if isinstance(item, (tuple, list)) and len(item) == 4:
        return tuple(torch.as_tensor(x) for x in item)
    raise TypeError(f"dataset items must be mappings with keys {list(KEYS)} or 4-tuples; got {type(item).__name__}")


def _collate(items: list[Any]) -> tuple[torch.Tensor, ...]:
    parts = [_unpack(it) for it in items]
    return tuple(torch.stack(list(col)) for col in zip(*parts, strict=True))


def _dist_info() -> tuple[bool, int, int]:
    if dist.is_available() and dist.is_initialized():
        return True, dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and dist.is_available():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def _device(config: TrainConfig) -> torch.device:
    if config.device is not None:
        return torch.device(config.device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _batches(n: int, step: int, config: TrainConfig, rank: int, world: int) -> tuple[int, list[int]]:
    """The dataset indices of this rank's batch at ``step`` (and the epoch)."""
    per_rank = n // world
    steps_per_epoch = per_rank // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"dataset of {n} samples is too small for {world} rank(s) x batch size {config.batch_size}")
    epoch, within = divmod(step, steps_per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 100003 + epoch))
    shard = perm[: per_rank * world][rank::world]
    return epoch, shard[within * config.batch_size : (within + 1) * config.batch_size].tolist()


class _StepBatches(torch.utils.data.Sampler):
    """Yields, for each step in ``[start, stop)``, this rank's batch as ``(epoch, index)`` pairs (:func:`_batches`)."""

    def __init__(self, n: int, start: int, stop: int, config: TrainConfig, rank: int, world: int) -> None:
        self.n, self.start, self.stop, self.config, self.rank, self.world = n, start, stop, config, rank, world

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self):  # noqa: ANN204 - an iterator of lists of pairs
        for step in range(self.start, self.stop):
            epoch, indices = _batches(self.n, step, self.config, self.rank, self.world)
            yield [(epoch, i) for i in indices]


class _EpochItems(torch.utils.data.Dataset):
    """``dataset[(epoch, index)]``: tells the dataset the epoch (``set_epoch``, if it has one), then reads the item.

    Runs in the process that reads the item, so DataLoader workers (each with its own copy of the dataset) draw the
    same per-epoch masks as the training process would.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        return self.dataset[index]


def make_loader(dataset: Any, config: TrainConfig, start: int = 0, rank: int = 0, world: int = 1):  # noqa: ANN201
    """The DataLoader of steps ``start .. config.max_steps``: collated ``(masked_kspace, mask, sens_maps, target)``.

    Batches depend only on ``(config.seed, step)`` (and the rank), never on the number of workers.
    """
    sampler = _StepBatches(len(dataset), start, config.max_steps, config, rank, world)
    workers = config.num_workers
    return torch.utils.data.DataLoader(
        _EpochItems(dataset),
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=_collate,
        prefetch_factor=config.prefetch_factor if workers > 0 else None,
        persistent_workers=False,
    )


def _default_log(record: dict[str, Any]) -> None:
    text = " ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
    tqdm.write(text)


def train(
    config: TrainConfig,
    dataset: Any,
    model: nn.Module | None = None,
    validate: Callable[[nn.Module], Mapping[str, float]] | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_extra: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train a model on ``dataset`` for ``config.max_steps`` optimizer steps (resuming where configured).

    Predictions larger than the target are centre-cropped to the target's ``[h, w]`` before the loss (targets at
    the recon matrix, as fastMRI's ``reconstruction_rss``). A dataset with a ``set_epoch(epoch)`` method is told the
    epoch of every batch before its items are read (for per-epoch random masks that stay reproducible on resume).

    Args:
        config: the settings.
        dataset: a map-style dataset (``len`` and ``[i]``) of items as described in the module docstring.
        model: optional prebuilt model; by default ``build_model(config.model, config.model_config)`` after
            seeding with ``config.seed``.
        validate: optional hook ``validate(model) -> {"val_ssim": ..., ...}``, run on rank 0 (model in eval mode,
            no gradients) every ``config.val_every`` steps and after the last step.
        log: receives the records ``{"step", "loss", "lr"}`` (every ``log_every`` steps) and ``{"step", **metrics}``
            (each validation) on rank 0; default: printed (through tqdm, so a progress bar stays intact).
        checkpoint_extra: more JSON-serialisable metadata for every checkpoint's ``config.json`` (e.g. the data
            settings); its entries override the default ``{"train_config": asdict(config)}``.

    Returns:
        The trained model (unwrapped), the losses of the steps run here (rank-local), the final step and the
        validation records.
    """
    from recon.models import build_model

    distributed, rank, world = _dist_info()
    device = _device(config)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(config.seed)
    if model is None:
        model = build_model(config.model, config.model_config)
    model = model.to(device)
    if config.channels_last and not _bf16_channels_last_faulty(model, config, device):
        model = model.to(memory_format=torch.channels_last)
    net: nn.Module = _Predictions(model)
    if distributed:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    scheduler = build_scheduler(optimizer, config)
    use_amp = config.precision == "bf16" or (config.amp and device.type == "cuda")
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_amp else (lambda: contextlib.nullcontext())
    )
    log = log or _default_log

    step = 0
    resume = config.resume
    if resume == "last":
        last = Path(config.checkpoint_dir or ".") / "last"
        resume = str(last) if last.exists() else None
    if resume is not None:
        step = load_checkpoint(resume, model, optimizer, scheduler, map_location=device)
        if distributed:  # the same weights everywhere, whatever each rank read
            for p in model.state_dict().values():
                dist.broadcast(p, 0)

    def save(at: int) -> None:
        if config.checkpoint_dir is None or rank != 0:
            return
        extra = {"train_config": dataclasses.asdict(config), **(checkpoint_extra or {})}
        args = (model, config.model, config.model_config, optimizer, scheduler, at, extra)
        save_checkpoint(Path(config.checkpoint_dir) / f"step-{at:08d}", *args)
        save_checkpoint(Path(config.checkpoint_dir) / "last", *args)

    validations: list[dict[str, float]] = []

    def run_validation(at: int) -> None:
        if validate is None or rank != 0:
            return
        model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in validate(model).items()}
        model.train()
        record = {"step": at, **metrics}
        validations.append(record)
        log(record)

    losses: list[float] = []
    bar = tqdm(total=config.max_steps, initial=step, desc="train", disable=not (config.progress and rank == 0))
    model.train()
    for batch in make_loader(dataset, config, step, rank, world):
        kspace, mask, sens, target, *floor = (t.to(device) for t in batch)
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            predictions = net(kspace, mask, sens)
        predictions = [[_to_target(p, target) for p in c] for c in predictions]
        if floor:  # items with "noise_floor": the loss sees sqrt(|x|^2 + b^2), as inference reports
            predictions = [[add_noise_floor(p, floor[0]) for p in c] for c in predictions]
        loss = weighted_prediction_loss(predictions, target, config.ssim_weight, config.l1_weight)
        loss.backward()
        if config.grad_clip is not None and config.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        if config.log_every and rank == 0 and step % config.log_every == 0:
            log({"step": step, "loss": losses[-1], "lr": scheduler.get_last_lr()[0]})
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.max_steps:
            save(step)
        if config.val_every and step % config.val_every == 0 and step < config.max_steps:
            run_validation(step)
    bar.close()
    save(step)
    run_validation(step)
    if distributed:
        dist.barrier()
    return TrainResult(model=model, losses=losses, step=step, validations=validations)


def _bf16_channels_last_faulty(model: nn.Module, config: TrainConfig, device: torch.device) -> bool:
    """For bf16 on the CPU: whether the backend computes some of the model's convs wrongly in channels-last
    (:func:`recon.models._bf16.faulty_bf16_channels_last_convs`); then the run keeps NCHW and says so."""
    if config.precision != "bf16" or device.type != "cpu":
        return False
    from recon.models._bf16 import faulty_bf16_channels_last_convs

    faulty = faulty_bf16_channels_last_convs(model, device)
    if faulty:
        warnings.warn(
            f"channels_last off for this bf16 run: this PyTorch / CPU computes wrong bf16 channels-last gradients "
            f"for {len(faulty)} conv(s) of the model (e.g. {faulty[0]}); training in NCHW",
            RuntimeWarning,
            stacklevel=3,
        )
    return bool(faulty)


def _to_target(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cast to a full-precision dtype and centre-crop ``[B, H, W]`` to the target's ``[h, w]``."""
    pred = pred.to(torch.complex64) if torch.is_complex(pred) else pred.float()
    return center_crop(pred, tuple(target.shape[-2:]))
