"""Recurrent MRI reconstruction models (RIM, CIRIM, RecurrentVarNet) and their registry.

All models are called as ``model(masked_kspace [B, C, H, W] complex, mask [B|1, 1, 1|H, W] real, sens_maps
[B, C, H, W] complex) -> complex image [B, H, W]``; ``model.predictions(...)`` returns every intermediate estimate
as a list over cascades of lists over time steps (RIM and RecurrentVarNet have one "cascade").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

from recon.models._common import ImageInit
from recon.models.blocks import CellType, ConvGRUCell, ConvMGUCell, IndRNNCell
from recon.models.cirim import CIRIM, CIRIMConfig
from recon.models.recurrent_varnet import RecurrentVarNet, RecurrentVarNetConfig
from recon.models.rim import RIM, RIMConfig

__all__ = [
    "CIRIM",
    "CIRIMConfig",
    "CellType",
    "ConvGRUCell",
    "ConvMGUCell",
    "ImageInit",
    "IndRNNCell",
    "MODELS",
    "MODEL_NAMES",
    "RIM",
    "RIMConfig",
    "RecurrentVarNet",
    "RecurrentVarNetConfig",
    "build_model",
    "create_model",
    "list_models",
]

MODELS: dict[str, tuple[type[nn.Module], type]] = {
    "cirim": (CIRIM, CIRIMConfig),
    "rim": (RIM, RIMConfig),
    "recurrentvarnet": (RecurrentVarNet, RecurrentVarNetConfig),
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
"""The model names, in the order the command line lists them (the one list: CLI choices, demo, registry)."""


def list_models() -> list[str]:
    """The registered model names."""
    return sorted(MODELS)


def create_model(name: str, **cfg: Any) -> nn.Module:
    """Build a registered model from its name and config overrides.

    Args:
        name: ``"rim"``, ``"cirim"`` or ``"recurrentvarnet"``.
        **cfg: fields of the model's config dataclass to override.

    Returns:
        The model.

    Raises:
        ValueError: for an unknown name or config key (listing the valid ones) or an invalid value.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {list_models()}")
    model_cls, config_cls = MODELS[name]
    valid = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise ValueError(f"unknown config keys {unknown} for model {name!r}; valid keys: {valid}")
    return model_cls(config_cls(**cfg))


def build_model(
    name: str, model_config: Mapping[str, Any] | None = None, state_dict: Mapping[str, Any] | None = None
) -> nn.Module:
    """Build model ``name`` from a stored config and load its weights: the one way files become models (checkpoint
    folders, ``.safetensors`` / ``.pt`` files given to the command line, training checkpoints).

    Args:
        name: A registered model name.
        model_config: Config overrides as stored in JSON (lists become tuples, as the config dataclasses expect).
        state_dict: Weights to load strictly (keys and shapes must match), or ``None`` for a fresh model.

    Returns:
        The model (train mode, as :func:`create_model` builds it).

    Raises:
        ValueError: For an unknown name or config key (:func:`create_model`).
        RuntimeError: When the weights do not fit the model (``load_state_dict``).
    """
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(model_config or {}).items()}
    model = create_model(name, **config)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model
