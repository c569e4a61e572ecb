from __future__ import annotations

import pytest
import torch

from recon.models import RIM, CellType, RIMConfig
from recon.ops import log_likelihood_gradient, sens_reduce


@pytest.mark.parametrize("cell", list(CellType))
def test_rim_forward_backward(cell: CellType, synthetic_slice) -> None:
    torch.manual_seed(0)
    kspace, mask, sens, _ = synthetic_slice
    model = RIM(RIMConfig(num_steps=3, hidden_channels=4, cell=cell))
    preds = model.predictions(kspace, mask, sens)
    assert len(preds) == 1 and len(preds[0]) == 3
    for p in preds[0]:
        assert p.shape == (2, 16, 16) and p.dtype == torch.complex64
    out = model(kspace, mask, sens)
    torch.testing.assert_close(out, preds[0][-1])
    out.abs().sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(torch.view_as_real(out)).all()


def test_rim_bool_mask_and_batch_mask(synthetic_slice) -> None:
    kspace, mask, sens, _ = synthetic_slice
    model = RIM(RIMConfig(num_steps=2, hidden_channels=4))
    ref = model(kspace, mask, sens)
    torch.testing.assert_close(model(kspace, mask.bool(), sens), ref)
    torch.testing.assert_close(model(kspace, mask.expand(2, 1, 16, 16), sens), ref)


def test_rim_first_step_is_update_of_sense_image(synthetic_slice) -> None:
    """``eta_1 = eta_0 + net([eta_0, grad(eta_0)])`` with ``eta_0 = R F^-1 y``."""
    torch.manual_seed(0)
    kspace, mask, sens, _ = synthetic_slice
    model = RIM(RIMConfig(num_steps=1, hidden_channels=4, cell="indrnn"))
    eta0 = sens_reduce(kspace, sens)
    grad = log_likelihood_gradient(eta0, kspace, sens, mask)
    x = torch.cat([eta0.real[:, None], eta0.imag[:, None], grad.real[:, None], grad.imag[:, None]], dim=1)
    block = model.block
    h0 = block.cells[0](block.convs[0](x))
    h1 = block.cells[1](block.convs[1](h0))
    delta = block.out(h1)
    torch.testing.assert_close(model(kspace, mask, sens), eta0 + torch.complex(delta[:, 0], delta[:, 1]))


def test_rim_zero_init(synthetic_slice) -> None:
    kspace, mask, sens, _ = synthetic_slice
    model = RIM(RIMConfig(num_steps=2, hidden_channels=4, image_init="zero"))
    assert model(kspace, mask, sens).shape == (2, 16, 16)


def test_rim_input_errors(synthetic_slice) -> None:
    kspace, mask, sens, _ = synthetic_slice
    model = RIM(RIMConfig(num_steps=1, hidden_channels=2))
    with pytest.raises(ValueError, match="masked_kspace"):
        model(kspace.real, mask, sens)
    with pytest.raises(ValueError, match="sens_maps"):
        model(kspace, mask, sens[:, :1])
    with pytest.raises(ValueError, match="mask"):
        model(kspace, mask[..., :8], sens)


def test_rim_config_errors() -> None:
    with pytest.raises(ValueError, match="gru"):
        RIMConfig(cell="lstm")
    with pytest.raises(ValueError, match="num_steps"):
        RIMConfig(num_steps=0)


def test_rim_loss_goes_down(loss_decreases) -> None:
    torch.manual_seed(0)
    first, last = loss_decreases(RIM(RIMConfig(num_steps=4, hidden_channels=8)))
    assert last < 0.8 * first
