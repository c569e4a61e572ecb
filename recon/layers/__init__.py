"""Reusable ``nn.Module`` building blocks for MRI reconstruction networks."""

from recon.layers.dc import (
    ConjugateGradientDC,
    HardDataConsistency,
    LogLikelihoodGradient,
    SoftDataConsistency,
    soft_data_consistency,
)

__all__ = [
    "ConjugateGradientDC",
    "HardDataConsistency",
    "LogLikelihoodGradient",
    "SoftDataConsistency",
    "soft_data_consistency",
]
