"""Checkpoints: a directory with ``model.safetensors`` (weights), ``config.json`` (model name and config, training
config, step) and ``state.pt`` (optimizer / scheduler state, saved with :func:`torch.save` and loaded with
``weights_only=True``).

Every file is written to a temporary file and moved into place with :func:`os.replace`; the whole directory is
built beside its final path and renamed into place, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["load_checkpoint", "load_model", "save_checkpoint"]

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
STATE = "state.pt"


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    model_name: str,
    model_config: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    step: int = 0,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (replacing an existing one).

    Args:
        path: checkpoint directory.
        model: the model (unwrapped, not DDP).
        model_name: registry name (:func:`recon.models.create_model`).
        model_config: the config overrides the model was built with.
        optimizer: optional optimizer whose state is saved.
        scheduler: optional LR scheduler whose state is saved.
        step: optimizer steps taken.
        extra: more JSON-serialisable metadata (e.g. the training config).

    Returns:
        The checkpoint path.
    """
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"model": model_name, "model_config": _jsonable(model_config), "step": step, **_jsonable(extra or {})}
    text = json.dumps(meta, indent=2, sort_keys=True)
    state = {
        "step": step,
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
    }

    from recvision.utils.atomic import atomic_dir, atomic_write

    def fill(folder: Path) -> None:
        atomic_write(folder / WEIGHTS, lambda f: save_file(tensors, f))
        atomic_write(folder / CONFIG, lambda f: Path(f).write_text(text))
        atomic_write(folder / STATE, lambda f: torch.save(state, f))

    return atomic_dir(path, fill)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint from its ``config.json`` and load its weights.

    Returns:
        ``(model, metadata)`` where metadata is the parsed ``config.json``.
    """
    from recon.models import build_model

    path = Path(path)
    meta = json.loads((path / CONFIG).read_text())
    return build_model(meta["model"], meta["model_config"], load_file(path / WEIGHTS, device=str(map_location))), meta


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    map_location: str | torch.device = "cpu",
) -> int:
    """Load weights (and optimizer / scheduler state where given) into existing objects.

    Returns:
        The step stored in the checkpoint.
    """
    path = Path(path)
    model.load_state_dict(load_file(path / WEIGHTS, device=str(map_location)))
    state = torch.load(path / STATE, map_location=map_location, weights_only=True)
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])
