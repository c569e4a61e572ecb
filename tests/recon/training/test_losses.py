from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.metrics import ssim_per_slice
from recon.training import l1_loss, ssim_loss, step_weights, weighted_prediction_loss


def test_step_weights_values():
    w = step_weights(4)
    raw = np.array([10 ** (-1 + i / 3) for i in range(4)])
    np.testing.assert_allclose(w.numpy(), raw / raw.sum(), rtol=1e-12)
    assert step_weights(1).tolist() == [1.0]
    assert torch.all(w[1:] > w[:-1])
    with pytest.raises(ValueError):
        step_weights(0)


def test_weighted_loss_matches_manual_sum():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 12, 12, generator=g)
    preds = [[torch.rand(2, 12, 12, generator=g) for _ in range(3)] for _ in range(2)]
    wc, wt = step_weights(2), step_weights(3)
    expected = sum(
        wc[c] * wt[t] * (ssim_loss(preds[c][t], target) + 2 * l1_loss(preds[c][t], target))
        for c in range(2)
        for t in range(3)
    )
    got = weighted_prediction_loss(preds, target, ssim_weight=1.0, l1_weight=2.0)
    torch.testing.assert_close(got.double(), torch.as_tensor(expected).double(), rtol=1e-5, atol=1e-6)


def test_ssim_loss_zero_for_identical_and_matches_metric():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 20, 24, generator=g)
    assert abs(ssim_loss(x, x).item()) < 1e-6
    y = x + 0.1 * torch.rand(3, 20, 24, generator=g)
    ref = np.mean([ssim_per_slice(x[i : i + 1], y[i : i + 1])[0] for i in range(3)])
    assert abs((1 - ssim_loss(y, x).item()) - ref) < 1e-4


def test_ssim_loss_differentiable_and_complex_input():
    g = torch.Generator().manual_seed(2)
    target = torch.rand(1, 16, 16, generator=g)
    pred = torch.complex(torch.rand(1, 16, 16, generator=g), torch.rand(1, 16, 16, generator=g)).requires_grad_()
    loss = ssim_loss(pred, target)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(torch.view_as_real(pred.grad)).all()
    assert torch.view_as_real(pred.grad).abs().sum() > 0
    small = torch.rand(1, 9, 9, dtype=torch.float64, generator=g)
    x0 = torch.rand(1, 9, 9, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: ssim_loss(p, small), x0)
