"""Safe reading of foreign checkpoints: safetensors, or ``torch.load(weights_only=True)``; never arbitrary pickle.

Accepted sources:

- a mapping of parameter names to tensors (a state dict already in memory);
- ``*.safetensors``;
- ``*.pt`` / ``*.pth`` / ``*.ckpt`` / ``*.bin``: read with ``torch.load(weights_only=True)``. DIRECT's
  ``model_<iter>.pt`` is a dict whose ``"model"`` entry is the state dict (other entries: optimizer, scheduler,
  ``"sensitivity_model"``, metadata strings); a PyTorch Lightning ``.ckpt`` (ATOMMIC) has a ``"state_dict"`` entry
  (plus ``hyper_parameters``, loops, ...). Files whose unpickling needs any class beyond tensors and plain
  containers (e.g. an ``omegaconf.DictConfig`` in ``hyper_parameters``, a pickled ``nn.Module``) are refused with
  an explanation: re-save their ``state_dict`` with :func:`torch.save` or safetensors in the original environment;
- ``*.atommic`` (ATOMMIC's model archive, a tar holding ``model_weights.ckpt`` and ``model_config.yaml``): the
  weights member is read the same way, in memory; the YAML (parsed with ``yaml.safe_load``) is returned as config.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["StateSource", "read_state_dict"]

StateSource = str | os.PathLike | Mapping[str, torch.Tensor]
_TORCH_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin"}
_WRAPPER_KEYS = ("state_dict", "model")


def _torch_load(source: Any, name: str) -> Any:
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{name}: refusing to unpickle it: it needs more than tensors and plain containers "
            f"(torch.load(weights_only=True) said: {str(err).splitlines()[0]}). Only safetensors files and "
            "weights-only torch pickles are loaded; in the original environment, save "
            "`{k: v for k, v in checkpoint['state_dict' or 'model'].items()}` with torch.save or "
            "safetensors.torch.save_file and load that."
        ) from None


def _unwrap(obj: Any, name: str) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint object (flat dict, DIRECT ``model`` or Lightning ``state_dict``)."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{name}: expected a dict of tensors or a checkpoint dict; got {type(obj).__name__}")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    for key in _WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return dict(inner)
    raise ValueError(
        f"{name}: no state dict found: expected a flat dict of tensors or a dict with a 'state_dict' (Lightning / "
        f"ATOMMIC) or 'model' (DIRECT) entry of tensors; top-level keys: {sorted(map(str, obj))[:20]}"
    )


def _read_atommic_archive(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    import yaml

    with tarfile.open(path) as archive:
        members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
        if "model_weights.ckpt" not in members:
            raise ValueError(f"{path}: not an ATOMMIC archive: no model_weights.ckpt among {sorted(members)}")
        weights = archive.extractfile(members["model_weights.ckpt"]).read()
        config = None
        if "model_config.yaml" in members:
            config = yaml.safe_load(archive.extractfile(members["model_config.yaml"]).read())
    state = _unwrap(_torch_load(io.BytesIO(weights), f"{path}:model_weights.ckpt"), str(path))
    return state, config


def read_state_dict(source: StateSource) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Read a foreign state dict without executing pickled code.

    Args:
        source: a mapping of names to tensors, or a path (see the module docstring for the formats).

    Returns:
        ``(state_dict, config)``: the tensors by name, and the configuration stored beside them when there is one
        (a safetensors ``"config"`` metadata entry holding JSON, or an ``.atommic`` archive's YAML), else None.

    Raises:
        FileNotFoundError: for a missing path.
        ValueError: for an unknown suffix, a pickle that needs arbitrary classes, or no state dict inside.
    """
    if isinstance(source, Mapping):
        return _unwrap(source, "state dict"), None
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
            metadata = f.metadata() or {}
        config = json.loads(metadata["config"]) if "config" in metadata else None
        return state, config
    if suffix == ".atommic":
        return _read_atommic_archive(path)
    if suffix in _TORCH_SUFFIXES:
        return _unwrap(_torch_load(path, str(path)), str(path)), None
    raise ValueError(
        f"{path}: unknown checkpoint type {suffix!r}; expected .safetensors, .atommic or one of "
        f"{sorted(_TORCH_SUFFIXES)}"
    )
