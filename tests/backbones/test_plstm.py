"""pLSTM-Vis backbone: the 2-D pLSTM layer (P/D modes, four orientations) and the timm model API (checks modelled
on timm's tests/test_models.py)."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from plstm_reference import reference_plstm_forward
from timm.models import group_parameters
from timm_api_checks import (
    check_all_params_get_grads,
    check_forward_at_default_size,
    check_grad_checkpointing_parity,
    check_loads_local_weights,
    check_triton_matches_torch,
)

from recvision.backbones.plstm import PLSTMVision, checkpoint_filter_fn
from recvision.config import backend
from recvision.layers.plstm import COMBINED_MAX_CELLS, PLSTM2D
from recvision.ops.plstm2d import fused_recurrent_available, p_mode_gates
from recvision.ops.plstm2d.block_scan import scan_plstm2d_blocks


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random, non-trivial weights: gates away from their near-constant init, norm scales near 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype)
            if (name.endswith("weight") and "norm" in name) or name.endswith("gamma"):
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(0.5 * noise / max(1, p.shape[-1]) ** 0.5)
    return module.eval()


def make(**kwargs) -> PLSTMVision:
    return randomize(timm.create_model("test_plstm", **kwargs))


# ---------------------------------------------------------------------------------------------------------------
# the layer


@pytest.mark.parametrize("mode, chirality", [("P", "L"), ("D", "L"), ("D", "R")])
def test_layer_ops_agree_on_odd_grid(mode, chirality):
    layer = randomize(PLSTM2D(32, 2, mode=mode, chirality=chirality, impl="naive").double())
    x = torch.randn(2, 5, 7, 32, dtype=torch.float64)
    ref = layer(x)
    assert ref.shape == x.shape and ref.std() > 0.1
    for impl, chunk_size in (("chunk", None), ("chunk", 2), ("parallel", None), ("auto", 4)):
        layer.impl, layer.chunk_size = impl, chunk_size
        torch.testing.assert_close(layer(x), ref, rtol=1e-10, atol=1e-10, msg=f"{impl} {chunk_size}")
    if fused_recurrent_available() is None:  # the native forward (no backward: under no_grad)
        layer.impl = "fused"
        with torch.no_grad():
            torch.testing.assert_close(layer(x), ref, rtol=1e-10, atol=1e-10, msg="fused")


def _forward_and_grads(layer: PLSTM2D, x: torch.Tensor, fn) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Output of ``fn(layer, x)`` and the gradients of every parameter and of ``x`` for a fixed random cotangent."""
    layer.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    out = fn(layer, x)
    cotangent = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    (out * cotangent).sum().backward()
    grads = {name: p.grad.clone() for name, p in layer.named_parameters()}
    grads["x"] = x.grad
    return out.detach(), grads


@pytest.mark.parametrize("mode, chirality", [("P", "L"), ("D", "L"), ("D", "R")])
@pytest.mark.parametrize("impl", ["combined", "auto", "chunk", "parallel"])
def test_layer_matches_frozen_reference_forward_and_every_gradient(mode, chirality, impl):
    """Today's layer (fused gate projection; combined or stacked orientations) against a frozen copy of the layer's
    old forward with the same parameters, cell-by-cell op, float64: output, every parameter gradient and the input
    gradient agree to 1e-10."""
    layer = randomize(PLSTM2D(32, 2, mode=mode, chirality=chirality, impl=impl).double())
    x = torch.randn(2, 5, 7, 32, dtype=torch.float64)
    ref, ref_grads = _forward_and_grads(layer, x, lambda m, t: reference_plstm_forward(m, t, op="naive"))
    out, grads = _forward_and_grads(layer, x, lambda m, t: m(t))
    assert ref.std() > 0.1
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    assert set(grads) == set(ref_grads)
    for name, grad in grads.items():
        assert ref_grads[name].abs().max() > 0, name
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("mode", ["P", "D"])
@pytest.mark.parametrize("grid", [(14, 14), (17, 16)])
def test_layer_float32_auto_matches_frozen_reference(mode, grid):
    """In float32 at the 14 x 14 grid of a 224 px image (combined form under ``impl="auto"``) and a grid above
    :data:`COMBINED_MAX_CELLS` (stacked chunked op with the CPU chunk size), against the old forward with the
    chunked op: output and every gradient agree to 2e-5 of their largest magnitude (float32 rounding of sums taken
    in another order; gradients of the projections sum over all cells)."""
    layer = randomize(PLSTM2D(32, 2, mode=mode, impl="auto"))
    x = torch.randn(1, *grid, 32)
    assert (grid[0] * grid[1] <= COMBINED_MAX_CELLS) == layer._use_combined(x)
    ref, ref_grads = _forward_and_grads(layer, x, lambda m, t: reference_plstm_forward(m, t, op="chunk"))
    out, grads = _forward_and_grads(layer, x, lambda m, t: m(t))
    for name, got, want in [("out", out, ref)] + [(n, g, ref_grads[n]) for n, g in grads.items()]:
        scale = want.abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(got, want, rtol=0, atol=2e-5 * scale, msg=name)


