"""Checkpoints of a fine-tuning run: ``last.safetensors`` / ``best.safetensors`` (weights), ``last.state.pt``
(optimizer, scaler, counters, history; read with ``weights_only=True``) and ``results.json``, each written atomically
(:func:`recvision.utils.atomic.atomic_write`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recvision.finetune.args import FinetuneError
from recvision.finetune.distributed import unwrap
from recvision.utils.atomic import atomic_write

__all__ = ["BEST", "LAST", "STATE", "checkpoint_model_name", "load_checkpoint", "save_checkpoint", "save_results"]

LAST, BEST, STATE = "last.safetensors", "best.safetensors", "last.state.pt"


def save_checkpoint(folder: Path, model: nn.Module, state: dict[str, Any], best: bool = False) -> None:
    """Write ``last.safetensors`` (+ ``best.safetensors``) and ``last.state.pt``, each atomically."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    model = unwrap(model)
    metadata = {"model": str(state["model"]), "epoch": str(state["epoch"])}
    atomic_write(folder / LAST, lambda p: save_model(model, p, metadata=metadata))
    if best:
        atomic_write(folder / BEST, lambda p: save_model(model, p, metadata=metadata))
    atomic_write(folder / STATE, lambda p: torch.save(state, p))


def checkpoint_model_name(folder: Path) -> str | None:
    """The model name recorded in ``folder``'s ``last.safetensors`` metadata (``None`` if unreadable or absent);
    cheap, so that ``--resume`` with another ``--model`` fails before data and model load."""
    from safetensors import safe_open

    try:
        with safe_open(str(folder / LAST), framework="pt") as f:
            return (f.metadata() or {}).get("model")
    except Exception:  # noqa: BLE001  (a missing or damaged file is reported by load_checkpoint)
        return None


def load_checkpoint(
    folder: Path, model: nn.Module, device: torch.device, model_name: str | None = None
) -> dict[str, Any]:
    """Load ``last.safetensors`` into ``model`` and return the training state (``weights_only=True``); with
    ``model_name``, first check that the checkpoint is of that model."""
    from safetensors.torch import load_model

    state = torch.load(folder / STATE, map_location=device, weights_only=True)
    # checked before the weights: a mismatch of names would otherwise read as weights that "do not fit"
    if model_name is not None and state.get("model") not in (None, model_name):
        raise FinetuneError(f"--resume: {folder} holds a {state['model']} checkpoint, --model is {model_name}")
    missing, unexpected = load_model(unwrap(model), str(folder / LAST), strict=False, device=str(device))
    if missing or unexpected:
        raise FinetuneError(
            f"--resume {folder}: weights do not fit {state.get('model')!r}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    return state


def save_results(folder: Path, summary: dict[str, Any]) -> None:
    """Write ``results.json`` (the final table's numbers and the per-epoch history), atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "results.json", lambda p: Path(p).write_text(json.dumps(summary, indent=1)))
