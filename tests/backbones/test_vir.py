"""ViR backbone: retention-mode equivalence and the timm model API (checks modelled on timm's tests/test_models.py)."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models import group_parameters
from timm_api_checks import (
    check_all_params_get_grads,
    check_forward_at_default_size,
    check_grad_checkpointing_parity,
    check_loads_local_weights,
)

import recvision  # noqa: F401  (registers the models)
from recvision.backbones.vir import VisionRetention
from recvision.layers import vir_log_decay
from recvision.ops import retention as retention_ops

MODES = ("parallel", "chunkwise", "recurrent")


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random, non-trivial values (LayerScale near 1, not its 1e-5 init)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ls1.gamma", "ls2.gamma")) or (name.endswith("weight") and "norm" in name):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype) / max(1, p.shape[-1]) ** 0.5)
    return model.eval()


def make(**kwargs) -> VisionRetention:
    return randomize(timm.create_model("test_vir", **kwargs))


def test_registered_in_timm():
    assert set(timm.list_models("vir_*")) == {"vir_femto", "vir_tiny", "vir_small", "vir_base", "vir_large"}
    assert "test_vir" in timm.list_models(name_matches_cfg=True)
    cfg = timm.get_pretrained_cfg("vir_base")
    assert cfg.first_conv == "patch_embed.proj" and cfg.classifier == "head"


@pytest.mark.parametrize(
    "name, dim, depth, heads, params_m",
    [
        ("vir_tiny", 192, 12, 3, 5.7),
        ("vir_small", 384, 12, 6, 22.0),
        ("vir_base", 768, 12, 12, 86.6),
        ("vir_large", 1024, 24, 16, 304.3),
    ],
)
def test_variant_sizes(name, dim, depth, heads, params_m):
    model = timm.create_model(name, device="meta")
    assert model.embed_dim == dim and len(model.blocks) == depth
    assert model.blocks[0].retention.num_heads == heads
    assert model.patch_embed.patch_size == (16, 16) and model.patch_embed.img_size == (224, 224)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    assert n_params == pytest.approx(params_m, rel=0.01)  # same projections as ViT-{T,S,B,L}/16


def test_decays_are_log_spaced_1_32_to_1_512():
    gammas = vir_log_decay(12).exp()
    assert gammas[0].item() == pytest.approx(1 - 1 / 32) and gammas[-1].item() == pytest.approx(1 - 1 / 512)
    assert torch.all(gammas[1:] > gammas[:-1])
    assert vir_log_decay(6).exp()[1].item() == pytest.approx(0.98205, abs=1e-5)


@pytest.mark.parametrize(
    "kwargs, size",
    [
        pytest.param({}, (32, 32), id="32px"),
        pytest.param(dict(chunk_size=5, stream_block_size=3), (32, 32), id="chunk5-stream3"),
        pytest.param(dict(dynamic_img_size=True, chunk_size=16, stream_block_size=7), (40, 56), id="dynamic-40x56"),
        pytest.param(dict(dynamic_img_size=True, global_pool="avg", chunk_size=8), (24, 72), id="dynamic-avg"),
    ],
)
def test_retention_modes_agree(kwargs, size):
    model = make(**kwargs)
    x = torch.randn(2, 3, *size)
    logits, feats = {}, {}
    for mode in MODES:
        model.set_retention_mode(mode)
        feats[mode] = model.forward_features(x)
        logits[mode] = model.forward_head(feats[mode])
    assert logits["parallel"].std() > 0.1  # the weights really mix tokens: the check is not vacuous
    for mode in ("chunkwise", "recurrent"):
        torch.testing.assert_close(feats[mode], feats["parallel"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(logits[mode], logits["parallel"], rtol=1e-4, atol=1e-4)


def test_class_token_is_last_and_sees_all_patches():
    model = make(chunk_size=16)
    x = torch.randn(1, 3, 32, 32)
    base = model.forward_features(x)
    x2 = x.clone()
    x2[..., -8:, -8:] += 1.0  # change only the last patch
    changed = model.forward_features(x2)
    # causal retention: tokens before the last patch are untouched, the class token (last) changes
    torch.testing.assert_close(changed[:, :-2], base[:, :-2])
    assert (changed[:, -1] - base[:, -1]).abs().max() > 1e-3


def test_mode_is_a_create_model_kwarg_and_validated():
    model = timm.create_model("test_vir", retention_mode="recurrent")
    assert all(b.retention.retention_mode == "recurrent" for b in model.blocks)
    with pytest.raises(ValueError, match="retention_mode"):
        timm.create_model("test_vir", retention_mode="softmax")
    with pytest.raises(ValueError, match="retention_mode"):
        model.set_retention_mode("fast")
    with pytest.raises(ValueError, match="global_pool"):
        timm.create_model("test_vir", global_pool="map")


def test_recurrent_mode_streams_with_constant_state(monkeypatch):
    """Recurrent mode never calls the T x T form and feeds every layer at most a block of tokens, carrying the
    O(1) state (on the CPU a block of tokens goes through the chunk form from that state, one token through the
    token loop)."""

    def forbidden(*args, **kwargs):
        raise AssertionError("recurrent mode must not use the parallel form")

    monkeypatch.setattr("recvision.layers.retention.parallel_retention", forbidden)
    seen = []

    def spying(name, original):
        def spy(q, k, v, *args, **kwargs):
            assert kwargs.get("output_final_state"), name
            state = kwargs.get("initial_state")
            seen.append((name, q.shape[1], None if state is None else state.shape))
            return original(q, k, v, *args, **kwargs)

        return spy

    for name in ("chunk_retention", "fused_recurrent_retention"):
        monkeypatch.setattr(f"recvision.layers.retention.{name}", spying(name, getattr(retention_ops, name)))
    model = make(retention_mode="recurrent", stream_block_size=4, dynamic_img_size=True)
    model(torch.randn(1, 3, 48, 40))
    n_tokens = 6 * 5 + 1
    assert max(t for _, t, _ in seen) <= 4
    assert sum(t for _, t, _ in seen) == n_tokens * len(model.blocks)
    assert {s for _, _, s in seen if s is not None} == {(1, 2, 32, 32)}  # O(1) state: [B, H, D, D]
    # blocks of several tokens take the chunk form, the lone class token the token loop
    assert {(name, t > 1) for name, t, _ in seen} == {("chunk_retention", True), ("fused_recurrent_retention", False)}


def test_forward_shapes_and_head_api():
    model = timm.create_model("test_vir", num_classes=7)
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 7)
    feats = model.forward_features(x)
    assert feats.shape == (2, 16 + 1, model.num_features)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
    assert model.get_classifier() is model.head
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    model.reset_classifier(0, "")
    assert model(x).shape == (2, 17, model.num_features)
    model.reset_classifier(3, "avg")
    assert model(x).shape == (2, 3)
    assert timm.create_model("test_vir", num_classes=0, global_pool="").forward(x).shape == (2, 17, 64)
    state = model.state_dict()
    cfg = model.pretrained_cfg
    assert cfg["classifier"] + ".weight" in state and cfg["first_conv"] + ".weight" in state


def test_no_weight_decay_and_group_matcher():
    model = timm.create_model("test_vir")
    names = {n for n, _ in model.named_parameters()}
    assert model.no_weight_decay() <= names | {"reg_token", "dist_token"}
    groups = group_parameters(model, model.group_matcher())
    assert sum(len(g) for g in groups.values()) == len(names)
    assert len(groups) == len(model.blocks) + 2  # stem, blocks, final norm/head


def test_backward_all_params_get_grads():
    check_all_params_get_grads("test_vir", torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("mode", ["parallel", "chunkwise"])
def test_grad_checkpointing_parity(mode):
    check_grad_checkpointing_parity(make(retention_mode=mode), torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("mode", MODES)
def test_forward_intermediates(mode):
    model = make(retention_mode=mode, stream_block_size=5)
    x = torch.randn(2, 3, 32, 32)
    final, inter = model.forward_intermediates(x)
    torch.testing.assert_close(final, model.forward_features(x), rtol=1e-5, atol=1e-5)
    assert len(inter) == len(model.blocks)
    for t, info in zip(inter, model.feature_info, strict=True):
        assert t.shape == (2, info["num_chs"], 32 // info["reduction"], 32 // info["reduction"])
    model.set_retention_mode("parallel")
    ref = model.forward_intermediates(x, indices=[0, 2], norm=True, output_fmt="NLC", intermediates_only=True)
    model.set_retention_mode(mode)
    got = model.forward_intermediates(x, indices=[0, 2], norm=True, output_fmt="NLC", intermediates_only=True)
    assert len(got) == 2 and got[0].shape == (2, 16, 64)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    pairs = model.forward_intermediates(x, indices=1, return_prefix_tokens=True, intermediates_only=True)
    assert pairs[0][0].shape == (2, 64, 4, 4) and pairs[0][1].shape == (2, 1, 64)
    early = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
    torch.testing.assert_close(early[0], inter[1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")


def test_prune_intermediate_layers():
    model = make()
    x = torch.randn(1, 3, 32, 32)
    ref = model.forward_intermediates(x, indices=[1], intermediates_only=True)
    kept = model.prune_intermediate_layers(indices=[1], prune_head=True)
    assert kept == [1] and len(model.blocks) == 2 and isinstance(model.head, torch.nn.Identity)
    torch.testing.assert_close(model.forward_intermediates(x, indices=[1], intermediates_only=True)[0], ref[0])


def test_features_only():
    model = timm.create_model("test_vir", features_only=True, out_indices=(1, 2, 3))
    outs = model(torch.randn(2, 3, 32, 32))
    assert len(outs) == 3
    assert model.feature_info.channels() == [64, 64, 64] and model.feature_info.reduction() == [8, 8, 8]
    for o in outs:
        assert o.shape == (2, 64, 4, 4)


def test_dynamic_img_size_matches_fixed_model_at_native_size():
    fixed = make()
    dynamic = timm.create_model("test_vir", dynamic_img_size=True)
    dynamic.load_state_dict(fixed.state_dict())
    dynamic.eval()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(dynamic(x), fixed(x))
    assert dynamic(torch.randn(1, 3, 24, 80)).shape == (1, 1000)
    with pytest.raises(AssertionError):  # timm's PatchEmbed rejects other sizes when the size is fixed
        fixed(torch.randn(1, 3, 48, 48))


def test_set_input_size_resamples_pos_embed():
    model = timm.create_model("test_vir")
    model.set_input_size((48, 64))
    assert model.pos_embed.shape == (1, 6 * 8, 64)
    assert model(torch.randn(1, 3, 48, 64)).shape == (1, 1000)


def test_factory_kwargs_dtype_and_meta():
    model = timm.create_model("test_vir", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model(torch.randn(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64
    meta = timm.create_model("vir_base", device="meta", num_classes=10)
    assert all(p.device.type == "meta" for p in meta.parameters())
    small = timm.create_model("test_vir", device="meta").to_empty(device="cpu")
    small.init_weights()
    assert torch.isfinite(small(torch.randn(1, 3, 32, 32))).all()


def test_pretrained_from_local_file_resamples_pos_embed(tmp_path):
    source = make()
    check_loads_local_weights("test_vir", source, tmp_path, unreleased="vir_tiny")
    safetensors = tmp_path / "weights.safetensors"
    bigger = timm.create_model(
        "test_vir", pretrained=True, img_size=48, pretrained_cfg_overlay=dict(file=str(safetensors))
    )
    assert bigger.pos_embed.shape == (1, 36, 64)
    torch.testing.assert_close(bigger.blocks[0].mlp.fc1.weight, source.blocks[0].mlp.fc1.weight)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vir_tiny", "vir_small", "vir_base", "vir_large"])
def test_registered_models_forward_at_default_size(name):
    check_forward_at_default_size(name)


@pytest.mark.triton
@pytest.mark.parametrize("mode", ["chunkwise", "recurrent"])
def test_triton_path_matches_torch_inside_model(mode, triton_device, monkeypatch):
    model = make(retention_mode=mode, stream_block_size=8).to(triton_device)
    x = torch.randn(1, 3, 32, 32, device=triton_device, requires_grad=True)
    with recvision.config.backend("torch"):
        ref = model(x)
        (ref_grad,) = torch.autograd.grad(ref.square().sum(), x)

    def forbidden(*args, **kwargs):
        raise AssertionError("the Triton backend fell back to PyTorch")

    monkeypatch.setattr("recvision.ops.retention.chunk.chunk_retention_torch", forbidden)
    monkeypatch.setattr("recvision.ops.retention.fused_recurrent.fused_recurrent_retention_torch", forbidden)
    with recvision.config.backend("triton"):
        out = model(x)
        (grad,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("kwargs, size", [({}, (32, 32)), (dict(dynamic_img_size=True), (40, 24))])
def test_recurrent_forward_streams_embedding_and_matches(kwargs, size):
    model = make(stream_block_size=3, **kwargs)
    x = torch.randn(2, 3, *size)
    ref = model(x)
    model.set_retention_mode("recurrent")
    torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-4)
    blocks = list(model._token_stream(x))
    assert max(b.shape[1] for b in blocks) <= 3 and blocks[-1].shape[1] == 1  # class token comes last, alone
    if not kwargs:
        with pytest.raises(ValueError, match="img_size"):
            model(torch.randn(1, 3, 40, 40))


def test_fx_feature_extraction_matches_eager():
    """timm's FX tests: the model traces with the retention mixer as a leaf, and the traced graph is exact."""
    from timm.models._features_fx import create_feature_extractor, get_graph_node_names

    model = make()
    x = torch.randn(2, 3, 32, 32)
    _, eval_nodes = get_graph_node_names(model)
    assert any("retention" in n for n in eval_nodes)
    extractor = create_feature_extractor(model, return_nodes=[eval_nodes[-1]])
    torch.testing.assert_close(next(iter(extractor(x).values())), model(x))
