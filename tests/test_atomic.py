"""The shared atomic writer: permissions of a normal new file, nothing left behind on failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recvision.utils.atomic import atomic_write


def test_new_file_gets_the_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "out.txt", lambda tmp: Path(tmp).write_text("done"))
    finally:
        os.umask(old)
    assert path.read_text() == "done"
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")

    def fail(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_dir_gets_normal_permissions_and_replaces_the_old_folder(tmp_path: Path, umask_022) -> None:
    from recvision.utils.atomic import atomic_dir

    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    atomic_dir(target, lambda folder: (folder / "a.txt").write_text("new"))
    assert target.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary or old folder left


def test_failed_atomic_dir_keeps_the_old_folder(tmp_path: Path) -> None:
    from recvision.utils.atomic import atomic_dir

    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "a.txt").write_text("old")

    def fail(folder: Path) -> None:
        (folder / "a.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_dir(target, fail)
    assert (target / "a.txt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_config_and_checkpoint_get_normal_permissions(tmp_path: Path, umask_022) -> None:
    """config.yaml was owner-only (mkstemp without chmod) and checkpoint folders 0700 (mkdtemp)."""
    from recon.config import load_config, save_config
    from recon.models import create_model
    from recon.training import save_checkpoint

    repo = Path(__file__).resolve().parents[1]
    path = save_config(load_config(repo / "configs" / "recon" / "rim.yaml"), tmp_path / "run" / "config.yaml")
    assert path.stat().st_mode & 0o777 == 0o644
    config = {"num_steps": 1, "hidden_channels": 2}
    ckpt = save_checkpoint(tmp_path / "run" / "last", create_model("rim", **config), "rim", config)
    assert ckpt.stat().st_mode & 0o777 == 0o755
    assert {p.name: p.stat().st_mode & 0o777 for p in ckpt.iterdir()} == {
        "model.safetensors": 0o644,
        "config.json": 0o644,
        "state.pt": 0o644,
    }


def test_finetune_checkpoints_get_normal_permissions(tmp_path: Path, umask_022) -> None:
    from torch import nn

    from recvision.finetune import save_checkpoint

    save_checkpoint(tmp_path, nn.Linear(2, 2), {"model": "linear", "epoch": 1}, best=True)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes and set(modes.values()) == {0o644} and not any(name.startswith(".") for name in modes)


def _slow_writer(payload: bytes, started, release):
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(payload[: len(payload) // 2])
            fh.flush()
            started.set()
            release.wait(5)  # both writers are now half-way through their own temporary files
            fh.write(payload[len(payload) // 2 :])

    return write


def test_two_concurrent_writers_never_mix(tmp_path: Path) -> None:
    """Two writers of the same target at once: the result is one of the two whole files, never a blend, and no
    temporary is left (unique temporaries: a fixed `.{name}.tmp` would make the second writer write into the
    first one's file)."""
    import threading

    target = tmp_path / "out.bin"
    payloads = [b"A" * 100_000, b"B" * 100_000]
    started = [threading.Event(), threading.Event()]
    release = threading.Event()
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            atomic_write(target, _slow_writer(payloads[index], started[index], release))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    assert all(event.wait(5) for event in started)
    release.set()
    for thread in threads:
        thread.join(10)
    assert not errors
    assert target.read_bytes() in payloads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_one_writer_for_both_packages() -> None:
    """recon and recvision.finetune write through recvision.utils.atomic; recon has no writer of its own."""
    import recon
    import recvision.finetune.checkpoint as finetune_checkpoint

    assert finetune_checkpoint.atomic_write is atomic_write
    recon_dir = Path(recon.__file__).parent
    assert not (recon_dir / "_atomic.py").exists()
    assert not [p for p in recon_dir.rglob("*.py") if "recon._atomic" in p.read_text()]


def test_finetune_does_not_import_the_mri_stack(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; import recvision.finetune; "
        "from recvision.finetune.checkpoint import save_results; save_results(Path(sys.argv[1]), {'a': 1}); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'recon'))"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "[]" and (tmp_path / "results.json").is_file()
