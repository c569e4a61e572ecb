"""ViR: Vision Retention Networks.

Paper: Hatamizadeh, Ranzinger, Lan, Alvarez, Fidler, Kautz, "ViR: Towards Efficient Vision Retention Backbones"
(arXiv 2310.19731). An isotropic ViT-style encoder whose token mixer is multi-head retention (no softmax): pre-norm
blocks with LayerScale, a learned absolute position embedding on the patches only, and the class token appended at
the END of the sequence, so under causal retention it is the one token that has seen the whole image.

The model runs in three equivalent retention modes (``retention_mode``), switchable on a built model with
:meth:`VisionRetention.set_retention_mode`:

* ``"parallel"``: masked ``(Q K^T ⊙ D) V`` per block, O(T^2) memory;
* ``"chunkwise"``: parallel inside chunks, recurrent across them (Triton on CUDA, PyTorch on CPU);
* ``"recurrent"``: the whole network streams over the tokens in blocks of ``stream_block_size`` tokens, every
  layer carrying an O(1) retention state; nothing of size T x T exists and activations are O(block), not O(T).

No weights are published for ViR; ``pretrained=True`` loads a local file given as
``pretrained_cfg_overlay=dict(file="path/to/weights.safetensors")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import torch
from timm.layers import (
    LayerType,
    PatchEmbed,
    get_act_layer,
    get_norm_layer,
    resample_abs_pos_embed,
    trunc_normal_,
)
from timm.models import generate_default_cfgs, named_apply, register_model
from timm.models.vision_transformer import init_weights_vit_timm
from torch import nn

from ..layers.mlp import Mlp
from ..layers.retention import MultiHeadRetention, check_retention_mode
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

__all__ = ["VisionRetention", "RetentionBlock", "checkpoint_filter_fn"]

_GLOBAL_POOLS = ("", "token", "token_last", "avg", "max", "avgmax")


class RetentionBlock(nn.Module):
    """Pre-norm ViR block: ``x + DropPath(LS(MHR(LN(x))))`` then ``x + DropPath(LS(MLP(LN(x))))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        init_values: float | None = None,
        retention_mode: str = "chunkwise",
        chunk_size: int = 64,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        mlp_layer: type[nn.Module] = Mlp,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """
        Args:
            dim: token width.
            num_heads: retention heads.
            mlp_ratio: MLP hidden width relative to ``dim``.
            qkv_bias: bias in the q/k/v projection.
            proj_bias: bias in the output projections.
            proj_drop: dropout after the projections.
            drop_path: stochastic-depth rate.
            init_values: LayerScale initial value (``None`` disables LayerScale).
            retention_mode: ``"parallel"``, ``"chunkwise"`` or ``"recurrent"``.
            chunk_size: tokens per chunk in chunkwise mode.
            act_layer: MLP activation.
            norm_layer: normalisation layer.
            mlp_layer: MLP class.
            device: factory device.
            dtype: factory dtype.
        """
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.norm1 = norm_layer(dim, **dd)
        self.retention = MultiHeadRetention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            proj_bias=proj_bias,
            proj_drop=proj_drop,
            retention_mode=retention_mode,
            chunk_size=chunk_size,
            **dd,
        )
        self.ls1 = layer_scale_or_identity(dim, init_values, **dd)
        self.drop_path1 = drop_path_or_identity(drop_path)
        self.norm2 = norm_layer(dim, **dd)
        hidden = int(dim * mlp_ratio)
        self.mlp = mlp_layer(
            in_features=dim, hidden_features=hidden, act_layer=act_layer, bias=proj_bias, drop=proj_drop, **dd
        )
        self.ls2 = layer_scale_or_identity(dim, init_values, **dd)
        self.drop_path2 = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: tokens ``[B, T, C]`` -> ``[B, T, C]``."""
        x = residual(x, self.retention(self.norm1(x)), self.ls1, self.drop_path1)
        return residual(x, self.mlp(self.norm2(x)), self.ls2, self.drop_path2)

    def forward_stream(self, x: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Process the next tokens of a stream: ``x [B, t, C]``, ``state [B, H, D, D]`` -> ``(y, new_state)``."""
        mixed, state = self.retention.forward_stream(self.norm1(x), state)
        x = residual(x, mixed, self.ls1, self.drop_path1)
        return residual(x, self.mlp(self.norm2(x)), self.ls2, self.drop_path2), state


