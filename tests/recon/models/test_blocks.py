from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recon.models.blocks import CellType, ConvGRUCell, ConvMGUCell, IndRNNCell, make_cell


@pytest.mark.parametrize("cell", list(CellType))
def test_cell_shapes_and_zero_state(cell: CellType) -> None:
    torch.manual_seed(0)
    module = make_cell(cell, 3, 5)
    x = torch.randn(2, 3, 6, 7)
    h = module(x, None)
    assert h.shape == (2, 5, 6, 7) and h.dtype == torch.float32
    torch.testing.assert_close(h, module(x, torch.zeros(2, 5, 6, 7)))
    h2 = module(x, h)
    assert not torch.allclose(h, h2)  # the state feeds back


def test_make_cell_unknown() -> None:
    with pytest.raises(ValueError, match="indrnn"):
        make_cell("lstm", 2, 2)


def test_indrnn_matches_hand_computation() -> None:
    torch.manual_seed(0)
    cell = IndRNNCell(2, 3, kernel_size=1)
    assert cell.hh.shape == (1, 3, 1, 1)
    x, h = torch.randn(1, 2, 4, 4), torch.randn(1, 3, 4, 4)
    w, b, u = cell.ih.weight[:, :, 0, 0], cell.ih.bias, cell.hh.view(3)
    expected = torch.empty(1, 3, 4, 4)
    for c in range(3):
        expected[0, c] = torch.relu((w[c, :, None, None] * x[0]).sum(0) + b[c] + u[c] * h[0, c])
    torch.testing.assert_close(cell(x, h), expected)


def test_indrnn_init() -> None:
    torch.manual_seed(0)
    cell = IndRNNCell(4, 256, kernel_size=1)
    assert cell.hh.std().item() == pytest.approx(1 / (256 * 2), rel=0.2)
    w = cell.ih.weight.flatten(1)  # [256, 4], orthogonal columns
    torch.testing.assert_close(w.T @ w, torch.eye(4), atol=1e-5, rtol=0)


def _gru_reference(cell: ConvGRUCell, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    wi = cell.ih.weight[:, :, 0, 0]
    wh = cell.hh.weight[:, :, 0, 0]
    n_h = cell.hidden_channels
    xi = torch.einsum("oc,bchw->bohw", wi, x) + cell.ih.bias.view(1, -1, 1, 1)
    i_r, i_z, i_n = xi.split(n_h, dim=1)
    w_r, w_z, w_n = wh.split(n_h, dim=0)
    r = torch.sigmoid(i_r + torch.einsum("oc,bchw->bohw", w_r, h))
    z = torch.sigmoid(i_z + torch.einsum("oc,bchw->bohw", w_z, h))
    if cell.reset_before_conv:
        n = torch.tanh(i_n + torch.einsum("oc,bchw->bohw", w_n, r * h))
    else:
        n = torch.tanh(i_n + r * torch.einsum("oc,bchw->bohw", w_n, h))
    return (1 - z) * n + z * h


@pytest.mark.parametrize("reset_before_conv", [False, True])
def test_gru_matches_hand_computation(reset_before_conv: bool) -> None:
    torch.manual_seed(0)
    cell = ConvGRUCell(2, 3, reset_before_conv=reset_before_conv, reset_gate_bias=-1.0)
    with torch.no_grad():
        cell.ih.bias.normal_()
    x, h = torch.randn(2, 2, 4, 5), torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(cell(x, h), _gru_reference(cell, x, h))


def test_gru_init_and_padding() -> None:
    torch.manual_seed(0)
    cell = ConvGRUCell(4, 4, kernel_size=3, dilation=2, reset_gate_bias=-1.0)
    torch.testing.assert_close(cell.ih.bias[:4], torch.full((4,), -1.0))
    torch.testing.assert_close(cell.ih.bias[4:], torch.zeros(8))
    assert cell(torch.randn(1, 4, 9, 8)).shape == (1, 4, 9, 8)
    w = cell.hh.weight[:4].flatten(1)  # one gate: [4, 36], orthogonal rows
    torch.testing.assert_close(w @ w.T, torch.eye(4), atol=1e-5, rtol=0)


def test_gru_saturated_update_gate_keeps_state() -> None:
    cell = ConvGRUCell(2, 3)
    with torch.no_grad():
        cell.ih.bias[3:6] = 50.0  # z -> 1
    h = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(cell(torch.randn(1, 2, 4, 4), h), h)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("kernel_size", "dilation"), [(1, 1), (3, 2)])
