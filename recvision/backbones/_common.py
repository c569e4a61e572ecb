"""Pieces shared by the isotropic (ViT-shaped) backbones: classifier head API, pretrained cfgs, residual branch."""

from __future__ import annotations

from typing import Any

import torch
from timm.data import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from timm.layers import LayerScale, get_device_dtype
from timm.models._features import feature_take_indices
from torch import nn

__all__ = ["IsotropicClassifierMixin", "cfg", "check_pretrained_source", "residual"]


def residual(x: torch.Tensor, branch: torch.Tensor, layer_scale: nn.Module, drop_path: nn.Module) -> torch.Tensor:
    """``x + DropPath(LayerScale(branch))``; without DropPath, one fused ``addcmul`` (no scaled temporary)."""
    if isinstance(drop_path, nn.Identity) and isinstance(layer_scale, LayerScale):
        return torch.addcmul(x, branch, layer_scale.gamma)
    return x + drop_path(layer_scale(branch))


def cfg(paper_ids: str, paper_name: str, **kwargs: Any) -> dict[str, Any]:
    """Pretrained cfg of a recvision model: ViT-like preprocessing, no hosted weights."""
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.9,
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": IMAGENET_INCEPTION_MEAN,
        "std": IMAGENET_INCEPTION_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "license": "apache-2.0",
        "paper_ids": paper_ids,
        "paper_name": paper_name,
        "notes": ("No official weights exist; pass pretrained_cfg_overlay=dict(file=...) to load local weights.",),
        **kwargs,
    }


def check_pretrained_source(variant: str, pretrained: bool, kwargs: dict[str, Any]) -> None:
    """Refuse ``pretrained=True`` without a weights source: timm would only warn and return random weights."""
    if not pretrained:
        return
    sources = ("file", "url", "state_dict", "hf_hub_id")
    for source in (kwargs.get("pretrained_cfg_overlay") or {}, kwargs.get("pretrained_cfg")):
        if isinstance(source, dict):
            found = any(source.get(k) for k in sources)
        else:
            found = any(getattr(source, k, None) for k in sources)
        if found:
            return
    raise ValueError(
        f"{variant}: pretrained=True needs local weights, e.g. "
        "pretrained_cfg_overlay=dict(file='weights.safetensors'); no weights are published for this model"
    )


class IsotropicClassifierMixin:
    """timm head API for models whose ``forward_features`` returns ``[B, N (+ suffix tokens), C]``.

    The model sets ``global_pools`` (allowed pooling names), ``global_pool``, ``num_classes``, ``embed_dim``,
    ``num_suffix_tokens`` (class tokens after the patches), ``blocks``, ``norm``, ``head``, ``head_drop``.
    """

    global_pools: tuple[str, ...]
    global_pool: str
    num_suffix_tokens: int

    def check_global_pool(self, global_pool: str) -> str:
        if global_pool not in self.global_pools:
            raise ValueError(f"global_pool must be one of {self.global_pools}; got {global_pool!r}")
        if global_pool in ("token", "token_last") and not self.num_suffix_tokens:
            raise ValueError("global_pool='token' needs a class token")
        return global_pool

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with one of ``num_classes`` outputs (0 = identity), optionally changing pooling."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = self.check_global_pool(global_pool)
        dd = get_device_dtype(self)
        self.head = nn.Linear(self.embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Pool tokens ``[B, N (+ suffix), C]`` to ``[B, C]`` according to ``global_pool`` (no-op for ``""``)."""
        if self.global_pool in ("token", "token_last"):
            return x[:, -1]
        patches = x[:, : x.shape[1] - self.num_suffix_tokens]
        if self.global_pool == "avg":
            return patches.mean(dim=1)
        if self.global_pool == "max":
            return patches.amax(dim=1)
        if self.global_pool == "avgmax":
            return 0.5 * (patches.mean(dim=1) + patches.amax(dim=1))
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens ``[B, N (+ suffix), C]`` -> logits ``[B, num_classes]`` (or pooled features if ``pre_logits``)."""
        x = self.head_drop(self.pool(x))
        return x if pre_logits else self.head(x)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks (and optionally norm and head) not needed for the intermediates ``indices``."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        self.feature_info = self.feature_info[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices
