"""Datasets that need no download: the arrow-pointing extrapolation task and small built-in image sets."""

from .arrow_pointing import ArrowPointingConfig, ArrowPointingDataset, ArrowSample, ray_hits_disc, render
from .builtin import BUILTIN_DATASETS, SplitDatasets, load_builtin

__all__ = [
    "ArrowPointingConfig",
    "ArrowPointingDataset",
    "ArrowSample",
    "BUILTIN_DATASETS",
    "SplitDatasets",
    "load_builtin",
    "ray_hits_disc",
    "render",
]
