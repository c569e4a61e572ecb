"""The model of a fine-tuning run: ``timm.create_model`` with the run's classes, input size and local weights."""

from __future__ import annotations

import argparse
from typing import Any

import timm
import torch
from torch import nn

import recvision  # noqa: F401  (registers recvision's backbones with timm)
from recvision.finetune.args import FinetuneError

__all__ = ["create_finetune_model"]


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
