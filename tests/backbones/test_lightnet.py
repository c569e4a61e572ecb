"""LightNet backbone: timm registration and model API, causal/non-causal semantics, Triton path inside the model."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models import group_parameters
from timm_api_checks import check_loads_local_weights, check_triton_matches_torch

from recvision.backbones.lightnet import LightNet


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random, non-trivial weights (LayerScale near 1, not its 1e-5 init)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ls0.gamma", "ls1.gamma", "ls2.gamma")):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            elif p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) / p.shape[-1] ** 0.5)
    return model.eval()


def make(**kwargs) -> LightNet:
    return randomize(timm.create_model("test_lightnet", **kwargs))


def test_registered_in_timm_with_deit_sizes():
    assert set(timm.list_models("lightnet_*")) == {"lightnet_femto", "lightnet_tiny", "lightnet_small", "lightnet_base"}
    for name, dim, heads in (("lightnet_tiny", 192, 3), ("lightnet_small", 384, 6), ("lightnet_base", 768, 12)):
        model = timm.create_model(name, device="meta")
        assert model.embed_dim == dim and len(model.blocks) == 12 and model.blocks[0].mixer.num_heads == heads
        assert all(p.device.type == "meta" for p in model.parameters())


def test_forward_shapes_and_head_api():
    model = timm.create_model("test_lightnet", num_classes=7)
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 7)
    feats = model.forward_features(x)
    assert feats.shape == (2, 16, 64)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
    model.reset_classifier(0)
    assert model(x).shape == (2, 64)
    model.reset_classifier(0, "")
    assert model(x).shape == (2, 16, 64)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, "token")
    state = timm.create_model("test_lightnet").state_dict()
    assert "head.weight" in state and "patch_embed.proj.weight" in state


def test_noncausal_mixing_is_global_and_causal_is_raster_ordered():
    x = torch.randn(1, 3, 32, 32)
    x2 = x.clone()
    x2[..., -8:, -8:] += 1.0  # change only the last patch
    for causal in (False, True):
        model = make(causal=causal)
        base, changed = model.forward_features(x), model.forward_features(x2)
        first_token_change = (changed[:, 0] - base[:, 0]).abs().max()
        if causal:
            torch.testing.assert_close(changed[:, :-1], base[:, :-1])
        else:
            assert first_token_change > 1e-4  # the first token reads the global state


def test_any_image_size_with_dynamic_img_size():
    model = make(dynamic_img_size=True)
    assert model(torch.randn(1, 3, 40, 24)).shape == (1, 1000)
    assert model.forward_features(torch.randn(1, 3, 56, 8)).shape == (1, 7, 64)


def test_backward_all_params_get_grads_and_grad_checkpointing_parity():
    model = make(drop_path_rate=0.0)
    model.train()
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    out.square().mean().backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing()
    out2 = model(x)
    out2.square().mean().backward()
    torch.testing.assert_close(out2, out)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6, msg=n)


def test_forward_intermediates_features_only_and_prune():
    model = make()
    x = torch.randn(2, 3, 32, 32)
    final, inter = model.forward_intermediates(x)
    torch.testing.assert_close(final, model.forward_features(x))
    assert [t.shape for t in inter] == [(2, 64, 4, 4)] * 3
    nlc = model.forward_intermediates(x, indices=[1], output_fmt="NLC", intermediates_only=True)
    assert nlc[0].shape == (2, 16, 64)
    features = timm.create_model("test_lightnet", features_only=True, out_indices=(0, 2))
    assert [o.shape for o in features(x)] == [(2, 64, 4, 4)] * 2
    assert features.feature_info.reduction() == [8, 8]
    kept = model.prune_intermediate_layers(indices=[1])
    assert kept == [1] and len(model.blocks) == 2
    torch.testing.assert_close(model.forward_intermediates(x, indices=[1], intermediates_only=True)[0], inter[1])


def test_no_weight_decay_group_matcher_dtype_and_meta():
    model = timm.create_model("test_lightnet")
    names = {n for n, _ in model.named_parameters()}
    assert model.no_weight_decay() <= names and any("lrpe_theta" in n for n in model.no_weight_decay())
    groups = group_parameters(model, model.group_matcher())
    assert sum(len(g) for g in groups.values()) == len(names)
    double = timm.create_model("test_lightnet", dtype=torch.float64)
    assert double(torch.randn(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64
    meta = timm.create_model("test_lightnet", device="meta").to_empty(device="cpu")
    meta.init_weights()


def test_pretrained_from_local_file(tmp_path):
    check_loads_local_weights("test_lightnet", make(), tmp_path, unreleased="lightnet_tiny")


def test_fx_feature_extraction_matches_eager():
    from timm.models._features_fx import create_feature_extractor, get_graph_node_names

    model = make()
    x = torch.randn(1, 3, 32, 32)
    _, nodes = get_graph_node_names(model)
    extractor = create_feature_extractor(model, return_nodes=[nodes[-1]])
    torch.testing.assert_close(next(iter(extractor(x).values())), model(x))


@pytest.mark.triton
@pytest.mark.parametrize("causal", [False, True])
def test_triton_path_matches_torch_inside_model(causal, triton_device):
    model = make(causal=causal).to(triton_device)
    check_triton_matches_torch(model, torch.randn(1, 3, 32, 32, device=triton_device))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lightnet_tiny", "lightnet_base"])
def test_registered_models_forward_at_default_size(name):
    model = timm.create_model(name, num_classes=10).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("causal", [False, True], ids=["global", "causal"])
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_forward_without_autograd_is_bitwise_the_autograd_forward(causal, bf16):
    # without autograd the non-causal mixer, MD-TPE, the norms and the MLP take leaner paths (in-place, one
    # [B, N, H, 2D] buffer); they must compute exactly what the autograd forward computes, bf16 included
    model = make(causal=causal, img_size=(24, 40))
    x = torch.randn(2, 3, 24, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        ref = model(x)
        with torch.no_grad():
            lean = model(x)
        with torch.inference_mode():
            lean_inference = model(x)
    assert ref.requires_grad
    assert torch.equal(lean, ref.detach()) and torch.equal(lean_inference, ref.detach())
