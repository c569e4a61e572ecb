from __future__ import annotations

import torch

from recon.models import CIRIM, CellType, CIRIMConfig
from recon.models.blocks import IndRNNCell
from recon.ops import sens_expand, sens_reduce


def _cirim(**overrides) -> CIRIM:
    torch.manual_seed(0)
    return CIRIM(CIRIMConfig(**{"num_cascades": 2, "num_steps": 3, "hidden_channels": 4, **overrides}))


def test_cirim_defaults() -> None:
    config = CIRIMConfig()
    assert config.cell is CellType.INDRNN and not config.explicit_dc and config.keep_prediction
    model = _cirim()
    assert isinstance(model.cascades[0].cells[0], IndRNNCell) and model.dc is None
    # independently parameterised cascades
    assert model.cascades[0].out.conv.weight.data_ptr() != model.cascades[1].out.conv.weight.data_ptr()


def test_cirim_forward_backward_all_predictions(synthetic_slice) -> None:
    kspace, mask, sens, _ = synthetic_slice
    model = _cirim(explicit_dc=True)
    preds = model.predictions(kspace, mask, sens)
    assert len(preds) == 2 and all(len(c) == 3 for c in preds)
    assert all(p.shape == (2, 16, 16) and p.dtype == torch.complex64 for c in preds for p in c)
    out = model(kspace, mask, sens)
    torch.testing.assert_close(out, preds[-1][-1])
    out.abs().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.dc[0].dc_weight.grad.abs() > 0


def test_cirim_explicit_vs_implicit_dc_differ(synthetic_slice) -> None:
    kspace, mask, sens, _ = synthetic_slice
    implicit, explicit = _cirim(), _cirim(explicit_dc=True)
    shared = {k: v for k, v in explicit.state_dict().items() if not k.startswith("dc.")}
    torch.testing.assert_close(shared, implicit.state_dict())  # same weights except the DC weights
    assert len(list(explicit.parameters())) == len(list(implicit.parameters())) + 2
    a, b = implicit(kspace, mask, sens), explicit(kspace, mask, sens)
    assert torch.isfinite(torch.view_as_real(a)).all() and torch.isfinite(torch.view_as_real(b)).all()
    assert not torch.allclose(a, b)


def test_cirim_explicit_dc_matches_manual(synthetic_slice) -> None:
    """Explicit DC maps each estimate to ``R F^-1 (F E eta - lambda M (F E eta - y))`` (lambda = 1: ``y`` replaces)."""
    kspace, mask, sens, _ = synthetic_slice
    model = _cirim(explicit_dc=True)
    preds = model.predictions(kspace, mask, sens)
    eta0 = sens_reduce(kspace, sens)
    raw, hidden = model.cascades[0](eta0, kspace, mask.bool(), sens)
    for eta, pred in zip(raw, preds[0], strict=True):
        expected = sens_reduce(torch.where(mask.bool(), kspace, sens_expand(eta, sens)), sens)
        torch.testing.assert_close(pred, expected)
    raw2, _ = model.cascades[1](preds[0][-1], kspace, mask.bool(), sens, hidden)
    expected = sens_reduce(torch.where(mask.bool(), kspace, sens_expand(raw2[-1], sens)), sens)
    torch.testing.assert_close(preds[1][-1], expected)


def test_cirim_keep_prediction_and_hidden_carry(synthetic_slice) -> None:
    kspace, mask, sens, _ = synthetic_slice
    keep, restart = _cirim(), _cirim(keep_prediction=False)
    p_keep, p_restart = keep.predictions(kspace, mask, sens), restart.predictions(kspace, mask, sens)
    torch.testing.assert_close(p_keep[0], p_restart[0])  # the first cascade is the same
    assert not torch.allclose(p_keep[1][-1], p_restart[1][-1])
    # hidden state carried: cascade 2 = block 2 started from cascade 1's last estimate and final states
    eta0 = sens_reduce(kspace, sens)
    first, hidden = keep.cascades[0](eta0, kspace, mask.bool(), sens)
    carried, _ = keep.cascades[1](first[-1], kspace, mask.bool(), sens, hidden)
    torch.testing.assert_close(carried[-1], p_keep[1][-1])
    fresh, _ = keep.cascades[1](first[-1], kspace, mask.bool(), sens, None)
    assert not torch.allclose(fresh[-1], p_keep[1][-1])
    # without keep_prediction the second cascade restarts from eta0 (with the carried states)
    restarted, _ = restart.cascades[1](eta0, kspace, mask.bool(), sens, hidden)
    torch.testing.assert_close(restarted[-1], p_restart[1][-1])


def test_cirim_gru_and_mgu_cells(synthetic_slice) -> None:
    kspace, mask, sens, _ = synthetic_slice
    for cell in ("gru", "mgu"):
        assert _cirim(cell=cell)(kspace, mask, sens).shape == (2, 16, 16)


def test_cirim_loss_goes_down(loss_decreases) -> None:
    first, last = loss_decreases(_cirim(num_steps=2, hidden_channels=8))
    assert last < 0.8 * first
    first, last = loss_decreases(_cirim(num_steps=2, hidden_channels=8, explicit_dc=True))
    assert last < 0.8 * first