@pytest.mark.skipif(fused_recurrent_available() is not None, reason=str(fused_recurrent_available()))
@pytest.mark.parametrize("mode, chirality", [("P", "L"), ("D", "L"), ("D", "R")])
def test_layer_fused_inference_matches_frozen_reference(mode, chirality):
    """The native forward (what ``impl="auto"`` runs on the CPU without gradients) against the frozen copy of the
    layer's old forward with the cell-by-cell op, float64 to 1e-10, on a grid above COMBINED_MAX_CELLS and on an odd
    small one; under ``inference_mode`` and under ``no_grad`` with a model in eval mode."""
    layer = randomize(PLSTM2D(32, 2, mode=mode, chirality=chirality).double()).eval()
    for grid in ((5, 7), (17, 16)):
        x = torch.randn(1, *grid, 32, dtype=torch.float64)
        with torch.no_grad():
            assert layer._use_fused(x)
            ref = reference_plstm_forward(layer, x, op="naive")
            torch.testing.assert_close(layer(x), ref, rtol=1e-10, atol=1e-10)
        with torch.inference_mode():
            torch.testing.assert_close(layer(x), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("heads_per_call", [1, 3])
def test_stacked_form_split_into_op_calls_per_orientation_and_heads(heads_per_call):
    """The stacked form called per orientation and group of heads (as ``impl="auto"`` does on the CPU for large
    grids, to bound the op's working memory; 3 does not divide the 4 heads) equals the old single call."""
    layer = randomize(PLSTM2D(32, 4, mode="D", impl="chunk").double())
    layer.heads_per_call = heads_per_call
    x = torch.randn(2, 5, 7, 32, dtype=torch.float64)
    ref, ref_grads = _forward_and_grads(layer, x, lambda m, t: reference_plstm_forward(m, t, op="chunk"))
    out, grads = _forward_and_grads(layer, x, lambda m, t: m(t))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-10, atol=1e-10, msg=name)


def test_layer_parameter_layout_is_unchanged():
    """Checkpoints of the old layer load as they are: same parameter names and shapes (the gate projection is fused
    at run time, not in the parameters)."""
    layer = PLSTM2D(24, 3, mode="P")
    expected = {
        "qkv.weight": (72, 24),
        "qkv.bias": (72,),
        "gate_weight": (12, 3, 1, 2),
        "gate_bias": (3, 4, 3),
        "direct_bias": (3,),
        "orientation_weight": (4, 3, 24),
        "orientation_bias": (4, 3),
        "norm.weight": (3, 8),
        "proj.weight": (24, 24),
    }
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == expected
    d_layer = PLSTM2D(24, 3, mode="D", gate_groups=1)
    assert tuple(d_layer.state_dict()["gate_weight"].shape) == (1, 7, 12, 24)
    assert "orientation_weight" not in d_layer.state_dict()