@pytest.mark.parametrize("reset_before_conv", [False, True])
def test_gru_inference_step_is_bit_identical_to_the_autograd_step(
    reset_before_conv: bool, kernel_size: int, dilation: int, channels_last: bool
) -> None:
    # without autograd the cell skips the zero state's convolution and updates its gates in place: same bits
    torch.manual_seed(0)
    cell = ConvGRUCell(5, 8, kernel_size, dilation, reset_before_conv=reset_before_conv, reset_gate_bias=-1.0)
    x = torch.randn(2, 5, 11, 13)
    if channels_last:
        cell = cell.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    h_grad = h_fast = None
    for _ in range(4):
        h_grad = cell(x, h_grad)
        with torch.inference_mode():
            h_fast = cell(x, h_fast)
        assert torch.equal(h_grad.detach(), h_fast)
        h_fast = h_grad.detach().clone()  # the next step from the same state (inference tensors stay apart)
    h_grad.sum().backward()
    assert all(p.grad is not None for p in cell.parameters())  # the zero state's convolution still gets a gradient


def test_mgu_matches_hand_computation() -> None:
    torch.manual_seed(0)
    cell = ConvMGUCell(2, 3, kernel_size=3)
    with torch.no_grad():
        cell.ih.bias.normal_()
    x, h = torch.randn(1, 2, 5, 5), torch.randn(1, 3, 5, 5)
    i_f, i_c = F.conv2d(x, cell.ih.weight, cell.ih.bias, padding=1).chunk(2, dim=1)
    h_f, h_c = F.conv2d(h, cell.hh.weight, padding=1).chunk(2, dim=1)
    f = torch.sigmoid(i_f + h_f)
    c = torch.tanh(i_c + f * h_c)
    torch.testing.assert_close(cell(x, h), c + f * (h - c))


def test_even_kernel_rejected() -> None:
    for cls in (ConvGRUCell, ConvMGUCell, IndRNNCell):
        with pytest.raises(ValueError, match="kernel_size"):
            cls(2, 2, kernel_size=2)


def test_models_take_blocks_from_blocks_and_dc_from_layers() -> None:
    """Cell blocks live in recon.models.blocks; the data terms the models use come from recon.layers."""
    import recon.models.recurrent_varnet as rvn_module
    import recon.models.rim as rim_module
    from recon.layers import LogLikelihoodGradient, SoftDataConsistency
    from recon.models import create_model
    from recon.models.blocks import ConvGRUStack, RecurrentInit

    assert rim_module.ConvGRUStack is ConvGRUStack and rvn_module.RecurrentInit is RecurrentInit
    assert ConvGRUStack.__module__ == "recon.models.blocks.conv_gru_stack"
    assert not hasattr(rvn_module, "ConvGRUStack") or rvn_module.ConvGRUStack is ConvGRUStack
    for config in ({}, {"regularizer": "gru_stack"}):
        rim = create_model("rim", num_steps=1, hidden_channels=4, **config)
        assert isinstance(rim.block.data_term, LogLikelihoodGradient)
        assert not any("data_term" in key for key in rim.state_dict())  # fixed sigma: no new weights
    cirim = create_model("cirim", num_cascades=1, num_steps=1, hidden_channels=4, explicit_dc=True)
    assert all(isinstance(dc, SoftDataConsistency) for dc in cirim.dc)
