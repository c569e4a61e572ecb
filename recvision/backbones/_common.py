"""Pieces shared by the isotropic (ViT-shaped) backbones: the timm model API (head, intermediates, input size),
patch embedding, pretrained cfgs and loading, residual branches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from timm.data import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from timm.layers import DropPath, LayerScale, get_device_dtype, resample_patch_embed
from timm.models import build_model_with_cfg, checkpoint_seq
from timm.models._features import feature_take_indices
from torch import nn

__all__ = [
    "IsotropicClassifierMixin",
    "build_backbone",
    "cfg",
    "check_pretrained_source",
    "drop_path_or_identity",
    "drop_path_rates",
    "filter_checkpoint",
    "layer_scale_or_identity",
    "residual",
]

ModelT = TypeVar("ModelT", bound=nn.Module)


def residual(x: torch.Tensor, branch: torch.Tensor, layer_scale: nn.Module, drop_path: nn.Module) -> torch.Tensor:
    """``x + DropPath(LayerScale(branch))``; without DropPath, one fused ``addcmul`` (no scaled temporary)."""
    if isinstance(drop_path, nn.Identity) and isinstance(layer_scale, LayerScale):
        return torch.addcmul(x, branch, layer_scale.gamma)
    return x + drop_path(layer_scale(branch))


def layer_scale_or_identity(dim: int, init_values: float | None, **dd: Any) -> nn.Module:
    """``LayerScale(dim)`` starting at ``init_values``, or identity when ``init_values`` is ``None`` or 0."""
    return LayerScale(dim, init_values=init_values, **dd) if init_values else nn.Identity()


def drop_path_or_identity(rate: float) -> nn.Module:
    """Stochastic depth with drop probability ``rate``; identity (no op at all) for ``rate == 0``."""
    return DropPath(rate) if rate > 0.0 else nn.Identity()


def drop_path_rates(drop_path_rate: float, depth: int) -> list[float]:
    """Stochastic-depth rate per block, rising linearly from 0 to ``drop_path_rate`` over ``depth`` blocks."""
    return [x.item() for x in torch.linspace(0, drop_path_rate, depth, device="cpu")]


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


def build_backbone(
    model_cls: type[ModelT],
    variant: str,
    pretrained: bool,
    pretrained_filter_fn: Callable[..., dict[str, torch.Tensor]] | None = None,
    **kwargs: Any,
) -> ModelT:
    """timm ``build_model_with_cfg`` for a recvision backbone: feature extraction by block getter (``out_indices``
    default 3), and ``pretrained=True`` refused unless a local weights source is given."""
    out_indices = kwargs.pop("out_indices", 3)
    check_pretrained_source(variant, pretrained, kwargs)
    return build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        pretrained_filter_fn=pretrained_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )


def filter_checkpoint(
    state_dict: dict[str, torch.Tensor],
    model: nn.Module,
    resample_pos_embed: Callable[[torch.Tensor], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Adapt a checkpoint to ``model``: unwrap ``model``/``state_dict`` containers, pass a ``pos_embed`` whose
    shape differs from the model's through ``resample_pos_embed`` (which validates it and resamples it to the
    model's patch grid), and resample the patch-embedding kernel if the patch size differs."""
    state_dict = state_dict.get("model", state_dict)
    state_dict = state_dict.get("state_dict", state_dict)
    pos_embed = getattr(model, "pos_embed", None)
    out = {}
    for key, value in state_dict.items():
        if key == "pos_embed" and pos_embed is not None and value.shape != pos_embed.shape:
            value = resample_pos_embed(value)
        elif key == "patch_embed.proj.weight" and value.shape[-2:] != model.patch_embed.proj.weight.shape[-2:]:
            value = resample_patch_embed(value, list(model.patch_embed.proj.weight.shape[-2:]))
        out[key] = value
    return out


def _or_list(names: tuple[str, ...]) -> str:
    """``('A', 'B', 'C')`` -> ``"'A', 'B' or 'C'"`` for error messages."""
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