def test_combined_gating_is_the_sum_of_the_four_flipped_parallel_gatings():
    """The combined form's G equals the four orientations' node-to-node gatings (one-block scan, orientation ``o``
    flipped back), the direct term counted once: checked on the G the layer uses via its output with v = one-hot
    value vectors (o = (q k^T * G) v with v_c' = e_c' reads out column c' of the scaled, gated scores)."""
    X, Y, H, D = 3, 4, 1, 12
    layer = randomize(PLSTM2D(D, H, mode="P", impl="combined").double())
    gen = torch.Generator().manual_seed(3)
    q, k = (torch.randn(1, X, Y, H, D, generator=gen, dtype=torch.float64) for _ in range(2))
    v = torch.eye(X * Y, dtype=torch.float64)[:, :D].reshape(1, X, Y, H, D)  # v of cell c' is e_c' (first D)
    x = torch.randn(1, X, Y, D, generator=gen, dtype=torch.float64)
    kinds = layer._gate_kinds(x)
    out = layer._combined(q, k, v, kinds).reshape(X * Y, D)
    scores = (q.reshape(X * Y, D) @ k.reshape(X * Y, D).T) * D**-0.5
    expected = torch.zeros(X * Y, X * Y, dtype=torch.float64)
    act = layer.gate_activations(x)
    for o in range(4):
        dims = {0: (), 1: (1,), 2: (2,), 3: (1, 2)}[o]

        def put(t: torch.Tensor, dims=dims) -> torch.Tensor:
            return t.flip(dims) if dims else t

        per = [put(act[n][:, :, :, o]).permute(0, 3, 1, 2).reshape(H, X, Y) for n in layer.gate_names]
        direct = put(act["direct"].expand(1, X, Y, H) * (o == 0)).permute(0, 3, 1, 2).reshape(H, X, Y)
        gates = p_mode_gates(*per, direct, put(act["orientation"][:, :, :, o]).permute(0, 3, 1, 2).reshape(H, X, Y))
        g = scan_plstm2d_blocks(gates, X, Y, boundary=False).g.reshape(X, Y, X, Y)
        flip = tuple(d for a in dims for d in (a - 1, a + 1))
        expected += (g.flip(flip) if flip else g).reshape(X * Y, X * Y)
    torch.testing.assert_close(out, (scores * expected)[:, :D], rtol=1e-12, atol=1e-12)


def test_gate_form_complement_in_layer_and_backbone():
    """The authors' P-mode gate form: every impl agrees with the cell-by-cell op on the same gates, the output
    differs from the split form's, D-mode ignores the option, and the backbone passes it to every block."""
    layer = randomize(PLSTM2D(32, 2, mode="P", impl="naive", gate_form="complement").double())
    x = torch.randn(2, 5, 7, 32, dtype=torch.float64)
    ref = layer(x)
    for impl in ("combined", "auto", "chunk") + (("fused",) if fused_recurrent_available() is None else ()):
        layer.impl = impl
        with torch.set_grad_enabled(impl != "fused"):
            torch.testing.assert_close(layer(x), ref, rtol=1e-10, atol=1e-10, msg=impl)
    layer.impl = "auto"
    layer.gate_form = "split"
    assert (layer(x) - ref).abs().max() > 1e-3
    torch.testing.assert_close(layer(x), reference_plstm_forward(layer, x, op="naive"), rtol=1e-10, atol=1e-10)
    d_layer = randomize(PLSTM2D(32, 2, mode="D", impl="combined").double())
    d_out = d_layer(x)
    d_layer.gate_form = "complement"
    torch.testing.assert_close(d_layer(x), d_out, rtol=0, atol=0)
    with pytest.raises(ValueError, match="gate_form"):
        PLSTM2D(32, 2, gate_form="paper")
    model = timm.create_model("test_plstm", gate_form="complement")
    assert {b.plstm.gate_form for b in model.blocks} == {"complement"}
    assert "gate_form='complement'" in repr(model.blocks[0].plstm)
    assert {b.plstm.gate_form for b in timm.create_model("test_plstm").blocks} == {"split"}


def _changed_cells(layer: PLSTM2D, x: torch.Tensor, cell: tuple[int, int]) -> torch.Tensor:
    x2 = x.clone()
    x2[:, cell[0], cell[1]] += 1.0
    return (layer(x2) - layer(x)).abs().amax(dim=(0, 3)) > 1e-9  # [X, Y]


