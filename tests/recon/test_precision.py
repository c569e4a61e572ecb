"""Inference precision (``recon.inference``: fp32 / bf16) and the models' native-order operators.

fp32 must give exactly what calling the model directly gives, and the models' native-order loops exactly what the
centred operators give (even sizes); bf16 runs the convs and cells in bfloat16 and is compared with fp32 by relative
RMS error (``||bf16 - fp32|| / ||fp32||``) against the bounds in ``BF16_RTOL``.
"""

from __future__ import annotations

import pytest
import torch

from recon.inference import PRECISIONS, check_precision, make_reconstructor, precision_context, prepare_model
from recon.models import create_model
from recon.models._fourier import FourierOps
from tests.recon.models.conftest import make_slice

SMALL = {
    "rim": {"num_steps": 3, "hidden_channels": 16},
    "cirim": {"num_cascades": 2, "num_steps": 3, "hidden_channels": 16, "explicit_dc": True},
    "recurrentvarnet": {
        "num_steps": 3,
        "hidden_channels": 16,
        "num_layers": 2,
        "initializer_channels": (8, 8),
        "initializer_dilations": (1, 2),
    },
}
# bf16 keeps 8 mantissa bits (relative rounding 2^-9 per op); through 3-6 recurrent steps the outputs of these
# randomly initialised models stay within 2 % RMS of fp32
BF16_RTOL = 2e-2


def _rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().pow(2).mean().sqrt() / b.abs().pow(2).mean().sqrt())


def test_precisions_and_bad_value():
    assert PRECISIONS == ("fp32", "bf16")
    assert check_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match=r"^precision must be one of \['fp32', 'bf16'\]; got 'fp16'$"):
        check_precision("fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        make_reconstructor(create_model("rim", **SMALL["rim"]), precision="half")
    with pytest.raises(ValueError, match="precision='bf16' applies to the learned models"):
        make_reconstructor("zero-filled", precision="bf16")


def _direct_and_via(name: str, **settings: object) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A small model of ``name``, its direct output on a fixed slice, and the output of ``make_reconstructor(model,
    **settings)`` on the same slice (called after the direct one, as the reconstructor changes the model's layout)."""
    torch.manual_seed(0)
    model = create_model(name, **SMALL[name]).eval()
    kspace, mask, sens, _ = make_slice(batch=2, coils=3, size=32)
    with torch.inference_mode():
        direct = model(kspace, mask, sens)
        via = make_reconstructor(model, **settings)(kspace, mask, sens)
    return model, direct, via


@pytest.mark.parametrize("name", list(SMALL))
def test_fp32_is_the_direct_call_bit_for_bit_in_the_models_layout(name):
    model, direct, via = _direct_and_via(name, precision="fp32", channels_last=False)
    assert torch.equal(direct, via)
    assert all(p.is_contiguous() for p in model.parameters())  # channels_last=False leaves the layout alone


@pytest.mark.parametrize("name", list(SMALL))
def test_fp32_channels_last_default_matches_the_direct_call(name):
    # channels-last (the default) sums each convolution in another order: the same result to float32 rounding
    model, direct, via = _direct_and_via(name, precision="fp32")
    conv_weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights)
    assert via.dtype == direct.dtype == torch.complex64
    torch.testing.assert_close(via, direct, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(SMALL))
def test_bf16_close_to_fp32(name):
    model, ref, out = _direct_and_via(name, precision="bf16")
    assert out.dtype == torch.complex64 and out.shape == ref.shape
    assert torch.isfinite(torch.view_as_real(out)).all()
    err = _rel_rms(out, ref)
    assert 0 < err < BF16_RTOL, err  # > 0: the convs did run in bf16
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_precision_context_and_prepare_model():
    with precision_context("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with precision_context("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    model = create_model("rim", **SMALL["rim"])
    assert prepare_model(model, "fp32") is model and not model.training
    with pytest.raises(ValueError, match="precision must be one of"):
        prepare_model(model, "bf32")


@pytest.mark.parametrize("size", [(24, 20), (21, 17)])
@pytest.mark.parametrize("ops", [FourierOps(), FourierOps(False, "backward"), FourierOps(True, "forward")], ids=repr)
def test_native_order_operators(ops, size):
    g = torch.Generator().manual_seed(0)
    shape = (2, 3, *size)
    kspace = torch.randn(shape, dtype=torch.complex64, generator=g)
    sens = torch.randn(shape, dtype=torch.complex64, generator=g)
    eta = torch.randn(2, *size, dtype=torch.complex64, generator=g)
    mask = torch.rand(1, 1, 1, size[1], generator=g) > 0.5
    native = ops.native(kspace, mask, sens)
    pairs = [
        (ops.native_gradient(eta, native, 2.0), ops.log_likelihood_gradient(eta, kspace, sens, mask, 2.0)),
        (ops.from_native(ops.native_expand(ops.to_native(eta), native.sens)), ops.expand(eta, sens)),
        (ops.from_native(ops.native_reduce(native.kspace, native.sens)), ops.reduce(kspace, sens)),
        (ops.to_native(ops.from_native(kspace)), kspace),
    ]
    for got, want in pairs:
        if size[0] * size[1] % 16 == 0:
            # a shift moves every value to another position of a vectorised loop: the same arithmetic, the same bits
            assert torch.equal(got, want)
        else:  # the scalar tail of an odd-sized loop may round a complex product differently
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def _centred(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the native-order methods the centred operators, i.e. the models' loops as written before them."""
    monkeypatch.setattr(FourierOps, "to_native", lambda self, x: x)
    monkeypatch.setattr(FourierOps, "from_native", lambda self, x: x)
    monkeypatch.setattr(FourierOps, "native_ifft", FourierOps.ifft)
    monkeypatch.setattr(FourierOps, "native_expand", FourierOps.expand)
    monkeypatch.setattr(FourierOps, "native_reduce", FourierOps.reduce)
    monkeypatch.setattr(
        FourierOps,
        "native_gradient",
        lambda self, eta, data, sigma=1.0: self.log_likelihood_gradient(eta, data.kspace, data.sens, data.mask, sigma),
    )


VARIANTS = [
    ("rim", {}),
    ("rim", {"regularizer": "gru_stack", "learned_initializer": True, "initializer_channels": (4, 4),
             "initializer_dilations": (1, 2), "image_init": "coil_sum"}),
    ("cirim", {}),
    ("cirim", {"explicit_dc_form": "kspace_residual", "output_relu": True, "fixed_step_input": True}),
    ("cirim", {"cell": "gru", "keep_prediction": False, "fft_normalization": "backward"}),
    ("recurrentvarnet", {}),
    ("recurrentvarnet", {"initializer_input": "sense_kspace", "gru_state_relu": True, "normalized": True}),
    ("recurrentvarnet", {"initializer_input": "coil_sum_kspace", "output": "rss_parts", "no_parameter_sharing": False}),
    ("recurrentvarnet", {"fft_centered": False, "fft_normalization": "backward", "learned_initializer": False}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "extra"), VARIANTS)
def test_native_order_models_bit_identical(name, extra, monkeypatch):
    torch.manual_seed(0)
    model = create_model(name, **{**SMALL[name], **extra}).eval()
    kspace, mask, sens, _ = make_slice(batch=2, coils=3, size=32)
    with torch.inference_mode():
        native = (model(kspace, mask, sens), model.predictions(kspace, mask, sens))
        _centred(monkeypatch)
        centred = (model(kspace, mask, sens), model.predictions(kspace, mask, sens))
    assert torch.equal(native[0], centred[0])
    for got, want in zip(native[1], centred[1], strict=True):
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