class IsotropicClassifierMixin:
    """timm model API of the isotropic backbones (classifier head, intermediates, pruning, input size, stem groups).

    :meth:`pool` handles ``forward_features`` output ``[B, N (+ suffix tokens), C]``; a model with another layout
    overrides :meth:`pool` (and :meth:`pooled_width` when pooling changes the width). The model sets
    ``global_pools`` (allowed pooling names), ``global_pool``, ``num_classes``, ``embed_dim``, ``head_hidden_size``,
    ``num_suffix_tokens`` (class tokens after the patches) and ``grad_checkpointing``; it calls
    :meth:`init_patch_embed`, then :meth:`init_neck_and_head` after building ``blocks``. Models with a position
    embedding ``pos_embed`` implement :meth:`resample_pos_embed`; ``stem_pattern`` names the stem parameters for
    :meth:`group_matcher`.
    """

    global_pools: tuple[str, ...]
    global_pool: str
    num_suffix_tokens: int
    stem_pattern: str = r"^patch_embed"
    # forward_features is channels-last in every family ([B, N, C] tokens or a [B, H', W', C] map); timm's
    # contract reads the feature axis from this attribute
    feature_dim: int = -1

    def init_patch_embed(
        self,
        embed_layer: Callable[..., nn.Module],
        img_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        in_chans: int,
        dynamic_img_size: bool,
        dynamic_img_pad: bool,
        channels_last: bool,
        **dd: Any,
    ) -> int | tuple[int, int]:
        """Create ``patch_embed`` (width ``embed_dim``) and return its feature reduction (stride).

        ``dynamic_img_size`` makes the embedding accept any input size; ``channels_last`` makes it return the patch
        grid ``[B, H', W', C]`` instead of the layer's default (``[B, N, C]`` for timm's ``PatchEmbed``).
        """
        # timm's model contract reads the input channels from the model (test_models.py checks it against the cfg)
        self.in_chans = in_chans
        embed_args: dict[str, Any] = {}
        if dynamic_img_size:
            embed_args["strict_img_size"] = False
        if channels_last:
            embed_args["output_fmt"] = "NHWC"
        self.patch_embed = embed_layer(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=self.embed_dim,
            dynamic_img_pad=dynamic_img_pad,
            **embed_args,
            **dd,
        )
        return self.patch_embed.feat_ratio() if hasattr(self.patch_embed, "feat_ratio") else patch_size

    def init_neck_and_head(
        self,
        depth: int,
        reduction: int | tuple[int, int],
        norm_layer: Callable[..., nn.Module],
        num_classes: int,
        drop_rate: float,
        **dd: Any,
    ) -> None:
        """Create ``feature_info`` (one entry per block), the final ``norm``, ``head_drop`` and the classifier."""
        self.feature_info = [
            dict(module=f"blocks.{i}", num_chs=self.embed_dim, reduction=reduction) for i in range(depth)
        ]
        self.norm = norm_layer(self.embed_dim, **dd)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.head_hidden_size, num_classes, **dd) if num_classes > 0 else nn.Identity()

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
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=self.stem_pattern, blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    def resample_pos_embed(
        self, pos_embed: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int]
    ) -> torch.Tensor:
        """Resample a position embedding made for the patch grid ``old_grid`` to ``new_grid``."""
        raise NotImplementedError(f"{type(self).__name__} has no position embedding to resample")

    def set_input_size(self, img_size: int | tuple[int, int] | None = None) -> None:
        """Change the input size the model is built for, resampling the position embedding (if any)."""
        prev_grid = self.patch_embed.grid_size
        self.patch_embed.set_input_size(img_size=img_size)
        pos_embed = getattr(self, "pos_embed", None)
        if pos_embed is not None and self.patch_embed.grid_size != prev_grid:
            self.pos_embed = nn.Parameter(
                self.resample_pos_embed(pos_embed, self.patch_embed.grid_size, prev_grid),
                requires_grad=pos_embed.requires_grad,
            )

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def pooled_width(self, global_pool: str) -> int:
        """Width of the pooled features that ``global_pool`` gives (the classifier's input width)."""
        return self.embed_dim

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with one of ``num_classes`` outputs (0 = identity), optionally changing pooling."""
        if global_pool is not None:
            self.global_pool = self.check_global_pool(global_pool)
        self.head_hidden_size = self.pooled_width(self.global_pool)
        self.num_classes = num_classes
        dd = get_device_dtype(self)
        self.head = nn.Linear(self.head_hidden_size, num_classes, **dd) if num_classes > 0 else nn.Identity()
        # a fresh module starts in training mode; keep the model's mode (timm's contract checks every module)
        self.head.train(self.training)

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

    def run_block(self, block: nn.Module, x: torch.Tensor, *args: Any) -> torch.Tensor:
        """``block(x, *args)``, through activation checkpointing when ``grad_checkpointing`` is on."""
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return torch.utils.checkpoint.checkpoint(block, x, *args, use_reentrant=False)
        return block(x, *args)

    def run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """Run the ``nn.Sequential`` of ``blocks`` over ``x`` (checkpointed per block when enabled)."""
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)

    def intermediate_blocks(
        self,
        indices: int | list[int] | None,
        stop_early: bool,
        output_fmt: str,
        output_fmts: tuple[str, ...] = ("NCHW", "NLC"),
    ) -> tuple[list[int], nn.Module]:
        """Check ``output_fmt`` against ``output_fmts``; return the block indices to take and the blocks to run."""
        if output_fmt not in output_fmts:
            raise ValueError(f"output_fmt must be {_or_list(output_fmts)}; got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        blocks = self.blocks[: max_index + 1] if stop_early else self.blocks
        return take_indices, blocks

    def collect_intermediates(
        self, x: torch.Tensor, blocks: nn.Module, take_indices: list[int], norm: bool, *args: Any
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run ``blocks`` (each as ``block(x, *args)``); return the last output and those of ``take_indices``,
        through the final norm if ``norm``. Shapes are the blocks' token layout, unchanged."""
        intermediates = []
        for i, block in enumerate(blocks):
            x = self.run_block(block, x, *args)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm else x)
        return x, intermediates