@pytest.mark.parametrize("mode", ["P", "D"])
def test_each_orientation_reaches_its_own_quadrant(mode):
    """With the sources of all but orientation ``o`` switched off, a change at one cell reaches exactly the cells
    downstream in that orientation: four different quadrants, so X, Y and XY are flipped (no repeated flip)."""
    X, Y, cx, cy = 5, 6, 2, 3
    x = torch.randn(1, X, Y, 16, dtype=torch.float64)
    rows, cols = torch.arange(X)[:, None], torch.arange(Y)[None, :]
    quadrants = {
        0: (rows >= cx) & (cols >= cy),
        1: (rows <= cx) & (cols >= cy),
        2: (rows >= cx) & (cols <= cy),
        3: (rows <= cx) & (cols <= cy),
    }
    sources = [i for i, name in enumerate(PLSTM2D(16, 1, mode=mode).gate_names) if name.startswith("source")]
    for o, expected in quadrants.items():
        layer = randomize(PLSTM2D(16, 1, mode=mode, chirality="L", impl="chunk").double(), seed=o)
        with torch.no_grad():
            for i in sources:
                layer.gate_bias[i, [j for j in range(4) if j != o]] = -80.0  # sigmoid(-80) ~ 2e-35
        changed = _changed_cells(layer, x, (cx, cy))
        assert torch.equal(changed, expected), f"orientation {o}:\n{changed.int()}"


def test_all_orientations_together_reach_the_whole_grid():
    layer = randomize(PLSTM2D(16, 2, mode="P").double())
    changed = _changed_cells(layer, torch.randn(2, 4, 5, 16, dtype=torch.float64), (1, 2))
    assert changed.all()


def test_gate_initialisation_follows_the_reference():
    x = torch.randn(1, 3, 4, 24)
    p_layer = PLSTM2D(24, 3, mode="P")
    act = p_layer.gate_activations(x)
    assert set(act) == {"source", "transition", "mark", "direct", "orientation"}
    assert act["source"].shape == (1, 3, 4, 4, 3)  # [B, X, Y, orientation, head]
    torch.testing.assert_close(act["source"], torch.full_like(act["source"], 1 / (1 + math.exp(4))))
    torch.testing.assert_close(act["mark"], torch.full_like(act["mark"], 1 / (1 + math.exp(4))))
    torch.testing.assert_close(act["transition"], torch.full_like(act["transition"], math.tanh(5.0)))
    torch.testing.assert_close(act["direct"], torch.full((3,), 1 / (1 + math.exp(6))))
    heads = torch.sigmoid(torch.tensor([-2.0, 0.0, 2.0]))
    torch.testing.assert_close(act["orientation"], heads.expand(1, 3, 4, 4, 3))
    d_act = PLSTM2D(24, 3, mode="D").gate_activations(x)
    assert set(d_act) == {"source_r", "source_d", "trans_r", "trans_d", "trans_cross", "mark_l", "mark_u", "direct"}
    torch.testing.assert_close(d_act["trans_cross"], torch.full_like(d_act["trans_cross"], math.tanh(5.0)))
    assert p_layer.gate_weight.shape == (12, 3, 1, 2)  # 4 H groups, each reading a dim / (4 H) slice


def test_gates_are_bounded_and_gate_groups_option():
    layer = PLSTM2D(16, 2, mode="P", gate_groups=1)  # a dense gate projection
    with torch.no_grad():
        layer.gate_weight.normal_(0, 10.0)
        layer.orientation_weight.normal_(0, 10.0)
    act = layer.gate_activations(torch.randn(2, 3, 3, 16))
    assert act["transition"].abs().max() <= 1 and act["transition"].min() < 0
    for name in ("source", "mark", "orientation"):
        assert 0 <= act[name].min() and act[name].max() <= 1
    assert layer(torch.randn(1, 3, 3, 16)).shape == (1, 3, 3, 16)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dim=30, num_heads=4), "divisible"),
        (dict(mode="Q"), "mode"),
        (dict(mode="D", chirality="X"), "chirality"),
        (dict(gate_groups=3), "gate_groups"),
        (dict(impl="fast"), "plstm_impl"),
    ],
)
def test_layer_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PLSTM2D(**{"dim": 32, "num_heads": 2, **kwargs})


# ---------------------------------------------------------------------------------------------------------------
# the model


def test_registered_in_timm():
    assert set(timm.list_models("plstm_*")) == {"plstm_femto", "plstm_tiny", "plstm_small", "plstm_base"}
    assert "test_plstm" in timm.list_models(name_matches_cfg=True)
    cfg = timm.get_pretrained_cfg("plstm_base")
    assert cfg.first_conv == "patch_embed.proj" and cfg.classifier == "head" and cfg.pool_size == (14, 14)


