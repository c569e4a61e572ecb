"""Default weights shipped with the package: small CPU-trained CIRIM, RIM (IndRNN) and RecurrentVarNet.

Each model ``<name>`` is two files here: ``<name>.safetensors`` (the state dict) and ``<name>.json`` (the model
name and config overrides, the data settings it was trained with, the resolved training settings, the training
command and its final validation scores). ``MODEL_CARD.md`` describes the data, masks, steps and the measured
SSIM / PSNR / NMSE against zero-filling and compressed sensing.

Use::

    from recon.training.data import reconstruct
    from recon.weights import default_config, load_default_model

    model = load_default_model("cirim")               # eval mode, on the CPU
    image = reconstruct(model, masked_kspace, mask, default_config("cirim").data)   # [H, W] magnitude

The models expect the inputs of :func:`recon.training.data.prepare_inputs`: k-space divided by the maximum of its
zero-filled RSS image and ACS coil maps; :func:`~recon.training.data.reconstruct` does this and scales back.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn

from recon.models import MODEL_NAMES, build_model

__all__ = ["WEIGHTS_DIR", "default_config", "default_metadata", "default_model_names", "load_default_model"]

WEIGHTS_DIR = Path(__file__).resolve().parent
_NAMES = MODEL_NAMES  # every registered model ships default weights


def default_model_names() -> list[str]:
    """Names of the models with shipped weights."""
    return list(_NAMES)


def _check(name: str) -> None:
    if name not in _NAMES:
        raise ValueError(f"no default weights for {name!r}; valid names: {default_model_names()}")


@lru_cache(maxsize=8)
def _read_metadata(name: str) -> dict[str, Any]:
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the default weights' config is missing from this installation")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable config ({err})") from None
    if not isinstance(meta, dict) or meta.get("model") != name or not isinstance(meta.get("model_config"), dict):
        raise ValueError(f"{path}: expected a JSON object with model={name!r} and a model_config mapping")
    return meta


def default_metadata(name: str) -> dict[str, Any]:
    """The parsed ``<name>.json`` (a copy): ``model``, ``model_config``, ``data``, ``train``, ``step``, ``val``,
    ``command``.

    Raises:
        ValueError: for an unknown name (listing the valid ones) or an invalid file.
    """
    _check(name)
    return json.loads(json.dumps(_read_metadata(name)))


def default_config(name: str) -> Any:
    """The :class:`recon.config.ReconConfig` the default weights of ``name`` were trained with (its ``data``
    field is the pre-processing to use at inference)."""
    from recon.config import config_from_dict

    meta = default_metadata(name)
    raw = {"model": {"name": name, **meta["model_config"]}, "train": meta.get("train"), "data": meta.get("data")}
    return config_from_dict(raw, WEIGHTS_DIR / f"{name}.json")


def load_default_model(name: str) -> nn.Module:
    """Build model ``name`` with its shipped weights, in eval mode on the CPU.

    Args:
        name: ``"cirim"``, ``"rim"`` or ``"recurrentvarnet"``.

    Raises:
        ValueError: for an unknown name (listing the valid ones) or invalid files; FileNotFoundError when the
            files are missing from the installation.
    """
    meta = default_metadata(name)
    weights = WEIGHTS_DIR / f"{name}.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: the default weights are missing from this installation")
    try:
        model = build_model(name, meta["model_config"], load_file(weights, device="cpu"))
    except Exception as err:  # safetensors' own error type for corrupt files, RuntimeError for mismatched keys
        raise ValueError(f"{weights}: weights do not fit the {name!r} model of {name}.json ({err})") from None
    return model.eval()
