from __future__ import annotations

import pytest
import torch

from recon.models import RecurrentVarNet, RecurrentVarNetConfig
from recon.models.blocks import ConvGRUStack, RecurrentInit
from recon.ops import mask_kspace, sens_expand, sens_reduce

TINY = {
    "num_steps": 3,
    "hidden_channels": 4,
    "num_layers": 3,
    "initializer_channels": (4, 6),
    "initializer_dilations": (1, 2),
}


def _rvn(**overrides) -> RecurrentVarNet:
    torch.manual_seed(0)
    return RecurrentVarNet(RecurrentVarNetConfig(**{**TINY, **overrides}))


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _block_params(h: int, layers: int) -> int:
    convs = (2 * h * 25 + h) + (h * h * 9 + h) + (layers - 2) * (h * h * 9 + h)
    grus = layers * (3 * h * h + 3 * h + 3 * h * h)  # ih (bias) + hh (no bias), 1x1 kernels
    return convs + grus + (h * 2 * 9 + 2) + 1  # output conv + alpha


def _init_params(h: int, layers: int, channels: tuple[int, ...], multiscale: int) -> int:
    cins = (2, *channels[:-1])
    stack = sum(ci * co * 9 + co for ci, co in zip(cins, channels, strict=True))
    return stack + layers * (sum(channels[-multiscale:]) * h + h)


@pytest.mark.parametrize("learned_initializer", [False, True])
def test_rvn_parameter_counts(learned_initializer: bool) -> None:
    shared = _rvn(no_parameter_sharing=False, learned_initializer=learned_initializer)
    unshared = _rvn(no_parameter_sharing=True, learned_initializer=learned_initializer)
    block = _block_params(4, 3)
    init = _init_params(4, 3, (4, 6), 1) if learned_initializer else 0
    assert _count(shared.blocks[0]) == block
    assert _count(shared) == block + init
    assert _count(unshared) == 3 * block + init
    assert len(shared.blocks) == 1 and len(unshared.blocks) == 3


def test_rvn_multiscale_initializer_params() -> None:
    model = _rvn(initializer_multiscale=2)
    assert _count(model.initializer) == _init_params(4, 3, (4, 6), 2)
    states = model.initializer(torch.randn(2, 2, 16, 16))
    assert len(states) == 3 and all(s.shape == (2, 4, 16, 16) and (s >= 0).all() for s in states)


@pytest.mark.parametrize("sharing", [False, True])
def test_rvn_forward_backward(sharing: bool, synthetic_slice) -> None:
    kspace, mask, sens, _ = synthetic_slice
    model = _rvn(no_parameter_sharing=not sharing, initializer_multiscale=2)
    preds = model.predictions(kspace, mask, sens)
    assert len(preds) == 1 and len(preds[0]) == 3
    assert all(p.shape == (2, 16, 16) and p.dtype == torch.complex64 for p in preds[0])
    out = model(kspace, mask, sens)
    torch.testing.assert_close(out, preds[0][-1])
    out.abs().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_rvn_update_equation(synthetic_slice) -> None:
    """One step: ``k1 = y - alpha M (y - y) + F E(w)``, ``w`` from the GRU stack on ``R F^-1 y`` with zero states."""
    kspace, mask, sens, _ = synthetic_slice
    model = _rvn(num_steps=1, learned_initializer=False)
    with torch.no_grad():
        model.blocks[0].learning_rate.fill_(0.3)
    image = sens_reduce(kspace, sens)
    w, _ = model.blocks[0].regularizer(torch.stack([image.real, image.imag], dim=1))
    k1 = kspace - 0.3 * mask_kspace(kspace - kspace, mask) + sens_expand(torch.complex(w[:, 0], w[:, 1]), sens)
    torch.testing.assert_close(model(kspace, mask, sens), sens_reduce(k1, sens))
    # two steps: the DC term now acts on the sampled entries
    model = _rvn(num_steps=2, learned_initializer=False)
    k, hidden = kspace, None
    for block in model.blocks:
        img = sens_reduce(k, sens)
        w, hidden = block.regularizer(torch.stack([img.real, img.imag], dim=1), hidden)
        k = k - block.learning_rate * mask_kspace(k - kspace, mask) + sens_expand(torch.complex(w[:, 0], w[:, 1]), sens)
    torch.testing.assert_close(model(kspace, mask, sens), sens_reduce(k, sens))


def test_gru_stack_layers() -> None:
    stack = ConvGRUStack(2, 4, 2, num_layers=3)
    assert stack.convs[0][1].kernel_size == (5, 5) and stack.convs[1][1].dilation == (2, 2)
    assert stack.convs[2][1].kernel_size == (3, 3) and stack.convs[2][1].dilation == (1, 1)
    assert all(c.reset_before_conv for c in stack.cells)
    out, hidden = stack(torch.randn(1, 2, 9, 10))
    assert out.shape == (1, 2, 9, 10) and len(hidden) == 3


def test_rvn_config_errors() -> None:
    with pytest.raises(ValueError, match="same length"):
        RecurrentVarNetConfig(initializer_channels=(4, 4), initializer_dilations=(1,))
    with pytest.raises(ValueError, match="initializer_multiscale"):
        RecurrentVarNetConfig(initializer_multiscale=5)
    with pytest.raises(ValueError, match="multiscale_depth"):
        RecurrentInit(2, 4, (4,), (1,), 2, multiscale_depth=2)


def test_rvn_loss_goes_down(loss_decreases) -> None:
    first, last = loss_decreases(_rvn(hidden_channels=8))
    assert last < 0.8 * first