@pytest.mark.parametrize(
    "name, dim, depth, heads, patch, size, params_m",
    [
        ("plstm_femto", 64, 4, 2, 8, 64, 0.283),
        ("plstm_tiny", 192, 12, 3, 16, 224, 5.74),
        ("plstm_small", 384, 12, 6, 16, 224, 22.12),
        ("plstm_base", 768, 12, 12, 16, 224, 86.82),
    ],
)
def test_variant_sizes(name, dim, depth, heads, patch, size, params_m):
    model = timm.create_model(name, device="meta")
    assert model.embed_dim == dim and len(model.blocks) == depth and model.head_hidden_size == dim == model.num_features
    assert [b.plstm.mode for b in model.blocks] == ["P", "D"] * (depth // 2)
    assert {b.plstm.num_heads for b in model.blocks} == {heads}
    assert model.patch_embed.patch_size == (patch, patch) and model.patch_embed.img_size == (size, size)
    assert model.pos_embed.shape == (1, size // patch, size // patch, dim)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    assert n_params == pytest.approx(params_m, rel=0.01)


def test_forward_shapes_and_head_api():
    model = make(num_classes=7)
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 7)
    feats = model.forward_features(x)
    assert feats.shape == (2, 4, 4, 64) and model.output_fmt == "NHWC"
    pooled = model.forward_head(feats, pre_logits=True)
    assert model.global_pool == "corners_avg"
    assert pooled.shape == (2, model.head_hidden_size) == (2, model.num_features) == (2, 64)
    corners = torch.stack([feats[:, 0, 0], feats[:, 0, 3], feats[:, 3, 0], feats[:, 3, 3]])
    torch.testing.assert_close(pooled, corners.mean(dim=0))
    assert model.get_classifier() is model.head
    model.reset_classifier(0)
    assert model(x).shape == (2, 64)
    # the reference head: the four corner tokens concatenated
    model.reset_classifier(5, "corners")
    assert model(x).shape == (2, 5) and model.head.in_features == 256 == model.head_hidden_size
    torch.testing.assert_close(model.forward_head(feats, pre_logits=True), torch.cat(list(corners), dim=-1))
    assert timm.create_model("test_plstm", global_pool="corners").head.in_features == 256
    model.reset_classifier(3, "avg")
    assert model(x).shape == (2, 3) and model.head.in_features == 64 == model.head_hidden_size
    torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats.mean(dim=(1, 2)))
    model.reset_classifier(0, "")
    assert model(x).shape == (2, 4, 4, 64)
    assert timm.create_model("test_plstm", num_classes=0, global_pool="").forward(x).shape == (2, 4, 4, 64)
    assert timm.create_model("test_plstm", global_pool="avg").head.in_features == 64
    with pytest.raises(ValueError, match="global_pool"):
        timm.create_model("test_plstm", global_pool="token")
    with pytest.raises(ValueError, match="block_modes"):
        timm.create_model("test_plstm", block_modes="PX")
    state = model.state_dict()
    cfg = model.pretrained_cfg
    assert cfg["classifier"] + ".weight" not in state  # head is Identity after reset_classifier(0)
    assert cfg["first_conv"] + ".weight" in state and "head.weight" in timm.create_model("test_plstm").state_dict()


def test_block_modes_and_no_pos_embed():
    model = timm.create_model("test_plstm", block_modes="D", chirality="R", pos_embed=False)
    assert [b.plstm.mode for b in model.blocks] == ["D"] * 4 and model.blocks[0].plstm.chirality == "R"
    assert model.pos_embed is None and model.no_weight_decay() == set()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


@pytest.mark.parametrize("kwargs, size", [({}, (32, 32)), (dict(dynamic_img_size=True), (40, 56))])
def test_chunk_op_matches_naive_op_inside_model(kwargs, size):
    model = make(plstm_impl="naive", **kwargs).double()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    ref = model(x)
    assert ref.std() > 0.1
    for impl, chunk_size in (("chunk", 2), ("auto", None)):
        model.set_plstm_impl(impl)
        for block in model.blocks:
            block.plstm.chunk_size = chunk_size
        torch.testing.assert_close(model(x), ref, rtol=1e-9, atol=1e-9)
    assert {b.plstm.impl for b in model.blocks} == {"auto"}
    with pytest.raises(ValueError, match="plstm_impl"):
        model.set_plstm_impl("triton")


def test_no_weight_decay_and_group_matcher():
    model = timm.create_model("test_plstm")
    names = {n for n, _ in model.named_parameters()}
    assert model.no_weight_decay() == {"pos_embed"} <= names
    groups = group_parameters(model, model.group_matcher())
    assert sum(len(g) for g in groups.values()) == len(names)
    assert len(groups) == len(model.blocks) + 2  # stem, blocks, final norm/head


