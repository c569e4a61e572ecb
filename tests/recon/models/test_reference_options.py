"""The model options that reproduce DIRECT / ATOMMIC behaviour (used by ``recon.interop``).

End-to-end reproduction of the reference implementations is tested in ``tests/recon/test_interop.py``; these tests
check each option on its own: defaults unchanged, the documented formula, and validation.
"""

from __future__ import annotations

import pytest
import torch

from recon.models import CIRIM, RIM, CIRIMConfig, RecurrentVarNet, RecurrentVarNetConfig, RIMConfig, create_model
from recon.models._common import ImageInit, initial_image
from recon.models._fourier import FourierOps
from recon.models.blocks import ConvGRUStack
from recon.ops import fft2c, ifft2c, log_likelihood_gradient, sens_expand, sens_reduce


def test_fourier_ops_conventions(synthetic_slice) -> None:
    kspace, mask, sens, _ = synthetic_slice
    x = torch.randn(2, 16, 16, dtype=torch.complex64)
    default = FourierOps()
    torch.testing.assert_close(default.fft(x), fft2c(x))
    torch.testing.assert_close(default.ifft(x), ifft2c(x))
    plain = FourierOps(centered=False, normalization="backward")
    torch.testing.assert_close(plain.fft(x), torch.fft.fft2(x))
    torch.testing.assert_close(plain.ifft(plain.fft(x)), x, atol=1e-5, rtol=1e-5)
    # backward normalisation = ortho on k-space scaled by sqrt(HW); the gradient is then the same
    scaled = FourierOps(centered=True, normalization="backward")
    eta = torch.randn(2, 16, 16, dtype=torch.complex64)
    grad = scaled.log_likelihood_gradient(eta, kspace * 16, sens, mask)
    torch.testing.assert_close(grad, log_likelihood_gradient(eta, kspace, sens, mask), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(scaled.reduce(scaled.expand(eta, sens), sens), sens_reduce(sens_expand(eta, sens), sens))
    with pytest.raises(ValueError, match="fft_normalization"):
        FourierOps(normalization="unitary")


def test_image_inits(synthetic_slice) -> None:
    kspace, mask, sens, _ = synthetic_slice
    coil_images = ifft2c(kspace)
    torch.testing.assert_close(initial_image(kspace, mask.bool(), sens, ImageInit.COIL_SUM), coil_images.sum(1))
    parts = initial_image(kspace, mask.bool(), sens, ImageInit.RSS_PARTS)
    torch.testing.assert_close(parts.real, coil_images.real.pow(2).sum(1).sqrt())
    torch.testing.assert_close(parts.imag, coil_images.imag.pow(2).sum(1).sqrt())


def test_gru_stack_state_relu_and_norm() -> None:
    torch.manual_seed(0)
    stack = ConvGRUStack(4, 3, 2, num_layers=2)
    relu = ConvGRUStack(4, 3, 2, num_layers=2, state_relu=True)
    relu.load_state_dict(stack.state_dict())
    x = torch.randn(1, 4, 8, 9)
    out, hidden = stack(x)
    out_relu, hidden_relu = relu(x)
    torch.testing.assert_close(hidden_relu[0], hidden[0])  # the stored state is not rectified
    assert not torch.allclose(out_relu, out)
    # normalised: the stack sees unit-std groups and the output is mapped back (scale-equivariant)
    norm = ConvGRUStack(4, 3, 2, num_layers=2, state_relu=True, norm_groups=2)
    norm.load_state_dict(stack.state_dict())
    a, _ = norm(x)
    b, _ = norm(3.0 * x + 1.0)
    torch.testing.assert_close(b, 3.0 * a + 1.0, atol=1e-5, rtol=1e-5)


def test_new_fields_default_to_old_behaviour() -> None:
    """The reference options default off: the same parameter names as a model built without them."""
    for config_cls in (RIMConfig, CIRIMConfig, RecurrentVarNetConfig):
        config = config_cls()
        assert config.fft_centered and config.fft_normalization == "ortho"
    assert RIMConfig().regularizer == "conv_rnn" and not RIMConfig().output_relu
    c = CIRIMConfig()
    assert c.explicit_dc_form == "soft" and c.carry_hidden and not c.fixed_step_input and not c.output_relu
    r = RecurrentVarNetConfig()
    assert r.initializer_input == "image" and not r.gru_state_relu and not r.normalized and r.output == "sense"
    torch.manual_seed(0)
    keys = list(create_model("rim", num_steps=2, hidden_channels=4).state_dict())
    assert keys[0].startswith("block.convs.0") and not any("stacks" in k for k in keys)


def test_gru_stack_rim(synthetic_slice) -> None:
    kspace, mask, sens, _ = synthetic_slice
    torch.manual_seed(0)
    shared = RIM(RIMConfig(regularizer="gru_stack", num_steps=3, hidden_channels=4, num_layers=3))
    assert len(shared.block.stacks) == 1 and shared.block.initializer is None
    unshared = RIM(
        RIMConfig(
            regularizer="gru_stack",
            num_steps=3,
            hidden_channels=4,
            no_parameter_sharing=True,
            learned_initializer=True,
            initializer_channels=(4, 6),
            initializer_dilations=(1, 2),
            image_init="coil_sum",
            normalized=True,
        )
    )
    assert len(unshared.block.stacks) == 3
    for model in (shared, unshared):
        preds = model.predictions(kspace, mask, sens)
        assert len(preds[0]) == 3 and preds[0][-1].shape == (2, 16, 16)
        model(kspace, mask, sens).abs().sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    no_skip = RIM(RIMConfig(regularizer="gru_stack", num_steps=1, hidden_channels=4, skip_connections=False))
    with torch.no_grad():
        eta0 = sens_reduce(kspace, sens)
        grad = log_likelihood_gradient(eta0, kspace, sens, mask)
        x = torch.cat([torch.stack([eta0.real, eta0.imag], 1), torch.stack([grad.real, grad.imag], 1)], 1)
        out, _ = no_skip.block.stacks[0](x)
        torch.testing.assert_close(no_skip(kspace, mask, sens), torch.complex(out[:, 0], out[:, 1]))
    with pytest.raises(ValueError, match="regularizer"):
        RIMConfig(regularizer="unet")
    with pytest.raises(ValueError, match="num_layers"):
        RIMConfig(num_layers=1)


def test_cirim_fixed_step_input_and_no_carry(synthetic_slice) -> None:
    kspace, mask, sens, _ = synthetic_slice
    torch.manual_seed(0)
    config = {"num_cascades": 2, "num_steps": 3, "hidden_channels": 4}
    model = CIRIM(CIRIMConfig(**config, fixed_step_input=True, carry_hidden=False, output_relu=True))
    preds = model.predictions(kspace, mask, sens)
    eta0 = sens_reduce(kspace, sens)
    first, _ = model.cascades[0](eta0, kspace, mask.bool(), sens)
    # every step adds a non-negative (ReLU) update to the same input image
    for eta in first:
        delta = eta - eta0
        assert (delta.real >= 0).all() and (delta.imag >= 0).all()
    second, _ = model.cascades[1](first[-1], kspace, mask.bool(), sens, None)  # zero states: not carried
    torch.testing.assert_close(preds[1][-1], second[-1])


def test_cirim_kspace_residual_dc(synthetic_slice) -> None:
    kspace, mask, sens, _ = synthetic_slice
    torch.manual_seed(0)
    model = CIRIM(
        CIRIMConfig(
            num_cascades=2, num_steps=2, hidden_channels=4, explicit_dc=True, explicit_dc_form="kspace_residual"
        )
    )
    with torch.no_grad():
        model.dc[1].dc_weight.fill_(0.5)
    preds = model.predictions(kspace, mask, sens)
    m = mask.bool()
    raw, hidden = model.cascades[0](sens_reduce(kspace, sens), kspace, m, sens)
    k_first = [kspace - sens_expand(e, sens) for e in raw]  # k_in = y: the DC term vanishes
    torch.testing.assert_close(preds[0][-1], sens_reduce(k_first[-1], sens))
    raw2, _ = model.cascades[1](preds[0][-1], kspace, m, sens, hidden)
    residual = torch.where(m, k_first[-1] - kspace, torch.zeros((), dtype=kspace.dtype))
    expected = sens_reduce(kspace - 0.5 * residual - sens_expand(raw2[-1], sens), sens)
    torch.testing.assert_close(preds[1][-1], expected)
    with pytest.raises(ValueError, match="explicit_dc_form"):
        CIRIMConfig(explicit_dc_form="hard")


@pytest.mark.parametrize("source", ["sense_kspace", "coil_sum_kspace"])
def test_rvn_initializer_inputs_and_rss_output(source: str, synthetic_slice) -> None:
    kspace, mask, sens, _ = synthetic_slice
    tiny = {"num_steps": 2, "hidden_channels": 4, "num_layers": 2, "initializer_channels": (4,)}
    tiny["initializer_dilations"] = (1,)
    torch.manual_seed(0)
    model = RecurrentVarNet(RecurrentVarNetConfig(**tiny, initializer_input=source, output="rss_parts"))
    expected_input = fft2c(sens_reduce(kspace, sens)) if source == "sense_kspace" else kspace.sum(1)
    captured = {}
    model.initializer.register_forward_pre_hook(lambda _, args: captured.setdefault("x", args[0]))
    out = model(kspace, mask, sens)
    torch.testing.assert_close(captured["x"], torch.stack([expected_input.real, expected_input.imag], 1))
    assert (out.real >= 0).all() and (out.imag >= 0).all()
    with pytest.raises(ValueError, match="initializer_input"):
        RecurrentVarNetConfig(initializer_input="learned")
