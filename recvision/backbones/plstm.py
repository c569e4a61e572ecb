"""pLSTM vision backbone (pLSTM-Vis).

Paper: Pöppel et al., "pLSTM: parallelizable Linear Source Transition Mark networks"
(arXiv 2506.11997); reference configs ``ml-jku/plstm_experiments`` (``config/model/plstm_vision.yaml``,
``plstm_vis_{t,s,b}.yaml``). An isotropic encoder over the patch grid: patch 16, a learned 2-D position embedding
(resampled to other grids), ``depth`` pre-norm blocks alternating P-mode and D-mode pLSTM layers (``"PD"`` pairs,
12 layers), each block ``x + pLSTM(RMSNorm x)`` then ``x + MLP(RMSNorm x)`` (ratio 4, GELU, ungated), a final
RMSNorm, and corner pooling: each pLSTM layer runs in the four grid orientations (:mod:`recvision.layers.plstm`), so
the tokens of the four image corners are the ones that have seen the whole image along some orientation. The
reference concatenates them (``global_pool="corners"``, ``4 * dim`` features for the classifier); the default here,
``"corners_avg"``, averages them, so the pooled features are ``dim`` wide like ``forward_features``' tokens, as timm's
model contract requires of ``num_features`` (a checkpoint trained with the concatenating head loads with
``global_pool="corners"``).

``forward_features`` returns the token map channels-last, ``[B, H', W', C]`` (``output_fmt = "NHWC"``).
No weights are published for pLSTM-Vis in PyTorch; ``pretrained=True`` loads a local file given as
``pretrained_cfg_overlay=dict(file="path/to/weights.safetensors")``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from timm.layers import (
    LayerType,
    Mlp,
    PatchEmbed,
    RmsNorm,
    get_act_layer,
    get_norm_layer,
    resample_abs_pos_embed_nhwc,
    trunc_normal_,
)
from timm.models import generate_default_cfgs, named_apply, register_model
from timm.models.vision_transformer import init_weights_vit_timm
from torch import nn

from ..layers.plstm import PLSTM2D, check_plstm_impl
from ._common import (
    IsotropicClassifierMixin,
    build_backbone,
    cfg,
    drop_path_or_identity,
    drop_path_rates,
    filter_checkpoint,
    layer_scale_or_identity,
    residual,
)

__all__ = ["PLSTMVision", "PLSTMBlock", "checkpoint_filter_fn"]

_GLOBAL_POOLS = ("", "avg", "corners", "corners_avg")


class PLSTMBlock(nn.Module):
    """Pre-norm pLSTM block on the patch grid: ``x + DropPath(pLSTM(N(x)))`` then ``x + DropPath(MLP(N(x)))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mode: str = "P",
        chirality: str = "L",
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        init_values: float | None = None,
        plstm_impl: str = "auto",
        chunk_size: int | None = None,
        gate_form: str = "split",
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] = RmsNorm,
        mlp_layer: type[nn.Module] = Mlp,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """
        Args:
            dim: token width.
            num_heads: pLSTM heads.
            mode: ``"P"`` or ``"D"`` pLSTM layer.
            chirality: D-mode crossing, ``"L"`` or ``"R"``.
            mlp_ratio: MLP hidden width relative to ``dim``.
            qkv_bias: bias in the q/k/v projection.
            proj_drop: MLP dropout.
            drop_path: stochastic-depth rate.
            init_values: LayerScale initial value (``None``, the reference's choice, disables LayerScale).
            plstm_impl: op used by the pLSTM layer (see :class:`~recvision.layers.plstm.PLSTM2D`).
            chunk_size: chunk side of the chunked op.
            gate_form: P-mode gate form, ``"split"`` or ``"complement"`` (see
                :class:`~recvision.layers.plstm.PLSTM2D`).
            act_layer: MLP activation.
            norm_layer: normalisation layer.
            mlp_layer: MLP class.
            device: factory device.
            dtype: factory dtype.
        """
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.norm1 = norm_layer(dim, **dd)
        self.plstm = PLSTM2D(
            dim,
            num_heads,
            mode=mode,
            chirality=chirality,
            qkv_bias=qkv_bias,
            impl=plstm_impl,
            chunk_size=chunk_size,
            gate_form=gate_form,
            **dd,
        )
        self.ls1 = layer_scale_or_identity(dim, init_values, **dd)
        self.drop_path1 = drop_path_or_identity(drop_path)
        self.norm2 = norm_layer(dim, **dd)
        hidden = int(dim * mlp_ratio)
        self.mlp = mlp_layer(in_features=dim, hidden_features=hidden, act_layer=act_layer, drop=proj_drop, **dd)
        self.ls2 = layer_scale_or_identity(dim, init_values, **dd)
        self.drop_path2 = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: tokens ``[B, H', W', C]`` on the patch grid -> ``[B, H', W', C]``."""
        x = residual(x, self.plstm(self.norm1(x)), self.ls1, self.drop_path1)
        return residual(x, self.mlp(self.norm2(x)), self.ls2, self.drop_path2)


class PLSTMVision(IsotropicClassifierMixin, nn.Module):
    """pLSTM-Vis with the timm model API; ``forward_features`` returns the ``[B, H', W', C]`` token map."""

    dynamic_img_size: bool
    stem_pattern = r"^pos_embed|patch_embed"

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "corners_avg",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        init_values: float | None = None,
        block_modes: str = "PD",
        chirality: str = "L",
        pos_embed: bool = True,
        plstm_impl: str = "auto",
        chunk_size: int | None = None,
        gate_form: str = "split",
        dynamic_img_size: bool = False,
        dynamic_img_pad: bool = False,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        weight_init: str = "",
        embed_layer: Callable = PatchEmbed,
        norm_layer: LayerType | None = None,
        act_layer: LayerType | None = None,
        mlp_layer: type[nn.Module] = Mlp,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """
        Args:
            img_size: input size the position embedding is made for.
            patch_size: patch size.
            in_chans: input channels.
            num_classes: classifier outputs (0 = no classifier).
            global_pool: ``"corners_avg"`` (the mean of the four corner tokens: ``embed_dim`` features),
                ``"corners"`` (the reference head: the four corner tokens concatenated, ``4 * embed_dim`` features),
                ``"avg"`` (all tokens) or ``""`` (no pooling).
            embed_dim: token width.
            depth: number of blocks (pLSTM layers).
            num_heads: pLSTM heads per block.
            mlp_ratio: MLP hidden width relative to ``embed_dim``.
            qkv_bias: bias in the q/k/v projections.
            init_values: LayerScale initial value (``None`` disables LayerScale, as in the reference).
            block_modes: pLSTM mode of block ``i`` is ``block_modes[i % len(block_modes)]`` (``"P"``/``"D"``).
            chirality: D-mode crossing, ``"L"`` or ``"R"``.
            pos_embed: learn an absolute 2-D position embedding.
            plstm_impl: how the pLSTM layers run: ``"auto"``, ``"fused"`` (inference only), ``"combined"``,
                ``"chunk"``, ``"parallel"`` or ``"naive"`` (see :class:`~recvision.layers.plstm.PLSTM2D`; all give the
                same output up to float rounding).
            chunk_size: chunk side of the chunked op (``None``: the layer's default).
            gate_form: P-mode gate form: ``"split"`` (``(1 - o) S``, ``(1 - o) T`` on the down-going edge; the
                default, which keeps existing checkpoints' outputs) or ``"complement"`` (``1 - o S``, ``1 - o T``,
                the form of the authors' code ``ml-jku/plstm``, for checkpoints trained there).
            dynamic_img_size: accept any input size, resampling the position embedding to the patch grid.
            dynamic_img_pad: pad inputs to a multiple of the patch size.
            drop_rate: dropout before the classifier.
            pos_drop_rate: dropout after adding the position embedding.
            proj_drop_rate: MLP dropout.
            drop_path_rate: stochastic-depth rate (linearly increasing over the blocks).
            weight_init: ``""`` (timm ViT init for the linears, reference init for the gates) or ``"skip"``.
            embed_layer: patch-embedding class.
            norm_layer: normalisation layer (default RMSNorm, eps 1e-5).
            act_layer: MLP activation (default GELU).
            mlp_layer: MLP class.
            device: factory device (``"meta"`` works).
            dtype: factory dtype.
        """
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        if not block_modes or set(block_modes) - {"P", "D"}:
            raise ValueError(f"block_modes must be a non-empty string of 'P' and 'D'; got {block_modes!r}")
        norm_layer = get_norm_layer(norm_layer) or partial(RmsNorm, eps=1e-5)
        act_layer = get_act_layer(act_layer) or nn.GELU

        self.num_classes = num_classes
        self.num_prefix_tokens = 0
        self.num_suffix_tokens = 0
        self.global_pools = _GLOBAL_POOLS
        self.global_pool = self.check_global_pool(global_pool)
        self.num_features = self.embed_dim = embed_dim
        self.head_hidden_size = self.pooled_width(self.global_pool)
        self.output_fmt = "NHWC"
        self.dynamic_img_size = dynamic_img_size
        self.plstm_impl = check_plstm_impl(plstm_impl)
        self.grad_checkpointing = False

        reduction = self.init_patch_embed(
            embed_layer, img_size, patch_size, in_chans, dynamic_img_size, dynamic_img_pad, channels_last=True, **dd
        )
        grid_h, grid_w = self.patch_embed.grid_size
        self.pos_embed = nn.Parameter(torch.empty(1, grid_h, grid_w, embed_dim, **dd)) if pos_embed else None
        self.pos_drop = nn.Dropout(p=pos_drop_rate)

        dpr = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.Sequential(
            *[
                PLSTMBlock(
                    embed_dim,
                    num_heads,
                    mode=block_modes[i % len(block_modes)],
                    chirality=chirality,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    proj_drop=proj_drop_rate,
                    drop_path=dpr[i],
                    init_values=init_values,
                    plstm_impl=plstm_impl,
                    chunk_size=chunk_size,
                    gate_form=gate_form,
                    act_layer=act_layer,
                    norm_layer=norm_layer,
                    mlp_layer=mlp_layer,
                    **dd,
                )
                for i in range(depth)
            ]
        )
        self.init_neck_and_head(depth, reduction, norm_layer, num_classes, drop_rate, **dd)

        if weight_init != "skip" and self.norm.weight.device.type != "meta":
            self.init_weights()

    def init_weights(self) -> None:
        """Truncated-normal position embedding and linears (timm ViT), reference gate init, unit norm scales."""
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)
        named_apply(init_weights_vit_timm, self)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"} if self.pos_embed is not None else set()

    def set_plstm_impl(self, impl: str) -> None:
        """Switch every pLSTM layer to ``"auto"``, ``"fused"``, ``"combined"``, ``"chunk"``, ``"parallel"`` or
        ``"naive"``."""
        self.plstm_impl = check_plstm_impl(impl)
        for block in self.blocks:
            block.plstm.impl = impl

    def resample_pos_embed(
        self, pos_embed: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int]
    ) -> torch.Tensor:
        """Resample the 2-D position embedding ``[1, h, w, C]`` (its grid is its shape) -> ``[1, new_h, new_w, C]``."""
        return resample_abs_pos_embed_nhwc(pos_embed, list(new_grid))

    # ---------------------------------------------------------------------------------------------------------
    # head: pooling over the [B, H', W', C] map

    def pooled_width(self, global_pool: str) -> int:
        """``4 * embed_dim`` for ``"corners"`` (four tokens concatenated), else ``embed_dim``."""
        return 4 * self.embed_dim if global_pool == "corners" else self.embed_dim

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Pool the token map ``[B, H', W', C]``: ``"corners"`` -> ``[B, 4 C]`` (top-left, top-right,
        bottom-left, bottom-right), ``"corners_avg"`` -> their mean ``[B, C]``, ``"avg"`` -> ``[B, C]``,
        ``""`` -> unchanged."""
        if self.global_pool == "corners":
            return torch.cat([x[:, 0, 0], x[:, 0, -1], x[:, -1, 0], x[:, -1, -1]], dim=-1)
        if self.global_pool == "corners_avg":
            return torch.stack([x[:, 0, 0], x[:, 0, -1], x[:, -1, 0], x[:, -1, -1]], dim=1).mean(dim=1)
        if self.global_pool == "avg":
            return x.mean(dim=(1, 2))
        return x

    # ---------------------------------------------------------------------------------------------------------
    # trunk

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # [B, H', W', C]
        if self.pos_embed is not None:
            if self.dynamic_img_size:
                x = x + self.resample_pos_embed(self.pos_embed, tuple(x.shape[1:3]), self.patch_embed.grid_size)
            else:
                x = x + self.pos_embed
        return self.pos_drop(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Forward that also returns the outputs of selected blocks.

        Args:
            x: images ``[B, C, H, W]``.
            indices: last ``n`` blocks if an int, all if ``None``, else the listed block indices.
            norm: apply the final norm to the intermediates.
            stop_early: stop after the last requested block.
            output_fmt: ``"NCHW"`` (``[B, C, H', W']``), ``"NHWC"`` (``[B, H', W', C]``) or ``"NLC"``
                (``[B, H' W', C]``, row-major).
            intermediates_only: return only the intermediates.

        Returns:
            ``(final_features [B, H', W', C], intermediates)`` or just the intermediates.
        """
        take_indices, blocks = self.intermediate_blocks(indices, stop_early, output_fmt, ("NCHW", "NHWC", "NLC"))
        x, intermediates = self.collect_intermediates(self._embed(x), blocks, take_indices, norm)
        if output_fmt == "NCHW":
            intermediates = [y.permute(0, 3, 1, 2).contiguous() for y in intermediates]
        elif output_fmt == "NLC":
            intermediates = [y.flatten(1, 2) for y in intermediates]
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` -> normalised token map ``[B, H', W', C]``."""
        return self.norm(self.run_blocks(self._embed(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` -> logits ``[B, num_classes]``."""
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: PLSTMVision) -> dict[str, torch.Tensor]:
    """Adapt a checkpoint to ``model``: unwrap ``model``/``state_dict`` containers, resample the 2-D position
    embedding ``[1, h, w, C]`` to the model's patch grid, and the patch-embedding kernel to its patch size."""

    def resample(value: torch.Tensor) -> torch.Tensor:
        if value.ndim != 4 or value.shape[0] != 1 or value.shape[-1] != model.embed_dim:
            raise ValueError(
                f"checkpoint pos_embed has shape {tuple(value.shape)}; expected [1, h, w, {model.embed_dim}] "
                f"to resample to the model's grid {model.patch_embed.grid_size}"
            )
        return model.resample_pos_embed(value, model.patch_embed.grid_size, tuple(value.shape[1:3]))

    return filter_checkpoint(state_dict, model, resample)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("pool_size", (14, 14))
    return cfg("arXiv:2506.11997", "pLSTM: parallelizable Linear Source Transition Mark networks", **kwargs)


default_cfgs = generate_default_cfgs(
    {
        "plstm_femto": _cfg(input_size=(3, 64, 64), pool_size=(8, 8)),
        "plstm_tiny": _cfg(),
        "plstm_small": _cfg(),
        "plstm_base": _cfg(),
        "test_plstm": _cfg(input_size=(3, 32, 32), pool_size=(4, 4), fixed_input_size=False),
    }
)


def _create_plstm(variant: str, pretrained: bool = False, **kwargs: Any) -> PLSTMVision:
    return build_backbone(PLSTMVision, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs)


@register_model
def plstm_femto(pretrained: bool = False, **kwargs: Any) -> PLSTMVision:
    """pLSTM-Vis femto/8 at 64 px (not in the paper; for small-image studies): width 64, 4 blocks (2 PD), 2 heads."""
    model_args = dict(img_size=64, patch_size=8, embed_dim=64, depth=4, num_heads=2)
    return _create_plstm("plstm_femto", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def plstm_tiny(pretrained: bool = False, **kwargs: Any) -> PLSTMVision:
    """pLSTM-Vis-T/16: width 192, 12 blocks (6 PD pairs), 3 heads."""
    model_args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
    return _create_plstm("plstm_tiny", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def plstm_small(pretrained: bool = False, **kwargs: Any) -> PLSTMVision:
    """pLSTM-Vis-S/16: width 384, 12 blocks (6 PD pairs), 6 heads."""
    model_args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return _create_plstm("plstm_small", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def plstm_base(pretrained: bool = False, **kwargs: Any) -> PLSTMVision:
    """pLSTM-Vis-B/16: width 768, 12 blocks (6 PD pairs), 12 heads."""
    model_args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
    return _create_plstm("plstm_base", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def test_plstm(pretrained: bool = False, **kwargs: Any) -> PLSTMVision:
    """Tiny pLSTM-Vis for tests: 32 px, patch 8, width 64, 4 blocks (2 PD pairs), 2 heads."""
    model_args = dict(img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=2)
    return _create_plstm("test_plstm", pretrained=pretrained, **dict(model_args, **kwargs))