def test_backward_all_params_get_grads():
    model = check_all_params_get_grads("test_plstm", torch.randn(2, 3, 32, 32))
    # the zero-initialised gate weights must learn: their gradient is not zero
    assert model.blocks[0].plstm.gate_weight.grad.abs().max() > 0
    assert model.blocks[1].plstm.gate_weight.grad.abs().max() > 0


def test_grad_checkpointing_parity():
    model = make()
    x = torch.randn(2, 3, 32, 32)
    check_grad_checkpointing_parity(model, x)
    inter = model.forward_intermediates(x, indices=[1], intermediates_only=True)
    model.set_grad_checkpointing(False)
    torch.testing.assert_close(inter[0], model.forward_intermediates(x, indices=[1], intermediates_only=True)[0])


def test_forward_intermediates():
    model = make()
    x = torch.randn(2, 3, 32, 32)
    final, inter = model.forward_intermediates(x)
    torch.testing.assert_close(final, model.forward_features(x))
    assert len(inter) == len(model.blocks)
    for t, info in zip(inter, model.feature_info, strict=True):
        assert t.shape == (2, info["num_chs"], 32 // info["reduction"], 32 // info["reduction"])
    nhwc = model.forward_intermediates(x, indices=[0, 2], norm=True, output_fmt="NHWC", intermediates_only=True)
    nlc = model.forward_intermediates(x, indices=[0, 2], norm=True, output_fmt="NLC", intermediates_only=True)
    assert len(nhwc) == 2 and nhwc[0].shape == (2, 4, 4, 64) and nlc[0].shape == (2, 16, 64)
    torch.testing.assert_close(nlc[1], nhwc[1].flatten(1, 2))
    torch.testing.assert_close(nhwc[1], model.norm(inter[2].permute(0, 2, 3, 1)))
    early = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
    torch.testing.assert_close(early[0], inter[1])
    last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
    torch.testing.assert_close(last2[1], inter[3])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NCL")


def test_prune_intermediate_layers():
    model = make()
    x = torch.randn(1, 3, 32, 32)
    ref = model.forward_intermediates(x, indices=[1], intermediates_only=True)
    kept = model.prune_intermediate_layers(indices=[1], prune_head=True)
    assert kept == [1] and len(model.blocks) == 2 and isinstance(model.head, torch.nn.Identity)
    assert model.global_pool == "" and model.head_hidden_size == 64
    torch.testing.assert_close(model.forward_intermediates(x, indices=[1], intermediates_only=True)[0], ref[0])


def test_features_only():
    model = timm.create_model("test_plstm", features_only=True, out_indices=(1, 2, 3))
    outs = model(torch.randn(2, 3, 32, 32))
    assert len(outs) == 3
    assert model.feature_info.channels() == [64, 64, 64] and model.feature_info.reduction() == [8, 8, 8]
    for o in outs:
        assert o.shape == (2, 64, 4, 4)
    dynamic = timm.create_model("test_plstm", features_only=True, dynamic_img_size=True, out_indices=(0,))
    assert dynamic(torch.randn(1, 3, 80, 112))[0].shape == (1, 64, 10, 14)


def test_dynamic_img_size_any_input_size():
    fixed = make()
    dynamic = timm.create_model("test_plstm", dynamic_img_size=True)
    dynamic.load_state_dict(fixed.state_dict())
    dynamic.eval()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(dynamic(x), fixed(x))
    assert dynamic.forward_features(torch.randn(1, 3, 80, 112)).shape == (1, 10, 14, 64)  # not square
    assert dynamic.forward_features(torch.randn(1, 3, 8, 40)).shape == (1, 1, 5, 64)  # one patch row
    assert torch.isfinite(dynamic(torch.randn(1, 3, 8, 8))).all()  # a single patch: all four corners are it
    big = dynamic(torch.randn(1, 3, 96, 96))  # larger than the 32 px the position embedding is made for
    assert big.shape == (1, 1000) and torch.isfinite(big).all()
    with pytest.raises(AssertionError):  # timm's PatchEmbed rejects other sizes when the size is fixed
        fixed(torch.randn(1, 3, 48, 48))
    padded = timm.create_model("test_plstm", dynamic_img_size=True, dynamic_img_pad=True)
    assert padded.forward_features(torch.randn(1, 3, 36, 50)).shape == (1, 5, 7, 64)  # sizes not multiples of 8


def test_set_input_size_resamples_pos_embed():
    model = make()
    before = model.pos_embed.detach().clone()
    model.set_input_size((48, 64))
    assert model.pos_embed.shape == (1, 6, 8, 64) and model.pos_embed.requires_grad
    assert model(torch.randn(1, 3, 48, 64)).shape == (1, 1000)
    model.set_input_size((32, 32))
    assert model.pos_embed.shape == before.shape


def test_checkpoint_filter_resamples_pos_embed_and_patch_kernel():
    source = make()
    target = timm.create_model("test_plstm", img_size=(48, 64), patch_size=4)
    state = checkpoint_filter_fn({"model": source.state_dict()}, target)
    assert state["pos_embed"].shape == (1, 12, 16, 64)
    assert state["patch_embed.proj.weight"].shape == (64, 3, 4, 4)
    target.load_state_dict(state)
    # a constant position embedding stays constant under resampling
    const = {**source.state_dict(), "pos_embed": torch.full((1, 4, 4, 64), 0.5)}
    torch.testing.assert_close(checkpoint_filter_fn(const, target)["pos_embed"], torch.full((1, 12, 16, 64), 0.5))
    bad = {**source.state_dict(), "pos_embed": torch.zeros(1, 16, 64)}
    with pytest.raises(ValueError, match="pos_embed"):
        checkpoint_filter_fn(bad, target)


def test_factory_kwargs_dtype_and_meta():
    model = timm.create_model("test_plstm", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model(torch.randn(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64
    meta = timm.create_model("plstm_base", device="meta", num_classes=10)
    assert all(p.device.type == "meta" for p in meta.parameters())
    small = timm.create_model("test_plstm", device="meta").to_empty(device="cpu")
    small.init_weights()
    reference = timm.create_model("test_plstm")
    for name, p in small.named_parameters():
        if "gate" in name or "orientation" in name or "direct" in name or "norm" in name:
            torch.testing.assert_close(p, reference.state_dict()[name], msg=name)  # deterministic inits
    assert torch.isfinite(small(torch.randn(1, 3, 32, 32))).all()


def test_pretrained_from_local_file_resamples_pos_embed(tmp_path):
    source = make()
    pth = check_loads_local_weights("test_plstm", source, tmp_path, unreleased="plstm_tiny")
    bigger = timm.create_model("test_plstm", pretrained=True, img_size=48, pretrained_cfg_overlay=dict(file=str(pth)))
    assert bigger.pos_embed.shape == (1, 6, 6, 64)
    torch.testing.assert_close(bigger.blocks[0].plstm.gate_weight, source.blocks[0].plstm.gate_weight)


def test_fx_feature_extraction_matches_eager():
    """timm's FX tests: the model traces with the pLSTM layer as a leaf, and the traced graph is exact."""
    from timm.models._features_fx import create_feature_extractor, get_graph_node_names

    model = make()
    x = torch.randn(2, 3, 32, 32)
    _, eval_nodes = get_graph_node_names(model)
    assert any("plstm" in n for n in eval_nodes)
    extractor = create_feature_extractor(model, return_nodes=[eval_nodes[-1]])
    torch.testing.assert_close(next(iter(extractor(x).values())), model(x))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["plstm_femto", "plstm_tiny", "plstm_base"])
def test_registered_models_forward_at_default_size(name):
    check_forward_at_default_size(name)


@pytest.mark.triton
@pytest.mark.slow
def test_triton_path_matches_torch_inside_model(triton_device):
    pytest.importorskip("recvision.ops.plstm2d.triton_chunk", reason="the Triton pLSTM kernel is not available")
    # one P and one D block on a 2 x 3 grid: the interpreter runs every kernel program in Python on CPU
    model = make(depth=2, dynamic_img_size=True).to(triton_device)
    x = torch.randn(1, 3, 16, 24, device=triton_device)
    tokens = torch.zeros(1, 2, 3, 64, device=triton_device)  # the 2 x 3 token grid the blocks see
    with backend("triton"):  # the CPU's combined form must not stand in for the kernel
        assert not any(b.plstm._use_combined(tokens) for b in model.blocks)
    check_triton_matches_torch(model, x)