class VisionRetention(IsotropicClassifierMixin, nn.Module):
    """Vision Retention Network (ViR), an isotropic ViT-like backbone with retention instead of attention.

    Follows the timm ``VisionTransformer`` API (``forward_features``, ``forward_head``, ``forward_intermediates``,
    ``reset_classifier``, ...). ``forward_features`` returns ``[B, N + 1, C]`` tokens with the class token LAST.
    """

    dynamic_img_size: bool
    stem_pattern = r"^cls_token|pos_embed|patch_embed"

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "token",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        init_values: float | None = 1e-5,
        class_token: bool = True,
        retention_mode: str = "chunkwise",
        chunk_size: int = 64,
        stream_block_size: int = 1024,
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
        block_fn: type[nn.Module] = RetentionBlock,
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
            global_pool: ``"token"`` (the class token, which sits last; ``"token_last"`` is an alias),
                ``"avg"``, ``"max"``, ``"avgmax"`` over patch tokens, or ``""`` (no pooling).
            embed_dim: token width.
            depth: number of blocks.
            num_heads: retention heads per block.
            mlp_ratio: MLP hidden width relative to ``embed_dim``.
            qkv_bias: bias in the q/k/v projections.
            init_values: LayerScale initial value (``None`` disables LayerScale).
            class_token: append a class token at the end of the sequence.
            retention_mode: ``"parallel"``, ``"chunkwise"`` or ``"recurrent"``.
            chunk_size: tokens per chunk in chunkwise mode.
            stream_block_size: tokens processed together per step of the recurrent (streaming) mode; the working
                memory grows with it, not with T, and larger blocks spread the per-block cost of every layer
                over more tokens.
            dynamic_img_size: accept any input size, resampling the position embedding to the patch grid.
            dynamic_img_pad: pad inputs to a multiple of the patch size.
            drop_rate: dropout before the classifier.
            pos_drop_rate: dropout after adding the position embedding.
            proj_drop_rate: dropout after projections inside the blocks.
            drop_path_rate: stochastic-depth rate (linearly increasing over the blocks).
            weight_init: ``""`` (timm ViT init) or ``"skip"``.
            embed_layer: patch-embedding class.
            norm_layer: normalisation layer (default LayerNorm, eps 1e-6).
            act_layer: MLP activation (default GELU).
            block_fn: block class.
            mlp_layer: MLP class.
            device: factory device (``"meta"`` works).
            dtype: factory dtype.
        """
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        if stream_block_size < 1:
            raise ValueError(f"stream_block_size must be >= 1; got {stream_block_size}")
        norm_layer = get_norm_layer(norm_layer) or partial(nn.LayerNorm, eps=1e-6)
        act_layer = get_act_layer(act_layer) or nn.GELU

        self.num_classes = num_classes
        self.num_suffix_tokens = 1 if class_token else 0  # the class token sits after the patches
        self.global_pools = _GLOBAL_POOLS
        self.global_pool = self.check_global_pool(global_pool)
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 0
        self.has_class_token = class_token
        self.no_embed_class = True
        self.dynamic_img_size = dynamic_img_size
        self.retention_mode = check_retention_mode(retention_mode)
        self.stream_block_size = stream_block_size
        self.grad_checkpointing = False

        # channels_last only with dynamic_img_size: _pos_embed then needs the [B, H', W', C] grid to resample to
        reduction = self.init_patch_embed(
            embed_layer, img_size, patch_size, in_chans, dynamic_img_size, dynamic_img_pad, dynamic_img_size, **dd
        )
        num_patches = self.patch_embed.num_patches

        self.pos_embed = nn.Parameter(torch.empty(1, num_patches, embed_dim, **dd))
        self.cls_token = nn.Parameter(torch.empty(1, 1, embed_dim, **dd)) if class_token else None
        self.pos_drop = nn.Dropout(p=pos_drop_rate)

        dpr = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.Sequential(
            *[
                block_fn(
                    dim=embed_dim,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    init_values=init_values,
                    proj_drop=proj_drop_rate,
                    drop_path=dpr[i],
                    retention_mode=retention_mode,
                    chunk_size=chunk_size,
                    norm_layer=norm_layer,
                    act_layer=act_layer,
                    mlp_layer=mlp_layer,
                    **dd,
                )
                for i in range(depth)
            ]
        )
        self.init_neck_and_head(depth, reduction, norm_layer, num_classes, drop_rate, **dd)

        if weight_init != "skip" and self.pos_embed.device.type != "meta":
            self.init_weights()

    def init_weights(self) -> None:
        """timm ViT initialisation: truncated-normal position embedding, small class token, trunc-normal linears."""
        trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        named_apply(init_weights_vit_timm, self)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def set_retention_mode(self, mode: str) -> None:
        """Switch every block to ``"parallel"``, ``"chunkwise"`` or ``"recurrent"`` retention."""
        self.retention_mode = check_retention_mode(mode)
        for block in self.blocks:
            block.retention.retention_mode = mode

    def resample_pos_embed(
        self, pos_embed: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int]
    ) -> torch.Tensor:
        """Resample the patch position embedding ``[1, old_h * old_w, C]`` -> ``[1, new_h * new_w, C]``."""
        return resample_abs_pos_embed(pos_embed, new_size=new_grid, old_size=old_grid, num_prefix_tokens=0)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, N, C], or [B, H', W', C] with dynamic_img_size -> [B, N (+1), C]
        if self.dynamic_img_size:
            B, H, W, C = x.shape
            pos_embed = self.resample_pos_embed(self.pos_embed, (H, W), self.patch_embed.grid_size)
            x = x.reshape(B, H * W, C)
        else:
            pos_embed = self.pos_embed
        x = x + pos_embed
        if self.cls_token is not None:
            x = torch.cat([x, self.cls_token.expand(x.shape[0], -1, -1)], dim=1)
        return self.pos_drop(x)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self._pos_embed(self.patch_embed(x))

    def _token_stream(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Recurrent mode: yield the embedded tokens of images ``x [B, C, H, W]`` in order, at most
        ``stream_block_size`` at a time (class token last), embedding a band of patch rows at a time so that no
        tensor of all T tokens is made (except a resampled position embedding with ``dynamic_img_size``)."""
        embed = self.patch_embed
        size = self.stream_block_size
        if embed.dynamic_img_pad or not isinstance(embed, PatchEmbed):
            tokens = self._embed(x)
            for start in range(0, tokens.shape[1], size):
                yield tokens[:, start : start + size]
            return
        B, _, H, W = x.shape
        if not self.dynamic_img_size and (H, W) != tuple(embed.img_size):
            raise ValueError(
                f"input size {(H, W)} does not match the model's img_size {tuple(embed.img_size)}; "
                "create the model with dynamic_img_size=True to accept other sizes"
            )
        grid_h, grid_w = embed.dynamic_feat_size((H, W))
        if self.dynamic_img_size:
            pos_embed = self.resample_pos_embed(self.pos_embed, (grid_h, grid_w), embed.grid_size)
        else:
            pos_embed = self.pos_embed
        patch_h = embed.patch_size[0]
        rows = max(1, size // grid_w)
        for row in range(0, grid_h, rows):
            last_row = min(grid_h, row + rows)
            band = embed.proj(x[:, :, row * patch_h : last_row * patch_h])  # [B, C, rows, grid_w]
            band = embed.norm(band.flatten(2).transpose(1, 2))  # [B, rows * grid_w, C]
            band = self.pos_drop(band + pos_embed[:, row * grid_w : last_row * grid_w])
            for start in range(0, band.shape[1], size):
                yield band[:, start : start + size]
        if self.cls_token is not None:
            yield self.pos_drop(self.cls_token.expand(B, -1, -1))

    def _stream_blocks(
        self,
        token_blocks: Iterable[torch.Tensor],
        blocks: nn.Sequential,
        take_indices: list[int] | None = None,
        keep_all: bool = True,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Recurrent mode: run all ``blocks`` over a stream of token blocks ``[B, t, C]``.

        Every layer keeps only its retention state ``[B, H, D, D]`` between token blocks, so the working memory
        does not grow with T. Returns the last layer's output (all tokens ``[B, T, C]``, or with
        ``keep_all=False`` only the final token block) and the outputs of the layers in ``take_indices``.
        """
        take = set(take_indices or [])
        states: list[torch.Tensor | None] = [None] * len(blocks)
        outputs: list[torch.Tensor] = []
        taken: dict[int, list[torch.Tensor]] = {i: [] for i in take}
        for h in token_blocks:
            for i, block in enumerate(blocks):
                h, states[i] = block.forward_stream(h, states[i])
                if i in take:
                    taken[i].append(h)
            if keep_all:
                outputs.append(h)
            else:
                outputs = [h]
        return torch.cat(outputs, dim=1), [torch.cat(taken[i], dim=1) for i in sorted(take)]

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Forward that also returns the outputs of selected blocks.

        Args:
            x: images ``[B, C, H, W]``.
            indices: last ``n`` blocks if an int, all if ``None``, else the listed block indices.
            return_prefix_tokens: return ``(patch_tokens, class_token)`` pairs (timm's name; ViR's class token
                is a suffix, ``[B, 1, C]``).
            norm: apply the final norm to the intermediates.
            stop_early: stop after the last requested block.
            output_fmt: ``"NCHW"`` (``[B, C, H', W']`` patch maps) or ``"NLC"`` (``[B, N, C]``).
            intermediates_only: return only the intermediates.

        Returns:
            ``(final_features [B, N + 1, C], intermediates)`` or just the intermediates.
        """
        take_indices, blocks = self.intermediate_blocks(indices, stop_early, output_fmt)
        B, _, height, width = x.shape

        if self.retention_mode == "recurrent":
            x, intermediates = self._stream_blocks(self._token_stream(x), blocks, take_indices)
        else:
            x, intermediates = self.collect_intermediates(self._embed(x), blocks, take_indices, False)
        if norm:
            intermediates = [self.norm(y) for y in intermediates]

        n_patch = x.shape[1] - self.num_suffix_tokens
        suffix_tokens = [y[:, n_patch:] for y in intermediates]
        intermediates = [y[:, :n_patch] for y in intermediates]
        if output_fmt == "NCHW":
            grid_h, grid_w = self.patch_embed.dynamic_feat_size((height, width))
            intermediates = [y.reshape(B, grid_h, grid_w, -1).permute(0, 3, 1, 2).contiguous() for y in intermediates]
        if return_prefix_tokens and self.num_suffix_tokens:
            intermediates = list(zip(intermediates, suffix_tokens, strict=True))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` -> normalised tokens ``[B, N + 1, C]`` (class token last)."""
        if self.retention_mode == "recurrent":
            x, _ = self._stream_blocks(self._token_stream(x), self.blocks)
            return self.norm(x)
        return self.norm(self.run_blocks(self._embed(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` -> logits ``[B, num_classes]``."""
        if self.retention_mode == "recurrent" and self.global_pool in ("token", "token_last"):
            # only the class token (the last one) is read: keep no other outputs, so memory stays O(block)
            last, _ = self._stream_blocks(self._token_stream(x), self.blocks, keep_all=False)
            return self.forward_head(self.norm(last))
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: VisionRetention) -> dict[str, torch.Tensor]:
    """Adapt a checkpoint to ``model``: unwrap ``model``/``state_dict`` containers, resample the patch grid of
    the position embedding to the model's, and resample the patch-embedding kernel if the patch size differs."""

    def resample(value: torch.Tensor) -> torch.Tensor:
        # a flat [1, N, C] embedding carries no grid shape: only a square one can be resampled
        old_side = math.isqrt(value.shape[1])
        if old_side * old_side != value.shape[1]:
            raise ValueError(
                f"checkpoint pos_embed has {value.shape[1]} positions, not a square grid; cannot resample "
                f"to the model's grid {model.patch_embed.grid_size}"
            )
        return model.resample_pos_embed(value, model.patch_embed.grid_size, (old_side, old_side))

    return filter_checkpoint(state_dict, model, resample)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return cfg("arXiv:2310.19731", "ViR: Towards Efficient Vision Retention Backbones", **kwargs)


default_cfgs = generate_default_cfgs(
    {
        "vir_tiny": _cfg(),
        "vir_small": _cfg(),
        "vir_base": _cfg(),
        "vir_large": _cfg(),
        "vir_femto": _cfg(input_size=(3, 64, 64)),
        "test_vir": _cfg(input_size=(3, 32, 32), fixed_input_size=False),
    }
)


def _create_vir(variant: str, pretrained: bool = False, **kwargs: Any) -> VisionRetention:
    return build_backbone(VisionRetention, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs)


@register_model
def vir_tiny(pretrained: bool = False, **kwargs: Any) -> VisionRetention:
    """ViR-T/16: width 192, depth 12, 3 heads."""
    model_args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
    return _create_vir("vir_tiny", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vir_small(pretrained: bool = False, **kwargs: Any) -> VisionRetention:
    """ViR-S/16: width 384, depth 12, 6 heads."""
    model_args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return _create_vir("vir_small", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vir_base(pretrained: bool = False, **kwargs: Any) -> VisionRetention:
    """ViR-B/16: width 768, depth 12, 12 heads."""
    model_args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
    return _create_vir("vir_base", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vir_large(pretrained: bool = False, **kwargs: Any) -> VisionRetention:
    """ViR-L/16: width 1024, depth 24, 16 heads."""
    model_args = dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16)
    return _create_vir("vir_large", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vir_femto(pretrained: bool = False, **kwargs: Any) -> VisionRetention:
    """ViR-femto/8 for CPU experiments (the APE benchmark): 64 px, patch 8, width 64, depth 4, 2 heads."""
    model_args = dict(img_size=64, patch_size=8, embed_dim=64, depth=4, num_heads=2)
    return _create_vir("vir_femto", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def test_vir(pretrained: bool = False, **kwargs: Any) -> VisionRetention:
    """Tiny ViR for tests: 32 px, patch 8, width 64, depth 4, 2 heads."""
    model_args = dict(img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=2, chunk_size=16)
    return _create_vir("test_vir", pretrained=pretrained, **dict(model_args, **kwargs))
