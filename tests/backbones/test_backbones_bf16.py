"""Every backbone in bfloat16 on the CPU: under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (float32 weights)
and converted to bfloat16 (weights and input), compared with the same model in float32.

The ops keep their states, decays and normalisers in float32 (``tests/ops/test_ops_bf16.py``); here the whole network
is checked. Tolerances are relative RMS errors over all outputs and over all parameter gradients together:
bfloat16 keeps 8 significant bits, and a network of linear layers, norms and mixers lands at a few 1e-3 on the
features; the bounds leave a factor of about four.
"""

from __future__ import annotations

import pytest
import timm
import torch

import recvision  # noqa: F401  (registers the backbones)
from recvision.ops.utils import assert_close

FEATURE_RATIO = 2e-2
GRAD_RATIO = 5e-2

MODELS = [
    pytest.param("vir_femto", dict(retention_mode="parallel"), id="vir-parallel"),
    pytest.param("vir_femto", dict(retention_mode="chunkwise", chunk_size=16), id="vir-chunkwise"),
    pytest.param("vir_femto", dict(retention_mode="recurrent", stream_block_size=3), id="vir-recurrent"),
    pytest.param("lightnet_femto", {}, id="lightnet"),
    pytest.param("plstm_femto", {}, id="plstm"),
]


def _pair(name: str, kwargs: dict) -> tuple[torch.nn.Module, torch.Tensor]:
    model = timm.create_model(name, img_size=32, **kwargs).eval()
    return model, torch.randn(2, 3, 32, 32)


@pytest.mark.parametrize("name, kwargs", MODELS)
def test_backbone_bf16_forward_matches_fp32(name: str, kwargs: dict) -> None:
    model, x = _pair(name, kwargs)
    with torch.inference_mode():
        ref = model.forward_features(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model.forward_features(x)
        bf16_model = timm.create_model(name, img_size=32, **kwargs).eval()
        bf16_model.load_state_dict(model.state_dict())
        bf16 = bf16_model.to(torch.bfloat16).forward_features(x.bfloat16())
    assert bf16.dtype == torch.bfloat16
    assert_close("autocast features", ref, autocast, FEATURE_RATIO, atol=0.0)
    assert_close("bf16 features", ref, bf16, FEATURE_RATIO, atol=0.0)


@pytest.mark.parametrize("name, kwargs", MODELS)
def test_backbone_autocast_gradients_match_fp32(name: str, kwargs: dict) -> None:
    model, x = _pair(name, kwargs)
    model.train()
    do = None
    grads = []
    for enabled in (False, True):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            out = model.forward_features(x)
        if do is None:
            do = torch.randn(out.shape)
        (out.float() * do).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert grads[0].shape == grads[1].shape
    assert_close("parameter gradients", grads[0], grads[1], GRAD_RATIO, atol=0.0)
