"""LightNet for images: an isotropic backbone whose token mixer is an additive linear recurrence.

Paper: Qin et al., "You Only Scan Once: Efficient Multi-dimension Sequential Modeling with LightNet"
(arXiv 2405.21022). The paper's vision configurations are not available, so this family is built on DeiT sizes
(tiny 192/12/3, small 384/12/6, base 768/12/12, patch 16, 224 px). Each pre-norm block has three residual
branches (choices documented in :mod:`recvision.layers.lightnet`):

1. MD-TPE positional mixing: decayed scans along the image rows and columns (local, relative position);
2. LightNet token mixing: the additive recurrence with MD-LRPE on queries and keys, output RMSNorm and gate;
3. an MLP (ratio 4, GELU).

There is no absolute position embedding and no class token: positions enter only through MD-TPE and MD-LRPE, so
the model accepts any image size; the head average-pools the tokens. Non-causal by default (every token reads the
global state, one scan); ``causal=True`` gives the raster-order autoregressive variant.
No weights are published; ``pretrained=True`` loads a local file via ``pretrained_cfg_overlay=dict(file=...)``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from timm.layers import LayerType, PatchEmbed, get_act_layer, get_norm_layer
from timm.models import generate_default_cfgs, named_apply, register_model
from timm.models.vision_transformer import init_weights_vit_timm
from torch import nn

from ..layers.lightnet import MDTPE, LightNetMixer
from ..layers.mlp import Mlp
from ._common import (
    IsotropicClassifierMixin,
    build_backbone,
    cfg,
    drop_path_or_identity,
    drop_path_rates,
    layer_scale_or_identity,
    residual,
)

__all__ = ["LightNet", "LightNetBlock"]


class LightNetBlock(nn.Module):
    """``x + MD-TPE(LN x)``, then ``x + LightNetMixer(LN x)``, then ``x + MLP(LN x)``, each with LayerScale."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        causal: bool = False,
        chunk_size: int = 64,
        drop_path: float = 0.0,
        proj_drop: float = 0.0,
        init_values: float | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        mlp_layer: type[nn.Module] = Mlp,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """
        Args:
            dim: token width.
            num_heads: heads of the mixer and of MD-TPE.
            mlp_ratio: MLP hidden width relative to ``dim``.
            causal: raster-order causal mixing instead of global.
            chunk_size: chunk length of the additive scan.
            drop_path: stochastic-depth rate.
            proj_drop: MLP dropout.
            init_values: LayerScale initial value (``None`` disables LayerScale).
            act_layer: MLP activation.
            norm_layer: normalisation layer.
            mlp_layer: MLP class.
            device: factory device.
            dtype: factory dtype.
        """
        dd = {"device": device, "dtype": dtype}
        super().__init__()

        self.norm0 = norm_layer(dim, **dd)
        self.tpe = MDTPE(dim, num_heads, causal=causal, **dd)
        self.ls0 = layer_scale_or_identity(dim, init_values, **dd)
        self.norm1 = norm_layer(dim, **dd)
        self.mixer = LightNetMixer(dim, num_heads, causal=causal, chunk_size=chunk_size, **dd)
        self.ls1 = layer_scale_or_identity(dim, init_values, **dd)
        self.norm2 = norm_layer(dim, **dd)
        hidden = int(dim * mlp_ratio)
        self.mlp = mlp_layer(in_features=dim, hidden_features=hidden, act_layer=act_layer, drop=proj_drop, **dd)
        self.ls2 = layer_scale_or_identity(dim, init_values, **dd)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``x [B, N, C]`` tokens in row-major order over ``grid`` -> ``[B, N, C]``."""
        x = residual(x, self.tpe(self.norm0(x), grid), self.ls0, self.drop_path)
        x = residual(x, self.mixer(self.norm1(x), grid), self.ls1, self.drop_path)
        return residual(x, self.mlp(self.norm2(x)), self.ls2, self.drop_path)


class LightNet(IsotropicClassifierMixin, nn.Module):
    """LightNet vision backbone with the timm model API; ``forward_features`` returns ``[B, N, C]`` patch tokens."""

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        init_values: float | None = 1e-5,
        causal: bool = False,
        chunk_size: int = 64,
        dynamic_img_size: bool = True,
        dynamic_img_pad: bool = False,
        drop_rate: float = 0.0,
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
            img_size: nominal input size (the pretrained cfg's; the model accepts any size with ``dynamic_img_size``).
            patch_size: patch size.
            in_chans: input channels.
            num_classes: classifier outputs (0 = no classifier).
            global_pool: ``"avg"``, ``"max"``, ``"avgmax"`` or ``""`` (no pooling).
            embed_dim: token width.
            depth: number of blocks.
            num_heads: heads per block.
            mlp_ratio: MLP hidden width relative to ``embed_dim``.
            init_values: LayerScale initial value (``None`` disables LayerScale).
            causal: raster-order causal token mixing (autoregressive use) instead of global.
            chunk_size: chunk length of the additive scan.
            dynamic_img_size: accept inputs of any size (the default: LightNet has no position embedding, so nothing
                depends on the size it was built for; ``False`` makes timm's PatchEmbed check the size).
            dynamic_img_pad: pad inputs to a multiple of the patch size.
            drop_rate: dropout before the classifier.
            proj_drop_rate: MLP dropout.
            drop_path_rate: stochastic-depth rate (linearly increasing over the blocks).
            weight_init: ``""`` (timm ViT init) or ``"skip"``.
            embed_layer: patch-embedding class.
            norm_layer: normalisation layer (default LayerNorm, eps 1e-6).
            act_layer: MLP activation (default GELU).
            mlp_layer: MLP class.
            device: factory device (``"meta"`` works).
            dtype: factory dtype.
        """
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        norm_layer = get_norm_layer(norm_layer) or partial(nn.LayerNorm, eps=1e-6)
        act_layer = get_act_layer(act_layer) or nn.GELU
        self.num_prefix_tokens = 0
        self.num_suffix_tokens = 0
        self.global_pools = ("", "avg", "max", "avgmax")
        self.global_pool = self.check_global_pool(global_pool)
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.dynamic_img_size = dynamic_img_size
        self.causal = causal
        self.grad_checkpointing = False

        reduction = self.init_patch_embed(
            embed_layer, img_size, patch_size, in_chans, dynamic_img_size, dynamic_img_pad, channels_last=True, **dd
        )
        dpr = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(
            LightNetBlock(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                causal=causal,
                chunk_size=chunk_size,
                drop_path=dpr[i],
                proj_drop=proj_drop_rate,
                init_values=init_values,
                act_layer=act_layer,
                norm_layer=norm_layer,
                mlp_layer=mlp_layer,
                **dd,
            )
            for i in range(depth)
        )
        self.init_neck_and_head(depth, reduction, norm_layer, num_classes, drop_rate, **dd)
        if weight_init != "skip" and self.norm.weight.device.type != "meta":
            self.init_weights()

    def init_weights(self) -> None:
        """timm ViT initialisation of the linear layers (LRPE frequencies and TPE decays keep their own init)."""
        named_apply(init_weights_vit_timm, self)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.endswith(("lrpe_theta", "decay_logit", "tpe.gain"))}

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.patch_embed(x)  # [B, gh, gw, C]
        B, gh, gw, C = x.shape
        return x.reshape(B, gh * gw, C), (gh, gw)

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
            output_fmt: ``"NCHW"`` (``[B, C, H', W']`` maps) or ``"NLC"`` (``[B, N, C]``).
            intermediates_only: return only the intermediates.

        Returns:
            ``(final_features [B, N, C], intermediates)`` or just the intermediates.
        """
        take_indices, blocks = self.intermediate_blocks(indices, stop_early, output_fmt)
        x, grid = self._embed(x)
        x, intermediates = self.collect_intermediates(x, blocks, take_indices, norm, grid)
        if output_fmt == "NCHW":
            B, C = x.shape[0], x.shape[-1]
            intermediates = [y.reshape(B, *grid, C).permute(0, 3, 1, 2).contiguous() for y in intermediates]
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` -> normalised patch tokens ``[B, N, C]``."""
        x, grid = self._embed(x)
        for block in self.blocks:
            x = self.run_block(block, x, grid)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` -> logits ``[B, num_classes]``."""
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs(
    {
        "lightnet_tiny": cfg("arXiv:2405.21022", "You Only Scan Once (LightNet)", fixed_input_size=False),
        "lightnet_small": cfg("arXiv:2405.21022", "You Only Scan Once (LightNet)", fixed_input_size=False),
        "lightnet_base": cfg("arXiv:2405.21022", "You Only Scan Once (LightNet)", fixed_input_size=False),
        "lightnet_femto": cfg(
            "arXiv:2405.21022", "You Only Scan Once (LightNet)", input_size=(3, 64, 64), fixed_input_size=False
        ),
        "test_lightnet": cfg(
            "arXiv:2405.21022", "You Only Scan Once (LightNet)", input_size=(3, 32, 32), fixed_input_size=False
        ),
    }
)


def _create_lightnet(variant: str, pretrained: bool = False, **kwargs: Any) -> LightNet:
    return build_backbone(LightNet, variant, pretrained, **kwargs)


@register_model
def lightnet_tiny(pretrained: bool = False, **kwargs: Any) -> LightNet:
    """LightNet-T/16: width 192, depth 12, 3 heads."""
    model_args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
    return _create_lightnet("lightnet_tiny", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def lightnet_small(pretrained: bool = False, **kwargs: Any) -> LightNet:
    """LightNet-S/16: width 384, depth 12, 6 heads."""
    model_args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return _create_lightnet("lightnet_small", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def lightnet_base(pretrained: bool = False, **kwargs: Any) -> LightNet:
    """LightNet-B/16: width 768, depth 12, 12 heads."""
    model_args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
    return _create_lightnet("lightnet_base", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def lightnet_femto(pretrained: bool = False, **kwargs: Any) -> LightNet:
    """LightNet-femto/8 for CPU experiments (the APE benchmark): 64 px, patch 8, width 64, depth 4, 2 heads."""
    model_args = dict(img_size=64, patch_size=8, embed_dim=64, depth=4, num_heads=2)
    return _create_lightnet("lightnet_femto", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def test_lightnet(pretrained: bool = False, **kwargs: Any) -> LightNet:
    """Tiny LightNet for tests: 32 px, patch 8, width 64, depth 3, 2 heads."""
    model_args = dict(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=2, chunk_size=16)
    return _create_lightnet("test_lightnet", pretrained=pretrained, **dict(model_args, **kwargs))
