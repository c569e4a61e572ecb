"""The model of a fine-tuning run: ``timm.create_model`` with the run's classes, input size and local weights."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import timm
import torch
from torch import nn

import recvision  # noqa: F401  (registers recvision's backbones with timm)
from recvision.finetune.args import FinetuneError

__all__ = ["check_weights_file", "create_finetune_model", "read_weights_file"]


def read_weights_file(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file as timm reads it (``.safetensors``, else ``torch.load(weights_only=True)``,
    unwrapping ``state_dict`` / ``model``); :class:`FinetuneError` for anything that is not a weights file."""
    from timm.models import load_state_dict

    # a run's last.state.pt is the obvious wrong guess: timm reads its "model" entry (the model's name) as weights
    hint = (
        "; that is a training state: pass last.safetensors, or --resume its folder"
        if path.endswith(".state.pt")
        else ""
    )
    try:
        state = load_state_dict(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001  (pickle, zip and safetensors errors share no base class)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0]  # torch advises at length
        raise FinetuneError(
            f"--pretrained-file {path}: not a weights file (.safetensors or .pth) ({type(exc).__name__}: {first}){hint}"
        ) from None
    if not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise FinetuneError(f"--pretrained-file {path}: holds no model weights (name -> tensor){hint}")
    return state


def check_weights_file(path: str) -> None:
    """Read ``path`` before anything is built, so that a wrong file fails as one line at once."""
    read_weights_file(path)


def _check_weights_fit(path: str, model: nn.Module) -> str | None:
    """Refuse weights that fit none of the model's (non-classifier) tensors: timm then only warns, and the run would
    train from random init. Returns what stays random when the file fits in part (``None``: everything fits)."""
    classifier = model.pretrained_cfg.get("classifier") if isinstance(model.pretrained_cfg, dict) else None
    heads = {classifier} if isinstance(classifier, str) else set(classifier or ())
    is_head = lambda k: any(k.startswith(f"{h}.") for h in heads)  # noqa: E731
    wanted = {k for k in model.state_dict() if not is_head(k)}
    found = {k for k in read_weights_file(path) if not is_head(k)}
    matched, missing, unexpected = wanted & found, sorted(wanted - found), sorted(found - wanted)
    if wanted and not matched:
        raise FinetuneError(
            f"--pretrained-file {path}: none of {_architecture(model)}'s weights are in it "
            f"(0 matched, {len(missing)} missing, {len(unexpected)} unexpected keys, e.g. {unexpected[:3]})"
        )
    if not missing:
        return None
    return f"{len(matched)} of {len(wanted)} weights in the file, {len(missing)} missing, e.g. {missing[:5]}"


def _architecture(model: nn.Module) -> str:
    return str(getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__))


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


def create_finetune_model(args: argparse.Namespace, num_classes: int, log: Callable[[str], None] = print) -> nn.Module:
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
    if not args.pretrained_file:
        return _create(args, kwargs)
    path = str(args.pretrained_file)
    # match the file's names against a weightless (meta) build first: timm's own load only warns about a file of
    # another model, and its errors for a partial fit are a long multi-line list
    skeleton = {k: v for k, v in kwargs.items() if k not in ("pretrained", "pretrained_cfg_overlay")}
    missing = _check_weights_fit(path, _create(args, {**skeleton, "device": "meta"}))
    try:
        model = _create(args, kwargs)
    except FinetuneError:
        if missing is None:
            raise
        raise FinetuneError(f"--pretrained-file {path}: does not fit {args.model}: {missing}") from None
    if missing is not None:  # timm loaded it non-strictly (a classifier of another size): say what stays random
        log(f"--pretrained-file {path}: loaded in part; {missing} (they stay random)")
    return model


def _create(args: argparse.Namespace, kwargs: dict[str, Any]) -> nn.Module:
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
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # torch lists every key, one a line
            raise FinetuneError(
                f"--pretrained-file {args.pretrained_file}: does not fit {args.model}: {first}"
            ) from exc
        raise
