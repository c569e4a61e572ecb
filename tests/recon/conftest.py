"""Shared fixtures of the ``recon`` tests: small synthetic fastMRI-layout datasets, written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from recon.data.synthetic import write_synthetic_dataset

# Tiny multi-coil volumes: k-space 32 x 24 (H x W), recon matrix 24 x 24, 4 coils, 3 slices each.
SYNTH_SHAPE = (32, 24)
SYNTH_RECON = (24, 24)
SYNTH_COILS = 4
SYNTH_SLICES = 3
SYNTH_VOLUMES = 2


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with ``SYNTH_VOLUMES`` multi-coil phantom volumes (Shepp-Logan, then random ellipses), seed 0."""
    out = tmp_path_factory.mktemp("synthetic_multicoil")
    write_synthetic_dataset(
        out,
        num_volumes=SYNTH_VOLUMES,
        num_slices=SYNTH_SLICES,
        shape=SYNTH_SHAPE,
        num_coils=SYNTH_COILS,
        source="phantom",
        seed=0,
        recon_size=SYNTH_RECON,
    )
    return out


@pytest.fixture(scope="session")
def synthetic_singlecoil_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with two single-coil phantom volumes (``kspace (S, H, W)``, ``reconstruction_esc``)."""
    out = tmp_path_factory.mktemp("synthetic_singlecoil")
    write_synthetic_dataset(
        out, num_volumes=2, num_slices=2, shape=SYNTH_SHAPE, source="phantom", seed=1, challenge="singlecoil"
    )
    return out


@pytest.fixture(scope="session")
def synthetic_file(synthetic_dir: Path) -> Path:
    """The first multi-coil file of :func:`synthetic_dir`."""
    return sorted(synthetic_dir.glob("*.h5"))[0]


@pytest.fixture(scope="session")
def synthetic_spec() -> dict[str, object]:
    """Parameters of :func:`synthetic_dir`."""
    return {
        "shape": SYNTH_SHAPE,
        "recon_size": SYNTH_RECON,
        "num_coils": SYNTH_COILS,
        "num_slices": SYNTH_SLICES,
        "num_volumes": SYNTH_VOLUMES,
    }
