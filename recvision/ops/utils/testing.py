"""Numerical comparison used by the op tests (relative RMS error, as in flash-linear-attention's tests)."""

from __future__ import annotations

import torch

__all__ = ["relative_rms_error", "assert_close"]


def relative_rms_error(reference: torch.Tensor, actual: torch.Tensor) -> float:
    """``rms(actual - reference) / rms(reference)`` computed in float64 (0 when both are zero)."""
    ref = reference.detach().double()
    diff = actual.detach().double() - ref
    denom = ref.pow(2).mean().sqrt().item()
    err = diff.pow(2).mean().sqrt().item()
    return err if denom == 0.0 else err / denom


def assert_close(name: str, reference: torch.Tensor, actual: torch.Tensor, ratio: float, atol: float = 1e-6) -> None:
    """Fail unless ``actual`` matches ``reference`` in shape, is finite, and is within ``ratio`` relative RMS error.

    Passes at once if the largest absolute difference is at most ``atol``.
    """
    if reference.shape != actual.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != reference {tuple(reference.shape)}")
    if not torch.isfinite(actual).all():
        raise AssertionError(f"{name}: non-finite values in result")
    max_abs = (actual.detach().double() - reference.detach().double()).abs().max().item()
    if max_abs <= atol:
        return
    err = relative_rms_error(reference, actual)
    if not err <= ratio:
        raise AssertionError(f"{name}: relative RMS error {err:.3e} > {ratio:.1e} (max abs diff {max_abs:.3e})")
