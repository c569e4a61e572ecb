"""Safe reading of foreign checkpoints: safetensors, or ``torch.load(weights_only=True)``; never arbitrary pickle.

Accepted sources:

- a mapping of parameter names to tensors (a state dict already in memory);
- ``*.safetensors``;
- ``*.pt`` / ``*.pth`` / ``*.ckpt`` / ``*.bin``: read with ``torch.load(weights_only=True)``. DIRECT's
  ``model_<iter>.pt`` is a dict whose ``"model"`` entry is the state dict (other entries: optimizer, scheduler,
  ``"sensitivity_model"``, metadata strings); a PyTorch Lightning ``.ckpt`` (ATOMMIC) has a ``"state_dict"`` entry
  (plus ``hyper_parameters``, loops, ...). When its ``hyper_parameters`` hold an OmegaConf config, the file is read
  again with only the OmegaConf container, metadata and plain node classes (and the builtins they name) allowed
  (:func:`torch.serialization.safe_globals`; needs ``omegaconf`` installed), and that config (``cfg``, as ATOMMIC
  stores it) is returned as plain data. Files whose unpickling needs any other class (a pickled ``nn.Module``, an
  arbitrary callable) are refused with an explanation: re-save their ``state_dict`` with :func:`torch.save` or
  safetensors in the original environment;
- ``*.atommic`` (ATOMMIC's model archive, a tar holding ``model_weights.ckpt`` and ``model_config.yaml``): the
  weights member is read the same way, in memory; the YAML (parsed with ``yaml.safe_load``) is returned as config.
"""

from __future__ import annotations

import collections
import importlib
import io
import json
import os
import pickle
import tarfile
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["StateSource", "read_state_dict"]

StateSource = str | os.PathLike | Mapping[str, torch.Tensor]
_TORCH_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin"}
_WRAPPER_KEYS = ("state_dict", "model")


# What the hyper-parameters of a Lightning checkpoint (ATOMMIC's ``hyper_parameters["cfg"]``) may hold besides plain
# containers: an untyped OmegaConf config (its containers, their metadata and the plain value nodes) and the builtin
# and typing names that metadata refers to. These are the only globals ever unpickled beyond torch's own allow-list.
_OMEGACONF_GLOBALS = (
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.nodes.AnyNode",
    "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode",
    "omegaconf.nodes.BooleanNode",
    "omegaconf.nodes.BytesNode",
    "omegaconf.nodes.PathNode",
)
_PLAIN_GLOBALS = {
    "typing.Any": typing.Any,
    "builtins.int": int,
    "builtins.float": float,
    "builtins.str": str,
    "builtins.bool": bool,
    "builtins.bytes": bytes,
    "builtins.dict": dict,
    "builtins.list": list,
    "collections.defaultdict": collections.defaultdict,
}


def _refusal(name: str, reason: str) -> ValueError:
    return ValueError(
        f"{name}: refusing to unpickle it: {reason}. Only safetensors files, weights-only torch pickles and "
        "Lightning checkpoints whose hyper-parameters are plain or OmegaConf configs are loaded; in the original "
        "environment, save `{k: v for k, v in checkpoint['state_dict' or 'model'].items()}` with torch.save or "
        "safetensors.torch.save_file and load that."
    )


def _allowed_globals(needed: list[str], name: str) -> list[Any]:
    """The objects of ``needed`` (names ``module.qualname``) when every one is on the allow-list above."""
    unknown = [n for n in needed if n not in _PLAIN_GLOBALS and n not in _OMEGACONF_GLOBALS]
    if unknown:
        raise _refusal(name, f"it needs {', '.join(sorted(unknown)[:5])}, which is not on the allow-list")
    allowed: list[Any] = [_PLAIN_GLOBALS[n] for n in needed if n in _PLAIN_GLOBALS]
    omegaconf_names = [n for n in needed if n in _OMEGACONF_GLOBALS]
    if omegaconf_names:
        try:
            import omegaconf  # noqa: F401 - the submodules below are imported with it
        except ImportError:
            raise ValueError(
                f"{name}: its hyper-parameters are an OmegaConf config; install omegaconf to read it (pip install "
                "omegaconf), or re-save the state dict alone with torch.save / safetensors"
            ) from None
        for full in omegaconf_names:
            module, _, attr = full.rpartition(".")
            allowed.append(getattr(importlib.import_module(module), attr))
    return allowed


def _torch_load(source: Any, name: str) -> Any:
    """``torch.load(weights_only=True)``; a checkpoint that needs more is read again with only the allow-listed
    globals it names added (a Lightning ``.ckpt`` with OmegaConf hyper-parameters), else refused."""

    def load() -> Any:
        if hasattr(source, "seek"):
            source.seek(0)
        return torch.load(source, map_location="cpu", weights_only=True)

    try:
        return load()
    except pickle.UnpicklingError as err:
        first = str(err).splitlines()[0]
    if hasattr(source, "seek"):
        source.seek(0)
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(source)
    except Exception:  # not a zip checkpoint (a legacy or raw pickle): nothing to allow-list
        needed = []
    if not needed:
        raise _refusal(name, f"it needs more than tensors and plain containers (torch.load said: {first})")
    with torch.serialization.safe_globals(_allowed_globals(needed, name)):
        try:
            return load()
        except pickle.UnpicklingError as err:
            raise _refusal(name, f"torch.load(weights_only=True) said: {str(err).splitlines()[0]}") from None


def _hyper_parameters(obj: Any) -> dict[str, Any] | None:
    """A Lightning checkpoint's model config as plain data: ``hyper_parameters["cfg"]`` (ATOMMIC), or the whole
    ``hyper_parameters``; None when there are none."""
    if not isinstance(obj, Mapping) or obj.get("hyper_parameters") is None:
        return None
    hparams = obj["hyper_parameters"]
    if isinstance(hparams, Mapping) and "cfg" in hparams:
        hparams = hparams["cfg"]
    if type(hparams).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        hparams = OmegaConf.to_container(hparams, resolve=False)
    return dict(hparams) if isinstance(hparams, Mapping) else None


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
        (a safetensors ``"config"`` metadata entry holding JSON, an ``.atommic`` archive's YAML, a Lightning
        checkpoint's ``hyper_parameters``), else None.

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
        obj = _torch_load(path, str(path))
        return _unwrap(obj, str(path)), _hyper_parameters(obj)
    raise ValueError(
        f"{path}: unknown checkpoint type {suffix!r}; expected .safetensors, .atommic or one of "
        f"{sorted(_TORCH_SUFFIXES)}"
    )
