"""Fixtures of the command-line tests: tiny synthetic datasets and a randomly initialised tiny checkpoint."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from recon.cli import main
from recon.data.synthetic import write_synthetic_dataset

TINY_CIRIM = {"num_cascades": 1, "num_steps": 2, "hidden_channels": 4}


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECON_NO_PROGRESS", "1")
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three fully sampled multi-coil volumes: k-space 32 x 32, recon matrix 24 x 32, 2 coils, 2 slices."""
    out = tmp_path_factory.mktemp("cli_data")
    write_synthetic_dataset(out, num_volumes=3, num_slices=2, shape=(32, 32), num_coils=2, recon_size=(24, 32))
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `recon train`-style checkpoint folder of a randomly initialised tiny CIRIM."""
    import torch

    from recon.models import create_model
    from recon.training import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "cirim"
    extra = {"train_config": {"data": {"sens_method": "acs", "normalize": "max"}}}
    save_checkpoint(path, create_model("cirim", **TINY_CIRIM), "cirim", TINY_CIRIM, extra=extra)
    return path


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``run_cli(*argv) -> (exit status, stdout, stderr)`` through :func:`recon.cli.main`."""

    def run(*argv: object) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _tree_state(folder: Path) -> dict[str, tuple[str, int]]:
    state = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            state[str(path.relative_to(folder))] = (digest, path.stat().st_mtime_ns)
    return state


@pytest.fixture
def tree_state() -> Callable[[Path], dict[str, tuple[str, int]]]:
    """``tree_state(folder) -> {name: (sha256, mtime_ns)}`` of every file under it (inputs must never change)."""
    return _tree_state
