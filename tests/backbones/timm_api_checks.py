"""Checks of the timm model API shared by the backbone test files (modelled on timm's tests/test_models.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

import recvision

__all__ = [
    "check_all_params_get_grads",
    "check_forward_at_default_size",
    "check_grad_checkpointing_parity",
    "check_loads_local_weights",
    "check_triton_matches_torch",
]


def check_all_params_get_grads(name: str, x: torch.Tensor, **kwargs: object) -> torch.nn.Module:
    """A backward of a fresh ``name`` (42 classes, drop path on) reaches every parameter; returns the model."""
    model = timm.create_model(name, num_classes=42, drop_path_rate=0.1, **kwargs)
    out = model(x)
    out.mean().backward()
    assert out.shape[-1] == 42 and not torch.isnan(out).any()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    return model


def check_grad_checkpointing_parity(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Outputs and every parameter gradient are the same with ``set_grad_checkpointing()`` (rtol 1e-4)."""
    ref = model(x)
    ref.sum().backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing()
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[n], rtol=1e-4, atol=1e-5, msg=n)


def check_loads_local_weights(name: str, source: torch.nn.Module, tmp_path: Path, unreleased: str) -> Path:
    """``pretrained=True`` with a local ``.safetensors`` or ``.pth`` file restores ``source`` exactly, and a model
    without local weights (``unreleased``) is refused with a clear message. Returns the ``.pth`` path."""
    from safetensors.torch import save_file

    save_file(source.state_dict(), str(tmp_path / "weights.safetensors"))
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    for file in ("weights.safetensors", "weights.pth"):
        same = timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / file), num_classes=1000)
        )
        for key, value in source.state_dict().items():
            torch.testing.assert_close(same.state_dict()[key], value, msg=key)
    with pytest.raises(ValueError, match="pretrained=True needs local weights"):
        timm.create_model(unreleased, pretrained=True)
    return tmp_path / "weights.pth"


def check_forward_at_default_size(name: str) -> None:
    """timm's test_model_forward: batch 1 at the default input size, finite output."""
    model = timm.create_model(name, num_classes=10).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, *model.pretrained_cfg["input_size"]))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


def check_triton_matches_torch(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Output and input gradient of ``model`` with the Triton backend equal the PyTorch backend's."""
    x = x.detach().requires_grad_()
    with recvision.config.backend("torch"):
        ref = model(x)
        (ref_grad,) = torch.autograd.grad(ref.square().sum(), x)
    with recvision.config.backend("triton"):
        out = model(x)
        (grad,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-3, atol=1e-4)
